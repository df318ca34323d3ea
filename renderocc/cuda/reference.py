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


def _samples(origins: torch.Tensor, directions: torch.Tensor, box: tuple[float, ...], near: float,
             step: float) -> tuple[torch.Tensor, ...]:
    """Every sample of every ray, padded to the longest: (t, valid, points, hit, t_out)."""
    R = origins.shape[0]
    t_in, t_out, hit = clip_rays(origins, directions, box, near)
    count = torch.floor((t_out - t_in) / step * (1 + COUNT_SLACK))
    K = torch.where(hit, count, torch.zeros_like(count)).long()
    k_max = max(int(K.max()) if R else 0, 1)
    k = torch.arange(k_max, device=origins.device)
    t = t_in[:, None] + (k.to(origins.dtype) + 0.5) * step  # (R, K)
    valid = k[None, :] < K[:, None]
    points = origins[:, None, :] + t[..., None] * directions[:, None, :]  # (R, K, 3)
    return t, valid, points, hit, t_out


def _transmittance_before(sigma: torch.Tensor, step: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-sample transmittance exp(-sigma step), transmittance before each sample via cumprod)."""
    trans = torch.exp(-sigma * step)
    before = torch.cumprod(torch.cat([torch.ones_like(trans[:, :1]), trans[:, :-1]], dim=1), dim=1)
    return trans, before


def render_reference(density: torch.Tensor, semantics: torch.Tensor, origins: torch.Tensor,
                     directions: torch.Tensor, batch_index: torch.Tensor, box: tuple[float, ...],
                     voxel: tuple[float, float, float], near: float, step: float, probs: bool
                     ) -> tuple[torch.Tensor, ...]:
    """Same outputs as the kernel: (depth without background, semantics, opacity, distortion, t_far)."""
    B, X, Y, Z, C = semantics.shape
    R = origins.shape[0]
    t, valid, points, hit, t_out = _samples(origins, directions, box, near, step)
    k_max = t.shape[1]
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
                    batch_index: torch.Tensor, box: tuple[float, ...], voxel: tuple[float, float, float]
                    ) -> torch.Tensor:
    """(R, K) trilinear density at every sample, 0 on padding samples (density-only marches)."""
    B, X, Y, Z = density.shape
    sigma = torch.zeros(points.shape[:2], dtype=density.dtype, device=density.device)
    for b in range(B):
        idx = torch.nonzero(batch_index == b).squeeze(1)
        if idx.numel():
            grid = _normalised_coords(points[idx], box, voxel, (X, Y, Z))
            out = F.grid_sample(density[b:b + 1, None], grid[None, None], mode="bilinear",
                                padding_mode="border", align_corners=True)
            sigma = sigma.index_copy(0, idx, out[0, 0, 0])
    return torch.where(valid, sigma, torch.zeros_like(sigma))


def visibility_reference(density: torch.Tensor, origins: torch.Tensor, directions: torch.Tensor,
                         batch_index: torch.Tensor, box: tuple[float, ...], voxel: tuple[float, float, float],
                         near: float, step: float) -> torch.Tensor:
    """Per voxel, max over samples before the early stop of transmittance x trilinear weight."""
    B, X, Y, Z = density.shape
    t, valid, points, _, _ = _samples(origins, directions, box, near, step)
    sigma = _sample_density(density, points, valid, batch_index, box, voxel)
    _, before = _transmittance_before(sigma, step)
    keep = valid & (before >= TRANSMITTANCE_EPS)
    # The 8 corners, as the kernel: clamped continuous index, lower corner clamped to N - 2.
    flat = batch_index[:, None].expand_as(t) * (X * Y * Z)
    index = torch.zeros((*t.shape, 8), dtype=torch.long, device=t.device)
    weight = torch.ones((*t.shape, 8), dtype=t.dtype, device=t.device)
    corner = torch.arange(8, device=t.device)
    for a, (n, stride) in enumerate(zip((X, Y, Z), (Y * Z, Z, 1), strict=True)):
        u = ((points[..., a] - box[a]) / voxel[a] - 0.5).clamp(0, n - 1)
        i0 = u.floor().clamp(max=max(n - 2, 0))
        f = u - i0
        bit = ((corner >> (2 - a)) & 1).to(t.dtype)  # corner n = 4 i + 2 j + k
        i = (i0[..., None] + bit).clamp(max=n - 1).long()
        index += i * stride
        weight = weight * torch.where(bit.bool(), f[..., None], 1 - f[..., None])
    value = torch.where(keep[..., None], before[..., None] * weight, torch.zeros_like(weight))
    vis = torch.zeros(B * X * Y * Z, dtype=density.dtype, device=density.device)
    vis = vis.scatter_reduce(0, (index + flat[..., None]).reshape(-1), value.reshape(-1), "amax")
    return vis.view(B, X, Y, Z)


def optical_depth_reference(density: torch.Tensor, origins: torch.Tensor, directions: torch.Tensor,
                            batch_index: torch.Tensor, t_ends: torch.Tensor, box: tuple[float, ...],
                            voxel: tuple[float, float, float], near: float, step: float
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """(tau, count), both (R, E): sum of sigma·step over the samples before each end, and how many.

    No early termination (an integral, not compositing); differentiable w.r.t. density by autograd.
    """
    t, valid, points, _, _ = _samples(origins, directions, box, near, step)
    sigma = _sample_density(density, points, valid, batch_index, box, voxel)
    before = valid[..., None] & (t[..., None] < t_ends[:, None, :])  # (R, K, E)
    tau = (sigma[..., None] * step * before).sum(1)
    return tau, before.sum(1).to(density.dtype)
