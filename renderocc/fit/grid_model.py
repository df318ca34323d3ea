"""`FreeGrid`: per-voxel density and semantic logits as parameters, shaped like a network's output.

Its forward ignores the images and returns an `OccupancyOutput`, so the trainer's `compute_loss`,
the loss table and the threshold choice run on it unchanged: a fit uses training's code, not a copy.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from renderocc.classes import NUM_SEMANTIC
from renderocc.model import OccupancyOutput


class FreeGrid(nn.Module):
    """density = softplus(raw) (1/m), initialised to `density_init` like the network's head; logits 0."""

    def __init__(self, shape: list[int] | tuple[int, ...], density_init: float = 0.1,
                 num_classes: int = NUM_SEMANTIC):
        super().__init__()
        X, Y, Z = (int(s) for s in shape)
        raw = math.log(math.expm1(density_init))  # softplus⁻¹: the same thin fog a network starts from
        self.raw_density = nn.Parameter(torch.full((X, Y, Z), raw))
        self.logits = nn.Parameter(torch.zeros(X, Y, Z, num_classes))

    @property
    def density(self) -> torch.Tensor:
        """(X, Y, Z) density ≥ 0."""
        return F.softplus(self.raw_density)

    def forward(self, images: torch.Tensor | None = None, intrinsics: torch.Tensor | None = None,
                cam2ego: torch.Tensor | None = None) -> OccupancyOutput:
        """The grid as a batch of one; the inputs are accepted (the trainer passes them) and ignored."""
        empty = self.raw_density.new_zeros(1, 0, 0, 0, 0)  # no LSS depth head: lss_depth must be 0
        return OccupancyOutput(self.density[None], self.logits[None], empty)
