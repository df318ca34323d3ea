"""Where the real nuScenes fixture lives: $RENDEROCC_REAL_FIXTURE, else ../shared/data beside the checkout."""

from __future__ import annotations

import os
from pathlib import Path


def _real_fixture() -> Path:
    env = os.environ.get("RENDEROCC_REAL_FIXTURE")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[2] / "shared/data/nuscenes-scene-0916")
    return next((c for c in candidates if (c / "v1.0-mini").is_dir()), candidates[0])


REAL_FIXTURE = _real_fixture()
