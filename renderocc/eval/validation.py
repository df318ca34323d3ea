"""Validation during training: `evaluate`'s own metrics on held-out samples, as plain scalars.

The 3D scores (mIoU, geometry IoU inside mask_camera, RayIoU) where the store has dense GT, and
the rendered 2D scores (depth AbsRel, 2D semantic mIoU) always, tracked apart as the method asks:
2D agreement with the labels is not 3D accuracy. The trainer calls the validator with its EMA
weights; it lives here, above the trainer, because it is the eval protocol.
"""

from __future__ import annotations

import torch

from renderocc.config import Config
from renderocc.eval.evaluate import evaluate, store_origins

SCALARS = ("miou", "geometry_iou", "rayiou", "depth_abs_rel", "depth_delta1", "sem2d_miou")


def held_out_validator(reader, cfg: Config):
    """A `Validator` for the trainer: (model, indices, threshold record) → scalar scores. The
    RayIoU origins (every store sample's pose) are read once, not at every validation."""
    origins = store_origins(reader) if reader.has_occ_gt else None

    def validate(model: torch.nn.Module, indices: list[int], threshold: dict | None) -> dict[str, float]:
        ckpt = {"config": cfg, "threshold": threshold["threshold"] if threshold else None}
        with torch.no_grad():
            m = evaluate(reader, model, ckpt, indices, rays_per_sample=cfg.train.val_rays, progress=False,
                         rayiou=reader.has_occ_gt, origins=origins)
        return {k: float(m[k]) for k in SCALARS if m.get(k) is not None}

    return validate
