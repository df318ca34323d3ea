"""Fake kernels and autograd formulas registered ON the compiled ops (`torch.ops.renderocc_render`).

The C++ side declares the schemas and the CPU/CUDA kernels; this module adds what the
dispatcher needs for every other path: fake (meta) kernels, so `torch.compile`, `opcheck` and
other tracing see output shapes without running a kernel, and `register_autograd`, so calling
the raw op is differentiable (the backward recomputes each ray; nothing per-sample is saved).
Import it only after the library is loaded: `loader.load()` does, and the C++ library names this
module (`m.set_python_module`) so torch imports it when a fake tensor first meets an op.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

NS = "renderocc_render"
_ops = getattr(torch.ops, NS)

_RENDER_INPUTS = 10   # density, semantics, origins, directions, batch_index, box, voxel, near, step, probs
_DEPTH_INPUTS = 9     # density, origins, directions, batch_index, t_ends, box, voxel, near, step


# -- fake kernels: shapes, dtypes and devices only -----------------------------------------------
@torch.library.register_fake(f"{NS}::forward")
def _forward_fake(density, semantics, origins, directions, batch_index, box, voxel, near, step, probs):
    rays, classes = origins.shape[0], semantics.shape[4]
    per_ray = [density.new_empty(rays) for _ in range(4)]
    return per_ray[0], density.new_empty(rays, classes), per_ray[1], per_ray[2], per_ray[3]


@torch.library.register_fake(f"{NS}::backward")
def _backward_fake(density, semantics, origins, directions, batch_index, box, voxel, near, step, probs,
                   depth, sem, opacity, distortion, g_depth, g_sem, g_opacity, g_distortion, need_sem_grad):
    grad_sem = torch.empty_like(semantics) if need_sem_grad else density.new_empty(0)
    return torch.empty_like(density), grad_sem


@torch.library.register_fake(f"{NS}::visibility")
def _visibility_fake(density, origins, directions, batch_index, box, voxel, near, step):
    return torch.empty_like(density)


@torch.library.register_fake(f"{NS}::optical_depth")
def _optical_depth_fake(density, origins, directions, batch_index, t_ends, box, voxel, near, step):
    return torch.empty_like(t_ends), torch.empty_like(t_ends)


@torch.library.register_fake(f"{NS}::optical_depth_backward")
def _optical_depth_backward_fake(density, origins, directions, batch_index, t_ends, box, voxel, near, step,
                                 g_tau):
    return torch.empty_like(density)


@torch.library.register_fake(f"{NS}::first_hits")
def _first_hits_fake(bits, origins, directions, box, voxel, shape, layers, threads):
    size = (layers, origins.shape[0])
    return (origins.new_empty(size, dtype=torch.long), origins.new_empty(size),
            origins.new_empty(size, dtype=torch.bool))


@torch.library.register_fake(f"{NS}::mark_crossed")
def _mark_crossed_fake(origins, directions, lengths, box, voxel, hit):
    return None


@torch.library.register_fake(f"{NS}::knn2d")
def _knn2d_fake(points, k, radius):
    return points.new_empty((points.shape[0], k)), points.new_empty((points.shape[0], k), dtype=torch.long)


# -- autograd on the ops ---------------------------------------------------------------------------
def _dense(grad: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """Kernels take every upstream gradient: an unused output's is zeros."""
    return torch.zeros_like(like) if grad is None else grad.contiguous()


def _render_setup(ctx: Any, inputs: Sequence[Any], output: tuple[torch.Tensor, ...]) -> None:
    density, semantics, origins, directions, batch_index, *params = inputs
    depth, sem, opacity, distortion, t_far = output
    ctx.save_for_backward(density, semantics, origins, directions, batch_index, depth, sem, opacity, distortion)
    ctx.params = params
    ctx.mark_non_differentiable(t_far)


def _render_backward(ctx: Any, g_depth, g_sem, g_opacity, g_distortion, _g_t_far) -> tuple:
    density, semantics, origins, directions, batch_index, depth, sem, opacity, distortion = ctx.saved_tensors
    need_density, need_sem = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    grad_density, grad_sem = _ops.backward(
        density, semantics, origins, directions, batch_index, *ctx.params,
        depth, sem, opacity, distortion, _dense(g_depth, depth), _dense(g_sem, sem),
        _dense(g_opacity, opacity), _dense(g_distortion, distortion), need_sem)
    return (grad_density if need_density else None, grad_sem if need_sem else None,
            *(None,) * (_RENDER_INPUTS - 2))


def _depth_setup(ctx: Any, inputs: Sequence[Any], output: tuple[torch.Tensor, torch.Tensor]) -> None:
    density, origins, directions, batch_index, t_ends, *params = inputs
    ctx.save_for_backward(density, origins, directions, batch_index, t_ends)
    ctx.params = params
    ctx.mark_non_differentiable(output[1])


def _depth_backward(ctx: Any, g_tau, _g_count) -> tuple:
    density, origins, directions, batch_index, t_ends = ctx.saved_tensors
    grad_density = None
    if g_tau is not None and ctx.needs_input_grad[0]:
        grad_density = _ops.optical_depth_backward(density, origins, directions, batch_index, t_ends,
                                                   *ctx.params, g_tau.contiguous())
    return (grad_density, *(None,) * (_DEPTH_INPUTS - 1))


def _no_double_backward(ctx: Any, *grads: Any) -> tuple:
    raise RuntimeError("renderocc: the renderer's backward ops are not differentiable (no double backward)")


torch.library.register_autograd(f"{NS}::forward", _render_backward, setup_context=_render_setup)
torch.library.register_autograd(f"{NS}::optical_depth", _depth_backward, setup_context=_depth_setup)
# The backward ops: a clear error on double backward instead of silently missing second derivatives.
torch.library.register_autograd(f"{NS}::backward", _no_double_backward)
torch.library.register_autograd(f"{NS}::optical_depth_backward", _no_double_backward)
