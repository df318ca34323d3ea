"""CUDA side of the renderer: compile-only check with nvcc here, numerics where a GPU exists."""

from __future__ import annotations

import pytest
import torch

from renderocc.cuda import loader, ray_optical_depth, render_rays


@pytest.mark.slow
def test_cuda_sources_compile(tmp_path):
    """nvcc compiles the .cu and the bindings' CUDA glue links against it (one run, ~10-30 s)."""
    try:
        result = loader.compile_check_cuda(tmp_path)
    except loader.ExtensionUnavailable as exc:
        pytest.skip(f"CUDA compile check skipped: {exc}")
    report = "\n".join(f"$ {cmd}\n[exit {code}] {out}" for cmd, code, out in result["steps"])
    assert result["ok"], report


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: CUDA kernel not run here")
@pytest.mark.parametrize("mode", ["logits", "probs"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_matches_cpu(mode, dtype):
    g = torch.Generator().manual_seed(0)
    box, voxel = (-4.0, -4.0, -1.0, 4.0, 4.0, 1.4), 0.4
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
        out = render_rays(dens, sem, o.to(device), d.to(device), b.to(device), pc_range=box,
                          voxel_size=voxel, step=0.1, backend=device, semantic_mode=mode,
                          return_distortion=True, background_depth=True)
        loss = out.depth.sum() + out.semantics.pow(2).sum() + out.opacity.sum() + out.distortion.sum()
        grads = torch.autograd.grad(loss, [dens, sem])
        results.append([t.detach().cpu() for t in (out.depth, out.semantics, out.opacity, out.distortion,
                                                   *grads)])
    tol = 1e-4 if dtype == torch.float32 else 1e-9
    for ours, ref in zip(results[1], results[0], strict=True):
        torch.testing.assert_close(ours, ref, atol=tol, rtol=tol)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: CUDA kernel not run here")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_optical_depth_matches_cpu(dtype):
    g = torch.Generator().manual_seed(0)
    box, voxel = (-4.0, -4.0, -1.0, 4.0, 4.0, 1.4), 0.4
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
                                       pc_range=box, voxel_size=voxel, step=0.1, backend=device)
        (grad,) = torch.autograd.grad((tau * g_tau.to(device)).sum(), [dens])
        results.append([t.detach().cpu() for t in (tau, count, grad)])
    tol = 1e-4 if dtype == torch.float32 else 1e-9
    for ours, ref in zip(results[1], results[0], strict=True):
        torch.testing.assert_close(ours, ref, atol=tol, rtol=tol)
