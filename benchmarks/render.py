"""Renderer benchmark: fused kernel (CPU or CUDA) vs the pure-PyTorch reference ("the RenderOcc way").

38,400 camera-like rays (RenderOcc's rays per sample) through a 200x200x16 grid with 17
classes at step 0.2 m; forward + backward time and peak memory, side by side, on one device.

CPU: peak memory is measured honestly for torch: each measurement runs in a FRESH subprocess
(no allocator/arena reuse from a warm-up), the inputs are built first, the kernel peak
counter is reset (/proc/self/clear_refs, falling back to ru_maxrss), and the reported figure
is VmHWM after one forward+backward minus VmRSS just before it. Timing runs in another
subprocess: one warm-up, then the median of --repeats runs.
CUDA (`--device cuda`): the same subprocesses; times from CUDA events around forward and
backward (warm-up first, median of --repeats), peak memory = torch.cuda.max_memory_allocated
over one forward+backward minus what was allocated before it. A reference that runs out of
GPU memory is reported as such, not as a failure of the run.

    python benchmarks/render.py [--device cpu|cuda] [--rays 38400] [--repeats 3] [--json out.json]
    python benchmarks/render.py --device cuda --profile-once   # two kernel steps, nothing else (for ncu)
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
from pathlib import Path

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


class _Timer:
    """Seconds of the regions between marks: CUDA events on a GPU (no host sync per mark), else
    the host clock."""

    def __init__(self, device: str):
        import torch

        self.cuda = device == "cuda"
        self.marks: list = []
        self.torch = torch

    def mark(self) -> None:
        if self.cuda:
            event = self.torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks.append(event)
        else:
            self.marks.append(time.perf_counter())

    def seconds(self) -> list[float]:
        if self.cuda:
            self.marks[-1].synchronize()
            return [a.elapsed_time(b) / 1e3 for a, b in zip(self.marks, self.marks[1:], strict=False)]
        return [b - a for a, b in zip(self.marks, self.marks[1:], strict=False)]


def worker(backend: str, what: str, device: str, n_rays: int, repeats: int) -> dict:
    """Run in a fresh process: time (warm-up + median) or memory (single cold run)."""
    import torch

    from renderocc.cuda import loader
    from renderocc.geometry import Grid
    from renderocc.ops import render_rays

    if backend != "reference":
        loader.load()  # build/load before measuring anything
    grid = Grid.tiling(PC_RANGE, VOXEL)
    density, semantics, origins, directions, batch = (t.to(device) for t in make_inputs(n_rays))
    density.requires_grad_()
    semantics.requires_grad_()
    g = torch.Generator().manual_seed(1)
    w_depth = torch.randn(n_rays, generator=g).to(device)
    w_sem = torch.randn(n_rays, CLASSES, generator=g).to(device)

    def step() -> tuple[float, float, object]:
        density.grad = semantics.grad = None
        timer = _Timer(device)
        timer.mark()
        out = render_rays(density, semantics, origins, directions, batch, grid=grid, step=STEP, backend=backend)
        loss = (out.depth * w_depth).sum() + (out.semantics * w_sem).sum() + out.opacity.sum()
        timer.mark()
        loss.backward()
        timer.mark()
        forward, backward = timer.seconds()
        return forward, backward, out

    try:
        if what == "profile":  # one step to warm up, one to profile
            step()
            forward, backward, _ = step()
            return {"forward": forward, "backward": backward}
        if what == "memory":
            return cuda_peak(step) if device == "cuda" else host_peak(step)
        _, _, out = step()  # warm-up
        runs = [step()[:2] for _ in range(repeats)]
    except torch.OutOfMemoryError as exc:
        return {"oom": True, "error": str(exc).splitlines()[0]}
    from renderocc.geometry.sampling import clip_rays, sample_count

    t_in, t_out, hit = clip_rays(origins.double(), directions.double(), PC_RANGE, 0.0)
    samples = sample_count(t_in, t_out, hit, STEP).double()
    return {
        "marched": marched_samples(density.detach(), origins, directions, batch),
        "bandwidth_gbs": memory_bandwidth_gbs(device),
        "forward": statistics.median(r[0] for r in runs),
        "backward": statistics.median(r[1] for r in runs),
        "total": statistics.median(r[0] + r[1] for r in runs),
        "repeats": repeats,
        "mean_samples": samples.mean().item(),
        "max_samples": samples.max().item(),
        "mean_opacity": out.opacity.mean().item(),
    }


def host_peak(step) -> dict:
    """Resident-memory growth over one forward+backward (VmHWM after minus VmRSS before)."""
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


def cuda_peak(step) -> dict:
    """CUDA memory the caching allocator handed out at the peak of one forward+backward, beyond
    what was allocated before it (the inputs)."""
    import torch

    torch.cuda.synchronize()
    baseline = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    return {"peak_mb": (torch.cuda.max_memory_allocated() - baseline) / 2**20, "how": "max_memory_allocated"}


def marched_samples(density, origins, directions, batch) -> int:
    """Samples the kernels evaluate per pass: those before the early stop (transmittance
    before the sample >= 1e-4), counted on the reference's density-only march."""
    import torch

    from renderocc.cuda.reference import _sample_density, _transmittance_before
    from renderocc.geometry import Grid
    from renderocc.geometry.sampling import TRANSMITTANCE_EPS, sample_positions

    with torch.no_grad():
        _, valid, points, _, _ = sample_positions(origins, directions, PC_RANGE, 0.0, STEP)
        sigma = _sample_density(density, points, valid, batch, Grid.tiling(PC_RANGE, VOXEL))
        _, before = _transmittance_before(sigma, STEP)
        return int((valid & (before >= TRANSMITTANCE_EPS)).sum())


