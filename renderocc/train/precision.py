"""The compute precision of a training step: one rule for the autocast dtype and the loss scaler.

bf16 has fp32's exponent range, so it needs no loss scaling (and no scaler's host sync); fp16
needs the GradScaler. The CPU trains in fp32: its autocast is slower than plain fp32 there.
"""

from __future__ import annotations

import torch

from renderocc.config import Config

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_dtype(cfg: Config, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of the network's forward pass, None for plain fp32."""
    if device.type != "cuda":
        return None
    return DTYPES.get(cfg.train.precision)


def uses_scaler(cfg: Config, device: torch.device) -> bool:
    """fp16 autocast and the GradScaler go together: both on exactly when this is true."""
    return autocast_dtype(cfg, device) == torch.float16


def precision_text(cfg: Config, device: torch.device) -> str:
    dtype = autocast_dtype(cfg, device)
    return "fp32" if dtype is None else cfg.train.precision + (" + loss scaler" if uses_scaler(cfg, device) else "")
