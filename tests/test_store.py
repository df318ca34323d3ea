"""The ray store: reader contract, validation, info, motion-mask helpers, schema files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from paths import REAL_FIXTURE as REAL

from renderocc.cli import main
from renderocc.errors import UserError
from renderocc.geometry import OCC3D_GRID
from renderocc.prep.pipeline import PrepOptions, run
from renderocc.store import layout, manifest, writer
from renderocc.store.reader import StoreReader
from renderocc.store.validate import validate

REPO = Path(__file__).resolve().parents[1]
needs_real = pytest.mark.skipif(not (REAL / "v1.0-mini").is_dir(), reason="real nuScenes fixture absent")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("store") / "s"
    run(PrepOptions(dataroot=str(REAL), version="v1.0-mini", out=str(out), max_samples=3, progress=False,
                    image_size=(352, 128)), log=lambda m: None)
    return out


def copy(store: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(store, dst)
    return dst


def test_manifest_schema_shipped_and_documented():
    pkg = REPO / "renderocc" / "schemas" / manifest.SCHEMA_FILE
    assert json.loads(pkg.read_text()) == json.loads((REPO / "schemas" / manifest.SCHEMA_FILE).read_text())
    assert manifest.json_schema()["properties"]["schema_version"]["enum"] == list(layout.READABLE_VERSIONS)
    assert layout.SCHEMA_VERSION == max(layout.READABLE_VERSIONS)
    assert f"schema_version {layout.SCHEMA_VERSION})" in (REPO / "schemas" / "README.md").read_text()


@needs_real
def test_reader_contract(store):
    r = StoreReader(store)
    assert len(r) == 3 and r.image_size == (352, 128) and len(r.cameras) == 6
    assert r.grid == OCC3D_GRID
    assert r.tokens()[1] == r.sample(1)["sample_token"] and r.index_of(r.tokens()[2]) == 2
    assert r.scene_names() == ["scene-0916"] * 3
    s = r.sample(0)
    assert s["ego_pose"].shape == (4, 4) and s["ego_pose"].dtype == np.float64
    assert set(s["cameras"]) == set(r.cameras)
    for c in s["cameras"].values():
        assert c["K"].shape == (3, 3) and c["K_orig"].shape == (3, 3) and c["cam2ego"].shape == (4, 4)
        assert isinstance(c["timestamp"], int)
    assert [a["offset"] for a in s["adjacent"]] == [1, 2]
    im = r.images(0)
    assert im.shape == (6, 128, 352, 3) and im.dtype == np.uint8 and im.mean() > 10
    lb = r.labels(0)
    assert lb["camera"].dtype == np.int16 and lb["u"].dtype == np.float32 and lb["v"].dtype == np.float32
    assert lb["depth"].dtype == np.float32 and lb["label"].dtype == np.uint8
    assert "dynamic" not in lb and r.motion_mask(0) is None and r.occ_gt(0) is None
    with pytest.raises(IndexError):
        r.sample(3)


@needs_real
def test_ray_parquet_layout(store):
    """One row group per sample; dictionary-encoded token and camera; the layout's schema."""
    pf = pq.ParquetFile(next((store / layout.RAYS_DIR).glob("*.parquet")))
    assert pf.num_row_groups == 3
    assert pf.schema_arrow.remove_metadata().equals(layout.RAY_SCHEMA.remove_metadata())
    t = pf.read_row_group(1)
    assert t.column("sample_token").unique().to_pylist() == [StoreReader(store).tokens()[1]]


@needs_real
def test_validate_ok_and_detects_damage(store, tmp_path):
    assert validate(str(store)) == []
    d = copy(store, tmp_path)
    rays = next((d / layout.RAYS_DIR).glob("*.parquet"))
    t = pq.read_table(rays)
    pq.write_table(t.slice(0, len(t) - 1), rays)
    problems = validate(str(d))
    assert any("checksum mismatch" in p for p in problems)
    res = CliRunner().invoke(main, ["store", "validate", str(d)])
    assert res.exit_code == 2 and "store invalid" in res.output


