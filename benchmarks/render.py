"""Renderer benchmark: fused CPU kernel vs the pure-PyTorch reference ("the RenderOcc way").

38,400 camera-like rays (RenderOcc's rays per sample) through a 200x200x16 grid with 17
classes at step 0.2 m; forward + backward time and peak memory, side by side.

Peak memory is measured honestly for torch: each measurement runs in a FRESH subprocess
(no allocator/arena reuse from a warm-up), the inputs are built first, the kernel peak
counter is reset (/proc/self/clear_refs, falling back to ru_maxrss), and the reported figure
is VmHWM after one forward+backward minus VmRSS just before it. Timing runs in another
subprocess: one warm-up, then the median of --repeats runs.

    python benchmarks/render.py [--rays 38400] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

GRID = (200, 200, 16)
PC_RANGE = (-40.0, -40.0, -1.0, 40.0, 40.0, 5.4)
VOXEL = 0.4
CLASSES = 17
STEP = 0.2


def make_inputs(n_rays: int, seed: int = 0):
    """A plausible scene: sparse low density, a dense ground layer, a few dense blocks; six
    cameras at 1.6 m looking outward (70 deg wide, -20..+10 deg elevation)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    density = torch.rand(1, *GRID, generator=g) * 0.05
    density[..., :2] = 5.0  # ground
    blocks = torch.rand(1, GRID[0] // 10, GRID[1] // 10, 1, generator=g) > 0.9
    density += blocks.repeat_interleave(10, 1).repeat_interleave(10, 2).float() * 3.0 * (
        torch.arange(GRID[2]) < 8).float()
    semantics = torch.randn(1, *GRID, CLASSES, generator=g)
    cam = torch.randint(0, 6, (n_rays,), generator=g)
    yaw = cam * (torch.pi / 3) + (torch.rand(n_rays, generator=g) - 0.5) * torch.deg2rad(torch.tensor(70.0))
    pitch = torch.deg2rad(torch.rand(n_rays, generator=g) * 30 - 20)
    directions = torch.stack([pitch.cos() * yaw.cos(), pitch.cos() * yaw.sin(), pitch.sin()], dim=1)
    origins = torch.stack([yaw.cos() * 1.0, yaw.sin() * 1.0, torch.full_like(yaw, 1.6)], dim=1)
    return density, semantics, origins, directions, torch.zeros(n_rays, dtype=torch.long)


def rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    raise RuntimeError(field)


def worker(backend: str, what: str, n_rays: int, repeats: int) -> dict:
    """Run in a fresh process: time (warm-up + median) or memory (single cold run)."""
    import torch

    from renderocc.cuda import loader, render_rays

    if backend == "cpu":
        loader.load()  # build/load before measuring anything
    density, semantics, origins, directions, batch = make_inputs(n_rays)
    density.requires_grad_()
    semantics.requires_grad_()
    g = torch.Generator().manual_seed(1)
    w_depth, w_sem = torch.randn(n_rays, generator=g), torch.randn(n_rays, CLASSES, generator=g)

    def step() -> tuple[float, float, object]:
        density.grad = semantics.grad = None
        t0 = time.perf_counter()
        out = render_rays(density, semantics, origins, directions, batch, pc_range=PC_RANGE,
                          voxel_size=VOXEL, step=STEP, backend=backend)
        loss = (out.depth * w_depth).sum() + (out.semantics * w_sem).sum() + out.opacity.sum()
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        return t1 - t0, t2 - t1, out

    if what == "memory":
        baseline = rss_kb("VmRSS")
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset VmHWM to the current RSS
            step()
            peak, how = rss_kb("VmHWM"), "VmHWM"
        except OSError:
            step()
            peak, how = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "ru_maxrss"
        return {"peak_mb": (peak - baseline) / 1024, "how": how}
    _, _, out = step()  # warm-up
    runs = [step()[:2] for _ in range(repeats)]
    from renderocc.raygrid import clip_rays, sample_count

    t_in, t_out, hit = clip_rays(origins.double(), directions.double(), PC_RANGE, 0.0)
    samples = sample_count(t_in, t_out, hit, STEP).double()
    return {
        "marched": marched_samples(density.detach(), origins, directions, batch),
        "bandwidth_gbs": memory_bandwidth_gbs(),
        "forward": statistics.median(r[0] for r in runs),
        "backward": statistics.median(r[1] for r in runs),
        "total": statistics.median(r[0] + r[1] for r in runs),
        "mean_samples": samples.mean().item(),
        "max_samples": samples.max().item(),
        "mean_opacity": out.opacity.mean().item(),
    }


def marched_samples(density, origins, directions, batch) -> int:
    """Samples the kernels evaluate per pass: those before the early stop (transmittance
    before the sample >= 1e-4), counted on the reference's density-only march."""
    import torch

    from renderocc.cuda.reference import TRANSMITTANCE_EPS, _sample_density, _transmittance_before
    from renderocc.raygrid import sample_positions

    with torch.no_grad():
        _, valid, points, _, _ = sample_positions(origins, directions, PC_RANGE, 0.0, STEP)
        sigma = _sample_density(density, points, valid, batch, PC_RANGE, (VOXEL,) * 3)
        _, before = _transmittance_before(sigma, STEP)
        return int((valid & (before >= TRANSMITTANCE_EPS)).sum())


def memory_bandwidth_gbs(n_bytes: int = 256 << 20, repeats: int = 5) -> float:
    """This machine's memory bandwidth as torch sees it: best of a few 256 MB copies with all
    threads, counting the bytes read plus the bytes written."""
    import torch

    src = torch.ones(n_bytes // 4)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - t0)
    return 2 * n_bytes / best / 1e9


def run_worker(backend: str, what: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--worker", backend, what, "--rays", str(args.rays),
           "--repeats", str(args.repeats)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    if proc.returncode != 0:
        raise SystemExit(f"worker {backend}/{what} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rays", type=int, default=38_400)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--worker", nargs=2, metavar=("BACKEND", "WHAT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker, args.rays, args.repeats)))
        return
    import torch

    res = {b: {**run_worker(b, "time", args), **run_worker(b, "memory", args)} for b in ("cpu", "reference")}
    ours, ref = res["cpu"], res["reference"]
    print(f"renderer: {args.rays:,} rays, grid 1x{GRID[0]}x{GRID[1]}x{GRID[2]}, {CLASSES} classes, "
          f"step {STEP} m, float32, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"samples/ray: mean {ours['mean_samples']:.0f}, max {ours['max_samples']:.0f}; "
          f"mean opacity {ours['mean_opacity']:.3f} (reference {ref['mean_opacity']:.3f})")
    print(f"{'':26}{'CPU kernel':>12}{'reference':>12}{'ratio':>9}")
    rows = (("forward", "forward (s)"), ("backward", "backward (s)"), ("total", "forward+backward (s)"))
    for key, label in rows:
        print(f"{label:26}{ours[key]:12.3f}{ref[key]:12.3f}{ref[key] / ours[key]:8.1f}x")
    print(f"{'peak memory (MB)':26}{ours['peak_mb']:12.1f}{ref['peak_mb']:12.1f}"
          f"{ref['peak_mb'] / max(ours['peak_mb'], 1e-9):8.1f}x   ({ours['how']} delta, fresh process)")
    # Bytes a sample evaluation would move if no corner read hit the cache: forward reads 8
    # corners x (density + C classes); backward reads them again and read-modify-writes the
    # gradients (float32).
    corner_bytes = 8 * (1 + CLASSES) * 4
    evals = ours["marched"]
    print(f"sample evaluations: {evals:,} per pass ({evals / args.rays:.0f}/ray before the early stop); "
          f"forward {evals / ours['forward'] / 1e6:.1f} M/s, backward {evals / ours['backward'] / 1e6:.1f} M/s")
    implied_fwd = evals * corner_bytes / ours["forward"] / 1e9
    implied_bwd = evals * 3 * corner_bytes / ours["backward"] / 1e9
    print(f"memory bandwidth (256 MB copy, read+write): {ours['bandwidth_gbs']:.1f} GB/s; uncached-corner "
          f"traffic implied: forward {implied_fwd:.1f} GB/s ({implied_fwd / ours['bandwidth_gbs']:.0%}), "
          f"backward {implied_bwd:.1f} GB/s ({implied_bwd / ours['bandwidth_gbs']:.0%})")
    print("CUDA kernel: unmeasured here (no GPU on this machine)")


if __name__ == "__main__":
    main()
