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
