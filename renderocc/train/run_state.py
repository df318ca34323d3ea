"""What a run saves and takes back: the checkpoint's training state, `--resume` (the same run
continued exactly) and `--init-from` (a new run that starts from another run's weights)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from renderocc.config import Config
from renderocc.errors import UserError
from renderocc.model.weights import match, mismatch_text, table
from renderocc.train.checkpoint import load_checkpoint
from renderocc.train.distributed import get_rng, set_rng

# Keys a resumed run may change: they do not alter the numbers it computes.
RESUME_MAY_DIFFER = ("data.workers", "train.log_every", "train.loader_bench_batches", "render.backend")


@dataclass
class Parts:
    """The objects whose state a checkpoint holds."""

    model: torch.nn.Module
    ema: torch.nn.Module
    opt: torch.optim.Optimizer
    sched: object
    scaler: object


def training_state(parts: Parts, cfg: Config, step: int, thr: dict | None, world: int, store_id: str,
                   classes: list[str], source: str | None, best: dict | None, parent: dict | None) -> dict:
    """Tensors and plain data only (checkpoint.py loads with weights_only=True). `semantic_source`
    (lidarseg | masks | both | none) is part of the supervision contract reports state; `best` the
    validation score best.pt holds; `parent` the checkpoint an `--init-from` run started from."""
    return {"store": {"manifest_sha256": store_id}, "model": parts.model.state_dict(),
            "ema": parts.ema.state_dict(), "config": cfg.to_dict(), "semantic_source": source,
            "supervision": cfg.supervision, "threshold": thr["threshold"] if thr else None,
            "threshold_info": thr, "grid": cfg.grid.spec.to_record(), "classes": classes, "step": step,
            "optimizer": parts.opt.state_dict(), "scheduler": parts.sched.state_dict(),
            "scaler": parts.scaler.state_dict(), "rng": get_rng(), "world_size": world,
            "best": best, "parent": parent}


def resume(parts: Parts, path: Path, cfg: Config, store_id: str) -> dict:
    """Load `path` (the run's last.pt) into `parts` after checking it is the same run; returns the
    checkpoint (its `step`, `best`, `parent`)."""
    ckpt = load_checkpoint(path)
    check_resume(ckpt, cfg, store_id, path)
    try:
        parts.model.load_state_dict(ckpt["model"])
        parts.ema.load_state_dict(ckpt["ema"])
        parts.opt.load_state_dict(ckpt["optimizer"])
        parts.sched.load_state_dict(ckpt["scheduler"])
        parts.scaler.load_state_dict(ckpt["scaler"])
        ckpt["step"] = int(ckpt["step"])
        set_rng(ckpt["rng"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise UserError(f"--resume: {path} lacks or has a bad training state "
                        f"({e.__class__.__name__}: {str(e)[:80]})") from None
    return ckpt


def check_resume(ckpt: dict, cfg: Config, store_id: str, path: Path) -> None:
    """A resumed run continues the same run: the same store (manifest checksum) and the same config."""
    saved_store = (ckpt.get("store") or {}).get("manifest_sha256")
    if saved_store is None:
        raise UserError(f"--resume: {path} records no store identity (written by an older renderocc); "
                        "use a new --out")
    if saved_store != store_id:
        raise UserError(f"--resume: {path} was trained on another store (or the store changed since: "
                        f"manifest sha256 {str(saved_store)[:12]} vs {store_id[:12]}); use a new --out")
    saved = Config.from_dict(ckpt["config"], f"--resume {path}").to_dict()
    now = cfg.to_dict()
    diff = [k for k in _flat_keys(saved) | _flat_keys(now)
            if k not in RESUME_MAY_DIFFER and _get(saved, k) != _get(now, k)]
    if diff:
        shown = ", ".join(f"{k}: {_get(saved, k)!r} vs {_get(now, k)!r}" for k in sorted(diff)[:3])
        raise UserError(f"--resume: {path} was trained with another config ({shown}); pass the same "
                        "--config/--set, or use a new --out (--init-from starts a new run from its weights)")


def _flat_keys(d: dict, prefix: str = "") -> set[str]:
    out: set[str] = set()
    for k, v in d.items():
        out |= _flat_keys(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}"}
    return out


def _get(d: dict, dotted: str):
    for part in dotted.split("."):
        d = d.get(part) if isinstance(d, dict) else None
    return d


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def init_from(model: torch.nn.Module, path: str | Path, weights: str = "auto", partial: bool = False,
              say=print) -> dict:
    """Load another run's weights into `model` (a new run: its own config, optimiser and schedule);
    returns the parent record the new run's checkpoints keep. `weights`: ema | model | auto (the EMA
    when the checkpoint kept one). Strict unless `partial`: mismatches are listed and refused."""
    ckpt = load_checkpoint(path)
    if weights not in ("auto", "ema", "model"):
        raise UserError(f"--init-weights {weights!r}: use auto, ema or model")
    which = ("ema" if ckpt.get("ema") else "model") if weights == "auto" else weights
    if not ckpt.get(which):
        raise UserError(f"--init-from {path}: the checkpoint holds no `{which}` weights")
    report, chosen = match(model, ckpt[which])
    if not report.loaded or (not partial and not report.ok):
        raise UserError(f"--init-from {path}: its {which} weights do not fit this config's network: "
                        f"{mismatch_text(report)}; --init-partial loads what fits")
    model.load_state_dict(chosen, strict=False)
    if partial:
        say(f"init from (partial): {path}")
        for line in table(report):
            say(line)
    parent_cfg = Config.from_dict(ckpt["config"], f"--init-from {path}: config")
    return {"path": str(path), "sha256": file_sha256(path), "config_digest": parent_cfg.digest(),
            "step": ckpt.get("step"), "weights": which, "supervision": ckpt.get("supervision"),
            "threshold": ckpt.get("threshold")}
