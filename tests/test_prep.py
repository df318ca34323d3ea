"""`renderocc prep nuscenes`: devkit agreement, z-buffer, resume, sharding, bad input."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from paths import REAL_FIXTURE as REAL

from renderocc.errors import UserError
from renderocc.prep import images as imgs
from renderocc.prep.adjacency import neighbour_positions
from renderocc.prep.pipeline import PrepOptions, run
from renderocc.prep.projection import Projected, occlusion_mask, zbuffer
from renderocc.store import layout
from renderocc.store.reader import StoreReader

needs_real = pytest.mark.skipif(not (REAL / "v1.0-mini").is_dir(), reason="real nuScenes fixture absent")
N_REAL = 4


def prep(dataroot, out, **kw) -> dict:
    return run(PrepOptions(dataroot=str(dataroot), version=kw.pop("version", "v1.0-mini"), out=str(out),
                           progress=False, **kw), log=lambda m: None)


@pytest.fixture(scope="module")
def real_store(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("real") / "store"
    prep(REAL, out, max_samples=N_REAL)
    return out


# ------------------------------------------------------------------ devkit agreement

def devkit_explorer(dataroot: Path, float64: bool):
    """The devkit's explorer; `float64` makes LidarPointCloud keep float64 points.

    The devkit does its four transforms in place on float32 points: at nuScenes global
    coordinates (~2 km) that rounds by up to ~1e-4 m, i.e. ~0.05 px at 1 m depth, more than the
    1e-3 px we test to. Same math, float64 points: the devkit's own answer, without the rounding.
    """
    from nuscenes.nuscenes import NuScenes, NuScenesExplorer

    return NuScenesExplorer(NuScenes("v1.0-mini", str(dataroot), verbose=False)), float64


def assert_matches_devkit(store: Path, dataroot: Path, monkeypatch, float64: bool = True,
                          tol_px: float = 1e-3, tol_m: float = 1e-4, sweeps: bool = False,
                          camera_sweeps: bool = False) -> int:
    """Every stored (u, v, depth) is a devkit point of that camera, and the z-buffer is exact:
    one stored point per devkit-occupied pixel, the nearest one. `camera_sweeps`: the store's camera
    sweep frames, each against its own LiDAR and camera sample_data."""
    import pyarrow.parquet as pq
    from nuscenes.utils.data_classes import LidarPointCloud
    from scipy.spatial import cKDTree

    if float64:
        orig = LidarPointCloud.from_file.__func__
        monkeypatch.setattr(LidarPointCloud, "from_file", classmethod(
            lambda cls, fn: cls(orig(cls, fn).points.astype(np.float64))))
    ex, _ = devkit_explorer(dataroot, float64)
    nusc = ex.nusc
    r = StoreReader(store)
    if camera_sweeps:
        r = r.sweep_frames()
        cam_tokens = pq.read_table(Path(store) / layout.SWEEPS, columns=["cam_token"]).column(0).to_pylist()
    checked = 0
    for i in range(len(r)):
        if camera_sweeps:
            sw = r.sample(i)
            s = {"data": {"LIDAR_TOP": sw["lidar_token"], **dict(zip(r.cameras, cam_tokens[i], strict=True))}}
        else:
            s = nusc.get("sample", r.tokens()[i])
        lb = r.labels(i)
        lidar_tokens = [s["data"]["LIDAR_TOP"]]
        if sweeps:
            sd = nusc.get("sample_data", lidar_tokens[0])
            for _ in range(r.manifest["labels"]["sweeps"]):
                if not sd["prev"]:
                    break
                sd = nusc.get("sample_data", sd["prev"])
                lidar_tokens.append(sd["token"])
        for j, cam in enumerate(r.cameras):
            uv, z = [], []
            for lt in lidar_tokens:
                pts, depth, _ = ex.map_pointcloud_to_image(lt, s["data"][cam])
                uv.append(pts[:2].T)
                z.append(depth)
            uv, z = np.concatenate(uv), np.concatenate(z)
            m = lb["camera"] == j
            su, sv, sz = lb["u"][m], lb["v"][m], lb["depth"][m]
            if sweeps:   # devkit points of one pixel can tie in (u, v): match on (u, v, depth)
                d, k = cKDTree(np.c_[uv, z]).query(np.c_[su, sv, sz])
            else:
                d, k = cKDTree(uv).query(np.c_[su, sv])
            assert np.all(np.abs(uv[k] - np.c_[su, sv]) < tol_px), (i, cam)
            assert np.all(np.abs(z[k] - sz) < tol_m), (i, cam)
            # z-buffer: per occupied pixel exactly one stored point, the devkit's nearest
            if float64:
                key = np.floor(uv[:, 1]).astype(np.int64) * 100000 + np.floor(uv[:, 0]).astype(np.int64)
                order = np.lexsort((z, key))
                first = order[np.r_[True, key[order][1:] != key[order][:-1]]]
                assert len(first) == m.sum(), (i, cam)
                assert set(k.tolist()) == set(first.tolist()), (i, cam)
            checked += int(m.sum())
    return checked


@needs_real
def test_real_fixture_matches_devkit(real_store, monkeypatch):
    assert assert_matches_devkit(real_store, REAL, monkeypatch) > 10000


@needs_real
def test_real_fixture_close_to_float32_devkit(real_store, monkeypatch):
    """Against the unmodified devkit only its float32 rounding separates us (< 0.1 px, < 1 mm)."""
    assert assert_matches_devkit(real_store, REAL, monkeypatch, float64=False, tol_px=0.1, tol_m=1e-3) > 0


@needs_real
def test_real_fixture_store_contents(real_store):
    r = StoreReader(real_store)
    m = r.manifest
    assert len(r) == N_REAL and m["source"]["lidarseg"] is False
    assert not r.has_semantics and m["supervision"]["modes"] == ["2d"] and not r.has_occ_gt
    assert m["classes"]["lidarseg_to_occ3d"] == {}
    for i in range(len(r)):
        lb = r.labels(i)
        assert (lb["label"] == 255).all()
        assert set(np.unique(lb["camera"])) == set(range(6))   # labels for every camera
        assert r.images(i).shape == (6, 256, 704, 3)
        assert r.occ_gt(i) is None and r.motion_mask(i) is None


@needs_real
def test_real_fixture_geometry(real_store):
    """K for the stored size matches the resize; adjacency transforms compose consistently."""
    r = StoreReader(real_store)
    s = r.sample(1)
    cam = s["cameras"]["CAM_FRONT"]
    f = imgs.fit((1600, 900), (704, 256))
    assert f.crop == (0, 140) and abs(f.scale_x - 0.44) < 1e-12
    np.testing.assert_allclose(cam["K"], f.K(cam["K_orig"]))
    assert [a["offset"] for a in s["adjacent"]] == [-1, 1, 2]        # ±3 but clipped by the store
    for a in s["adjacent"]:
        nb = r.sample(a["sample_index"])
        assert nb["sample_token"] == a["sample_token"] and nb["scene_name"] == s["scene_name"]
        for c, T in a["cam2ego"].items():
            want = np.linalg.inv(s["ego_pose"]) @ nb["ego_pose"] @ nb["cameras"][c]["cam2ego"]
            np.testing.assert_allclose(T, want, atol=1e-9)
    # camera → key-ego includes the ego motion between LiDAR and camera timestamps
    assert cam["timestamp"] != s["timestamp"]


@needs_real
def test_real_fixture_sweeps_missing_file_is_named(tmp_path):
    with pytest.raises(UserError, match=r"LiDAR file missing: .*sweeps/LIDAR_TOP/.*\.pcd\.bin"):
        prep(REAL, tmp_path / "s", max_samples=2, sweeps=2)
    assert not (tmp_path / "s").exists()      # checked before anything is written


@needs_real
def test_real_fixture_resume_and_kill(tmp_path, monkeypatch):
    from renderocc.store import writer

    out = tmp_path / "s"
    calls = []
    real_record = writer.write_shard_record

    def killed(*a, **k):
        calls.append(a)
        raise KeyboardInterrupt   # the run dies after the shard data, before its record

    monkeypatch.setattr(writer, "write_shard_record", killed)
    with pytest.raises(KeyboardInterrupt):
        prep(REAL, out, max_samples=2)
    assert calls and (out / layout.RAYS_DIR).is_dir()
    assert not (out / layout.MANIFEST).exists()
    with pytest.raises(UserError, match="not a complete ray store"):
        StoreReader(out)
    (out / layout.RAYS_DIR / f"{layout.TMP_PREFIX}dead-scene-0916.parquet").write_bytes(b"partial")
    monkeypatch.setattr(writer, "write_shard_record", real_record)
    s = prep(REAL, out, max_samples=2)
    assert s["complete"] and s["samples"] == 2
    s = prep(REAL, out, max_samples=2)             # rerun: everything skipped
    assert s["samples"] == 0 and s["shards_done"] == 1
    assert len(StoreReader(out)) == 2
    assert not [p for p in out.rglob("*") if p.name.startswith(layout.TMP_PREFIX)]


@needs_real
def test_real_fixture_memory_url(tmp_path):
    import fsspec

    url = "memory://renderocc-test/store"
    try:
        prep(REAL, url, max_samples=2, workers=2)
        r = StoreReader(url)
        assert len(r) == 2 and r.images(1).shape == (6, 256, 704, 3) and len(r.labels(1)["u"]) > 1000
        from renderocc.store.validate import validate

        assert validate(url) == []
    finally:
        fsspec.filesystem("memory").rm("/renderocc-test", recursive=True)


@needs_real
def test_prefetching_prep_stores_the_labels_of_the_plain_per_sample_path(real_store):
    """Batched prep (reader thread, key cloud read once) stores exactly what `sample_rays` and
    `free_beams` give for each sample on its own."""
    from renderocc.prep import freebeams as fb
    from renderocc.prep import nuscenes as nus
    from renderocc.prep.pipeline import _fill_sizes, load_cloud, sample_rays

    nusc = nus.load_nuscenes(str(REAL), "v1.0-mini")
    tasks = nus.build_tasks(nusc, nus.camera_channels(nusc, None), max_samples=N_REAL)
    _fill_sizes(tasks)
    r = StoreReader(real_store)
    for t in tasks:
        p, lab = sample_rays(t, np.array([c.size for c in t.cameras], np.float64), None, 1.0, False)
        lb = r.labels(t.index)
        for k, want in (("camera", p.cam), ("u", p.u.astype(np.float32)), ("v", p.v.astype(np.float32)),
                        ("depth", p.depth.astype(np.float32)), ("label", lab)):
            np.testing.assert_array_equal(lb[k], want)
        beams = fb.free_beams(load_cloud(t.frames[0].path), t.frames[0].lidar2key)
        for k, v in r.free_beams(t.index).items():
            np.testing.assert_array_equal(v, beams[k])


def test_reduced_decode_then_one_bilinear_resampling(tmp_path):
    """The stored image: JPEG DCT-scaled decode (1/2, 1/4, 1/8 when the size allows) plus one
    bilinear step, aligned with the full-size decode + INTER_AREA it replaces (pixel centres at
    u' + 0.5 = s (u + 0.5): 54 dB here, a half-pixel shift drops it to 42 and 31 dB)."""
    assert imgs.reduction((1600, 900), (704, 396)) == 2
    assert imgs.reduction((1600, 900), (176, 99)) == 4       # 900 / 8 is not whole: 1/8 would shift
    assert imgs.reduction((1600, 900), (1600, 900)) == 1
    assert imgs.reduction((320, 180), (352, 198)) == 1      # an upscale decodes at full size
    y, x = np.mgrid[0:900, 0:1600]
    img = (127 + 60 * np.sin(x / 23.0)[..., None] * np.cos(y / 17.0)[..., None] * [1, 0.7, 0.4]).astype(np.uint8)
    path = tmp_path / "a.jpg"
    imgs.cv2.imwrite(str(path), img[..., ::-1], [imgs.cv2.IMWRITE_JPEG_QUALITY, 98])
    for out in ((704, 256), (176, 64)):
        f = imgs.fit((1600, 900), out)
        ref = imgs.cv2.resize(imgs.read_rgb(str(path)), f.resized, interpolation=imgs.cv2.INTER_AREA)
        ref = ref[f.crop[1]:f.crop[1] + out[1], f.crop[0]:f.crop[0] + out[0]]
        got = imgs.load_resized(str(path), (1600, 900), out)
        assert got.shape == (out[1], out[0], 3)
        mse = np.mean((got.astype(float) - ref) ** 2)
        assert 10 * np.log10(255 ** 2 / mse) > 48, out


@needs_real
@pytest.mark.slow
def test_real_fixture_file_url_with_workers(tmp_path, real_store):
    out = tmp_path / "s"
    prep(REAL, f"file://{out}", max_samples=N_REAL, workers=2)
    a, b = StoreReader(out), StoreReader(real_store)
    for i in range(N_REAL):
        for k, v in a.labels(i).items():
            np.testing.assert_array_equal(v, b.labels(i)[k])
        np.testing.assert_array_equal(a.images(i), b.images(i))


# ------------------------------------------------------------------ bad input

def shadow_dataroot(tmp_path: Path) -> Path:
    """A symlinked copy of the real fixture whose files can be broken one at a time."""
    d = tmp_path / "root"
    (d / "samples").mkdir(parents=True)
    shutil.copytree(REAL / "v1.0-mini", d / "v1.0-mini")
    os.symlink(REAL / "maps", d / "maps")
    for cam in (REAL / "samples").iterdir():
        (d / "samples" / cam.name).mkdir()
        for f in cam.iterdir():
            os.symlink(f, d / "samples" / cam.name / f.name)
    return d


def first_sample_file(d: Path, channel: str) -> Path:
    recs = json.loads((d / "v1.0-mini" / "sample_data.json").read_text())
    samples = json.loads((d / "v1.0-mini" / "sample.json").read_text())
    first = next(s for s in samples if not s["prev"])
    rec = next(r for r in recs if r["sample_token"] == first["token"] and r["is_key_frame"]
               and channel in r["filename"])
    return d / rec["filename"]


@needs_real
@pytest.mark.parametrize("breakage, message", [
    ("no_dataroot", "dataroot not found"),
    ("no_version", "version folder not found"),
    ("no_table", r"nuScenes table missing: .*ego_pose\.json"),
    ("corrupt_pcd", r"corrupt point cloud .*multiple of 20 bytes.*LIDAR_TOP"),
    ("missing_image", r"image missing: .*CAM_BACK"),
])
def test_bad_input_one_line(tmp_path, breakage, message):
    d = shadow_dataroot(tmp_path)
    version = "v1.0-mini"
    if breakage == "no_dataroot":
        d = tmp_path / "nope"
    elif breakage == "no_version":
        version = "v1.0-trainval"
    elif breakage == "no_table":
        (d / "v1.0-mini" / "ego_pose.json").unlink()
    elif breakage == "corrupt_pcd":
        f = first_sample_file(d, "LIDAR_TOP")
        data = f.read_bytes()
        f.unlink()
        f.write_bytes(data[:-7])
    elif breakage == "missing_image":
        first_sample_file(d, "__CAM_BACK__").unlink()
    with pytest.raises(UserError, match=message) as e:
        prep(d, tmp_path / "s", version=version, max_samples=1)
    assert "\n" not in str(e.value.message)


@needs_real
def test_existing_store_of_other_schema_version(tmp_path):
    out = tmp_path / "s"
    out.mkdir()
    (out / layout.PLAN).write_text(json.dumps({"format": layout.FORMAT_NAME, "schema_version": 999}))
    with pytest.raises(UserError, match="schema version 999"):
        prep(REAL, out, max_samples=1)


@needs_real
def test_existing_store_with_other_options(tmp_path):
    out = tmp_path / "s"
    prep(REAL, out, max_samples=1)
    with pytest.raises(UserError, match="other options"):
        prep(REAL, out, max_samples=1, image_size=(352, 128))


@needs_real
@pytest.mark.parametrize("args, message", [
    (["--image-size", "704"], "--image-size must be WxH"),
    (["--shard-index", "3", "--num-shards", "2"], "--shard-index 3"),
    (["--cameras", "CAM_NOSE"], "camera not in dataset: CAM_NOSE"),
    (["--scenes", "scene-9999"], "scene not in dataset: scene-9999"),
])
def test_bad_options_cli(tmp_path, args, message):
    from renderocc.cli import main

    res = CliRunner().invoke(main, ["prep", "nuscenes", "--dataroot", str(REAL), "--out", str(tmp_path / "s"),
                                    "--max-samples", "1", "--no-progress", *args])
    assert res.exit_code == 2, res.output
    assert message in res.output


@needs_real
def test_cli_end_to_end(tmp_path):
    from renderocc.cli import main

    out = tmp_path / "s"
    res = CliRunner().invoke(main, ["prep", "nuscenes", "--dataroot", str(REAL), "--out", str(out),
                                    "--max-samples", "2", "--image-size", "352x128", "--no-progress",
                                    "--cameras", "CAM_FRONT,CAM_BACK"])
    assert res.exit_code == 0, res.output
    assert "store complete" in res.output
    r = StoreReader(out)
    assert r.cameras == ["CAM_FRONT", "CAM_BACK"] and r.image_size == (352, 128)
    assert r.images(0).shape == (2, 128, 352, 3)


# ------------------------------------------------------------------ units

def test_zbuffer_keeps_nearest():
    p = Projected(cam=np.array([0, 0, 0, 1], np.int8), point=np.arange(4),
                  u=np.array([5.2, 5.7, 9.0, 5.2]), v=np.array([3.1, 3.9, 3.0, 3.1]),
                  depth=np.array([9.0, 4.0, 7.0, 8.0]))
    keep = zbuffer(p, np.array([[20, 10], [20, 10]]))
    assert sorted(p.point[keep].tolist()) == [1, 2, 3]


def test_occlusion_filter_drops_hidden_background():
    # a pole at 5 m and a background point at 20 m 2 px away: the background is hidden
    p = Projected(cam=np.zeros(3, np.int8), point=np.arange(3), u=np.array([100.0, 102.0, 300.0]),
                  v=np.array([50.0, 51.0, 50.0]), depth=np.array([5.0, 20.0, 20.0]))
    keep = occlusion_mask(p, np.array([[400, 200]]))
    assert keep.tolist() == [True, False, True]


def test_fit_maps_pixel_centres():
    f = imgs.fit((1600, 900), (704, 256))
    K = np.array([[1000.0, 0, 800], [0, 1000, 450], [0, 0, 1]])
    Ks = f.K(K)
    p = np.array([3.0, -1.0, 12.0])
    u, v = (K @ p)[:2] / p[2]
    us, vs = (Ks @ p)[:2] / p[2]
    assert abs(us + 0.5 - f.scale_x * (u + 0.5)) < 1e-9
    assert abs(vs + 0.5 - (f.scale_y * (v + 0.5) - 140)) < 1e-9


def test_neighbours_stay_in_scene():
    assert neighbour_positions(5, 0, 3) == [(1, 1), (2, 2), (3, 3)]
    assert neighbour_positions(5, 3, 2) == [(-2, 1), (-1, 2), (1, 4)]
    assert neighbour_positions(1, 0, 3) == []


# ------------------------------------------------------------------ synthetic data (lidarseg, sweeps, gts)

@pytest.fixture(scope="module")
def synth_store(synth_dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "store"
    prep(synth_dataset, out, image_size=(352, 128))
    return out


@pytest.fixture(scope="module")
def two_scenes(tmp_path_factory) -> Path:
    """2 synthetic scenes x 2 keyframes (for scene sharding)."""
    from renderocc.synth.writer import write_dataset

    return write_dataset(tmp_path_factory.mktemp("two") / "nuscenes", scenes=2, samples_per_scene=2, seed=3,
                         image_size=(160, 90), sweeps_per_sample=0, workers=1)


def test_synth_matches_devkit(synth_store, synth_dataset, monkeypatch):
    assert assert_matches_devkit(synth_store, synth_dataset, monkeypatch) > 1000


def test_synth_semantics_match_devkit_lidarseg(synth_store, synth_dataset, monkeypatch):
    """Each stored label is the Occ3D class of the lidarseg label the devkit gives that point."""
    import nuscenes.nuscenes as devkit
    from scipy.spatial import cKDTree

    from renderocc.classes import lidarseg_index_to_occ3d

    monkeypatch.setattr(devkit, "paint_points_label", lambda fn, *a: np.fromfile(fn, np.uint8))
    ex, _ = devkit_explorer(synth_dataset, False)
    table = lidarseg_index_to_occ3d(ex.nusc.category)
    r = StoreReader(synth_store)
    assert r.has_semantics and r.manifest["source"]["lidarseg"]
    names = r.manifest["classes"]["lidarseg_to_occ3d"]
    assert names and all(v["occ3d"] == table[v["index"]] for v in names.values())
    seen = set()
    for i in range(len(r)):
        s = ex.nusc.get("sample", r.tokens()[i])
        lb = r.labels(i)
        for j, cam in enumerate(r.cameras):
            pts, raw, _ = ex.map_pointcloud_to_image(s["data"]["LIDAR_TOP"], s["data"][cam],
                                                     show_lidarseg=True)
            m = lb["camera"] == j
            _, k = cKDTree(pts[:2].T).query(np.c_[lb["u"][m], lb["v"][m]])
            np.testing.assert_array_equal(lb["label"][m], table[raw[k].astype(np.uint8)])
            seen |= set(np.unique(lb["label"][m]).tolist())
    assert len(seen) >= 4 and 255 not in seen


def test_synth_sweeps_match_devkit(synth_dataset, tmp_path, monkeypatch):
    out = tmp_path / "s"
    prep(synth_dataset, out, image_size=(352, 128), sweeps=1, max_samples=2)
    r = StoreReader(out)
    assert r.manifest["labels"]["sweeps"] == 1
    assert assert_matches_devkit(out, synth_dataset, monkeypatch, sweeps=True) > 1000
    # sweep points carry no semantics; keyframe points do
    lb = r.labels(1)
    assert (lb["label"] == 255).any() and (lb["label"] != 255).any()


def test_synth_store_contents(synth_store, synth_dataset):
    r = StoreReader(synth_store)
    m = r.manifest
    assert len(r) == 4 and r.has_occ_gt and m["supervision"]["modes"] == ["2d", "3d", "mixed"]
    assert m["image"]["per_camera"]["CAM_FRONT"]["original_size"] == [320, 180]
    for i in range(len(r)):
        gt = np.load(synth_dataset / "gts" / r.scene_names()[i] / r.tokens()[i] / "labels.npz")
        occ = r.occ_gt(i)
        for a in layout.OCC_GT_ARRAYS:
            np.testing.assert_array_equal(occ[a], gt[a])
        lb = r.labels(i)
        assert set(np.unique(lb["camera"])) == set(range(6))
        assert lb["label"].max() <= 16
    assert [a["offset"] for a in r.sample(0)["adjacent"]] == [1, 2, 3]
    assert [a["offset"] for a in r.sample(2)["adjacent"]] == [-2, -1, 1]
    from renderocc.store.validate import validate

    assert validate(str(synth_store)) == []


@pytest.mark.slow
def test_synth_job_array_by_scene(two_scenes, tmp_path):
    """Two jobs write disjoint scene shards into one store; only the last makes it complete."""
    out = tmp_path / "s"
    a = prep(two_scenes, out, shard_index=1, num_shards=2, image_size=(128, 64))
    assert not a["complete"] and a["shards_written"] == 1 and not (out / layout.MANIFEST).exists()
    b = prep(two_scenes, out, shard_index=0, num_shards=2, image_size=(128, 64))
    assert b["complete"] and b["shards_written"] == 1
    single = tmp_path / "single"
    prep(two_scenes, single, image_size=(128, 64), workers=2)
    r1, r2 = StoreReader(out), StoreReader(single)
    assert len(r1) == 4 and len(set(r1.scene_names())) == 2 and r1.tokens() == r2.tokens()
    for i in range(len(r1)):
        for k, v in r1.labels(i).items():
            np.testing.assert_array_equal(v, r2.labels(i)[k])
        np.testing.assert_array_equal(r1.images(i), r2.images(i))
        # neighbours never cross the scene boundary
        scenes = r1.scene_names()
        assert all(scenes[x["sample_index"]] == scenes[i] for x in r1.sample(i)["adjacent"])
    from renderocc.store.validate import validate

    assert validate(str(out)) == []


def test_synth_occ_gt_option_and_scene_filter(two_scenes, tmp_path):
    scene = sorted(p.name for p in (two_scenes / "gts").iterdir())[1]
    gts = tmp_path / "gts"
    shutil.copytree(two_scenes / "gts" / scene, gts / scene)
    out = tmp_path / "s"
    prep(two_scenes, out, scenes=[scene], occ_gt=str(gts), image_size=(128, 64), adjacent=0)
    r = StoreReader(out)
    assert r.scene_names() == [scene, scene] and r.has_occ_gt and r.occ_gt(1) is not None
    assert r.sample(0)["adjacent"] == []
    assert r.manifest["source"]["occ_gt_dir"] == str(gts)


def test_synth_occlusion_filter_only_removes(synth_store, synth_dataset, tmp_path):
    out = tmp_path / "s"
    prep(synth_dataset, out, image_size=(352, 128), occlusion_filter=True, max_samples=2)
    a, b = StoreReader(out), StoreReader(synth_store)
    assert a.manifest["labels"]["occlusion_filter"]["ratio"] == 0.8
    for i in range(2):
        la, lb = a.labels(i), b.labels(i)
        assert 0 < len(la["u"]) <= len(lb["u"])
        got = set(zip(la["camera"].tolist(), la["u"].tolist(), la["v"].tolist(), strict=True))
        assert got <= set(zip(lb["camera"].tolist(), lb["u"].tolist(), lb["v"].tolist(), strict=True))


@needs_real
def test_samples_without_rays(tmp_path):
    """A sample with no kept point still has its (empty) row group and reads as empty arrays."""
    out = tmp_path / "s"
    prep(REAL, out, max_samples=2, cameras=["CAM_FRONT"], min_depth=1000.0)
    r = StoreReader(out)
    lb = r.labels(1)
    assert len(lb["u"]) == 0 and lb["camera"].dtype == np.int16 and lb["depth"].dtype == np.float32
    from renderocc.store.validate import validate

    assert validate(str(out)) == []


@needs_real
def test_worker_errors_reach_the_user(tmp_path):
    d = shadow_dataroot(tmp_path)
    first_sample_file(d, "__CAM_FRONT__").unlink()
    with pytest.raises(UserError, match="image missing: .*CAM_FRONT"):
        prep(d, tmp_path / "s", max_samples=2, workers=2)


def test_zbuffer_equals_sorting_reference():
    """The hash-table z-buffer keeps exactly what a full (pixel, depth) sort keeps."""
    from renderocc.prep.projection import pixel_keys, zbuffer_keys

    rng = np.random.default_rng(0)
    for n in (1, 50, 5000, 40000):
        sizes = np.array([[60, 40], [1600, 900]], dtype=float)
        cam = rng.integers(0, 2, n).astype(np.int8)
        u = 1 + rng.random(n) * (sizes[cam, 0] - 2)
        v = 1 + rng.random(n) * (sizes[cam, 1] - 2)
        p = Projected(cam, np.arange(n), u, v, rng.random(n) * 50 + 1)
        want = np.sort(zbuffer_keys(pixel_keys(p, sizes), p.depth))
        np.testing.assert_array_equal(zbuffer(p, sizes), want)


def test_zbuffer_in_concurrent_threads():
    """Prep computes samples in reader threads: each z-buffer needs its own hash table (one shared
    table gave wrong pixels here: numpy releases the GIL inside the scatter/gather)."""
    import threading

    from renderocc.prep.projection import pixel_keys, zbuffer_keys

    sizes = np.array([[1600, 900]] * 6, dtype=float)
    inputs = []
    for seed in range(6):
        rng = np.random.default_rng(seed)
        n = 30000   # crowded into 300x200 px per camera: most pixels are hit more than once
        inputs.append(Projected(rng.integers(0, 6, n).astype(np.int8), np.arange(n), rng.uniform(1.5, 300, n),
                                rng.uniform(1.5, 200, n), rng.uniform(1, 50, n)))
    want = [np.sort(zbuffer_keys(pixel_keys(p, sizes), p.depth)) for p in inputs]
    wrong = []

    def work(t: int) -> None:
        for it in range(30):
            k = (t + it) % len(inputs)
            if not np.array_equal(zbuffer(inputs[k], sizes), want[k]):
                wrong.append((t, it))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not wrong


def test_occ_gt_none_leaves_the_dataroots_gts_out(synth_dataset, tmp_path):
    """`--occ-gt none`: a dataset whose gts/ hold another vocabulary's GT can still be prepped."""
    assert (Path(synth_dataset) / "gts").is_dir()
    for occ_gt, has in ((None, True), ("none", False)):
        out = tmp_path / f"store-{occ_gt}"
        run(PrepOptions(dataroot=str(synth_dataset), version="v1.0-mini", out=str(out), image_size=(96, 54),
                        occ_gt=occ_gt, max_samples=1, progress=False), log=lambda m: None)
        assert StoreReader(out).has_occ_gt is has
    with pytest.raises(UserError, match="--occ-gt none"):
        run(PrepOptions(dataroot=str(synth_dataset), version="v1.0-mini", out=str(tmp_path / "x"),
                        image_size=(96, 54), occ_gt=str(tmp_path / "nowhere"), progress=False), log=lambda m: None)
