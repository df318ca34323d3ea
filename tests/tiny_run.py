"""The tiny training config the trainer tests share: a few seconds per step on 2 cores."""

from __future__ import annotations

from renderocc.config import Config, load_config

TINY = ["data.input_size=[64, 32]", "data.rays=512", "data.workers=0", "model.width=8", "model.channels=16",
        "model.voxel_channels=8", "model.depth_bins=[1.0, 41.0, 21]", "grid.voxel_size=1.6",
        "render.step=0.8", "train.loader_bench_batches=0", "train.log_every=1", "train.threshold_samples=1",
        "optim.warmup_steps=2", "optim.lr=5e-3", "data.holdout='every-k:4'"]


def tiny(*more: str) -> Config:
    """The demo config with TINY and `more` overrides (unresolved: no grid shape yet)."""
    return load_config("demo", [*TINY, *more])
