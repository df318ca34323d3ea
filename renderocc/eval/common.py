"""Small helpers the eval and qa commands share: opening a store, strict JSON."""

from __future__ import annotations

import math
from pathlib import Path

from renderocc.errors import UserError
from renderocc.store.reader import StoreReader


def open_store(path: str):
    """A StoreReader for `path`, turning a missing or unreadable store into one UserError line."""
    if "://" not in path and not Path(path).exists():
        raise UserError(f"store not found: {path}")
    try:
        return StoreReader(path)
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - any reader failure is a bad store for the user
        raise UserError(f"cannot open store {path}: {e}".splitlines()[0]) from None


def clean_json(o):
    """NaN/inf → None and numpy scalars/arrays → Python, so the output is strict JSON."""
    if hasattr(o, "tolist"):
        o = o.tolist()
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {str(k): clean_json(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [clean_json(v) for v in o]
    return o
