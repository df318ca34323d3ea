"""`renderocc fit`: a planted box recovered from rays cast at it, the CLI's outputs, the 3D self-check,
and `qa --fit`."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from renderocc.classes import FREE
from renderocc.cli import main
from renderocc.config import load_config
from renderocc.errors import UserError
from renderocc.fit.fit import (
    EpochDraw,
    FitResult,
    coverage_counts,
    dilate26,
    fit_config,
    fit_frames,
    fit_store,
    fit_threshold,
    trace_points,
)
from renderocc.fit.grid_model import FreeGrid
from renderocc.geometry import Grid
from renderocc.train.dataset import ends_in_grid
from renderocc.train.targets import label_voxel_target
from renderocc.train.threshold import LABEL_VOXEL_METRIC

GRID = Grid([-4.0, -4.0, -1.0, 4.0, 4.0, 1.4], [0.4, 0.4, 0.4], [20, 20, 6])
BOX_LO, BOX_HI = np.array([-0.4, -0.4, -0.2]), np.array([0.4, 0.4, 0.6])  # voxels x 9-10, y 9-10, z 2-3
CAR = 4


@pytest.fixture(autouse=True)
def one_thread():
    """The fits are many small kernels: one thread is faster than two on a shared 2-core box."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def box_rays(per_origin: int = 300, seed: int = 0) -> dict:
    """Label rays from 24 cameras around and above the box, each ending where it enters the box."""
    rng = np.random.default_rng(seed)
    o_all, d_all, t_all = [], [], []
    for ang in np.linspace(0, 2 * np.pi, 8, endpoint=False):
        for z in (-0.7, 0.3, 1.2):
            o = np.array([3.0 * np.cos(ang), 3.0 * np.sin(ang), z])
            d = rng.uniform(BOX_LO, BOX_HI, size=(per_origin, 3)) - o
            d /= np.linalg.norm(d, axis=1, keepdims=True)
            with np.errstate(divide="ignore"):
                t1, t2 = (BOX_LO - o) / d, (BOX_HI - o) / d
            o_all.append(np.broadcast_to(o, d.shape))
            d_all.append(d)
            t_all.append(np.minimum(t1, t2).max(1))  # slab entry: the first face the ray meets
    t = np.concatenate(t_all)
    return {"origins": np.concatenate(o_all), "directions": np.concatenate(d_all), "ends": t,
            "label": np.full(len(t), CAR, np.int64)}


def test_free_grid_is_an_occupancy_output():
    g = FreeGrid([3, 4, 5], density_init=0.1)
    out = g(torch.zeros(1), None, None)
    assert out.density.shape == (1, 3, 4, 5) and out.semantics.shape == (1, 3, 4, 5, 17)
    assert torch.allclose(out.density, torch.full_like(out.density, 0.1))


def test_fit_recovers_a_planted_box():
    """Every box voxel occupied and labelled car; anything else occupied only borders the box
    (trilinear density at voxel centres stops a ray at a face from the voxel in front of it too)."""
    # the fit machinery under the depth + free-space losses; the demo's termination term (stop by
    # d + one voxel) is left out: it legitimately thickens the faces by the voxel in front of them;
    # the box's faces are hit head-on, so free space runs to the hit (the demo's relative margin is
    # for grazing ground rays: at its 0.12 the faces' border fills in, IoU 0.25, recall still 1)
    # and so is the voxel reading of the rays (`loss.label_voxels`): its end voxels are the baseline's
    cfg = fit_config(load_config("demo", ["data.rays=2048", "loss.termination=0", "loss.los_margin_rel=0",
                                          "loss.label_voxels=0"]), GRID)
    res = fit_frames([(box_rays(), 1.0)], cfg, iters=80, lr=0.3)
    gt = np.zeros(GRID.shape, bool)
    gt[9:11, 9:11, 2:4] = True
    occ = res.semantics != FREE
    assert (occ & gt).sum() == gt.sum()  # recall 1
    assert not (occ & ~dilate26(gt)).any()  # nothing away from the box
    assert (occ & gt).sum() / (occ | gt).sum() >= 0.4
    assert set(np.unique(res.semantics[occ])) == {CAR}
    assert res.threshold["score"] > 0.95 and res.loss_last < res.loss_first


