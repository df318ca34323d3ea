"""The geometry floor: the Grid contract and each ray–grid convention, checked on hand-built cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from renderocc.geometry import OCC3D_GRID, Grid, GridError, Rays
from renderocc.geometry.grid import MAX_VOXELS
from renderocc.geometry.sampling import sample_positions, trilinear, trilinear_corners
from renderocc.ops import first_hits, mark_crossed, ray_optical_depth

GRID = Grid((-1.2, -1.0, -0.6, 0.8, 1.0, 0.9), (0.4, 0.5, 0.3), (5, 4, 5))


def test_voxel_index_and_centres_agree():
    c = GRID.centres()
    assert c.shape == (5, 4, 5, 3) and c[0, 0, 0].tolist() == pytest.approx([-1.0, -0.75, -0.45])
    ijk, inside = GRID.index(c)
    assert inside.all() and (ijk == np.stack(np.indices((5, 4, 5)), -1)).all()
    _, inside = GRID.index(np.array([[0.8, 0, 0], [0.79, 0, 0], [-1.21, 0, 0]]))
    assert inside.tolist() == [False, True, False]  # cells are half-open [lo, hi)


def test_a_grid_is_checked_when_built():
    assert Grid.tiling([-40, -40, -1, 40, 40, 5.4], 0.4) == OCC3D_GRID
    assert Grid.from_record(OCC3D_GRID.to_record()) == OCC3D_GRID
    assert OCC3D_GRID.edge == 0.4 and Grid.tiling(GRID.box, (0.4, 0.5, 0.3)).edge == 0.5  # the longest edge
    for box, voxel, why in [((0, 0, 0, 1, 1, 1), 0.3, "does not tile"), ((0, 0, 0, 1, 1, -1), 0.5, "min < max"),
                            ((0, 0, 0, 1, 1, 1), 0, "positive"), ((0, 0, 0, 1, 1, float("nan")), 0.5, "finite"),
                            ((-40, -40, -1, 40, 40, 5.4), 0.004, "too small")]:
        with pytest.raises(GridError, match=why):
            Grid.tiling(box, voxel)
    with pytest.raises(GridError, match="does not tile"):
        Grid((0, 0, 0, 1, 1, 1), (0.5, 0.5, 0.5), (2, 2, 3))  # a shape that disagrees with box and voxel
    assert MAX_VOXELS > OCC3D_GRID.num_voxels * 50  # room for any published grid (UniOcc's: 2x Occ3D's)


def test_coarsens_says_how_a_model_grid_meets_the_labels():
    box = OCC3D_GRID.box
    assert OCC3D_GRID.coarsens(OCC3D_GRID).mode == "same"
    pool = Grid.tiling(box, 0.8).coarsens(OCC3D_GRID)
    assert (pool.mode, pool.factor, pool.target_grid.shape) == ("pool", (2, 2, 2), (100, 100, 8))
    assert Grid.tiling(box, (0.8, 0.8, 0.4)).coarsens(OCC3D_GRID).factor == (2, 2, 1)
    fine = Grid.tiling(box, 0.32).coarsens(OCC3D_GRID)  # UniOcc's 250 x 250 x 20
    assert (fine.mode, fine.model.shape, fine.target_grid) == ("interpolate", (250, 250, 20), OCC3D_GRID)
    with pytest.raises(GridError, match="neither a whole multiple"):
        Grid.tiling(box, (0.5, 0.5, 0.4)).coarsens(OCC3D_GRID)   # tiles its box, but scores against nothing
    with pytest.raises(GridError, match="does not cover"):
        Grid.tiling((-20, -20, -1, 20, 20, 5.4), 0.4).coarsens(OCC3D_GRID)
    with pytest.raises(GridError, match="share the labels' box"):
        Grid.tiling((-40, -40, -1.4, 40, 40, 5.8), 0.8).coarsens(OCC3D_GRID)


def test_scoring_maps_model_values_onto_the_label_grid():
    labels = Grid.tiling((0, 0, 0, 1.6, 1.6, 0.8), 0.4)
    pool = Grid.tiling(labels.box, 0.8).coarsens(labels)
    coarse = torch.arange(8.0).reshape(1, 2, 2, 2)
    np.testing.assert_array_equal(pool.to_labels(coarse)[0].numpy(), np.kron(coarse[0].numpy(), np.ones((2, 2, 2))))
    np.testing.assert_array_equal(pool.to_labels_numpy(coarse[0].numpy()), pool.to_labels(coarse)[0].numpy())
    # interpolation reproduces a linear field exactly at label centres inside the model's outermost centres
    fine = Grid.tiling(labels.box, 0.2).coarsens(labels)
    field = lambda p: 1.0 + 2.0 * p[..., 0] - 3.0 * p[..., 1] + 0.5 * p[..., 2]  # noqa: E731
    vol = torch.from_numpy(field(fine.model.centres()))[None]
    got = fine.to_labels(vol)[0].numpy()
    np.testing.assert_allclose(got, field(labels.centres()), atol=1e-9)
    # the numpy form names the model voxel holding each label centre
    idx = fine.to_labels_numpy(np.arange(fine.model.num_voxels).reshape(fine.model.shape))
    ijk, _ = fine.model.index(labels.centres())
    np.testing.assert_array_equal(idx, fine.model.flat(ijk))


def test_trilinear_values_live_at_voxel_centres():
    g = torch.Generator().manual_seed(0)
    vol = torch.rand(2, 5, 4, 5, generator=g, dtype=torch.float64)
    centres = torch.from_numpy(GRID.centres())
    torch.testing.assert_close(trilinear(vol, centres, GRID), vol.permute(1, 2, 3, 0))
    # Corners and weights reproduce the sampled value; a point inside a cell weighs ≥ 1/8 on it.
    p = torch.rand(300, 3, generator=g, dtype=torch.float64) * torch.tensor([2.0, 2.0, 1.5]) + torch.tensor(
        [-1.2, -1.0, -0.6])
    idx, w = trilinear_corners(p, GRID)
    torch.testing.assert_close((vol[0].reshape(-1)[idx] * w).sum(-1), trilinear(vol[:1], p, GRID)[:, 0])
    ijk, _ = GRID.index(p.numpy())
    own = torch.from_numpy(GRID.flat(ijk))
    assert ((w * (idx == own[:, None])).sum(-1) >= 1 / 8 - 1e-12).all()


def test_sample_rule_is_the_kernels(ops):
    o = torch.tensor([[-2.2, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 5.0, 0.0]], dtype=torch.float64)
    d = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0]], dtype=torch.float64)
    t, valid, points, hit, t_out = sample_positions(o, d, GRID.box, 0.0, 0.1)
    # ray 0 enters at t = 1, leaves at 3: a span of exactly 20 steps gives 20 samples
    assert hit.tolist() == [True, True, False] and valid.sum(1).tolist() == [20, 8, 0]
    assert t[0, 0].item() == pytest.approx(1.05) and t[0, 19].item() == pytest.approx(2.95)
    torch.testing.assert_close(points[1, :8, 0], 0.05 + 0.1 * torch.arange(8, dtype=torch.float64))
    # the compiled kernel counts the same samples, and puts them at the same t: with a density of 1
    # the optical depth up to t = t_k + 0.01 is step x (k + 1)
    density = torch.ones((1, *GRID.shape), dtype=torch.float64)
    b = torch.zeros(3, dtype=torch.long)
    ends = torch.stack([t[:, 0] + 0.01, t[:, 4] + 0.01, torch.full((3,), 1e4, dtype=torch.float64)], 1)
    tau, count = ray_optical_depth(density, o, d, b, ends, grid=GRID, step=0.1, backend="compiled")
    assert count[:, 2].tolist() == [20, 8, 0]
    assert count[:2, :2].tolist() == [[1, 5], [1, 5]]
    torch.testing.assert_close(tau[:2, :2], torch.tensor([[0.1, 0.5], [0.1, 0.5]], dtype=torch.float64))


def test_exact_walk_hand_case():
    hit = np.zeros((5, 4, 5), bool)
    # from voxel (0, 1, 2)'s centre along +x for 0.9 m: x −1.0 → −0.1 crosses voxels 0, 1, 2
    mark_crossed(hit, np.array([[-1.0, -0.25, 0.0]]), np.array([[1.0, 0.0, 0.0]]), np.array([0.9]), GRID)
    assert sorted(map(tuple, np.argwhere(hit))) == [(0, 1, 2), (1, 1, 2), (2, 1, 2)]


DYADIC = Grid((-2.0, -2.0, -1.0, 2.0, 2.0, 1.0), (0.5, 0.5, 0.5), (8, 8, 4))


def _random_walk_case(grid: Grid, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Three random layers (sparse to dense) and rays of every kind: inside and outside origins,
    axis-parallel directions, and (exact on the dyadic grid) diagonals from voxel centres whose
    crossings tie on every step, so the tie order matters."""
    rng = np.random.default_rng(seed)
    shape = grid.shape
    layers = np.stack([rng.random(shape) < p for p in (0.02, 0.15, 0.5)])
    lo, hi, vs = grid.lo, grid.hi, np.asarray(grid.voxel)
    n = 3000
    origins = rng.uniform(lo - 1.0, hi + 1.0, (n, 3))
    dirs = rng.normal(size=(n, 3))
    dirs[:300] *= rng.random((300, 3)) < 0.5  # zero components: never crosses that axis
    dirs[:300, 0] += dirs[:300].any(1) == 0
    origins[300:900] = lo + vs * (rng.integers(0, shape, (600, 3)) + 0.5)
    dirs[300:900] = rng.choice([-1.0, 0.0, 1.0], (600, 3))
    dirs[300:900, 2] += dirs[300:900].any(1) == 0
    dirs[300:900] *= vs
    return layers, origins, dirs / np.linalg.norm(dirs, axis=1, keepdims=True)


