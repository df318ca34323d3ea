"""What a motion-mask test counts: the dynamic labels of a frame that its dense motion mask covers."""

from __future__ import annotations

import numpy as np


def dynamic_labels_in_mask(labels: dict, sample: dict, mask: np.ndarray, cameras: list[str],
                           image_size: tuple[int, int]) -> tuple[int, int]:
    """(dynamic labels whose stored pixel the mask marks, dynamic labels), over every camera; label
    pixels are scaled from the original image to the stored one (K · K_orig⁻¹)."""
    assert mask.shape == (len(cameras), image_size[1], image_size[0])
    covered = total = 0
    for c, name in enumerate(cameras):
        sel = (labels["camera"] == c) & labels["dynamic"]
        cam = sample["cameras"][name]
        scale = cam["K"] @ np.linalg.inv(cam["K_orig"])
        uv = np.stack([labels["u"][sel], labels["v"][sel], np.ones(sel.sum())], 1) @ scale.T
        x = np.clip(np.floor(uv[:, 0]).astype(int), 0, image_size[0] - 1)
        y = np.clip(np.floor(uv[:, 1]).astype(int), 0, image_size[1] - 1)
        covered += int(mask[c, y, x].sum())
        total += int(sel.sum())
    return covered, total
