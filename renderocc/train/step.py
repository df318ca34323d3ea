"""One optimiser step: the forward pass in the run's precision, the loss, backward over the
accumulated micro-batches, clipping and AdamW. Nothing here reads a number back to the host: the
values it returns stay on the device until the trainer logs them."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from renderocc.config import Config
from renderocc.geometry import Scoring
from renderocc.model import OccupancyOutput
from renderocc.train import losses as L
from renderocc.train.precision import autocast_dtype


@dataclass
class StepResult:
    """A step's loss, weighted loss terms and gradient norm (device tensors) and rays rendered."""

    loss: torch.Tensor
    parts: dict[str, torch.Tensor]
    rays: int
    grad_norm: torch.Tensor


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def forward(model, batch: dict, cfg: Config, device: torch.device, depth_hint: torch.Tensor | None = None
            ) -> OccupancyOutput:
    """The network on a batch already on `device`, under the run's autocast; outputs in fp32 (the
    renderer and the losses take fp32)."""
    dtype = autocast_dtype(cfg, device)
    with contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype):
        args = (batch["images"], batch["intrinsics"], batch["cam2ego"])
        out = model(*args) if depth_hint is None else model(*args, depth_hint)
    return OccupancyOutput(*(t.float() for t in out))


def compute_loss(model, batch: dict, cfg: Config, cw: torch.Tensor | None, device: torch.device,
                 scoring: Scoring | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:
    """Forward, then the weighted sum of the active loss terms (losses.TERMS)."""
    batch = to_device(batch, device)
    out = forward(model, batch, cfg, device)
    return L.total_loss(out, batch, cfg, None if cw is None else cw.to(device), scoring)


LossFn = Callable[[torch.nn.Module, Any], tuple[torch.Tensor, dict[str, torch.Tensor], int]]


def train_step(model, opt, sched, scaler, batches: list, cfg: Config, cw, device: torch.device,
               scoring: Scoring | None = None, loss_fn: LossFn | None = None) -> StepResult:
    """One optimiser step over `batches` (the micro-batches accumulated into it): each one's loss
    ÷ their count, backward (scaled under fp16; gradients synchronised across DDP ranks only on the
    last), clip, AdamW, LR schedule. `loss_fn(model, micro_batch)` → (loss, parts, rays); default:
    `compute_loss` on a labelled batch."""
    if loss_fn is None:
        def loss_fn(m, b):
            return compute_loss(m, b, cfg, cw, device, scoring)
    opt.zero_grad(set_to_none=True)
    n = len(batches)
    loss_sum, parts_sum, rays = None, {}, 0
    for k, batch in enumerate(batches):
        sync = k == n - 1 or not hasattr(model, "no_sync")
        with contextlib.nullcontext() if sync else model.no_sync():
            loss, parts, n_rays = loss_fn(model, batch)
            scaler.scale(loss / n).backward()
        loss_sum = loss.detach() if loss_sum is None else loss_sum + loss.detach()
        for name, v in parts.items():
            parts_sum[name] = v if name not in parts_sum else parts_sum[name] + v
        rays += n_rays
    scaler.unscale_(opt)
    params = model.module.parameters() if hasattr(model, "module") else model.parameters()
    gnorm = torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip)
    scaler.step(opt)
    scaler.update()
    sched.step()
    return StepResult(loss_sum / n, {k: v / n for k, v in parts_sum.items()}, rays, gnorm.detach())
