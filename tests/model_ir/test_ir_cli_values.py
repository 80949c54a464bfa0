"""The shared argparse converters."""

import argparse
import math

import pytest

from model_ir.cli_values import seconds, whole_number


def test_whole_number():
    assert whole_number(0)("0") == 0
    assert whole_number(1, "bytes")("512") == 512
    with pytest.raises(argparse.ArgumentTypeError, match="must be >= 1, got 0"):
        whole_number(1)("0")
    with pytest.raises(argparse.ArgumentTypeError, match="expected a whole number of bytes, got '1.5'"):
        whole_number(0, "bytes")("1.5")


def test_seconds():
    assert seconds(allow_zero=True)("0") == 0
    assert seconds(allow_zero=False)("2.5") == 2.5
    assert math.isinf(seconds(allow_zero=False)("inf"))
    for bad, allow_zero in [("0", False), ("-1", True), ("nan", True)]:
        with pytest.raises(argparse.ArgumentTypeError, match="seconds"):
            seconds(allow_zero=allow_zero)(bad)
    with pytest.raises(argparse.ArgumentTypeError, match="expected a number of seconds, got 'soon'"):
        seconds(allow_zero=True)("soon")
