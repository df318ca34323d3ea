"""CUDA side of the renderer: compile-only check with nvcc here, numerics where a GPU exists.

On a GPU (scripts/gpu_check.sh runs this file there) each check compares the CUDA kernels (the
lanes kernel, the default, and the per-ray one of RENDEROCC_CUDA_KERNEL=per-ray) with the CPU
kernel and the float64 reference: the hard ray set of test_render.py (rays that miss the box,
start inside it, run axis-parallel) and the slot rays of test_render_slots.py (slot flushes along
every axis, jumps, rays ending in their first cell) for 1, 13, 17 and 64 classes (every compiled
variant), ray counts that leave warps and blocks part-filled, float32 (4-float atomics on sm_90):
forward within 1e-5 (1e-9 on the slot rays), gradients equal up to summation order, gradcheck,
early termination mirrored, `ray_visibility`, the > 64-class refusal in both modes. Without a GPU
the same programs run on the host in test_render_slots.py.
"""

from __future__ import annotations

import pytest
import test_render_slots as slots
import torch
from test_render import (
    BOX,
    GRID,
    SHAPE,
    TINY_GRID,
    TINY_SHAPE,
    VOXEL,
    make_grids,
    make_rays,
    tiny_case,
)

from renderocc.cuda import loader
from renderocc.geometry import Grid
from renderocc.geometry.sampling import clip_rays
from renderocc.ops import ray_optical_depth, ray_visibility, render_rays

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: CUDA kernel not run here")
OUTPUTS = ("depth", "semantics", "opacity", "distortion")
KERNELS = ("lanes", "per-ray")


@pytest.fixture(params=KERNELS)
def kernel(request, monkeypatch):
    """Each CUDA render kernel in turn (the bindings read RENDEROCC_CUDA_KERNEL at every launch)."""
    monkeypatch.setenv("RENDEROCC_CUDA_KERNEL", request.param)
    return request.param


@pytest.mark.slow
def test_cuda_sources_compile(tmp_path):
    """nvcc compiles the .cu and the bindings' CUDA glue links against it (one run, ~10-30 s)."""
    try:
        result = loader.compile_check_cuda(tmp_path)
    except loader.ExtensionUnavailable as exc:
        pytest.skip(f"CUDA compile check skipped: {exc}")
    report = "\n".join(f"$ {cmd}\n[exit {code}] {out}" for cmd, code, out in result["steps"])
    assert result["ok"], report


