"""Camera sweeps: unlabelled camera frames between keyframes, from the synthetic world's nuScenes files
(`synth nuscenes --camera-sweeps-per-sample`) through `prep nuscenes --camera-sweeps` into the store
(sweeps.parquet, sweep_rays/, sweep_images/) and out of `StoreReader.sweep_frames()`."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from motion_checks import dynamic_labels_in_mask
from paths import REAL_FIXTURE as REAL
from scipy.spatial import cKDTree
from test_prep import assert_matches_devkit

from renderocc.classes import IGNORE
from renderocc.cli import main
from renderocc.errors import UserError
from renderocc.prep import camera_sweeps as csweeps
from renderocc.prep import images as imgs
from renderocc.prep.motion_pipeline import MotionOptions, backproject
from renderocc.prep.motion_pipeline import run as motion_run
from renderocc.prep.nuscenes import build_tasks, camera_channels, load_nuscenes, pose
from renderocc.prep.pipeline import PrepOptions, run
from renderocc.store import layout
from renderocc.store.reader import StoreReader
from renderocc.store.validate import validate

SCENES, KEYFRAMES, PER_SAMPLE = 2, 3, 2
needs_real = pytest.mark.skipif(not (REAL / "v1.0-mini").is_dir(), reason="real nuScenes fixture absent")


def prep(dataroot, out, **kw) -> dict:
    return run(PrepOptions(dataroot=str(dataroot), version="v1.0-mini", out=str(out), progress=False,
                           image_size=kw.pop("image_size", (96, 54)), **kw), log=lambda m: None)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """2 scenes x 3 keyframes, 2 camera sweeps per keyframe interval, 1 LiDAR sweep, per-pixel truth."""
    from renderocc.synth.writer import write_dataset

    return write_dataset(tmp_path_factory.mktemp("cs") / "nuscenes", scenes=SCENES, samples_per_scene=KEYFRAMES,
                         seed=5, image_size=(160, 90), sweeps_per_sample=1, workers=1, camera_truth=True,
                         camera_sweeps_per_sample=PER_SAMPLE)


@pytest.fixture(scope="module")
def store(world, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cs-store") / "store"
    prep(world, out, camera_sweeps=PER_SAMPLE)
    return out


@pytest.fixture(scope="module")
def plain_store(world, tmp_path_factory) -> Path:
    """The same dataroot prepped without --camera-sweeps."""
    out = tmp_path_factory.mktemp("cs-plain") / "store"
    prep(world, out)
    return out


def _cam_tokens(store: Path, table: str) -> list[list[str]]:
    return pq.read_table(store / table, columns=["cam_token"]).column(0).to_pylist()


# ------------------------------------------------------------------ the synthetic world's files

def test_synth_writes_camera_sweeps_in_nuscenes_format(world):
    """Non-keyframe camera sample_data between keyframes, under sweeps/CAM_*, belonging to the next
    keyframe (as in nuScenes), in time-ordered chains, each instant with a LiDAR sweep, as the devkit loads it."""
    from nuscenes.nuscenes import NuScenes

    nusc = NuScenes("v1.0-mini", str(world), verbose=False)
    assert len(nusc.sample) == SCENES * KEYFRAMES
    lidar = {sd["timestamp"]: sd for sd in nusc.sample_data if sd["channel"] == "LIDAR_TOP"}
    for channel in camera_channels(nusc, None):
        sds = [sd for sd in nusc.sample_data if sd["channel"] == channel]
        sweeps = [sd for sd in sds if not sd["is_key_frame"]]
        assert len(sweeps) == SCENES * (KEYFRAMES - 1) * PER_SAMPLE
        for sd in sweeps:
            assert sd["filename"].startswith(f"sweeps/{channel}/") and (world / sd["filename"]).is_file()
            assert sd["fileformat"] == "jpg" and (sd["width"], sd["height"]) == (160, 90)
            nxt = nusc.get("sample", sd["sample_token"])
            prev = nusc.get("sample", nxt["prev"])
            assert prev["timestamp"] < sd["timestamp"] < nxt["timestamp"]
            assert (world / "synth_truth" / "cameras" / f"{sd['token']}.npz").is_file()
        for sd in sds:   # chains: prev/next in time order, within a scene
            if sd["next"]:
                assert nusc.get("sample_data", sd["next"])["timestamp"] > sd["timestamp"]
    for sd in nusc.sample_data:   # a LiDAR sweep at each camera instant (cameras fire at their keyframe offsets)
        if sd["channel"] == "CAM_BACK_LEFT" and not sd["is_key_frame"]:
            assert min(abs(t - sd["timestamp"]) for t in lidar) < 1000
    for sd in lidar.values():
        assert (world / sd["filename"]).is_file()
        assert (world / "synth_truth" / "points" / f"{sd['token']}.npz").is_file()


def test_synth_keyframes_do_not_depend_on_camera_sweeps(tmp_path):
    """With and without camera sweeps the keyframes' files (images, LiDAR, lidarseg, Occ3D truth) are the
    same bytes; only the tables gain the sweeps' records."""
    from renderocc.synth.writer import write_dataset

    a = write_dataset(tmp_path / "a", scenes=1, samples_per_scene=2, seed=2, image_size=(64, 36),
                      sweeps_per_sample=1, workers=1)
    b = write_dataset(tmp_path / "b", scenes=1, samples_per_scene=2, seed=2, image_size=(64, 36),
                      sweeps_per_sample=1, workers=1, camera_sweeps_per_sample=1)
    files = [p.relative_to(a) for p in a.rglob("*") if p.is_file() and p.parent.name != "v1.0-mini"]
    assert len(files) > 20
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    assert len(list((b / "sweeps" / "CAM_FRONT").iterdir())) == 1


