"""Command outputs on local disk (eval, predict, viz, qa, fit, train): the --out folder is checked
before the work starts, and every file is written to a temp name and renamed, so a full disk or a
kill never leaves a truncated file under its final name (nor a temp file behind).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from renderocc.errors import UserError
from renderocc.store.fsio import write_bytes_atomic


def prepare_out_dir(path: str | os.PathLike, option: str = "--out") -> Path:
    """Create `path` (and parents) and check it is a writable folder: one line when not."""
    p = Path(path)
    if "://" in str(path):
        raise UserError(f"{option} {path}: must be a local folder (URLs are for stores)")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UserError(f"{option} {p}: exists and is not a folder") from None
    except OSError as e:
        raise UserError(f"{option} {p}: cannot create ({e.strerror or e})") from None
    if not os.access(p, os.W_OK | os.X_OK):
        raise UserError(f"{option} {p}: not writable")
    return p


def write_atomic(path: str | os.PathLike, data: bytes | str) -> None:
    """Write `data` to `path` via a temp file in the same folder, then rename (the store's own
    atomic write: a failure removes the temp file and is one line)."""
    p = Path(path).absolute()
    write_bytes_atomic(data.encode() if isinstance(data, str) else data, str(p.parent), p.name)


def savez_atomic(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """`np.savez_compressed`, atomically."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    write_atomic(path, buf.getvalue())


def share(num: float, den: float) -> float | None:
    """num / den as a float, None when there is nothing to share (reports print it as a dash)."""
    return float(num) / float(den) if den else None
