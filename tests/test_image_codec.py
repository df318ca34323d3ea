"""The image store's codecs: the registered Zarr v3 JPEG codec (default) and raw (lossless)."""

from __future__ import annotations

import importlib
import json
import shutil
import tomllib
from pathlib import Path

import cv2
import numpy as np
import pytest
import zarr
from click.testing import CliRunner
from paths import REAL_FIXTURE as REAL

from renderocc.cli import main
from renderocc.errors import UserError
from renderocc.prep import images as imgs
from renderocc.prep.pipeline import PrepOptions, run
from renderocc.store import jpeg_codec, layout
from renderocc.store.jpeg_codec import JpegCodec
from renderocc.store.reader import StoreReader
from renderocc.store.validate import validate

REPO = Path(__file__).resolve().parents[1]
needs_real = pytest.mark.skipif(not (REAL / "v1.0-mini").is_dir(), reason="real nuScenes fixture absent")
N = 2   # samples per store: enough for a per-sample size and PSNR, fast on 2 cores


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255.0 ** 2 / np.mean((a.astype(np.float64) - b) ** 2)))


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> dict[str, Path]:
    """The real fixture's first samples at the default 256×704, once per codec."""
    if not (REAL / "v1.0-mini").is_dir():
        pytest.skip("real nuScenes fixture absent")
    out = {}
    for codec in layout.IMAGE_CODECS:
        out[codec] = tmp_path_factory.mktemp(codec) / "s"
        run(PrepOptions(dataroot=str(REAL), version="v1.0-mini", out=str(out[codec]), max_samples=N,
                        image_codec=codec, free_beams=False, progress=False), log=lambda m: None)
    return out


def copy(src: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(src, tmp_path / "copy"))


def test_codec_round_trip_in_a_plain_zarr_array(tmp_path):
    """What the array declares is enough to decode it: a fresh open, no renderocc call in between."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:64, 0:96]
    img = np.stack([x * 2, y * 3, (x + y)], -1).astype(np.uint8) + rng.integers(0, 4, (64, 96, 3), dtype=np.uint8)
    a = zarr.create_array(str(tmp_path / "a"), shape=(2, 64, 96, 3), chunks=(1, 64, 96, 3), dtype="uint8",
                          serializer=JpegCodec(quality=95), compressors=None, fill_value=0)
    a[0], a[1] = img, img[::-1]
    meta = json.loads((tmp_path / "a" / "zarr.json").read_text())
    assert meta["codecs"] == [{"name": layout.JPEG_CODEC_NAME, "configuration": {"quality": 95}}]
    back = zarr.open_array(str(tmp_path / "a"), mode="r")[:]
    assert back.dtype == np.uint8 and back.shape == (2, 64, 96, 3)
    assert psnr(back[0], img) > 38 and psnr(back[1], img[::-1]) > 38
    # each chunk object is a plain JPEG file any decoder reads
    bgr = cv2.imread(str(tmp_path / "a" / "c" / "0" / "0" / "0" / "0"))
    np.testing.assert_array_equal(bgr[..., ::-1], back[0])
    assert JpegCodec.from_dict(JpegCodec(quality=80).to_dict()) == JpegCodec(quality=80)
    with pytest.raises(ValueError, match="quality"):
        JpegCodec(quality=0)
    with pytest.raises(ValueError, match="one RGB image"):
        zarr.create_array(str(tmp_path / "b"), shape=(2, 8, 8, 3), chunks=(2, 8, 8, 3), dtype="uint8",
                          serializer=JpegCodec(), compressors=None, fill_value=0)[:] = 1


def test_direct_shard_write_is_byte_identical_to_zarr(tmp_path):
    """prep writes a sample's JPEG shard as one object; zarr-python writing the same images through
    the array produces the same bytes, and the digest is that object's sha256."""
    import hashlib

    from renderocc.store import writer

    y, x = np.mgrid[0:32, 0:48]
    images = np.stack([np.stack([x * 5 + k, y * 7, (x + y) * 2 + 9 * k], -1) for k in range(6)]).astype(np.uint8)
    root = str(tmp_path / "s")
    writer.create_arrays(root, 2, 6, (48, 32), False, "jpeg", 85)
    arr = zarr.open_array(str(tmp_path / "s" / layout.IMAGES), mode="r+")
    assert jpeg_codec.sharded_quality(arr) == 85
    digest = writer.write_images(root, 0, images, "jpeg")   # direct
    arr[1] = images                                          # through zarr
    a, b = ((tmp_path / "s" / layout.IMAGES / "c" / str(i) / "0" / "0" / "0" / "0").read_bytes() for i in (0, 1))
    assert a == b and digest == hashlib.sha256(a).hexdigest()
    back = zarr.open_array(str(tmp_path / "s" / layout.IMAGES), mode="r")[:]
    np.testing.assert_array_equal(back[0], back[1])
    assert psnr(back[0], images) > 35