@pytest.mark.parametrize("value", [-1, 6])
def test_synth_camera_sweeps_out_of_range_is_one_line(tmp_path, value):
    res = CliRunner().invoke(main, ["synth", "nuscenes", "--out", str(tmp_path / "s"), "--camera-sweeps-per-sample",
                                    str(value)])
    assert res.exit_code == 2 and "--camera-sweeps-per-sample must be between 0 and 5" in res.output
    assert len(res.output.strip().splitlines()) == 1 and not (tmp_path / "s").exists()


# ------------------------------------------------------------------ labels: devkit and truth

def test_sweep_projection_matches_devkit(store, world, monkeypatch):
    """Each sweep frame's rays are the devkit's `map_pointcloud_to_image` of its LiDAR sample_data into
    its camera sample_data (z-buffered), as for keyframes."""
    assert assert_matches_devkit(store, world, monkeypatch, camera_sweeps=True) > 10000


def test_sweep_depth_matches_rendered_truth_like_keyframes(store, world):
    """Against the world's per-pixel camera depth, sweep frames' labels are as right as keyframes' (the
    LiDAR is not simultaneous with the cameras: ego motion is compensated the same way)."""
    r = StoreReader(store)

    def errors(reader, tokens):
        out = []
        for j in range(len(reader)):
            lb = reader.labels(j)
            for c in range(len(reader.cameras)):
                truth = np.load(world / "synth_truth" / "cameras" / f"{tokens[j][c]}.npz")["depth"]
                m = lb["camera"] == c
                d = truth[np.floor(lb["v"][m]).astype(int), np.floor(lb["u"][m]).astype(int)]
                out.append(np.abs(d - lb["depth"][m]) / lb["depth"][m])
        return np.concatenate(out)

    key = errors(r, _cam_tokens(store, layout.SAMPLES))
    sweep = errors(r.sweep_frames(), _cam_tokens(store, layout.SWEEPS))
    assert len(sweep) > 10000 and np.median(sweep) < 0.01
    assert (sweep < 0.05).mean() > (key < 0.05).mean() - 0.03


# ------------------------------------------------------------------ the store

