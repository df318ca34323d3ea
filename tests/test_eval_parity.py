"""Scoring parity: Occ3D mIoU and SparseOcc RayIoU on hand-built cases with known answers, and
`eval --pred` on real files in both prediction layouts (GT from a store or an Occ3D gts/ dir)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from renderocc.classes import FREE
from renderocc.cli import main
from renderocc.eval import rayiou
from renderocc.eval.evaluate import evaluate_predictions
from renderocc.eval.external import GtDir, find_predictions
from renderocc.geometry import OCC3D_GRID, Grid
from renderocc.ops import first_hits

SHAPE = tuple(OCC3D_GRID.shape)
CAR, ROAD, MANMADE = 4, 11, 15


def _invoke(*args: str):
    return CliRunner().invoke(main, [*args, "--quiet"])


# -- Occ3D mIoU: one confusion matrix over the dataset ---------------------------------------------
def _sample(voxels):
    """(gt, pred, mask) grids with the listed (gt, pred, mask) voxels; everything else outside the mask."""
    gt = np.full(SHAPE, FREE, np.uint8)
    pred = np.full(SHAPE, FREE, np.uint8)
    mask = np.zeros(SHAPE, np.uint8)
    for n, (g, p, m) in enumerate(voxels):
        gt[n, 0, 0], pred[n, 0, 0], mask[n, 0, 0] = g, p, m
    return gt, pred, mask


# sample A: car TP ×2, car → free (FN), free → car (FP), road TP, GT 255 (dropped), outside the mask
A = [(CAR, CAR, 1), (CAR, CAR, 1), (CAR, FREE, 1), (FREE, CAR, 1), (ROAD, ROAD, 1), (255, CAR, 1),
     (CAR, ROAD, 0)]
# sample B: road TP ×3, road → car, free TP ×2
B = [(ROAD, ROAD, 1)] * 3 + [(ROAD, CAR, 1)] + [(FREE, FREE, 1)] * 2


def _write_case(tmp_path: Path, layout: str) -> tuple[Path, Path]:
    gts, preds = tmp_path / "gts", tmp_path / "preds"
    for token, voxels in (("tokA", A), ("tokB", B)):
        gt, pred, mask = _sample(voxels)
        d = gts / "scene-x" / token
        d.mkdir(parents=True)
        np.savez_compressed(d / "labels.npz", semantics=gt, mask_camera=mask, mask_lidar=mask)
        if layout == "token":
            preds.mkdir(exist_ok=True)
            np.savez_compressed(preds / f"{token}.npz", pred=pred)  # SparseOcc's key
        else:
            (preds / "scene-x" / token).mkdir(parents=True)
            np.savez_compressed(preds / "scene-x" / token / "labels.npz", semantics=pred)
    return gts, preds


@pytest.mark.parametrize("layout", ["token", "occ3d"])
def test_miou_is_one_confusion_matrix_over_the_dataset(tmp_path, layout):
    gts, preds = _write_case(tmp_path, layout)
    g = GtDir(gts)
    m = evaluate_predictions(find_predictions(preds), g.tokens, g.occ_gt, None, shape=SHAPE, grid=OCC3D_GRID,
                             progress=False)
    # summed: car TP 2, FN 1 (A), FP 1 (A) + 1 (B) → 2/5; road TP 4, FN 1 (B) → 4/5; free not averaged
    assert m["iou_per_class"]["car"] == pytest.approx(2 / 5, abs=1e-12)
    assert m["iou_per_class"]["driveable_surface"] == pytest.approx(4 / 5, abs=1e-12)
    assert m["miou"] == pytest.approx(0.6, abs=1e-12)  # per-sample means would give 0.5625
    assert m["iou_per_class"]["barrier"] is None and m["occ_samples"] == 2 and m["missing"] == []
    assert m["rayiou"] is None and m["depth_pixels"] == 0


def test_eval_pred_cli_with_gt_dir_both_layouts_and_errors(tmp_path):
    gts, preds = _write_case(tmp_path, "occ3d")
    out = tmp_path / "out"
    res = _invoke("eval", "--pred", str(preds), "--gt", str(gts), "--out", str(out), "--split", "all")
    assert res.exit_code == 0, res.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["miou"] == pytest.approx(0.6) and m["supervision"] == "external predictions"
    assert "RayIoU needs poses" in res.output and "| mIoU (classes 0–16) | 60.00 |" in (out / "metrics.md").read_text()
    # a missing prediction: one line naming it, exit 2; --allow-missing counts and lists it
    (preds / "scene-x" / "tokB" / "labels.npz").unlink()
    res = _invoke("eval", "--pred", str(preds), "--gt", str(gts), "--out", str(out), "--split", "all",
                  "--no-rayiou")
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1 and "tokB" in res.output
    res = _invoke("eval", "--pred", str(preds), "--gt", str(gts), "--out", str(out), "--split", "all",
                  "--allow-missing")
    assert res.exit_code == 0 and "1 samples scored, 1 without a prediction: tokB" in res.output
    assert json.loads((out / "metrics.json").read_text())["missing"] == ["tokB"]
    # a wrong shape, a pickled object array, a foreign class: one line naming the file
    bad = preds / "scene-x" / "tokA" / "labels.npz"
    for arrays, words in (({"semantics": np.zeros((200, 200, 17), np.uint8)}, "shape (200, 200, 17)"),
                          ({"semantics": np.array([{"a": 1}], dtype=object)}, "not a plain numeric array"),
                          ({"semantics": np.full(SHAPE, 40, np.uint8)}, "class 40"),
                          ({"other": np.zeros(SHAPE, np.uint8)}, "no `semantics` or `pred`")):
        np.savez(bad, **arrays)
        res = _invoke("eval", "--pred", str(preds), "--gt", str(gts), "--out", str(out), "--split", "all",
                      "--allow-missing", "--no-rayiou")
        assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1, res.output
        assert str(bad) in res.output and words in res.output, res.output
    res = _invoke("eval", "--pred", str(tmp_path / "nope"), "--gt", str(gts), "--out", str(out))
    assert res.exit_code == 2 and "prediction directory not found" in res.output
    res = _invoke("eval", "--pred", str(preds), "--out", str(out))
    assert res.exit_code == 2 and "exactly one GT source" in res.output


def test_eval_pred_on_a_store_gt_copy_scores_one_and_val_falls_back_to_all(small_store, tmp_path):
    from renderocc.store.reader import StoreReader

    reader = StoreReader(small_store)
    preds = tmp_path / "preds"
    preds.mkdir()
    for i in range(len(reader)):
        np.savez_compressed(preds / f"{reader.sample(i)['sample_token']}.npz",
                            semantics=reader.occ_gt(i)["semantics"])
    out = tmp_path / "out"
    res = _invoke("eval", "--pred", str(preds), "--store", small_store, "--out", str(out))  # default --split val
    assert res.exit_code == 0, res.output
    assert "note: no scene of the nuScenes val split" in res.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["split"].startswith("all") and m["samples"] == len(reader)
    assert m["miou"] == pytest.approx(1.0) and m["miou_nomask"] == pytest.approx(1.0)
    assert m["rayiou"] == pytest.approx(1.0) and m["rayiou_1"] == pytest.approx(1.0) and m["rayiou_rays"] > 10000
    present = {c for c, v in m["rayiou_per_class"].items() if v["1"] is not None}
    assert "driveable_surface" in present and all(m["rayiou_per_class"][c]["1"] == 1.0 for c in present)


# -- RayIoU: the protocol and its hand-built cases -------------------------------------------------
def test_ray_set_and_origins_follow_the_protocol():
    pitch = rayiou.pitch_angles()
    assert len(pitch) == 39 and pitch[0] == pytest.approx(-np.pi / 4) and pitch[-2] < 0.21 <= pitch[-1]
    d = rayiou.lidar_directions()
    assert d.shape == (14040, 3) and np.allclose(np.linalg.norm(d, axis=1), 1)
    # 12 keyframes 6 m apart along x, LiDAR 1 m ahead of the ego origin and 1.8 m up
    ego = np.repeat(np.eye(4)[None], 12, 0)
    ego[:, 0, 3] = np.arange(12) * 6.0
    l2e = np.repeat(np.eye(4)[None], 12, 0)
    l2e[:, :3, 3] = [1.0, 0.0, 1.8]
    o = rayiou.scene_origins(ego, l2e, ref=3)
    # keyframes 0..9 lie within |x| < 39 m of keyframe 3 (x = -18+1 ... 36+1); 8 of 10 at round(linspace)
    kept = np.arange(10)[np.round(np.linspace(0, 9, 8)).astype(int)]
    assert np.allclose(o, np.stack([kept * 6.0 - 18 + 1, 0 * kept, 0 * kept + 1.8], 1))


def _scene(shift: int = 0) -> np.ndarray:
    g = np.full(SHAPE, FREE, np.uint8)
    g[:, :, 2] = ROAD  # ground
    g[120 + shift:124 + shift, 90:110, 3:8] = CAR
    g[60:62, :, :] = MANMADE  # a wall behind
    return g


ORIGINS = np.array([[0.5, 0.3, 1.8], [4.1, -2.0, 1.8]])


def _score(pred, gt) -> dict:
    m = rayiou.RayIoU(OCC3D_GRID)
    m.update(pred, gt, ORIGINS)
    return m.compute()


def test_rayiou_identical_is_one_all_free_is_zero_shift_in_between():
    gt = _scene()
    same = _score(gt, gt)
    assert same["rayiou"] == 1.0 and same["rayiou_1"] == 1.0
    present = {c: v for c, v in same["rayiou_per_class"].items() if v["1"] is not None}
    assert set(present) == {"car", "driveable_surface", "manmade"} and all(v["4"] == 1.0 for v in present.values())
    free = _score(np.full(SHAPE, FREE, np.uint8), gt)
    assert free["rayiou"] == 0.0 and free["rayiou_4"] == 0.0
    shifted = _score(_scene(shift=1), gt)  # the car one voxel (0.4 m) further away
    assert 0 < shifted["rayiou_1"] <= shifted["rayiou_2"] <= shifted["rayiou_4"] < 1
    car = shifted["rayiou_per_class"]["car"]
    assert 0 < car["1"] < 1 and car["4"] > car["1"]


def test_a_wall_plane_is_hit_at_its_analytic_distance():
    """A wall filling x ∈ [8.0, 8.4): every ray enters it through x = 8.0 and leaves the voxel it
    entered through the nearest of its far faces, the distance RayIoU compares."""
    gt = np.full(SHAPE, FREE, np.uint8)
    gt[120] = MANMADE  # voxel x index 120 covers [8.0, 8.4)
    o = np.array([0.5, 0.3, 1.8])
    r = rayiou.cast(gt, gt, o[None], OCC3D_GRID)
    d = rayiou.lidar_directions()
    d = d[d[:, 0] > 0]
    t_in = (8.0 - o[0]) / d[:, 0]
    p = o + t_in[:, None] * d
    lo, vs = np.array(OCC3D_GRID.box[:3]), 0.4
    inside = (p[:, 1] > -40) & (p[:, 1] < 40) & (p[:, 2] > -1) & (p[:, 2] < 5.4)
    d, p, t_in = d[inside], p[inside], t_in[inside]
    k = np.floor((p - lo) / vs)
    face = lo + (k + (d > 0)) * vs
    with np.errstate(divide="ignore"):
        t_faces = np.where(d[:, 1:] != 0, (face[:, 1:] - o[1:]) / d[:, 1:], np.inf)
    expected = np.minimum((8.4 - o[0]) / d[:, 0], t_faces.min(1))
    assert len(r["gt_dist"]) == len(expected) > 5000 and (r["gt_class"] == MANMADE).all()
    np.testing.assert_allclose(np.sort(r["gt_dist"]), np.sort(expected), atol=1e-9)
    ahead = rayiou.cast(gt, gt, o[None], OCC3D_GRID, directions=np.array([[1.0, 0.0, 0.0]]))
    assert ahead["gt_dist"].tolist() == pytest.approx([7.9])


def test_first_hits_ties_step_y_before_x_as_the_kernel():
    """A ray through voxel corners (equal crossings) visits (i, j+1) before (i+1, j+1), as
    SparseOcc's kernel orders ties, and reports the box exit with the last voxel when it meets nothing."""
    grid = Grid([0, 0, 0, 2, 2, 0.4], [0.4, 0.4, 0.4], [5, 5, 1])
    o, d = np.array([[0.2, 0.2, 0.2]]), np.array([[1.0, 1.0, 0.0]]) / np.sqrt(2)
    y_side, x_side, none = (np.zeros((5, 5, 1), bool) for _ in range(3))
    y_side[0, 1, 0] = True
    x_side[1, 0, 0] = True
    voxel, dist, hit = first_hits(np.stack([y_side, x_side, none]), o, d, grid)
    assert hit[:, 0].tolist() == [True, False, False]
    assert voxel[0, 0] == grid.flat(np.array([0, 1, 0]))
    assert dist[0, 0] == pytest.approx(0.2 * np.sqrt(2))  # leaves (0, 1) at the corner (0.4, 0.4)
    assert voxel[2, 0] == grid.flat(np.array([4, 4, 0]))
    assert dist[2, 0] == pytest.approx(1.8 * np.sqrt(2))  # box exit at (2, 2)
