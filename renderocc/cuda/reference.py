"""Pure-PyTorch renderer: the oracle the kernels are tested against.

Written "the RenderOcc way" on purpose: every sample of every ray is materialised
((R, K_max) positions, densities and (R, K_max, C) semantics), interpolated with
`grid_sample` and composited with `cumprod`. Simple to audit, O(rays x samples x C) memory.
It follows the same contract as the kernels, including the early-termination rule (a sample
counts while the transmittance *before* it is >= 1e-4) and the clipping arithmetic.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

TRANSMITTANCE_EPS = 1e-4
COUNT_SLACK = 1e-6  # a span of exactly n steps gives n samples despite rounding (as the kernels)


def clip_rays(origins: torch.Tensor, directions: torch.Tensor, box: tuple[float, ...], near: float
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Slab test against the box and t >= near: (t_in, t_out, hit); zero-direction axes never divide."""
    R = origins.shape[0]
    opts = {"dtype": origins.dtype, "device": origins.device}
    t_in = torch.full((R,), near, **opts)
    t_out = torch.full((R,), float("inf"), **opts)
    hit = torch.ones(R, dtype=torch.bool, device=origins.device)
    for a in range(3):
        o, d = origins[:, a], directions[:, a]
        lo, hi = box[a], box[a + 3]
        zero = d == 0
        hit &= ~(zero & ((o < lo) | (o > hi)))
        safe_d = torch.where(zero, torch.ones_like(d), d)
        t1 = (lo - o) / safe_d
        t2 = (hi - o) / safe_d
        tlo = torch.where(zero, torch.full_like(t1, -float("inf")), torch.minimum(t1, t2))
        thi = torch.where(zero, torch.full_like(t1, float("inf")), torch.maximum(t1, t2))
        t_in = torch.where(tlo > t_in, tlo, t_in)
        t_out = torch.where(thi < t_out, thi, t_out)
    hit &= t_out > t_in
    return t_in, t_out, hit


def _normalised_coords(points: torch.Tensor, box: tuple[float, ...], voxel: tuple[float, float, float],
                       shape: tuple[int, int, int]) -> torch.Tensor:
    """grid_sample coordinates (z, y, x order, align_corners=True) of the Occ3D voxel-centre index."""
    coords = []
    for a in range(3):
        n = shape[a]
        u = ((points[..., a] - box[a]) / voxel[a] - 0.5).clamp(0, n - 1)
        coords.append(u / (n - 1) * 2 - 1 if n > 1 else torch.zeros_like(u))
    return torch.stack(coords[::-1], dim=-1)


def render_reference(density: torch.Tensor, semantics: torch.Tensor, origins: torch.Tensor,
                     directions: torch.Tensor, batch_index: torch.Tensor, box: tuple[float, ...],
                     voxel: tuple[float, float, float], near: float, step: float, probs: bool
                     ) -> tuple[torch.Tensor, ...]:
    """Same outputs as the kernel: (depth without background, semantics, opacity, distortion, t_far)."""
    B, X, Y, Z, C = semantics.shape
    R = origins.shape[0]
    t_in, t_out, hit = clip_rays(origins, directions, box, near)
    count = torch.floor((t_out - t_in) / step * (1 + COUNT_SLACK))
    K = torch.where(hit, count, torch.zeros_like(count)).long()
    k_max = max(int(K.max()) if R else 0, 1)
    k = torch.arange(k_max, device=origins.device)
    t = t_in[:, None] + (k.to(origins.dtype) + 0.5) * step  # (R, K)
    valid = k[None, :] < K[:, None]
    points = origins[:, None, :] + t[..., None] * directions[:, None, :]  # (R, K, 3)
    grid = _normalised_coords(points, box, voxel, (X, Y, Z))
    channels = torch.cat([density[:, None], semantics.permute(0, 4, 1, 2, 3)], dim=1)  # (B, 1+C, X, Y, Z)
    sampled = torch.zeros(R, k_max, 1 + C, dtype=density.dtype, device=density.device)
    for b in range(B):
        idx = torch.nonzero(batch_index == b).squeeze(1)
        if idx.numel() == 0:
            continue
        out = F.grid_sample(channels[b:b + 1], grid[idx][None, None], mode="bilinear",
                            padding_mode="border", align_corners=True)  # (1, 1+C, 1, Rb, K)
        sampled = sampled.index_copy(0, idx, out[0, :, 0].permute(1, 2, 0))
    sigma = torch.where(valid, sampled[..., 0], torch.zeros_like(t))
    sem = sampled[..., 1:].softmax(-1) if probs else sampled[..., 1:]
    trans = torch.exp(-sigma * step)
    t_before = torch.cumprod(torch.cat([torch.ones_like(trans[:, :1]), trans[:, :-1]], dim=1), dim=1)
    keep = valid & (t_before >= TRANSMITTANCE_EPS)
    w = torch.where(keep, t_before * (1 - trans), torch.zeros_like(trans))
    depth = (w * t).sum(1)
    opacity = w.sum(1)
    sem_out = (w[..., None] * sem).sum(1)
    w_before = torch.cumsum(w, 1) - w
    m_before = torch.cumsum(w * t, 1) - w * t
    distortion = 2 * (w * (t * w_before - m_before)).sum(1) + step / 3 * (w * w).sum(1)
    t_far = torch.where(hit, t_out, torch.zeros_like(t_out))
    return depth, sem_out, opacity, distortion, t_far.detach()
