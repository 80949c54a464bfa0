"""Lifetimes to place: built from a graph and an order, checked, and bounded.

A lifetime is :class:`model_ir.Lifetime`: ``[start, end)`` in steps (half-open),
``size`` bytes, optional ``alignment`` bytes.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

from model_ir import Graph, Lifetime, Schedule, WrongTypeError, simulate
from model_ir.arguments import describe

from model_place.errors import LifetimeError


def lifetimes_from_graph(graph: Graph, order: Sequence[str] | Schedule | None = None,
                         *, alignment: int = 1, eager: bool = False) -> tuple[Lifetime, ...]:
    """Lifetimes of the non-persistent buffers of ``graph`` run in ``order``.

    ``order`` is a sequence of op ids or a :class:`Schedule` (program order when
    None) and is validated by the IR simulator. Persistent buffers are not
    returned: they are alive throughout and live outside the transient arena.
    Zero-byte buffers are kept (a placer gives them offset 0). ``eager``: buffers freed
    when eager PyTorch frees them (see :func:`model_ir.simulate`).
    """
    lts = simulate(graph, order, eager=eager).lifetimes
    if alignment != 1:
        lts = tuple(Lifetime(lt.id, lt.start, lt.end, lt.size, alignment) for lt in lts)
    return tuple(lts)


#: The last tuple :func:`check_lifetimes` returned: a call chain (place, a placer, its
#: result) checks the same immutable tuple once, not once per layer (1 s per 100k).
_last_checked: list[tuple] = []


def check_lifetimes(lifetimes: Iterable[Lifetime]) -> tuple[Lifetime, ...]:
    """Return ``lifetimes`` as a tuple; raise :class:`LifetimeError` on the first bad one
    (:class:`~model_ir.WrongTypeError` when they are not lifetimes at all)."""
    if _last_checked and lifetimes is _last_checked[0]:
        return lifetimes
    if isinstance(lifetimes, (str, bytes, os.PathLike)):
        raise WrongTypeError(f"lifetimes: expected model_ir.Lifetime values, got {describe(lifetimes)}; "
                             "read a CSV file with model_place.read_lifetimes_csv(path)")
    if not isinstance(lifetimes, Iterable):
        raise WrongTypeError(f"lifetimes: expected model_ir.Lifetime values, got {describe(lifetimes)}")
    out = tuple(lifetimes)
    seen: set[str] = set()
    for i, lt in enumerate(out):
        if not isinstance(lt, Lifetime):
            raise WrongTypeError(f"lifetimes[{i}]: expected a model_ir.Lifetime, got {describe(lt)}")
        for field in ("start", "end", "size", "alignment"):
            v = getattr(lt, field, None)
            if isinstance(v, bool) or not isinstance(v, int):
                raise LifetimeError(f"buffer {lt.id!r}: {field} must be an integer, got {v!r}")
        if lt.id in seen:
            raise LifetimeError(f"duplicate buffer id {lt.id!r}")
        seen.add(lt.id)
        if lt.size < 0:
            raise LifetimeError(f"buffer {lt.id!r}: size must be >= 0 bytes, got {lt.size}")
        if lt.start >= lt.end:
            raise LifetimeError(f"buffer {lt.id!r}: lifetime [{lt.start}, {lt.end}) is empty; need start < end")
        if lt.alignment < 1:
            raise LifetimeError(f"buffer {lt.id!r}: alignment must be >= 1 byte, got {lt.alignment}")
    _last_checked[:] = [out]
    return out


def live_bytes_peak(lifetimes: Iterable[Lifetime]) -> int:
    """Max over time of the bytes alive together: a lower bound on any arena (bytes)."""
    events: list[tuple[int, int]] = []
    for lt in lifetimes:
        if lt.size:
            events.append((lt.start, lt.size))
            events.append((lt.end, -lt.size))
    # Frees sort before allocations at the same step: [start, end) is half-open.
    events.sort()
    live = peak = 0
    for _, delta in events:
        live += delta
        peak = max(peak, live)
    return peak


def align_up(value: int, alignment: int) -> int:
    """Smallest multiple of ``alignment`` that is >= ``value``."""
    return -(-value // alignment) * alignment
