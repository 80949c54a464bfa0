"""argparse ``type=`` converters shared by every layer's subcommands.

A bad value becomes argparse's one-line error (exit 2), naming the flag. Numbers are
read in ASCII only: Python's ``int()`` and ``float()`` would also take ``1_000`` and
digits of other scripts.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable

_WHOLE = re.compile(r"[+-]?[0-9]{1,40}", re.ASCII)
_REAL = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]{1,4})?|[+-]?(inf|infinity|nan)",
                   re.ASCII | re.IGNORECASE)
_SIZE = re.compile(r"\s*([0-9]{1,30}(?:\.[0-9]{1,30})?|\.[0-9]{1,30})\s*([a-zA-Z]*)\s*", re.ASCII)

#: Units of :func:`parse_bytes` (lower case): powers of 1000 and of 1024.
BYTE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
              "t": 1000**4, "tb": 1000**4, "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}


#: ``--autocast`` values of the CLIs -> the torch dtype's name. fp16 is left out: its
#: training recipe needs a GradScaler, which the zoo's steps do not hold.
AUTOCAST = {"bf16": "bfloat16"}


def autocast_name(value: str | None) -> str | None:
    """The torch dtype name of an autocast setting given as a CLI value (``bf16``) or as
    the name itself (``bfloat16``); None stays None. ValueError names the choices."""
    if value is None or value in AUTOCAST.values():
        return value
    if value in AUTOCAST:
        return AUTOCAST[value]
    raise ValueError(f"unknown autocast dtype {value!r}; choose {', '.join([*AUTOCAST, *AUTOCAST.values()])}")


def parse_bytes(text: str) -> int:
    """``"16GiB"`` -> bytes (a fraction of a byte is dropped). Units: B, KB/MB/GB/TB
    (powers of 1000), KiB/MiB/GiB/TiB (powers of 1024), any case.
    Raises ``ValueError`` saying what is accepted."""
    m = _SIZE.fullmatch(str(text))
    unit = m.group(2).lower() if m else None
    if m is None or unit not in BYTE_UNITS:
        raise ValueError(f"cannot read size {text!r}; write e.g. 16GiB, 500MiB, 16GB or 1073741824")
    whole, _, frac = m.group(1).partition(".")
    scale = 10 ** len(frac)
    # Exact integer arithmetic: a float would round sizes above 2**53 bytes.
    return (int(whole or "0") * scale + int(frac or "0")) * BYTE_UNITS[unit] // scale


def byte_size(minimum: int = 0) -> Callable[[str], int]:
    """A converter for a size in bytes with an optional unit (see :func:`parse_bytes`)."""

    def convert(text: str) -> int:
        try:
            value = parse_bytes(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum} bytes, got {text}")
        return value

    return convert


def whole_number(minimum: int, unit: str = "") -> Callable[[str], int]:
    """A converter accepting integers >= ``minimum`` (``unit`` names them in errors)."""
    what = f"a whole number{' of ' + unit if unit else ''}"

    def convert(text: str) -> int:
        if not _WHOLE.fullmatch(text.strip()):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text[:40]!r}")
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return convert


def seconds(*, allow_zero: bool) -> Callable[[str], float]:
    """A converter for a time limit in seconds (``inf`` allowed; ``nan`` and negatives not)."""

    def convert(text: str) -> float:
        if not _REAL.fullmatch(text.strip()):
            raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text[:40]!r}")
        value = float(text)
        if math.isnan(value) or value < 0 or (value == 0 and not allow_zero):
            raise argparse.ArgumentTypeError(f"must be {'>=' if allow_zero else '>'} 0 seconds, got {text}")
        return value

    return convert


def budget_status(budget: int | None, fits: bool, lower_bound: int) -> int:
    """The exit status of a command planning under a memory budget, as ``model-opt place``
    with a capacity: 0 without a budget or when the plan fits it, 1 when no plan fits it
    (proven: below the lower bound), 3 when none that fits was found and none is proven
    impossible (an exact search's proof covers plans running each op a few times, not all)."""
    if budget is None or fits:
        return 0
    return 1 if budget < lower_bound else 3


def comma_list(values: str | list[str] | None, flag: str, *, distinct: bool = False) -> list[str] | None:
    """``"a,b"`` or ``["a,b", "c"]`` (an option given twice) -> ``["a", "b", "c"]``, spaces
    stripped; None when not given (its default applies). Refused with a
    :class:`~model_ir.errors.UsageError` naming ``flag``: an empty value (``1,,2``: one left
    out by mistake), a list naming nothing (``,``) and, with ``distinct``, a value named twice."""
    from model_ir.errors import UsageError

    if values is None:
        return None
    items = [values] if isinstance(values, str) else list(values)
    out = [v.strip() for item in items for v in item.split(",")]
    if "" in out and any(out):
        raise UsageError(f"{flag}: an empty value in the list {','.join(items)!r}; separate values with one comma")
    out = [v for v in out if v]
    if not out:
        raise UsageError(f"{flag}: the list is empty; name at least one value (e.g. {flag} A,B)")
    twice = next((v for k, v in enumerate(out) if v in out[:k]), None)
    if distinct and twice is not None:
        raise UsageError(f"{flag}: {twice!r} is named twice")
    return out
