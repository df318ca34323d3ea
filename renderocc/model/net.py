"""OccupancyNet: images → ResNet → LSS lift-splat → 3D conv encoder → density + semantic heads."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from renderocc.classes import NUM_SEMANTIC
from renderocc.model.encoder import ResNet
from renderocc.model.view_transform import LiftSplat, Neck


def conv3d_block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(cin, cout, 3, stride, 1, bias=False), nn.GroupNorm(min(8, cout), cout),
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


class OccupancyNet(nn.Module):
    """forward(images (B,N,3,H,W), intrinsics (B,N,3,3), cam2ego (B,N,4,4)) → (density, logits).

    `config` is the `[model]` table plus `grid` (pc_range, voxel_size, shape) — see
    renderocc/configs/*.toml. The last depth logits are kept on `self.last_depth_logits` for
    the optional LSS depth loss.
    """

    def __init__(self, config: dict):
        super().__init__()
        self.config = config
        grid = config["grid"]
        self.encoder = ResNet(config.get("encoder", "resnet18"), int(config.get("width", 64)),
                              config.get("norm", "gn"))
        c = int(config.get("channels", 64))
        self.neck = Neck(*self.encoder.out_channels, c)
        bins = config.get("depth_bins", [1.0, 45.0, 88])
        self.lift = LiftSplat(c, int(config.get("voxel_channels", 32)), (bins[0], bins[1], int(bins[2])), 8,
                              grid["pc_range"], grid["voxel_size"], grid["shape"],
                              bool(config.get("splat_mass", False)))
        vc = int(config.get("voxel_channels", 32))
        # voxel position (x, y, z in [-1, 1]) as input channels: lifted features carry no height,
        # and a 3D conv is translation-invariant, so without them "the ground is at z≈0" is unlearnable
        self.pos_channels = bool(config.get("pos_channels", False))
        self.encoder3d = Encoder3D(self.lift.out_channels + 3 * self.pos_channels, vc, int(config.get("blocks3d", 2)))
        self.density_head = nn.Conv3d(vc, 1, 1)
        self.semantic_head = nn.Conv3d(vc, NUM_SEMANTIC, 1)
        # start with a thin fog: rays neither saturate nor pass untouched
        init = float(config.get("density_init", 0.1))
        # density = softplus(gain · head): gain > 1 lets the density leave its init faster
        self.density_gain = float(config.get("density_gain", 1.0))
        nn.init.zeros_(self.density_head.weight)
        nn.init.constant_(self.density_head.bias, math.log(math.expm1(init)) / self.density_gain)
        self.last_depth_logits: torch.Tensor | None = None

    def forward(self, images: torch.Tensor, intrinsics: torch.Tensor, cam2ego: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        b, n = images.shape[:2]
        c3, c4 = self.encoder(images.flatten(0, 1))
        vol, self.last_depth_logits = self.lift(self.neck(c3, c4), intrinsics, cam2ego)
        if self.pos_channels:
            b_, _, X, Y, Z = vol.shape
            axes = [torch.linspace(-1 + 1 / k, 1 - 1 / k, k, device=vol.device, dtype=vol.dtype) for k in (X, Y, Z)]
            pos = torch.stack(torch.meshgrid(*axes, indexing="ij"))[None].expand(b_, -1, -1, -1, -1)
            vol = torch.cat([vol, pos], 1)
        x = self.encoder3d(vol)
        density = F.softplus(self.density_gain * self.density_head(x)[:, 0])
        logits = self.semantic_head(x).permute(0, 2, 3, 4, 1)
        return density, logits
