"""The ray–grid conventions module: each convention checked on hand-built cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from renderocc import raygrid

GRID = {"pc_range": [-1.2, -1.0, -0.6, 0.8, 1.0, 0.9], "voxel_size": [0.4, 0.5, 0.3], "shape": [5, 4, 5]}


def test_voxel_index_and_centres_agree():
    c = raygrid.voxel_centres(GRID)
    assert c.shape == (5, 4, 5, 3) and c[0, 0, 0].tolist() == pytest.approx([-1.0, -0.75, -0.45])
    ijk, inside = raygrid.voxel_index(c, GRID)
    assert inside.all() and (ijk == np.stack(np.indices((5, 4, 5)), -1)).all()
    _, inside = raygrid.voxel_index(np.array([[0.8, 0, 0], [0.79, 0, 0], [-1.21, 0, 0]]), GRID)
    assert inside.tolist() == [False, True, False]  # cells are half-open [lo, hi)


def test_trilinear_values_live_at_voxel_centres():
    g = torch.Generator().manual_seed(0)
    vol = torch.rand(2, 5, 4, 5, generator=g, dtype=torch.float64)
    centres = torch.from_numpy(raygrid.voxel_centres(GRID))
    torch.testing.assert_close(raygrid.trilinear(vol, centres, GRID), vol.permute(1, 2, 3, 0))
    # Corners and weights reproduce the sampled value; a point inside a cell weighs ≥ 1/8 on it.
    p = torch.rand(300, 3, generator=g, dtype=torch.float64) * torch.tensor([2.0, 2.0, 1.5]) + torch.tensor(
        [-1.2, -1.0, -0.6])
    idx, w = raygrid.trilinear_corners(p, GRID)
    torch.testing.assert_close((vol[0].reshape(-1)[idx] * w).sum(-1), raygrid.trilinear(vol[:1], p, GRID)[:, 0])
    ijk, _ = raygrid.voxel_index(p.numpy(), GRID)
    own = torch.from_numpy(raygrid.flat_index(ijk, GRID["shape"]))
    assert ((w * (idx == own[:, None])).sum(-1) >= 1 / 8 - 1e-12).all()


def test_sample_rule_is_the_kernels():
    o = torch.tensor([[-2.2, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 5.0, 0.0]], dtype=torch.float64)
    d = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0]], dtype=torch.float64)
    t, valid, points, hit, t_out = raygrid.sample_positions(o, d, GRID["pc_range"], 0.0, 0.1)
    # ray 0 enters at t = 1, leaves at 3: a span of exactly 20 steps gives 20 samples
    assert hit.tolist() == [True, True, False] and valid.sum(1).tolist() == [20, 8, 0]
    assert t[0, 0].item() == pytest.approx(1.05) and t[0, 19].item() == pytest.approx(2.95)
    torch.testing.assert_close(points[1, :8, 0], 0.05 + 0.1 * torch.arange(8, dtype=torch.float64))


def test_exact_walk_hand_case():
    hit = np.zeros((5, 4, 5), bool)
    # from voxel (0, 1, 2)'s centre along +x for 0.9 m: x −1.0 → −0.1 crosses voxels 0, 1, 2
    raygrid.mark_crossed(hit, np.array([[-1.0, -0.25, 0.0]]), np.array([[1.0, 0.0, 0.0]]), np.array([0.9]),
                         GRID["pc_range"], GRID["voxel_size"])
    assert sorted(map(tuple, np.argwhere(hit))) == [(0, 1, 2), (1, 1, 2), (2, 1, 2)]


DYADIC = {"pc_range": [-2.0, -2.0, -1.0, 2.0, 2.0, 1.0], "voxel_size": [0.5, 0.5, 0.5], "shape": [8, 8, 4]}


def _random_walk_case(grid: dict, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Three random layers (sparse to dense) and rays of every kind: inside and outside origins,
    axis-parallel directions, and (exact on the dyadic grid) diagonals from voxel centres whose
    crossings tie on every step, so the tie order matters."""
    rng = np.random.default_rng(seed)
    shape = grid["shape"]
    layers = np.stack([rng.random(shape) < p for p in (0.02, 0.15, 0.5)])
    lo, hi, vs = (np.array(v, np.float64) for v in (grid["pc_range"][:3], grid["pc_range"][3:], grid["voxel_size"]))
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
    ref = raygrid.first_hits(layers, origins, dirs, grid, backend="numpy")
    assert ref[2].any(1).all() and not ref[2].all(1).any()  # every layer is hit by some rays, missed by others
    assert (ref[0] == -1).any()  # and some rays miss the box
    for threads in (1, 3):
        got = raygrid.first_hits(layers, origins, dirs, grid, backend="extension", threads=threads)
        np.testing.assert_array_equal(got[0], ref[0])
        np.testing.assert_array_equal(got[1], ref[1])  # NaN where the ray misses, in both
        np.testing.assert_array_equal(got[2], ref[2])


def test_first_hits_rejects_an_unknown_backend():
    with pytest.raises(ValueError, match="backend"):
        raygrid.first_hits(np.zeros((1, 5, 4, 5), bool), np.zeros((1, 3)), np.ones((1, 3)), GRID, backend="gpu")
