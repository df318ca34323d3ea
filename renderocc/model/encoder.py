"""A small ResNet family in plain torch: the image backbone, with no download and no registry.

Layer names follow torchvision (`conv1`, `bn1`, `layer1.0.conv1`, ...) so a torchvision-style
state_dict loads with `load_pretrained`. Normalisation is GroupNorm (trains from scratch with
tiny batches and is identical under DDP) or frozen BatchNorm (for pretrained weights).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from renderocc.errors import UserError
from renderocc.safe_load import load_plain

# blocks per stage; all use BasicBlock (ResNet-10/18/34 family)
DEPTHS = {"resnet10": (1, 1, 1, 1), "resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm with fixed statistics and affine: the standard way to use pretrained BN."""

    def __init__(self, n: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        for name, val in (("weight", 1.0), ("bias", 0.0), ("running_mean", 0.0), ("running_var", 1.0)):
            self.register_buffer(name, torch.full((n,), val))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale[None, :, None, None] + shift[None, :, None, None]


def make_norm(kind: str, n: int) -> nn.Module:
    if kind == "gn":
        return nn.GroupNorm(min(8, n), n)
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
            raise UserError(f"unknown model.encoder {arch!r}: choose one of {sorted(DEPTHS)}")
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


def load_pretrained(encoder: nn.Module, path: str | Path) -> list[str]:
    """Load a state_dict file (torchvision naming; a `model`/`state_dict` wrapper is unwrapped).

    Returns the encoder keys left at their initial values; keys that do not exist in the
    encoder (`fc.*`, `layer4.*`) or differ in shape are ignored.
    """
    state = load_plain(path, "pretrained weights file")
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    own = encoder.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise UserError(f"--pretrained {path}: no tensor matches the encoder (wrong architecture?)")
    encoder.load_state_dict(usable, strict=False)
    return sorted(set(own) - set(usable))
