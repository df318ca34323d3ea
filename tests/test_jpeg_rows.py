"""Prep's JPEG helper (a band of rows at a DCT-scaled size, system libjpeg) and the band resize:
the stored image must be the same bytes with it, without it, and as a whole-image resize."""

from __future__ import annotations

import numpy as np
import pytest
from paths import REAL_FIXTURE

from renderocc.errors import UserError
from renderocc.prep import images as imgs
from renderocc.prep import jpeg_rows

cv2 = imgs.cv2
needs_helper = pytest.mark.skipif(not jpeg_rows.available(),
                                  reason=f"JPEG helper unavailable: {jpeg_rows.why_unavailable()}")


def _jpeg(path, w: int, h: int, gray: bool = False, seed: int = 0, params: tuple = ()) -> str:
    """A textured JPEG (noise + gradients: every IDCT coefficient matters)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = 127 + 50 * np.sin(x / 13.0) * np.cos(y / 7.0)
    img = base[..., None] * [1.0, 0.8, 0.6] + rng.normal(0, 25, (h, w, 3))
    img = np.clip(img, 0, 255).astype(np.uint8)
    if gray:
        img = img[..., 0]
    cv2.imwrite(str(path), img, [cv2.IMWRITE_JPEG_QUALITY, 92, *params])
    return str(path)


def _no_helper(monkeypatch) -> None:
    monkeypatch.setitem(jpeg_rows._state, "lib", None)


ENCODINGS = {"baseline 4:2:0": (), "progressive": (cv2.IMWRITE_JPEG_PROGRESSIVE, 1),
             "4:4:4": (cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444),
             "4:2:2": (cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422),
             "restart markers": (cv2.IMWRITE_JPEG_RST_INTERVAL, 4)}


@needs_helper
@pytest.mark.parametrize("encoding", list(ENCODINGS))
@pytest.mark.parametrize("reduce", [1, 2, 4, 8])
def test_band_equals_opencv_rows(tmp_path, reduce, encoding):
    path = _jpeg(tmp_path / "a.jpg", 640, 480, params=ENCODINGS[encoding])
    whole = imgs.read_rgb(path, reduce)
    H = 480 // reduce
    for row0, rows in ((0, H), (H // 3, H - H // 3), (7, 5), (H - 1, 1), (0, 0)):
        status, band = jpeg_rows.decode_rows(path, reduce, (640, 480), row0, rows)
        assert status == jpeg_rows.OK
        np.testing.assert_array_equal(band, whole[row0:row0 + rows])


@needs_helper
def test_grayscale_jpeg_decodes_to_rgb_like_opencv(tmp_path):
    path = _jpeg(tmp_path / "g.jpg", 320, 240, gray=True)
    status, band = jpeg_rows.decode_rows(path, 2, (320, 240), 30, 90)
    assert status == jpeg_rows.OK
    np.testing.assert_array_equal(band, imgs.read_rgb(path, 2)[30:120])


@needs_helper
def test_statuses_for_wrong_size_bad_band_garbage_and_missing(tmp_path):
    path = _jpeg(tmp_path / "a.jpg", 320, 240)
    assert jpeg_rows.decode_rows(path, 2, (320, 200), 0, 10) == (jpeg_rows.SIZE, (320, 240))
    assert jpeg_rows.decode_rows(path, 2, (320, 240), 100, 30)[0] == jpeg_rows.BAND   # 120 rows at 1/2
    assert jpeg_rows.decode_rows(path, 3, (320, 240), 0, 10)[0] == jpeg_rows.UNSUPPORTED
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"\xff\xd8" + b"garbage" * 50)
    assert jpeg_rows.decode_rows(str(junk), 2, (320, 240), 0, 10) == (jpeg_rows.DECODE, None)
    assert jpeg_rows.decode_rows(str(tmp_path / "none.jpg"), 2, (320, 240), 0, 10) == (jpeg_rows.OPEN, None)
    assert jpeg_rows.size(path) == (320, 240)
    assert jpeg_rows.size(str(junk)) is None


# (original size, stored size): DCT 1/2 + bilinear with a top crop (nuScenes), no resize after
# the reduction, an upscale (no band), a reduction of 4, INTER_AREA (no reduction divides), none.
CASES = [((1600, 900), (704, 256)), ((1600, 900), (800, 300)), ((320, 180), (400, 200)),
         ((1600, 900), (352, 128)), ((1602, 900), (400, 150)), ((640, 480), (640, 480))]


@pytest.mark.parametrize("orig,out", CASES)
def test_load_resized_band_equals_whole_image_resize(tmp_path, monkeypatch, orig, out):
    """With the helper, without it, and the reference (whole image decoded and resized, then
    cropped): identical bytes."""
    path = _jpeg(tmp_path / "a.jpg", *orig)
    f = imgs.fit(orig, out)
    k = imgs.reduction(orig, f.resized)
    whole = imgs.read_rgb(path, k)
    if (whole.shape[1], whole.shape[0]) != f.resized:
        linear = f.resized[0] * 2 >= whole.shape[1] and f.resized[1] * 2 >= whole.shape[0]
        whole = cv2.resize(whole, f.resized, interpolation=cv2.INTER_LINEAR if linear else cv2.INTER_AREA)
    ref = whole[f.crop[1]:f.crop[1] + out[1], f.crop[0]:f.crop[0] + out[0]]
    got = imgs.load_resized(path, orig, out)
    assert got.shape == (out[1], out[0], 3) and got.flags.c_contiguous
    np.testing.assert_array_equal(got, ref)
    _no_helper(monkeypatch)
    np.testing.assert_array_equal(imgs.load_resized(path, orig, out), ref)


def test_band_starts_on_a_whole_period_of_the_resampling():
    f = imgs.fit((1600, 900), (704, 256))          # 450 decoded rows -> 396: p/q = 25/22, crop 140
    assert imgs.decoded_band((800, 450), f) == (150, 132)   # 6 periods: resized row 132 = decoded row 150
    assert imgs.decoded_band((320, 180), imgs.fit((320, 180), (400, 200))) == (0, 0)   # upscale: none


@pytest.mark.skipif(not (REAL_FIXTURE / "samples").is_dir(), reason="real nuScenes fixture absent")
def test_real_camera_images_same_with_and_without_helper(monkeypatch):
    paths = sorted(str(p) for p in (REAL_FIXTURE / "samples").glob("CAM_*/*.jpg"))[::41]
    assert paths
    with_helper = [imgs.load_resized(p, (1600, 900), (704, 256)) for p in paths]
    assert [imgs.image_size(p) for p in paths] == [(1600, 900)] * len(paths)
    _no_helper(monkeypatch)
    for p, a in zip(paths, with_helper, strict=True):
        np.testing.assert_array_equal(a, imgs.load_resized(p, (1600, 900), (704, 256)))


@pytest.mark.parametrize("helper", [True, False])
def test_size_mismatch_and_bad_file_are_one_line(tmp_path, monkeypatch, helper):
    if not helper:
        _no_helper(monkeypatch)
    path = _jpeg(tmp_path / "a.jpg", 320, 240)
    with pytest.raises(UserError, match=r"a.jpg is 320x240, tables say 320x200"):
        imgs.load_resized(path, (320, 200), (160, 100))
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"\xff\xd8" + b"garbage" * 50)
    with pytest.raises(UserError, match="image cannot be decoded: .*junk.jpg"):
        imgs.load_resized(str(junk), (320, 240), (160, 120))
    with pytest.raises(UserError, match="image missing: .*none.jpg"):
        imgs.load_resized(str(tmp_path / "none.jpg"), (320, 240), (160, 120))
    with pytest.raises(UserError, match="image cannot be decoded"):
        imgs.image_size(str(junk))


@needs_helper
def test_corrupt_entropy_data_is_refused_not_decoded_grey(tmp_path, monkeypatch):
    """Flipped bytes inside the entropy-coded data: libjpeg only warns and fills the damage with grey;
    prep refuses the image in one line instead."""
    path = _jpeg(tmp_path / "a.jpg", 320, 240)
    raw = bytearray(open(path, "rb").read())
    sos = raw.index(b"\xff\xda")
    for k in range(sos + 400, sos + 420):
        raw[k] ^= 0x5A   # flipped bits: still decodable, wrong
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(bytes(raw))
    status, why = jpeg_rows.decode_rows(str(bad), 2, (320, 240), 0, 120)
    assert status == jpeg_rows.CORRUPT and why, (status, why)
    assert jpeg_rows.decode_rows(path, 2, (320, 240), 0, 120)[0] == jpeg_rows.OK
    with pytest.raises(UserError, match="corrupt JPEG data"):
        imgs.load_resized(str(bad), (320, 240), (160, 120))
