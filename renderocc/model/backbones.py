"""Image backbones: the plain-torch ResNet (default, no extra dependency) or any timm model that
has stride-8 and stride-16 feature maps (`model.encoder = "timm:NAME"`).

Both expose `out_channels: tuple[int, int]` and `forward(x) -> (c8, c16)` (NCHW), so the neck
adapts to whatever the backbone reports. Nothing is ever downloaded: timm models are built with
`pretrained=False`, and weights come only from a local file (`renderocc.model.weights`).
timm is imported only when a `timm:` encoder is built, so the plain ResNet works without it.
"""

from __future__ import annotations

import difflib
import math

import torch
from torch import nn
from torch.nn import functional as F

from renderocc.config import ModelConfig
from renderocc.errors import UserError
from renderocc.model.encoder import FrozenBatchNorm2d, ResNet

TIMM = "timm:"
INSTALL_HINT = ("`make install` installs the standard torch + torchvision pair and timm "
                "(a CPU-only torch build cannot import PyPI's torchvision)")
GN_REFUSAL = ("model.norm = 'gn' applies to the plain ResNet; timm backbones keep their BatchNorm frozen: "
              "use model.norm = 'frozen_bn'")


def make_encoder(config: ModelConfig) -> nn.Module:
    """The image backbone `config.encoder` names: resnet10/18/34 (plain torch) or timm:NAME."""
    if config.encoder.startswith(TIMM):
        return TimmEncoder(config.encoder[len(TIMM):], config.norm)
    return ResNet(config.encoder, config.width, config.norm)


def import_timm(what: str):
    """The timm module, or one line saying how to install it (timm needs torchvision, which only
    imports beside a matching standard torch build)."""
    try:
        import timm
        import torchvision  # noqa: F401 - timm's layers need its operators; fail here, not mid-build
    except Exception as e:  # noqa: BLE001 - ImportError, or torchvision's operators missing from this torch
        why = f"{e.__class__.__name__}: {str(e).splitlines()[0] if str(e) else ''}".rstrip(": ")
        raise UserError(f"{what} needs timm and torchvision, which do not import here ({why}); "
                        f"{INSTALL_HINT}") from None
    return timm


class FrozenBatchNormAct2d(FrozenBatchNorm2d):
    """timm's BatchNormAct2d (BN, then dropout and activation in one module) with frozen BN; same
    state_dict keys."""

    def __init__(self, n: int, eps: float, affine: bool, drop: nn.Module, act: nn.Module):
        super().__init__(n, eps, affine)
        self.drop, self.act = drop, act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop(super().forward(x)))


def freeze_batch_norm(module: nn.Module) -> int:
    """Replace every BatchNorm2d / SyncBatchNorm (timm's BatchNormAct2d included) below `module` by a
    frozen copy, in place: batch statistics of one image per GPU are noise, and frozen BN is identical
    under DDP. Returns how many were replaced."""
    count = 0
    for name, child in list(module.named_children()):
        if isinstance(child, nn.BatchNorm2d | nn.SyncBatchNorm):
            affine = child.affine
            act, drop = getattr(child, "act", None), getattr(child, "drop", None)
            if isinstance(act, nn.Module) and isinstance(drop, nn.Module):
                new: nn.Module = FrozenBatchNormAct2d(child.num_features, child.eps, affine, drop, act)
            else:
                new = FrozenBatchNorm2d(child.num_features, child.eps, affine)
            with torch.no_grad():
                if affine:
                    new.weight.copy_(child.weight)
                    new.bias.copy_(child.bias)
                if child.running_mean is not None:
                    new.running_mean.copy_(child.running_mean)
                    new.running_var.copy_(child.running_var)
            setattr(module, name, new)
            count += 1
        else:
            count += freeze_batch_norm(child)
    return count


def _create(timm, name: str, **kwargs) -> nn.Module:
    """timm.create_model, never downloading; transformer backbones (Swin, ViT, ...) built to accept
    any input size (`dynamic_img_size`), which other models do not take as an argument."""
    try:
        return timm.create_model(name, pretrained=False, dynamic_img_size=True, **kwargs)
    except TypeError as e:
        if "dynamic_img_size" not in str(e):
            raise
    return timm.create_model(name, pretrained=False, **kwargs)


def _pick_strides(reductions: list[int], what: str) -> tuple[int, int]:
    """Indices of the stride-8 stage and of the stride-16 one (else the next coarser)."""
    if 8 not in reductions:
        raise UserError(f"{what}: no stride-8 feature map (its stages have strides "
                        f"{', '.join(map(str, reductions))}); the view transform needs strides 8 and 16")
    i8 = reductions.index(8)
    later = [i for i in range(i8 + 1, len(reductions)) if reductions[i] > 8]
    if not later:
        raise UserError(f"{what}: no feature map coarser than stride 8 (strides "
                        f"{', '.join(map(str, reductions))}); the view transform needs strides 8 and 16")
    i16 = next((i for i in later if reductions[i] == 16), min(later, key=lambda i: reductions[i]))
    return i8, i16


