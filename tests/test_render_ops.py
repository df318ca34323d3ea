"""The renderer as torch.library ops: raw ops differentiable, fake kernels, torch.compile = eager.

Runs on the CPU kernels here; on a GPU machine `RENDEROCC_TEST_DEVICE=cuda` runs the same checks
on the CUDA kernels and `RENDEROCC_COMPILE_BACKEND=inductor` compiles for real (scripts/gpu_check.sh).
The default compile backend is aot_eager: Dynamo (fullgraph, so any graph break fails) plus
AOTAutograd over the fake kernels, without Inductor's C++ codegen, which takes minutes on 2 cores.
"""

from __future__ import annotations

import os

import pytest
import torch
from test_render import BOX, GRID, VOXEL, make_grids, make_rays

from renderocc.ops import ray_optical_depth, render_rays

DEVICE = os.environ.get("RENDEROCC_TEST_DEVICE", "cpu")
COMPILE_BACKEND = os.environ.get("RENDEROCC_COMPILE_BACKEND", "aot_eager")
PARAMS = (list(BOX), list(VOXEL), 0.05, 0.07)  # box, voxel, near, step

pytestmark = pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(), reason="no CUDA device")


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _inputs(dtype=torch.float64, n_random=120):
    density, semantics = make_grids("random", dtype=dtype)
    o, d, b = make_rays(n_random=n_random, dtype=dtype)
    return [t.to(DEVICE) for t in (density, semantics, o, d, b)]


def _render(density, semantics, o, d, b, **kw):
    out = render_rays(density, semantics, o, d, b, grid=GRID, step=0.07, near=0.05,
                      backend=DEVICE, return_distortion=True, background_depth=True, **kw)
    return out.depth, out.semantics, out.opacity, out.distortion


def _weights(outputs, seed=5):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(t.shape, generator=g, dtype=t.dtype).to(t.device) for t in outputs]


def _weighted_sum(outputs):
    """A fixed random linear combination of the outputs: every upstream gradient is nonzero."""
    return sum((t * w).sum() for t, w in zip(outputs, _weights(outputs), strict=True))


def test_raw_forward_op_is_differentiable(ops):
    """The op itself carries autograd: gradients through torch.ops equal the public wrapper's."""
    density, semantics, o, d, b = _inputs()
    raw = [t.clone().requires_grad_() for t in (density, semantics)]
    depth, sem, opacity, distortion, t_far = ops.forward(*raw, o, d, b, *PARAMS, False)
    assert depth.grad_fn is not None and not t_far.requires_grad
    raw_grads = torch.autograd.grad(_weighted_sum((depth, sem, opacity, distortion)), raw)
    ref = [t.clone().requires_grad_() for t in (density, semantics)]
    out = render_rays(*ref, o, d, b, grid=GRID, step=0.07, near=0.05, backend="reference",
                      return_distortion=True)
    outs = (out.depth, out.semantics, out.opacity, out.distortion)
    ref_grads = torch.autograd.grad(_weighted_sum(outs), ref)
    assert raw_grads[0].abs().max() > 0 and raw_grads[1].abs().max() > 0
    for ours, theirs in zip(raw_grads, ref_grads, strict=True):
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def test_opcheck_every_renderer_op(ops):
    """torch.library.opcheck: schema, fake kernel vs real outputs, autograd registration; AOT dispatch
    (a compile per call) for the two differentiable ops. (gradcheck through these ops: test_render*.py.)"""
    density, semantics, o, d, b = _inputs(n_random=20)
    t_ends = torch.rand(o.shape[0], 2, generator=torch.Generator().manual_seed(2), dtype=o.dtype).to(DEVICE) * 3
    grad_args = (density.clone().requires_grad_(), semantics.clone().requires_grad_())
    outs = [t.detach() for t in ops.forward(density, semantics, o, d, b, *PARAMS, False)[:4]]
    aot = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")
    cases = [
        (ops.forward.default, (*grad_args, o, d, b, *PARAMS, False)),
        (ops.backward.default, (density, semantics, o, d, b, *PARAMS, False, *outs, *_weights(outs), True)),
        (ops.backward.default, (density, semantics, o, d, b, *PARAMS, False, *outs, *_weights(outs), False)),
        (ops.visibility.default, (density, o, d, b, *PARAMS)),
        (ops.optical_depth.default, (grad_args[0], o, d, b, t_ends, *PARAMS)),
        (ops.optical_depth_backward.default, (density, o, d, b, t_ends, *PARAMS, torch.randn_like(t_ends))),
    ]
    for op, args in cases:
        differentiable = op in (ops.forward.default, ops.optical_depth.default)
        torch.library.opcheck(op, args, test_utils=aot if differentiable else aot[:3])