def test_reader_interface(store):
    r = StoreReader(store)
    n = SCENES * (KEYFRAMES - 1) * PER_SAMPLE
    assert len(r) == SCENES * KEYFRAMES and r.num_sweeps == n
    v = r.sweep_frames()
    assert len(v) == n and v.num_sweeps == 0
    following = [r.sweeps_of(i) for i in range(len(r))]
    assert sorted(j for f in following for j in f) == list(range(n))
    assert following == [[0, 1], [2, 3], [], [4, 5], [6, 7], []]   # the last keyframe of a scene: none
    for attr in ("cameras", "image_size", "image_codec", "grid", "vocabulary", "root"):
        assert getattr(v, attr) == getattr(r, attr)
    assert not (v.has_semantics or v.has_occ_gt or v.has_semantic_masks or v.has_free_beams or v.has_motion_masks)
    assert v.tokens() == [v.sample(j)["sample_token"] for j in range(n)] and v.index_of(v.tokens()[3]) == 3
    for j in range(n):
        s, k = v.sample(j), v.sample(j)["key_sample_index"]
        key, nxt = r.sample(k), r.sample(k + 1)
        assert set(r.sample(0)) | {"key_sample_index", "key_sample_token", "lidar_token", "frame"} == set(s)
        assert s["frame"] == "sweep" and s["adjacent"] == [] and s["sample_index"] == j
        assert j in r.sweeps_of(k) and s["key_sample_token"] == key["sample_token"]
        assert s["scene_name"] == key["scene_name"] and key["timestamp"] < s["timestamp"] < nxt["timestamp"]
        assert v.scene_names()[j] == s["scene_name"] and v.ray_location(j)[0] == layout.shard_name(s["scene_name"])
        for c in s["cameras"].values():   # camera -> sweep ego: through global with the camera's own ego pose
            assert c["K"].shape == (3, 3) and c["cam2ego"].shape == (4, 4) and isinstance(c["timestamp"], int)
            assert abs(c["timestamp"] - s["timestamp"]) < 50_000
        lb = v.labels(j)
        assert {k: a.dtype for k, a in lb.items()} == {k: a.dtype for k, a in r.labels(0).items()}
        assert len(lb["u"]) > 1000 and (lb["label"] == IGNORE).all() and set(np.unique(lb["camera"])) == set(range(6))
        assert v.images(j).shape == r.images(0).shape and v.images(j).dtype == np.uint8
        assert isinstance(v.images_digest(j), str)
        assert v.occ_gt(j) is None and v.motion_mask(j) is None and v.semantic_mask(j) is None
        assert v.free_beams(j) is None
    with pytest.raises(IndexError):
        v.sample(n)
    with pytest.raises(IndexError):
        r.sweeps_of(len(r))
    again = pickle.loads(pickle.dumps(v))   # spawned DataLoader workers
    np.testing.assert_array_equal(again.labels(5)["depth"], v.labels(5)["depth"])
    assert pickle.loads(pickle.dumps(r)).sweeps_of(3) == [4, 5]


def test_sweep_geometry_is_the_devkits(store, world):
    """ego_pose = the LiDAR sample_data's ego; cam2ego = inv(that) @ camera ego @ camera calibration;
    K for the stored size; images = the sweep JPEGs through the keyframes' resize."""
    nusc = load_nuscenes(str(world), "v1.0-mini")
    v = StoreReader(store).sweep_frames()
    tokens = _cam_tokens(store, layout.SWEEPS)
    for j in (0, 5):
        s = v.sample(j)
        lsd = nusc.get("sample_data", s["lidar_token"])
        assert lsd["timestamp"] == s["timestamp"] and lsd["channel"] == "LIDAR_TOP"
        ego = pose(nusc.get("ego_pose", lsd["ego_pose_token"]))
        np.testing.assert_allclose(s["ego_pose"], ego, atol=1e-12)
        np.testing.assert_allclose(s["lidar2ego"], pose(nusc.get("calibrated_sensor", lsd["calibrated_sensor_token"])))
        images = v.images(j)
        for c, name in enumerate(v.cameras):
            sd = nusc.get("sample_data", tokens[j][c])
            assert sd["channel"] == name and not sd["is_key_frame"]
            assert sd["timestamp"] == s["cameras"][name]["timestamp"]
            c2g = pose(nusc.get("ego_pose", sd["ego_pose_token"])) @ pose(
                nusc.get("calibrated_sensor", sd["calibrated_sensor_token"]))
            np.testing.assert_allclose(s["cameras"][name]["cam2ego"], np.linalg.inv(ego) @ c2g, atol=1e-9)
            K = np.array(nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])["camera_intrinsic"])
            np.testing.assert_allclose(s["cameras"][name]["K_orig"], K)
            np.testing.assert_allclose(s["cameras"][name]["K"], imgs.fit((160, 90), v.image_size).K(K))
            want = imgs.load_resized(str(world / sd["filename"]), (160, 90), v.image_size).astype(int)
            own = np.abs(images[c].astype(int) - want).mean()   # lossy jpeg in the store
            other = np.abs(images[(c + 1) % len(v.cameras)].astype(int) - want).mean()
            assert own < 8 and own < other / 3, (own, other)


