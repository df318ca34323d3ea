"""Every compiled op, reached one way: render, visibility, optical depth, first hits, mark crossed, knn2d.

Each op has a compiled kernel (the renderer extension, `renderocc/cuda/`) and a twin that computes
the same contract without it: the PyTorch reference (`cuda/reference.py`) for the renderer ops, the
numpy walks (`geometry/traversal.py`) for the voxel walks, scipy's kd-tree for knn2d. The choice
is made here and only here (`kernel`), by one rule:

- `backend="auto"`: the compiled kernel when the extension builds, else the twin, after ONE
  warning per process (the twin is correct but much slower);
- `"compiled"` (or the device name `"cpu"` / `"cuda"`, which must match the tensors'): the
  kernel, or `ExtensionUnavailable`;
- `"twin"` (also spelt `"reference"` or `"numpy"`): the twin, always.

Every op takes the grid as a `Grid`; its kernel arguments come from `Grid.kernel_args()`.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from renderocc.cuda import loader
from renderocc.cuda.loader import ExtensionUnavailable
from renderocc.cuda.reference import optical_depth_reference, render_reference, visibility_reference
from renderocc.geometry import Grid
from renderocc.geometry.traversal import (
    MAX_LAYERS,
    check_hit_grid,
    first_hits_numpy,
    mark_crossed_numpy,
    packed_layers,
)

BACKENDS = ("auto", "compiled", "twin", "cpu", "cuda", "reference", "extension", "numpy")
_ALIASES = {"reference": "twin", "numpy": "twin", "extension": "compiled"}
SEMANTIC_MODES = ("logits", "probs")
_warned: list[bool] = []

__all__ = ["BACKENDS", "ExtensionUnavailable", "RenderOutput", "first_hits", "kernel", "knn2d", "mark_crossed",
           "ray_optical_depth", "ray_visibility", "render_rays"]


def kernel(name: str, backend: str = "auto", device: torch.device | str = "cpu") -> Any | None:
    """The compiled op `name` for `backend` on `device`, or None when its twin is to run (the rule above)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    device_type = torch.device(device).type
    backend = _ALIASES.get(backend, backend)
    if backend == "twin":
        return None
    if backend in ("cpu", "cuda") and backend != device_type:
        raise ValueError(f"backend={backend!r} needs {backend} tensors, got {device_type} tensors")
    if backend == "auto":
        try:
            return getattr(loader.load(), name)
        except ExtensionUnavailable as exc:
            if not _warned:
                _warned.append(True)
                warnings.warn(f"renderocc: renderer extension unavailable ({exc}); using the slower twins "
                              "(PyTorch reference, numpy walks). Run `renderocc build-ext` to see the build log.",
                              RuntimeWarning, stacklevel=3)
            return None
    return getattr(loader.load(), name)


# -- the renderer ops ---------------------------------------------------------------------------
@dataclass(frozen=True)
class RenderOutput:
    """Per-ray composites. Unpacks as (depth, semantics, opacity); `distortion` when asked."""

    depth: torch.Tensor
    semantics: torch.Tensor
    opacity: torch.Tensor
    distortion: torch.Tensor | None = None

    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter((self.depth, self.semantics, self.opacity))


def _rays_on_grid(density: torch.Tensor, origins: torch.Tensor, directions: torch.Tensor,
                  batch_index: torch.Tensor, grid: Grid, step: float
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validate and normalise the arguments every renderer op shares (clear ValueErrors, not kernel
    asserts): rays cast to the grid's dtype/device, contiguous."""
    if density.dim() != 4 or density.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"density must be a float32/float64 (B, X, Y, Z) tensor, got "
                         f"{density.dtype} {tuple(density.shape)}")
    if not isinstance(grid, Grid):
        raise TypeError(f"grid must be a renderocc.geometry.Grid, got {type(grid).__name__}")
    if tuple(density.shape[1:]) != grid.shape:
        raise ValueError(f"density {tuple(density.shape[1:])} does not match the grid's shape {grid.shape}")
    if not step > 0:
        raise ValueError(f"step must be positive, got {step!r}")
    dtype, device = density.dtype, density.device
    origins = origins.to(device=device, dtype=dtype).contiguous()
    directions = directions.to(device=device, dtype=dtype).contiguous()
    batch_index = batch_index.to(device=device, dtype=torch.long).contiguous()
    if origins.dim() != 2 or origins.shape[1] != 3 or directions.shape != origins.shape:
        raise ValueError("origins and directions must both be (R, 3)")
    if batch_index.shape != (origins.shape[0],):
        raise ValueError("batch_index must be (R,)")
    if torch.compiler.is_compiling():  # no host sync in a compiled graph: the check runs with it
        torch._assert_async(((batch_index >= 0) & (batch_index < density.shape[0])).all(),
                            f"batch_index must lie in [0, {density.shape[0]})")
    elif batch_index.numel() and (int(batch_index.min()) < 0 or int(batch_index.max()) >= density.shape[0]):
        raise ValueError(f"batch_index must lie in [0, {density.shape[0]})")
    return origins, directions, batch_index


