"""`render_rays`, `ray_visibility`, `ray_optical_depth`: the public entry points and backend choice.

The kernels return the raw composites (depth without background, semantics, opacity,
distortion, t_far); options that are cheap tensor algebra on those (the background depth)
are applied here so the kernels and the reference stay one contract. The ops carry their own
autograd and fake kernels (op_registrations.py), so these wrappers call them like any ATen op.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from renderocc.cuda import loader
from renderocc.cuda.reference import optical_depth_reference, render_reference, visibility_reference

BACKENDS = ("auto", "cpu", "cuda", "reference")
SEMANTIC_MODES = ("logits", "probs")


@dataclass(frozen=True)
class RenderOutput:
    """Per-ray composites. Unpacks as (depth, semantics, opacity); `distortion` when asked."""

    depth: torch.Tensor
    semantics: torch.Tensor
    opacity: torch.Tensor
    distortion: torch.Tensor | None = None

    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter((self.depth, self.semantics, self.opacity))


def _triple(value: float | Sequence[float] | torch.Tensor, what: str) -> list[float]:
    values = value.tolist() if isinstance(value, torch.Tensor) else value
    values = [float(values)] * 3 if isinstance(values, int | float) else [float(v) for v in values]
    if len(values) != 3 or min(values) <= 0:
        raise ValueError(f"{what} must be one positive number or three, got {value!r}")
    return values


def _choose_backend(backend: str, device: torch.device) -> tuple[str, Any]:
    """(backend name, ops or None); falls back to the reference (one warning) without the extension."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "reference":
        return backend, None
    if backend == "auto":
        backend = "cuda" if device.type == "cuda" else "cpu"
    if backend != device.type:
        raise ValueError(f"backend={backend!r} needs {backend} tensors, got {device.type} tensors")
    ops = loader.load_or_warn()
    return (backend, ops) if ops is not None else ("reference", None)


def _rays_and_grid(density: torch.Tensor, origins: torch.Tensor, directions: torch.Tensor,
                   batch_index: torch.Tensor, pc_range: Sequence[float] | torch.Tensor,
                   voxel_size: float | Sequence[float], step: float
                   ) -> tuple[list[float], list[float], torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validate and normalise the arguments every entry point shares (clear ValueErrors, not
    kernel asserts): box, voxel, and rays cast to the grid's dtype/device, contiguous."""
    if density.dim() != 4 or density.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"density must be a float32/float64 (B, X, Y, Z) tensor, got "
                         f"{density.dtype} {tuple(density.shape)}")
    box = [float(v) for v in (pc_range.tolist() if isinstance(pc_range, torch.Tensor) else pc_range)]
    if len(box) != 6 or any(box[a] >= box[a + 3] for a in range(3)):
        raise ValueError(f"pc_range must be (xmin, ymin, zmin, xmax, ymax, zmax), got {pc_range!r}")
    voxel = _triple(voxel_size, "voxel_size")
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
    return box, voxel, origins, directions, batch_index


def render_rays(density: torch.Tensor, semantics: torch.Tensor, origins: torch.Tensor,
                directions: torch.Tensor, batch_index: torch.Tensor, *,
                pc_range: Sequence[float] | torch.Tensor, voxel_size: float | Sequence[float],
                step: float, near: float = 0.0, backend: str = "auto",
                background_depth: bool = False, return_distortion: bool = False,
                semantic_mode: str = "logits") -> RenderOutput:
    """Volume-render rays through per-batch density/semantic grids (see issue 5 for the contract).

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
    box, voxel, origins, directions, batch_index = _rays_and_grid(
        density, origins, directions, batch_index, pc_range, voxel_size, step)
    probs = semantic_mode == "probs"
    name, ops = _choose_backend(backend, density.device)
    if name == "reference":
        depth, sem, opacity, distortion, t_far = render_reference(
            density, semantics, origins, directions, batch_index, tuple(box), tuple(voxel),
            float(near), float(step), probs)
    else:
        depth, sem, opacity, distortion, t_far = ops.forward(
            density.contiguous(), semantics.contiguous(), origins, directions, batch_index, box, voxel,
            float(near), float(step), probs)
    if background_depth:
        depth = depth + (1 - opacity) * t_far
    return RenderOutput(depth, sem, opacity, distortion if return_distortion else None)


@torch.no_grad()
def ray_visibility(density: torch.Tensor, origins: torch.Tensor, directions: torch.Tensor,
                   batch_index: torch.Tensor, *, pc_range: Sequence[float] | torch.Tensor,
                   voxel_size: float | Sequence[float], step: float, near: float = 0.0,
                   backend: str = "auto") -> torch.Tensor:
    """(B, X, Y, Z): per voxel, the max over the rays' samples (before the early stop) of
    transmittance-before-the-sample x the sample's trilinear weight on that voxel.

    Same sampling as `render_rays`; 0 means no ray reached the voxel, values near 1 mean some
    ray saw it unoccluded, so a threshold tells observed voxels (e.g. a camera-visibility mask
    for predictions). Not differentiable.
    """
    box, voxel, origins, directions, batch_index = _rays_and_grid(
        density, origins, directions, batch_index, pc_range, voxel_size, step)
    name, ops = _choose_backend(backend, density.device)
    if name == "reference":
        return visibility_reference(density, origins, directions, batch_index, tuple(box), tuple(voxel),
                                    float(near), float(step))
    return ops.visibility(density.contiguous(), origins, directions, batch_index, box, voxel, float(near),
                          float(step))


def ray_optical_depth(density: torch.Tensor, origins: torch.Tensor, directions: torch.Tensor,
                      batch_index: torch.Tensor, t_ends: torch.Tensor, *,
                      pc_range: Sequence[float] | torch.Tensor, voxel_size: float | Sequence[float],
                      step: float, near: float = 0.0, backend: str = "auto"
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """(tau, count), both (R, E): optical depth of each ray up to each of its E end distances.

    tau[r, e] sums sigma(t_k)·step over the `render_rays` samples t_k < t_ends[r, e] (same clipping,
    sample rule and interpolation, but no early termination: an integral, not compositing);
    count[r, e] is how many samples that is (not differentiable). Rays missing the box give 0/0.
    Lets line-of-sight losses (exp(-tau) is the transmittance) run on the kernels instead of
    materialising rays x samples densities. Differentiable w.r.t. density only.
    """
    box, voxel, origins, directions, batch_index = _rays_and_grid(
        density, origins, directions, batch_index, pc_range, voxel_size, step)
    t_ends = t_ends.to(device=density.device, dtype=density.dtype).contiguous()
    if t_ends.dim() != 2 or t_ends.shape[0] != origins.shape[0] or t_ends.shape[1] < 1:
        raise ValueError(f"t_ends must be (R, E) with E >= 1 for R = {origins.shape[0]} rays, "
                         f"got {tuple(t_ends.shape)}")
    name, ops = _choose_backend(backend, density.device)
    if name == "reference":
        return optical_depth_reference(density, origins, directions, batch_index, t_ends, tuple(box),
                                       tuple(voxel), float(near), float(step))
    return ops.optical_depth(density.contiguous(), origins, directions, batch_index, t_ends, box, voxel,
                             float(near), float(step))
