"""The voxelisation baseline of `fit`: exact where the labels see everything, majority classes,
crossed voxels free."""

from __future__ import annotations

import numpy as np

from renderocc.fit.voxelize import voxelize_rays
from renderocc.geometry import Grid
from renderocc.ops import first_hits, mark_crossed

GRID = Grid((-4.0, -4.0, -1.0, 4.0, 4.0, 3.0), (0.5, 0.5, 0.5), (16, 16, 8))


def box_world() -> np.ndarray:
    """A solid 2 × 2 × 1.5 m box of class 3 standing on a one-layer floor of class 10; 17 = free."""
    gt = np.full(GRID.shape, 17, np.uint8)
    gt[:, :, 0] = 10
    gt[6:10, 6:10, 1:4] = 3
    return gt


def rays_around(gt: np.ndarray, n: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Rays from a ring of viewpoints around the box (all sides, several heights) to its first hit,
    ending just inside the voxel they hit, labelled with that voxel's class."""
    rng = np.random.default_rng(seed)
    ang = rng.uniform(0, 2 * np.pi, n)
    origins = np.stack([3.6 * np.cos(ang), 3.6 * np.sin(ang), rng.uniform(0.2, 2.8, n)], 1)
    target = np.stack([rng.uniform(-1.5, 1.5, n), rng.uniform(-1.5, 1.5, n), rng.uniform(-1.0, 1.0, n)], 1)
    d = target - origins
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    vox, exit_dist, hit = first_hits((gt < 17)[None], origins, d, GRID)
    hit = hit[0]
    o, d, vox, exit_dist = origins[hit], d[hit], vox[0][hit], exit_dist[0][hit]
    # a hair before the ray leaves the voxel it hits: the end point the LiDAR would give (a ray that only
    # grazes an edge of it for less than that is dropped, as a real return would not come from there)
    t = exit_dist - 1e-4
    ijk, inside = GRID.index(o + d * t[:, None])
    keep = inside & (gt[tuple(np.where(inside[:, None], ijk, 0).T)] < 17)
    return o[keep], d[keep], t[keep], gt[tuple(ijk[keep].T)].astype(np.int64)


def test_a_box_seen_from_all_sides_is_voxelised_exactly_where_it_is_seen():
    gt = box_world()
    o, d, t, lab = rays_around(gt, 60000)
    classes, crossed = voxelize_rays(o, d, t, lab, GRID, 17)
    seen = np.zeros(GRID.shape, bool)  # the voxels the rays observe: those they end in and those they cross
    ijk, inside = GRID.index(o + d * t[:, None])
    seen[tuple(ijk[inside].T)] = True
    surface = seen.copy()
    mark_crossed(seen, o, d, t - 1e-3, GRID)
    assert (classes[surface] == gt[surface]).all()          # every seen surface voxel: its class
    assert (classes[seen & ~surface] == 17).all()           # every crossed-only voxel: free
    assert (gt[seen & ~surface] == 17).all()                # ... and truly free: nothing was crossed through
    assert surface[6:10, 6:10, 3].all() and surface[6, 6:10, 1:4].all()  # the top and a side are seen whole
    assert (classes[~seen] == 17).all() and crossed[seen & ~surface].all()


def test_the_majority_of_the_end_points_names_the_class_and_ties_go_to_the_lower_class():
    o = np.zeros((6, 3))
    d = np.tile([1.0, 0.0, 0.0], (6, 1))
    t = np.full(6, 2.2)  # all end in the voxel at x ∈ [2, 2.5)
    lab = np.array([5, 5, 7, 7, 7, 255])  # 255: no class, no vote
    classes, crossed = voxelize_rays(o, d, t, lab, GRID, 17)
    assert classes[12, 8, 2] == 7 and (classes == 17).sum() == classes.size - 1
    classes, _ = voxelize_rays(o[:4], d[:4], t[:4], lab[:4], GRID, 17)
    assert classes[12, 8, 2] == 5
    assert crossed[8:13, 8, 2].all() and crossed.sum() == 5  # the end voxel is partly crossed too


def test_no_ray_no_occupancy():
    classes, crossed = voxelize_rays(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0), np.zeros(0, np.int64), GRID, 17)
    assert (classes == 17).all() and not crossed.any()
