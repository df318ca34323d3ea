"""Losses. Every loss is a per-sample mean, then a mean over samples: the batch mean then
decomposes over DDP ranks, so W processes with B/W samples give the gradients of 1 process
with B samples.

Rendered depth is the metric distance along the ray (renderer with background_depth: the
unstopped mass sits at the box exit), compared with the label's z converted to ray distance.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from renderocc.classes import FREE, IGNORE, NUM_SEMANTIC


def per_sample_mean(values: torch.Tensor, sample: torch.Tensor, n: int, weight: torch.Tensor | None = None
                    ) -> torch.Tensor:
    """Mean over samples of the (weighted) mean of `values` within each sample (empty → 0)."""
    w = torch.ones_like(values) if weight is None else weight
    num = values.new_zeros(n).index_add(0, sample, values * w)
    den = values.new_zeros(n).index_add(0, sample, w)
    return (num / den.clamp_min(1e-6)).mean()


def silog(pred: torch.Tensor, target: torch.Tensor, sample: torch.Tensor, n: int, lam: float = 0.85
          ) -> torch.Tensor:
    """Scale-invariant log loss per sample: sqrt(E[g²] − λ·E[g]²), g = log pred − log target."""
    g = torch.log(pred.clamp_min(1e-3)) - torch.log(target.clamp_min(1e-3))
    ones = torch.ones_like(g)
    cnt = g.new_zeros(n).index_add(0, sample, ones).clamp_min(1.0)
    m1 = g.new_zeros(n).index_add(0, sample, g) / cnt
    m2 = g.new_zeros(n).index_add(0, sample, g * g) / cnt
    return torch.sqrt((m2 - lam * m1 * m1).clamp_min(1e-8)).mean()


def semantic_ce(logits: torch.Tensor, label: torch.Tensor, sample: torch.Tensor, n: int,
                class_weights: torch.Tensor | None) -> torch.Tensor:
    """Class-weighted CE of rendered semantics; unlabelled rays (255) are ignored."""
    ok = label != IGNORE
    if not ok.any():
        return logits.sum() * 0
    ce = F.cross_entropy(logits[ok], label[ok], reduction="none")
    w = class_weights[label[ok]] if class_weights is not None else None
    return per_sample_mean(ce, sample[ok], n, w)


def lss_depth(depth_logits: torch.Tensor, target: torch.Tensor, bins: list) -> torch.Tensor:
    """CE of the LSS per-pixel depth distribution against the nearest LiDAR z of each cell."""
    b = depth_logits.shape[0]
    dmin, dmax, nb = float(bins[0]), float(bins[1]), int(bins[2])
    idx = torch.round((target - dmin) / (dmax - dmin) * (nb - 1)).long()
    ok = (target > 0) & (idx >= 0) & (idx < nb)
    logits = depth_logits.permute(0, 1, 3, 4, 2)  # (B, N, h, w, D)
    if not ok.any():
        return logits.sum() * 0
    ce = F.cross_entropy(logits[ok], idx[ok], reduction="none")
    sample = torch.arange(b, device=ok.device).view(b, 1, 1, 1).expand_as(ok)[ok]
    return per_sample_mean(ce, sample, b)


def occupancy_3d(density: torch.Tensor, logits: torch.Tensor, target: torch.Tensor, voxel: float,
                 class_weights: torch.Tensor | None) -> torch.Tensor:
    """3D loss: occupancy BCE with P(occ) = 1 − exp(−σ·voxel), balanced occupied/free, + CE on
    the semantic logits of occupied voxels. Target: 0..16 occupied, 17 free, 255 ignored."""
    b = density.shape[0]
    sigma = (density * voxel).clamp_min(1e-6)
    occ = target < FREE
    free = target == FREE
    sample = torch.arange(b, device=density.device).view(b, 1, 1, 1).expand_as(target)
    zero = density.sum() * 0
    loss_occ = per_sample_mean(-torch.log(-torch.expm1(-sigma[occ])), sample[occ], b) if occ.any() else zero
    loss_free = per_sample_mean(sigma[free], sample[free], b) if free.any() else zero
    loss_sem = zero
    if occ.any():
        ce = F.cross_entropy(logits[occ], target[occ].long(), reduction="none")
        w = class_weights[target[occ].long()] if class_weights is not None else None
        loss_sem = per_sample_mean(ce, sample[occ], b, w)
    return loss_occ + loss_free + loss_sem


def class_weights_from_counts(counts: torch.Tensor) -> torch.Tensor:
    """ENet-style 1/ln(1.2 + p): bounded (≤ 5.5), rarer classes higher; absent classes get the max."""
    p = counts.float() / counts.sum().clamp_min(1)
    w = 1.0 / torch.log(1.2 + p)
    w[counts == 0] = w.max()
    return w / w[counts > 0].mean() if (counts > 0).any() else torch.ones(NUM_SEMANTIC)


def ray_free_space(density: torch.Tensor, origins: torch.Tensor, dirs: torch.Tensor, dist: torch.Tensor,
                   sample: torch.Tensor, n: int, grid: dict, step: float, margin: float, rel: float = 0.0
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Line-of-sight losses from the depth label of each ray, on the renderer's volume model.

    With optical depth τ(t) = ∫₀ᵗ σ (trilinear σ at the voxel-centre convention, midpoint rule
    with `step`, the part of the ray inside the grid box), the transmittance is T(t) = exp(−τ(t)):
    - empty before the hit: the label says the ray crossed [0, (1 − rel)·d − margin] unobstructed,
      so −log T(·) = τ(·) there should be 0 (`rel` keeps grazing rays — the ground seen at a
      shallow angle — from clearing the very voxel they end in); returned per unit length (mean σ·step
      over that segment), so near and far rays count alike — the 2D analogue of the 3D loss's
      free-space term;
    - termination: the ray must have stopped by d + margin: −log(1 − T(d + margin)).
    Both use only the 2D depth label (camera z converted to ray distance). Returns (free, term).
    """
    lo = torch.tensor(grid["pc_range"][:3], device=density.device, dtype=torch.float32)
    hi = torch.tensor(grid["pc_range"][3:], device=density.device, dtype=torch.float32)
    end = dist + margin
    k = int(math.ceil(float(end.max()) / step)) if end.numel() else 0
    if k == 0:
        zero = density.sum() * 0
        return zero, zero
    t = (torch.arange(k, device=density.device, dtype=torch.float32) + 0.5) * step  # (k,)
    pts = origins[:, None] + t[None, :, None] * dirs[:, None]  # (R, k, 3)
    inside = ((pts > lo) & (pts < hi)).all(-1)
    norm = (pts - lo) / (hi - lo) * 2 - 1  # align_corners=False: voxel centres at (i + 0.5)/N
    sig = density.new_zeros(pts.shape[:2])
    for bi in range(density.shape[0]):
        m = sample == bi
        if not m.any():
            continue
        g = norm[m].flip(-1)[None, :, :, None, :]  # grid_sample wants (z, y, x) ↔ (W, H, D) order
        v = F.grid_sample(density[bi][None, None], g, mode="bilinear", padding_mode="border",
                          align_corners=False)
        sig = sig.index_put((m.nonzero()[:, 0],), v[0, 0, :, :, 0])
    sig = sig * inside
    free = t[None] < ((1 - rel) * dist - margin)[:, None]
    tau_free = (sig * step * free).sum(1) / free.sum(1).clamp_min(1)
    has = free.any(1)
    loss_free = per_sample_mean(tau_free[has], sample[has], n) if has.any() else density.sum() * 0
    tau_end = (sig * step * (t[None] < end[:, None])).sum(1)
    loss_term = per_sample_mean(-torch.log(-torch.expm1(-tau_end.clamp_min(1e-4))), sample, n)
    return loss_free, loss_term