def test_codec_registered_by_entry_point():
    """pyproject declares the zarr.codecs entry point a plain `zarr.open_array` finds, and it names
    the class registered on import (same name as the arrays declare)."""
    eps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]["zarr.codecs"]
    module, cls = eps[layout.JPEG_CODEC_NAME].split(":")
    assert getattr(importlib.import_module(module), cls) is JpegCodec
    assert zarr.registry.get_codec_class(layout.JPEG_CODEC_NAME) is JpegCodec


@needs_real
def test_default_store_is_compact_and_close_to_the_lossless_resize(stores):
    """Default 256×704 jpeg store: ≤ 250 kB of images per sample, ≥ 40 dB PSNR against the lossless
    resize (the raw store of the same samples); both decode to identical shapes and the same labels."""
    j, r = StoreReader(stores["jpeg"]), StoreReader(stores["raw"])
    assert j.image_codec == "jpeg" == layout.DEFAULT_IMAGE_CODEC and r.image_codec == "raw"
    assert j.manifest["image"]["jpeg_quality"] == layout.DEFAULT_JPEG_QUALITY
    per_sample = sum(f.stat().st_size for f in (stores["jpeg"] / layout.IMAGES).rglob("*") if f.is_file()) / N
    raw_per_sample = sum(f.stat().st_size for f in (stores["raw"] / layout.IMAGES).rglob("*") if f.is_file()) / N
    assert per_sample <= 250e3 and raw_per_sample > 4 * per_sample
    for i in range(N):
        x, y = j.images(i), r.images(i)
        assert x.shape == y.shape == (6, 256, 704, 3) and x.dtype == np.uint8
        assert psnr(x, y) >= 40
        # raw is the lossless resize itself
        np.testing.assert_array_equal(y[0], imgs.load_resized(str(REAL / _cam_file(r, i, 0)), (1600, 900),
                                                             (704, 256)))
        np.testing.assert_array_equal(j.labels(i)["depth"], r.labels(i)["depth"])


def _cam_file(r: StoreReader, i: int, cam: int) -> str:
    """The source JPEG of sample i's camera `cam` (looked up in the devkit's sample_data table)."""
    token = None
    import pyarrow.parquet as pq

    token = pq.read_table(Path(r.root) / layout.SAMPLES, columns=["cam_token"]).column(0)[i].as_py()[cam]
    rows = json.loads((REAL / "v1.0-mini" / "sample_data.json").read_text())
    return next(d["filename"] for d in rows if d["token"] == token)


