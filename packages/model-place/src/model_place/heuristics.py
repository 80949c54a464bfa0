"""Baseline placers: no reuse, greedy by size (TFLite), best fit (XLA heap simulator).

Each takes checked lifetimes (zero-byte buffers included) and returns offsets
(bytes). Each buffer is checked against the buffers alive with it only, so they
run in O(P log P) for P pairs of buffers alive together.
"""

from __future__ import annotations

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


def overlapping(lifetimes: Sequence[Lifetime]) -> list[list[int]]:
    """For each buffer (index), the buffers whose lifetimes intersect its own."""
    by_start = sorted(range(len(lifetimes)), key=lambda i: lifetimes[i].start)
    nbrs: list[list[int]] = [[] for _ in lifetimes]
    for k, i in enumerate(by_start):
        end = lifetimes[i].end
        for j in by_start[k + 1:]:
            if lifetimes[j].start >= end:
                break
            nbrs[i].append(j)
            nbrs[j].append(i)
    return nbrs


def place_in_order(lifetimes: Sequence[Lifetime], order: Sequence[int]) -> dict[str, int]:
    """Place buffers one by one in ``order`` (indices), each in the smallest free gap
    among the buffers already placed that are alive at the same time."""
    nbrs = overlapping(lifetimes)
    at: list[int | None] = [None] * len(lifetimes)
    offsets: dict[str, int] = {}
    for i in order:
        lt = lifetimes[i]
        if lt.size == 0:
            offsets[lt.id] = 0
            continue
        busy = [(at[j], at[j] + lifetimes[j].size) for j in nbrs[i] if at[j] is not None]
        off = best_fit_offset(busy, lt.size, lt.alignment)
        offsets[lt.id] = at[i] = off
    return offsets


def greedy_by_size(lifetimes: Sequence[Lifetime]) -> dict[str, int]:
    """TFLite's arena planner ("greedy by size"): decreasing size, ties by first use,
    each buffer in the smallest gap that holds it."""
    order = sorted(range(len(lifetimes)), key=lambda i: (-lifetimes[i].size, lifetimes[i].start, i))
    return place_in_order(lifetimes, order)


def _spatial(lt: Lifetime) -> tuple[int, int]:
    return (-lt.size, -(lt.end - lt.start))


def _temporal(lt: Lifetime) -> tuple[int, int]:
    return (-(lt.end - lt.start), -lt.size)


XLA_ORDERS: dict[str, Callable[[Lifetime], tuple[int, int]]] = {"spatial": _spatial, "temporal": _temporal}


def best_fit(lifetimes: Sequence[Lifetime]) -> dict[str, int]:
    """XLA's GlobalDecreasingSizeBestFitHeap: best-fit gaps, run once in decreasing
    size order ("spatial") and once in decreasing lifetime order ("temporal");
    the smaller heap wins, as XLA's heap simulator chooses between them."""
    best: dict[str, int] | None = None
    for key in XLA_ORDERS.values():
        order = sorted(range(len(lifetimes)), key=lambda i: (*key(lifetimes[i]), i))
        offsets = place_in_order(lifetimes, order)
        if best is None or arena_of(lifetimes, offsets) < arena_of(lifetimes, best):
            best = offsets
    return best if best is not None else {}


def best_heuristic(lifetimes: Sequence[Lifetime]) -> dict[str, int]:
    """The smaller of the greedy-by-size and best-fit placements: the warm start of the
    exact placers."""
    return min((greedy_by_size(lifetimes), best_fit(lifetimes)), key=lambda o: arena_of(lifetimes, o))
