"""The compiled voxel walk marks exactly the voxels the numpy VoxelWalk marks."""

from __future__ import annotations

import numpy as np
import pytest

from renderocc.raygrid import mark_crossed, mark_crossed_numpy

BOX = (-4.0, -4.0, -1.0, 4.0, 4.0, 2.2)
VOXEL = (0.4, 0.4, 0.4)
SHAPE = (20, 20, 8)


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
    mark_crossed(fast, o, d, length, BOX, VOXEL)
    mark_crossed_numpy(ref, o, d, length, BOX, VOXEL)
    assert ref.sum() > 100 and np.array_equal(fast, ref)
    for i in range(len(o) - 25, len(o)):  # each hard case on its own too
        fast, ref = np.zeros(SHAPE, bool), np.zeros(SHAPE, bool)
        mark_crossed(fast, o[i:i + 1], d[i:i + 1], length[i:i + 1], BOX, VOXEL)
        mark_crossed_numpy(ref, o[i:i + 1], d[i:i + 1], length[i:i + 1], BOX, VOXEL)
        assert np.array_equal(fast, ref), i


def test_compiled_walk_matches_numpy_on_many_threads(ops):
    """Enough rays to split over threads (each marks its own grid, OR-ed after): short segments
    on a fine grid, so about half the voxels stay unmarked and a lost or stray mark shows."""
    o, d, length = _rays(40_000, seed=1)
    length = length / 20
    fine = (0.1, 0.1, 0.1)
    fast, ref = np.zeros((80, 80, 32), bool), np.zeros((80, 80, 32), bool)
    mark_crossed(fast, o, d, length, BOX, fine)
    mark_crossed_numpy(ref, o, d, length, BOX, fine)
    assert 0.2 < ref.mean() < 0.8 and np.array_equal(fast, ref)


def test_non_contiguous_grid_is_refused():
    with pytest.raises(ValueError, match="C-contiguous"):
        mark_crossed(np.zeros((4, 4, 4), bool)[:, ::2], np.zeros((1, 3)), np.ones((1, 3)), np.ones(1), BOX, VOXEL)


def test_qa_report_same_with_either_walk(ops, small_store, monkeypatch):
    """QA's coverage counts (and everything else in qa.json) do not depend on the walk used."""
    from renderocc import raygrid
    from renderocc.qa.report import collect
    from renderocc.store.reader import StoreReader

    reader = StoreReader(small_store)
    fast = collect(reader, progress=False)
    monkeypatch.setattr(raygrid, "_compiled_walk", lambda: None)
    assert collect(reader, progress=False) == fast
    assert fast["coverage"]["totals"]["voxels_crossed_all"] > 0