@needs_cuda
@pytest.mark.parametrize("mode", ["logits", "probs"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_matches_cpu(ops, kernel, mode, dtype):
    g = torch.Generator().manual_seed(0)
    grid = Grid.tiling((-4.0, -4.0, -1.0, 4.0, 4.0, 1.4), 0.4)
    density = torch.rand(2, 20, 20, 6, generator=g, dtype=dtype) * 2
    semantics = torch.randn(2, 20, 20, 6, 5, generator=g, dtype=dtype)
    o = torch.randn(500, 3, generator=g, dtype=dtype) * 3
    d = torch.randn(500, 3, generator=g, dtype=dtype)
    d = d / d.norm(dim=1, keepdim=True)
    b = torch.randint(0, 2, (500,), generator=g)
    results = []
    for device in ("cpu", "cuda"):
        dens = density.to(device).requires_grad_()
        sem = semantics.to(device).requires_grad_()
        out = render_rays(dens, sem, o.to(device), d.to(device), b.to(device), grid=grid,
                          step=0.1, backend=device, semantic_mode=mode,
                          return_distortion=True, background_depth=True)
        loss = out.depth.sum() + out.semantics.pow(2).sum() + out.opacity.sum() + out.distortion.sum()
        grads = torch.autograd.grad(loss, [dens, sem])
        results.append([t.detach().cpu() for t in (out.depth, out.semantics, out.opacity, out.distortion,
                                                   *grads)])
    tol = 1e-4 if dtype == torch.float32 else 1e-9
    for ours, ref in zip(results[1], results[0], strict=True):
        torch.testing.assert_close(ours, ref, atol=tol, rtol=tol)


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_optical_depth_matches_cpu(ops, dtype):
    g = torch.Generator().manual_seed(0)
    grid = Grid.tiling((-4.0, -4.0, -1.0, 4.0, 4.0, 1.4), 0.4)
    density = torch.rand(2, 20, 20, 6, generator=g, dtype=dtype) * 2
    o = torch.randn(500, 3, generator=g, dtype=dtype) * 3
    d = torch.randn(500, 3, generator=g, dtype=dtype)
    d = d / d.norm(dim=1, keepdim=True)
    b = torch.randint(0, 2, (500,), generator=g)
    t_ends = torch.rand(500, 3, generator=g, dtype=dtype) * 12
    g_tau = torch.randn(500, 3, generator=g, dtype=dtype)
    results = []
    for device in ("cpu", "cuda"):
        dens = density.to(device).requires_grad_()
        tau, count = ray_optical_depth(dens, o.to(device), d.to(device), b.to(device), t_ends.to(device),
                                       grid=grid, step=0.1, backend=device)
        (grad,) = torch.autograd.grad((tau * g_tau.to(device)).sum(), [dens])
        results.append([t.detach().cpu() for t in (tau, count, grad)])
    tol = 1e-4 if dtype == torch.float32 else 1e-9
    for ours, ref in zip(results[1], results[0], strict=True):
        torch.testing.assert_close(ours, ref, atol=tol, rtol=tol)


def _loss_and_grads(out, density, semantics, seed: int = 3):
    """Gradients of a fixed random linear combination of every output (weights on the output's device)."""
    g = torch.Generator().manual_seed(seed)
    terms = (out.depth, out.semantics, out.opacity)
    loss = sum((t * torch.randn(t.shape, generator=g, dtype=t.dtype).to(t.device)).sum() for t in terms)
    return torch.autograd.grad(loss + 0.5 * out.distortion.sum(), [density, semantics])


def _render(backend: str, density, semantics, o, d, b, **kw):
    device = "cuda" if backend == "cuda" else "cpu"
    kw.setdefault("step", 0.07)
    return render_rays(density.to(device), semantics.to(device), o.to(device), d.to(device), b.to(device),
                       grid=GRID, backend=backend, **kw)


@needs_cuda
@pytest.mark.parametrize("kind", ["random", "sparse", "saturating"])
@pytest.mark.parametrize("mode", ["logits", "probs"])
def test_cuda_float64_matches_cpu_kernel_and_reference(ops, kernel, kind, mode):
    """The hard ray set (misses, starts inside, axis-parallel), float64: forward within 1e-5 of the
    CPU kernel and of the reference; gradients equal to the CPU kernel's up to summation order."""
    density, semantics = make_grids(kind)
    o, d, b = make_rays()
    results = {}
    for backend in ("cuda", "cpu", "reference"):
        dens, sem = density.clone().requires_grad_(), semantics.clone().requires_grad_()
        out = _render(backend, dens, sem, o, d, b, semantic_mode=mode, return_distortion=True,
                      background_depth=True, near=0.05)
        grads = _loss_and_grads(out, dens, sem)
        results[backend] = [getattr(out, n).detach().cpu() for n in OUTPUTS] + [g.cpu() for g in grads]
    for other in ("cpu", "reference"):
        for name, ours, theirs in zip(OUTPUTS, results["cuda"], results[other], strict=False):
            torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0, msg=f"{name} vs {other}")
    for ours, theirs in zip(results["cuda"][4:], results["cpu"][4:], strict=True):
        scale = max(1.0, theirs.abs().max().item())
        torch.testing.assert_close(ours, theirs, atol=1e-9 * scale, rtol=1e-7)
    hit = clip_rays(o, d, BOX, 0.05)[2]
    assert (~hit).sum() >= 4 and results["cuda"][2][~hit].abs().max() == 0  # misses: nothing composited


@needs_cuda
@pytest.mark.parametrize("mode", ["logits", "probs"])
def test_cuda_gradcheck(ops, kernel, mode):
    density, o, d, b, g = tiny_case()
    semantics = torch.randn(*TINY_SHAPE, 3, generator=g, dtype=torch.float64)
    density, semantics = density.detach().cuda().requires_grad_(), semantics.cuda().requires_grad_()
    o, d, b = o.cuda(), d.cuda(), b.cuda()

    def fn(dens, sem):
        out = render_rays(dens, sem, o, d, b, grid=TINY_GRID, step=0.15,
                          backend="cuda", semantic_mode=mode, return_distortion=True, background_depth=True)
        return out.depth, out.semantics, out.opacity, out.distortion

    assert torch.autograd.gradcheck(fn, (density, semantics), eps=1e-6, atol=1e-6)


@needs_cuda
def test_cuda_early_termination_is_mirrored(ops, kernel):
    """Past T < 1e-4 nothing contributes on the GPU either: voxels behind a wall get no gradient."""
    density = torch.zeros(1, *SHAPE, dtype=torch.float64)
    density[0, 1] = 1e3
    semantics = torch.randn(1, *SHAPE, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    density, semantics = density.cuda().requires_grad_(), semantics.cuda().requires_grad_()
    o = torch.tensor([[BOX[0] - 0.5, 0.05, 0.1]], dtype=torch.float64, device="cuda")
    d = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64, device="cuda")
    out = render_rays(density, semantics, o, d, torch.zeros(1, dtype=torch.long, device="cuda"), grid=GRID,
                      step=0.05, backend="cuda")
    gd, gs = torch.autograd.grad(out.depth.sum() + out.semantics.sum(), [density, semantics])
    assert out.opacity.item() > 1 - 1e-4
    assert gs[0, 3:].abs().max() == 0 and gd[0, 3:].abs().max() == 0
    assert gs[0, :2].abs().max() > 0


@needs_cuda
@pytest.mark.parametrize("kind", ["random", "saturating"])
def test_cuda_visibility_matches_cpu_and_reference(ops, kind):
    density, _ = make_grids(kind)
    o, d, b = make_rays(n_random=400)
    kw = {"grid": GRID, "step": 0.07, "near": 0.05}
    ours = ray_visibility(density.cuda(), o.cuda(), d.cuda(), b.cuda(), backend="cuda", **kw).cpu()
    for backend in ("cpu", "reference"):
        torch.testing.assert_close(ours, ray_visibility(density, o, d, b, backend=backend, **kw), atol=1e-6, rtol=0)
    assert ours.max() > 0.5


@needs_cuda
@pytest.mark.parametrize("mode", ["logits", "probs"])
def test_cuda_over_64_classes_is_refused_in_both_modes(ops, kernel, mode):
    """The CUDA kernels hold at most 64 classes per row: 65 is one clear error before any launch, in
    either semantic mode, forward and backward; the CPU kernel renders them."""
    density, _ = make_grids("random")
    semantics = torch.randn(*density.shape, 65, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    o, d, b = make_rays(n_random=50)
    with pytest.raises(RuntimeError, match="at most 64 classes; the semantics have 65") as err:
        _render("cuda", density, semantics, o, d, b, semantic_mode=mode)
    assert "\n" not in str(err.value).strip()
    params = (list(BOX), list(VOXEL), 0.0, 0.07, mode == "probs")
    dev = [t.cuda() for t in (density, semantics, o, d, b)]
    per_ray = [torch.zeros(o.shape[0], dtype=torch.float64, device="cuda")] * 3
    sem = torch.zeros(o.shape[0], 65, dtype=torch.float64, device="cuda")
    with pytest.raises(RuntimeError, match="at most 64 classes"):
        ops.backward(*dev, *params, per_ray[0], sem, *per_ray[1:], per_ray[0], sem, *per_ray[1:], True)
    assert _render("cpu", density, semantics, o, d, b, semantic_mode=mode).semantics.shape == (o.shape[0], 65)


@needs_cuda
def test_cuda_kernel_choice_is_checked(ops, monkeypatch):
    density, semantics = make_grids("random")
    o, d, b = make_rays(n_random=10)
    monkeypatch.setenv("RENDEROCC_CUDA_KERNEL", "fastest")
    with pytest.raises(RuntimeError, match="RENDEROCC_CUDA_KERNEL must be 'lanes' or 'per-ray', got 'fastest'"):
        _render("cuda", density, semantics, o, d, b)


def _slot_case(classes: int, kind: str, dtype=torch.float64):
    density, semantics = slots.make_grids(classes, kind, dtype=dtype, seed=classes)
    o, d, b = slots.slot_rays(seed=1, dtype=dtype)
    return density, semantics, o, d, b


def _grads_on(device: str, density, semantics, o, d, b, step: float, mode: str):
    """Outputs and gradients (fixed random upstream) of render_rays on one device, on the CPU."""
    dens = density.to(device).requires_grad_()
    sem = semantics.to(device).requires_grad_()
    out = render_rays(dens, sem, o.to(device), d.to(device), b.to(device), grid=slots.GRID, step=step,
                      near=slots.NEAR, backend=device, semantic_mode=mode, return_distortion=True,
                      background_depth=True)
    grads = _loss_and_grads(out, dens, sem)
    return [getattr(out, n).detach().cpu() for n in OUTPUTS], [g.cpu() for g in grads]


@needs_cuda
@pytest.mark.parametrize("classes", [1, 13, 17, 64])
@pytest.mark.parametrize("mode", ["logits", "probs"])
@pytest.mark.parametrize(("kind", "step"), [("sparse", 0.05), ("random", 0.45), ("saturating", 0.05)])
def test_cuda_matches_cpu_on_slot_rays(ops, kernel, classes, mode, kind, step):
    """float64, every compiled variant (17 and 13 fixed, generic 4 and 8 channels per lane): slot
    flushes along every axis, jumps of several cells, rays ending or stopping in their first cell."""
    case = _slot_case(classes, kind)
    cuda_out, cuda_grads = _grads_on("cuda", *case, step, mode)
    cpu_out, cpu_grads = _grads_on("cpu", *case, step, mode)
    for name, ours, theirs in zip(OUTPUTS, cuda_out, cpu_out, strict=True):
        torch.testing.assert_close(ours, theirs, atol=1e-9, rtol=1e-9, msg=name)
    for ours, theirs in zip(cuda_grads, cpu_grads, strict=True):
        scale = max(1.0, theirs.abs().max().item())
        torch.testing.assert_close(ours, theirs, atol=1e-9 * scale, rtol=1e-7)
    assert cpu_grads[0].abs().max() > 0


@needs_cuda
@pytest.mark.parametrize("rays", [1, 3, 4, 5, 17, 33])
def test_cuda_part_filled_warps_and_blocks(ops, kernel, rays):
    """4 rays per warp, 16 per block: ray counts that leave the last warp or block part-filled."""
    density, semantics, o, d, b = _slot_case(17, "sparse")
    pick = torch.randperm(o.shape[0], generator=torch.Generator().manual_seed(rays))[:rays]
    case = (density, semantics, o[pick], d[pick], b[pick])
    cuda_out, cuda_grads = _grads_on("cuda", *case, 0.05, "logits")
    cpu_out, cpu_grads = _grads_on("cpu", *case, 0.05, "logits")
    for ours, theirs in zip(cuda_out + cuda_grads, cpu_out + cpu_grads, strict=True):
        torch.testing.assert_close(ours, theirs, atol=1e-9, rtol=1e-9)


@needs_cuda
@pytest.mark.parametrize("classes", [5, 13, 17])
@pytest.mark.parametrize("mode", ["logits", "probs"])
def test_cuda_float32_matches_cpu_on_slot_rays(ops, kernel, classes, mode):
    """float32: the row scatter's 4-float atomics (rows at every alignment) sum what the CPU kernel sums."""
    case = _slot_case(classes, "sparse", dtype=torch.float32)
    cuda_out, cuda_grads = _grads_on("cuda", *case, 0.05, mode)
    cpu_out, cpu_grads = _grads_on("cpu", *case, 0.05, mode)
    for ours, theirs in zip(cuda_out + cuda_grads, cpu_out + cpu_grads, strict=True):
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


@needs_cuda
@pytest.mark.parametrize("mode", ["logits", "probs"])
def test_cuda_lanes_match_the_emulated_lanes(ops, mode):
    """The GPU runs the program the host emulator runs (test_render_slots.py): same results."""
    density, semantics, o, d, b = _slot_case(17, "random")
    params = (list(slots.BOX), list(slots.VOXEL), slots.NEAR, 0.05, mode == "probs")
    emu = ops.emulated_forward(density, semantics, o, d, b, *params, 0)
    gpu = ops.forward(*(t.cuda() for t in (density, semantics, o, d, b)), *params)
    for ours, theirs in zip(gpu, emu, strict=True):
        torch.testing.assert_close(ours.cpu(), theirs, atol=1e-9, rtol=1e-9)


@needs_cuda
def test_cuda_runs_on_the_current_stream_and_device(ops):
    """The kernels take torch's current stream (C++ side): work queued on a side stream is ordered."""
    density, semantics = make_grids("random")
    o, d, b = make_rays()
    expected = _render("cpu", density, semantics, o, d, b).depth
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        dens = density.cuda(non_blocking=True)
        out = _render("cuda", dens, semantics, o, d, b)
        depth = out.depth.cpu()
    torch.testing.assert_close(depth, expected, atol=1e-9, rtol=1e-9)
