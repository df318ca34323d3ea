"""Depth-label QA by condition and surface class (renderocc/qa/depth_labels.py) on a real airside
store: a day scene and a night+wet scene from `synth airside`, prepped, with its GT masks imported."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from renderocc import ops as facade
from renderocc.cli import main
from renderocc.prep.masks import MaskOptions
from renderocc.prep.masks import run as import_masks
from renderocc.prep.pipeline import PrepOptions, run
from renderocc.qa import depth_labels as dl
from renderocc.qa.report import QAOptions, collect
from renderocc.store.reader import StoreReader
from renderocc.synth.writer import write_dataset

FAST = QAOptions(coverage=False)


@pytest.fixture(scope="module")
def apron(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("apron_conditions") / "apron"
    return write_dataset(out, scenes=2, samples_per_scene=1, seed=3, image_size=(320, 180), sweeps_per_sample=0,
                         workers=1, kind="airside", conditions=[(False, False), (True, True)])


@pytest.fixture(scope="module")
def store(apron, tmp_path_factory) -> str:
    """Prepped, without masks (read-only; copy before importing masks)."""
    out = str(tmp_path_factory.mktemp("apron_store") / "store")
    run(PrepOptions(dataroot=str(apron), version="v1.0-mini", out=out, image_size=(160, 90), progress=False),
        log=lambda m: None)
    return out


def _with_masks(store: str, masks: Path, dst: Path) -> StoreReader:
    shutil.copytree(store, dst)
    import_masks(MaskOptions(store=str(dst), masks=str(masks), progress=False))
    return StoreReader(dst)


@pytest.fixture(scope="module")
def gt_report(apron, store, tmp_path_factory) -> dict:
    return collect(_with_masks(store, apron / "masks", tmp_path_factory.mktemp("gt") / "store"), FAST, progress=False)


def test_conditions_come_from_the_scene_descriptions(store):
    assert dl.scene_conditions(StoreReader(store)) == {"scene-0001": "day", "scene-0002": "night+wet"}
    assert dl.condition_of("Night, rain, parking lot") == "night+wet"
    assert dl.condition_of("Rain, peds crossing") == "day+wet"
    assert dl.condition_of("Nightly build") == "day" and dl.condition_of(None) == dl.UNKNOWN


def test_gt_masks_agree_and_wet_pavement_drops_labels(gt_report):
    d = gt_report["depth_labels"]
    assert d["has_masks"] and list(d["per_condition"]) == ["day", "night+wet"]
    for row in d["per_condition"].values():
        assert row["images"] == 6 and row["labels_per_mpx"] > 1000 and row["labels_per_image"] > 100
        assert row["mask_disagreement_rate"] < 0.07, row   # GT masks: only edges and parallax disagree
    assert gt_report["summary"]["mask_agreement_rate"] > 0.95
    apron = {r["condition"]: r for r in d["per_class"] if r["class"] == "apron"}
    assert apron["night+wet"]["dropout_share"] > 2 * apron["day"]["dropout_share"] + 0.02, apron
    assert apron["night+wet"]["labels_per_mpx_of_class_area"] < 0.8 * apron["day"]["labels_per_mpx_of_class_area"]
    assert 0.0 <= gt_report["summary"]["depth_outlier_rate"] < 0.2


def test_a_corrupted_mask_shows_as_disagreement(apron, store, gt_report, tmp_path):
    """Every apron pixel of the masks relabelled grass: the apron labels disagree, and the pair is named."""
    masks = tmp_path / "masks"
    shutil.copytree(apron / "masks", masks)
    vocab = StoreReader(store).vocabulary
    apron_id, grass_id = vocab.classes.index("apron"), vocab.classes.index("grass")
    for p in masks.rglob("*.png"):
        m = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        m[m == apron_id] = grass_id
        cv2.imwrite(str(p), m)
    d = collect(_with_masks(store, masks, tmp_path / "store"), FAST, progress=False)["depth_labels"]
    for cond, row in d["per_condition"].items():
        assert row["mask_disagreement_rate"] > gt_report["depth_labels"]["per_condition"][cond][
            "mask_disagreement_rate"] + 0.2, (cond, row)
    apron = [r for r in d["per_class"] if r["class"] == "apron"]
    assert all(r["mask_disagreement_rate"] > 0.9 for r in apron)
    top = d["confusion_top_pairs"][0]
    assert (top["lidar_class"], top["mask_class"]) == ("apron", "grass")


def test_without_masks_the_mask_parts_are_left_out_and_cli_reports(store, tmp_path):
    res = CliRunner().invoke(main, ["qa", "--store", store, "--out", str(tmp_path / "qa"), "--no-coverage", "--quiet"])
    assert res.exit_code == 0, res.output
    assert "  day: 6 images" in res.output and "  night+wet: 6 images" in res.output and "drop-out" not in res.output
    r = json.loads((tmp_path / "qa" / "qa.json").read_text())
    d = r["depth_labels"]
    assert not d["has_masks"] and d["confusion_top_pairs"] is None
    assert all("dropout_share" not in row for row in d["per_condition"].values())
    assert r["summary"]["mask_agreement_rate"] is None and r["summary"]["depth_outlier_rate"] is not None
    page = (tmp_path / "qa" / "qa.html").read_text()
    assert "Depth labels by condition and surface class" in page and "No 2D masks in this store" in page
    assert page.count("data:image/png;base64") >= 2 + len(d["per_condition"])


def test_depth_outlier_is_a_label_off_its_neighbours_surface():
    """A plane seen by a grid of labels (inverse depth affine in u, v) with one label 30 % too deep."""
    u, v = (a.ravel().astype(np.float64) for a in np.meshgrid(np.arange(0, 400, 8), np.arange(300, 600, 30)))
    depth = 1.0 / (0.02 + 0.0001 * (v - 300) + 0.00002 * u)
    depth[123] *= 1.3
    tested, out = dl.depth_outliers(u, v, depth, radius_px=44.0, k=8, threshold=0.1)
    assert tested.mean() > 0.95 and np.flatnonzero(out).tolist() == [123]


def test_compiled_neighbours_match_the_kd_tree(ops, monkeypatch):
    """The compiled grid search returns scipy's neighbours (float positions, so no distance ties):
    sparse and dense areas, points with fewer than k neighbours in the radius, an isolated one."""
    rng = np.random.default_rng(0)
    pts = np.concatenate([rng.uniform(0, 1600, (1500, 2)), rng.normal(800, 30, (1500, 2)), [[5000.0, 5000.0]]])
    dist, idx = dl.neighbours(pts, 8, 44.0)
    kernel = facade.kernel
    monkeypatch.setattr(facade, "kernel", lambda name, *a: None if name == "knn2d" else kernel(name, *a))
    ref_dist, ref_idx = dl.neighbours(pts, 8, 44.0)
    assert np.isinf(ref_dist).any() and np.isfinite(ref_dist).any() and np.isinf(ref_dist[-1]).all()
    assert np.array_equal(idx, ref_idx) and np.array_equal(dist, ref_dist)
