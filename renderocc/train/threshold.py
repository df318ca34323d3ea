"""Choose the occupancy threshold (density > τ ⇒ occupied) on held-out *training* samples.

Never on the evaluation split (the reference code tuned it on val). A model trained with dense
3D labels (`3d`, `mixed`) may use them here too: τ maximising geometric IoU (occupied vs free)
inside mask_camera. Any other contract must not see 3D labels, even held-out ones, or "2D-only"
would be a lie: τ maximising 2D depth agreement — the first voxel with density > τ along each held-out label
ray must lie within max(1.5 voxels, 10 %) of the LiDAR distance.
"""

from __future__ import annotations

import numpy as np
import torch

from renderocc.classes import FREE, IGNORE
from renderocc.train.config import Config
from renderocc.train.dataset import RayDataset

CANDIDATES = np.geomspace(0.01, 20.0, 40)


@torch.no_grad()
def choose_threshold(model, reader, indices: list[int], cfg: Config, device: torch.device, source: str) -> dict:
    """{"threshold", "how", "metric", "score", "source", "samples"} for the given samples."""
    use_3d = bool(reader.has_occ_gt) and cfg.supervision in ("3d", "mixed")
    # key rays only, and the 3D target only where 3D labels are allowed
    eval_cfg = cfg.replace(supervision="3d" if use_3d else "2d", data={"aux_frames": 0},
                           loss={"lss_depth": 0.0, "occ3d": 1.0})
    ds = RayDataset(reader, eval_cfg, indices, train=False)
    was_training = model.training
    model.eval()
    cand = torch.tensor(CANDIDATES, dtype=torch.float32)
    inter = torch.zeros(len(cand))
    union = torch.zeros(len(cand))
    good = torch.zeros(len(cand))
    total = 0.0
    for k in range(len(ds)):
        item = ds[indices[k]]
        out = model(item["images"][None].to(device), item["intrinsics"][None].to(device),
                    item["cam2ego"][None].to(device))
        density = out.density[0].float().cpu()
        if use_3d:
            tgt = item["occ_target"]
            m = tgt != IGNORE
            occ = (tgt < FREE)[m]
            pred = density[m][None, :] > cand[:, None]
            inter += (pred & occ).sum(1)
            union += (pred | occ).sum(1)
        else:
            ok = item["valid"] & item["is_key"]
            g, n = first_crossing_agreement(density, item["origins"][ok], item["dirs"][ok], item["dist"][ok],
                                            cfg["grid"], cand)
            good += g
            total += n
    model.train(was_training)
    score = inter / union.clamp_min(1) if use_3d else good / max(total, 1)
    best = int(torch.argmax(score))  # first maximum: the smallest τ among ties
    return {"threshold": float(cand[best]), "score": float(score[best]), "source": source,
            "metric": "3D geometry IoU in mask_camera" if use_3d
            else "2D depth agreement of the first occupied voxel",
            "how": f"{'3D IoU' if use_3d else '2D depth agreement'} {float(score[best]):.3f} on "
                   f"{len(indices)} {source}",
            "samples": [int(i) for i in indices]}


def first_crossing_agreement(density: torch.Tensor, origins: torch.Tensor, dirs: torch.Tensor,
                             dist: torch.Tensor, grid: dict, cand: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Per candidate τ: how many rays hit their first voxel with density > τ near the label distance."""
    lo = torch.tensor(grid["pc_range"][:3])
    hi = torch.tensor(grid["pc_range"][3:])
    vs = torch.tensor(grid["voxel_size"], dtype=torch.float32)
    shape = torch.tensor(grid["shape"])
    step = float(vs.min()) / 2
    inv = 1.0 / torch.where(dirs.abs() > 1e-9, dirs, torch.full_like(dirs, 1e-9))
    t0, t1 = (lo - origins) * inv, (hi - origins) * inv  # slab test: the ray's part inside the box
    t_in, t_out = torch.minimum(t0, t1).max(1).values.clamp_min(0), torch.maximum(t0, t1).min(1).values
    n = int(torch.ceil((t_out - t_in).max() / step).clamp_min(1))
    t = t_in[:, None] + step * (torch.arange(n) + 0.5)[None]
    inside = t < t_out[:, None]
    p = origins[:, None] + t[..., None] * dirs[:, None]
    idx = torch.floor((p - lo) / vs).long().clamp(min=torch.zeros(3, dtype=torch.long), max=shape - 1)
    sig = density[idx[..., 0], idx[..., 1], idx[..., 2]] * inside
    run = torch.cummax(sig, 1).values  # (R, S) non-decreasing
    good = torch.zeros(len(cand))
    tol = torch.maximum(1.5 * vs.max(), 0.1 * dist)
    for k, tau in enumerate(cand):
        first = (run <= tau).sum(1)  # index of the first sample above τ (n = none)
        hit_t = torch.where(first < n, t.gather(1, first.clamp(max=n - 1)[:, None])[:, 0], t_out)
        good[k] = ((hit_t - dist).abs() <= tol).sum()
    return good, int(len(dist))
