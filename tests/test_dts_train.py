"""DTS in the trainer, on a synthetic store with camera sweeps: a teacher needs a parent, the run line
names the teacher, the unlabelled frames train the student (depth rays + the teacher's voxels), the
teacher and the student are validated apart, and `--resume` stays exact with two data streams."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from tiny_run import TINY, tiny

from renderocc.cli import main
from renderocc.config import resolved
from renderocc.model.build import build_model
from renderocc.store.reader import StoreReader
from renderocc.train.checkpoint import load_checkpoint
from renderocc.train.distributed import seed_everything
from renderocc.train.dts import teacher_targets, unlabelled_config, unlabelled_data
from renderocc.train.step import forward, to_device
from renderocc.train.trainer import train

DTS = ["dts.enabled=true", "dts.confidence=0.6"]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """1 scene × 5 keyframes with 2 camera sweeps per keyframe interval, 96×54 images."""
    from renderocc.prep.pipeline import PrepOptions, run
    from renderocc.synth.writer import write_dataset

    root = write_dataset(tmp_path_factory.mktemp("dts") / "nuscenes", scenes=1, samples_per_scene=5, seed=3,
                         image_size=(160, 90), sweeps_per_sample=1, workers=1, camera_sweeps_per_sample=2)
    out = tmp_path_factory.mktemp("dts-store") / "store"
    run(PrepOptions(dataroot=str(root), version="v1.0-mini", out=str(out), image_size=(96, 54), progress=False,
                    camera_sweeps=2), log=lambda m: None)
    return str(out)


@pytest.fixture(scope="module")
def parent(store, tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("dts-parent") / "run"
    train(store, out, tiny("train.max_steps=2"), quiet=True)
    return str(out / "last.pt")


def cli(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(main, ["train", *args, *[a for kv in TINY for a in ("--set", kv)]])
    return res.exit_code, res.output


def test_a_teacher_needs_a_parent_and_the_store_sweeps(store, small_store, tmp_path):
    code, out = cli("--store", store, "--out", str(tmp_path / "a"), "--set", "dts.enabled=true")
    assert code == 2 and "--init-from" in out and "Traceback" not in out, out
    code, out = cli("--store", small_store, "--out", str(tmp_path / "b"), "--set", "dts.enabled=true",
                    "--set", "dts.pseudo_weight=0")
    assert code == 2 and "no camera sweeps" in out and "Traceback" not in out, out
    assert not (tmp_path / "a" / "last.pt").exists() and not (tmp_path / "b" / "last.pt").exists()


def test_unlabelled_frames_are_the_training_keyframes_sweeps(store):
    r = StoreReader(store)
    cfg = resolved(tiny(*DTS), r.grid)
    u = unlabelled_data(r, cfg, [0, 1, 2], 8)
    assert u.indices == [j for i in (0, 1, 2) for j in r.sweeps_of(i)] and len(u.indices) == 6
    item = u.ds[(0, u.indices[0])]
    assert (item["label"][item["valid"]] == 255).all() and int(item["valid"].sum()) > 100
    assert float(item["depth_target"].max()) > 0 and "occ_target" not in item
    assert u.batch == 1 and u.cfg.supervision == "2d"


def test_the_injected_depth_changes_what_the_teacher_says(store):
    r = StoreReader(store)
    cfg = resolved(tiny(*DTS), r.grid)
    seed_everything(0)
    model = build_model(cfg, r.vocabulary.num_semantic).eval()
    u = unlabelled_data(r, cfg, [0], model.feature_stride)
    batch = to_device(torch.utils.data.default_collate([u.ds[(0, u.indices[0])]]), torch.device("cpu"))
    cpu = torch.device("cpu")
    with torch.no_grad():
        hinted = forward(model, batch, cfg, cpu, batch["depth_target"])
        own = forward(model, batch, cfg, cpu)
    assert not torch.allclose(hinted.semantics, own.semantics)  # the lift put the features elsewhere
    assert torch.equal(hinted.depth_logits, own.depth_logits)   # the network's own depth is untouched
    target = teacher_targets(model, batch, cfg, cpu)
    assert target.shape == (1, *cfg.grid.spec.shape) and target.dtype == torch.uint8
    assert unlabelled_config(cfg).data.aux_frames == 0


@pytest.mark.slow
def test_dts_run_trains_on_sweeps_validates_teacher_and_student_and_resumes_exactly(store, parent, tmp_path):
    run = tmp_path / "run"
    code, out = cli("--store", store, "--out", str(run), "--init-from", parent, "--set", "train.max_steps=4",
                    "--set", "train.ckpt_every=2", "--set", "train.val_every=4", "--set", "train.val_samples=1",
                    "--set", "train.val_rays=300", "--set", "train.val_metric=sem2d_miou",
                    *[a for kv in DTS for a in ("--set", kv)])
    assert code == 0, out
    assert "supervision 2d + DTS (depth-aware teacher) on camera sweeps" in out
    assert "unlabelled: " in out and "camera sweeps of the training keyframes" in out
    assert "with the LiDAR depth in its lift (DTS)" in out and Path(parent).name in out
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in recs if "validation" not in r]
    assert all(r["unlabelled"] > 0 and 0 <= r["pseudo_share"] <= 1 for r in steps)
    # a barely trained teacher may pass no voxel at first; it does once the EMA moves
    assert any(r["pseudo"] > 0 and r["pseudo_share"] > 0 for r in steps)
    val = [r["validation"] for r in recs if "validation" in r]
    assert len(val) == 1 and {"sem2d_miou", "student_sem2d_miou"} <= set(val[0])
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt["config"]["dts"]["enabled"] and ckpt["parent"]["path"].endswith("last.pt")
    # the same run cut after the step-2 checkpoint and resumed: the same losses, both streams resumed
    cut = tmp_path / "cut"
    cfg = tiny("train.max_steps=4", "train.ckpt_every=2", *DTS)
    train(store, cut, cfg, quiet=True, init_from=parent, stop_step=3)
    train(store, cut, cfg, quiet=True, resume=True)
    full = tmp_path / "full"
    train(store, full, cfg, quiet=True, init_from=parent)

    def losses(d: Path) -> list[float]:
        return [json.loads(x)["loss"] for x in (d / "metrics.jsonl").read_text().splitlines()
                if "validation" not in json.loads(x)]

    assert losses(cut) == pytest.approx(losses(full), rel=1e-5)
