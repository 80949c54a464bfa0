"""Choosing an offset among the memory already taken by buffers alive at the same time."""

from __future__ import annotations

from collections.abc import Iterable

from model_place.lifetimes import align_up


def best_fit_offset(busy: Iterable[tuple[int, int]], size: int, alignment: int = 1) -> int:
    """Offset of the smallest free gap that holds ``size`` bytes (lowest on ties).

    ``busy`` are the ``[lo, hi)`` byte ranges taken by overlapping buffers, in any
    order and possibly overlapping each other. Without a fitting gap, the buffer
    goes on top of the highest busy range (the arena grows). Both TFLite's arena
    planner and XLA's heap simulator choose offsets this way.
    """
    best_off, best_gap = -1, None
    top = 0
    for lo, hi in sorted(busy):
        off = align_up(top, alignment)
        if off + size <= lo and (best_gap is None or lo - top < best_gap):
            best_off, best_gap = off, lo - top
        top = max(top, hi)
    return best_off if best_gap is not None else align_up(top, alignment)
