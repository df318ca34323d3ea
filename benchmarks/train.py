"""Training throughput on CPU for a config (default: demo): steps/s, peak memory per step, and
the DataLoader's samples/s alone — the loader must never be the bottleneck.

    python benchmarks/train.py [--store STORE] [--config demo] [--steps 8] [--set key=value ...]

Without --store, a synthetic dataset (1 scene × 6 keyframes) is written and prepped into a
temporary store at the demo's stored size. Peak memory = the process's resident high-water mark
during each step (VmHWM, reset before every step via /proc/self/clear_refs on Linux).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch


def rss_peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


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
    args = ap.parse_args()

    from renderocc.store.reader import StoreReader
    from renderocc.train.config import load_config, resolved
    from renderocc.train.dataset import EpochSampler, RayDataset
    from renderocc.train.trainer import (
        build_model,
        class_weights,
        loader_samples_per_s,
        make_loader,
        make_optim,
        train_step,
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
    device = torch.device("cpu")
    idx = list(range(len(reader)))
    model = build_model(cfg)
    ds = RayDataset(reader, cfg, idx, feature_stride=model.feature_stride)
    opt, sched, scaler = make_optim(model, cfg, device)
    cw = class_weights(reader, cfg, idx) if reader.has_semantics else None
    n_par = sum(p.numel() for p in model.parameters())
    bs = cfg.data.batch_size
    print(f"config {args.config}: grid {cfg.grid.shape} @ {cfg.grid.voxel_size[0]} m, "
          f"input {list(cfg.data.input_size)} × {len(reader.cameras)} cams, "
          f"{cfg.data.rays} rays/sample, "
          f"batch {bs}, {n_par / 1e6:.2f} M params, torch threads {torch.get_num_threads()}")

    rate = loader_samples_per_s(ds, idx, cfg, 0, 0, args.loader_batches)
    print(f"loader alone: {rate:.2f} samples/s ({cfg.data.workers} workers, "
          f"{args.loader_batches} batches)")

    it = iter(make_loader(ds, EpochSampler(idx, bs, 0), cfg, pin=False))
    base = rss_peak_mb()
    times, peaks, rays = [], [], 0
    for k in range(args.steps + 2):  # 2 warm-up steps
        batch = next(it)
        reset_peak()
        t = time.perf_counter()
        _, _, n, _ = train_step(model, opt, sched, scaler, batch, cfg, cw, device)
        if k >= 2:
            times.append(time.perf_counter() - t)
            peaks.append(rss_peak_mb())
            rays += n
    sps = len(times) / sum(times)
    print(f"training: {sps:.3f} steps/s = {sps * bs:.2f} samples/s, {rays / sum(times):.0f} rays/s "
          f"(mean of {len(times)} steps after 2 warm-up; step time min {min(times):.2f} s, "
          f"max {max(times):.2f} s)")
    print(f"peak memory per step (process RSS high-water mark): mean {sum(peaks) / len(peaks):.0f} MB, "
          f"max {max(peaks):.0f} MB (before training: {base:.0f} MB)")
    print(f"loader/training ratio: {rate / (sps * bs):.1f}× "
          + ("(loader is not the bottleneck)" if rate > sps * bs else "(LOADER IS THE BOTTLENECK)"))


if __name__ == "__main__":
    main()
