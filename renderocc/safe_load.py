"""Reading user-given files (checkpoints, pretrained weights, .npz grids) without running their code
or trusting their declared sizes.

One place for the rules: `torch.load(weights_only=True)`, a refused pickle or an unreadable file
becomes one `UserError` line, and torch's own chatter about the file (the "pickle protocol"
UserWarning a crafted file triggers) never reaches the user's terminal ahead of that line; an .npz
is opened without pickles, and only when every member declares a size the caller can expect (a
zip bomb declares gigabytes and would be inflated in full).
"""

from __future__ import annotations

import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from renderocc.errors import UserError, require_regular_file


def require_file(path: str | Path, what: str) -> Path:
    """`path` if it is a regular file; else one line naming what it is (`errors.require_regular_file`)."""
    require_regular_file(path, what)
    return Path(path)


def load_plain(path: str | Path, what: str) -> Any:
    """The file's tensors and plain data; `what` names the file in the one-line error."""
    path = require_file(path, what)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torch's notes on the pickle; we decide
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "Unsupported global" in str(e):
            found = str(e).split("Unsupported global:", 1)[-1].split(" was not", 1)[0].strip().replace("GLOBAL ", "")
        elif path.read_bytes()[:1] == PICKLE_PROTO:
            found = "a bare pickle stream"
        else:  # neither a torch file nor a pickle: nothing was refused, the file is just not one
            raise UserError(f"{path}: not a readable {what} (not a torch file)") from None
        raise UserError(f"{path}: refused: holds Python objects other than tensors and plain data ({found}); "
                        "renderocc never runs code from a file it loads") from None
    except Exception as e:  # noqa: BLE001 - any other read failure is a bad file for the user
        raise UserError(f"{path}: not a readable {what} ({e.__class__.__name__})") from None


PICKLE_PROTO = b"\x80"  # the first byte of a pickle stream of protocol 2 or later
NPZ_HEADER_BYTES = 4096  # room for the .npy header of each member


def open_npz(path: str | Path, what: str, max_member_bytes: int) -> np.lib.npyio.NpzFile:
    """An .npz opened without pickles, after checking it is a regular file whose members each declare
    at most `max_member_bytes` (+ a header) uncompressed; else one line naming the file."""
    path = Path(path)
    try:
        require_file(path, what)
        with zipfile.ZipFile(path) as z:
            big = max(z.infolist(), key=lambda m: m.file_size, default=None)
        if big is not None and big.file_size > max_member_bytes + NPZ_HEADER_BYTES:
            raise UserError(f"{what} {path}: member {big.filename} declares {big.file_size:,} bytes, more than "
                            f"the {max_member_bytes:,} its grid can hold: refused")
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise UserError(f"{what} {path}: not a readable .npz ({e.__class__.__name__})") from None
