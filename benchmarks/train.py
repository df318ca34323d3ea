"""Training throughput for a config (default: demo): steps/s, peak memory, the DataLoader's
samples/s alone, and where a step's time goes (loader wait, backbone, lift, 3D net, render,
losses, backward, optimiser, EMA), so that the next bottleneck is visible.

    python benchmarks/train.py [--store STORE] [--config demo] [--steps 8] [--set key=value ...]
                               [--device cpu|cuda] [--compare-precision] [--json out.json]

Without --store, a synthetic dataset (1 scene × 6 keyframes) is written and prepped into a
temporary store at the demo's stored size. The breakdown synchronises the device at every part's
edges (forward hooks on the network's parts, wrappers around the renderer ops), so a step timed
with it is slower than a plain step; the plain steps are timed first, without it. Peak memory on
the CPU = the process's resident high-water mark (VmHWM, reset before every step); on CUDA =
torch.cuda.max_memory_allocated during each step. `--compare-precision` (CUDA) runs the same
steps in fp32 and in the config's precision (bf16 by default) and prints the ratio.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

PARTS = ("loader wait", "backbone", "lift", "3D net", "render", "losses", "backward", "optimiser", "EMA")


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


class Clock:
    """Wall time per named part, the device synchronised at each edge."""

    def __init__(self, device: torch.device):
        self.device, self.total, self._open = device, defaultdict(float), {}

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def start(self, name: str) -> None:
        self.sync()
        self._open[name] = time.perf_counter()

    def stop(self, name: str) -> None:
        self.sync()
        self.total[name] += time.perf_counter() - self._open.pop(name)

    def wrap(self, fn, name: str):
        def timed(*a, **k):
            self.start(name)
            try:
                return fn(*a, **k)
            finally:
                self.stop(name)
        return timed


def instrument(model: torch.nn.Module, clock: Clock) -> None:
    """Forward hooks on the network's parts and wrappers around the renderer ops the losses call."""
    from renderocc.train import losses

    parts = {"backbone": (model.encoder, model.neck), "lift": (model.lift,),
             "3D net": (model.encoder3d, model.density_head, model.semantic_head)}
    for name, mods in parts.items():
        for m in mods:
            m.register_forward_pre_hook(lambda *_, n=name: clock.start(n))
            m.register_forward_hook(lambda *_, n=name: clock.stop(n))
    losses.render_rays = clock.wrap(losses.render_rays, "render")
    losses.ray_optical_depth = clock.wrap(losses.ray_optical_depth, "render")
    total = losses.total_loss
    losses.total_loss = clock.wrap(total, "render+losses")


