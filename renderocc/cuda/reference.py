"""Pure-PyTorch renderer: the oracle the kernels are tested against.

Written "the RenderOcc way" on purpose: every sample of every ray is materialised
((R, K_max) positions, densities and (R, K_max, C) semantics), interpolated with
`grid_sample` and composited with `cumprod`. Simple to audit, O(rays x samples x C) memory.
It follows the same contract as the kernels, including the early-termination rule (a sample
counts while the transmittance *before* it is >= TRANSMITTANCE_EPS). Clipping, the sample rule and
trilinear sampling come from `renderocc.geometry.sampling`, the module that owns those conventions.
"""

from __future__ import annotations

import torch

from renderocc.geometry import Grid
from renderocc.geometry.sampling import TRANSMITTANCE_EPS, sample_positions, trilinear, trilinear_corners


def _transmittance_before(sigma: torch.Tensor, step: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-sample transmittance exp(-sigma step), transmittance before each sample via cumprod)."""
    trans = torch.exp(-sigma * step)
    before = torch.cumprod(torch.cat([torch.ones_like(trans[:, :1]), trans[:, :-1]], dim=1), dim=1)
    return trans, before


def render_reference(density: torch.Tensor, semantics: torch.Tensor, origins: torch.Tensor,
                     directions: torch.Tensor, batch_index: torch.Tensor, grid: Grid, near: float, step: float,
                     probs: bool
                     ) -> tuple[torch.Tensor, ...]:
    """Same outputs as the kernel: (depth without background, semantics, opacity, distortion, t_far)."""
    B, X, Y, Z, C = semantics.shape
    R = origins.shape[0]
    t, valid, points, hit, t_out = sample_positions(origins, directions, grid.box, near, step)
    k_max = t.shape[1]
    channels = torch.cat([density[:, None], semantics.permute(0, 4, 1, 2, 3)], dim=1)  # (B, 1+C, X, Y, Z)
    sampled = torch.zeros(R, k_max, 1 + C, dtype=density.dtype, device=density.device)
    for b in range(B):
        idx = torch.nonzero(batch_index == b).squeeze(1)
        if idx.numel():
            sampled = sampled.index_copy(0, idx, trilinear(channels[b], points[idx], grid))
    sigma = torch.where(valid, sampled[..., 0], torch.zeros_like(t))
    sem = sampled[..., 1:].softmax(-1) if probs else sampled[..., 1:]
    trans, t_before = _transmittance_before(sigma, step)
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


def _sample_density(density: torch.Tensor, points: torch.Tensor, valid: torch.Tensor,
                    batch_index: torch.Tensor, grid: Grid) -> torch.Tensor:
    """(R, K) trilinear density at every sample, 0 on padding samples (density-only marches)."""
    B = density.shape[0]
    sigma = torch.zeros(points.shape[:2], dtype=density.dtype, device=density.device)
    for b in range(B):
        idx = torch.nonzero(batch_index == b).squeeze(1)
        if idx.numel():
            sigma = sigma.index_copy(0, idx, trilinear(density[b:b + 1], points[idx], grid)[..., 0])
    return torch.where(valid, sigma, torch.zeros_like(sigma))


def visibility_reference(density: torch.Tensor, origins: torch.Tensor, directions: torch.Tensor,
                         batch_index: torch.Tensor, grid: Grid, near: float, step: float) -> torch.Tensor:
    """Per voxel, max over samples before the early stop of transmittance x trilinear weight."""
    B, X, Y, Z = density.shape
    t, valid, points, _, _ = sample_positions(origins, directions, grid.box, near, step)
    sigma = _sample_density(density, points, valid, batch_index, grid)
    _, before = _transmittance_before(sigma, step)
    keep = valid & (before >= TRANSMITTANCE_EPS)
    index, weight = trilinear_corners(points, grid)
    flat = batch_index[:, None].expand_as(t) * (X * Y * Z)
    value = torch.where(keep[..., None], before[..., None] * weight, torch.zeros_like(weight))
    vis = torch.zeros(B * X * Y * Z, dtype=density.dtype, device=density.device)
    vis = vis.scatter_reduce(0, (index + flat[..., None]).reshape(-1), value.reshape(-1), "amax")
    return vis.view(B, X, Y, Z)


def optical_depth_reference(density: torch.Tensor, origins: torch.Tensor, directions: torch.Tensor,
                            batch_index: torch.Tensor, t_ends: torch.Tensor, grid: Grid, near: float, step: float
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """(tau, count), both (R, E): sum of sigma·step over the samples before each end, and how many.

    No early termination (an integral, not compositing); differentiable w.r.t. density by autograd.
    """
    t, valid, points, _, _ = sample_positions(origins, directions, grid.box, near, step)
    sigma = _sample_density(density, points, valid, batch_index, grid)
    before = valid[..., None] & (t[..., None] < t_ends[:, None, :])  # (R, K, E)
    tau = (sigma[..., None] * step * before).sum(1)
    return tau, before.sum(1).to(density.dtype)
