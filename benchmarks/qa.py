"""QA against prep on the same store, in one run: `renderocc qa` samples/s beside `prep nuscenes`.

    .venv/bin/python benchmarks/qa.py                          # the real fixture (scene-0916)
    .venv/bin/python benchmarks/qa.py --dataroot D [--workers 2]

Preps the dataroot into a temporary store (one worker unless --workers), then runs QA's pass over
it (coverage march included), each timed by wall clock and by this process's CPU time. Both run
as one process with helper threads (prep: two that compute samples; QA: one for the coverage
walk) and one OpenMP/BLAS thread. Prints both rates, their ratios (wall and per CPU-second), and the projection
to full trainval (34,149 keyframes) on 8 cores.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core per process, like one prep worker
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

TRAINVAL_KEYFRAMES = 34_149


def timed(fn):
    """(result, wall seconds, CPU seconds of this process)."""
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from paths import REAL_FIXTURE

    parser.add_argument("--dataroot", default=str(REAL_FIXTURE))
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()

    from renderocc.ops import kernel
    from renderocc.prep.pipeline import PrepOptions, run
    from renderocc.qa.report import collect
    from renderocc.store.reader import StoreReader

    compiled = kernel("mark_crossed") is not None  # build/load the extension before timing
    with tempfile.TemporaryDirectory() as tmp:
        store = str(Path(tmp) / "store")
        s, prep_wall, prep_cpu = timed(lambda: run(PrepOptions(dataroot=args.dataroot, version="v1.0-mini", out=store,
                                                        workers=args.workers, progress=False), log=lambda m: None))
        reader = StoreReader(store)
        n = len(reader)
        report, qa_wall, qa_cpu = timed(lambda: collect(reader, progress=False))
    prep_rate, qa_rate = s["samples"] / prep_wall, n / qa_wall
    print(f"store: {n} samples from {args.dataroot}; voxel walk: {'compiled' if compiled else 'numpy'}")
    print(f"prep nuscenes ({args.workers} worker(s)): {prep_rate:6.2f} samples/s  ({prep_wall:.1f} s wall, "
          f"{prep_cpu:.1f} s CPU = {s['samples'] / prep_cpu:.2f} samples/CPU-s)")
    print(f"qa (1 process, coverage on):  {qa_rate:6.2f} samples/s  ({qa_wall:.1f} s wall, {qa_cpu:.1f} s CPU"
          f" = {n / qa_cpu:.2f} samples/CPU-s)")
    print(f"qa / prep: {qa_rate / prep_rate:.2f}x wall, {(n / qa_cpu) / (s['samples'] / prep_cpu):.2f}x per CPU-s")
    hours = TRAINVAL_KEYFRAMES / (8 * n / qa_cpu) / 3600
    print(f"full trainval QA ({TRAINVAL_KEYFRAMES:,} keyframes) on 8 cores (8 shard jobs, from the CPU rate): "
          f"{hours * 60:.0f} min")


if __name__ == "__main__":
    main()