def run_steps(cfg, reader, idx, device, steps: int, clock: Clock | None = None, pretrained: str | None = None) -> dict:
    """Build a fresh model (its image backbone from the local weights file `pretrained`, if given) and
    optimiser, run 2 warm-up + `steps` timed steps; with `clock`, the per-part breakdown of the timed steps."""
    from renderocc.model.build import build_model
    from renderocc.train.class_weights import class_weights
    from renderocc.train.dataset import EpochSampler, RayDataset
    from renderocc.train.loader import make_loader
    from renderocc.train.optim import Ema, ema_decay_at, make_optim
    from renderocc.train.step import train_step

    torch.manual_seed(0)
    model = build_model(cfg, reader.vocabulary.num_semantic, pretrained).to(device)
    ds = RayDataset(reader, cfg, idx, feature_stride=model.feature_stride)
    opt, sched, scaler = make_optim(model, cfg, device)
    ema = Ema(model)
    forward = torch.compile(model) if cfg.train.compile else model
    cw = class_weights(reader, cfg, idx)
    it = iter(make_loader(ds, EpochSampler(idx, cfg.data.batch_size, 0), cfg, pin=device.type == "cuda"))
    if clock is not None:
        instrument(model, clock)
        opt.register_step_pre_hook(lambda *_: clock.start("optimiser"))
        opt.register_step_post_hook(lambda *_: clock.stop("optimiser"))
    times, peaks, rays, losses = [], [], 0, []
    for k in range(steps + 2):  # 2 warm-up steps
        if k == 2 and clock is not None:
            clock.total.clear()
        t = time.perf_counter()
        if clock is not None:
            clock.start("loader wait")
        batch = next(it)
        if clock is not None:
            clock.stop("loader wait")
        reset_peak(device)
        res = train_step(forward, opt, sched, scaler, [batch], cfg, cw, device)
        if clock is not None:
            clock.start("EMA")
        ema.update(ema_decay_at(k + 1, cfg.optim.ema_decay))
        if clock is not None:
            clock.stop("EMA")
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        losses.append(float(res.loss))
        if k >= 2:
            times.append(time.perf_counter() - t)
            peaks.append(peak_mb(device))
            rays += res.rays
    out = {"steps_per_s": len(times) / sum(times), "step_s_min": min(times), "step_s_max": max(times),
           "rays_per_s": rays / sum(times), "peak_mb_max": max(peaks), "peak_mb_mean": sum(peaks) / len(peaks),
           "losses": losses, "finite": all(v == v and abs(v) != float("inf") for v in losses)}
    if clock is not None:
        tot = dict(clock.total)
        tot["losses"] = tot.pop("render+losses", 0.0) - tot.get("render", 0.0)
        whole = sum(times)
        # backward = the step minus everything timed inside it
        inside = sum(tot.get(p, 0.0) for p in ("backbone", "lift", "3D net", "render", "losses", "optimiser"))
        step_only = whole - tot.get("loader wait", 0.0) - tot.get("EMA", 0.0)
        tot["backward"] = max(0.0, step_only - inside)
        out["breakdown_s_per_step"] = {p: tot.get(p, 0.0) / len(times) for p in PARTS}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store")
    ap.add_argument("--config", default="demo")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--loader-batches", type=int, default=8)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--compare-precision", action="store_true", help="CUDA: fp32 beside the config's precision")
    ap.add_argument("--pretrained", metavar="FILE",
                    help="image backbone weights (.safetensors or a weights-only torch file), as `renderocc train "
                         "--pretrained`: what model.norm = 'frozen_bn' needs")
    ap.add_argument("--json", type=Path, help="also write the figures here (JSON)")
    args = ap.parse_args()

    from renderocc.config import load_config, resolved
    from renderocc.store.reader import StoreReader
    from renderocc.train.dataset import RayDataset
    from renderocc.train.loader import loader_samples_per_s
    from renderocc.train.precision import precision_text

    tmp = tempfile.TemporaryDirectory()
    t0 = time.time()
    store = args.store or synthetic_store(Path(tmp.name))
    if not args.store:
        print(f"synthetic store written in {time.time() - t0:.1f} s: {store}")
    reader = StoreReader(store)
    cfg = resolved(load_config(args.config, args.overrides), reader.grid)
    device = torch.device(args.device)
    idx = list(range(len(reader)))
    bs = cfg.data.batch_size
    print(f"config {args.config}: grid {cfg.grid.spec.text()}, input {list(cfg.data.input_size)} × "
          f"{len(reader.cameras)} cams, {cfg.data.rays} rays/sample, batch {bs}, encoder {cfg.model.encoder}, "
          f"device {device}, precision {precision_text(cfg, device)}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda"
             else f", torch threads {torch.get_num_threads()}"))
    ds = RayDataset(reader, cfg, idx)
    rate = loader_samples_per_s(ds, idx, cfg, 0, 0, args.loader_batches)
    print(f"loader alone: {rate:.2f} samples/s ({cfg.data.workers} workers, {args.loader_batches} batches)")

    results = {}
    variants = [("config", cfg)]
    if args.compare_precision and device.type == "cuda" and cfg.train.precision != "fp32":
        variants.insert(0, ("fp32", cfg.replace(train={"precision": "fp32"})))
    for name, c in variants:
        r = run_steps(c, reader, idx, device, args.steps, pretrained=args.pretrained)
        results[name] = r
        sps = r["steps_per_s"]
        print(f"training [{name}, {precision_text(c, device)}]: {sps:.3f} steps/s = {sps * bs:.2f} samples/s, "
              f"{r['rays_per_s']:.0f} rays/s (mean of {args.steps} steps after 2 warm-up; step time "
              f"min {r['step_s_min']:.3f} s, max {r['step_s_max']:.3f} s), peak {r['peak_mb_max']:.0f} MB")
    if "fp32" in results:
        ratio = results["config"]["steps_per_s"] / results["fp32"]["steps_per_s"]
        print(f"{cfg.train.precision} / fp32 step rate: {ratio:.2f}×")
    clocked = run_steps(cfg, reader, idx, device, args.steps, Clock(device), pretrained=args.pretrained)
    br = clocked["breakdown_s_per_step"]
    whole = sum(br.values())
    print("where a step's time goes (device synchronised at each part's edges):")
    for part in PARTS:
        print(f"  {part:<12} {br[part] * 1e3:9.1f} ms  {100 * br[part] / whole:5.1f} %")
    sps = results["config"]["steps_per_s"] * bs
    print(f"loader/training ratio: {rate / sps:.1f}× "
          + ("(loader is not the bottleneck)" if rate > sps else "(LOADER IS THE BOTTLENECK)"))
    if args.json:
        args.json.write_text(json.dumps({
            "config": args.config, "overrides": args.overrides, "device": str(device),
            "precision": precision_text(cfg, device), "batch_size": bs, "rays_per_sample": cfg.data.rays,
            "input_size": list(cfg.data.input_size), "grid": cfg.grid.shape, "encoder": cfg.model.encoder,
            "loader_samples_per_s": rate, "results": results, "breakdown_s_per_step": br,
        }, indent=1) + "\n")


if __name__ == "__main__":
    main()