@needs_real
def test_validate_detects_image_damage(store, tmp_path):
    d = copy(store, tmp_path)
    import zarr

    a = zarr.open_array(str(d / layout.IMAGES), mode="r+")
    a[1, 2, 5, 5] = [1, 2, 3]
    assert any("images checksum" in p for p in validate(str(d)))
    assert not any("images checksum" in p for p in validate(str(d), data=False))


@needs_real
def test_reader_refuses_other_schema_version(store, tmp_path):
    d = copy(store, tmp_path)
    m = json.loads((d / layout.MANIFEST).read_text())
    m["schema_version"] = layout.SCHEMA_VERSION + 1
    (d / layout.MANIFEST).write_text(json.dumps(m))
    with pytest.raises(UserError, match=f"schema version {layout.SCHEMA_VERSION + 1}"):
        StoreReader(d)
    with pytest.raises(UserError, match="not a complete ray store"):
        StoreReader(tmp_path / "nothing")


@needs_real
def test_info_cli(store):
    res = CliRunner().invoke(main, ["store", "info", str(store)])
    assert res.exit_code == 0, res.output
    assert "samples      3 in 1 scenes, 1 shards" in res.output
    assert "absent (label = 255)" in res.output and "352x128 (WxH)" in res.output
    res = CliRunner().invoke(main, ["store", "validate", str(store), "--no-data"])
    assert res.exit_code == 0 and "store valid" in res.output


@needs_real
def test_motion_mask_helpers(store, tmp_path):
    """What `prep motion-masks` does: add ray columns + a dense mask; images untouched."""
    d = copy(store, tmp_path)
    r = StoreReader(d)
    images_before = r.images(2).copy()
    writer.create_motion_mask_array(str(d))
    updates, digests = {}, {}
    for s in r.manifest["shards"]:
        dyn, inst, dg = [], [], []
        for i in range(s["first_sample"], s["first_sample"] + s["num_samples"]):
            lb = r.labels(i)
            dyn.append(lb["depth"] < 5)
            inst.append(np.where(lb["depth"] < 5, 7, -1).astype(np.int32))
            mask = np.zeros((len(r.cameras), 128, 352), bool)
            mask[:, 10:20, 30:40] = True
            dg.append(writer.write_motion_mask(str(d), i, mask))
        updates[s["name"]] = writer.add_ray_columns(str(d), s["name"], dyn, inst)
        digests[s["name"]] = writer.combine_digests(dg)
    writer.commit_motion_masks(str(d), {"method": "test"}, updates, digests)
    r2 = StoreReader(d)
    assert r2.has_motion_masks
    lb = r2.labels(1)
    assert lb["dynamic"].dtype == bool and lb["instance"].dtype == np.int32
    np.testing.assert_array_equal(lb["dynamic"], lb["depth"] < 5)
    assert r2.motion_mask(1).shape == (6, 128, 352) and r2.motion_mask(1).sum() == 600
    np.testing.assert_array_equal(r2.images(2), images_before)
    assert validate(str(d)) == []


def _fetch(args):
    r, i = args
    return int(r.images(i).sum()), len(r.labels(i)["u"])


@needs_real
def test_reader_survives_fork(store):
    """DataLoader workers fork a reader that already opened its files; each child reopens."""
    import multiprocessing as mp

    r = StoreReader(store)
    want = [_fetch((r, i)) for i in range(3)]
    with mp.get_context("fork").Pool(2) as pool:
        assert pool.map(_fetch, [(r, i) for i in range(3)]) == want


