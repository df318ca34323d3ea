"""BEV augmentation: one transform B of the grid frame moves features (cam2ego), rays and 3D targets
consistently — rendering the moved field along the moved rays gives the original rendering — and
switching it on changes neither the ray draw nor, when off, a single bit of an item."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tiny_run import tiny

from renderocc.classes import FREE, IGNORE
from renderocc.config import load_config, resolved
from renderocc.errors import UserError
from renderocc.geometry import Grid, ends_inside
from renderocc.ops import render_rays
from renderocc.store.reader import StoreReader
from renderocc.train import bev_aug as bev_module
from renderocc.train.bev_aug import BevAug, draw_bev_aug
from renderocc.train.dataset import RayDataset, draw_free_beams, draw_mask_rays, ends_in_grid
from renderocc.train.mask_rays import MaskPool, crosses_grid

# an off-centre box, square in x-y (so quarter turns map its lattice onto itself): centre (1, 2)
GRID = Grid((-2.0, -1.0, -1.0, 4.0, 5.0, 1.0), (0.5, 0.5, 0.5), (12, 12, 4))
CENTRE = (1.0, 2.0)


def config(reader, *more: str):
    return resolved(tiny(*more), reader.grid)


def draw_with(cfg, index: int, want) -> tuple[int, BevAug]:
    """The first epoch whose drawn transform for `index` satisfies `want`."""
    for epoch in range(64):
        aug = draw_bev_aug(cfg.data, cfg.grid.spec, cfg.seed, epoch, index)
        if aug is not None and want(aug):
            return epoch, aug
    raise AssertionError("no such draw in 64 epochs")


def render(density: np.ndarray, logits: np.ndarray, o: np.ndarray, d: np.ndarray, grid: Grid, step: float):
    out = render_rays(torch.from_numpy(density)[None], torch.from_numpy(logits)[None], torch.from_numpy(o),
                      torch.from_numpy(d), torch.zeros(len(o), dtype=torch.long), grid=grid, step=step,
                      backend="twin")
    return out.depth.numpy(), out.semantics.numpy(), out.opacity.numpy()


# -- the transform itself ------------------------------------------------------------------------
def test_matrix_is_the_composition_about_the_box_centre():
    aug = BevAug(flip_x=True, flip_y=False, angle=30.0, scale=1.1, centre=CENTRE)
    T, c = np.eye(4), np.eye(4)
    T[:2, 3], c[:2, 3] = CENTRE, np.negative(CENTRE)
    t = math.radians(30.0)
    R = np.array([[math.cos(t), -math.sin(t), 0, 0], [math.sin(t), math.cos(t), 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    expect = T @ np.diag([1.1, 1.1, 1, 1]) @ R @ np.diag([-1.0, 1, 1, 1]) @ c
    assert np.allclose(aug.matrix, expect, atol=1e-12)
    # flips about the centre map an off-centre box onto itself; z never moves
    corners = np.array([[-2.0, -1.0, -1.0], [4.0, 5.0, 1.0]])
    assert np.allclose(BevAug(True, True, centre=CENTRE).points(corners), [[4.0, 5.0, -1.0], [-2.0, -1.0, 1.0]])
    # rays: the labelled end point maps to B·end, directions stay unit, distance stretches by ‖L·d‖
    rng = np.random.default_rng(0)
    o, d = rng.normal(size=(50, 3)), rng.normal(size=(50, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    t = rng.uniform(0.5, 20, 50)
    o2, d2, stretch = aug.rays(o, d)
    assert np.allclose(np.linalg.norm(d2, axis=1), 1)
    assert np.allclose(o2 + d2 * (t * stretch)[:, None], aug.points(o + d * t[:, None]))
    assert np.allclose(stretch[np.abs(d[:, 2]) > 1 - 1e-12], 1.0)
    flat = np.array([[0.6, 0.8, 0.0]])
    assert np.allclose(aug.rays(np.zeros((1, 3)), flat)[2], 1.1)  # horizontal rays stretch by s


def test_draw_is_reproducible_off_by_default_and_uses_its_own_stream(small_store):
    r = StoreReader(small_store)
    cfg = config(r)
    assert draw_bev_aug(cfg.data, cfg.grid.spec, cfg.seed, 0, 0) is None  # defaults: off
    on = config(r, "data.bev_flip=true", "data.bev_rotate=22.5", "data.bev_scale=[0.95, 1.05]")
    a = [draw_bev_aug(on.data, on.grid.spec, on.seed, e, 1) for e in range(20)]
    assert a == [draw_bev_aug(on.data, on.grid.spec, on.seed, e, 1) for e in range(20)]
    assert len({x.angle for x in a}) == 20 and all(abs(x.angle) <= 22.5 and 0.95 <= x.scale <= 1.05 for x in a)
    assert 0 < sum(x.flip_x for x in a) < 20 and 0 < sum(x.flip_y for x in a) < 20
    assert all(x.centre == (0.0, 0.0) for x in a)  # the Occ3D box's centre
    assert bev_module.BEV_STREAM != 0  # rng([s, e, i, 0]) would be rng([s, e, i]): the item's own stream


# -- 1. rendering: the moved field along the moved rays renders what the original did ------------
@pytest.mark.parametrize("aug", [
    BevAug(flip_x=True, centre=CENTRE), BevAug(flip_y=True, centre=CENTRE), BevAug(True, True, centre=CENTRE),
    BevAug(angle=90.0, centre=CENTRE), BevAug(angle=-90.0, centre=CENTRE), BevAug(angle=180.0, centre=CENTRE),
    BevAug(flip_x=True, angle=90.0, centre=CENTRE),
], ids=["flip-x", "flip-y", "flip-xy", "rot90", "rot-90", "rot180", "flip-x-rot90"])
def test_flipped_and_rotated_sample_renders_the_same(aug):
    rng = np.random.default_rng(1)
    density = rng.uniform(0, 2.0, GRID.shape)
    logits = rng.normal(size=(*GRID.shape, 5))
    R = 300
    o = rng.uniform([-4, -3, -2], [6, 7, 2], (R, 3))  # inside and outside the box
    d = rng.uniform(GRID.lo, GRID.hi, (R, 3)) - o  # towards a point inside it
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    depth, sem, opa = render(density, logits, o, d, GRID, 0.05)
    o2, d2, stretch = aug.rays(o, d)
    depth2, sem2, opa2 = render(aug.voxels(density, GRID, 0.0), aug.voxels(logits, GRID, 0.0), o2, d2, GRID, 0.05)
    assert np.allclose(stretch, 1.0) and (opa > 0.5).mean() > 0.3
    assert np.allclose(depth2, depth, atol=1e-9) and np.allclose(opa2, opa, atol=1e-9)
    assert np.allclose(sem2, sem, atol=1e-9)


def test_half_turn_gather_equals_the_index_flip_of_both_axes():
    vol = np.random.default_rng(2).integers(0, 18, GRID.shape).astype(np.uint8)
    flipped = BevAug(True, True, centre=CENTRE).voxels(vol, GRID)  # index flip
    turned = BevAug(angle=180.0, centre=CENTRE).voxels(vol, GRID)  # nearest gather
    assert np.array_equal(flipped, vol[::-1, ::-1]) and np.array_equal(turned, flipped)
    assert np.array_equal(BevAug(angle=90.0, centre=CENTRE).voxels(vol, GRID), np.rot90(vol, 1, (0, 1)))


@pytest.mark.parametrize("scale", [1.25, 0.8])
def test_scaled_sample_renders_the_same_surface(scale):
    """x-y scale is a warp, exact for opaque surfaces: a z-layered field (ground below z = 0) resamples
    onto itself, and each ray's hit moves to B·hit, its depth scaled by the ray's stretch ‖L·d‖."""
    grid = Grid((-2.0, -1.0, -1.0, 4.0, 5.0, 1.0), (0.5, 0.5, 0.05), (12, 12, 40))
    z = grid.axis_centres(2)
    density = np.broadcast_to(np.where(z < 0, 1e5, 0.0), grid.shape).copy()
    layer = np.random.default_rng(3).normal(size=(40, 4))
    layer[14:26] = layer[20]  # one class vector around the surface
    logits = np.broadcast_to(layer, (*grid.shape, 4)).copy()
    rng = np.random.default_rng(4)
    R = 60
    o = np.c_[rng.uniform(0.7, 1.3, R), rng.uniform(1.7, 2.3, R), np.full(R, 0.8)]
    d = np.c_[rng.uniform(-0.8, 0.8, (R, 2)), -np.ones(R)]
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    aug = BevAug(angle=20.0, scale=scale, centre=CENTRE)
    depth, sem, opa = render(density, logits, o, d, grid, 0.001)
    o2, d2, stretch = aug.rays(o, d)
    moved = aug.voxels(density, grid, 0.0)
    assert np.array_equal(moved[2:10, 2:10], density[2:10, 2:10])
    depth2, sem2, opa2 = render(moved, aug.voxels(logits, grid, 0.0), o2, d2, grid, 0.001)
    assert (opa > 0.999).all() and (opa2 > 0.999).all() and not np.allclose(stretch, 1.0)
    assert np.allclose(depth2, depth * stretch, atol=1e-3)  # the surface's penetration depends on the slope
    assert np.allclose(o2 + d2 * depth2[:, None], aug.points(o + d * depth[:, None]), atol=1e-3)
    assert np.allclose(sem2, sem, atol=1e-3)


# -- 2.-4. dataset items --------------------------------------------------------------------------
def test_flipped_item_has_the_same_rays_flipped_and_cam2ego_follows(small_store):
    r = StoreReader(small_store)
    for rays in ("512", "100000"):  # a weighted draw, and every ray of the pool in order
        more = [f"data.rays={rays}", "data.aux_without_motion_masks='keep'", "data.free_beams=64"]
        off, on = config(r, *more), config(r, *more, "data.bev_flip=true")
        for want in (lambda a: a.flip_x and a.flip_y, lambda a: a.flip_x != a.flip_y):
            epoch, aug = draw_with(on, 1, want)
            a, b = RayDataset(r, off, train=True)[(epoch, 1)], RayDataset(r, on, train=True)[(epoch, 1)]
            assert torch.equal(a["valid"], b["valid"]) and a["valid"].sum() > 100
            for k in ("label", "is_key", "images", "intrinsics", "depth_target", "free_valid"):
                assert torch.equal(a[k], b[k]), k
            B = torch.from_numpy(aug.matrix).float()
            v = a["valid"]
            assert torch.allclose(b["origins"][v], a["origins"][v] @ B[:3, :3].T + B[:3, 3], atol=1e-5)
            assert torch.allclose(b["directions"][v], a["directions"][v] @ B[:3, :3].T, atol=1e-6)
            assert torch.allclose(b["ends"], a["ends"], atol=1e-5)
            assert torch.allclose(b["free_origins"], a["free_origins"] @ B[:3, :3].T + B[:3, 3], atol=1e-5)
            assert torch.allclose(b["free_directions"], a["free_directions"] @ B[:3, :3].T, atol=1e-6)
            # 4. the lifted features move by B: cam2ego = B·cam2ego
            expect = torch.from_numpy(aug.matrix @ a["cam2ego"].double().numpy()).float()
            assert torch.allclose(b["cam2ego"], expect, atol=1e-6)


def test_rotated_and_scaled_item_rays_map_back_to_the_original_labels(small_store):
    r = StoreReader(small_store)
    more = ["data.rays=100000", "data.aux_without_motion_masks='keep'"]
    on = config(r, *more, "data.bev_rotate=30", "data.bev_scale=[0.9, 1.1]")
    epoch, aug = draw_with(on, 1, lambda a: abs(a.angle) > 15)
    item = RayDataset(r, on, train=True)[(epoch, 1)]
    # the unaugmented label rays of the item, unfiltered, and which of them end in the box once moved
    frames = RayDataset(r, config(r, *more), train=True).label_frames(1)
    o = np.concatenate([f["origins"] for f, _ in frames])
    d = np.concatenate([f["directions"] for f, _ in frames])
    t = np.concatenate([f["ends"] for f, _ in frames])
    lab = np.concatenate([f["label"] for f, _ in frames])
    o2, d2, stretch = aug.rays(o, d)
    keep = ends_inside(o2, d2, t * stretch, on.grid.spec)
    before = ends_inside(o, d, t, on.grid.spec)
    assert (keep != before).any()  # rays move in and out of the box: the filter runs after the transform
    v = item["valid"].numpy()
    assert v.sum() == keep.sum()
    assert np.array_equal(item["label"].numpy()[v], lab[keep])
    end = (item["origins"] + item["directions"] * item["ends"][:, None]).double().numpy()[v]
    back = end @ np.linalg.inv(aug.matrix)[:3, :3].T + np.linalg.inv(aug.matrix)[:3, 3]
    assert np.allclose(back, (o + d * t[:, None])[keep], atol=2e-4)
    assert np.allclose(np.linalg.norm(item["directions"].numpy()[v], axis=1), 1, atol=1e-6)
    epoch2, aug2 = draw_with(on, 1, lambda a: a != aug)  # another epoch: another transform
    assert not torch.equal(RayDataset(r, on, train=True)[(epoch2, 1)]["cam2ego"], item["cam2ego"])


def test_dense_target_is_flipped_and_resampled(small_store):
    r = StoreReader(small_store)
    off, flip = config(r, "supervision='3d'"), config(r, "supervision='3d'", "data.bev_flip=true")
    epoch, aug = draw_with(flip, 0, lambda a: a.flip_x or a.flip_y)
    base = RayDataset(r, off, train=True)[(epoch, 0)]["occ_target"].numpy()
    got = RayDataset(r, flip, train=True)[(epoch, 0)]["occ_target"].numpy()
    axes = tuple(a for a, f in enumerate((aug.flip_x, aug.flip_y)) if f)
    assert (base < FREE).any() and np.array_equal(got, np.flip(base, axes))
    rot = config(r, "supervision='3d'", "data.bev_rotate=40")
    epoch, aug = draw_with(rot, 0, lambda a: abs(a.angle) > 20)
    base = RayDataset(r, off, train=True)[(epoch, 0)]["occ_target"].numpy()
    got = RayDataset(r, rot, train=True)[(epoch, 0)]["occ_target"].numpy()
    grid = rot.grid.spec
    Binv = np.linalg.inv(aug.matrix)
    src = grid.centres() @ Binv[:3, :3].T + Binv[:3, 3]
    ijk, inside = grid.index(src)
    rel = (src - grid.lo) / np.asarray(grid.voxel) % 1.0  # where in its source voxel each centre lands
    well = inside & ((rel > 0.05) & (rel < 0.95)).all(-1)
    i, j, k = (ijk[..., a][well] for a in range(3))
    assert well.mean() > 0.5 and np.array_equal(got[well], base[i, j, k])
    assert (got[~inside] == IGNORE).all() and (~inside).any()  # the turned-in corners: no label


def test_sparse_target_is_voxelised_from_the_flipped_rays(small_store):
    r = StoreReader(small_store)
    off = config(r, "supervision='lidar-sparse'")
    on = config(r, "supervision='lidar-sparse'", "data.bev_flip=true")
    epoch, aug = draw_with(on, 0, lambda a: a.flip_x and a.flip_y)
    base = RayDataset(r, off, train=True)[(epoch, 0)]["occ_target"].numpy()
    got = RayDataset(r, on, train=True)[(epoch, 0)]["occ_target"].numpy()
    assert (base < FREE).sum() > 50
    assert np.array_equal(got, base[::-1, ::-1])


def test_mask_rays_and_free_beams_are_moved_then_filtered():
    grid = Grid((-4.0, -10.0, -1.0, 36.0, 10.0, 5.4), (0.8, 0.8, 0.8), (50, 25, 8))
    K = np.array([[40.0, 0, 32], [0, 40, 16], [0, 0, 1]])
    look_x = np.array([[0.0, 0, 1, 0], [-1, 0, 0, 0], [0, -1, 0, 1.5], [0, 0, 0, 1]])  # camera z → ego x
    v, u = np.mgrid[0:32:3, 0:64:3]
    n = u.size
    pool = MaskPool(np.zeros(n, np.int16), np.zeros(n, np.int16), u.ravel().astype(np.int32),
                    v.ravel().astype(np.int32), np.arange(n) % 5, np.ones(n), [K[None]], [look_x[None]])
    aug = BevAug(flip_x=True, angle=75.0, scale=1.05, centre=(16.0, 0.0))
    got = draw_mask_rays(pool, grid, n, 0.0, None, aug)
    o, d = pool.rays(np.arange(n))
    o2, d2, _ = aug.rays(o, d)
    ok = crosses_grid(o2, d2, grid)
    m = int(ok.sum())
    assert 0 < m < n and got["valid"].sum() == m and torch.isnan(got["ends"][:m]).all()
    assert np.allclose(got["origins"][:m].numpy(), o2[ok], atol=1e-5)
    assert np.allclose(got["directions"][:m].numpy(), d2[ok], atol=1e-6)
    assert np.array_equal(got["label"][:m].numpy(), pool.label[ok])
    beams = {"ring": np.zeros(40, np.int16), "origin": np.tile(np.float32([0, 0, 1.8]), (40, 1)),
             "direction": d[:40].astype(np.float32)}
    free = draw_free_beams(beams, 16, None, aug)
    pick = np.linspace(0, 39, 16).round().astype(np.int64)
    fo, fd, _ = aug.rays(beams["origin"][pick], beams["direction"][pick])
    assert free["free_valid"].all() and np.allclose(free["free_origins"].numpy(), fo, atol=1e-5)
    assert np.allclose(free["free_directions"].numpy(), fd, atol=1e-6)


# -- 5. config ------------------------------------------------------------------------------------
@pytest.mark.parametrize("item, message", [
    ("data.bev_scale=[1.1, 0.9]", "data.bev_scale [1.1, 0.9]: min above max"),
    ("data.bev_scale=[0, 1]", "data.bev_scale must be > 0, got [0, 1]"),
    ("data.bev_scale=[1, nan]", "data.bev_scale must be finite"),
    ("data.bev_scale=1.05", "data.bev_scale expects [float, float], got 1.05"),
    ("data.bev_rotate=-5", "data.bev_rotate must be ≥ 0, got -5"),
    ("data.bev_rotate=270", "data.bev_rotate must be ≤ 180, got 270"),
    ("data.bev_rotate=inf", "data.bev_rotate must be finite"),
    ("data.bev_flip=1", "data.bev_flip expects bool, got 1"),
])
def test_bad_bev_values_are_one_line_errors(item, message):
    with pytest.raises(UserError) as e:
        load_config("demo", [item])
    assert message in e.value.message and "\n" not in e.value.message


def test_recipe_values_load():
    d = load_config("demo", ["data.bev_flip=true", "data.bev_rotate=22.5", "data.bev_scale=[0.95, 1.05]"]).data
    assert d.bev_flip is True and d.bev_rotate == 22.5 and d.bev_scale == (0.95, 1.05)
    d = load_config("demo").data
    assert d.bev_flip is False and d.bev_rotate == 0.0 and d.bev_scale == (1.0, 1.0)


# -- 6. off means untouched -----------------------------------------------------------------------
def test_defaults_and_evaluation_never_touch_an_item(small_store, monkeypatch):
    r = StoreReader(small_store)

    def boom(*args, **kwargs):
        raise AssertionError("the BEV transform ran")

    for name in ("points", "poses", "rays", "ray_dict", "voxels"):
        monkeypatch.setattr(BevAug, name, boom)
    for sup in ("2d", "3d", "lidar-sparse"):
        cfg = config(r, f"supervision='{sup}'", "data.aux_without_motion_masks='keep'", "data.free_beams=64")
        a, b = RayDataset(r, cfg, train=True)[(3, 2)], RayDataset(r, cfg, train=True)[(3, 2)]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # evaluation (threshold selection) never augments, whatever the config
    on = config(r, "data.bev_flip=true", "data.bev_rotate=22.5")
    item = RayDataset(r, on, train=False)[2]
    s = r.sample(2)
    raw = np.stack([np.asarray(s["cameras"][n]["cam2ego"], np.float64) for n in r.cameras])
    assert torch.equal(item["cam2ego"], torch.from_numpy(raw).float())
    # a draw that is the identity is skipped too
    flips = config(r, "data.bev_flip=true")
    epoch = next(e for e in range(64) if draw_bev_aug(flips.data, flips.grid.spec, flips.seed, e, 2) is None)
    RayDataset(r, flips, train=True)[(epoch, 2)]  # would raise had any transform run


def test_ends_in_grid_pool_of_moved_frames_matches_the_item(small_store):
    """The dataset filters the moved rays with the same `ends_in_grid` that `renderocc fit` uses."""
    r = StoreReader(small_store)
    on = config(r, "data.rays=100000", "data.bev_rotate=45")
    epoch, aug = draw_with(on, 3, lambda a: abs(a.angle) > 10)
    ds = RayDataset(r, on, train=True)
    pool = ends_in_grid([(aug.ray_dict(f), w) for f, w in ds.label_frames(3)], on.grid.spec)
    item = ds[(epoch, 3)]
    v = item["valid"]
    assert int(v.sum()) == len(pool[0])
    assert np.allclose(item["origins"][v].numpy(), pool[0], atol=1e-5)
    assert np.allclose(item["ends"][v].numpy(), pool[2], atol=1e-4)