def test_keyframe_part_unchanged_by_camera_sweeps(store, plain_store):
    """sample indices, samples.parquet, rays, free beams, images and Occ3D GT: the same bytes."""
    for rel in ("samples.parquet", *(p.relative_to(plain_store).as_posix() for p in plain_store.rglob("*")
                                     if p.is_file() and p.parts[len(plain_store.parts)] in
                                     (layout.RAYS_DIR, layout.FREE_BEAMS_DIR, layout.IMAGES, layout.OCC_GT))):
        assert (plain_store / rel).read_bytes() == (store / rel).read_bytes(), rel
    a, b = StoreReader(plain_store), StoreReader(store)
    assert len(a) == len(b) and a.tokens() == b.tokens() and a.num_sweeps == 0 and b.num_sweeps > 0
    m = json.loads((store / layout.MANIFEST).read_text())
    info = m[layout.CAMERA_SWEEPS]
    assert info["per_sample"] == PER_SAMPLE and info["count"] == b.num_sweeps
    assert info["num_rays"] == sum(len(b.sweep_frames().labels(j)["u"]) for j in range(b.num_sweeps))
    for sh in m["shards"]:
        assert sh["num_sweeps"] == (KEYFRAMES - 1) * PER_SAMPLE and len(sh["sweep_rays_sha256"]) == 64
        pf = pq.ParquetFile(store / sh["sweep_rays_path"])
        assert pf.num_row_groups == sh["num_sweeps"]
        assert pf.schema_arrow.remove_metadata().equals(layout.RAY_SCHEMA.remove_metadata())
    assert json.loads((plain_store / layout.MANIFEST).read_text())[layout.CAMERA_SWEEPS] is None


def test_store_without_sweeps_reads_as_none(plain_store, tmp_path):
    r = StoreReader(plain_store)
    assert r.num_sweeps == 0 and r.sweeps_of(1) == [] and len(r.sweep_frames()) == 0
    old = tmp_path / "v3"   # a version-3 store: no camera_sweeps key at all
    shutil.copytree(plain_store, old)
    m = json.loads((old / layout.MANIFEST).read_text())
    m.pop(layout.CAMERA_SWEEPS)
    m["schema_version"] = 3
    (old / layout.MANIFEST).write_text(json.dumps(m))
    r = StoreReader(old)
    assert r.num_sweeps == 0 and r.sweeps_of(0) == [] and len(r.sweep_frames()) == 0
    assert validate(str(old)) == []
    res = CliRunner().invoke(main, ["store", "info", str(old)])
    assert res.exit_code == 0 and "cam sweeps   no (schema v3)" in res.output


def test_info_validate_and_qa_count_sweeps(store, tmp_path):
    runner = CliRunner()
    res = runner.invoke(main, ["store", "info", str(store)])
    n = SCENES * (KEYFRAMES - 1) * PER_SAMPLE
    assert res.exit_code == 0 and f"cam sweeps   {n} frames (up to {PER_SAMPLE} per keyframe interval" in res.output
    assert validate(str(store)) == [] and validate(str(store), deep=True) == []
    res = runner.invoke(main, ["qa", "--store", str(store), "--out", str(tmp_path / "qa"), "--quiet", "--no-coverage"])
    assert res.exit_code == 0, res.output
    assert f"camera sweeps: {n} frames" in res.output
    qa = json.loads((tmp_path / "qa" / "qa.json").read_text())
    assert qa["summary"]["sweep_frames"] == n and qa["camera_sweeps"]["frames"] == n
    assert qa["summary"]["sweep_labelled_pixels_per_image"] > 100