def test_fake_kernels_trace_shapes(ops):
    """Under FakeTensorMode the ops give the real kernels' shapes and dtypes without running them."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    density, semantics, o, d, b = _inputs(dtype=torch.float32, n_random=30)
    real = ops.forward(density, semantics, o, d, b, *PARAMS, False)
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        fake = ops.forward(*(mode.from_tensor(t) for t in (density, semantics, o, d, b)), *PARAMS, False)
    assert [(t.shape, t.dtype) for t in fake] == [(t.shape, t.dtype) for t in real]


@pytest.mark.parametrize("mode", ["logits", "probs"])
def test_compiled_render_rays_equals_eager(ops, mode):
    """torch.compile(render_rays) in one graph (fullgraph: no break anywhere), forward and backward."""
    density, semantics, o, d, b = _inputs(dtype=torch.float32)
    results = []
    for fn in (_render, torch.compile(_render, backend=COMPILE_BACKEND, fullgraph=True)):
        leaves = [t.clone().requires_grad_() for t in (density, semantics)]
        outs = fn(*leaves, o, d, b, semantic_mode=mode)
        grads = torch.autograd.grad(_weighted_sum(outs), leaves)
        results.append([t.detach() for t in (*outs, *grads)])
    assert results[0][-1].abs().max() > 0
    for compiled, eager in zip(results[1], results[0], strict=True):
        torch.testing.assert_close(compiled, eager, atol=1e-5, rtol=1e-5)


def test_compiled_optical_depth_equals_eager(ops):
    density, _, o, d, b = _inputs(dtype=torch.float32)
    t_ends = torch.rand(o.shape[0], 3, generator=torch.Generator().manual_seed(2)).to(DEVICE) * 3

    def tau_loss(dens):
        tau, count = ray_optical_depth(dens, o, d, b, t_ends, grid=GRID, step=0.07,
                                       backend=DEVICE)
        return tau, count, (tau.square() * count).sum()

    results = []
    for fn in (tau_loss, torch.compile(tau_loss, backend=COMPILE_BACKEND, fullgraph=True)):
        leaf = density.clone().requires_grad_()
        tau, count, loss = fn(leaf)
        (grad,) = torch.autograd.grad(loss, [leaf])
        results.append([tau.detach(), count, grad])
    assert results[0][2].abs().max() > 0
    for compiled, eager in zip(results[1], results[0], strict=True):
        torch.testing.assert_close(compiled, eager, atol=1e-5, rtol=1e-5)


def test_double_backward_is_a_clear_error(ops):
    """The old autograd.Function was once_differentiable; the op keeps that promise explicitly."""
    density, semantics, o, d, b = _inputs(n_random=10)
    leaves = [t.clone().requires_grad_() for t in (density, semantics)]
    out = ops.forward(*leaves, o, d, b, *PARAMS, False)
    (grad_density, _) = torch.autograd.grad(out[0].sum() + out[1].sum(), leaves, create_graph=True)
    with pytest.raises(RuntimeError, match="no double backward"):
        grad_density.sum().backward()
