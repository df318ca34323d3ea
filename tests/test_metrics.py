"""Metrics against hand-computed confusion matrices: the numbers a paper would report."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from renderocc.eval.metrics import (
    DepthMetrics,
    OccMetrics,
    Sem2DMetrics,
    confusion_matrix,
    geometry_iou,
    iou_per_class,
)

# (gt, pred, mask_camera) per voxel; 4 car, 11 road, 13 sidewalk, 17 free, 255 ignore.
VOXELS = [
    (4, 4, 1), (4, 4, 1),  # car TP ×2
    (4, 17, 1),  # car missed (predicted free): car FN
    (17, 4, 1),  # free predicted car: car FP
    (11, 11, 1),  # road TP
    (11, 13, 1),  # road predicted sidewalk
    (17, 17, 1),  # free TP
    (4, 11, 0),  # outside the camera mask: only in the no-mask numbers
    (255, 4, 1),  # ignored GT
]


def _arrays():
    a = np.array(VOXELS)
    # Shape like a tiny grid to check reshaping is harmless.
    return (a[:, 0].astype(np.uint8).reshape(3, 3, 1), a[:, 1].astype(np.uint8).reshape(3, 3, 1),
            a[:, 2].astype(bool).reshape(3, 3, 1))


def test_confusion_matches_hand_count():
    gt, pred, mask = _arrays()
    cm = confusion_matrix(gt, pred, 18, mask)
    expected = np.zeros((18, 18), np.int64)
    expected[4, 4] = 2
    expected[4, 17] = 1
    expected[17, 4] = 1
    expected[11, 11] = 1
    expected[11, 13] = 1
    expected[17, 17] = 1
    np.testing.assert_array_equal(cm, expected)


def test_occ3d_miou_free_counts_in_fp_fn_but_not_mean():
    gt, pred, mask = _arrays()
    m = OccMetrics()
    m.update(pred, gt, mask)
    r = m.compute()
    iou = r["iou_per_class"]
    assert iou[4] == pytest.approx(2 / 4)  # TP 2, FN 1 (free), FP 1 (from free)
    assert iou[11] == pytest.approx(1 / 2)
    assert iou[13] == 0.0  # predicted, never in GT
    assert iou[17] == pytest.approx(1 / 3)
    assert iou[0] is None and iou[7] is None  # absent everywhere: no IoU
    assert r["miou"] == pytest.approx((0.5 + 0.5 + 0.0) / 3)
    assert r["geometry_iou"] == pytest.approx(4 / 6)
    # Without the mask the (car → road) voxel counts too.
    nm = r["iou_per_class_nomask"]
    assert nm[4] == pytest.approx(2 / 5)
    assert nm[11] == pytest.approx(1 / 3)
    assert r["miou_nomask"] == pytest.approx((0.4 + 1 / 3 + 0.0) / 3)
    assert r["geometry_iou_nomask"] == pytest.approx(5 / 7)


def test_accumulation_is_batch_invariant_and_accepts_torch():
    gt, pred, mask = _arrays()
    whole = OccMetrics()
    whole.update(pred, gt, mask)
    parts = OccMetrics()
    for i in range(3):
        parts.update(torch.from_numpy(pred[i]), torch.from_numpy(gt[i]), torch.from_numpy(mask[i]))
    np.testing.assert_array_equal(whole.cm_camera, parts.cm_camera)
    np.testing.assert_array_equal(whole.cm_all, parts.cm_all)


def test_iou_helpers_and_bad_prediction():
    cm = np.zeros((18, 18), np.int64)
    assert math.isnan(geometry_iou(cm))
    assert np.isnan(iou_per_class(cm)).all()
    with pytest.raises(ValueError):
        confusion_matrix(np.array([1]), np.array([18]), 18)


def test_depth_metrics_hand_computed():
    d = DepthMetrics()
    d.update(np.array([2.0, 4.0]), np.array([2.0, 5.0]))
    d.update(torch.tensor([10.0, 3.0, float("nan")]), torch.tensor([8.0, 0.0, 5.0]))  # 0 / NaN skipped
    r = d.compute()
    assert r["depth_pixels"] == 3
    assert r["depth_abs_rel"] == pytest.approx((0 + 0.2 + 0.25) / 3)
    assert r["depth_rmse"] == pytest.approx(math.sqrt((0 + 1 + 4) / 3))
    assert r["depth_delta1"] == pytest.approx(1 / 3)  # ratios 1, 1.25, 1.25: strict <
    assert math.isnan(DepthMetrics().compute()["depth_abs_rel"])


def test_depth_by_distance_bins_by_the_labelled_depth():
    d = DepthMetrics()
    d.update(np.array([4.0, 4.5, 12.0, 15.0, 50.0]), np.array([5.0, 5.0, 24.0, 25.0, 45.0]))
    rows = d.compute()["depth_by_distance"]
    assert [r["pixels"] for r in rows] == [2, 0, 2, 1]
    assert rows[0]["abs_rel"] == pytest.approx((0.2 + 0.1) / 2)
    assert rows[0]["ratio"] == pytest.approx(math.sqrt(0.8 * 0.9))
    assert rows[1]["ratio"] is None and rows[3]["to_m"] is None
    assert rows[2]["ratio"] == pytest.approx(math.sqrt(0.5 * 0.6))  # far surfaces rendered short


def test_sem2d_miou():
    s = Sem2DMetrics()
    s.update(np.array([4, 4, 11, 11, 4]), np.array([4, 4, 11, 4, 255]))
    r = s.compute()
    # car: TP 2, FP 1 (road label predicted car) → 2/3; road: TP 1, FN 1 → 1/2.
    assert r["sem2d_iou_per_class"][4] == pytest.approx(2 / 3)
    assert r["sem2d_iou_per_class"][11] == pytest.approx(1 / 2)
    assert r["sem2d_miou"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert r["sem2d_pixels"] == 4


def test_floaters_count_predicted_occupied_gt_free_voxels_above_2m():
    from renderocc.classes import FREE, IGNORE
    from renderocc.eval.metrics import FloaterMetrics

    z = np.array([0.2, 1.8, 2.2, 2.6])               # voxel centre heights; the last two are above 2 m
    gt = np.full((2, 1, 4), FREE, np.uint8)
    gt[1, 0, 3] = 4                                   # a car voxel up high
    gt[0, 0, 2] = IGNORE
    pred = np.full((2, 1, 4), 4, np.uint8)            # everything predicted occupied
    mask = np.ones((2, 1, 4), bool)
    mask[0, 0, 3] = False
    f = FloaterMetrics()
    f.update(pred, gt, z, mask)
    out = f.compute()
    # above 2 m: (0,0,2) ignored, (0,0,3) free -> floater, (1,0,2) free -> floater, (1,0,3) occupied
    assert out["per_sample"] == 2 and out["share_of_predicted"] == pytest.approx(2 / 3)
    assert out["share_of_gt_free"] == 1.0 and out["per_sample_mask_camera"] == 1