def render_rays(density: torch.Tensor, semantics: torch.Tensor, origins: torch.Tensor,
                directions: torch.Tensor, batch_index: torch.Tensor, *, grid: Grid, step: float,
                near: float = 0.0, backend: str = "auto", background_depth: bool = False,
                return_distortion: bool = False, semantic_mode: str = "logits") -> RenderOutput:
    """Volume-render rays through per-batch density/semantic grids (the renderer contract of
    `cuda/csrc/render_core.h`).

    density (B, X, Y, Z) >= 0; semantics (B, X, Y, Z, C); origins/directions (R, 3) in the grid
    frame, unit directions; batch_index (R,) int64. Options: `background_depth` adds
    (1 - opacity) * t_far (the clipped exit distance); `return_distortion` fills
    `RenderOutput.distortion` with the per-ray Mip-NeRF 360 distortion (metres, differentiable
    w.r.t. density); `semantic_mode="probs"` composites softmax(interpolated logits).
    """
    if semantic_mode not in SEMANTIC_MODES:
        raise ValueError(f"semantic_mode must be one of {SEMANTIC_MODES}, got {semantic_mode!r}")
    if semantics.dim() != 5 or semantics.shape[:4] != density.shape:
        raise ValueError(f"density (B,X,Y,Z) and semantics (B,X,Y,Z,C) disagree: "
                         f"{tuple(density.shape)} vs {tuple(semantics.shape)}")
    if semantics.dtype != density.dtype:
        raise ValueError("density and semantics must share a dtype")
    origins, directions, batch_index = _rays_on_grid(density, origins, directions, batch_index, grid, step)
    probs = semantic_mode == "probs"
    op = kernel("forward", backend, density.device)
    if op is None:
        depth, sem, opacity, distortion, t_far = render_reference(
            density, semantics, origins, directions, batch_index, grid, float(near), float(step), probs)
    else:
        depth, sem, opacity, distortion, t_far = op(
            density.contiguous(), semantics.contiguous(), origins, directions, batch_index, *grid.kernel_args(),
            float(near), float(step), probs)
    if background_depth:
        depth = depth + (1 - opacity) * t_far
    return RenderOutput(depth, sem, opacity, distortion if return_distortion else None)


@torch.no_grad()
def ray_visibility(density: torch.Tensor, origins: torch.Tensor, directions: torch.Tensor,
                   batch_index: torch.Tensor, *, grid: Grid, step: float, near: float = 0.0,
                   backend: str = "auto") -> torch.Tensor:
    """(B, X, Y, Z): per voxel, the max over the rays' samples (before the early stop) of
    transmittance-before-the-sample x the sample's trilinear weight on that voxel.

    Same sampling as `render_rays`; 0 means no ray reached the voxel, values near 1 mean some
    ray saw it unoccluded, so a threshold tells observed voxels (e.g. a camera-visibility mask
    for predictions). Not differentiable.
    """
    origins, directions, batch_index = _rays_on_grid(density, origins, directions, batch_index, grid, step)
    op = kernel("visibility", backend, density.device)
    if op is None:
        return visibility_reference(density, origins, directions, batch_index, grid, float(near), float(step))
    return op(density.contiguous(), origins, directions, batch_index, *grid.kernel_args(), float(near), float(step))


