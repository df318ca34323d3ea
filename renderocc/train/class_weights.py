"""Class weights of the semantic losses, from the labels the run actually uses."""

from __future__ import annotations

import numpy as np
import torch

from renderocc.config import Config, semantic_source
from renderocc.errors import UserError
from renderocc.train import losses as L


def class_weights(reader, cfg: Config, indices: list[int]) -> torch.Tensor | None:
    """`auto`: from the class frequencies of ≤ 32 evenly spaced training samples, in the semantic
    labels the run uses: key lidarseg labels, mask pixels, or both mixed at `data.mask_ray_share`.
    None without any semantic source."""
    spec = cfg.loss.class_weights
    n_cls = reader.vocabulary.num_semantic
    source = semantic_source(cfg, reader.has_semantics)
    if spec == "none" or source in ("none", None):
        return None
    if isinstance(spec, list):
        if len(spec) != n_cls:
            raise UserError(f"loss.class_weights: expected {n_cls} numbers (the store's classes), got {len(spec)}")
        return torch.tensor(spec, dtype=torch.float32)
    picked = indices[:: max(1, len(indices) // 32)][:32]
    counts = np.zeros(n_cls, np.int64)
    if source in ("lidarseg", "both"):
        for i in picked:
            lab = reader.labels(i)["label"]
            counts += np.bincount(lab[lab < n_cls], minlength=n_cls)
    if source == "lidarseg":
        return L.class_weights_from_counts(torch.from_numpy(counts))
    pixels = np.zeros(n_cls, np.int64)
    for i in picked:
        m = reader.semantic_mask(i)
        pixels += np.bincount(m[m < n_cls], minlength=n_cls)
    share = cfg.data.mask_ray_share if source == "both" else 1.0
    freq = (1 - share) * counts / max(counts.sum(), 1) + share * pixels / max(pixels.sum(), 1)
    return L.class_weights_from_counts(torch.from_numpy(freq).float())
