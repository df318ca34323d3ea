"""A small ResNet family in plain torch: the image backbone, with no download and no registry.

Layer names follow torchvision (`conv1`, `bn1`, `layer1.0.conv1`, ...) so a torchvision-style
state_dict loads with `renderocc.model.weights.load_weights`. Normalisation is GroupNorm (trains from
scratch with tiny batches and is identical under DDP) or frozen BatchNorm (for pretrained weights).
Larger backbones come from timm (`renderocc.model.backbones`).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from renderocc.errors import UserError
from renderocc.model.weights import load_weights

# blocks per stage; all use BasicBlock (ResNet-10/18/34 family)
DEPTHS = {"resnet10": (1, 1, 1, 1), "resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm with fixed statistics and affine: the standard way to use pretrained BN (batch
    statistics of one image per GPU are noise, and frozen BN is identical under DDP).

    `affine=False` (a BN without weight and bias) keeps them out of the state_dict."""

    def __init__(self, n: int, eps: float = 1e-5, affine: bool = True):
        super().__init__()
        self.eps = eps
        for name, val in (("weight", 1.0), ("bias", 0.0), ("running_mean", 0.0), ("running_var", 1.0)):
            self.register_buffer(name, torch.full((n,), val), persistent=affine or name.startswith("running"))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # scale and shift in fp32, applied in x's dtype: under autocast the activations stay in the
        # compute dtype (bf16/fp16) instead of being promoted to fp32 by the fp32 buffers
        scale = self.weight.float() * (self.running_var.float() + self.eps).rsqrt()
        shift = self.bias.float() - self.running_mean.float() * scale
        return x * scale.to(x.dtype)[None, :, None, None] + shift.to(x.dtype)[None, :, None, None]


def group_norm(n: int) -> nn.GroupNorm:
    """GroupNorm with up to 8 groups that divide `n` (any channel count a config asks for works)."""
    return nn.GroupNorm(n if n < 8 else math.gcd(8, n), n)


def make_norm(kind: str, n: int) -> nn.Module:
    if kind == "gn":
        return group_norm(n)
    if kind == "frozen_bn":
        return FrozenBatchNorm2d(n)
    raise UserError(f"unknown model.norm {kind!r}: use 'gn' or 'frozen_bn'")


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, norm: str):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = make_norm(norm, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = make_norm(norm, cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            make_norm(norm, cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet(nn.Module):
    """ResNet stem + 3 stages; returns the stride-8 and stride-16 feature maps (C3, C4)."""

    def __init__(self, arch: str = "resnet18", width: int = 64, norm: str = "gn"):
        super().__init__()
        if arch not in DEPTHS:
            raise UserError(f"unknown model.encoder {arch!r}: choose one of {sorted(DEPTHS)} or timm:NAME")
        self.name = arch
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = make_norm(norm, width)
        widths = [width, width * 2, width * 4]
        cin = width
        for i, (n, w) in enumerate(zip(DEPTHS[arch][:3], widths, strict=True)):
            blocks = [BasicBlock(cin if j == 0 else w, w, (1 if i == 0 else 2) if j == 0 else 1, norm)
                      for j in range(n)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            cin = w
        self.out_channels = (widths[1], widths[2])
        # no layer4: stride 16 is enough for LSS, and DDP wants every parameter used.

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        c3 = self.layer2(self.layer1(x))
        return c3, self.layer3(c3)

    def weight_names(self) -> dict[str, str]:
        """Own state_dict key → the key a torchvision-style checkpoint holds it under (the same)."""
        return {k: k for k in self.state_dict()}

    @staticmethod
    def dropped_by_design(key: str) -> bool:
        """A checkpoint key of a module this backbone does not have: the classifier and layer4."""
        return key.startswith(("fc.", "layer4."))


def load_pretrained(encoder: nn.Module, path: str | Path) -> list[str]:
    """Strictly load a weights file into `encoder` (`weights.load_weights`); returns the encoder keys
    left at init, always empty: anything that does not fit is a `UserError`."""
    return load_weights(encoder, path).missing
