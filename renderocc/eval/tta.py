"""Test-time augmentation modes: their names, pass counts and the sentence the outputs carry.

Kept apart from `infer` (which runs them) so the CLI can offer the choices without importing torch.
"""

from __future__ import annotations

_IMAGE_FLIP = "images mirrored left-right with the intrinsics mirrored (the training flip)"
_BEV_FLIPS = ("the ego frame mirrored in x, and in y, with the camera poses mirrored and the output grid "
              "flipped back (not seen in training)")
_AVERAGE = ("; per voxel the semantic softmax probabilities and the one-voxel occupancy probability "
            "1 - exp(-density * voxel) are averaged")

TTA_MODES = ("none", "flip", "flip-bev")
TTA_PASSES = {"none": 1, "flip": 2, "flip-bev": 4}
TTA_TEXT = {
    "none": None,
    "flip": f"flip: mean of 2 passes (as is; {_IMAGE_FLIP}){_AVERAGE}",
    "flip-bev": f"flip-bev: mean of 4 passes (as is; {_IMAGE_FLIP}; {_BEV_FLIPS}){_AVERAGE}",
}