def test_fit_threshold_with_label_voxels_is_the_iou_against_them():
    """With `loss.label_voxels` the threshold maximises IoU against the rays' own voxels: on a field
    dense in the voxels the rays end in and fainter fog elsewhere, τ falls between the two."""
    rays = box_rays(per_origin=60)
    cfg = fit_config(load_config("demo", ["loss.label_voxels=20"]), GRID)
    ends = label_voxel_target(ends_in_grid([(rays, 1.0)], GRID), GRID) < FREE
    density = torch.full(GRID.shape, 0.3)
    density[torch.from_numpy(ends)] = 5.0
    thr = fit_threshold(density, cfg, [(rays, 1.0)])
    assert 0.3 <= thr["threshold"] < 5.0 and thr["score"] == 1.0
    assert thr["metric"] == LABEL_VOXEL_METRIC and "label voxels" in thr["how"]
    plain = fit_threshold(density, fit_config(load_config("demo", ["loss.label_voxels=0"]), GRID), [(rays, 1.0)])
    assert plain["metric"] != LABEL_VOXEL_METRIC


def test_epoch_draw_uses_every_ray_once_per_epoch():
    """37 rays in batches of 8 (the last one short, padded): each epoch draws each ray exactly once,
    the next epoch in another order; rays of a rare class come early (training's class balance)."""
    n = 37
    label = np.where(np.arange(n) < 3, 7, 1)
    pool = (np.zeros((n, 3)), np.tile([1.0, 0.0, 0.0], (n, 1)), np.arange(n, dtype=np.float64) + 1, label,
            np.ones(n, bool), np.ones(n))
    draw = EpochDraw(pool, 8, 1.0, np.random.default_rng(0))
    epochs, firsts = [], []
    for _ in range(2):
        seen = []
        for k in range(5):
            b = draw.next()
            seen += b["ends"][b["valid"]].int().tolist()
            assert b["valid"].sum() == (8 if k < 4 else 5)
            if k == 0:
                firsts.append(b["label"][b["valid"]].tolist())
        assert sorted(seen) == list(range(1, n + 1))
        epochs.append(seen)
    assert epochs[0] != epochs[1] and draw.epoch == 2
    rare_early = sum(f.count(7) for f in firsts)
    assert rare_early >= 4  # 3 rare rays of 37 in each epoch's first 8: by chance ≈ 0.65 of them per epoch


def test_trace_points_and_plateau():
    assert trace_points(100) == [1, 2, 5, 10, 20, 50, 100]
    assert trace_points(300) == [1, 2, 5, 10, 20, 50, 100, 200, 300] and trace_points(1) == [1]
    trace = [{"iter": i, "geometry_iou": g} for i, g in ((1, 0.2), (10, 0.6), (100, 0.695), (300, 0.70))]
    res = FitResult(torch.zeros(1), torch.zeros(1), np.zeros(1, np.uint8), {}, 1.0, 0.5, 10, 1.0, trace)
    assert res.plateau == 100
    assert FitResult(torch.zeros(1), torch.zeros(1), np.zeros(1, np.uint8), {}, 1.0, 0.5, 10, 1.0).plateau is None


def test_coverage_counts_hold_or_border():
    gt = np.full((6, 6, 4), FREE, np.uint8)
    gt[1, 1, 1] = gt[4, 4, 2] = CAR
    gt[3, 0, 0] = 11
    ends = np.zeros(gt.shape, bool)
    ends[2, 2, 2] = True  # a 26-neighbour of (1, 1, 1) only
    c = coverage_counts(ends, gt, np.ones(gt.shape, bool))
    assert c[1, CAR] == 2 and c[0, CAR] == 1 and c[1, 11] == 1 and c[0, 11] == 0


def _invoke(*args: str):
    return CliRunner().invoke(main, [*args, "--quiet"])


