"""Temporal neighbours of a keyframe: ±K keyframes of the SAME scene, never padded.

The reference code replaced out-of-scene neighbours with the key frame's own rays; here a
missing neighbour is simply absent, so a consumer sees how many neighbours really exist.
"""

from __future__ import annotations

import numpy as np


def neighbour_positions(n_in_scene: int, pos: int, k: int) -> list[tuple[int, int]]:
    """(offset, position) pairs for offsets -k..-1, 1..k that fall inside the scene."""
    out = []
    for off in [*range(-k, 0), *range(1, k + 1)]:
        j = pos + off
        if 0 <= j < n_in_scene:
            out.append((off, j))
    return out


def cam_to_key_ego(key_ego_pose: np.ndarray, cam2global: np.ndarray) -> np.ndarray:
    """Camera → key-ego transforms (..., 4, 4) from camera → global and the key ego → global pose.

    Used both for the key frame's own cameras (includes the ego motion between the LiDAR and
    camera timestamps) and for a neighbour's cameras (includes the motion between keyframes).
    """
    return np.linalg.inv(key_ego_pose) @ cam2global
