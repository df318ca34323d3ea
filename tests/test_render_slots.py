"""The slot rule (render_core.h) and the CUDA kernels' programs, float64 against the reference.

A march gathers per (ray, voxel) in 8 corner slots and flushes a slot when the ray's cell leaves
it; these rays make it flush along every axis in both directions, jump several cells at once,
start inside the grid, end (or stop early) in their first cell. The CPU kernel must match the
materialised reference on them for 1, 17 and 64 classes. The CUDA kernels' per-ray programs run
here too, on the host (`emulated_forward/backward`: the lanes kernel with its 8 lanes as fibers,
the per-ray kernel, the lanes kernel's 64-bit-index variant), against the CPU kernel: the same
order of operations, so the forward is bitwise equal on x86-64.
"""

from __future__ import annotations

import platform

import numpy as np
import pytest
import torch

from renderocc.geometry import Grid
from renderocc.geometry.sampling import clip_rays
from renderocc.ops import render_rays

BOX = (-1.2, -1.0, -0.6, 0.8, 1.0, 0.9)
SHAPE = (10, 8, 10)
VOXEL = (0.2, 0.25, 0.15)
GRID = Grid(BOX, VOXEL, SHAPE)
NEAR = 0.02
EMULATED = {"lanes": 0, "per-ray": 1, "lanes-64bit": 2}
BITWISE = platform.machine() in ("x86_64", "AMD64")  # no FMA contraction at the default -O3 there


