"""How a ray is sampled inside a grid: the box clip, the sample rule and trilinear values.

The renderer kernels (`cuda/csrc/render_core.h`) implement the same arithmetic, and the PyTorch
twin in `cuda/reference.py` is built from the functions below:

- Box clip: slab test against the grid box and t ≥ near; an axis with a zero direction component
  never divides (`clip_rays`, torch, exactly the kernel's `clip_ray`; `clip_to_box`, numpy, for
  traversal).
- Sample rule: K = floor((t_out − t_in)/step·(1 + 1e-6)) samples at t_k = t_in + (k + ½)·step
  (`sample_count`, `sample_positions`).
- Trilinear values at the voxel-centre convention: continuous index u = (p − lo)/voxel − ½ clamped to
  [0, N − 1], so values live at voxel centres and hold flat beyond the outermost ones (`trilinear`
  samples values, `trilinear_corners` gives the 8 voxels and weights, as the kernel).
- Early stop: a sample counts while the transmittance before it is ≥ TRANSMITTANCE_EPS.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

if TYPE_CHECKING:  # the grid module builds on this one (Scoring interpolates with `trilinear`)
    from renderocc.geometry.grid import Grid

COUNT_SLACK = 1e-6        # a span of exactly n steps gives n samples despite rounding (as the kernels)
TRANSMITTANCE_EPS = 1e-4  # compositing stops once less light than this is left (render_core.h: kTransmittanceEps)
MIN_DIRECTION = 1e-12     # |d| below this on an axis: the numpy slab test treats the axis as parallel


def clip_to_box(origins: np.ndarray, directions: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                t_max: np.ndarray | float = np.inf) -> tuple[np.ndarray, np.ndarray]:
    """Slab test: per ray (t_near, t_far) of its part inside the box, limited to [0, t_max].

    Rays that miss get t_near > t_far. numpy/float64, for the exact traversal.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / np.where(np.abs(directions) > MIN_DIRECTION, directions, MIN_DIRECTION)
    t0 = (lo - origins) * inv
    t1 = (hi - origins) * inv
    t_near = np.maximum(np.minimum(t0, t1).max(-1), 0.0)
    t_far = np.minimum(np.maximum(t0, t1).min(-1), t_max)
    return t_near, t_far


def clip_rays(origins: torch.Tensor, directions: torch.Tensor, box: Sequence[float], near: float
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The kernel's `clip_ray`: slab test against `box` and t ≥ near → (t_in, t_out, hit).

    Zero-direction axes never divide: the ray lies within that slab for all t or misses.
    """
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


def sample_count(t_in: torch.Tensor, t_out: torch.Tensor, hit: torch.Tensor, step: float) -> torch.Tensor:
    """(R,) int64 samples per ray: floor((t_out − t_in)/step·(1 + 1e-6)), 0 for rays that miss."""
    count = torch.floor((t_out - t_in) / step * (1 + COUNT_SLACK))
    return torch.where(hit, count, torch.zeros_like(count)).long()


def sample_positions(origins: torch.Tensor, directions: torch.Tensor, box: Sequence[float], near: float,
                     step: float) -> tuple[torch.Tensor, ...]:
    """Every sample of every ray, padded to the longest: (t (R,K), valid (R,K), points (R,K,3), hit, t_out).

    t_k = t_in + (k + ½)·step for k < sample_count; padded entries continue the sequence but
    have valid False.
    """
    R = origins.shape[0]
    t_in, t_out, hit = clip_rays(origins, directions, box, near)
    K = sample_count(t_in, t_out, hit, step)
    k_max = max(int(K.max()) if R else 0, 1)
    k = torch.arange(k_max, device=origins.device)
    t = t_in[:, None] + (k.to(origins.dtype) + 0.5) * step  # (R, K)
    valid = k[None, :] < K[:, None]
    points = origins[:, None, :] + t[..., None] * directions[:, None, :]  # (R, K, 3)
    return t, valid, points, hit, t_out


def normalised_coords(points: torch.Tensor, grid: Grid) -> torch.Tensor:
    """grid_sample coordinates (z, y, x order, align_corners=True) of the voxel-centre index
    u = (p − lo)/voxel − ½, clamped to the outermost centres [0, N − 1] (the kernel's `axis_lerp`)."""
    coords = []
    for a in range(3):
        n = grid.shape[a]
        u = ((points[..., a] - grid.box[a]) / grid.voxel[a] - 0.5).clamp(0, n - 1)
        coords.append(u / (n - 1) * 2 - 1 if n > 1 else torch.zeros_like(u))
    return torch.stack(coords[::-1], dim=-1)


def trilinear(volume: torch.Tensor, points: torch.Tensor, grid: Grid) -> torch.Tensor:
    """Sample (C, X, Y, Z) `volume` at `points` (..., 3) → (..., C), trilinear at voxel centres.

    The same values the kernels interpolate (borders held flat), via `grid_sample`.
    """
    C = volume.shape[0]
    coords = normalised_coords(points, grid)
    out = F.grid_sample(volume[None], coords.reshape(1, 1, 1, -1, 3).to(volume.dtype), mode="bilinear",
                        padding_mode="border", align_corners=True)  # (1, C, 1, 1, N)
    return out[0, :, 0, 0].T.reshape(*points.shape[:-1], C)


def trilinear_corners(points: torch.Tensor, grid: Grid) -> tuple[torch.Tensor, torch.Tensor]:
    """(flat voxel index (..., 8), weight (..., 8)) of each point's trilinear corners, as the
    kernel's `trilinear_corners`: clamped continuous index, lower corner clamped to N − 2.

    A point inside voxel i's cell puts weight ≥ ½ per axis, so ≥ ⅛ in all, on voxel i.
    """
    X, Y, Z = grid.shape
    lead = points.shape[:-1]
    index = torch.zeros((*lead, 8), dtype=torch.long, device=points.device)
    weight = torch.ones((*lead, 8), dtype=points.dtype, device=points.device)
    corner = torch.arange(8, device=points.device)
    for a, (n, stride) in enumerate(zip(grid.shape, (Y * Z, Z, 1), strict=True)):
        u = ((points[..., a] - grid.box[a]) / grid.voxel[a] - 0.5).clamp(0, n - 1)
        i0 = u.floor().clamp(max=max(n - 2, 0))
        f = u - i0
        bit = ((corner >> (2 - a)) & 1).to(points.dtype)  # corner n = 4 i + 2 j + k
        i = (i0[..., None] + bit).clamp(max=n - 1).long()
        index += i * stride
        weight = weight * torch.where(bit.bool(), f[..., None], 1 - f[..., None])
    return index, weight
