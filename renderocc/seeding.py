"""One seed mixer: a run's seed and a counter (epoch, sample index) → an independent integer seed."""

from __future__ import annotations

SEED_STRIDE = 1_000_003  # a prime larger than any counter a run reaches: (seed, k) pairs never collide


def mix_seed(seed: int, k: int) -> int:
    """The seed of item `k` of a run seeded `seed` (same pair, same seed: reproducible and resumable)."""
    return int(seed) * SEED_STRIDE + int(k)
