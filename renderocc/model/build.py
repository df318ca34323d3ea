"""Building the network for training: the config's OccupancyNet plus pretrained backbone weights.

Checkpoint readers (eval, predict) build `OccupancyNet` directly: their weights come from the
checkpoint, so the refusal below (frozen BatchNorm without pretrained statistics) is training's only.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from renderocc.classes import NUM_SEMANTIC
from renderocc.config import Config
from renderocc.errors import UserError
from renderocc.model.backbones import TIMM
from renderocc.model.net import OccupancyNet
from renderocc.model.weights import WeightsReport, load_weights

FROZEN_BN_REFUSAL = ("model.norm = 'frozen_bn' freezes statistics that only pretrained weights have; "
                     "pass --pretrained FILE or use model.norm = 'gn'")


def build_model(cfg: Config, num_classes: int = NUM_SEMANTIC, pretrained: str | Path | None = None, *,
                prefix: str | None = None, partial: bool = False, say: Callable[[str], None] = print,
                skip_norm_check: bool = False) -> OccupancyNet:
    """The network for `cfg` (grid resolved) with `num_classes` semantic classes, its image backbone
    loaded from the local file `pretrained` (strictly unless `partial`; `prefix` selects the
    backbone's keys, e.g. `img_backbone.`). Frozen BatchNorm without pretrained weights is refused:
    it would train with no normalisation at all (identity statistics). `skip_norm_check` where the
    weights come from elsewhere (resume, init-from) or the run only times steps (benchmarks). The
    load's `WeightsReport` is kept as `model.pretrained_report`."""
    refuse = not pretrained and not skip_norm_check
    if refuse and cfg.model.norm == "frozen_bn" and not cfg.model.encoder.startswith(TIMM):
        raise UserError(FROZEN_BN_REFUSAL)
    model = OccupancyNet(cfg.model, cfg.grid.spec, num_classes)
    if not pretrained:
        if refuse and getattr(model.encoder, "batch_norms", 0):
            raise UserError(f"model.encoder {cfg.model.encoder!r} has BatchNorm layers, frozen at statistics only "
                            "pretrained weights have; pass --pretrained FILE (or pick a backbone without BatchNorm, "
                            "e.g. timm:convnext_base)")
        return model
    model.pretrained_report = load_pretrained_weights(model, pretrained, prefix=prefix, partial=partial, say=say)
    return model


def load_pretrained_weights(model: OccupancyNet, path: str | Path, *, prefix: str | None = None,
                            partial: bool = False, say: Callable[[str], None] | None = print) -> WeightsReport:
    """Load the backbone weights of a local file into `model.encoder` (`weights.load_weights`)."""
    return load_weights(model.encoder, path, prefix=prefix, partial=partial, say=say)
