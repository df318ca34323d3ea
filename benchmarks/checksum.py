"""What reading what you checksum costs: a reader's pass over every sample's labels and free beams,
with each shard's Parquet files hashed against the manifest on first open, beside the same pass
without the check (the baseline), in one run.

    .venv/bin/python benchmarks/checksum.py                 # the real fixture (scene-0916), prepped here
    .venv/bin/python benchmarks/checksum.py --store STORE   # an existing store

Each pass uses a fresh reader (a fresh process's cost: every shard hashed once); best of --repeats.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path


def one_pass(store: str, verify: bool) -> float:
    from renderocc.store.reader import StoreReader

    reader = StoreReader(store)
    if not verify:
        reader._verified = lambda *a: None  # the baseline: the same reads without the hash
    t = time.perf_counter()
    for i in range(len(reader)):
        reader.labels(i)
        reader.free_beams(i)
    return time.perf_counter() - t


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from paths import REAL_FIXTURE

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", default=None)
    ap.add_argument("--dataroot", default=str(REAL_FIXTURE))
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = args.store
        if store is None:
            from renderocc.prep.pipeline import PrepOptions, run

            store = str(Path(tmp) / "store")
            run(PrepOptions(dataroot=args.dataroot, version="v1.0-mini", out=store, progress=False),
                log=lambda m: None)
        from renderocc.store.reader import StoreReader

        reader = StoreReader(store)
        n, mb = len(reader), sum(s["rays_bytes"] for s in reader.manifest["shards"]) / 1e6
        plain = min(one_pass(store, False) for _ in range(args.repeats))
        checked = min(one_pass(store, True) for _ in range(args.repeats))
    print(f"store: {n} samples, {len(reader.manifest['shards'])} shard(s), rays Parquet {mb:.1f} MB")
    print(f"labels + free beams of every sample, fresh reader, best of {args.repeats}:")
    print(f"  without the checksum (baseline): {plain * 1e3:8.1f} ms  ({plain / n * 1e3:.2f} ms/sample)")
    print(f"  with the checksum:               {checked * 1e3:8.1f} ms  ({checked / n * 1e3:.2f} ms/sample)")
    print(f"  ratio {checked / plain:.2f}x; {(checked - plain) * 1e3:.1f} ms once per shard per process "
          f"({(checked - plain) / max(mb, 1e-9) * 1e3:.2f} ms per MB of rays)")


if __name__ == "__main__":
    main()
