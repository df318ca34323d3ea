"""Time `write_dataset` for 2 scenes x 10 keyframes (default image size and sweeps).

Target: under 60 s on a 2-core CPU machine. One run; prints wall and CPU time.

    .venv/bin/python benchmarks/synth.py [--workers N]
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

from renderocc.synth.writer import DEFAULT_IMAGE_SIZE, write_dataset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--scenes", type=int, default=2)
    ap.add_argument("--samples", type=int, default=10)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        start, cpu0 = time.perf_counter(), time.process_time()
        out = write_dataset(Path(tmp) / "synth", args.scenes, args.samples, seed=0, workers=args.workers)
        wall = time.perf_counter() - start
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = time.process_time() - cpu0 + children.ru_utime + children.ru_stime
        size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    w, h = DEFAULT_IMAGE_SIZE
    print(f"synth: {args.scenes} scenes x {args.samples} keyframes, {w}x{h} images, "
          f"{os.cpu_count()} CPUs: {wall:.1f} s wall, {cpu:.1f} s CPU, {size / 1e6:.0f} MB "
          f"(target < 60 s wall): {'OK' if wall < 60 else 'SLOW'}")


if __name__ == "__main__":
    main()