@needs_real
def test_shard_objects_hold_plain_jpegs(stores):
    """A sample's object = its 6 JPEG files + the zarr sharding index (spec: (offset, nbytes) uint64
    per inner chunk, then crc32c): any JPEG decoder reproduces what the reader returns."""
    r = StoreReader(stores["jpeg"])
    raw = (stores["jpeg"] / layout.IMAGES / "c" / "1" / "0" / "0" / "0" / "0").read_bytes()
    index = np.frombuffer(raw[-(6 * 16 + 4):-4], "<u8").reshape(6, 2)
    for cam, (off, nbytes) in enumerate(index):
        jpg = raw[off:off + nbytes]
        assert jpg[:2] == b"\xff\xd8" and jpg[-2:] == b"\xff\xd9"
        np.testing.assert_array_equal(cv2.imdecode(np.frombuffer(jpg, np.uint8), cv2.IMREAD_COLOR)[..., ::-1],
                                      r.images(1)[cam])


@needs_real
def test_validate_understands_the_jpeg_codec(stores, tmp_path):
    assert validate(str(stores["jpeg"]), deep=True) == []
    d = copy(stores["jpeg"], tmp_path)
    obj = d / layout.IMAGES / "c" / "1" / "0" / "0" / "0" / "0"
    data = bytearray(obj.read_bytes())
    data[1000:1400] = bytes(400)   # inside camera 0's entropy-coded data: still a JPEG, other pixels
    obj.write_bytes(bytes(data))
    assert any("images checksum mismatch" in p for p in validate(str(d)))
    obj.write_bytes(bytes(data[:300]) + bytes(data[-100:]))   # cut: the JPEGs no longer decode
    problems = validate(str(d), deep=True)
    assert any(p.endswith("images/c/1/0/0/0/0: chunk of sample 1 cannot be decoded (ValueError); the store "
                          "is damaged") for p in problems)
    res = CliRunner().invoke(main, ["store", "validate", str(d), "--deep"])
    assert res.exit_code == 2 and "cannot be decoded" in res.output and "Traceback" not in res.output


@needs_real
def test_validate_checks_the_declared_codec_against_the_manifest(stores, tmp_path):
    d = copy(stores["jpeg"], tmp_path)
    m = json.loads((d / layout.MANIFEST).read_text())
    m["image"]["codec"] = "raw"
    (d / layout.MANIFEST).write_text(json.dumps(m))
    assert validate(str(d)) == [f"{layout.IMAGES}: its Zarr metadata declares codec jpeg, the manifest says raw"]


@needs_real
def test_version_2_raw_store_still_reads(stores, tmp_path):
    """Schema 3 changed only the jpeg codec: a version-2 raw store reads and validates as before."""
    d = copy(stores["raw"], tmp_path)
    m = json.loads((d / layout.MANIFEST).read_text())
    m["schema_version"] = 2
    (d / layout.MANIFEST).write_text(json.dumps(m))
    r = StoreReader(d)
    np.testing.assert_array_equal(r.images(1), StoreReader(stores["raw"]).images(1))
    assert validate(str(d)) == []


@needs_real
def test_version_2_jpeg_store_is_refused_in_one_line(stores, tmp_path):
    """The old jpeg layout ((N, n_cams) variable-length bytes, no Zarr v3 spec) is refused, exit 2."""
    d = copy(stores["raw"], tmp_path)
    shutil.rmtree(d / layout.IMAGES)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # zarr: variable-length bytes have no v3 spec
        old = zarr.create_array(str(d / layout.IMAGES), shape=(N, 6), chunks=(1, 1), dtype="bytes",
                                fill_value=b"")
        jpg = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
        old[0] = np.array([jpg] * 6, dtype=object)   # how schema-2 prep wrote a sample
    m = json.loads((d / layout.MANIFEST).read_text())
    m.update(schema_version=2)
    m["image"].update(codec="jpeg", jpeg_quality=95)
    (d / layout.MANIFEST).write_text(json.dumps(m))
    with pytest.raises(UserError, match="schema-2 jpeg layout"):
        StoreReader(d)
    for cmd in (["store", "info", str(d)], ["store", "validate", str(d)]):
        res = CliRunner().invoke(main, cmd)
        assert res.exit_code == 2 and "re-run prep into a new store" in res.output
        assert len(res.output.strip().splitlines()) == 1
