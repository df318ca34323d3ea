"""Free beams: LiDAR beams without a return, from detection (synthetic truth, real firing order)
through the store (schema 2, old stores still read) to the dataset and the loss term."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from renderocc.classes import FREE
from renderocc.cli import main
from renderocc.errors import UserError
from renderocc.geometry import Grid
from renderocc.prep import freebeams as fb
from renderocc.prep.nuscenes import pose
from renderocc.store import layout, writer
from renderocc.store.reader import StoreReader
from renderocc.store.validate import validate
from renderocc.synth import lidar as lid


def keyframes(root: Path) -> list[dict]:
    """(sample_data token, cloud, lidar2ego, seconds since the scene start) of every LiDAR keyframe."""
    from nuscenes.nuscenes import NuScenes

    nusc = NuScenes("v1.0-mini", str(root), verbose=False)
    out = []
    for s in nusc.sample:
        sd = nusc.get("sample_data", s["data"]["LIDAR_TOP"])
        scene = nusc.get("scene", s["scene_token"])
        t0 = nusc.get("sample", scene["first_sample_token"])["timestamp"]
        out.append({"token": sd["token"], "t": (sd["timestamp"] - t0) * 1e-6,
                    "points": np.fromfile(root / sd["filename"], np.float32).reshape(-1, 5),
                    "lidar2ego": pose(nusc.get("calibrated_sensor", sd["calibrated_sensor_token"]))})
    return out


# -- detection --------------------------------------------------------------------------------------
def test_detection_agrees_with_the_synthetic_lidar_truth(synth_dataset):
    tp = kept = truth_up = raw_tp = truth = 0
    for k in keyframes(synth_dataset):
        with np.load(synth_dataset / "synth_truth" / "beams" / f"{k['token']}.npz") as z:
            status = z["status"]
        nr = fb.detect(k["points"])
        assert nr.mode == "azimuth-bins" and (nr.n_rings, nr.n_columns) == status.shape
        # directions: the model's beam grid, up to the ring elevation's estimate
        err = np.degrees(np.arccos(np.clip((nr.dirs * lid.LidarGrid().dirs[nr.ring, nr.column]).sum(1), -1, 1)))
        assert err.max() < 0.1
        got = status[nr.ring, nr.column]
        raw_tp += int((got == lid.BEAM_NO_HIT).sum())
        truth += int((status == lid.BEAM_NO_HIT).sum())
        up = (nr.dirs @ k["lidar2ego"][:3, :3].T)[:, 2] >= -1e-9
        sel = up & ~nr.isolated
        tp += int((got[sel] == lid.BEAM_NO_HIT).sum())
        kept += int(sel.sum())
        truth_up += int((status[np.sin(lid.ELEVATIONS) >= -1e-9] == lid.BEAM_NO_HIT).sum())
        assert len(fb.free_beams(k["points"], k["lidar2ego"])["ring"]) == sel.sum()
    assert raw_tp == truth > 0                       # every empty beam of the model is found
    assert kept > 1000 and tp / kept > 0.995         # kept beams: dropouts removed by the erosion
    assert tp / truth_up > 0.85                      # recall of the upward truth (run ends eroded)


def test_kept_beams_cross_only_free_space_in_the_world_truth(synth_dataset):
    """Kept beams (detected directions, in the ego frame) against the world at the keyframe: its
    solids exactly (no solid within range), and its voxelised truth (`--gt world`'s semantics)."""
    from renderocc.synth import occ_gt
    from renderocc.synth.populate import build_world
    from renderocc.synth.raycast import intersect
    from renderocc.synth.writer import KEYFRAME_US

    frames = keyframes(synth_dataset)
    world = build_world(np.random.default_rng([0, 0, 0]), (len(frames) - 1) * KEYFRAME_US * 1e-6)
    lo, hi, vs = occ_gt.PC_RANGE[:3], occ_gt.PC_RANGE[3:], occ_gt.VOXEL
    rng = np.random.default_rng(0)
    solid = n_beams = occ_len = in_len = 0
    for k in frames[::3]:
        beams = fb.free_beams(k["points"], k["lidar2ego"])
        pick = rng.choice(len(beams["ring"]), 300, replace=False)
        o, d = beams["origin"][pick].astype(np.float64), beams["direction"][pick].astype(np.float64)
        ego = world.ego_pose(k["t"])
        prims, ow, dw = world.prims_at(k["t"]), (ego @ np.r_[o[0], 1.0])[:3], d @ ego[:3, :3].T
        first = np.full(len(pick), np.inf)
        for i in range(len(prims)):
            first = np.minimum(first, intersect(prims, i, ow, dw[:, 0], dw[:, 1], dw[:, 2]))
        solid += int((first < lid.MAX_RANGE).sum())
        n_beams += len(pick)
        sem = occ_gt.semantics(world, k["t"])          # the world's voxelised solids, ego frame
        t = np.arange(0.05, 120, 0.05)
        p = o[:, None] + d[:, None] * t[None, :, None]
        inside = ((p > lo) & (p < hi)).all(-1)
        idx = np.floor((p - lo) / vs).astype(np.int64).clip(0, np.array(occ_gt.SHAPE) - 1)
        occ_len += int(((sem[idx[..., 0], idx[..., 1], idx[..., 2]] != FREE) & inside).sum())
        in_len += int(inside.sum())
        assert inside.any(1).all()
    assert solid <= 0.01 * n_beams, (solid, n_beams)   # only the rare dropout next to sky
    # a voxel is occupied when any solid reaches into it, so a beam passing within 0.4 m of a solid
    # (over a truck, beside a tree crown) crosses an occupied voxel without touching the solid
    assert occ_len < 0.02 * in_len, (occ_len, in_len)


def test_detection_on_a_real_keyframe_uses_the_firing_order(real_fixture):
    k = keyframes(real_fixture)[0]
    nr = fb.detect(k["points"])
    assert nr.mode == "firing-order" and nr.n_rings == 32 and 1070 <= nr.n_columns <= 1100
    np.testing.assert_allclose(np.degrees(nr.elevation), fb.HDL32E_ELEVATIONS_DEG, atol=0.5)
    beams = fb.free_beams(k["points"], k["lidar2ego"])
    assert 300 < len(beams["ring"]) < 5000
    assert (beams["direction"][:, 2] >= 0).all() and beams["ring"].min() >= 20   # none into the ego body
    np.testing.assert_allclose(beams["origin"], np.broadcast_to(k["lidar2ego"][:3, 3], beams["origin"].shape),
                               atol=1e-5)


def _ring_elevations_per_ring(points, ring, n_rings, valid):
    """The per-ring loop `ring_elevations` replaced (one np.median per ring): the reference."""
    rng = np.linalg.norm(points[:, :3], axis=1)
    el_pt = np.arctan2(points[:, 2], np.hypot(points[:, 0], points[:, 1]))
    el = np.full(n_rings, np.nan)
    for r in range(n_rings):
        m = valid & (ring == r)
        use = m & (rng >= fb.FAR_RANGE) if (m & (rng >= fb.FAR_RANGE)).sum() >= 10 else m
        if use.any():
            el[r] = np.median(el_pt[use])
    missing = np.isnan(el)   # 32 rings: the HDL-32E table fills the gaps
    el[missing] = np.deg2rad(fb.HDL32E_ELEVATIONS_DEG[missing])
    return el


def _firing_azimuths_per_ring(points, R):
    """Per ring: np.interp over the columns of np.unwrap of the far (else all) returns' azimuths."""
    C = len(points) // R
    rng = np.linalg.norm(points[:, :3], axis=1)
    empty = (rng < fb.NO_RETURN_RANGE).reshape(C, R).T
    far = (rng >= fb.FAR_RANGE).reshape(C, R).T
    az_pt = np.arctan2(points[:, 1], points[:, 0]).reshape(C, R).T
    cols, az = np.arange(C), np.full((R, C), np.nan)
    for r in range(R):
        ok = far[r] if far[r].sum() >= 10 else ~empty[r]
        if ok.sum() >= 2:
            az[r] = np.interp(cols, cols[ok], np.unwrap(az_pt[r, ok]))
    return az


def test_vectorised_detection_is_bit_identical_to_the_per_ring_loops(real_fixture, synth_dataset):
    """The one-sort medians and all-rings unwrap give exactly the per-ring np.median / np.unwrap
    answers (prep's stored free beams did not change), on real keyframes (firing order, also with
    NaN elevations) and on synthetic ones (azimuth bins)."""
    real = [k["points"] for k in keyframes(real_fixture)[:3]]
    synth = [k["points"] for k in keyframes(synth_dataset)[:2]]
    for pts in real + synth:
        ring = pts[:, 4].astype(np.int64)
        valid = np.linalg.norm(pts[:, :3], axis=1) >= fb.NO_RETURN_RANGE
        np.testing.assert_array_equal(fb.ring_elevations(pts, ring, 32, valid),
                                      _ring_elevations_per_ring(pts, ring, 32, valid))
        np.testing.assert_array_equal(fb.point_range(pts), np.linalg.norm(pts[:, :3], axis=1))
    for pts in real:
        nr = fb.detect(pts)
        az = _firing_azimuths_per_ring(pts, 32)
        el = _ring_elevations_per_ring(pts, np.arange(len(pts)) % 32, 32,
                                       np.linalg.norm(pts[:, :3], axis=1) >= fb.NO_RETURN_RANGE)
        rr, cc = nr.ring.astype(np.int64), nr.column
        want = np.stack([np.cos(el[rr]) * np.cos(az[rr, cc]), np.cos(el[rr]) * np.sin(az[rr, cc]),
                         np.sin(el[rr])], -1)
        np.testing.assert_array_equal(nr.dirs, want)
    odd = real[0].copy()
    odd[5::32, 2] = np.nan   # NaN heights in ring 5: np.median's NaN rule must hold too
    valid, ring = np.ones(len(odd), bool), np.arange(len(odd)) % 32
    np.testing.assert_array_equal(fb.ring_elevations(odd, ring, 32, valid),
                                  _ring_elevations_per_ring(odd, ring, 32, valid))


# -- store -----------------------------------------------------------------------------------------
def test_store_round_trip_validate_and_info(small_store, synth_dataset):
    r = StoreReader(small_store)
    assert r.has_free_beams and r.manifest["schema_version"] == layout.SCHEMA_VERSION
    frames = {k["token"]: k for k in keyframes(synth_dataset)}
    total = 0
    for i in range(len(r)):
        b = r.free_beams(i)
        assert b["origin"].dtype == np.float32 and b["direction"].shape == b["origin"].shape == (len(b["ring"]), 3)
        np.testing.assert_allclose(np.linalg.norm(b["direction"], axis=1), 1, atol=1e-5)
        np.testing.assert_allclose(b["origin"], np.broadcast_to(lid.TRANSLATION, b["origin"].shape), atol=1e-5)
        total += len(b["ring"])
    assert total == r.manifest["free_beams"]["num_beams"] > 0
    k0 = next(k for k in frames.values() if abs(k["t"]) < 1e-9)
    assert len(r.free_beams(0)["ring"]) == len(fb.free_beams(k0["points"], k0["lidar2ego"])["ring"])
    assert validate(small_store) == []
    res = CliRunner().invoke(main, ["store", "info", small_store])
    assert res.exit_code == 0 and "free beams   " in res.output and "/sample" in res.output


def test_validate_sees_damaged_free_beams(small_store, tmp_path):
    d = tmp_path / "s"
    shutil.copytree(small_store, d)
    shard = StoreReader(d).manifest["shards"][0]["name"]
    t = writer.free_beam_table("x", {"ring": np.zeros(1), "origin": np.zeros((1, 3)),
                                     "direction": np.array([[1.0, 0, 0]])})
    writer.write_free_beam_shard(str(d), shard, [t] * 4)
    problems = validate(str(d), data=False)
    assert any("free_beams" in p and "checksum" in p for p in problems)
    assert any("free beams, manifest says" in p for p in problems)


@pytest.fixture(scope="module")
def raw_store(synth_dataset, tmp_path_factory) -> str:
    """`small_store` with raw images: schema 1 knew the raw image layout (its jpeg one is refused)."""
    from renderocc.prep.pipeline import PrepOptions, run

    out = tmp_path_factory.mktemp("raw_store") / "store"
    run(PrepOptions(dataroot=str(synth_dataset), version="v1.0-mini", out=str(out), image_size=(96, 54),
                    image_codec="raw", progress=False), log=lambda m: None)
    return str(out)


def as_version_1(store: str, dst: Path) -> Path:
    """A copy of a raw-image `store` as schema 1 wrote it: no free_beams/ table, no manifest keys."""
    shutil.copytree(store, dst)
    shutil.rmtree(dst / layout.FREE_BEAMS_DIR)
    m = json.loads((dst / layout.MANIFEST).read_text())
    m["schema_version"] = 1
    del m["free_beams"]
    for s in m["shards"]:
        for key in ("free_beams_path", "free_beams_sha256", "num_free_beams"):
            del s[key]
    (dst / layout.MANIFEST).write_text(json.dumps(m))
    return dst


def test_a_version_1_store_still_reads_without_free_beams(raw_store, tmp_path):
    old = as_version_1(raw_store, tmp_path / "v1")
    r = StoreReader(old)
    assert not r.has_free_beams and r.free_beams(0) is None and len(r.labels(0)["u"]) > 0
    assert validate(str(old), data=False) == []
    res = CliRunner().invoke(main, ["store", "info", str(old)])
    assert res.exit_code == 0 and "free beams   no (schema v1)" in res.output
    # prep never writes into a store of another version (a resume would mix layouts)
    with pytest.raises(UserError, match="schema version 1"):
        writer.check_or_write_plan(str(old), {"fingerprint": "x"})


# -- training ----------------------------------------------------------------------------------------
def _dataset(reader, *sets: str):
    from renderocc.config import load_config, resolved
    from renderocc.train.dataset import RayDataset

    cfg = resolved(load_config("demo", ["data.input_size=[64, 32]", "data.rays=64", "data.workers=0", *sets]),
                   reader.grid)
    return RayDataset(reader, cfg, train=True)


def test_dataset_yields_free_beams_only_when_the_term_is_active(small_store, raw_store, tmp_path):
    r = StoreReader(small_store)
    keys = {"free_origins", "free_directions", "free_valid"}
    item = _dataset(r, "data.free_beams=64", "loss.free_beams=1")[(0, 1)]
    assert keys <= set(item) and item["free_directions"].shape == (64, 3) and item["free_valid"].all()
    b = r.free_beams(1)
    rows = {tuple(v) for v in b["direction"].tolist()}
    assert all(tuple(v) in rows for v in item["free_directions"].tolist())
    again = _dataset(r, "data.free_beams=64", "loss.free_beams=1")[(0, 1)]
    assert torch.equal(item["free_directions"], again["free_directions"])          # seeded per (epoch, index)
    assert not keys & set(_dataset(r, "loss.free_beams=0")[(0, 1)])     # ablation: term off
    assert not keys & set(_dataset(r, "data.free_beams=0")[(0, 1)])     # no beams drawn: term off
    big = _dataset(r, f"data.free_beams={len(b['ring']) + 10}")[(0, 1)]
    assert int(big["free_valid"].sum()) == len(b["ring"])               # padded beyond the store's
    old = StoreReader(as_version_1(raw_store, tmp_path / "v1"))
    item = _dataset(old, "loss.free_beams=1")[(0, 1)]
    assert keys <= set(item) and not item["free_valid"].any()           # old store: nothing to draw


def test_free_beam_term_is_in_the_table_and_the_log():
    from renderocc.config import load_config
    from renderocc.train import losses as L
    from renderocc.train.logger import LOG_FIELDS

    assert "free_beams" in LOG_FIELDS
    cfg = load_config("demo")
    assert "free_beams" in {t.name for t in L.active_terms(cfg)}
    assert {"free_origins", "free_directions", "free_valid"} <= L.needed_batch_keys(cfg)
    assert "free_beams" not in {t.name for t in L.active_terms(load_config("demo", ["loss.free_beams=0"]))}
    assert "free_beams" not in {t.name for t in L.active_terms(load_config("demo", ["data.free_beams=0"]))}


@pytest.mark.parametrize("backend", ["reference", "auto"])
def test_free_beam_loss_is_zero_on_empty_space_and_large_in_fog(backend):
    from renderocc.train.losses import free_beam_loss

    grid = Grid([0.0, 0.0, 0.0, 10.0, 4.0, 4.0], [1.0] * 3, [10, 4, 4])
    origins = torch.tensor([[1.0, 2.0, 1.0], [1.0, 2.0, 1.0], [5.0, 2.0, 2.0]])
    dirs = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0, 0.1], [1.0, 0.3, 0.2], [0.0, 0.0, 1.0]]), dim=1)
    sample = torch.tensor([0, 0, 1])
    empty = torch.zeros(2, 10, 4, 4)
    assert float(free_beam_loss(empty, origins, dirs, sample, 2, grid, 0.1, backend=backend)) < 1e-6
    fog = torch.full((2, 10, 4, 4), 0.5, requires_grad=True)
    loss = free_beam_loss(fog, origins, dirs, sample, 2, grid, 0.1, backend=backend)
    assert float(loss.detach()) == pytest.approx(0.5 * 0.1, rel=1e-4)     # σ·step per sample, any beam length
    loss.backward()
    assert fog.grad.abs().sum() > 0
    wall = torch.zeros(2, 10, 4, 4)
    wall[:, 7:] = 5.0   # a wall across the first two beams, beyond the third
    assert float(free_beam_loss(wall, origins, dirs, sample, 2, grid, 0.1, backend=backend)) > 0.05


