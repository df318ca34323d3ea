"""Where compiled helpers live: one per-user cache for the renderer extension and prep's JPEG
helper (importing this pulls in no torch)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """Per-user cache: $RENDEROCC_EXT_DIR, else $XDG_CACHE_HOME/renderocc/ext, else ~/.cache/..."""
    if os.environ.get("RENDEROCC_EXT_DIR"):
        return Path(os.environ["RENDEROCC_EXT_DIR"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "renderocc" / "ext"
