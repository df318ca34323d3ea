"""The image store's codecs side by side: size, quality against the lossless resize, decode speed.

    .venv/bin/python benchmarks/images.py                       # real fixture (scene-0916), 12 samples
    .venv/bin/python benchmarks/images.py --dataroot D --max-samples N

Preps the same samples twice at 704x256 (W×H), `--image-codec jpeg` (the default) and `raw` (lossless
zstd: the lossless resize itself), then reports per sample: stored image bytes (and the source
JPEGs'), PSNR of the jpeg images against the raw ones, and `StoreReader.images(i)` decode rate
(CPU time, best of `--repeats`, one thread), beside the training step rates of benchmarks/train.py.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import tempfile
import time
from pathlib import Path

import numpy as np

# The real fixture: $RENDEROCC_REAL_FIXTURE, else ../shared/data beside the checkout.
REAL = Path(os.environ.get("RENDEROCC_REAL_FIXTURE")
            or Path(__file__).resolve().parents[2] / "shared/data/nuscenes-scene-0916")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataroot", default=str(REAL))
    ap.add_argument("--version", default="v1.0-mini")
    ap.add_argument("--max-samples", type=int, default=12)
    ap.add_argument("--quality", type=int, default=None, help="JPEG quality (default: the store default)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import cv2

    from renderocc.prep.pipeline import PrepOptions, run
    from renderocc.store import fsio, layout
    from renderocc.store.reader import StoreReader

    cv2.setNumThreads(1)
    tmp = Path(tempfile.mkdtemp(prefix="renderocc-images-"))
    q = args.quality or layout.DEFAULT_JPEG_QUALITY
    readers = {}
    for codec in ("jpeg", "raw"):
        run(PrepOptions(dataroot=args.dataroot, version=args.version, out=str(tmp / codec),
                        max_samples=args.max_samples, image_codec=codec, jpeg_quality=q, progress=False),
            log=lambda m: None)
        readers[codec] = StoreReader(tmp / codec)
    n = len(readers["jpeg"])
    W, H = readers["jpeg"].image_size
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; {n} samples x "
          f"{len(readers['jpeg'].cameras)} cameras of {args.dataroot}, stored at {H}x{W}")

    print("\n1. bytes per sample")
    src = sum(os.path.getsize(os.path.join(args.dataroot, p)) for p in _source_files(readers["raw"], args)) / n
    size = {c: fsio.du(str(tmp / c), layout.IMAGES) / n for c in readers}
    print(f"   jpeg (renderocc.jpeg, quality {q})  : {size['jpeg'] / 1e3:8.1f} kB   (target <= 250 kB)")
    print(f"   raw  (zstd, lossless)              : {size['raw'] / 1e3:8.1f} kB   ({size['raw'] / size['jpeg']:.1f}x "
          "the jpeg store)")
    print(f"   source JPEGs at full size          : {src / 1e3:8.1f} kB")

    psnr = []
    for i in range(n):
        a, b = readers["jpeg"].images(i).astype(np.float64), readers["raw"].images(i).astype(np.float64)
        psnr += [10 * np.log10(255 ** 2 / np.mean((a[j] - b[j]) ** 2)) for j in range(len(a))]
    print(f"\n2. PSNR of the jpeg images against the lossless resize ({len(psnr)} images): "
          f"mean {np.mean(psnr):.2f} dB, min {np.min(psnr):.2f} dB, max {np.max(psnr):.2f} dB")

    print(f"\n3. StoreReader.images(i), one thread, CPU time, best of {args.repeats}")
    for codec, r in readers.items():
        r.images(0)
        best = float("inf")
        for _ in range(args.repeats):
            t = time.process_time()
            for i in range(n):
                r.images(i)
            best = min(best, (time.process_time() - t) / n)
        print(f"   {codec:5s}: {1 / best:7.1f} samples/s ({best * 1e3:.1f} ms per sample of "
              f"{len(r.cameras)} images)")


def _source_files(r, args) -> list[str]:
    """The source camera JPEGs of the store's samples (sample_data filenames of its cam tokens)."""
    import json

    import pyarrow.parquet as pq

    from renderocc.store import layout

    tokens = {t for row in pq.read_table(Path(r.root) / layout.SAMPLES, columns=["cam_token"]).column(0).to_pylist()
              for t in row}
    rows = json.loads(Path(args.dataroot, args.version, "sample_data.json").read_text())
    return [d["filename"] for d in rows if d["token"] in tokens]


if __name__ == "__main__":
    main()