def test_pre_encoded_occ_gt_objects_are_what_zarr_writes(tmp_path):
    """Prep encodes Occ3D GT chunks in its reader threads: the objects must be zarr's own bytes,
    an all-free-value chunk absent (zarr's default), and an empty write over an object removes it."""
    import zarr

    root = str(tmp_path / "s")
    writer.create_arrays(root, 3, 1, (32, 16), occ_gt=True)
    X, Y, Z = OCC3D_GRID.shape
    rng = np.random.default_rng(0)
    occ = {"semantics": rng.integers(0, 18, (X, Y, Z), dtype=np.uint8),
           "mask_lidar": (rng.random((X, Y, Z)) < 0.3).astype(np.uint8),
           "mask_camera": np.zeros((X, Y, Z), np.uint8)}
    codec = writer.prebuilt_occ_codec(root)
    assert codec is not None
    d0 = writer.write_occ_gt(root, 0, occ)                                    # through zarr
    d1 = writer.write_occ_gt(root, 1, occ, writer.encode_occ_gt(occ, codec))  # pre-encoded
    assert d0 == d1
    for a in layout.OCC_GT_ARRAYS:
        arr = writer.array(root, f"{layout.OCC_GT}/{a}")
        k0, k1 = writer.sample_key(arr, 0), writer.sample_key(arr, 1)
        has = [(tmp_path / "s" / layout.OCC_GT / a / k).exists() for k in (k0, k1)]
        assert has == [occ[a].any()] * 2, a
        if occ[a].any():
            assert (tmp_path / "s" / layout.OCC_GT / a / k0).read_bytes() == \
                (tmp_path / "s" / layout.OCC_GT / a / k1).read_bytes()
        np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "s" / layout.OCC_GT / a), mode="r")[1], occ[a])
    empty = {a: np.zeros((X, Y, Z), np.uint8) for a in layout.OCC_GT_ARRAYS}
    writer.write_occ_gt(root, 1, empty, writer.encode_occ_gt(empty, codec))
    for a in layout.OCC_GT_ARRAYS:
        arr = writer.array(root, f"{layout.OCC_GT}/{a}")
        assert not (tmp_path / "s" / layout.OCC_GT / a / writer.sample_key(arr, 1)).exists()
        assert not zarr.open_array(str(tmp_path / "s" / layout.OCC_GT / a), mode="r")[1].any()


def test_zstd_content_size_reads_each_header_form():
    """Sizes written with 1, 2, 4 (and 8) bytes in the frame header; anything else declares none."""
    from numcodecs import Zstd

    from renderocc.store.reader import zstd_content_size

    for n in (0, 100, 255, 256, 1000, 65791, 65792, 640_000):
        assert zstd_content_size(Zstd(level=0).encode(np.zeros(n, np.uint8))[:18]) == n, n
    frame8 = b"\x28\xb5\x2f\xfd" + bytes([0xE0]) + (2 ** 40).to_bytes(8, "little")
    assert zstd_content_size(frame8) == 2 ** 40
    assert zstd_content_size(b"\x28\xb5\x2f\xfd\x00\x00") is None   # no size declared: refused by readers
    assert zstd_content_size(b"not a frame at all") is None


def _with_masks(store: Path, tmp_path: Path) -> tuple[Path, str]:
    """A copy of `store` with dense 2D masks through the writer's own steps (what `prep masks` does)."""
    d = copy(store, tmp_path)
    r = StoreReader(d)
    name = layout.new_semantic_mask_name()
    writer.create_semantic_mask_array(str(d), name)
    digests = {}
    for s in r.manifest["shards"]:
        dg = []
        for i in range(s["first_sample"], s["first_sample"] + s["num_samples"]):
            mask = np.full((len(r.cameras), 128, 352), 255, np.uint8)
            mask[:, 40:, :] = i + 1
            dg.append(writer.write_semantic_mask(str(d), i, mask, name))
        digests[s["name"]] = writer.combine_digests(dg)
    writer.set_semantic_masks(str(d), {"version": 1, "num_images": 18, "source": "test"}, digests, name)
    return d, name


