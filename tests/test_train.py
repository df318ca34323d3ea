"""Trainer on a tiny synthetic store: ray geometry, augmentation, loss goes down, exact resume,
2-process DDP (gloo) = single-process gradients, CLI + checkpoint contract, contract errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from click.testing import CliRunner
from tiny_run import TINY, tiny

from renderocc.classes import FREE, IGNORE, NUM_SEMANTIC
from renderocc.config import Config, resolved, supervision_label
from renderocc.errors import UserError
from renderocc.eval.evaluate import describe_supervision
from renderocc.geometry import Grid, label_rays
from renderocc.model.build import build_model
from renderocc.store.reader import StoreReader
from renderocc.train.checkpoint import load_model
from renderocc.train.dataset import EpochSampler, RayDataset, ends_in_grid, weighted_sample
from renderocc.train.distributed import seed_everything
from renderocc.train.step import compute_loss
from renderocc.train.targets import label_voxel_target
from renderocc.train.threshold import LABEL_VOXEL_METRIC, choose_threshold
from renderocc.train.trainer import train


@pytest.fixture(scope="module")
def store(small_store) -> str:
    return small_store


def losses(run: Path) -> list[float]:
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert all("loss" in r for r in recs)
    return [r["loss"] for r in recs]


# -- data --------------------------------------------------------------------------------------
def test_label_rays_are_exact_metric_distances(store):
    r = StoreReader(store)
    s, lab = r.sample(1), r.labels(1)
    K = {c: np.asarray(s["cameras"][n]["K_orig"]) for c, n in enumerate(r.cameras)}
    T = {c: np.asarray(s["cameras"][n]["cam2ego"]) for c, n in enumerate(r.cameras)}
    rays = label_rays(lab, K, T)
    assert np.allclose(np.linalg.norm(rays["directions"], axis=1), 1)
    end = rays["origins"] + rays["directions"] * rays["ends"][:, None]
    for c in range(len(r.cameras)):  # back into the camera: z = stored depth, projection = (u, v)
        m = lab["camera"] == c
        p = (end[m] - T[c][:3, 3]) @ T[c][:3, :3]
        assert np.allclose(p[:, 2], lab["depth"][m], rtol=1e-5, atol=1e-4)
        uv = p @ K[c].T
        assert np.allclose(uv[:, 0] / uv[:, 2], lab["u"][m], atol=1e-2)
        assert np.allclose(uv[:, 1] / uv[:, 2], lab["v"][m], atol=1e-2)
    assert (rays["ends"] > lab["depth"] - 1e-4).all()  # distance ≥ z: the exact conversion


class CodedImages:
    """A reader whose images encode their own stored pixel coordinates: R = u, G = v."""

    def __init__(self, reader):
        self.r = reader

    def __getattr__(self, name):
        return getattr(self.r, name)

    def __len__(self):
        return len(self.r)

    def images(self, i):
        W, H = self.r.image_size
        img = np.zeros((len(self.r.cameras), H, W, 3), np.uint8)
        img[..., 0] = np.arange(W)[None, None, :]
        img[..., 1] = np.arange(H)[None, :, None]
        return img


def test_augmentation_updates_intrinsics_consistently(store):
    r = CodedImages(StoreReader(store))
    cfg = resolved(tiny("data.resize_range=[0.8, 1.3]", "data.input_size=[80, 40]"), r.grid)
    ds = RayDataset(r, cfg, train=True)
    s = r.sample(0)
    flips = 0
    for epoch in range(6):
        item = ds[(epoch, 0)]
        img = item["images"] * torch.tensor([0.229, 0.224, 0.225])[:, None, None] * 255
        img = img + torch.tensor([0.485, 0.456, 0.406])[:, None, None] * 255
        flips += int(item["intrinsics"][0, 0, 0] < 0)
        for c, name in enumerate(r.cameras):
            Ks = np.asarray(s["cameras"][name]["K"])
            Ka = item["intrinsics"][c].double().numpy()
            P = np.array([[2.0, 1.0, 20.0], [-3.0, 0.5, 30.0], [0.5, -0.2, 10.0]]).T  # camera points
            ps, pa = Ks @ P, Ka @ P
            ps, pa = ps[:2] / ps[2], pa[:2] / pa[2]
            for k in range(P.shape[1]):
                ui, vi = round(pa[0, k]), round(pa[1, k])
                if 1 <= ui < 79 and 1 <= vi < 39:
                    got = img[c, :2, vi, ui].numpy()
                    # what the augmented pixel holds = the stored pixel the same 3D point hits
                    expect = ps[:, k] + (np.array([ui, vi]) - pa[:, k]) * np.abs(
                        [Ks[0, 0] / Ka[0, 0], Ks[1, 1] / Ka[1, 1]]) * np.sign([Ka[0, 0], 1])
                    assert np.allclose(got, expect, atol=1.0), (epoch, c, got, expect)
    assert 0 < flips < 6


def test_weighted_sampling_without_replacement():
    rng = np.random.default_rng(0)
    w = np.r_[np.full(1000, 1.0), np.full(1000, 0.1)]
    pick = weighted_sample(w, 500, rng)
    assert len(np.unique(pick)) == 500
    assert (pick < 1000).mean() > 0.85
    assert len(weighted_sample(w[:10], 500, rng)) == 10


def test_sampler_shards_and_resumes():
    one = EpochSampler(list(range(10)), 4, seed=3)
    it = iter(one)
    single = [next(it) for _ in range(40)]
    assert sorted(i for e, i in single[:10]) == list(range(10))  # a permutation per epoch
    ranks = [iter(EpochSampler(list(range(10)), 2, seed=3, rank=k, world=2)) for k in range(2)]
    ddp = []
    for _ in range(10):  # per global step: rank 0's 2 items then rank 1's 2 items
        a, b = [next(ranks[0]) for _ in range(2)], [next(ranks[1]) for _ in range(2)]
        ddp.append(sorted(a + b))
    assert ddp == [sorted(single[4 * g:4 * g + 4]) for g in range(10)]
    later = iter(EpochSampler(list(range(10)), 4, seed=3, start_step=5))
    assert [next(later) for _ in range(8)] == single[20:28]


def test_sample_has_rays_targets_and_aux(store):
    r = StoreReader(store)
    cfg = resolved(tiny("data.aux_without_motion_masks='keep'"), r.grid)
    item = RayDataset(r, cfg, train=True)[(0, 1)]
    assert item["valid"].all() and item["is_key"].any() and not item["is_key"].all()  # aux rays used
    assert item["depth_target"].shape == (6, 4, 8) and (item["depth_target"] > 0).any()
    cfg = resolved(tiny(), r.grid)  # store without motion masks: aux dropped by default
    assert RayDataset(r, cfg, train=True)[(0, 1)]["is_key"].all()


def test_label_voxels_target_covers_every_label_ray_of_the_sample(store):
    """With loss.label_voxels the item carries the voxel reading of ALL the sample's label rays (key
    and aux), not only the drawn ones; a second draw of the sample reuses it; the loss runs on it."""
    r = StoreReader(store)
    cfg = resolved(tiny("loss.label_voxels=1", "data.aux_without_motion_masks='keep'"), r.grid)
    ds = RayDataset(r, cfg, train=True)
    item = ds[(0, 1)]
    want = label_voxel_target(ends_in_grid(ds.label_frames(1), cfg.grid.spec), cfg.grid.spec)
    assert item["label_voxels"].dtype == torch.uint8 and np.array_equal(item["label_voxels"].numpy(), want)
    assert (want < FREE).sum() > int(item["valid"].sum()) // 50 and (want == FREE).any()
    assert 1 in ds._label_voxel_cache and np.array_equal(ds[(1, 1)]["label_voxels"].numpy(), want)
    assert "label_voxels" not in RayDataset(r, resolved(tiny("loss.label_voxels=0"), r.grid), train=True)[(0, 1)]
    model = build_model(cfg)
    batch = {k: v[None] for k, v in item.items() if k != "index"}
    loss, parts, _ = compute_loss(model, batch, cfg, None, torch.device("cpu"))
    assert torch.isfinite(loss) and parts["label_voxels"] > 0
    # its threshold rule: IoU against the held-out samples' label voxels, not 2D depth agreement
    thr = choose_threshold(model, r, [2, 3], cfg, torch.device("cpu"), "held-out training samples")
    assert thr["metric"] == LABEL_VOXEL_METRIC and thr["samples"] == [2, 3] and 0 <= thr["score"] <= 1
    thr = choose_threshold(model, r, [2, 3], resolved(tiny("loss.label_voxels=0"), r.grid), torch.device("cpu"),
                           "held-out")
    assert thr["metric"] != LABEL_VOXEL_METRIC


def test_aux_rays_drop_dynamic_labels_and_held_out_neighbours(store):
    class Moving(CodedImages):
        has_motion_masks = True

        def labels(self, i):  # pretend every car moves
            lab = self.r.labels(i)
            return {**lab, "dynamic": lab["label"] == 4, "instance": np.zeros(len(lab["label"]), np.int32)}

    r = Moving(StoreReader(store))
    cfg = resolved(tiny("data.rays=100000"), r.grid)  # more rays than labels: all are kept
    item = RayDataset(r, cfg, train=True)[(0, 1)]
    key, aux = item["is_key"] & item["valid"], ~item["is_key"] & item["valid"]
    assert (item["label"][key] == 4).any() and aux.any() and not (item["label"][aux] == 4).any()
    # neighbours 0, 2, 3 of sample 1 held out: no auxiliary ray at all
    item = RayDataset(r, cfg, train=True, exclude=[0, 2, 3])[(0, 1)]
    assert not (~item["is_key"] & item["valid"]).any()


def test_lidar_sparse_and_dense_targets(store):
    r = StoreReader(store)
    cfg = resolved(tiny("supervision='lidar-sparse'"), r.grid)
    ds = RayDataset(r, cfg, train=True)
    t = ds[(0, 0)]["occ_target"]
    assert t.shape == (50, 50, 4)
    assert ((t < FREE).sum() > 50) and ((t == FREE).sum() > (t < FREE).sum()) and (t == IGNORE).any()
    cfg = resolved(tiny("supervision='3d'"), r.grid)
    d = RayDataset(r, cfg, train=True)[(0, 0)]["occ_target"]
    gt = r.occ_gt(0)
    assert d.shape == (50, 50, 4) and (d < FREE).any()
    assert ((d != IGNORE).float().mean() > 0) and ((d == IGNORE).numpy() == ~gt["mask_camera"].astype(bool)
                                                     .reshape(50, 4, 50, 4, 4, 4).any((1, 3, 5))).all()
    # loss.occ3d_mask: mask_lidar instead, or every voxel; reports name the mask
    lid = resolved(tiny("supervision='3d'", "loss.occ3d_mask='lidar'"), r.grid)
    d = RayDataset(r, lid, train=True)[(0, 0)]["occ_target"]
    assert ((d == IGNORE).numpy() == ~gt["mask_lidar"].astype(bool).reshape(50, 4, 50, 4, 4, 4).any((1, 3, 5))).all()
    every = resolved(tiny("supervision='mixed'", "loss.occ3d_mask='none'"), r.grid)
    d = RayDataset(r, every, train=True)[(0, 0)]["occ_target"]
    assert not (d == IGNORE).any() and (d < FREE).any()
    assert supervision_label(cfg) == "3d (dense GT inside mask_camera)"
    assert supervision_label(every) == "mixed (dense GT all voxels)"
    text = describe_supervision({"supervision": "3d", "config": lid})
    assert text.startswith("3d (occ3d_mask lidar): dense Occ3D GT inside mask_lidar") and "inflated" not in text
    assert "inflated" in describe_supervision({"supervision": "mixed", "config": cfg})
    with pytest.raises(UserError, match="occ3d_mask"):
        tiny("loss.occ3d_mask='radar'")


def test_contract_the_store_cannot_satisfy_is_a_user_error(store):
    class No3D(CodedImages):
        has_occ_gt = False
        has_semantics = False

    r = No3D(StoreReader(store))
    for sup in ("3d", "mixed", "lidar-sparse"):
        with pytest.raises(UserError, match="needs"):
            RayDataset(r, resolved(tiny(f"supervision='{sup}'"), r.grid))
    with pytest.raises(UserError, match="unknown key"):
        tiny("optim.lrr=1")
    with pytest.raises(UserError, match="supervision"):
        tiny("supervision='4d'")


# -- training --------------------------------------------------------------------------------
def test_mixed_contract_step_runs(store):
    r = StoreReader(store)
    cfg = resolved(tiny("supervision='mixed'"), r.grid)
    seed_everything(0)
    model = build_model(cfg, NUM_SEMANTIC)
    batch = torch.utils.data.default_collate([RayDataset(r, cfg)[(0, 0)]])
    loss, parts, n = compute_loss(model, batch, cfg, None, torch.device("cpu"))
    loss.backward()
    assert set(parts) >= {"depth", "semantic", "distortion", "occ3d", "lss_depth"} and n == 512


@pytest.mark.slow
def test_loss_goes_down_and_resume_is_exact(store, tmp_path):
    cfg = tiny("train.max_steps=8", "train.ckpt_every=4")
    train(store, tmp_path / "full", cfg, quiet=True)
    full = losses(tmp_path / "full")
    assert len(full) == 8
    assert np.mean(full[-3:]) < 0.9 * np.mean(full[:2]), full
    cfg = tiny("train.max_steps=8", "train.ckpt_every=4")
    train(store, tmp_path / "cut", cfg, quiet=True, stop_step=5)  # runs past the step-4 checkpoint
    train(store, tmp_path / "cut", cfg, quiet=True, resume=True)  # from 4: drops the logged 5
    assert losses(tmp_path / "cut") == full


def test_cli_writes_checkpoint_contract(store, tmp_path):
    from renderocc.cli import main

    run = tmp_path / "run"
    args = ["train", "--store", store, "--out", str(run), "--config", "demo", "--max-steps", "2"]
    args += [a for kv in TINY for a in ("--set", kv)]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "loader alone" not in res.output and "training:" in res.output and "threshold:" in res.output
    assert len(losses(run)) == 2 and (run / "metrics.csv").exists() and list((run / "tb").iterdir())
    model, ckpt = load_model(run / "last.pt", "cpu")
    assert ckpt["supervision"] == "2d" and isinstance(ckpt["threshold"], float) and ckpt["step"] == 2
    assert ckpt["grid"]["shape"] == [50, 50, 4] and len(ckpt["classes"]) == 18 and "ema" in ckpt
    assert ckpt["threshold_info"]["source"].startswith("held-out")
    assert not model.training
    res = CliRunner().invoke(main, args)  # same --out without --resume
    assert res.exit_code == 2 and "--resume" in res.output


# -- DDP ------------------------------------------------------------------------------------------
def grads_of_first_step(store: str, cfg: Config, rank: int, world: int) -> dict[str, torch.Tensor]:
    r = StoreReader(store)
    cfg = resolved(cfg, r.grid)
    seed_everything(0)
    model = build_model(cfg, NUM_SEMANTIC)
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    ds = RayDataset(r, cfg, train=True)
    sampler = EpochSampler(list(range(len(r))), cfg.data.batch_size, 0, rank, world)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=cfg.data.batch_size,
                                                  sampler=sampler)))
    loss, _, _ = compute_loss(net, batch, cfg, None, torch.device("cpu"))
    loss.backward()
    return {k: p.grad.clone() for k, p in model.named_parameters()}


def _ddp_worker(rank: int, world: int, store: str, tmp: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/init", rank=rank, world_size=world)
    g = grads_of_first_step(store, tiny("data.batch_size=1", "data.holdout='none'"), rank, world)
    if rank == 0:
        torch.save(g, f"{tmp}/ddp_grads.pt")
    train(store, f"{tmp}/run", tiny("data.batch_size=1", "train.max_steps=2"), quiet=True)
    dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_two_processes_match_single_process(store, tmp_path):
    mp.spawn(_ddp_worker, args=(2, store, str(tmp_path)), nprocs=2, join=True)
    assert len(losses(tmp_path / "run")) == 2 and (tmp_path / "run" / "last.pt").exists()
    torch.set_num_threads(1)
    single = grads_of_first_step(store, tiny("data.batch_size=2", "data.holdout='none'"), 0, 1)
    ddp = torch.load(tmp_path / "ddp_grads.pt")
    for k, g in single.items():
        assert torch.allclose(ddp[k], g, rtol=1e-4, atol=1e-6), (k, (ddp[k] - g).abs().max())


def test_first_crossing_threshold_separates_fog_from_wall():
    from renderocc.train.threshold import CANDIDATES, first_crossing_agreement

    grid = Grid([-8.0, -8.0, -1.0, 8.0, 8.0, 2.2], [0.8] * 3, [20, 20, 4])
    density = torch.full((20, 20, 4), 0.05)
    density[15] = 3.0  # a wall over x ∈ [4, 4.8)
    o = torch.zeros(50, 3)
    jitter = torch.randn(50, 3, generator=torch.Generator().manual_seed(0)) * torch.tensor([0.05, 0.3, 0.1])
    d = torch.nn.functional.normalize(jitter + torch.tensor([1.0, 0, 0]), dim=1)
    dist = 4.0 / d[:, 0]
    good, n = first_crossing_agreement(density, o, d, dist, grid, torch.tensor(CANDIDATES, dtype=torch.float32),
                                       step=0.4, chunk=16)
    ok = torch.tensor(CANDIDATES)[good == good.max()]
    assert n == 50 and good.max() == 50 and ok.min() >= 0.05 and ok.max() < 3.0


def test_first_crossing_is_the_renderers_sample_at_the_wall():
    """Wall from x = 10 (density 50 in voxels 10..19, 0 before): trilinear density ramps from voxel 9's
    centre (9.5) to voxel 10's (10.5), so density > 25 first holds just past the face (x ∈ (10, 10.1]),
    density > 0.01 just past 9.5; a τ above every density never crosses (→ box exit at x = 20)."""
    from renderocc.train.threshold import first_crossing_agreement

    grid = Grid([0.0, 0.0, 0.0, 20.0, 3.0, 3.0], [1.0] * 3, [20, 3, 3])
    density = torch.zeros(20, 3, 3)
    density[10:] = 50.0
    o, d = torch.tensor([[0.0, 1.5, 1.5]]), torch.tensor([[1.0, 0.0, 0.0]])

    def counted(tau: float, end: float) -> bool:  # within 1.5 m (the 1.5-voxel tolerance) of the crossing?
        g, n = first_crossing_agreement(density, o, d, torch.tensor([end]), grid, torch.tensor([tau]), step=0.1)
        return bool(g[0] == 1)

    # crossing c ∈ (10, 10.1]: ends 8.65 and 11.45 count, 8.45 and 11.65 do not
    assert [counted(25.0, e) for e in (8.45, 8.65, 10.0, 11.45, 11.65)] == [False, True, True, True, False]
    # crossing c ∈ (9.5, 9.6]: the ramp starts at voxel 9's centre
    assert [counted(0.01, e) for e in (7.95, 8.15, 10.95, 11.25)] == [False, True, True, False]
    assert counted(60.0, 19.0) and not counted(60.0, 10.0)  # never above τ: the exit at 20 m


def test_line_of_sight_loss_sees_density_before_the_hit_only():
    from renderocc.train.losses import line_of_sight

    grid = Grid([0.0, 0.0, 0.0, 10.0, 2.0, 2.0], [1.0] * 3, [10, 2, 2])
    origins = torch.tensor([[0.0, 1.0, 1.0]])
    dirs = torch.tensor([[1.0, 0.0, 0.0]])
    dist = torch.tensor([6.0])
    sample = torch.zeros(1, dtype=torch.long)
    wall = torch.zeros(1, 10, 2, 2)
    wall[0, 6:] = 50.0  # a wall from x = 6 m: exactly where the label says the ray stops
    free, term = line_of_sight(wall, origins, dirs, dist, sample, 1, grid, step=0.1, margin=0.5)
    assert float(free) < 0.5 and float(term) < 1e-3
    fog = torch.full((1, 10, 2, 2), 0.5)  # density everywhere, also before the hit
    free_fog, _ = line_of_sight(fog, origins, dirs, dist, sample, 1, grid, step=0.1, margin=0.5)
    assert float(free_fog) > 10 * float(free)
    empty = torch.zeros(1, 10, 2, 2)  # nothing stops the ray: the termination term must complain
    _, term_empty = line_of_sight(empty, origins, dirs, dist, sample, 1, grid, step=0.1, margin=0.5)
    assert float(term_empty) > 5.0
