"""The compiled voxel walk marks exactly the voxels the numpy VoxelWalk marks."""

from __future__ import annotations

import numpy as np
import pytest

from renderocc import ops as facade
from renderocc.geometry import Grid
from renderocc.geometry.traversal import mark_crossed_numpy
from renderocc.ops import mark_crossed
from renderocc.qa.report import collect
from renderocc.store.reader import StoreReader

BOX = (-4.0, -4.0, -1.0, 4.0, 4.0, 2.2)
GRID = Grid(BOX, (0.4, 0.4, 0.4), (20, 20, 8))
SHAPE = GRID.shape


def _rays(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random segments plus the hard cases: axis-aligned, along voxel edges and through voxel
    corners (ties between axes), zero direction components, starting outside, zero length."""
    rng = np.random.default_rng(seed)
    o = rng.uniform(-5, 5, (n, 3)) * [1, 1, 0.4]
    d = rng.normal(size=(n, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    length = rng.uniform(0, 12, n)
    edge = np.array([[-4.0, 0.4, 0.2], [0.0, 0.0, 0.2], [-3.6, -3.6, -1.0], [0.4, 0.4, 0.6], [0.1, 0.1, 0.1]])
    dirs = np.array([[1.0, 0, 0], [0, 1.0, 0], [1, 1, 0], [1, 1, 1], [-1, 0, 0]], np.float64)
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    special_o = np.repeat(edge, len(dirs), 0)
    special_d = np.tile(dirs, (len(edge), 1))
    special_len = np.tile([3.0, 0.0, 20.0, 1.2, 7.0], len(edge))
    return (np.concatenate([o, special_o]), np.concatenate([d, special_d]),
            np.concatenate([length, special_len]))


def test_compiled_walk_matches_numpy(ops):
    o, d, length = _rays(5000)
    fast, ref = np.zeros(SHAPE, bool), np.zeros(SHAPE, bool)
    mark_crossed(fast, o, d, length, GRID, backend="compiled")
    mark_crossed_numpy(ref, o, d, length, GRID)
    assert ref.sum() > 100 and np.array_equal(fast, ref)
    for i in range(len(o) - 25, len(o)):  # each hard case on its own too
        fast, ref = np.zeros(SHAPE, bool), np.zeros(SHAPE, bool)
        mark_crossed(fast, o[i:i + 1], d[i:i + 1], length[i:i + 1], GRID, backend="compiled")
        mark_crossed_numpy(ref, o[i:i + 1], d[i:i + 1], length[i:i + 1], GRID)
        assert np.array_equal(fast, ref), i


def test_compiled_walk_matches_numpy_on_many_threads(ops):
    """Enough rays to split over threads (each marks its own grid, OR-ed after): short segments
    on a fine grid, so about half the voxels stay unmarked and a lost or stray mark shows."""
    o, d, length = _rays(40_000, seed=1)
    length = length / 20
    fine = Grid.tiling(BOX, 0.1)
    fast, ref = np.zeros(fine.shape, bool), np.zeros(fine.shape, bool)
    mark_crossed(fast, o, d, length, fine, backend="compiled")
    mark_crossed_numpy(ref, o, d, length, fine)
    assert 0.2 < ref.mean() < 0.8 and np.array_equal(fast, ref)


def test_non_contiguous_or_misshapen_grid_is_refused():
    small = Grid.tiling((0, 0, 0, 4, 2, 4), 1.0)
    with pytest.raises(ValueError, match="C-contiguous"):
        mark_crossed(np.zeros((4, 4, 4), bool)[:, ::2], np.zeros((1, 3)), np.ones((1, 3)), np.ones(1), small)
    with pytest.raises(ValueError, match="does not match"):
        mark_crossed(np.zeros((4, 4, 4), bool), np.zeros((1, 3)), np.ones((1, 3)), np.ones(1), small)


def test_qa_report_same_with_either_walk(ops, small_store, monkeypatch):
    """QA's coverage counts (and everything else in qa.json) do not depend on the walk used."""
    reader = StoreReader(small_store)
    fast = collect(reader, progress=False)
    kernel = facade.kernel
    monkeypatch.setattr(facade, "kernel", lambda name, *a: None if name == "mark_crossed" else kernel(name, *a))
    assert collect(reader, progress=False) == fast
    assert fast["coverage"]["totals"]["voxels_crossed_all"] > 0