def test_validate_names_damaged_sweep_files(store, tmp_path):
    d = tmp_path / "d"
    shutil.copytree(store, d)
    rays = next((d / layout.SWEEP_RAYS_DIR).glob("*.parquet"))
    t = pq.read_table(rays)
    pq.write_table(t.slice(0, len(t) - 1), rays)
    assert any(f"{layout.SWEEP_RAYS_DIR}/{rays.name} checksum mismatch" in p for p in validate(str(d)))
    v = StoreReader(d).sweep_frames()
    with pytest.raises(UserError, match="differs from the manifest"):
        v.labels(next(j for j in range(len(v)) if v.ray_location(j)[0] == rays.stem))
    shutil.rmtree(d)
    shutil.copytree(store, d)
    chunk = next(p for p in (d / layout.SWEEP_IMAGES / "c" / "1").rglob("*") if p.is_file())
    chunk.unlink()
    assert any(p.startswith(f"{layout.SWEEP_IMAGES}: chunk of sample 1 missing") for p in validate(str(d)))
    with pytest.raises(UserError, match="chunk of sample 1 missing"):
        StoreReader(d).sweep_frames().images(1)
    (d / layout.SWEEPS).write_bytes(b"not parquet")
    res = CliRunner().invoke(main, ["store", "validate", str(d)])
    assert res.exit_code == 2 and "sweeps.parquet" in res.output and "Traceback" not in res.output


def test_resume_redoes_a_shard_whose_sweep_rays_were_truncated(world, store, tmp_path):
    """A kill after both shards were written but before the seal, then a truncated sweep rays file: the
    rerun redoes that shard (its record no longer matches) and seals a store equal to an unbroken run's."""
    out = tmp_path / "s"
    prep(world, out, camera_sweeps=PER_SAMPLE)
    (out / layout.MANIFEST).unlink()
    (out / layout.SAMPLES).unlink()
    (out / layout.SWEEPS).unlink()
    rays = sorted((out / layout.SWEEP_RAYS_DIR).glob("*.parquet"))[1]
    rays.write_bytes(rays.read_bytes()[:100])
    res = prep(world, out, camera_sweeps=PER_SAMPLE)
    assert res["complete"] and res["samples"] == KEYFRAMES and res["sweeps"] == (KEYFRAMES - 1) * PER_SAMPLE
    assert validate(str(out)) == []
    assert rays.read_bytes() == (store / layout.SWEEP_RAYS_DIR / rays.name).read_bytes()
    with pytest.raises(UserError, match="other options"):   # another --camera-sweeps: another plan
        prep(world, out, camera_sweeps=1)


def test_prep_job_array_with_sweeps(world, store, tmp_path):
    """Two jobs, one scene each: the job that finishes last seals the store, sweeps included."""
    out = tmp_path / "s"
    first = prep(world, out, camera_sweeps=PER_SAMPLE, shard_index=0, num_shards=2)
    assert not first["complete"] and not (out / layout.MANIFEST).exists() and not (out / layout.SWEEPS).exists()
    assert prep(world, out, camera_sweeps=PER_SAMPLE, shard_index=1, num_shards=2)["complete"]
    assert validate(str(out)) == []
    rays = [f"{layout.SWEEP_RAYS_DIR}/{p.name}" for p in (store / layout.SWEEP_RAYS_DIR).iterdir()]
    for rel in (layout.SWEEPS, *rays):
        assert (out / rel).read_bytes() == (store / rel).read_bytes(), rel


# ------------------------------------------------------------------ motion masks

