"""Checkpoints: one `torch.save` dict (see docs/ARCHITECTURE.md), written atomically, that can
never run code when loaded.

Checkpoints get shared and downloaded, so they hold only tensors and plain data (str, int, float,
bool, None, lists, tuples, dicts with str/int keys) and are read with `weights_only=True`: a file
that holds any other Python object is refused with one line, its pickle is never executed.

`load_model` is what eval / predict / viz call: it rebuilds the network from the saved config
and loads the EMA weights when the run kept them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from renderocc.classes import OCC3D_CLASSES
from renderocc.config import Config
from renderocc.errors import UserError
from renderocc.model import OccupancyNet
from renderocc.safe_load import load_plain

PLAIN = (str, int, float, bool, type(None), torch.Tensor)


def plain_data_problem(obj: Any, where: str = "checkpoint") -> str | None:
    """Where `obj` holds something other than tensors and plain data (None when it does not)."""
    if isinstance(obj, PLAIN):
        return None
    if isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            if (p := plain_data_problem(v, f"{where}[{i}]")) is not None:
                return p
        return None
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, str | int):
                return f"{where}: key {k!r} of type {type(k).__name__}"
            if (p := plain_data_problem(v, f"{where}[{k!r}]")) is not None:
                return p
        return None
    return f"{where}: {type(obj).__module__}.{type(obj).__qualname__}"


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Write to a temporary file then rename: a crash never leaves a truncated `last.pt`, and a full
    disk leaves no temporary file behind (one line instead)."""
    problem = plain_data_problem(state)
    if problem is not None:
        raise RuntimeError(f"internal error: checkpoint must hold tensors and plain data only ({problem})")
    path = Path(path)
    tmp = path.with_name(f".tmp-{path.name}")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:   # torch reports a short write (ENOSPC) as a RuntimeError
        tmp.unlink(missing_ok=True)
        why = e.strerror if isinstance(e, OSError) and e.strerror else "write failed (disk full?)"
        raise UserError(f"cannot write checkpoint {path}: {why}") from None


def load_checkpoint(path: str | Path) -> dict:
    """The checkpoint dict, loaded without running any code from the file (`weights_only=True`)."""
    ckpt = load_plain(path, "renderocc checkpoint")
    return check_structure(ckpt, path)


def check_structure(ckpt: Any, path: str | Path) -> dict:
    """The keys every reader relies on, with the right kinds of values (one line when not)."""
    if not isinstance(ckpt, dict):
        raise UserError(f"{path}: holds a {type(ckpt).__name__}, not a renderocc training checkpoint")
    missing = [k for k in ("config", "model") if k not in ckpt]
    if missing:
        raise UserError(f"{path}: missing {'/'.join(f'`{k}`' for k in missing)}; not a renderocc training checkpoint")
    if not isinstance(ckpt["config"], dict):
        raise UserError(f"{path}: `config` is a {type(ckpt['config']).__name__}, not a table")
    for key in ("model", "ema"):
        sd = ckpt.get(key)
        if sd is None and key == "ema":
            continue
        if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
            raise UserError(f"{path}: `{key}` is not a table of tensors")
    return ckpt


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[OccupancyNet, dict]:
    """(model in eval mode on `device` with EMA weights if present, checkpoint dict).

    The returned dict's `config` is the checked `Config` (on disk it is plain data)."""
    ckpt = load_checkpoint(path)
    cfg = Config.from_dict(ckpt["config"], f"{path}: config")
    if cfg.grid.shape is None:
        raise UserError(f"{path}: config has no resolved grid; not a renderocc training checkpoint")
    ckpt["config"] = cfg
    classes = ckpt.setdefault("classes", list(OCC3D_CLASSES))  # free last; Occ3D before vocabularies
    if not isinstance(classes, list) or len(classes) < 2 or not all(isinstance(c, str) for c in classes):
        raise UserError(f"{path}: `classes` is not a list of class names; not a renderocc training checkpoint")
    model = OccupancyNet(cfg.model, cfg.grid.spec, len(classes) - 1)
    model.load_state_dict(ckpt.get("ema") or ckpt["model"])
    return model.to(device).eval(), ckpt
