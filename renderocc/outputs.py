"""Command outputs on local disk (eval, predict, viz, qa, fit, train): the --out folder is checked
before the work starts, and every file is written to a temp name and renamed, so a full disk or a
kill never leaves a truncated file under its final name (nor a temp file behind).
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import numpy as np

from renderocc.errors import UserError
from renderocc.store.fsio import write_bytes_atomic

SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


def path_component(name: object, what: str) -> str:
    """`name` (a scene name, a sample token: data, not code) as one folder or file name under --out:
    letters, digits, '.', '_', '-', not starting with a dot, at most 200 characters. Anything else
    (a separator, '..', an absolute path, a control character) would write outside --out or over
    another file: one line naming the value."""
    text = str(name)
    if not SAFE_NAME.fullmatch(text):
        raise UserError(f"{what} {text!r} cannot name an output file: only letters, digits, '.', '_' and '-' "
                        "(not first) are used in output paths")
    return text


def sample_dirs(reader, indices: list[int], root: Path) -> dict[int, Path]:
    """root/<scene_name>/<sample_token> of each sample (Occ3D's gts/ layout), every name checked by
    `path_component` before anything is written."""
    out = {}
    for i in indices:
        s = reader.sample(i)
        out[i] = root / path_component(s["scene_name"], "scene name") / path_component(s["sample_token"],
                                                                                       "sample token")
    return out


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
