"""One optimiser step: the forward pass in the run's precision, the loss, backward over the
accumulated micro-batches, clipping and AdamW. Nothing here reads a number back to the host: the
values it returns stay on the device until the trainer logs them."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

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


def compute_loss(model, batch: dict, cfg: Config, cw: torch.Tensor | None, device: torch.device,
                 scoring: Scoring | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:
    """Forward, then the weighted sum of the active loss terms (losses.TERMS). The network runs under
    autocast; the renderer and the losses take its outputs in fp32."""
    batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    dtype = autocast_dtype(cfg, device)
    with contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype):
        out = model(batch["images"], batch["intrinsics"], batch["cam2ego"])
    out = OccupancyOutput(*(t.float() for t in out))
    return L.total_loss(out, batch, cfg, None if cw is None else cw.to(device), scoring)


def train_step(model, opt, sched, scaler, batches: list[dict], cfg: Config, cw, device: torch.device,
               scoring: Scoring | None = None) -> StepResult:
    """One optimiser step over `batches` (the micro-batches accumulated into it): each one's loss
    ÷ their count, backward (scaled under fp16; gradients synchronised across DDP ranks only on the
    last), clip, AdamW, LR schedule."""
    opt.zero_grad(set_to_none=True)
    n = len(batches)
    loss_sum, parts_sum, rays = None, {}, 0
    for k, batch in enumerate(batches):
        sync = k == n - 1 or not hasattr(model, "no_sync")
        with contextlib.nullcontext() if sync else model.no_sync():
            loss, parts, n_rays = compute_loss(model, batch, cfg, cw, device, scoring)
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