def slot_rays(seed: int = 0, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rays along each axis (both signs), diagonals, random rays from outside and inside, rays that
    leave the box within their first cell; batch 0 or 1."""
    g = torch.Generator().manual_seed(seed)
    lo, hi = torch.tensor(BOX[:3], dtype=dtype), torch.tensor(BOX[3:], dtype=dtype)
    centre, size = (lo + hi) / 2, hi - lo
    origins, dirs = [], []
    axes = torch.cat([torch.eye(3, dtype=dtype), -torch.eye(3, dtype=dtype)])
    for offset in ([0.13, -0.21, 0.07], [-0.31, 0.17, -0.23]):  # off the voxel centres
        origins.append(centre + torch.tensor(offset, dtype=dtype) - axes * size * 1.5)
        dirs.append(axes)
    diag = torch.tensor([[1, 1, 1], [1, -1, 1], [-1, 1, -1], [-1, -1, -1], [1, 0.3, -0.5], [0.2, -1, 0.7]],
                        dtype=dtype)
    origins.append(centre - diag / diag.norm(dim=1, keepdim=True) * size.norm() + 0.01)
    dirs.append(diag)
    n = 60
    outside = centre + (torch.rand(n, 3, generator=g, dtype=dtype) - 0.5) * size * 3
    origins.append(outside)
    dirs.append(centre + (torch.rand(n, 3, generator=g, dtype=dtype) - 0.5) * size - outside)
    origins.append(centre + (torch.rand(n, 3, generator=g, dtype=dtype) - 0.5) * size * 0.95)
    dirs.append(torch.randn(n, 3, generator=g, dtype=dtype))
    # Just inside a face, heading out through it: every sample in the first cell.
    face_dirs = torch.cat([axes, torch.tensor([[1, 0.2, 0.1], [-0.1, 1, 0.3]], dtype=dtype)])
    start = centre + (torch.rand(len(face_dirs), 3, generator=g, dtype=dtype) - 0.5) * size * 0.5
    normal = face_dirs.abs().argmax(1)
    sign = face_dirs[torch.arange(len(face_dirs)), normal].sign()
    bound = torch.where(sign > 0, hi[normal], lo[normal]) - sign * 0.06
    start[torch.arange(len(face_dirs)), normal] = bound
    origins.append(start)
    dirs.append(face_dirs)
    o, d = torch.cat(origins), torch.cat(dirs)
    d = d / d.norm(dim=1, keepdim=True)
    return o, d, torch.randint(0, 2, (o.shape[0],), generator=g)


def sample_cells(o: torch.Tensor, d: torch.Tensor, step: float) -> list[np.ndarray]:
    """Each ray's sample cells (K, 3): lower corners of the trilinear cells, as the kernels find them."""
    t_in, t_out, hit = clip_rays(o, d, BOX, NEAR)
    lo, vox, n = np.array(BOX[:3]), np.array(VOXEL), np.array(SHAPE)
    cells = []
    for r in range(o.shape[0]):
        if not hit[r]:
            cells.append(np.zeros((0, 3), np.int64))
            continue
        K = int(np.floor((t_out[r] - t_in[r]).item() / step * (1 + 1e-6)))
        t = t_in[r].item() + (np.arange(K) + 0.5) * step
        p = o[r].numpy() + t[:, None] * d[r].numpy()
        u = np.clip((p - lo) / vox - 0.5, 0, n - 1)
        cells.append(np.minimum(np.floor(u).astype(np.int64), np.maximum(n - 2, 0)))
    return cells


def make_grids(classes: int, kind: str = "random", dtype=torch.float64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    density = torch.rand(2, *SHAPE, generator=g, dtype=dtype) * 3
    if kind == "saturating":
        density = density * 1e3
    elif kind == "sparse":
        density = density * (torch.rand(2, *SHAPE, generator=g, dtype=dtype) > 0.7)
    return density, torch.randn(2, *SHAPE, classes, generator=g, dtype=dtype)


@pytest.mark.parametrize("step", [0.05, 0.45])
def test_slot_rays_cover_every_kind_of_move(step):
    """The ray set makes the slots move by +1 and -1 along x, y and z, jump by more than one cell
    (the long step), start inside the grid and keep all samples in their first cell."""
    o, d, _ = slot_rays()
    moves = {(axis, sign): 0 for axis in range(3) for sign in (-1, 1)}
    jumps = one_cell = 0
    for cells in sample_cells(o, d, step):
        delta = np.diff(cells, axis=0)
        for axis in range(3):
            for sign in (-1, 1):
                moves[axis, sign] += int((delta[:, axis] == sign).sum())
        jumps += int((np.abs(delta) > 1).any(1).sum())
        one_cell += len(cells) >= 1 and not delta.any()
    assert all(v >= 20 for v in moves.values()), moves
    assert one_cell >= 8
    if step > max(VOXEL):
        assert jumps >= 20
    lo, hi = torch.tensor(BOX[:3]), torch.tensor(BOX[3:])
    assert (((o >= lo) & (o <= hi)).all(1)).sum() >= 60


def _loss_weights(out, seed: int = 3):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(t.shape, generator=g, dtype=t.dtype) for t in (out.depth, out.semantics, out.opacity)]


def _render_and_grads(backend: str, density, semantics, o, d, b, step: float, mode: str):
    dens, sem = density.clone().requires_grad_(), semantics.clone().requires_grad_()
    out = render_rays(dens, sem, o, d, b, grid=GRID, step=step, near=NEAR, backend=backend, semantic_mode=mode,
                      return_distortion=True, background_depth=True)
    w = _loss_weights(out)
    loss = (out.depth * w[0]).sum() + (out.semantics * w[1]).sum() + (out.opacity * w[2]).sum()
    grads = torch.autograd.grad(loss + 0.5 * out.distortion.sum(), [dens, sem])
    return [out.depth, out.semantics, out.opacity, out.distortion], list(grads)


@pytest.mark.parametrize("classes", [1, 17, 64])
@pytest.mark.parametrize("mode", ["logits", "probs"])
@pytest.mark.parametrize(("kind", "step"), [("random", 0.05), ("random", 0.45), ("sparse", 0.11),
                                            ("saturating", 0.05)])
def test_cpu_kernel_matches_reference_on_slot_rays(ops, classes, mode, kind, step):
    """float64, forward and gradients of every output, within the reference tolerances of
    test_render.py (and far tighter in practice); the saturating grid stops rays early, many in their
    first cell."""
    density, semantics = make_grids(classes, kind)
    o, d, b = slot_rays()
    ours, ours_g = _render_and_grads("cpu", density, semantics, o, d, b, step, mode)
    ref, ref_g = _render_and_grads("reference", density, semantics, o, d, b, step, mode)
    for name, x, y in zip(("depth", "semantics", "opacity", "distortion"), ours, ref, strict=True):
        torch.testing.assert_close(x, y, atol=1e-9, rtol=1e-9, msg=name)
    for x, y in zip(ours_g, ref_g, strict=True):
        scale = max(1.0, y.abs().max().item())
        torch.testing.assert_close(x, y, atol=1e-9 * scale, rtol=1e-7)
    assert ours_g[0].abs().max() > 0
    assert (ours_g[1].abs().max() > 0) == (mode == "logits" or classes > 1)  # softmax of one class: 1


def test_early_stop_in_the_first_cell_is_exact(ops):
    """A wall in the ray's first cell: the march stops there, in both passes; nothing behind the
    first cell gets a gradient, the first cell's corners do."""
    density = torch.zeros(1, *SHAPE, dtype=torch.float64)
    density[0, :2] = 1e4
    semantics = torch.randn(1, *SHAPE, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    o = torch.tensor([[BOX[0] - 0.3, 0.05, 0.1]], dtype=torch.float64)
    d = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    b = torch.zeros(1, dtype=torch.long)
    for backend in ("cpu", "reference"):
        dens, sem = density.clone().requires_grad_(), semantics.clone().requires_grad_()
        out = render_rays(dens, sem, o, d, b, grid=GRID, step=0.03, near=NEAR, backend=backend)
        gd, gs = torch.autograd.grad(out.depth.sum() + out.semantics.sum(), [dens, sem])
        assert out.opacity.item() > 1 - 1e-4
        assert gd[0, 2:].abs().max() == 0 and gs[0, 2:].abs().max() == 0
        assert gs[0, :2].abs().max() > 0


def _emulated(ops, kernel: str, density, semantics, o, d, b, step: float, probs: bool, seed: int = 4):
    """Forward and backward (fixed random upstream gradients) of an emulated CUDA kernel and of the
    CPU kernel, on the same inputs."""
    params = (list(BOX), list(VOXEL), NEAR, step, probs)
    cpu = ops.forward(density, semantics, o, d, b, *params)
    emu = ops.emulated_forward(density, semantics, o, d, b, *params, EMULATED[kernel])
    g = torch.Generator().manual_seed(seed)
    ups = [torch.randn(t.shape, generator=g, dtype=t.dtype) for t in cpu[:4]]
    cpu_g = ops.backward(density, semantics, o, d, b, *params, *cpu[:4], *ups, True)
    emu_g = ops.emulated_backward(density, semantics, o, d, b, *params, *cpu[:4], *ups, True, EMULATED[kernel])
    return cpu, emu, cpu_g, emu_g


@pytest.mark.parametrize("kernel", list(EMULATED))
@pytest.mark.parametrize("classes", [1, 5, 13, 17, 33, 64])
@pytest.mark.parametrize("mode", ["logits", "probs"])
def test_emulated_cuda_kernels_match_the_cpu_kernel(ops, kernel, classes, mode):
    """Every compiled variant (17 and 13 classes fixed, generic 4 and 8 channels per lane, 64-bit
    indices), both modes: the forward equals the CPU kernel's (bitwise on x86-64), gradients up to
    the order rays add them in. Rays of every length: chunks of 8 samples full, partial, single."""
    density, semantics = make_grids(classes, "sparse", seed=classes)
    o, d, b = slot_rays(seed=1)
    step = 0.05 if mode == "logits" else 0.09
    cpu, emu, cpu_g, emu_g = _emulated(ops, kernel, density, semantics, o, d, b, step, mode == "probs")
    for x, y in zip(emu, cpu, strict=True):
        if BITWISE:
            assert torch.equal(x, y)
        else:
            torch.testing.assert_close(x, y, atol=1e-12, rtol=1e-12)
    for x, y in zip(emu_g, cpu_g, strict=True):
        scale = max(1.0, y.abs().max().item())
        torch.testing.assert_close(x, y, atol=1e-12 * scale, rtol=1e-10)
    assert cpu_g[0].abs().max() > 0
    assert (cpu_g[1].abs().max() > 0) == (mode == "logits" or classes > 1)


@pytest.mark.parametrize("classes", [5, 13, 17])
def test_emulated_lanes_float32_row_scatter(ops, classes):
    """float32 takes the 4-float atomic adds: rows of 5, 13 and 17 floats start at every alignment,
    and the second batch grid of a 5 x 3 x 3 grid starts off a 16-byte boundary. The emulator checks
    each 4-float add is aligned and inside the gradient; sums match the CPU kernel's."""
    box, voxel, shape = (-1.0, -0.9, -0.6, 1.0, 0.9, 0.9), (0.4, 0.6, 0.5), (5, 3, 3)
    g = torch.Generator().manual_seed(classes)
    density = torch.rand(2, *shape, generator=g) * 2
    semantics = torch.randn(2, *shape, classes, generator=g)
    o = (torch.rand(80, 3, generator=g) - 0.5) * 4
    d = torch.randn(80, 3, generator=g)
    d = d / d.norm(dim=1, keepdim=True)
    b = torch.randint(0, 2, (80,), generator=g)
    params = (list(box), list(voxel), 0.0, 0.07, False)
    cpu = ops.forward(density, semantics, o, d, b, *params)
    emu = ops.emulated_forward(density, semantics, o, d, b, *params, 0)
    for x, y in zip(emu, cpu, strict=True):
        torch.testing.assert_close(x, y, atol=1e-6, rtol=1e-6)
    ups = [torch.randn(t.shape, generator=g) for t in cpu[:4]]
    cpu_g = ops.backward(density, semantics, o, d, b, *params, *cpu[:4], *ups, True)
    emu_g = ops.emulated_backward(density, semantics, o, d, b, *params, *cpu[:4], *ups, True, 0)
    for x, y in zip(emu_g, cpu_g, strict=True):
        torch.testing.assert_close(x, y, atol=1e-4, rtol=1e-4)
    assert cpu_g[1].abs().max() > 0


def test_emulated_kernels_refuse_more_than_64_classes(ops):
    density, semantics = make_grids(65)
    o, d, b = slot_rays()
    with pytest.raises(RuntimeError, match="at most 64 classes; the semantics have 65"):
        ops.emulated_forward(density, semantics, o, d, b, list(BOX), list(VOXEL), NEAR, 0.05, False, 0)
