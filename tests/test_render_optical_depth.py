"""`ray_optical_depth`: CPU kernel vs the materialised reference, gradients, analytic cases.

Grids and rays come from test_render.py (misses, rays starting inside and outside the box,
axis-parallel rays); the `ops` fixture (conftest.py) skips when the extension cannot build.
"""

from __future__ import annotations

import math

import pytest
import torch
from test_render import BOX, GRID, SHAPE, TINY_GRID, make_grids, make_rays, tiny_case

from renderocc.geometry.sampling import clip_rays
from renderocc.ops import ray_optical_depth, ray_visibility

STEP, NEAR = 0.07, 0.05


def optical_depth(backend: str, density, o, d, b, t_ends, **kw):
    kw = {"grid": GRID, "step": STEP, "near": NEAR, **kw}
    return ray_optical_depth(density, o, d, b, t_ends, backend=backend, **kw)


def make_ends(o, d, E: int, seed: int = 2) -> torch.Tensor:
    """(R, E) end distances spread from before t_in to beyond t_out (any order per ray)."""
    g = torch.Generator().manual_seed(seed)
    t_in, t_out, hit = clip_rays(o, d, BOX, NEAR)
    u = torch.rand(o.shape[0], E, generator=g, dtype=o.dtype) * 1.6 - 0.3
    span = torch.where(hit, t_out - t_in, torch.ones_like(t_in))
    start = torch.where(hit, t_in, torch.zeros_like(t_in))
    return start[:, None] + u * span[:, None]


def test_end_set_covers_the_hard_cases():
    o, d, _ = make_rays()
    t_ends = make_ends(o, d, 3)
    t_in, t_out, hit = clip_rays(o, d, BOX, NEAR)
    assert (hit[:, None] & (t_ends < t_in[:, None])).sum() >= 20
    assert (hit[:, None] & (t_ends > t_out[:, None])).sum() >= 20
    assert (hit[:, None] & (t_ends > t_in[:, None]) & (t_ends < t_out[:, None])).sum() >= 100
    assert (~hit).sum() >= 4


@pytest.mark.parametrize("kind", ["random", "sparse", "saturating"])
@pytest.mark.parametrize("E", [1, 3])
def test_forward_matches_reference(ops, kind, E):
    density, _ = make_grids(kind)
    o, d, b = make_rays()
    t_ends = make_ends(o, d, E)
    tau, count = optical_depth("cpu", density, o, d, b, t_ends)
    ref_tau, ref_count = optical_depth("reference", density, o, d, b, t_ends)
    assert tau.shape == count.shape == (o.shape[0], E) and count.dtype == density.dtype
    scale = max(1.0, ref_tau.abs().max().item())
    torch.testing.assert_close(tau, ref_tau, atol=1e-5 * scale, rtol=0)
    torch.testing.assert_close(count, ref_count, atol=0, rtol=0)
    t_in, _, hit = clip_rays(o, d, BOX, NEAR)
    assert tau[~hit].abs().max() == 0 and count[~hit].abs().max() == 0
    before = t_ends <= t_in[:, None] + STEP / 2  # not even the first sample is before the end
    assert tau[before].abs().max() == 0 and count[before].abs().max() == 0
    assert count.max() > 10