def test_motion_masks_flag_sweep_rays_on_moving_objects(store, world, tmp_path):
    """Boxes interpolated between the keyframe annotations (the devkit's get_boxes) flag the sweep rays
    on moving objects as the synthetic truth says, and the dense sweep masks cover them."""
    s = tmp_path / "m"
    shutil.copytree(store, s)
    motion_run(MotionOptions(store=str(s), progress=False))
    r = StoreReader(s)
    v = r.sweep_frames()
    assert v.has_motion_masks and r.manifest[layout.CAMERA_SWEEPS]["motion_masks"] is True
    nusc = load_nuscenes(str(world), "v1.0-mini")
    annotated = np.array([i.get("annotated", True) for i in
                          json.loads((world / "synth_truth" / "instances.json").read_text())] + [True])
    tp = fp = fn = covered = 0
    for j in range(len(v)):
        sample, lb = v.sample(j), v.labels(j)
        assert lb["dynamic"].dtype == bool and lb["instance"].dtype == np.int32
        sd = nusc.get("sample_data", sample["lidar_token"])
        pts = np.fromfile(world / sd["filename"], np.float32).reshape(-1, 5)[:, :3].astype(np.float64)
        T = pose(nusc.get("ego_pose", sd["ego_pose_token"])) @ pose(nusc.get("calibrated_sensor",
                                                                             sd["calibrated_sensor_token"]))
        dist, k = cKDTree(pts @ T[:3, :3].T + T[:3, 3]).query(backproject(lb, sample, v.cameras))
        assert dist.max() < 1e-2
        truth = np.load(world / "synth_truth" / "points" / f"{sd['token']}.npz")
        moving, known = truth["moving"].astype(bool)[k], annotated[truth["instance"][k]]
        pred, moving = lb["dynamic"][known], moving[known]
        tp, fp, fn = tp + int((pred & moving).sum()), fp + int((pred & ~moving).sum()), fn + int((~pred & moving).sum())
        covered += dynamic_labels_in_mask(lb, sample, v.motion_mask(j), v.cameras, v.image_size)[0]
    assert tp > 500, "the world must hold moving objects"
    assert tp / (tp + fp) >= 0.99 and tp / (tp + fn) >= 0.97, (tp, fp, fn)
    assert covered / tp > 0.95
    assert validate(str(s)) == []


def test_motion_masks_killed_between_a_shards_two_ray_files(store, tmp_path, monkeypatch):
    """A kill after the keyframe rays of a shard were replaced but before its sweep rays were: every
    checksum still holds (the manifest knew both coming ones), the store reads as before, a rerun finishes."""
    from renderocc.store import writer

    s = tmp_path / "m"
    shutil.copytree(store, s)
    real = writer.write_rays_data

    def killed(root, shard, data, frames=layout.KEYFRAMES):
        if frames is layout.SWEEP_FRAMES:
            raise KeyboardInterrupt("killed between the two files")
        real(root, shard, data, frames)

    monkeypatch.setattr(writer, "write_rays_data", killed)
    with pytest.raises(KeyboardInterrupt):
        motion_run(MotionOptions(store=str(s), progress=False))
    monkeypatch.undo()
    r = StoreReader(s)
    v = r.sweep_frames()
    assert not r.has_motion_masks and not v.has_motion_masks and "dynamic" not in v.labels(0)
    assert len(r.labels(0)["u"]) and not [p for p in validate(str(s), data=False) if "rays" in p]
    motion_run(MotionOptions(store=str(s), progress=False))
    v = StoreReader(s).sweep_frames()
    assert v.has_motion_masks and v.labels(0)["dynamic"].dtype == bool and validate(str(s)) == []


# ------------------------------------------------------------------ options and faults

@pytest.mark.parametrize("value", ["-1", "abc", str(csweeps.MAX_PER_SAMPLE + 1)])
def test_bad_camera_sweeps_value_is_one_line(world, tmp_path, value):
    res = CliRunner().invoke(main, ["prep", "nuscenes", "--dataroot", str(world), "--out", str(tmp_path / "s"),
                                    "--camera-sweeps", value])
    errors = [line for line in res.output.splitlines() if line.startswith("Error")]
    assert res.exit_code == 2 and len(errors) == 1 and "--camera-sweeps" in errors[0], res.output
    assert not (tmp_path / "s").exists()
    with pytest.raises(UserError, match="--camera-sweeps must be an integer"):
        prep(world, tmp_path / "api", camera_sweeps=-1)


