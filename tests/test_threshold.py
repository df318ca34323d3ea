"""The threshold rule's choice among candidates (`renderocc.train.threshold.pick_threshold`)."""

from __future__ import annotations

import numpy as np
import torch

from renderocc.classes import FREE, IGNORE
from renderocc.config import load_config
from renderocc.train.threshold import CANDIDATES, candidate_counts, pick_threshold


def test_a_tied_range_gives_its_middle_not_its_lowest_end():
    num = torch.tensor([0.5] * 5 + [1.0] * 10 + [0.2] * (len(CANDIDATES) - 15))
    den = torch.ones(len(CANDIDATES))
    got = pick_threshold(num, den, True, [0], "held-out")
    assert got["threshold"] == float(torch.tensor(CANDIDATES[5 + 4], dtype=torch.float32))
    assert got["score"] == 1.0
    # a single best candidate is taken as it is
    num[20] = 2.0
    assert pick_threshold(num, den, True, [0], "held-out")["threshold"] == float(
        torch.tensor(CANDIDATES[20], dtype=torch.float32))


def test_unobserved_air_at_the_initial_density_is_not_called_occupied():
    """Label voxels see two occupied and two free voxels; the rest of the grid is unobserved (ignored
    by the score) at a faint 0.1. Every τ between the free and the occupied density ties; the rule must
    not take the lowest one, which would fill the unobserved air."""
    target = np.full((4, 4, 4), IGNORE, np.uint8)
    target[0, 0, :2] = 3
    target[1, 1, :2] = FREE
    density = torch.full((4, 4, 4), 0.1)
    density[0, 0, :2] = 5.0
    density[1, 1, :2] = 0.0
    cfg = load_config("demo")
    num, den = candidate_counts(density, cfg, occ_target=torch.from_numpy(target))
    got = pick_threshold(num, den, False, [0], "held-out")
    assert got["score"] == 1.0
    assert 0.1 < got["threshold"] < 5.0
