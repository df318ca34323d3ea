"""prep motion-masks: moving boxes from tracks, `dynamic` label columns and dense masks."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from motion_checks import dynamic_labels_in_mask
from scipy.spatial import cKDTree

from renderocc.cli import main
from renderocc.prep.motion import moving_boxes, track_velocity
from renderocc.prep.motion_pipeline import MotionOptions, backproject, run
from renderocc.prep.nuscenes import load_nuscenes, pose
from renderocc.store.reader import StoreReader


def _prep(dataroot, out, *extra) -> None:
    res = CliRunner().invoke(main, ["prep", "nuscenes", "--dataroot", str(dataroot), "--out", str(out),
                                    "--image-size", "112x64", "--no-progress", *extra])
    assert res.exit_code == 0, res.output


@pytest.fixture(scope="module")
def synth_store(synth_dataset, tmp_path_factory):
    store = tmp_path_factory.mktemp("motion") / "store"
    _prep(synth_dataset, store)
    run(MotionOptions(store=str(store), progress=False))
    return store


def _truth_per_label(reader: StoreReader, i: int, dataroot, nusc) -> tuple[np.ndarray, np.ndarray]:
    """(moving, instance) from the synthetic world's per-point truth for each stored label of sample i."""
    s = reader.sample(i)
    sd = nusc.get("sample_data", nusc.get("sample", s["sample_token"])["data"]["LIDAR_TOP"])
    pts = np.fromfile(dataroot / sd["filename"], np.float32).reshape(-1, 5)[:, :3].astype(np.float64)
    T = pose(nusc.get("ego_pose", sd["ego_pose_token"])) @ pose(nusc.get("calibrated_sensor",
                                                                         sd["calibrated_sensor_token"]))
    dist, k = cKDTree(pts @ T[:3, :3].T + T[:3, 3]).query(backproject(reader.labels(i), s, reader.cameras))
    assert dist.max() < 1e-2, "every label must back-project onto its LiDAR point"
    truth = np.load(dataroot / "synth_truth" / "points" / f"{sd['token']}.npz")
    return truth["moving"].astype(bool)[k], truth["instance"][k]


def test_dynamic_matches_synthetic_truth(synth_store, synth_dataset):
    reader = StoreReader(synth_store)
    nusc = load_nuscenes(str(synth_dataset), "v1.0-mini")
    instances = json.loads((synth_dataset / "synth_truth" / "instances.json").read_text())
    annotated = np.array([inst.get("annotated", True) for inst in instances] + [True])
    tp = fp = fn = 0
    for i in range(len(reader)):
        moving, inst = _truth_per_label(reader, i, synth_dataset, nusc)
        # Objects the world moves but never annotates cannot be known from tracks: leave them out.
        known = annotated[inst]
        pred = reader.labels(i)["dynamic"][known]
        moving = moving[known]
        tp += int((pred & moving).sum())
        fp += int((pred & ~moving).sum())
        fn += int((~pred & moving).sum())
    assert tp > 100, "the synthetic fixture must contain moving objects"
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    assert precision >= 0.99, (precision, tp, fp)
    assert recall >= 0.99, (recall, tp, fn)


def test_dense_masks_cover_dynamic_labels(synth_store):
    reader = StoreReader(synth_store)
    covered = total = 0
    for i in range(len(reader)):
        c, n = dynamic_labels_in_mask(reader.labels(i), reader.sample(i), reader.motion_mask(i), reader.cameras,
                                      reader.image_size)
        covered, total = covered + c, total + n
    assert total > 0 and covered / total > 0.97


def test_rerun_is_idempotent_and_recorded(synth_store):
    before = StoreReader(synth_store)
    first = [before.labels(i) for i in range(len(before))]
    info = {k: v for k, v in before.manifest["motion_masks"].items() if k != "created"}
    run(MotionOptions(store=str(synth_store), progress=False))
    after = StoreReader(synth_store)
    for i, lab in enumerate(first):
        again = after.labels(i)
        for col in ("u", "depth", "label", "dynamic", "instance"):
            np.testing.assert_array_equal(lab[col], again[col])
    assert {k: v for k, v in after.manifest["motion_masks"].items() if k != "created"} == info
    assert info["speed_threshold"] == 0.5 and info["margin"] == 0.2 and info["version"] == 1
    assert after.manifest["supervision"]["motion_masks"] is True
    res = CliRunner().invoke(main, ["store", "validate", str(synth_store)])
    assert res.exit_code == 0, res.output