def test_missing_sweep_image_is_one_line_and_nothing_is_written(world, tmp_path):
    d = tmp_path / "d"
    shutil.copytree(world, d)
    victim = sorted((d / "sweeps" / "CAM_BACK").iterdir())[1]
    victim.unlink()
    res = CliRunner().invoke(main, ["prep", "nuscenes", "--dataroot", str(d), "--out", str(tmp_path / "s"),
                                    "--image-size", "96x54", "--camera-sweeps", "2", "--no-progress"])
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    assert res.output.count("Error") == 1 and f"image missing: {victim}" in res.output
    assert "bad camera sweep" in res.output and not (tmp_path / "s").exists()
    res = CliRunner().invoke(main, ["prep", "nuscenes", "--dataroot", str(d), "--out", str(tmp_path / "k"),
                                    "--image-size", "96x54", "--camera-sweeps", "2", "--no-progress",
                                    "--on-bad-sample", "skip"])
    assert res.exit_code == 0, res.output
    info = json.loads((tmp_path / "k" / layout.MANIFEST).read_text())[layout.CAMERA_SWEEPS]
    assert info["count"] == SCENES * (KEYFRAMES - 1) * PER_SAMPLE - 1 and len(info["skipped"]) == 1
    assert "image missing" in info["skipped"][0]["reason"] and validate(str(tmp_path / "k")) == []


# ------------------------------------------------------------------ real nuScenes records

@needs_real
def test_real_fixture_sweep_selection():
    """On real timestamps (cameras and LiDAR not simultaneous, irregular sweep spacing): each frame's
    cameras lie within the gap of the reference camera, its LiDAR is the nearest LIDAR_TOP sample_data
    to the mean camera time, and its geometry composes through global like a keyframe's."""
    nusc = load_nuscenes(str(REAL), "v1.0-mini")
    cams = camera_channels(nusc, None)
    tasks = build_tasks(nusc, cams, max_samples=6)
    frames = csweeps.build_sweep_tasks(nusc, cams, tasks, 2)
    assert 10 <= len(frames) <= 12 and [f.index for f in frames] == list(range(len(frames)))
    lidar = [sd for sd in nusc.sample_data if sd["channel"] == "LIDAR_TOP"]
    for f in frames:
        key, ref = tasks[f.key_index], next(c for c in f.cameras if c.name == "CAM_FRONT")
        assert f.token == ref.token and not nusc.get("sample_data", ref.token)["is_key_frame"]
        assert all(abs(c.timestamp - ref.timestamp) <= csweeps.MAX_CAMERA_GAP_US for c in f.cameras)
        t = np.mean([c.timestamp for c in f.cameras])
        assert f.frames[0].token == min(lidar, key=lambda sd: abs(sd["timestamp"] - t))["token"]
        assert key.timestamp < f.timestamp and f.frames[0].lidarseg_path is None
        for c in f.cameras:
            np.testing.assert_allclose(c.cam2ego, np.linalg.inv(f.ego_pose) @ c.cam2global, atol=1e-9)
            assert "/sweeps/" in c.path


@needs_real
def test_real_fixture_without_sweep_files_is_one_line(tmp_path):
    """The extract keeps the sweeps' records but not their files: named before anything is written."""
    res = CliRunner().invoke(main, ["prep", "nuscenes", "--dataroot", str(REAL), "--out", str(tmp_path / "s"),
                                    "--max-samples", "2", "--camera-sweeps", "1", "--no-progress"])
    assert res.exit_code == 2 and res.output.count("Error") == 1 and "Traceback" not in res.output
    assert "image missing" in res.output and "/sweeps/CAM_" in res.output and not (tmp_path / "s").exists()


@needs_real
@pytest.mark.skipif(not (REAL / "sweeps" / "CAM_FRONT").is_dir() or not (REAL / "sweeps" / "LIDAR_TOP").is_dir(),
                    reason="the real fixture holds no camera and LiDAR sweep files")
def test_real_fixture_sweep_projection_matches_devkit(tmp_path, monkeypatch):
    out = tmp_path / "s"
    prep(REAL, out, max_samples=3, camera_sweeps=2, image_size=(352, 128))
    assert assert_matches_devkit(out, REAL, monkeypatch, camera_sweeps=True) > 10000