def ray_optical_depth(density: torch.Tensor, origins: torch.Tensor, directions: torch.Tensor,
                      batch_index: torch.Tensor, t_ends: torch.Tensor, *, grid: Grid, step: float,
                      near: float = 0.0, backend: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """(tau, count), both (R, E): optical depth of each ray up to each of its E end distances.

    tau[r, e] sums sigma(t_k)·step over the `render_rays` samples t_k < t_ends[r, e] (same clipping,
    sample rule and interpolation, but no early termination: an integral, not compositing);
    count[r, e] is how many samples that is (not differentiable). Rays missing the box give 0/0.
    Lets line-of-sight losses (exp(-tau) is the transmittance) run on the kernels instead of
    materialising rays x samples densities. Differentiable w.r.t. density only.
    """
    origins, directions, batch_index = _rays_on_grid(density, origins, directions, batch_index, grid, step)
    t_ends = t_ends.to(device=density.device, dtype=density.dtype).contiguous()
    if t_ends.dim() != 2 or t_ends.shape[0] != origins.shape[0] or t_ends.shape[1] < 1:
        raise ValueError(f"t_ends must be (R, E) with E >= 1 for R = {origins.shape[0]} rays, "
                         f"got {tuple(t_ends.shape)}")
    op = kernel("optical_depth", backend, density.device)
    if op is None:
        return optical_depth_reference(density, origins, directions, batch_index, t_ends, grid, float(near),
                                       float(step))
    return op(density.contiguous(), origins, directions, batch_index, t_ends, *grid.kernel_args(), float(near),
              float(step))


# -- the voxel walks (CPU) ----------------------------------------------------------------------
def _f64(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return np.ascontiguousarray(np.reshape(np.asarray(a, np.float64), shape))


def mark_crossed(hit: np.ndarray, origins: np.ndarray, directions: np.ndarray, lengths: np.ndarray, grid: Grid,
                 backend: str = "auto") -> None:
    """Set `hit[x, y, z] = True` for every voxel a segment o + t·d, t ∈ [0, length], passes (exactly:
    a voxel only grazed at a corner counts too). The compiled walk repeats the numpy walk's float64
    arithmetic, so the marks are identical."""
    check_hit_grid(hit, grid)
    op = kernel("mark_crossed", backend) if hit.dtype == np.bool_ else None
    if op is None:
        mark_crossed_numpy(hit, origins, directions, lengths, grid)
        return
    op(torch.from_numpy(_f64(origins, (-1, 3))), torch.from_numpy(_f64(directions, (-1, 3))),
       torch.from_numpy(_f64(lengths, (-1,))), *grid.kernel_args(), torch.from_numpy(hit))


def first_hits(layers: np.ndarray, origins: np.ndarray, directions: np.ndarray, grid: Grid,
               backend: str = "auto", threads: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """First occupied voxel along each ray, for up to 7 occupancy layers walked together.

    `layers` (L, X, Y, Z) bool (e.g. GT and prediction) share one exact traversal: every step
    reads all layers with one gather of a bit-packed grid, and a ray stops once every layer has
    hit. Returns, per layer and ray, `(voxel (L, R) int64 flat index, dist (L, R), hit (L, R))`:
    the first occupied voxel and the distance where the ray leaves it; a ray that meets nothing
    reports the last voxel inside the grid and the box exit (as SparseOcc's `dvr` kernel); a ray
    that misses the box reports voxel -1 and NaN. Origins may lie outside the box. `threads` caps
    the threads (default: torch's for the kernel, up to 2 for the numpy twin).
    """
    layers = np.asarray(layers, bool)
    L = layers.shape[0]
    if not 1 <= L <= MAX_LAYERS:
        raise ValueError(f"first_hits: 1 to {MAX_LAYERS} layers")
    if tuple(layers.shape[1:]) != grid.shape:
        raise ValueError(f"first_hits: layers {tuple(layers.shape[1:])} do not match the grid's shape {grid.shape}")
    bits = packed_layers(layers)
    o, d = _f64(origins, (-1, 3)), _f64(directions, (-1, 3))
    op = kernel("first_hits", backend)
    if op is None:
        return first_hits_numpy(bits, o, d, grid, L, threads)
    out = op(torch.from_numpy(bits), torch.from_numpy(o), torch.from_numpy(d), *grid.kernel_args(),
             list(grid.shape), L, threads or 0)
    voxel, dist, hit = (t.numpy() for t in out)
    return voxel, dist, hit


def knn2d(points: np.ndarray, k: int, radius: float, backend: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """(dist, idx), each (n, k): every 2D point's k nearest other points closer than `radius`, nearest
    first; missing ones are inf / n. Compiled grid search (ties: lower index first), or scipy's
    kd-tree as the twin (ties in its own order)."""
    points = np.ascontiguousarray(points, np.float64)
    op = kernel("knn2d", backend)
    if op is not None:
        dist, idx = op(torch.from_numpy(points), int(k), float(radius))
        return dist.numpy(), idx.numpy()
    from scipy.spatial import cKDTree  # optional here: the renderer alone runs without scipy

    tree = cKDTree(points, balanced_tree=False, compact_nodes=False)   # faster to build, as fast to query
    dist, idx = tree.query(points, k + 1, distance_upper_bound=radius)
    return dist[:, 1:], idx[:, 1:]                                        # drop the point itself