def test_ring_elevations_do_not_depend_on_array_addresses(synth_dataset, monkeypatch):
    """numpy 1.26's float32 arctan2 of a strided and a contiguous operand takes a path that depends
    on the contiguous one's address (1-ulp differences on synthetic clouds): a store's free beams
    then changed from run to run. Here the horizontal ranges come back at every 4-byte offset."""
    hypot = np.hypot
    for k in keyframes(synth_dataset)[:1]:
        pts = k["points"]
        ring = pts[:, 4].astype(np.int64)
        valid = fb.point_range(pts) >= fb.NO_RETURN_RANGE
        r = ring[valid]
        ref = fb.ring_elevations(pts[valid], r, 32, np.ones(len(r), bool))
        for base, offset in itertools.product(range(16), range(16)):
            p = np.empty(valid.sum() * 5 + 16, np.float32)[base:base + valid.sum() * 5].reshape(-1, 5)
            p[:] = pts[valid]   # what the binned path passes: a fresh (n, 5) array, anywhere

            def shifted_hypot(*args, offset=offset, **kwargs):
                out = hypot(*args, **kwargs)
                buf = np.empty(out.size + 16, out.dtype)[offset:offset + out.size]
                buf[:] = out
                return buf

            monkeypatch.setattr(np, "hypot", shifted_hypot)
            assert np.array_equal(fb.ring_elevations(p, r, 32, np.ones(len(r), bool)), ref), (base, offset)
            monkeypatch.setattr(np, "hypot", hypot)