def memory_bandwidth_gbs(device: str = "cpu", n_bytes: int = 256 << 20, repeats: int = 5) -> float:
    """The device's memory bandwidth as torch sees it: best of a few copies (256 MB on the CPU
    with all threads, 2 GB on a GPU), counting the bytes read plus the bytes written."""
    import torch

    if device == "cuda":
        n_bytes = max(n_bytes, 2 << 30)
    src = torch.ones(n_bytes // 4, device=device)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(repeats):
        timer = _Timer(device)
        timer.mark()
        dst.copy_(src)
        timer.mark()
        best = min(best, timer.seconds()[0])
    return 2 * n_bytes / best / 1e9


def run_worker(backend: str, what: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--worker", backend, what, "--device", args.device, "--rays", str(args.rays),
           "--repeats", str(args.repeats)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    if proc.returncode != 0:
        raise SystemExit(f"worker {backend}/{what} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="run the kernel and the reference on this device")
    parser.add_argument("--rays", type=int, default=38_400)
    parser.add_argument("--repeats", type=int, default=None, help="timed runs (default: 1 on cpu, 20 on cuda)")
    parser.add_argument("--json", type=Path, help="also write the figures here (JSON)")
    parser.add_argument("--profile-once", action="store_true",
                        help="run the kernel's forward+backward twice in this process and stop (a profiler "
                             "skips the first step's launches)")
    parser.add_argument("--worker", nargs=2, metavar=("BACKEND", "WHAT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.repeats is None:
        args.repeats = 20 if args.device == "cuda" else 1
    if args.worker:
        print(json.dumps(worker(*args.worker, args.device, args.rays, args.repeats)))
        return
    if args.profile_once:
        print(json.dumps(worker(args.device, "profile", args.device, args.rays, 1)))
        return
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device")
    kernel = args.device  # the kernel backend is named after its device
    res = {b: {**run_worker(b, "time", args), **run_worker(b, "memory", args)} for b in (kernel, "reference")}
    report = summarise(res[kernel], res["reference"], args)
    print("\n".join(report["lines"]))
    if args.json:
        args.json.write_text(json.dumps({k: v for k, v in report.items() if k != "lines"}, indent=1) + "\n")


def summarise(ours: dict, ref: dict, args: argparse.Namespace) -> dict:
    """The printed table and the figures behind it ({"lines", "config", "kernel", "reference", "ratio"})."""
    import torch

    cuda = args.device == "cuda"
    where = (f"{torch.cuda.get_device_name()}, CUDA {torch.version.cuda}" if cuda
             else f"{torch.get_num_threads()} threads")
    lines = [f"renderer: {args.rays:,} rays, grid 1x{GRID[0]}x{GRID[1]}x{GRID[2]}, {CLASSES} classes, "
             f"step {STEP} m, float32, {where}, torch {torch.__version__}"]
    ref_ok = not ref.get("oom")
    lines.append(f"samples/ray: mean {ours['mean_samples']:.0f}, max {ours['max_samples']:.0f}; "
                 f"mean opacity {ours['mean_opacity']:.3f}"
                 + (f" (reference {ref['mean_opacity']:.3f})" if ref_ok else ""))
    unit, scale = ("ms", 1e3) if cuda else ("s", 1.0)
    name = "CUDA kernel" if cuda else "CPU kernel"
    lines.append(f"{'':26}{name:>12}{'reference':>12}{'ratio':>9}")
    ratio = {}
    for key, label in (("forward", "forward"), ("backward", "backward"), ("total", "forward+backward")):
        if ref_ok:
            ratio[key] = ref[key] / ours[key]
            lines.append(f"{label + f' ({unit})':26}{ours[key] * scale:12.3f}{ref[key] * scale:12.3f}"
                         f"{ratio[key]:8.1f}x")
        else:
            lines.append(f"{label + f' ({unit})':26}{ours[key] * scale:12.3f}{'OOM':>12}")
    if ref_ok:
        ratio["peak_mb"] = ref["peak_mb"] / max(ours["peak_mb"], 1e-9)
        lines.append(f"{'peak memory (MB)':26}{ours['peak_mb']:12.1f}{ref['peak_mb']:12.1f}"
                     f"{ratio['peak_mb']:8.1f}x   ({ours['how']} delta, fresh process)")
    else:
        lines.append(f"{'peak memory (MB)':26}{ours['peak_mb']:12.1f}{'OOM':>12}   ({ref['error']})")
    # Bytes a sample evaluation would move if no corner read hit the cache: forward reads 8
    # corners x (density + C classes); backward reads them again and read-modify-writes the
    # gradients (float32).
    corner_bytes = 8 * (1 + CLASSES) * 4
    evals = ours["marched"]
    lines.append(f"sample evaluations: {evals:,} per pass ({evals / args.rays:.0f}/ray before the early stop); "
                 f"forward {evals / ours['forward'] / 1e6:.1f} M/s, backward {evals / ours['backward'] / 1e6:.1f} M/s")
    implied_fwd = evals * corner_bytes / ours["forward"] / 1e9
    implied_bwd = evals * 3 * corner_bytes / ours["backward"] / 1e9
    copy = "2 GB" if cuda else "256 MB"
    lines.append(f"memory bandwidth ({copy} copy, read+write): {ours['bandwidth_gbs']:.1f} GB/s; uncached-corner "
                 f"traffic implied: forward {implied_fwd:.1f} GB/s ({implied_fwd / ours['bandwidth_gbs']:.0%}), "
                 f"backward {implied_bwd:.1f} GB/s ({implied_bwd / ours['bandwidth_gbs']:.0%})")
    if not cuda:
        lines.append("CUDA kernel: `--device cuda` on a GPU machine (scripts/gpu_check.sh)")
    config = {"device": args.device, "where": where, "rays": args.rays, "grid": list(GRID), "classes": CLASSES,
              "step": STEP, "repeats": args.repeats, "torch": torch.__version__}
    return {"lines": lines, "config": config, "kernel": ours, "reference": ref, "ratio": ratio}


if __name__ == "__main__":
    main()
