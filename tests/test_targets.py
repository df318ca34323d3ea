"""Training targets as pure functions: sparse LiDAR voxels, dense pooling, LSS depth cells."""

from __future__ import annotations

import numpy as np
import torch

from renderocc.classes import FREE, IGNORE, OCCUPIED_UNKNOWN
from renderocc.geometry import Grid
from renderocc.train.targets import dense_target, label_voxel_target, lss_depth_target, sparse_target

GRID = Grid([0.0, 0.0, 0.0, 4.0, 4.0, 4.0], [1.0, 1.0, 1.0], [4, 4, 4])


def _rays_to(points: np.ndarray, origin=(0.5, 0.5, 0.5)):
    o = np.broadcast_to(np.asarray(origin, np.float64), points.shape).copy()
    seg = points - o
    dist = np.linalg.norm(seg, axis=1)
    return o, seg / dist[:, None], dist


def test_sparse_majority_explicit_count_and_tie():
    # voxel (3, 3, 3): 3 × class 5 vs 2 × class 3; voxel (3, 0, 3): 2 × 7 vs 2 × 4 (tie → 4);
    # voxel (0, 3, 3): only unlabelled returns → occupied, class unknown.
    pts = np.array([[3.2, 3.5, 3.5], [3.5, 3.2, 3.5], [3.8, 3.8, 3.8], [3.3, 3.3, 3.3], [3.7, 3.7, 3.2],
                    [3.5, 0.5, 3.5], [3.6, 0.6, 3.4], [3.4, 0.4, 3.6], [3.5, 0.5, 3.7],
                    [0.5, 3.5, 3.5]])
    label = np.array([5, 5, 5, 3, 3, 7, 7, 4, 4, IGNORE])
    o, d, dist = _rays_to(pts)
    t = sparse_target(o, d, dist, label, GRID)
    assert t.dtype == np.uint8 and t.shape == (4, 4, 4)
    assert t[3, 3, 3] == 5 and t[3, 0, 3] == 4 and t[0, 3, 3] == OCCUPIED_UNKNOWN
    assert t[0, 0, 0] == FREE  # the origin's voxel is crossed by every ray


def test_sparse_free_voxels_hand_case_and_sensor_origin():
    o = np.array([[0.5, 1.5, 1.5]])
    d = np.array([[1.0, 0.0, 0.0]])
    t = sparse_target(o, d, np.array([3.0]), np.array([9]), GRID)
    # segment x 0.5 → 2.5 (one voxel short of the end at 3.5): voxels 0, 1, 2 free; end voxel 3 = 9
    assert t[:, 1, 1].tolist() == [FREE, FREE, FREE, 9]
    assert (t == FREE).sum() == 3 and (t == IGNORE).sum() == 64 - 4
    # From a sensor at (0.5, 0.5, 1.5) the LiDAR ray to (3.5, 1.5, 1.5) is another segment.
    t = sparse_target(o, d, np.array([3.0]), np.array([9]), GRID, sensor_origin=np.array([0.5, 0.5, 1.5]))
    assert t[3, 1, 1] == 9 and t[0, 0, 1] == FREE and t[0, 1, 1] == IGNORE


def _brute_force_free(start, d, free_len, grid, n=20000):
    lo, vs, shape = np.array(grid.box[:3]), np.array(grid.voxel), np.array(grid.shape)
    seen = set()
    for s, dd, L in zip(start, d, free_len, strict=True):
        if L <= 0:
            continue
        p = s + np.linspace(0, L, n)[:, None] * dd
        idx = np.floor((p - lo) / vs).astype(int)
        ok = ((idx >= 0) & (idx < shape)).all(1)
        seen |= set(map(tuple, idx[ok]))
    return seen


def test_sparse_free_space_is_exactly_the_crossed_voxels():
    grid = Grid([-2.0, -2.0, -1.0, 2.0, 2.0, 1.0], [0.4, 0.4, 0.5], [10, 10, 4])
    rng = np.random.default_rng(3)
    sensor = np.array([0.13, -0.07, 0.21])
    ends = rng.uniform([-1.9, -1.9, -0.9], [1.9, 1.9, 0.9], (12, 3))
    cams = sensor + rng.normal(0, 0.3, (12, 3))
    o, seg = cams, ends - cams
    dist = np.linalg.norm(seg, axis=1)
    d = seg / dist[:, None]
    label = np.full(12, IGNORE)  # no classes: every end voxel is occupied of unknown class, the rest is free
    # or untouched
    for origin in (None, sensor):
        t = sparse_target(o, d, dist, label, grid, sensor_origin=origin)
        start = o if origin is None else np.broadcast_to(origin, o.shape)
        seg = ends - start
        length = np.linalg.norm(seg, axis=1)
        crossed = _brute_force_free(start, seg / length[:, None], length - grid.edge, grid)
        end_vox = set(map(tuple, np.floor((ends - np.array([-2.0, -2.0, -1.0])) / [0.4, 0.4, 0.5]).astype(int)))
        assert set(map(tuple, np.argwhere(t == FREE))) == crossed - end_vox
        assert len(crossed) > 10


