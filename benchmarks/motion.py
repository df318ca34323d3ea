"""Seconds per sample of `prep motion-masks` on the synthetic set (devkit load counted apart).

Usage: python benchmarks/motion.py [--samples 10]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from renderocc.prep.motion_pipeline import MotionOptions, run
from renderocc.prep.nuscenes import load_nuscenes
from renderocc.prep.pipeline import PrepOptions
from renderocc.prep.pipeline import run as prep
from renderocc.synth.writer import write_dataset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--samples", type=int, default=10)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = write_dataset(Path(tmp) / "synth", scenes=1, samples_per_scene=args.samples, seed=0,
                             image_size=(800, 450))
        store = str(Path(tmp) / "store")
        prep(PrepOptions(dataroot=str(root), version="v1.0-mini", out=store, progress=False), log=lambda m: None)
        t0 = time.perf_counter()
        load_nuscenes(str(root), "v1.0-mini")
        load = time.perf_counter() - t0
        stats = run(MotionOptions(store=store, progress=False))
    per_sample = (stats["seconds"] - load) / stats["samples"]
    print(f"motion masks on {stats['samples']} synthetic samples ({stats['labels']} labels, "
          f"{stats['moving_boxes']} moving boxes)")
    print(f"  total {stats['seconds']:.2f} s = devkit load {load:.2f} s + {per_sample:.3f} s/sample")


if __name__ == "__main__":
    main()
