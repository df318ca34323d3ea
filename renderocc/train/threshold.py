"""Choose the occupancy threshold (density > τ ⇒ occupied) on held-out *training* samples.

Never on the evaluation split (the reference code tuned it on val). A model trained with dense
3D labels (`3d`, `mixed`) may use them here too: τ maximising geometric IoU (occupied vs free)
inside mask_camera. Any other contract must not see 3D labels, even held-out ones, or "2D-only"
would be a lie: τ maximising 2D depth agreement — the first render sample (the renderer's sample rule
and trilinear density, `renderocc.geometry.sampling`) with density > τ along each held-out label ray must lie
within max(1.5 voxels, 10 %) of the LiDAR distance. A 2D run that reads its labels voxel by voxel
(`loss.label_voxels` > 0) picks τ as the 3D contracts do, but against the held-out samples' label
voxels (`targets.label_voxel_target`: 2D labels only): the depth-agreement rule favours a low τ
that trades geometry and floaters for mIoU (benchmarks/threshold_rules.py).
"""

from __future__ import annotations

import numpy as np
import torch

from renderocc.classes import FREE, IGNORE
from renderocc.config import Config
from renderocc.geometry import Grid
from renderocc.geometry.sampling import sample_positions, trilinear
from renderocc.train.dataset import RayDataset, ends_in_grid
from renderocc.train.losses import RENDERED
from renderocc.train.targets import label_voxel_target, occupied

NEAR_VOXELS = 1.5  # a first crossing this many voxels (Grid.edge) from the label agrees with it
NEAR_SHARE = 0.1   # ... or this share of the label's distance, whichever is larger

CANDIDATES = np.geomspace(0.01, 20.0, 40)


@torch.no_grad()
def choose_threshold(model, reader, indices: list[int], cfg: Config, device: torch.device, source: str) -> dict:
    """{"threshold", "how", "metric", "score", "source", "samples"} for the given samples."""
    use_3d = bool(reader.has_occ_gt) and cfg.supervision in ("3d", "mixed")
    voxels = LabelVoxels(reader, cfg, indices) if not use_3d and uses_label_voxels(cfg) else None
    # key rays only, and the 3D target only where 3D labels are allowed
    eval_cfg = cfg.replace(supervision="3d" if use_3d else "2d", data={"aux_frames": 0, "mask_ray_share": 0.0},
                           loss={"lss_depth": 0.0, "occ3d": 1.0})
    ds = RayDataset(reader, eval_cfg, indices, train=False)
    scoring = cfg.grid.spec.coarsens(reader.grid)  # 3D targets of a finer model live on the labels' grid
    was_training = model.training
    model.eval()
    num = torch.zeros(len(CANDIDATES))
    den = torch.zeros(len(CANDIDATES))
    for k in range(len(ds)):
        item = ds[indices[k]]
        out = model(item["images"][None].to(device), item["intrinsics"][None].to(device),
                    item["cam2ego"][None].to(device))
        ok = item["valid"] & item["is_key"]
        density = out.density[0]
        if use_3d and scoring.mode == "interpolate":
            density = scoring.to_labels(density[None])[0]
        if voxels is not None:
            n, d = candidate_counts(density, cfg, occ_target=voxels.target(indices[k]), free=reader.vocabulary.free)
        else:
            n, d = candidate_counts(density, cfg, occ_target=item["occ_target"] if use_3d else None,
                                    free=reader.vocabulary.free,
                                    rays=None if use_3d else
                                    (item["origins"][ok], item["directions"][ok], item["ends"][ok]))
        num += n
        den += d
    model.train(was_training)
    return pick_threshold(num, den, use_3d, indices, source, LABEL_VOXEL_METRIC if voxels is not None else None)


LABEL_VOXEL_METRIC = "3D IoU against the label voxels (2D labels only)"


def uses_label_voxels(cfg: Config) -> bool:
    """A 2D-label run that reads its label rays voxel by voxel: its threshold rule is `LabelVoxels`'."""
    return cfg.loss.label_voxels > 0 and cfg.supervision in RENDERED


class LabelVoxels:
    """The label-voxel targets of held-out samples on the model grid: all their label rays, key and
    auxiliary, as the run's `label_voxels` term reads them."""

    def __init__(self, reader, cfg: Config, indices: list[int]):
        self.ds = RayDataset(reader, cfg, indices, train=False)
        self.grid, self.classes = cfg.grid.spec, reader.vocabulary.num_semantic

    def target(self, i: int) -> torch.Tensor:
        pool = ends_in_grid(self.ds.label_frames(i), self.grid)
        return torch.from_numpy(label_voxel_target(pool, self.grid, self.classes))


