"""OccupancyNet: images → image backbone → LSS lift-splat → 3D conv encoder → density + semantic heads."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from renderocc.classes import NUM_SEMANTIC
from renderocc.config import ModelConfig
from renderocc.geometry import Grid
from renderocc.model.backbones import make_encoder
from renderocc.model.encoder import group_norm
from renderocc.model.view_transform import LiftSplat, Neck

FEATURE_STRIDE = 8  # the neck's output stride: LSS depth cells are FEATURE_STRIDE pixels wide


def conv3d_block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(cin, cout, 3, stride, 1, bias=False), group_norm(cout),
                         nn.ReLU(inplace=True))


class Encoder3D(nn.Module):
    """A two-level 3D U-Net: full-resolution blocks plus a stride-2 branch for context."""

    def __init__(self, ch_in: int, ch: int, blocks: int):
        super().__init__()
        self.stem = nn.Sequential(*[conv3d_block(ch_in if i == 0 else ch, ch) for i in range(max(1, blocks))])
        self.down = nn.Sequential(conv3d_block(ch, 2 * ch, stride=2),
                                  *[conv3d_block(2 * ch, 2 * ch) for _ in range(max(0, blocks - 1))])
        self.up = nn.Conv3d(2 * ch, ch, 1)
        self.out = conv3d_block(ch, ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = F.interpolate(self.up(self.down(x)), size=x.shape[-3:], mode="trilinear", align_corners=False)
        return self.out(x + y)


class OccupancyOutput(NamedTuple):
    """What one forward pass predicts; the depth logits travel here, not on the module, so DDP
    wrappers and torch.compile see them as an output."""

    density: torch.Tensor       # (B, X, Y, Z) ≥ 0, 1/m
    semantics: torch.Tensor     # (B, X, Y, Z, C) logits
    depth_logits: torch.Tensor  # (B, N, D, h, w) LSS depth distribution per feature cell


class OccupancyNet(nn.Module):
    """forward(images (B,N,3,H,W), intrinsics (B,N,3,3), cam2ego (B,N,4,4)) → OccupancyOutput.

    `config` is the run's ModelConfig; `grid` the model's resolved `Grid`.
    """

    feature_stride = FEATURE_STRIDE

    def __init__(self, config: ModelConfig, grid: Grid, num_classes: int = NUM_SEMANTIC):
        super().__init__()
        self.config = config
        self.encoder = make_encoder(config)  # plain ResNet or a timm backbone: (c8, c16) + out_channels
        c = config.channels
        self.neck = Neck(*self.encoder.out_channels, c)
        lo, hi, nb = config.depth_bins
        vc = config.voxel_channels
        self.lift = LiftSplat(c, vc, (lo, hi, int(nb)), FEATURE_STRIDE, grid, config.splat_mass)
        # voxel position (x, y, z in [-1, 1]) as input channels: lifted features carry no height,
        # and a 3D conv is translation-invariant, so without them "the ground is at z≈0" is unlearnable
        self.pos_channels = config.pos_channels
        self.encoder3d = Encoder3D(self.lift.out_channels + 3 * self.pos_channels, vc, config.blocks3d)
        self.density_head = nn.Conv3d(vc, 1, 1)
        self.semantic_head = nn.Conv3d(vc, num_classes, 1)  # the store vocabulary's classes
        # start with a thin fog: rays neither saturate nor pass untouched;
        # density = softplus(gain · head): gain > 1 lets the density leave its init faster
        self.density_gain = config.density_gain
        nn.init.zeros_(self.density_head.weight)
        nn.init.constant_(self.density_head.bias, math.log(math.expm1(config.density_init)) / self.density_gain)

    def forward(self, images: torch.Tensor, intrinsics: torch.Tensor, cam2ego: torch.Tensor,
                depth_hint: torch.Tensor | None = None) -> OccupancyOutput:
        """`depth_hint` (B, N, h, w) metres per feature cell (0 = none): LiDAR depth that replaces the
        lift's predicted depth where given (the depth-aware teacher); None for the student and eval."""
        c3, c4 = self.encoder(images.flatten(0, 1))
        vol, depth_logits = self.lift(self.neck(c3, c4), intrinsics, cam2ego, depth_hint)
        if self.pos_channels:
            b_, _, X, Y, Z = vol.shape
            axes = [torch.linspace(-1 + 1 / k, 1 - 1 / k, k, device=vol.device, dtype=vol.dtype) for k in (X, Y, Z)]
            pos = torch.stack(torch.meshgrid(*axes, indexing="ij"))[None].expand(b_, -1, -1, -1, -1)
            vol = torch.cat([vol, pos], 1)
        x = self.encoder3d(vol)
        density = F.softplus(self.density_gain * self.density_head(x)[:, 0])
        logits = self.semantic_head(x).permute(0, 2, 3, 4, 1)
        return OccupancyOutput(density, logits, depth_logits)
