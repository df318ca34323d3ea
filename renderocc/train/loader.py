"""The DataLoader of a run, and its speed alone (the loader must never be what training waits on)."""

from __future__ import annotations

import time

import torch
from torch.utils.data import DataLoader

from renderocc.config import Config
from renderocc.train.dataset import EpochSampler, RayDataset

PREFETCH_BATCHES = 4  # batches each loader worker prepares ahead


def make_loader(ds: RayDataset, sampler: EpochSampler, cfg: Config, pin: bool, batch_size: int | None = None
                ) -> DataLoader:
    """`batch_size`: default `data.batch_size` (the unlabelled frames' loader takes its own)."""
    workers = cfg.data.workers
    return DataLoader(ds, batch_size=batch_size or cfg.data.batch_size, sampler=sampler, num_workers=workers,
                      pin_memory=pin, worker_init_fn=_worker_init,
                      prefetch_factor=PREFETCH_BATCHES if workers else None, persistent_workers=False)


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # one thread per worker: workers must not take the training's cores


def loader_samples_per_s(ds: RayDataset, indices: list[int], cfg: Config, seed: int, step: int, n: int
                         ) -> float:
    """Samples/s of the DataLoader alone (first batch = worker start-up, not timed)."""
    loader = make_loader(ds, EpochSampler(indices, cfg.data.batch_size, seed, start_step=step), cfg, pin=False)
    it = iter(loader)
    next(it)
    t = time.time()
    for _ in range(n):
        next(it)
    rate = n * cfg.data.batch_size / max(time.time() - t, 1e-9)
    del it
    return rate