def test_dense_pooling_of_2x2x2_blocks():
    sem = np.full((4, 4, 2), FREE, np.uint8)
    mask = np.ones((4, 4, 2), bool)
    a = np.array([4, 4, 4, 9, 9, FREE, FREE, FREE], np.uint8)
    sem[0:2, 0:2] = a.reshape(2, 2, 2)  # block (0, 0): 3 × 4 vs 2 × 9 → 4
    mask[2:4, 0:2] = False  # block (1, 0): nothing masked → ignore
    sem[0:2, 2:4] = 5
    mask[0:2, 2:4] = False
    sem[1, 3, 1], mask[1, 3, 1] = 2, True  # block (0, 1): the one masked sub-voxel decides → 2
    out = dense_target(sem, mask, (2, 2, 1))  # block (1, 1): all free, masked → free
    assert out.dtype == np.uint8 and out[..., 0].tolist() == [[4, 2], [IGNORE, FREE]]
    same = dense_target(sem, mask, (4, 4, 2))  # no pooling: GT inside the mask
    assert (same == np.where(mask, sem, IGNORE)).all()


def test_lss_depth_target_strides():
    K = np.array([[10.0, 0, 16], [0, 10, 8], [0, 0, 1]])
    labels = {"camera": np.array([0, 0, 0, 1], np.int16), "u": np.array([3.0, 5.0, 31.0, 4.0], np.float32),
              "v": np.array([3.0, 2.0, 15.0, 9.0], np.float32),
              "depth": np.array([10.0, 7.0, 3.0, 4.0], np.float32)}
    K_orig = {0: K, 1: K}
    K_in = np.stack([K, K])
    t8 = lss_depth_target(labels, K_orig, K_in, (16, 32), 8)
    t4 = lss_depth_target(labels, K_orig, K_in, (16, 32), 4)
    assert isinstance(t8, torch.Tensor) and t8.shape == (2, 2, 4) and t4.shape == (2, 4, 8)
    assert t8[0, 0, 0] == 7.0  # both near labels share the stride-8 cell: the nearest wins
    assert t4[0, 0, 0] == 10.0 and t4[0, 0, 1] == 7.0  # stride 4 separates them
    assert t8[0, 1, 3] == 3.0 and t4[0, 3, 7] == 3.0  # (31 + 0.5) / 8 → cell 3, / 4 → cell 7
    assert t8[1, 1, 0] == 4.0 and t4[1, 2, 1] == 4.0
    assert (t8 > 0).sum() == 3 and (t4 > 0).sum() == 4
    # A ×0.5 resize of the input maps original pixels to input ones through K_in · K_orig⁻¹.
    half = np.array([[0.5, 0, -0.25], [0, 0.5, -0.25], [0, 0, 1]])  # u' = (u + ½)·½ − ½
    t = lss_depth_target(labels, K_orig, np.stack([half @ K, half @ K]), (8, 16), 4)
    assert t.shape == (2, 2, 4) and t[0, 0, 0] == 7.0 and t[0, 1, 3] == 3.0



def test_label_voxel_target_is_the_sparse_rule_from_each_camera():
    """Rays from two cameras: each frees what it crosses from its own origin; end voxels keep the
    end points' class and win over another ray's crossing."""
    o = np.array([[0.5, 1.5, 1.5], [1.5, 0.5, 2.5]])
    d = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    dist, label = np.array([3.0, 3.0]), np.array([9, 4])
    pool = (o, d, dist, label, np.array([True, False]), np.ones(2))
    t = label_voxel_target(pool, GRID)
    assert np.array_equal(t, sparse_target(o, d, dist, label, GRID))
    assert t[3, 1, 1] == 9 and t[1, 3, 2] == 4
    assert t[:3, 1, 1].tolist() == [FREE] * 3 and t[1, :3, 2].tolist() == [FREE] * 3
    o2 = np.vstack([o, [[1.5, 1.5, 1.5]]])  # a third ray ending in voxel (1, 1, 1), which ray 0 crosses
    d2 = np.vstack([d, [[0.0, 0.0, 1.0]]])
    t2 = label_voxel_target((o2, d2, np.array([3.0, 3.0, 0.2]), np.array([9, 4, 7])), GRID)
    assert t2[1, 1, 1] == 7