def test_fit_cli_writes_predictions_and_metrics(small_store, tmp_path):
    out = tmp_path / "fit"
    res = _invoke("fit", "--store", small_store, "--out", str(out), "--indices", "0", "--iters", "3",
                  "--set", "data.rays=256")
    assert res.exit_code == 0, res.output
    assert "label coverage" in res.output
    m = json.loads((out / "metrics.json").read_text())
    for key in ("miou", "geometry_iou", "iou_per_class", "miou_nomask", "geometry_iou_nomask",
                "iou_per_class_nomask", "label_coverage", "thresholds", "iters", "wall_s", "git_commit",
                "config_digest"):
        assert key in m, key
    assert m["samples"] == 1 and m["iters"] == 3 and len(m["iou_per_class"]) == 18
    assert 0 < m["label_coverage"] <= 1 and m["supervision"] == "2d"
    files = list(out.glob("*/*/labels.npz"))
    assert len(files) == 1
    z = np.load(files[0])
    assert z["semantics"].dtype == np.uint8 and z["semantics"].shape == (200, 200, 16)
    assert z["density"].dtype == np.float16
    assert "| label coverage |" in (out / "metrics.md").read_text()
    # the convergence trace: log-spaced iterations, each scored, as a table and a picture
    trace = m["per_sample"][0]["trace"]
    assert [t["iter"] for t in trace] == [1, 2, 3] and all(0 <= t["geometry_iou"] <= 1 for t in trace)
    assert [t["iter"] for t in m["convergence"]] == [1, 2, 3] and m["per_sample"][0]["plateau_iter"] in (1, 2, 3)
    assert m["per_sample"][0]["epochs"] == pytest.approx(3 * 256 / m["per_sample"][0]["rays"])
    assert "## Convergence" in (out / "metrics.md").read_text()
    assert (out / "convergence.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert m["config"]["loss"]["label_voxels"] == 20.0  # the fit's default


def test_fit_voxelize_alone_and_beside_the_optimised_fit(small_store, tmp_path):
    res = _invoke("fit", "--store", small_store, "--out", str(tmp_path / "v"), "--indices", "0,2", "--method",
                  "voxelize")
    assert res.exit_code == 0, res.output
    assert "voxelisation baseline: mIoU" in res.output and "thresholds" not in res.output
    m = json.loads((tmp_path / "v" / "metrics.json").read_text())
    assert m["method"] == "voxelize" and m["miou"] == m["voxelize"]["miou"] > 0.2
    assert [r["threshold"] for r in m["per_sample"]] == [None, None]
    assert "| voxelisation baseline mIoU |" in (tmp_path / "v" / "metrics.md").read_text()
    both = _invoke("fit", "--store", small_store, "--out", str(tmp_path / "b"), "--indices", "0,2", "--iters", "3",
                   "--set", "data.rays=256")
    mb = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert both.exit_code == 0 and "voxelisation baseline" in both.output
    assert mb["voxelize"]["miou"] == m["voxelize"]["miou"] and mb["method"] == "both"


def test_fit_3d_reaches_one_inside_the_mask(small_store, tmp_path):
    res = _invoke("fit", "--store", small_store, "--out", str(tmp_path / "f3"), "--indices", "1",
                  "--iters", "8", "--supervision", "3d")
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "f3" / "metrics.json").read_text())
    assert m["miou"] >= 0.95 and m["geometry_iou"] >= 0.95


def test_fit_user_errors(small_store, tmp_path):
    res = _invoke("fit", "--store", str(tmp_path / "none"), "--out", str(tmp_path / "o"))
    assert res.exit_code == 2 and "store not found" in res.output
    res = _invoke("fit", "--store", small_store, "--out", str(tmp_path / "o"), "--indices", "0,99")
    assert res.exit_code == 2 and "index 99" in res.output and len(res.output.strip().splitlines()) == 1
    cfg = fit_config(load_config("demo"), GRID)
    with pytest.raises(UserError, match="no Occ3D GT"):
        fit_store(SimpleNamespace(has_occ_gt=False), [0], cfg, iters=1, lr=0.1, out=None)


@pytest.mark.slow
def test_qa_fit_adds_the_per_class_table(small_store, tmp_path):
    out = tmp_path / "qa"
    res = _invoke("qa", "--store", small_store, "--out", str(out), "--no-coverage", "--fit", "1",
                  "--fit-iters", "2")
    assert res.exit_code == 0, res.output
    data = json.loads((out / "qa.json").read_text())
    f = data["fit"]
    assert f["samples"] == [0] and len(f["per_class"]) == 17
    assert {"class", "iou", "label_coverage"} <= set(f["per_class"][0])
    assert data["summary"]["fit_label_coverage"] == f["label_coverage"]
    assert "Free-grid fit" in Path(out / "qa.html").read_text()
