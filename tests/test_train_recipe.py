"""The training recipe beyond one plain step: gradient accumulation (one process and DDP),
`--init-from` fine-tuning, validation during training with best.pt, the foreach EMA, precision
and torch.compile on the CPU."""

from __future__ import annotations

import json
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from click.testing import CliRunner
from tiny_run import TINY, tiny

from renderocc.config import Config, resolved
from renderocc.errors import UserError
from renderocc.model.build import build_model
from renderocc.store.reader import StoreReader
from renderocc.train.checkpoint import load_checkpoint
from renderocc.train.dataset import EpochSampler, RayDataset
from renderocc.train.distributed import seed_everything
from renderocc.train.optim import Ema, make_optim
from renderocc.train.step import train_step
from renderocc.train.trainer import accumulation_steps, train


@pytest.fixture(scope="module")
def store(small_store) -> str:
    return small_store


# -- gradient accumulation -----------------------------------------------------------------------
def step_grads(store: str, cfg: Config, rank: int = 0, world: int = 1) -> dict[str, torch.Tensor]:
    """The gradients one optimiser step leaves (lr 0 and no clipping: the step changes no weight)."""
    r = StoreReader(store)
    cfg = resolved(cfg.replace(optim={"lr": 1e-30, "grad_clip": 1e30, "weight_decay": 0.0}), r.grid)
    seed_everything(0)
    model = build_model(cfg, r.vocabulary.num_semantic)
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    ds = RayDataset(r, cfg, train=True)
    acc = accumulation_steps(cfg, world)
    sampler = EpochSampler(list(range(len(r))), cfg.data.batch_size, 0, rank, world)
    it = iter(torch.utils.data.DataLoader(ds, batch_size=cfg.data.batch_size, sampler=sampler))
    opt, sched, scaler = make_optim(model, cfg, torch.device("cpu"))
    train_step(net, opt, sched, scaler, [next(it) for _ in range(acc)], cfg, None, torch.device("cpu"))
    return {k: p.grad.clone() for k, p in model.named_parameters()}


def assert_same_grads(a: dict, b: dict) -> None:
    for k, g in a.items():
        assert torch.allclose(b[k], g, rtol=1e-4, atol=1e-6), (k, (b[k] - g).abs().max())


def test_accumulated_micro_batches_give_the_large_batch_gradient(store):
    torch.set_num_threads(1)
    whole = step_grads(store, tiny("data.batch_size=2", "data.holdout='none'"))
    accumulated = step_grads(store, tiny("data.batch_size=1", "optim.global_batch=2", "data.holdout='none'"))
    assert_same_grads(whole, accumulated)


def test_a_global_batch_that_the_processes_cannot_reach_is_one_line():
    assert accumulation_steps(tiny("data.batch_size=2", "optim.global_batch=8"), 2) == 2
    assert accumulation_steps(tiny("optim.global_batch=0"), 4) == 1
    with pytest.raises(UserError, match="not a multiple"):
        accumulation_steps(tiny("data.batch_size=2", "optim.global_batch=6"), 2)


