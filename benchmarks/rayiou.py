"""RayIoU speed on CPU: samples per second of the SparseOcc protocol (8 origins × 14,040 rays,
GT and prediction walked together), against the target of ≥ 10 samples/s on 2 cores,
with the C++ walk (what eval uses) and the numpy walk (its fallback without the extension).

A synthetic scene of 12 keyframes (so every sample has the full 8 origins), its Occ3D-style GT,
poses through the nuScenes devkit, and a prediction = the GT shifted one voxel in x and y (so
prediction and GT stop at different voxels, as a real model's would).

Usage: python benchmarks/rayiou.py [--samples 12] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from renderocc.eval.external import GtDir, origins_by_token, scene_poses_from_dataroot
from renderocc.eval.rayiou import RayIoU, cast
from renderocc.geometry import OCC3D_GRID
from renderocc.synth.writer import write_dataset

TARGET = 10.0  # samples/s on 2 cores


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--samples", type=int, default=12)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = write_dataset(Path(tmp) / "synth", scenes=1, samples_per_scene=args.samples, seed=0,
                             image_size=(320, 180), sweeps_per_sample=2)
        gts = GtDir(root / "gts")
        origins = origins_by_token(scene_poses_from_dataroot(str(root)))
        data = []
        for tok in gts.tokens:
            gt = gts.occ_gt(tok)["semantics"]
            data.append((tok, np.roll(gt, (1, 1), axis=(0, 1)), gt))
    n_orig = [len(origins[t]) for t, _, _ in data]
    cast(data[0][1], data[0][2], origins[data[0][0]], OCC3D_GRID, threads=args.threads)  # warm-up, build
    metric = RayIoU(OCC3D_GRID)
    w0, c0 = time.perf_counter(), time.process_time()
    for tok, pred, gt in data:
        metric.update(pred, gt, origins[tok])
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    m = metric.compute()
    rate = len(data) / wall
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"RayIoU: {len(data)} synthetic samples, origins per sample {min(n_orig)}-{max(n_orig)}, "
          f"{metric.rays / len(data):,.0f} valid rays/sample (of {max(n_orig) * 14040:,}), "
          f"{args.threads} thread(s), load average {load:.1f} on {os.cpu_count()} CPUs")
    print(f"  wall {wall:.2f} s = {rate:.1f} samples/s ({wall / len(data) * 1000:.0f} ms/sample); "
          f"CPU {cpu / len(data) * 1000:.0f} ms/sample")
    print(f"  target >= {TARGET:g} samples/s on 2 cores: {'met' if rate >= TARGET else 'NOT met'} "
          f"({rate / TARGET:.2f}x the target)")
    cpu_rate = len(data) / cpu
    print(f"  CPU-bound rate {cpu_rate:.1f} samples/s per free core (what the wall rate becomes when "
          f"the CPU time is not shared): {'meets' if cpu_rate >= TARGET else 'misses'} the target on one core")
    c0 = time.process_time()
    w0 = time.perf_counter()
    for tok, pred, gt in data[:3]:
        cast(pred, gt, origins[tok], OCC3D_GRID, threads=args.threads, backend="numpy")
    print(f"  numpy walk (the fallback), 3 samples: wall {(time.perf_counter() - w0) / 3 * 1000:.0f} ms/sample, "
          f"CPU {(time.process_time() - c0) / 3 * 1000:.0f} ms/sample")
    print(f"  (sanity) RayIoU of the one-voxel shift: {100 * m['rayiou']:.2f} "
          f"(@1 {100 * m['rayiou_1']:.2f}, @2 {100 * m['rayiou_2']:.2f}, @4 {100 * m['rayiou_4']:.2f})")


if __name__ == "__main__":
    main()
