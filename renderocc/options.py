"""Click parameter types the commands share: a float option is finite (NaN passes every range check
and inf is never a meaningful threshold, so both are refused in one line)."""

from __future__ import annotations

import math

import click


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