def _ddp_accumulation_worker(rank: int, world: int, store: str, tmp: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/init", rank=rank, world_size=world)
    g = step_grads(store, tiny("data.batch_size=1", "optim.global_batch=4", "data.holdout='none'"), rank, world)
    if rank == 0:
        torch.save(g, f"{tmp}/grads.pt")
    dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_with_accumulation_gives_the_single_process_gradient(store, tmp_path):
    mp.spawn(_ddp_accumulation_worker, args=(2, store, str(tmp_path)), nprocs=2, join=True)
    torch.set_num_threads(1)
    single = step_grads(store, tiny("data.batch_size=4", "data.holdout='none'"))
    assert_same_grads(single, torch.load(tmp_path / "grads.pt"))


# -- init-from -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def parent_run(store, tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("parent") / "run"
    train(store, out, tiny("train.max_steps=2"), quiet=True)
    return str(out / "last.pt")


def test_init_from_starts_a_new_run_from_the_parents_weights(store, parent_run, tmp_path):
    parent = load_checkpoint(parent_run)
    cfg = tiny("train.max_steps=1", "optim.lr=1e-4", "optim.warmup_steps=0")  # another config: allowed
    train(store, tmp_path / "child1", cfg, quiet=True, init_from=parent_run)
    child = load_checkpoint(tmp_path / "child1" / "last.pt")
    p = child["parent"]
    assert p["weights"] == "ema" and p["step"] == 2 and len(p["sha256"]) == 64
    assert p["config_digest"] == Config.from_dict(parent["config"]).digest()
    assert child["step"] == 1 and child["config"]["optim"]["lr"] == 1e-4
    # one step at lr 1e-4 from the parent's EMA stays close to it; a fresh init would not
    moved = max(float((child["model"][k].float() - v.float()).abs().max()) for k, v in parent["ema"].items()
                if v.is_floating_point())
    assert moved < 1e-2


def test_init_from_refuses_a_network_of_another_shape(store, parent_run, tmp_path):
    with pytest.raises(UserError, match="missing|unexpected|shape"):
        train(store, tmp_path / "x", tiny("model.voxel_channels=12", "train.max_steps=1"), quiet=True,
              init_from=parent_run)
    assert not (tmp_path / "x" / "last.pt").exists()


def test_init_from_and_resume_together_is_one_line(store, parent_run, tmp_path):
    from renderocc.cli import main

    args = ["train", "--store", store, "--out", str(tmp_path / "r"), "--init-from", parent_run, "--resume"]
    res = CliRunner().invoke(main, [*args, *[a for kv in TINY for a in ("--set", kv)]])
    assert res.exit_code == 2 and "use one of them" in res.output, res.output
    res = CliRunner().invoke(main, ["train", "--store", store, "--out", str(tmp_path / "r"), "--init-partial"])
    assert res.exit_code == 2 and "--init-from" in res.output


# -- validation ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_validation_logs_scores_and_keeps_the_best_checkpoint(store, tmp_path):
    from renderocc.cli import main

    run = tmp_path / "run"
    args = ["train", "--store", store, "--out", str(run), "--max-steps", "4", "--set", "train.val_every=2",
            "--set", "train.val_samples=2", "--set", "train.val_rays=500", "--set", "train.val_metric=sem2d_miou"]
    res = CliRunner().invoke(main, [*args, *[a for kv in TINY for a in ("--set", kv)]])
    assert res.exit_code == 0, res.output
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    vals = [r for r in recs if "validation" in r]
    assert [r["step"] for r in vals] == [2, 4]
    assert {"sem2d_miou", "depth_abs_rel"} <= set(vals[0]["validation"])
    best = load_checkpoint(run / "best.pt")
    top = max(vals, key=lambda r: r["validation"]["sem2d_miou"])
    assert best["best"]["step"] == top["step"] == best["step"]
    assert best["best"]["value"] == pytest.approx(top["validation"]["sem2d_miou"])
    assert load_checkpoint(run / "last.pt")["best"] == best["best"]
    assert "validation at step 2" in res.output and "best:" in res.output


def test_validation_needs_held_out_samples(store, tmp_path):
    with pytest.raises(UserError, match="held-out"):
        train(store, tmp_path / "v", tiny("train.val_every=1", "data.holdout='none'"), quiet=True,
              validator=lambda *a: {})


# -- EMA, precision, compile -----------------------------------------------------------------------
def test_the_foreach_ema_is_the_per_tensor_lerp():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    ema = Ema(net)
    before = {k: v.clone() for k, v in ema.module.state_dict().items()}
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p))
        net[1].running_mean.add_(1.0)
        net[1].num_batches_tracked.add_(3)
    ema.update(0.9)
    now, src = ema.module.state_dict(), net.state_dict()
    for k in ("0.weight", "0.bias", "1.weight"):
        assert torch.allclose(now[k], before[k] * 0.9 + src[k] * 0.1, atol=1e-6)
    assert torch.equal(now["1.running_mean"], src["1.running_mean"])
    assert int(now["1.num_batches_tracked"]) == 3


@pytest.mark.slow
def test_the_compiled_network_matches_eager_on_the_cpu(store):
    r = StoreReader(store)
    cfg = resolved(tiny(), r.grid)
    seed_everything(0)
    model = build_model(cfg, r.vocabulary.num_semantic).eval()
    batch = next(iter(torch.utils.data.DataLoader(RayDataset(r, cfg, [0], train=False), batch_size=1)))
    args = (batch["images"], batch["intrinsics"], batch["cam2ego"])
    with torch.no_grad():
        eager = model(*args)
        compiled = torch.compile(model)(*args)
    for a, b in zip(eager, compiled, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4), (a - b).abs().max()


# -- a timm backbone from a local weights file -------------------------------------------------------
@pytest.fixture(scope="module")
def resnet50_weights(tmp_path_factory) -> str:
    timm = pytest.importorskip("timm")
    safetensors_torch = pytest.importorskip("safetensors.torch")
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "resnet50.safetensors"
    state = timm.create_model("resnet50", pretrained=False).state_dict()
    for k, v in state.items():  # statistics a file would hold, not the ones and zeros of a fresh init
        if k.endswith(("running_mean", "running_var")):
            state[k] = torch.rand_like(v) + 0.5
    safetensors_torch.save_file(state, str(path))
    return str(path)


@pytest.mark.slow
@pytest.mark.parametrize("supervision", ["3d", "2d"])
def test_twenty_steps_with_a_timm_resnet50_loaded_strictly(store, resnet50_weights, tmp_path, supervision):
    from renderocc.cli import main

    run = tmp_path / supervision
    args = ["train", "--store", store, "--out", str(run), "--max-steps", "20", "--pretrained", resnet50_weights,
            "--set", "model.encoder=timm:resnet50", "--set", "model.norm=frozen_bn",
            "--set", f"supervision={supervision}", "--set", "train.ckpt_every=20"]
    res = CliRunner().invoke(main, [*args, *[a for kv in TINY for a in ("--set", kv)]])
    assert res.exit_code == 0, res.output
    assert "pretrained:" in res.output and "tensors loaded" in res.output
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(recs) == 20 and all(r["loss"] == r["loss"] for r in recs)
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt["config"]["model"]["encoder"] == "timm:resnet50" and ckpt["step"] == 20
    from safetensors.torch import load_file

    src = load_file(resnet50_weights)  # the stem's frozen BatchNorm statistics: loaded from the file, never trained
    stem = [k for k in ckpt["model"] if k.startswith("encoder.") and k.endswith("bn1.running_var") and "layer" not in k]
    assert len(stem) == 1 and torch.equal(ckpt["model"][stem[0]], src["bn1.running_var"])
