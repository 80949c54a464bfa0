"""Baseline placers: no reuse, greedy by size (TFLite), best fit (XLA heap simulator).

Each takes checked lifetimes (zero-byte buffers included) and returns offsets
(bytes). Each buffer is checked against the buffers alive with it only, so they
run in O(P log P) for P pairs of buffers alive together.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Sequence

from model_ir import Lifetime

from model_place.gaps import best_fit_offset
from model_place.lifetimes import align_up
from model_place.validation import arena_of


def no_reuse(lifetimes: Sequence[Lifetime]) -> dict[str, int]:
    """Every buffer at its own address, in input order: what a planner without
    lifetime information would do."""
    offsets, top = {}, 0
    for lt in lifetimes:
        off = align_up(top, lt.alignment)
        offsets[lt.id] = off
        top = off + lt.size
    return offsets


#: Buffers from which a warm start with a deadline computes the O(n log n) placement first.
LARGE = 20_000


class DeadlineExceeded(Exception):
    """A heuristic pass ran past the deadline it was given."""


def _check(deadline: float | None, k: int) -> None:
    if deadline is not None and k % 64 == 0 and time.perf_counter() > deadline:
        raise DeadlineExceeded


def overlapping(lifetimes: Sequence[Lifetime], deadline: float | None = None) -> list[list[int]]:
    """For each buffer (index), the buffers whose lifetimes intersect its own
    (:class:`DeadlineExceeded` past ``deadline``, a ``time.perf_counter()`` value)."""
    by_start = sorted(range(len(lifetimes)), key=lambda i: lifetimes[i].start)
    starts = [lifetimes[i].start for i in by_start]
    nbrs: list[list[int]] = [[] for _ in lifetimes]
    for k, i in enumerate(by_start):
        _check(deadline, k)
        # The buffers starting before i ends, after i in start order (no copy of the list).
        for m in range(k + 1, bisect.bisect_left(starts, lifetimes[i].end, k + 1)):
            j = by_start[m]
            nbrs[i].append(j)
            nbrs[j].append(i)
    return nbrs


def place_in_order(lifetimes: Sequence[Lifetime], order: Sequence[int], *, nbrs: list[list[int]] | None = None,
                   deadline: float | None = None) -> dict[str, int]:
    """Place buffers one by one in ``order`` (indices), each in the smallest free gap
    among the buffers already placed that are alive at the same time (``nbrs``:
    :func:`overlapping`, computed when not given)."""
    nbrs = overlapping(lifetimes, deadline) if nbrs is None else nbrs
    at: list[int | None] = [None] * len(lifetimes)
    offsets: dict[str, int] = {}
    for k, i in enumerate(order):
        _check(deadline, k)
        lt = lifetimes[i]
        if lt.size == 0:
            offsets[lt.id] = 0
            continue
        busy = [(at[j], at[j] + lifetimes[j].size) for j in nbrs[i] if at[j] is not None]
        off = best_fit_offset(busy, lt.size, lt.alignment)
        offsets[lt.id] = at[i] = off
    return offsets


def _greedy_order(lifetimes: Sequence[Lifetime]) -> list[int]:
    return sorted(range(len(lifetimes)), key=lambda i: (-lifetimes[i].size, lifetimes[i].start, i))


def greedy_by_size(lifetimes: Sequence[Lifetime]) -> dict[str, int]:
    """TFLite's arena planner ("greedy by size"): decreasing size, ties by first use,
    each buffer in the smallest gap that holds it."""
    return place_in_order(lifetimes, _greedy_order(lifetimes))


def _spatial(lt: Lifetime) -> tuple[int, int]:
    return (-lt.size, -(lt.end - lt.start))


def _temporal(lt: Lifetime) -> tuple[int, int]:
    return (-(lt.end - lt.start), -lt.size)


XLA_ORDERS: dict[str, Callable[[Lifetime], tuple[int, int]]] = {"spatial": _spatial, "temporal": _temporal}


def _xla_orders(lifetimes: Sequence[Lifetime]) -> list[list[int]]:
    return [sorted(range(len(lifetimes)), key=lambda i: (*key(lifetimes[i]), i)) for key in XLA_ORDERS.values()]


def _smallest(lifetimes: Sequence[Lifetime], placements) -> dict[str, int] | None:
    best = None
    for offsets in placements:
        if best is None or arena_of(lifetimes, offsets) < arena_of(lifetimes, best):
            best = offsets
    return best


def best_fit(lifetimes: Sequence[Lifetime]) -> dict[str, int]:
    """XLA's GlobalDecreasingSizeBestFitHeap: best-fit gaps, run once in decreasing
    size order ("spatial") and once in decreasing lifetime order ("temporal");
    the smaller heap wins, as XLA's heap simulator chooses between them."""
    nbrs = overlapping(lifetimes)
    return _smallest(lifetimes, (place_in_order(lifetimes, o, nbrs=nbrs) for o in _xla_orders(lifetimes))) or {}


def best_heuristic(lifetimes: Sequence[Lifetime], deadline: float | None = None) -> dict[str, int]:
    """The smallest of the greedy-by-size, best-fit and no-reuse placements: the warm
    start of the exact placers and of the skyline dives (no reuse wins where alignment
    padding costs more than reuse saves: a 1-byte buffer aligned to 2 beside a 3-byte
    one, which the skyline's dives did not find).

    With a ``deadline`` (``time.perf_counter()``) the passes stop there and the best
    finished one is returned; if none finished (very large inputs), PyTorch's caching
    allocator's placement, which takes O(n log n).
    """
    placements = []
    if deadline is not None and len(lifetimes) >= LARGE:
        # Many buffers: the O(n log n) answer first, so the deadline is met with one.
        placements.append(_fast_placement(lifetimes))
    try:
        nbrs = overlapping(lifetimes, deadline)
        for order in (_greedy_order(lifetimes), *_xla_orders(lifetimes)):
            placements.append(place_in_order(lifetimes, order, nbrs=nbrs, deadline=deadline))
    except DeadlineExceeded:
        if not placements:
            return _fast_placement(lifetimes)  # no reuse among its candidates
    return _smallest(lifetimes, [*placements, no_reuse(lifetimes)]) or {}


def _fast_placement(lifetimes: Sequence[Lifetime]) -> dict[str, int]:
    """A valid placement in O(n log n): the smaller of the caching allocator's (its
    blocks are 512-byte aligned) and no reuse; no reuse when a buffer needs a larger
    alignment."""
    from model_place.caching_allocator import simulate_caching_allocator

    plain = no_reuse(lifetimes)
    if any(512 % lt.alignment for lt in lifetimes):
        return plain
    # Its 512-byte blocks can cost more than no reuse at all on small buffers.
    return _smallest(lifetimes, [dict(simulate_caching_allocator(lifetimes).offsets), plain])