@needs_real
def test_sharded_chunk_whose_frame_declares_another_size_is_one_line(store, tmp_path):
    d, name = _with_masks(store, tmp_path)
    r = StoreReader(d)
    assert r.semantic_mask_array == name and int(r.semantic_mask(1)[0, 50, 0]) == 2 and validate(str(d)) == []
    obj = next(p for p in (d / name / "c" / "1").rglob("*") if p.is_file())
    data = bytearray(obj.read_bytes())
    n = len(r.cameras)
    offsets = np.frombuffer(bytes(data[-(n * 16 + 4):-4]), "<u8").reshape(n, 2)[:, 0]
    head = int(offsets[offsets != 2 ** 64 - 1][0])
    fhd = data[head + 4]
    assert fhd & 0x20 and fhd >> 6 == 1   # one segment, a 2-byte size (+256)
    data[head + 5:head + 7] = (65535).to_bytes(2, "little")   # 65791 bytes, not the chunk's 45056
    obj.write_bytes(bytes(data))
    lying = r"sample 1 cannot be decoded \(at byte \d+, the zstd frame there declares 65791 bytes; a chunk is 45056"
    with pytest.raises(UserError, match=lying):
        StoreReader(d).semantic_mask(1)
    assert int(StoreReader(d).semantic_mask(0)[0, 50, 0]) == 1   # the other samples still read


@needs_real
def test_free_beams_declaring_other_rows_than_the_manifest_is_one_line(store, tmp_path):
    import hashlib

    d = copy(store, tmp_path)
    fb = next((d / layout.FREE_BEAMS_DIR).glob("*.parquet"))
    pf = pq.ParquetFile(fb)
    groups = [pf.read_row_group(g) for g in range(pf.num_row_groups)]
    groups[1] = groups[1].slice(0, len(groups[1]) // 2)
    with pq.ParquetWriter(fb, pf.schema_arrow) as w:
        for t in groups:
            w.write_table(t, row_group_size=max(len(t), 1))
    m = json.loads((d / layout.MANIFEST).read_text())
    m["shards"][0]["free_beams_sha256"] = hashlib.sha256(fb.read_bytes()).hexdigest()   # consistent, but crafted
    (d / layout.MANIFEST).write_text(json.dumps(m))
    with pytest.raises(UserError, match=f"{fb.name}: declares \\d+ rows, the manifest's shard"):
        StoreReader(d).free_beams(0)


@needs_real
def test_stale_mask_folders_are_notes_and_a_bad_pointer_is_refused(store, tmp_path):
    from renderocc.store.validate import notes

    d, name = _with_masks(store, tmp_path)
    shutil.copytree(d / name, d / "semantic_mask-00000000")   # what a killed import leaves
    assert validate(str(d)) == [] and writer.stale_semantic_mask_arrays(str(d), manifest.load(str(d))) == \
        ["semantic_mask-00000000"]
    assert any("semantic_mask-00000000/: left by an interrupted `prep masks`" in n for n in notes(str(d)))
    m = json.loads((d / layout.MANIFEST).read_text())
    m["semantic_masks"]["array"] = "images"   # a manifest is data: never a path to another array
    (d / layout.MANIFEST).write_text(json.dumps(m))
    with pytest.raises(UserError, match="semantic_masks.array 'images' is not a mask array"):
        StoreReader(d)


@needs_real
def test_a_sample_without_a_moving_box_has_an_all_false_motion_mask(store, tmp_path):
    """zarr stores nothing for an all-fill shard: the writer stores an index of empty chunks, so the
    reader (which refuses a missing chunk) reads zeros and validate passes."""
    d = copy(store, tmp_path)
    r = StoreReader(d)
    writer.create_motion_mask_array(str(d))
    updates, digests = {}, {}
    for s in r.manifest["shards"]:
        dyn, inst, dg = [], [], []
        for i in range(s["first_sample"], s["first_sample"] + s["num_samples"]):
            n = len(r.labels(i)["u"])
            dyn.append(np.zeros(n, bool))
            inst.append(np.full(n, -1, np.int32))
            mask = np.zeros((len(r.cameras), 128, 352), bool)
            mask[0, :10, :10] = i == 2   # only the last sample has a moving box in view
            dg.append(writer.write_motion_mask(str(d), i, mask))
        updates[s["name"]] = writer.add_ray_columns(str(d), s["name"], dyn, inst)
        digests[s["name"]] = writer.combine_digests(dg)
    writer.commit_motion_masks(str(d), {"method": "test"}, updates, digests)
    r2 = StoreReader(d)
    assert [int(r2.motion_mask(i).sum()) for i in range(3)] == [0, 0, 100]
    assert validate(str(d)) == []
