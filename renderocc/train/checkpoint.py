"""Checkpoints: one `torch.save` dict (see docs/ARCHITECTURE.md), written atomically.

`load_model` is what eval / predict / viz call: it rebuilds the network from the saved config
and loads the EMA weights when the run kept them.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from renderocc.classes import OCC3D_CLASSES
from renderocc.errors import UserError
from renderocc.model import OccupancyNet
from renderocc.train.config import Config


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Write to a temporary file then rename: a crash never leaves a truncated `last.pt`."""
    path = Path(path)
    tmp = path.with_name(f".tmp-{path.name}")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad file for the user
        raise UserError(f"{path}: not a readable renderocc checkpoint ({e.__class__.__name__})") from None


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[OccupancyNet, dict]:
    """(model in eval mode on `device` with EMA weights if present, checkpoint dict).

    The returned dict's `config` is the checked `Config` (on disk it is plain data)."""
    ckpt = load_checkpoint(path)
    if not isinstance(ckpt, dict) or "config" not in ckpt or "model" not in ckpt:
        raise UserError(f"{path}: missing `config`/`model`; not a renderocc training checkpoint")
    cfg = Config.from_dict(ckpt["config"], f"{path}: config")
    if cfg.grid.shape is None:
        raise UserError(f"{path}: config has no resolved grid; not a renderocc training checkpoint")
    ckpt["config"] = cfg
    classes = ckpt.setdefault("classes", list(OCC3D_CLASSES))  # free last; Occ3D before vocabularies
    model = OccupancyNet(cfg.model, cfg.grid.spec, len(classes) - 1)
    model.load_state_dict(ckpt.get("ema") or ckpt["model"])
    return model.to(device).eval(), ckpt