@pytest.mark.parametrize(("grid", "seed"), [(GRID, 0), (GRID, 1), (DYADIC, 2), (DYADIC, 3)])
def test_first_hits_extension_walk_equals_the_numpy_walk(ops, grid, seed):
    """The C++ walk is a faster copy of the numpy loop: same voxels, bit-identical distances,
    whatever the thread split."""
    layers, origins, dirs = _random_walk_case(grid, seed)
    ref = first_hits(layers, origins, dirs, grid, backend="twin")
    assert ref[2].any(1).all() and not ref[2].all(1).any()  # every layer is hit by some rays, missed by others
    assert (ref[0] == -1).any()  # and some rays miss the box
    for threads in (1, 3):
        got = first_hits(layers, origins, dirs, grid, backend="compiled", threads=threads)
        np.testing.assert_array_equal(got[0], ref[0])
        np.testing.assert_array_equal(got[1], ref[1])  # NaN where the ray misses, in both
        np.testing.assert_array_equal(got[2], ref[2])


def test_first_hits_rejects_an_unknown_backend():
    with pytest.raises(ValueError, match="backend"):
        first_hits(np.zeros((1, 5, 4, 5), bool), np.zeros((1, 3)), np.ones((1, 3)), GRID, backend="gpu")


def test_rays_record_selects_rows_of_every_field():
    r = Rays(np.zeros((3, 3)), np.tile([1.0, 0.0, 0.0], (3, 1)), np.array([1.0, 2.0, np.nan]), np.array([0, 1, 1]))
    s = r.select(np.array([False, True, True]))
    assert len(s) == 2 and s.batch_index.tolist() == [1, 1] and s.label is None
    np.testing.assert_array_equal(s.end_points()[0], [2.0, 0.0, 0.0])
    assert np.isnan(s.end_points()[1]).all()  # no depth: no end point
