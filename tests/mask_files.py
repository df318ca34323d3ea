"""Dense 2D mask files for a synthetic dataroot, as `renderocc prep masks --masks DIR` reads them."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np


def write_key_frame_masks(dataroot: Path, out: Path, value: int = 3) -> Path:
    """A PNG mask of class `value` (top quarter unlabelled, 255) for every key-frame camera image."""
    sds = json.loads((Path(dataroot) / "v1.0-mini" / "sample_data.json").read_text())
    for sd in sds:
        if sd["is_key_frame"] and sd["filename"].endswith(".jpg"):
            m = np.full((sd["height"], sd["width"]), value, np.uint8)
            m[: sd["height"] // 4] = 255
            p = out / Path(sd["filename"]).with_suffix(".png")
            p.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(p), m)
    return out
