"""Options the commands share, declared once: finite floats (NaN passes every range check and inf is
never a meaningful threshold, so both are refused in one line), `--quiet`, `--device`."""

from __future__ import annotations

import math

import click
import torch

from renderocc.errors import UserError


class FiniteFloat(click.FloatRange):
    """`click.FloatRange` that also refuses NaN and ±inf."""

    name = "finite float"

    def convert(self, value, param, ctx):  # noqa: ANN001 - click's signature
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


def quiet_option(command):
    """`--quiet` (also spelt `--no-progress`): no progress bar. One flag for every command."""
    return click.option("--quiet", "--no-progress", "quiet", is_flag=True, help="No progress bar.")(command)


def device_option(command):
    """`--device auto|cpu|cuda|cuda:N` on every command that runs a model."""
    return click.option("--device", default="auto", show_default=True,
                        help="auto (CUDA when available), cpu, cuda or cuda:N.")(command)


def resolve_device(device: str | None) -> str:
    """`auto` (or None) → cuda when available, else cpu; an unusable choice is a UserError."""
    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: no CUDA device on this machine (use cpu or auto)")
    if device != "cpu" and not device.startswith("cuda"):
        raise UserError(f"--device {device}: use auto, cpu, cuda or cuda:N")
    return device