class TimmEncoder(nn.Module):
    """A timm model as features_only backbone: the stride-8 and stride-16 stages, NCHW.

    Stages after stride 16, the final norm and the classifier are not built (and parameters that
    cannot reach the two outputs are frozen, so DDP sees every trainable parameter used). BatchNorm
    is frozen (`model.norm = 'frozen_bn'`; 'gn' is refused). Inputs whose size is not a multiple of
    a patch-embedding backbone's patch size (Swin: 4) are zero-padded at the right and bottom, which
    keeps feature cell (i, j) over the same pixels; any size then works.
    """

    def __init__(self, name: str, norm: str = "frozen_bn"):
        super().__init__()
        what = f"model.encoder {TIMM + name!r}"
        if norm != "frozen_bn":
            raise UserError(GN_REFUSAL if norm == "gn" else f"unknown model.norm {norm!r}: use 'frozen_bn'")
        timm = import_timm(what)
        if not timm.is_model(name):
            close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
            raise UserError(f"{what}: timm {timm.__version__} has no model {name!r}"
                            + (f" (close: {', '.join(close)})" if close else "")
                            + f"; timm.list_models('{name.split('_')[0]}*') lists its names")
        self.name = TIMM + name
        try:
            try:  # the classifier on the meta device (no memory, no init cost): stage strides, checkpoint names
                with torch.device("meta"):
                    full = _create(timm, name)
            except Exception:  # noqa: BLE001 - a model that cannot be built on meta: build it for real
                full = _create(timm, name)
            reductions = [int(f["reduction"]) for f in full.feature_info]
            i8, i16 = _pick_strides(reductions, what)
            self.body = _create(timm, name, features_only=True, out_indices=(i8, i16))
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001 - timm's own refusal (features_only unsupported, bad arguments)
            raise UserError(f"{what}: timm cannot build it as a feature backbone "
                            f"({e.__class__.__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
        got = [int(r) for r in self.body.feature_info.reduction()]
        if got[0] != 8 or got[1] <= 8:
            raise UserError(f"{what}: timm returned feature maps of strides {got}, not 8 and coarser")
        self.out_channels: tuple[int, int] = tuple(int(c) for c in self.body.feature_info.channels())
        fmt = getattr(self.body, "output_fmt", "NCHW")
        self.nhwc = getattr(fmt, "value", fmt) == "NHWC"
        pe = getattr(self.body, "patch_embed", None) or getattr(getattr(self.body, "model", None), "patch_embed", None)
        ps = getattr(pe, "patch_size", None)
        self.pad_to: tuple[int, int] = tuple(ps) if isinstance(ps, tuple | list) and len(ps) == 2 else (1, 1)
        self.batch_norms = freeze_batch_norm(self.body)
        self._names, self._dropped = self._checkpoint_names(full)
        self._freeze_unreachable()

    def _checkpoint_names(self, full: nn.Module) -> tuple[dict[str, str], frozenset[str]]:
        """(own key → key in a `timm.create_model(name)` checkpoint, the classifier's keys and buffers
        this backbone does not load). features_only nets flatten top-level Sequentials (`stages.0` →
        `stages_0`) or wrap the model (`model.`): each own key maps to the classifier key it can be."""
        theirs = set(full.state_dict())
        names = {}
        for key in self.state_dict():
            inner = key.removeprefix("body.")
            first, _, rest = inner.partition(".")
            flat = f"{first.replace('_', '.', 1)}.{rest}" if rest else inner
            names[key] = next((c for c in (inner, flat, inner.removeprefix("model.")) if c in theirs), inner)
        return names, frozenset((theirs | _all_buffers(full)) - set(names.values()))

    def _freeze_unreachable(self) -> None:
        """Parameters computed but unused by the two outputs (some feature nets run all stages) get
        no gradient; frozen, DDP does not wait for them. A dry run on a small input finds them."""
        from timm.models import FeatureDictNet  # FeatureListNet and FeatureDictNet stop at the last output

        if isinstance(self.body, FeatureDictNet):
            return
        was = self.body.training
        try:
            self.body.eval()
            x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
            with torch.enable_grad():
                sum(f.float().mean() for f in self(x)).backward()
            for p in self.body.parameters():
                if p.grad is None:
                    p.requires_grad_(False)
        except Exception:  # noqa: BLE001 - a backbone that cannot run this probe keeps every parameter trainable
            pass
        finally:
            self.body.zero_grad(set_to_none=True)
            self.body.train(was)

    def weight_names(self) -> dict[str, str]:
        """Own state_dict key → the key a checkpoint of the timm classifier holds it under."""
        return {k: self._names.get(k, k.removeprefix("body.")) for k in self.state_dict()}

    def dropped_by_design(self, key: str) -> bool:
        """A classifier-checkpoint key of a module this backbone does not build (head, final norm,
        stages after stride 16) or of a buffer the model computes (`relative_position_index`)."""
        return key in self._dropped

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ph, pw = self.pad_to
        h, w = x.shape[-2:]
        if h % ph or w % pw:
            x = F.pad(x, (0, math.ceil(w / pw) * pw - w, 0, math.ceil(h / ph) * ph - h))
        c8, c16 = self.body(x)
        if self.nhwc:
            c8, c16 = c8.permute(0, 3, 1, 2), c16.permute(0, 3, 1, 2)
        return c8, c16


def _all_buffers(module: nn.Module) -> set[str]:
    """Every buffer name, persistent or not, registered as None or not (`attn_mask`)."""
    return {f"{name}.{b}" if name else b for name, m in module.named_modules() for b in m._buffers}
