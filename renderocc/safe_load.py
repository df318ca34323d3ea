"""Reading user-given torch files (checkpoints, pretrained weights) without running their code.

One place for the rule: `torch.load(weights_only=True)`, a refused pickle or an unreadable file
becomes one `UserError` line, and torch's own chatter about the file (the "pickle protocol"
UserWarning a crafted file triggers) never reaches the user's terminal ahead of that line.
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from typing import Any

import torch

from renderocc.errors import UserError


def load_plain(path: str | Path, what: str) -> Any:
    """The file's tensors and plain data; `what` names the file in the one-line error."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no {what} at {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torch's notes on the pickle; we decide
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = "not plain data"
        if "Unsupported global" in str(e):
            found = str(e).split("Unsupported global:", 1)[-1].split(" was not", 1)[0].strip()
            found = found.replace("GLOBAL ", "")
        raise UserError(f"{path}: refused: holds Python objects other than tensors and plain data ({found}); "
                        "renderocc never runs code from a file it loads") from None
    except Exception as e:  # noqa: BLE001 - any other read failure is a bad file for the user
        raise UserError(f"{path}: not a readable {what} ({e.__class__.__name__})") from None
