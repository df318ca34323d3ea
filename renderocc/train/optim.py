"""The optimiser side of a run: AdamW, the LR schedule, the loss scaler and the EMA of the weights."""

from __future__ import annotations

import copy
import math

import torch

from renderocc.config import Config
from renderocc.train.precision import uses_scaler

EMA_WARMUP_STEPS = 10  # the EMA decay ramps as (1 + step) / (EMA_WARMUP_STEPS + step): early weights fade fast


def lr_factor(step: int, warmup: int, total: int, schedule: str = "cosine") -> float:
    """Linear warmup to 1, then cosine decay to 0.01 at `total` (or 1 throughout: `constant`)."""
    if step < warmup:
        return (step + 1) / max(1, warmup)
    if schedule == "constant":
        return 1.0
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * p))


def make_optim(model: torch.nn.Module, cfg: Config, device: torch.device):
    """AdamW (fused into one kernel per step on the GPU), warmup + cosine LambdaLR, and a GradScaler
    (active exactly when fp16 autocast is)."""
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay,
                            fused=True if device.type == "cuda" else None)
    total, warmup, schedule = cfg.train.max_steps, cfg.optim.warmup_steps, cfg.optim.schedule
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, warmup, total, schedule))
    scaler = torch.amp.GradScaler("cuda", enabled=uses_scaler(cfg, device))
    return opt, sched, scaler


def ema_decay_at(step: int, decay: float) -> float:
    """The EMA decay at `step`: the configured one, ramped up over the first steps so the average
    does not hold on to the random initial weights."""
    return min(decay, (1 + step) / (EMA_WARMUP_STEPS + step))


class Ema:
    """An exponential moving average of `model`'s weights (buffers copied): what is validated,
    evaluated and saved. One foreach kernel per tensor list, not one per tensor; the tensor lists
    are gathered once, not every step."""

    def __init__(self, model: torch.nn.Module):
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self._pairs = {kind: (pick(self.module), pick(model)) for kind, pick in (
            ("params", lambda m: list(m.parameters())),
            ("floats", lambda m: [b for b in m.buffers() if b.is_floating_point()]),
            ("others", lambda m: [b for b in m.buffers() if not b.is_floating_point()]))}

    @torch.no_grad()
    def update(self, decay: float) -> None:
        """Move the average towards the model's current weights by 1 − `decay`."""
        mine, theirs = self._pairs["params"]
        torch._foreach_lerp_(mine, theirs, 1 - decay)
        for kind in ("floats", "others"):
            mine, theirs = self._pairs[kind]
            if mine:
                torch._foreach_copy_(mine, theirs)
