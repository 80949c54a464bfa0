"""Lifetimes and placements as CSV, in MiniMalloc's format.

Input header ``id,lower,upper,size`` (any column order), optional ``alignment``;
each row a buffer alive on the half-open interval ``[lower, upper)`` with ``size``
bytes. An ``offset`` column (a placement read back) is ignored on input. Output:
the same rows and columns plus ``offset``.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from model_ir import FormatError, Lifetime
from model_ir.graph import MAX_TOTAL_BYTES
from model_ir.json_format import read_text
from model_ir.output_files import write_output

REQUIRED = ("id", "lower", "upper", "size")
OPTIONAL = ("alignment", "offset")

#: A decimal integer in ASCII digits, optionally signed.
_INTEGER = re.compile(r"[+-]?[0-9]+", re.ASCII)


def parse_lifetimes_csv(text: str, source: str = "<csv>") -> tuple[Lifetime, ...]:
    """Parse CSV ``text``; :class:`FormatError` names ``source``, the line and the problem."""
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except StopIteration:
        raise FormatError(f"{source}: empty file; expected a header line 'id,lower,upper,size'") from None
    except csv.Error as e:
        raise FormatError(f"{source}: line 1: {e}") from None
    header = [h.strip() for h in header]
    for h in header:
        if h not in REQUIRED + OPTIONAL:
            raise FormatError(f"{source}: line 1: unknown column {h!r}; expected id,lower,upper,size "
                              "and optionally alignment")
    if len(set(header)) != len(header):
        raise FormatError(f"{source}: line 1: a column appears twice")
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise FormatError(f"{source}: line 1: missing column {missing[0]!r}; expected header 'id,lower,upper,size'")
    col = {h: i for i, h in enumerate(header)}
    out: list[Lifetime] = []
    first_line: dict[str, int] = {}
    try:
        for row in reader:
            line = reader.line_num
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != len(header):
                raise FormatError(f"{source}: line {line}: expected {len(header)} fields, got {len(row)}")
            bid = row[col["id"]].strip()
            if not bid:
                raise FormatError(f"{source}: line {line}: empty id")
            if bid in first_line:
                raise FormatError(f"{source}: line {line}: duplicate id {bid!r} (first on line {first_line[bid]})")
            first_line[bid] = line
            vals = {}
            for name in ("lower", "upper", "size", "alignment"):
                if name not in col:
                    continue
                raw = row[col[name]].strip()
                # int() would also take "1_000" and non-ASCII digits ("١٢"), and choke on 4300 digits
                if not _INTEGER.fullmatch(raw) or len(raw) > 40:
                    raise FormatError(f"{source}: line {line}: {name} must be an integer, got {raw[:40]!r}")
                vals[name] = int(raw)
            if vals["size"] < 0:
                raise FormatError(f"{source}: line {line}: size must be >= 0, got {vals['size']}")
            for name in ("size", "alignment"):
                if vals.get(name, 1) > MAX_TOTAL_BYTES:
                    raise FormatError(f"{source}: line {line}: {name} must be < 2**62 bytes (4 EiB), "
                                      f"got {vals[name]}")
            if vals["lower"] >= vals["upper"]:
                raise FormatError(f"{source}: line {line}: need lower < upper (half-open [lower, upper)), "
                                  f"got lower={vals['lower']} upper={vals['upper']}")
            if vals.get("alignment", 1) < 1:
                raise FormatError(f"{source}: line {line}: alignment must be >= 1, got {vals['alignment']}")
            out.append(Lifetime(bid, vals["lower"], vals["upper"], vals["size"], vals.get("alignment", 1)))
    except csv.Error as e:
        raise FormatError(f"{source}: line {reader.line_num}: {e}") from None
    return tuple(out)


def read_lifetimes_csv(path: str | os.PathLike[str]) -> tuple[Lifetime, ...]:
    """Read a MiniMalloc CSV file (see :func:`parse_lifetimes_csv`)."""
    return parse_lifetimes_csv(read_text(path), str(Path(path)))


def format_placement_csv(lifetimes: Sequence[Lifetime], offsets: Mapping[str, int]) -> str:
    """CSV text: ``id,lower,upper,size[,alignment],offset``; alignment only when
    some buffer has one other than 1."""
    aligned = any(lt.alignment != 1 for lt in lifetimes)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([*REQUIRED, *(["alignment"] if aligned else []), "offset"])
    for lt in lifetimes:
        w.writerow([lt.id, lt.start, lt.end, lt.size, *([lt.alignment] if aligned else []), offsets[lt.id]])
    return buf.getvalue()


def write_placement_csv(path: str | os.PathLike[str], lifetimes: Sequence[Lifetime],
                        offsets: Mapping[str, int], *, overwrite: bool = True) -> None:
    """Write the placement CSV atomically (see :mod:`model_ir.output_files`); ``overwrite``
    False keeps an existing file (:class:`FormatError`)."""
    write_output(path, format_placement_csv(lifetimes, offsets), overwrite=overwrite)