@pytest.mark.parametrize("kind", ["random", "sparse", "saturating"])
def test_gradients_match_reference(ops, kind):
    density, _ = make_grids(kind)
    o, d, b = make_rays()
    t_ends = make_ends(o, d, 3)
    g_tau = torch.randn(t_ends.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    grads = {}
    for backend in ("cpu", "reference"):
        dens = density.clone().requires_grad_()
        tau, count = optical_depth(backend, dens, o, d, b, t_ends)
        assert not count.requires_grad
        (grads[backend],) = torch.autograd.grad((tau * g_tau).sum(), [dens])
    scale = max(1.0, grads["reference"].abs().max().item())
    torch.testing.assert_close(grads["cpu"], grads["reference"], atol=1e-9 * scale, rtol=1e-7)
    assert grads["cpu"].abs().max() > 0


def test_float32_matches_reference(ops):
    density, _ = make_grids("random", dtype=torch.float32)
    o, d, b = make_rays(dtype=torch.float32)
    t_ends = make_ends(o, d, 2)
    outs, grads = {}, {}
    for backend in ("cpu", "reference"):
        dens = density.clone().requires_grad_()
        outs[backend] = optical_depth(backend, dens, o, d, b, t_ends)
        (grads[backend],) = torch.autograd.grad(outs[backend][0].sum(), [dens])
    torch.testing.assert_close(outs["cpu"][0], outs["reference"][0], atol=1e-4, rtol=1e-4)
    # float32 rounding of t_k vs an end can differ by one sample between the two: allow a few.
    assert (outs["cpu"][1] != outs["reference"][1]).sum() <= 2
    torch.testing.assert_close(grads["cpu"], grads["reference"], atol=1e-3, rtol=1e-3)


def test_gradcheck(ops):
    density, o, d, b, _ = tiny_case()
    t_ends = torch.tensor([[1.2, 3.0], [2.5, 0.4], [0.5, 9.0], [1.9, 2.2]], dtype=torch.float64)

    def fn(dens):
        return ray_optical_depth(dens, o, d, b, t_ends, grid=TINY_GRID, step=0.15,
                                 backend="cpu")[0]

    assert torch.autograd.gradcheck(fn, (density,), eps=1e-6, atol=1e-6)


def test_constant_density_along_x(ops):
    """Constant c, a ray along +x entering at t = 1: tau = c·step·count, count by hand."""
    c, step = 0.8, 0.1
    density = torch.full((1, *SHAPE), c, dtype=torch.float64)
    o = torch.tensor([[BOX[0] - 1.0, 0.05, 0.1]], dtype=torch.float64)
    d = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    K = math.floor((BOX[3] - BOX[0]) / step)  # 20 samples at t = 1.05, 1.15, ...
    # Before the box, between samples 6 and 7, beyond the box: 0, 7 and all K samples.
    t_ends = torch.tensor([[0.5, 1.73, 9.0]], dtype=torch.float64)
    tau, count = ray_optical_depth(density, o, d, torch.zeros(1, dtype=torch.long), t_ends, grid=GRID,
                                   step=step, backend="cpu")
    torch.testing.assert_close(count, torch.tensor([[0.0, 7.0, K]], dtype=torch.float64), atol=0, rtol=0)
    torch.testing.assert_close(tau, c * step * count)


def test_no_early_termination(ops):
    """Unlike compositing, the integral goes on behind an opaque wall: voxels there get gradient."""
    density = torch.zeros(1, *SHAPE, dtype=torch.float64)
    density[0, 1] = 1e3  # a wall across x index 1
    density[0, 4] = 1.0
    density.requires_grad_()
    o = torch.tensor([[BOX[0] - 0.5, 0.05, 0.1]], dtype=torch.float64)
    d = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    b = torch.zeros(1, dtype=torch.long)
    kw = {"grid": GRID, "step": 0.05}
    tau, _ = ray_optical_depth(density, o, d, b, torch.tensor([[9.0]], dtype=torch.float64), backend="cpu", **kw)
    (gd,) = torch.autograd.grad(tau.sum(), [density])
    assert gd[0, 3:].abs().max() > 0
    assert ray_visibility(density.detach(), o, d, b, backend="cpu", **kw)[0, 3:].max() == 0  # compositing stops


def test_backward_is_deterministic_and_batch_local(ops):
    density, _ = make_grids("random")
    o, d, b = make_rays(n_random=2000)
    b = torch.ones_like(b)  # every ray on batch 1
    t_ends = make_ends(o, d, 2)
    grads = []
    for _ in range(2):
        dens = density.clone().requires_grad_()
        tau, _ = optical_depth("cpu", dens, o, d, b, t_ends)
        grads.append(torch.autograd.grad(tau.sum(), [dens])[0])
    assert torch.equal(grads[0], grads[1])
    assert grads[0][0].abs().max() == 0 and grads[0][1].abs().max() > 0


def test_empty_ray_set(ops):
    density, _ = make_grids("random")
    e = torch.zeros(0, 3, dtype=torch.float64)
    tau, count = optical_depth("cpu", density, e, e, torch.zeros(0, dtype=torch.long),
                               torch.zeros(0, 2, dtype=torch.float64))
    assert tau.shape == count.shape == (0, 2)


@pytest.mark.parametrize("shape", [(5,), (5, 0), (4, 1)])
def test_bad_ends_raise(shape):
    density, _ = make_grids("random")
    o, d, b = make_rays()
    o, d, b = o[:5], d[:5], b[:5]
    with pytest.raises(ValueError, match="t_ends"):
        optical_depth("reference", density, o, d, b, torch.ones(shape, dtype=torch.float64))