def candidate_counts(density: torch.Tensor, cfg: Config, *, occ_target: torch.Tensor | None = None,
                     rays: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None, free: int = FREE
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """(numerator, denominator) per candidate τ for one sample's density grid (X, Y, Z).

    With `occ_target` (`targets.occupied` voxels occupied, `free` free, 255 ignored): intersection and
    union of density > τ with the occupied voxels. Otherwise `rays` = (origins, dirs, dist) of key label rays:
    rays whose first crossing agrees with the label, and the ray count. Summed over samples, the
    ratio is the score `pick_threshold` maximises; `renderocc fit` calls this on its one sample.
    """
    density = density.detach().float().cpu()
    cand = torch.tensor(CANDIDATES, dtype=torch.float32)
    if occ_target is not None:
        tgt = occ_target.cpu()
        m = tgt != IGNORE
        occ = occupied(tgt, free)[m]
        pred = density[m][None, :] > cand[:, None]
        return (pred & occ).sum(1).float(), (pred | occ).sum(1).float()
    if rays is None:
        raise ValueError("candidate_counts needs occ_target or rays")
    good, n = first_crossing_agreement(density, *rays, cfg.grid.spec, cand, cfg.render.step, cfg.render.near)
    return good, torch.full((len(cand),), float(n))


def pick_threshold(num: torch.Tensor, den: torch.Tensor, use_3d: bool, indices: list[int], source: str,
                   metric: str | None = None) -> dict:
    """The candidate with the best score num/den, described (`metric` names a rule other than the
    contract's own). Among tied candidates the middle one (the candidates are log-spaced, so the
    geometric middle of a tied range): a tie means the scored voxels or rays cannot tell those τ
    apart, and its lowest end would call occupied every voxel they do not see (unobserved air at
    the initial density, say) that is denser than it."""
    cand = torch.tensor(CANDIDATES, dtype=torch.float32)
    score = num / den.clamp_min(1)
    tied = torch.nonzero(score == score.max()).flatten()
    best = int(tied[(len(tied) - 1) // 2])
    short = "3D IoU" if use_3d else "2D depth agreement"
    if metric is not None:
        short = metric.split(" (")[0]
    return {"threshold": float(cand[best]), "score": float(score[best]), "source": source,
            "metric": metric or ("3D geometry IoU in mask_camera" if use_3d
                                 else "2D depth agreement of the first occupied voxel"),
            "how": f"{short} {float(score[best]):.3f} on {len(indices)} {source}",
            "samples": [int(i) for i in indices]}


def first_crossing_agreement(density: torch.Tensor, origins: torch.Tensor, directions: torch.Tensor,
                             ends: torch.Tensor, grid: Grid, cand: torch.Tensor, step: float,
                             near: float = 0.0, chunk: int = 2048) -> tuple[torch.Tensor, int]:
    """Per candidate τ: how many rays hit their first sample with density > τ close to the label distance.

    The samples are the renderer's (`sampling.sample_positions` at the training `step` and `near`,
    trilinear density at voxel centres), so τ is chosen on the field the loss shaped, not on a
    nearest-voxel proxy. "Close" is within max(NEAR_VOXELS voxels, NEAR_SHARE of `ends`) of `ends`;
    a ray with no sample above τ counts as crossing at its box exit. Rays are chunked so memory
    stays (chunk × samples) whatever R.
    """
    density = density.detach().float().cpu()
    vol = density[None]
    cand = cand.float().cpu()
    good = torch.zeros(len(cand))
    vmax = grid.edge
    for s in range(0, len(ends), chunk):
        o = origins[s:s + chunk].float().cpu()
        d = directions[s:s + chunk].float().cpu()
        L = ends[s:s + chunk].float().cpu()
        t, valid, points, hit, t_out = sample_positions(o, d, grid.box, near, step)
        sig = torch.where(valid, trilinear(vol, points, grid)[..., 0], torch.zeros_like(t))
        run = torch.cummax(sig, 1).values.contiguous()  # non-decreasing; padding repeats the last sample
        first = torch.searchsorted(run, cand[None].expand(len(run), -1).contiguous(), right=True)  # (r, C)
        count = valid.sum(1, keepdim=True)
        t_exit = torch.where(hit, t_out, torch.zeros_like(t_out))[:, None]
        hit_t = torch.where(first < count, t.gather(1, first.clamp(max=t.shape[1] - 1)), t_exit)
        tol = torch.clamp(NEAR_SHARE * L, min=NEAR_VOXELS * vmax)[:, None]
        good += ((hit_t - L[:, None]).abs() <= tol).sum(0).float()
    return good, int(len(ends))
