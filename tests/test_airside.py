"""`renderocc synth airside`: loads in the real devkit with lidarseg, its own class map reaches the
store, LiDAR points lie in GT voxels of their own class, GT masks agree with the projected LiDAR
semantics, aircraft have a narrow-body's size, and night images are darker."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from pyquaternion import Quaternion

from renderocc.classes import IGNORE, load_class_map
from renderocc.cli import main
from renderocc.prep.nuscenes import load_nuscenes
from renderocc.prep.pipeline import PrepOptions, run
from renderocc.store.reader import StoreReader
from renderocc.synth.writer import write_dataset

SIZE = (320, 180)


@pytest.fixture(scope="module")
def apron(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("airside") / "apron"
    return write_dataset(out, scenes=1, samples_per_scene=2, seed=3, image_size=SIZE, sweeps_per_sample=1,
                         workers=1, kind="airside")


@pytest.fixture(scope="module")
def apron_store(apron, tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("airside_store") / "store")
    run(PrepOptions(dataroot=str(apron), version="v1.0-mini", out=out, image_size=(160, 90), progress=False),
        log=lambda m: None)
    return out


def test_devkit_loads_it_with_lidarseg(apron):
    from nuscenes.nuscenes import NuScenes

    vocab = load_class_map(apron / "classes.toml")
    assert vocab.name == "airside-apron" and "aircraft" in vocab.classes and vocab.free == len(vocab.classes)
    nusc = load_nuscenes(str(apron), "v1.0-mini", vocab)  # = NuScenes(..., colormap=...) for its categories
    assert "lidarseg" in nusc.table_names and len(nusc.lidarseg) == 2
    names = {c["name"] for c in nusc.category}
    assert set(vocab.lidarseg) <= names
    assert isinstance(NuScenes("v1.0-mini", str(apron), verbose=False, colormap=nusc.colormap), NuScenes)
    cats = {nusc.get("category", nusc.get("instance", a["instance_token"])["category_token"])["name"]
            for a in nusc.sample_annotation}
    assert {"airside.aircraft", "airside.gse.tug", "airside.gse.baggage_cart", "airside.person",
            "airside.cone"} <= cats


def test_lidar_points_lie_in_gt_voxels_of_their_class(apron):
    vocab = load_class_map(apron / "classes.toml")
    nusc = load_nuscenes(str(apron), "v1.0-mini", vocab)
    lut = vocab.lidarseg_table(nusc.category)
    same = total = 0
    for s in nusc.sample:
        sd = nusc.get("sample_data", s["data"]["LIDAR_TOP"])
        pts = np.fromfile(apron / sd["filename"], np.float32).reshape(-1, 5)
        cls = lut[np.fromfile(apron / nusc.get("lidarseg", sd["token"])["filename"], np.uint8)]
        cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
        ego = pts[:, :3] @ Quaternion(cs["rotation"]).rotation_matrix.T + np.array(cs["translation"])
        scene = nusc.get("scene", s["scene_token"])["name"]
        sem = np.load(apron / "gts" / scene / s["token"] / "labels.npz")["semantics"]
        idx = np.floor((ego - [-40.0, -40.0, -1.0]) / 0.4).astype(np.int64)
        ok = np.all((idx >= 0) & (idx < [200, 200, 16]), 1) & (cls != IGNORE)
        same += int((sem[tuple(idx[ok].T)] == cls[ok]).sum())
        total += int(ok.sum())
        assert sem.max() <= vocab.free and {0, vocab.classes.index("apron")} <= set(np.unique(sem).tolist())
    assert total > 10000 and same / total >= 0.95, same / total


def test_prep_takes_its_class_map_and_masks_agree_with_lidar_semantics(apron, apron_store):
    r = StoreReader(apron_store)
    assert r.vocabulary.name == "airside-apron" and r.has_occ_gt
    nusc = load_nuscenes(str(apron), "v1.0-mini", r.vocabulary)
    agree = n = 0
    for i in range(len(r)):
        s, lab = r.sample(i), r.labels(i)
        for c, cam in enumerate(r.cameras):
            sel = (lab["camera"] == c) & (lab["label"] != IGNORE)
            fn = nusc.get("sample_data", nusc.get("sample", s["sample_token"])["data"][cam])["filename"]
            mask = cv2.imread(str(apron / "masks" / Path(fn).with_suffix(".png")), cv2.IMREAD_UNCHANGED)
            assert mask.shape == (SIZE[1], SIZE[0]) and mask.dtype == np.uint8
            u = np.clip(np.rint(lab["u"][sel]).astype(np.int64), 0, SIZE[0] - 1)
            v = np.clip(np.rint(lab["v"][sel]).astype(np.int64), 0, SIZE[1] - 1)
            agree += int((mask[v, u] == lab["label"][sel]).sum())
            n += int(sel.sum())
    assert n > 5000 and agree / n >= 0.95, agree / n


def test_aircraft_are_narrow_body_sized_and_some_things_move(apron):
    anns = json.loads((apron / "v1.0-mini" / "sample_annotation.json").read_text())
    inst = {r["token"]: r for r in json.loads((apron / "v1.0-mini" / "instance.json").read_text())}
    cats = {r["token"]: r["name"] for r in json.loads((apron / "v1.0-mini" / "category.json").read_text())}
    planes = [a for a in anns if cats[inst[a["instance_token"]]["category_token"]] == "airside.aircraft"]
    assert planes
    for a in planes:
        w, length, h = a["size"]
        assert 35.5 < w < 36.5 and 37.5 < length < 38.2 and 11.5 < h < 12.2
    truth = json.loads((apron / "synth_truth" / "instances.json").read_text())
    moving = {t["category"] for t in truth if t["moving"] and t["annotated"]}
    assert "airside.person" in moving and "airside.gse.tug" in moving


def test_night_is_darker_and_cli_writes_it(tmp_path):
    res = CliRunner().invoke(main, ["synth", "airside", "--out", str(tmp_path / "night"), "--scenes", "1",
                                    "--samples-per-scene", "1", "--seed", "3", "--image-size", "160x90",
                                    "--sweeps-per-sample", "0", "--workers", "1", "--night"])
    assert res.exit_code == 0, res.output
    assert "night" in res.output and (tmp_path / "night" / "classes.toml").is_file()
    day = write_dataset(tmp_path / "day", 1, 1, 3, image_size=(160, 90), sweeps_per_sample=0, workers=1,
                        kind="airside")
    luma = {k: np.mean([cv2.imread(str(p)).mean() for p in (root / "samples" / "CAM_FRONT").iterdir()])
            for k, root in (("night", tmp_path / "night"), ("day", day))}
    assert luma["night"] < 0.5 * luma["day"], luma
    res = CliRunner().invoke(main, ["synth", "airside", "--out", str(tmp_path / "night"), "--scenes", "1"])
    assert res.exit_code == 2 and "not empty" in res.output


# -- prep masks: dense 2D masks into a store ----------------------------------------------------
def _copy_store(src: str, dst: Path) -> str:
    import shutil

    shutil.copytree(src, dst)
    return str(dst)


def test_prep_masks_imports_the_written_masks_exactly(apron, apron_store, tmp_path):
    store = _copy_store(apron_store, tmp_path / "store")
    res = CliRunner().invoke(main, ["prep", "masks", "--store", store, "--masks", str(apron / "masks"),
                                    "--no-progress"])
    assert res.exit_code == 0, res.output
    r = StoreReader(store)
    assert r.has_semantic_masks and r.manifest["supervision"]["semantic_source"] == "both"
    nusc = load_nuscenes(str(apron), "v1.0-mini", r.vocabulary)
    for i in range(len(r)):
        stored = r.semantic_mask(i)
        assert stored.shape == (len(r.cameras), 90, 160)
        for c, cam in enumerate(r.cameras):
            fn = nusc.get("sample_data", nusc.get("sample", r.sample(i)["sample_token"])["data"][cam])["filename"]
            written = cv2.imread(str(apron / "masks" / Path(fn).with_suffix(".png")), cv2.IMREAD_UNCHANGED)
            assert np.array_equal(stored[c], written[::2, ::2])  # nearest at scale 1/2: every other pixel
    res = CliRunner().invoke(main, ["store", "validate", store])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(main, ["store", "info", store])
    assert "classes      airside-apron: 13 + free" in res.output and "2d masks     yes (12 images" in res.output


@pytest.mark.parametrize("damage, message", [
    ("delete", "mask missing: "),
    ("size", "is 100x50, its image is 320x180"),
    ("class", "holds class 40, outside the class map (0..12, 255 = unlabelled)"),
    ("rgb", "is not a single-channel 8-bit image"),
])
def test_bad_masks_are_one_line_errors_and_leave_the_store_as_it_was(apron, apron_store, tmp_path, damage, message):
    import shutil

    store = _copy_store(apron_store, tmp_path / "store")
    masks = tmp_path / "masks"
    shutil.copytree(apron / "masks", masks)
    res = CliRunner().invoke(main, ["prep", "masks", "--store", store, "--masks", str(masks), "--no-progress"])
    assert res.exit_code == 0, res.output
    victim = sorted((masks / "samples" / "CAM_BACK").iterdir())[-1]
    if damage == "delete":
        victim.unlink()
    elif damage == "size":
        cv2.imwrite(str(victim), np.zeros((50, 100), np.uint8))
    elif damage == "class":
        m = cv2.imread(str(victim), cv2.IMREAD_UNCHANGED)
        m[10, 10] = 40
        cv2.imwrite(str(victim), m)
    else:
        cv2.imwrite(str(victim), np.zeros((180, 320, 3), np.uint8))
    res = CliRunner().invoke(main, ["prep", "masks", "--store", store, "--masks", str(masks), "--no-progress"])
    assert res.exit_code == 2 and message in res.output and victim.name in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1
    r = StoreReader(store)
    assert r.has_semantic_masks and r.semantic_mask(0).shape == (6, 90, 160)  # the previous import, intact
    assert CliRunner().invoke(main, ["store", "validate", store]).exit_code == 0


def test_class_map_option_overrides_the_dataroots(apron, tmp_path):
    cmap = tmp_path / "two.toml"
    things = [f'"{n}"' for n in ("airside.aircraft", "airside.gse.tug", "airside.person")]
    cmap.write_text('format = "renderocc-class-map"\nversion = 1\nname = "two"\n[free]\nname = "free"\n'
                    'color = [255, 255, 255]\n[[class]]\nname = "ground"\ncolor = [0, 0, 0]\n'
                    'lidarseg = ["airside.apron", "airside.marking"]\n[[class]]\nname = "thing"\n'
                    f'color = [9, 9, 9]\nlidarseg = [{", ".join(things)}]\n')
    (tmp_path / "no-gt").mkdir()
    out = str(tmp_path / "store")
    res = CliRunner().invoke(main, ["prep", "nuscenes", "--dataroot", str(apron), "--out", out, "--class-map",
                                    str(cmap), "--occ-gt", str(tmp_path / "no-gt"), "--image-size", "96x54",
                                    "--max-samples", "1", "--no-progress"])
    assert res.exit_code == 0, res.output
    r = StoreReader(out)
    assert r.vocabulary.name == "two" and set(np.unique(r.labels(0)["label"]).tolist()) == {0, 1, 255}