def test_track_velocity_matches_devkit(real_fixture):
    nusc = load_nuscenes(str(real_fixture), "v1.0-mini")
    checked = 0
    for ann in nusc.sample_annotation[:400]:
        expected = nusc.box_velocity(ann["token"])
        if np.all(np.isfinite(expected)):
            np.testing.assert_allclose(track_velocity(nusc, ann), expected, atol=1e-9)
            checked += 1
    assert checked > 100


def test_real_fixture_walkers_move_parked_cars_do_not(real_fixture, tmp_path):
    nusc = load_nuscenes(str(real_fixture), "v1.0-mini")
    index = {rec["token"]: k for k, rec in enumerate(nusc.instance)}
    moving_categories, parked, parked_moving = [], 0, 0
    for sample in nusc.sample[:10]:
        boxes, _ = moving_boxes(nusc, sample["token"], index, speed_threshold=0.5)
        moving_categories += [b.category for b in boxes]
        moving_instances = {b.instance_index for b in boxes}
        for a in sample["anns"]:
            ann = nusc.get("sample_annotation", a)
            names = {nusc.get("attribute", t)["name"] for t in ann["attribute_tokens"]}
            if "vehicle.parked" in names:
                parked += 1
                parked_moving += index[ann["instance_token"]] in moving_instances
    assert any(c.startswith("human.pedestrian") for c in moving_categories)
    # Real parked boxes jitter by a few decimetres between keyframes; a few exceed 0.5 m/s.
    assert parked > 100 and parked_moving / parked < 0.02
    store = tmp_path / "real"
    _prep(real_fixture, store, "--max-samples", "3")
    res = CliRunner().invoke(main, ["prep", "motion-masks", "--store", str(store), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "share of labels dynamic per camera" in res.output
    reader = StoreReader(store)
    assert reader.has_motion_masks and reader.labels(0)["dynamic"].dtype == bool


def test_clear_errors(synth_store, tmp_path):
    runner = CliRunner()
    res = runner.invoke(main, ["prep", "motion-masks", "--store", str(tmp_path / "nope")])
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1, res.output
    assert "not a complete ray store" in res.output and str(tmp_path / "nope") in res.output
    old = tmp_path / "old"
    shutil.copytree(synth_store, old)
    manifest = json.loads((old / "manifest.json").read_text())
    manifest["schema_version"] = 0
    (old / "manifest.json").write_text(json.dumps(manifest))
    res = runner.invoke(main, ["prep", "motion-masks", "--store", str(old)])
    assert res.exit_code == 2 and "schema version" in res.output and len(res.output.strip().splitlines()) == 1
    res = runner.invoke(main, ["prep", "motion-masks", "--store", str(synth_store), "--dataroot", str(tmp_path)])
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1, res.output
    assert f"version folder not found: {tmp_path / 'v1.0-mini'}" in res.output  # names what is missing


@pytest.mark.slow
def test_a_run_killed_before_its_commit_leaves_a_store_that_reads_and_reruns(synth_dataset, tmp_path, monkeypatch):
    """Each rewritten rays shard's checksum is recorded at once: a kill before the final commit leaves
    every checksum true, so readers (which verify them) read it as a store without motion masks, and
    the re-run completes it."""
    from renderocc.store import writer
    from renderocc.store.validate import validate

    store = tmp_path / "store"
    _prep(synth_dataset, store)

    def killed(*a, **k):
        raise KeyboardInterrupt("killed before the commit")

    monkeypatch.setattr(writer, "commit_motion_masks", killed)
    with pytest.raises(KeyboardInterrupt):
        run(MotionOptions(store=str(store), progress=False))
    monkeypatch.undo()
    reader = StoreReader(store)
    assert not reader.has_motion_masks and "dynamic" not in reader.labels(0)  # the old state, readable
    assert not [p for p in validate(str(store), data=False) if "rays" in p]   # rays checksums hold
    run(MotionOptions(store=str(store), progress=False))
    reader = StoreReader(store)
    assert reader.has_motion_masks and reader.labels(0)["dynamic"].dtype == bool
    assert validate(str(store), data=False) == []
