"""argparse ``type=`` converters shared by every layer's subcommands.

A bad value becomes argparse's usual one-line usage error (exit 2), naming the flag.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def whole_number(minimum: int, unit: str = "") -> Callable[[str], int]:
    """A converter accepting integers >= ``minimum`` (``unit`` names them in errors)."""
    what = f"a whole number{' of ' + unit if unit else ''}"

    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return convert


def seconds(*, allow_zero: bool) -> Callable[[str], float]:
    """A converter for a time limit in seconds (``inf`` allowed; ``nan`` and negatives not)."""

    def convert(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
        if math.isnan(value) or value < 0 or (value == 0 and not allow_zero):
            raise argparse.ArgumentTypeError(f"must be {'>=' if allow_zero else '>'} 0 seconds, got {text}")
        return value

    return convert
