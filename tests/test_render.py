"""The renderer: CPU kernel vs the pure-PyTorch reference, analytic cases, options, fallback.

The extension is built once per test run by the `ops` fixture (conftest.py; cached on disk across
runs by the loader). The grid and ray helpers here are shared with test_render_optical_depth.py.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from renderocc import ops as facade
from renderocc.cuda import loader
from renderocc.geometry import Grid
from renderocc.geometry.sampling import clip_rays
from renderocc.ops import ExtensionUnavailable, RenderOutput, ray_visibility, render_rays

BOX = (-1.2, -1.0, -0.6, 0.8, 1.0, 0.9)
VOXEL = (0.4, 0.5, 0.3)  # -> grid (5, 4, 5), anisotropic on purpose
SHAPE = (5, 4, 5)
GRID = Grid(BOX, VOXEL, SHAPE)
C = 4


def make_grids(kind: str, B: int = 2, dtype=torch.float64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    density = torch.rand(B, *SHAPE, generator=g, dtype=dtype) * 4
    if kind == "zero":
        density.zero_()
    elif kind == "saturating":
        density = density * 1e4
    elif kind == "sparse":
        density = density * (torch.rand(B, *SHAPE, generator=g, dtype=dtype) > 0.7)
    semantics = torch.randn(B, *SHAPE, C, generator=g, dtype=dtype)
    return density, semantics


def make_rays(B: int = 2, n_random: int = 200, dtype=torch.float64, seed: int = 1):
    """Random rays plus the hard cases: missing the box, starting inside, axis-parallel."""
    g = torch.Generator().manual_seed(seed)
    lo, hi = torch.tensor(BOX[:3], dtype=dtype), torch.tensor(BOX[3:], dtype=dtype)
    centre, size = (lo + hi) / 2, hi - lo
    origins = [centre + (torch.rand(n_random, 3, generator=g, dtype=dtype) - 0.5) * size * 3]
    targets = centre + (torch.rand(n_random, 3, generator=g, dtype=dtype) - 0.5) * size
    aimed = torch.rand(n_random, 1, generator=g, dtype=dtype) < 0.8  # most aim into the box
    dirs = [torch.where(aimed, targets - origins[0], torch.randn(n_random, 3, generator=g, dtype=dtype))]
    inside = centre + (torch.rand(30, 3, generator=g, dtype=dtype) - 0.5) * size * 0.9
    origins.append(inside)
    dirs.append(torch.randn(30, 3, generator=g, dtype=dtype))
    # Pointing away from the box: miss.
    far = centre + torch.tensor([[5.0, 0, 0], [0, -5.0, 0], [3.0, 3.0, 3.0]], dtype=dtype)
    origins.append(far)
    dirs.append(far - centre)
    # Axis-parallel, from outside and from inside, both signs, and one in a slab but outside it.
    axis_dirs = torch.cat([torch.eye(3, dtype=dtype), -torch.eye(3, dtype=dtype)])
    offset = torch.tensor([0.13, -0.21, 0.07], dtype=dtype)
    origins.append(centre + offset - axis_dirs * size * 2)
    dirs.append(axis_dirs)
    origins.append((centre + offset).expand(6, 3))
    dirs.append(axis_dirs)
    origins.append((centre + torch.tensor([0.0, 0.0, 5.0], dtype=dtype))[None])
    dirs.append(torch.tensor([[1.0, 0.0, 0.0]], dtype=dtype))
    o, d = torch.cat(origins), torch.cat(dirs)
    d = d / d.norm(dim=1, keepdim=True)
    batch = torch.randint(0, B, (o.shape[0],), generator=g)
    return o, d, batch


def render(backend: str, density, semantics, o, d, b, **kw) -> RenderOutput:
    kw.setdefault("step", 0.07)
    return render_rays(density, semantics, o, d, b, grid=GRID, backend=backend, **kw)


def test_ray_set_covers_the_hard_cases():
    o, d, _ = make_rays()
    t_in, t_out, hit = clip_rays(o, d, BOX, 0.0)
    assert (~hit).sum() >= 4 and hit.sum() > 100
    lo, hi = torch.tensor(BOX[:3], dtype=o.dtype), torch.tensor(BOX[3:], dtype=o.dtype)
    assert (((o >= lo) & (o <= hi)).all(1) & hit).sum() >= 30
    assert ((d == 0).sum(1) == 2).sum() >= 12


@pytest.mark.parametrize("kind", ["random", "sparse", "zero", "saturating"])
@pytest.mark.parametrize("mode", ["logits", "probs"])
def test_forward_matches_reference(ops, kind, mode):
    density, semantics = make_grids(kind)
    o, d, b = make_rays()
    kw = {"semantic_mode": mode, "return_distortion": True, "near": 0.05}
    ours = render("cpu", density, semantics, o, d, b, **kw)
    ref = render("reference", density, semantics, o, d, b, **kw)
    for name in ("depth", "semantics", "opacity", "distortion"):
        torch.testing.assert_close(getattr(ours, name), getattr(ref, name), atol=1e-5, rtol=0, msg=name)
    if kind == "zero":
        assert ours.opacity.abs().max() == 0
    if kind == "saturating":
        hit = clip_rays(o, d, BOX, 0.05)[2]
        assert (ours.opacity[hit] > 1 - 1e-4).float().mean() > 0.9


def _random_loss(out: RenderOutput, seed: int = 3) -> torch.Tensor:
    """A fixed random linear combination of every output, so every upstream gradient is nonzero."""
    g = torch.Generator().manual_seed(seed)
    loss = (out.depth * torch.randn(out.depth.shape, generator=g, dtype=out.depth.dtype)).sum()
    loss = loss + (out.semantics * torch.randn(out.semantics.shape, generator=g, dtype=out.depth.dtype)).sum()
    loss = loss + (out.opacity * torch.randn(out.opacity.shape, generator=g, dtype=out.depth.dtype)).sum()
    if out.distortion is not None:
        loss = loss + 0.5 * out.distortion.sum()
    return loss


def _loss_and_grads(out: RenderOutput, density, semantics, seed: int = 3):
    return torch.autograd.grad(_random_loss(out, seed), [density, semantics])


@pytest.mark.parametrize("kind", ["random", "sparse", "saturating"])
@pytest.mark.parametrize("mode", ["logits", "probs"])
def test_gradients_match_reference(ops, kind, mode):
    density, semantics = make_grids(kind)
    o, d, b = make_rays()
    grads = {}
    for backend in ("cpu", "reference"):
        dens, sem = density.clone().requires_grad_(), semantics.clone().requires_grad_()
        out = render(backend, dens, sem, o, d, b, semantic_mode=mode, return_distortion=True,
                     background_depth=True)
        grads[backend] = _loss_and_grads(out, dens, sem)
    for ours, ref in zip(grads["cpu"], grads["reference"], strict=True):
        scale = max(1.0, ref.abs().max().item())
        torch.testing.assert_close(ours, ref, atol=1e-7 * scale, rtol=1e-6)


def test_float32_matches_reference(ops):
    density, semantics = make_grids("random", dtype=torch.float32)
    o, d, b = make_rays(dtype=torch.float32)
    outs, grads = {}, {}
    for backend in ("cpu", "reference"):
        dens, sem = density.clone().requires_grad_(), semantics.clone().requires_grad_()
        outs[backend] = render(backend, dens, sem, o, d, b, return_distortion=True)
        grads[backend] = _loss_and_grads(outs[backend], dens, sem)
    for name in ("depth", "semantics", "opacity", "distortion"):
        torch.testing.assert_close(getattr(outs["cpu"], name), getattr(outs["reference"], name),
                                   atol=2e-4, rtol=1e-4)
    for ours, ref in zip(grads["cpu"], grads["reference"], strict=True):
        torch.testing.assert_close(ours, ref, atol=1e-3, rtol=1e-3)


TINY_BOX, TINY_VOXEL, TINY_SHAPE = (-1.0, -1.0, -0.5, 1.0, 1.0, 1.0), (2 / 3, 1.0, 0.5), (2, 3, 2, 3)
TINY_GRID = Grid(TINY_BOX, TINY_VOXEL, TINY_SHAPE[1:])


def tiny_case(seed: int = 5):
    """For gradcheck: a (2, 3, 2, 3) density grid in TINY_BOX and four rays (one starting inside)."""
    g = torch.Generator().manual_seed(seed)
    density = (torch.rand(*TINY_SHAPE, generator=g, dtype=torch.float64) * 2 + 0.1).requires_grad_()
    o = torch.tensor([[-1.5, 0.1, 0.2], [0.3, -1.7, 0.5], [0.1, 0.2, 0.3], [0.5, 0.4, 2.0]],
                     dtype=torch.float64)
    d = torch.tensor([[1.0, 0.2, 0.1], [0.1, 1.0, 0.3], [0.3, -0.5, 0.2], [0.0, 0.0, -1.0]],
                     dtype=torch.float64)
    d = d / d.norm(dim=1, keepdim=True)
    return density, o, d, torch.tensor([0, 1, 0, 1]), g


@pytest.mark.parametrize("mode", ["logits", "probs"])
def test_gradcheck(ops, mode):
    density, o, d, b, g = tiny_case()
    semantics = torch.randn(*TINY_SHAPE, 3, generator=g, dtype=torch.float64, requires_grad=True)

    def fn(dens, sem):
        out = render_rays(dens, sem, o, d, b, grid=TINY_GRID, step=0.15,
                          backend="cpu", semantic_mode=mode, return_distortion=True, background_depth=True)
        return out.depth, out.semantics, out.opacity, out.distortion

    assert torch.autograd.gradcheck(fn, (density, semantics), eps=1e-6, atol=1e-6)


def test_analytic_constant_density_along_x(ops):
    """Constant density, a ray along +x: closed-form weights, depth, distortion and t_far."""
    sigma, step, near = 0.8, 0.1, 0.0
    density = torch.full((1, *SHAPE), sigma, dtype=torch.float64)
    x_centres = BOX[0] + (torch.arange(SHAPE[0], dtype=torch.float64) + 0.5) * VOXEL[0]
    semantics = x_centres[None, :, None, None, None].expand(1, *SHAPE, 1).contiguous()
    o = torch.tensor([[BOX[0] - 1.0, 0.05, 0.1]], dtype=torch.float64)
    d = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    b = torch.zeros(1, dtype=torch.long)
    out = render_rays(density, semantics, o, d, b, grid=GRID, step=step, near=near,
                      backend="cpu", return_distortion=True, background_depth=True)
    length = BOX[3] - BOX[0]
    K = math.floor(length / step)
    t = 1.0 + (torch.arange(K, dtype=torch.float64) + 0.5) * step
    a = 1 - math.exp(-sigma * step)
    w = (1 - a) ** torch.arange(K, dtype=torch.float64) * a
    t_far = 1.0 + length
    opacity = w.sum()
    x = (o[0, 0] + t).clamp(x_centres[0], x_centres[-1])  # trilinear of a linear field, clamped
    pair = (w[:, None] * w[None, :] * (t[:, None] - t[None, :]).abs()).sum()
    torch.testing.assert_close(out.opacity, opacity[None])
    torch.testing.assert_close(out.depth, ((w * t).sum() + (1 - opacity) * t_far)[None])
    torch.testing.assert_close(out.semantics[:, 0], (w * x).sum()[None])
    torch.testing.assert_close(out.distortion, (pair + step / 3 * (w * w).sum())[None])


def test_zero_density_background_depth_is_exit_distance(ops):
    density, semantics = make_grids("zero")
    o, d, b = make_rays()
    out = render("cpu", density, semantics, o, d, b, background_depth=True)
    _, t_out, hit = clip_rays(o, d, BOX, 0.0)
    torch.testing.assert_close(out.depth, torch.where(hit, t_out, torch.zeros_like(t_out)))


def test_missing_rays_give_zeros_and_no_gradient(ops):
    density, semantics = make_grids("random")
    density.requires_grad_()
    semantics.requires_grad_()
    o = torch.tensor([[5.0, 0.0, 0.0], [0.0, 0.0, 5.0]], dtype=torch.float64)
    d = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]], dtype=torch.float64)
    out = render("cpu", density, semantics, o, d, torch.zeros(2, dtype=torch.long),
                 return_distortion=True, background_depth=True)
    for value in (out.depth, out.semantics, out.opacity, out.distortion):
        assert value.abs().max() == 0
    gd, gs = torch.autograd.grad(out.depth.sum() + out.semantics.sum() + out.opacity.sum(),
                                 [density, semantics])
    assert gd.abs().max() == 0 and gs.abs().max() == 0


def test_early_termination_is_mirrored(ops):
    """Past T < 1e-4 nothing contributes: voxels behind a wall get no gradient."""
    density = torch.zeros(1, *SHAPE, dtype=torch.float64)
    density[0, 1] = 1e3  # a wall across x index 1
    semantics = torch.randn(1, *SHAPE, C, dtype=torch.float64)
    density.requires_grad_()
    semantics.requires_grad_()
    o = torch.tensor([[BOX[0] - 0.5, 0.05, 0.1]], dtype=torch.float64)
    d = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    out = render("cpu", density, semantics, o, d, torch.zeros(1, dtype=torch.long), step=0.05)
    gd, gs = torch.autograd.grad(out.depth.sum() + out.semantics.sum(), [density, semantics])
    assert out.opacity.item() > 1 - 1e-4
    assert gs[0, 3:].abs().max() == 0 and gd[0, 3:].abs().max() == 0
    assert gs[0, :2].abs().max() > 0


def test_backward_is_deterministic_and_batch_local(ops):
    density, semantics = make_grids("random")
    o, d, b = make_rays(n_random=2000)
    b = torch.ones_like(b)  # every ray on batch 1
    grads = []
    for _ in range(2):
        dens, sem = density.clone().requires_grad_(), semantics.clone().requires_grad_()
        grads.append(_loss_and_grads(render("cpu", dens, sem, o, d, b), dens, sem))
    assert all(torch.equal(x, y) for x, y in zip(*grads, strict=True))
    assert grads[0][0][0].abs().max() == 0 and grads[0][1][0].abs().max() == 0


@pytest.mark.parametrize("mode", ["logits", "probs"])
def test_thread_count_does_not_change_results(ops, mode):
    """The CPU kernel really runs threaded (built with OpenMP: torch's at::parallel_for is inline
    OpenMP, without the flag it silently ran on one thread) and its forward and gradients are
    bit-identical for 1, 2 and 3 threads (the backward splits the grid, not the rays)."""
    if loader.OPENMP:
        assert b"GOMP_parallel" in loader._state["path"].read_bytes()
    density, semantics = make_grids("random", dtype=torch.float32)
    o, d, b = make_rays(n_random=3000, dtype=torch.float32)
    runs = []
    before = torch.get_num_threads()
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            dens, sem = density.clone().requires_grad_(), semantics.clone().requires_grad_()
            out = render("cpu", dens, sem, o, d, b, semantic_mode=mode, return_distortion=True)
            runs.append((out.depth, out.semantics, out.opacity, *_loss_and_grads(out, dens, sem)))
    finally:
        torch.set_num_threads(before)
    for other in runs[1:]:
        assert all(torch.equal(x, y) for x, y in zip(runs[0], other, strict=True))


class _BackwardSpy(TorchDispatchMode):
    """Records the `need_sem_grad` flag of every renderer backward op that runs under it."""

    def __init__(self):
        super().__init__()
        self.need_sem_grad = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.name() == "renderocc_render::backward":
            self.need_sem_grad.append(args[-1])  # (..., g_distortion, need_sem_grad)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("mode", ["logits", "probs"])
def test_only_density_needs_grad(ops, mode):
    """Skipping the semantic gradient must not change the density gradient (which depends on
    the semantic upstream gradient), and semantics must get none."""
    density, semantics = make_grids("random")
    o, d, b = make_rays()
    grads = []
    with _BackwardSpy() as spy:
        for sem_needs_grad in (True, False):
            dens, sem = density.clone().requires_grad_(), semantics.clone().requires_grad_(sem_needs_grad)
            out = render("cpu", dens, sem, o, d, b, semantic_mode=mode, return_distortion=True)
            _random_loss(out).backward()
            grads.append(dens.grad)
            assert (sem.grad is not None) == sem_needs_grad
    assert spy.need_sem_grad == [True, False]
    assert grads[1].abs().max() > 0
    torch.testing.assert_close(grads[1], grads[0], atol=0, rtol=0)


def test_empty_ray_set_and_unpacking(ops):
    density, semantics = make_grids("random")
    e = torch.zeros(0, 3, dtype=torch.float64)
    depth, sem, opacity = render("cpu", density, semantics, e, e, torch.zeros(0, dtype=torch.long))
    assert depth.shape == (0,) and sem.shape == (0, C) and opacity.shape == (0,)


@pytest.mark.parametrize(("bad", "error"), [
    ({"backend": "gpu"}, ValueError), ({"semantic_mode": "softmax"}, ValueError), ({"step": 0.0}, ValueError),
    ({"grid": Grid.tiling(BOX, 0.1)}, ValueError),  # a grid of another shape than the density
    ({"grid": {"pc_range": BOX, "voxel_size": VOXEL}}, TypeError),  # a plain dict is not a Grid
])
def test_bad_arguments_raise(bad, error):
    density, semantics = make_grids("random")
    o, d, b = make_rays()
    kw = {"grid": GRID, "step": 0.1, **bad}
    with pytest.raises(error):
        render_rays(density, semantics, o, d, b, **kw)


def test_batch_index_out_of_range_raises():
    density, semantics = make_grids("random")
    o, d, b = make_rays()
    with pytest.raises(ValueError, match="batch_index"):
        render_rays(density, semantics, o, d, b + 2, grid=GRID, step=0.1)


def test_without_the_extension_auto_warns_once_and_renders_what_the_kernel_does(ops, monkeypatch):
    density, semantics = make_grids("random")
    o, d, b = make_rays()
    kernel = render("cpu", density, semantics, o, d, b)
    monkeypatch.setattr(loader, "_state", {"error": "no compiler (simulated)"})
    monkeypatch.setattr(facade, "_warned", [])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = render("auto", density, semantics, o, d, b)
        second = render("auto", density, semantics, o, d, b)
    assert len([w for w in caught if "PyTorch reference" in str(w.message)]) == 1
    for got in (first, second):  # the twin computes the kernel's contract
        torch.testing.assert_close(got.depth, kernel.depth, atol=1e-9, rtol=1e-9)
        torch.testing.assert_close(got.semantics, kernel.semantics, atol=1e-9, rtol=1e-9)
    with pytest.raises(ExtensionUnavailable, match="simulated"):  # asking for the kernel by name gets it or fails
        render("cpu", density, semantics, o, d, b)


@pytest.mark.parametrize("kind", ["random", "sparse", "saturating"])
def test_visibility_matches_reference(ops, kind):
    density, _ = make_grids(kind)
    o, d, b = make_rays(n_random=400)
    kw = {"grid": GRID, "step": 0.07, "near": 0.05}
    ours = ray_visibility(density, o, d, b, backend="cpu", **kw)
    ref = ray_visibility(density, o, d, b, backend="reference", **kw)
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=0)
    assert ours.max() <= 1 and ours.min() >= 0 and ours.max() > 0.5


def test_visibility_stops_behind_a_wall(ops):
    density = torch.zeros(1, *SHAPE, dtype=torch.float64)
    density[0, 1] = 1e3
    o = torch.tensor([[BOX[0] - 0.5, 0.05, 0.1]], dtype=torch.float64)
    d = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    vis = ray_visibility(density, o, d, torch.zeros(1, dtype=torch.long), grid=GRID,
                         step=0.05, backend="cpu")
    assert vis[0, 0].max() > 0.5 and vis[0, 3:].max() == 0


def test_build_ext_command_prints_library(ops):
    CliRunner = pytest.importorskip("click.testing").CliRunner  # the renderer alone needs no click

    from renderocc.cuda.commands import build_ext

    result = CliRunner().invoke(build_ext, [])
    assert result.exit_code == 0, result.output
    assert str(loader.library_path()) in result.output
