"""A run's grid is resolved and checked once, against the store's label grid, before any work.

A grid that cannot be scored against the labels (0.5 × 0.5 × 0.4 m against Occ3D's 0.4 m) is one
line and exit 2 for every contract; one that can (0.32 m, UniOcc's 250 × 250 × 20) trains with its
3D loss and its scores taken at the labels' grid.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from renderocc.cli import main
from renderocc.config import load_config, resolved
from renderocc.errors import UserError
from renderocc.geometry import OCC3D_GRID, Grid
from renderocc.model import OccupancyOutput
from renderocc.train import losses as L
from renderocc.train.targets import dense_target

TINY = ["data.input_size=[64, 32]", "data.rays=256", "data.workers=0", "model.width=8", "model.channels=16",
        "model.voxel_channels=8", "model.depth_bins=[1.0, 41.0, 21]", "render.step=0.8",
        "train.loader_bench_batches=0", "train.threshold_samples=1", "data.holdout='every-k:4'"]


def _train(store: str, out, *overrides: str, steps: int = 2):
    args = ["train", "--store", store, "--out", str(out), "--config", "demo", "--max-steps", str(steps)]
    return CliRunner().invoke(main, args + [a for kv in (*TINY, *overrides) for a in ("--set", kv)])


@pytest.mark.parametrize("supervision", ["2d", "3d", "lidar-sparse", "mixed"])
def test_an_unscorable_grid_is_one_line_before_any_work(small_store, tmp_path, supervision):
    res = _train(small_store, tmp_path / "run", "grid.voxel_size=[0.5, 0.5, 0.4]", f"supervision='{supervision}'")
    assert res.exit_code == 2, res.output
    assert res.output.count("\n") == 1 and "cannot be scored against the label grid [200, 200, 16]" in res.output
    assert not (tmp_path / "run").exists()  # refused before the run folder was made


def test_resolution_names_the_rule_it_broke():
    cfg = load_config("demo", ["grid.voxel_size=0.32"])
    assert resolved(cfg, OCC3D_GRID).grid.shape == [250, 250, 20]
    with pytest.raises(UserError, match="does not cover"):
        resolved(load_config("demo", ["grid.pc_range=[-20, -20, -1, 20, 20, 5.4]"]), OCC3D_GRID)
    with pytest.raises(UserError, match="does not tile"):
        resolved(load_config("demo", ["grid.voxel_size=0.7"]), OCC3D_GRID)


def test_dense_targets_pool_only_by_whole_factors():
    sem = np.zeros((200, 200, 16), np.uint8)
    assert dense_target(sem, np.ones_like(sem, bool), (100, 100, 16)).shape == (100, 100, 16)
    with pytest.raises(ValueError, match="whole factors"):
        dense_target(sem, np.ones_like(sem, bool), (160, 160, 16))


def test_a_finer_grid_takes_its_3d_loss_at_the_labels_grid():
    """The model's 0.2 m values, interpolated at the 0.4 m label centres, are what the 3D loss sees."""
    labels = Grid.tiling((0, 0, 0, 1.6, 1.6, 0.8), 0.4)
    scoring = Grid.tiling(labels.box, 0.2).coarsens(labels)
    cfg = resolved(load_config("demo", ["supervision='3d'", "grid.voxel_size=0.2", "loss.lss_depth=0"]), labels)
    g = torch.Generator().manual_seed(0)
    density = (torch.rand(1, *scoring.model.shape, generator=g) * 3).requires_grad_()
    logits = torch.randn(1, *scoring.model.shape, 5, generator=g, requires_grad=True)
    target = torch.from_numpy(np.random.default_rng(0).integers(0, 6, (1, *labels.shape)).astype(np.uint8))
    out = OccupancyOutput(density, logits, density.new_zeros(1, 0, 0, 0, 0))
    loss, parts, _ = L.total_loss(out, {"occ_target": target}, cfg, None, scoring)
    on_labels = L.occupancy_3d(scoring.to_labels(density)[None][:, 0], scoring.to_labels(
        logits[0].permute(3, 0, 1, 2)).permute(1, 2, 3, 0)[None], target, labels.edge, None)
    torch.testing.assert_close(loss, on_labels)
    loss.backward()
    assert density.grad.abs().sum() > 0 and logits.grad.abs().sum() > 0


@pytest.mark.slow
def test_a_032_grid_trains_2d_and_3d_and_is_scored_at_the_store_grid(small_store, tmp_path):
    for supervision in ("3d", "2d"):
        run = tmp_path / supervision
        res = _train(small_store, run, "grid.voxel_size=0.32", f"supervision='{supervision}'", steps=1)
        assert res.exit_code == 0, res.output
        assert "[250, 250, 20] @ 0.32 m (interpolated to the labels' [200, 200, 16] @ 0.4 m)" in res.output
        ev = CliRunner().invoke(main, ["eval", "--store", small_store, "--ckpt", str(run / "last.pt"),
                                       "--out", str(tmp_path / f"eval-{supervision}"), "--quiet"])
        assert ev.exit_code == 0, ev.output
        m = json.loads((tmp_path / f"eval-{supervision}" / "metrics.json").read_text())
        assert m["protocol"]["scoring"] == "interpolate" and m["occ_samples"] > 0
        assert 0 <= m["miou"] <= 1 and 0 <= m["geometry_iou"] <= 1  # one step: any score, but a score
    pred = CliRunner().invoke(main, ["predict", "--store", small_store, "--ckpt", str(tmp_path / "3d" / "last.pt"),
                                     "--out", str(tmp_path / "pred"), "--store-grid", "--quiet"])
    assert pred.exit_code == 0, pred.output
    with np.load(next((tmp_path / "pred").glob("*/*/labels.npz"))) as z:
        assert z["semantics"].shape == (200, 200, 16) and z["visibility"].shape == (200, 200, 16)
