"""Training throughput for a config (default: demo): steps/s, peak memory per step, and the
DataLoader's samples/s alone — the loader must never be the bottleneck.

    python benchmarks/train.py [--store STORE] [--config demo] [--steps 8] [--set key=value ...]
                               [--device cpu|cuda] [--json out.json]

Without --store, a synthetic dataset (1 scene × 6 keyframes) is written and prepped into a
temporary store at the demo's stored size. Peak memory on the CPU = the process's resident
high-water mark during each step (VmHWM, reset before every step via /proc/self/clear_refs on
Linux); on CUDA = torch.cuda.max_memory_allocated during each step (reset before it). Each step
ends in a host sync (the trainer reads the gradient norm), so host timing is the step's time.
AMP (train.amp, fp16 autocast + GradScaler) applies on CUDA only: `--set train.amp=false` for off.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch


def rss_peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return rss_peak_mb()


def synthetic_store(tmp: Path) -> str:
    from renderocc.prep.pipeline import PrepOptions, run
    from renderocc.synth.writer import write_dataset

    root = write_dataset(tmp / "nuscenes", scenes=1, samples_per_scene=6, seed=0, image_size=(320, 180),
                         sweeps_per_sample=1, workers=1)
    run(PrepOptions(dataroot=str(root), version="v1.0-mini", out=str(tmp / "store"), image_size=(192, 108),
                    progress=False), log=lambda m: None)
    return str(tmp / "store")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store")
    ap.add_argument("--config", default="demo")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--loader-batches", type=int, default=8)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--json", type=Path, help="also write the figures here (JSON)")
    args = ap.parse_args()

    from renderocc.config import load_config, resolved
    from renderocc.store.reader import StoreReader
    from renderocc.train.dataset import EpochSampler, RayDataset
    from renderocc.train.trainer import (
        build_model,
        class_weights,
        loader_samples_per_s,
        make_loader,
        make_optim,
        train_step,
        use_amp,
    )

    tmp = tempfile.TemporaryDirectory()
    t0 = time.time()
    store = args.store or synthetic_store(Path(tmp.name))
    if not args.store:
        print(f"synthetic store written in {time.time() - t0:.1f} s: {store}")
    cfg = load_config(args.config, args.overrides)
    reader = StoreReader(store)
    cfg = resolved(cfg, reader.grid)
    torch.manual_seed(0)
    device = torch.device(args.device)
    idx = list(range(len(reader)))
    model = build_model(cfg).to(device)
    ds = RayDataset(reader, cfg, idx, feature_stride=model.feature_stride)
    opt, sched, scaler = make_optim(model, cfg, device)
    cw = class_weights(reader, cfg, idx) if reader.has_semantics else None
    n_par = sum(p.numel() for p in model.parameters())
    bs = cfg.data.batch_size
    print(f"config {args.config}: grid {cfg.grid.spec.text()}, "
          f"input {list(cfg.data.input_size)} × {len(reader.cameras)} cams, "
          f"{cfg.data.rays} rays/sample, "
          f"batch {bs}, {n_par / 1e6:.2f} M params, device {device}"
          + (f" ({torch.cuda.get_device_name(device)}, AMP {'on' if use_amp(cfg, device) else 'off'})"
             if device.type == "cuda" else f", torch threads {torch.get_num_threads()}"))

    rate = loader_samples_per_s(ds, idx, cfg, 0, 0, args.loader_batches)
    print(f"loader alone: {rate:.2f} samples/s ({cfg.data.workers} workers, "
          f"{args.loader_batches} batches)")

    it = iter(make_loader(ds, EpochSampler(idx, bs, 0), cfg, pin=device.type == "cuda"))
    base = peak_mb(device)
    times, peaks, rays, losses = [], [], 0, []
    for k in range(args.steps + 2):  # 2 warm-up steps
        batch = next(it)
        reset_peak(device)
        t = time.perf_counter()
        loss, _, n, _ = train_step(model, opt, sched, scaler, batch, cfg, cw, device)
        losses.append(float(loss.detach()))
        if k >= 2:
            times.append(time.perf_counter() - t)
            peaks.append(peak_mb(device))
            rays += n
    sps = len(times) / sum(times)
    print(f"training: {sps:.3f} steps/s = {sps * bs:.2f} samples/s, {rays / sum(times):.0f} rays/s "
          f"(mean of {len(times)} steps after 2 warm-up; step time min {min(times):.2f} s, "
          f"max {max(times):.2f} s)")
    what = "CUDA max_memory_allocated" if device.type == "cuda" else "process RSS high-water mark"
    print(f"peak memory per step ({what}): mean {sum(peaks) / len(peaks):.0f} MB, "
          f"max {max(peaks):.0f} MB (before training: {base:.0f} MB)")
    print(f"loader/training ratio: {rate / (sps * bs):.1f}× "
          + ("(loader is not the bottleneck)" if rate > sps * bs else "(LOADER IS THE BOTTLENECK)"))
    if args.json:
        args.json.write_text(json.dumps({
            "config": args.config, "overrides": args.overrides, "device": str(device),
            "amp": use_amp(cfg, device), "batch_size": bs, "rays_per_sample": cfg.data.rays,
            "input_size": list(cfg.data.input_size), "grid": cfg.grid.shape, "params_m": n_par / 1e6,
            "warmup_steps": 2, "timed_steps": len(times), "steps_per_s": sps, "samples_per_s": sps * bs,
            "step_s_min": min(times), "step_s_max": max(times), "peak_mb_max": max(peaks),
            "peak_mb_mean": sum(peaks) / len(peaks), "peak_what": what, "loader_samples_per_s": rate,
            "losses": losses, "finite": all(v == v and abs(v) != float("inf") for v in losses),
        }, indent=1) + "\n")


if __name__ == "__main__":
    main()
