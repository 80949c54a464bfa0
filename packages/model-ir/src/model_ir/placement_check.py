"""Whether a placement is valid: every buffer inside the arena, aligned, and no two
buffers alive at the same time overlapping in memory. Here, in the IR, so that loading a
plan checks its placement as every placer's result is checked
(:func:`model_place.validate_placement` raises on the problem this names)."""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Mapping, Sequence

from model_ir.simulator import Lifetime


def placement_problem(lifetimes: Sequence[Lifetime], offsets: Mapping[str, int], arena_bytes: int) -> str | None:
    """The first problem of placing ``lifetimes`` at ``offsets`` (buffer id to byte
    offset) in an arena of ``arena_bytes``, or None when the placement is valid."""
    if isinstance(arena_bytes, bool) or not isinstance(arena_bytes, int) or arena_bytes < 0:
        return f"arena size must be a non-negative integer, got {arena_bytes!r}"
    ids = {lt.id for lt in lifetimes}
    extra = sorted(set(offsets) - ids)
    if extra:
        return f"placement names unknown buffer {extra[0]!r}"
    for lt in lifetimes:
        if lt.id not in offsets:
            return f"buffer {lt.id!r} has no offset"
        off = offsets[lt.id]
        if isinstance(off, bool) or not isinstance(off, int) or off < 0:
            return f"buffer {lt.id!r}: offset must be a non-negative integer, got {off!r}"
        if off % lt.alignment:
            return f"buffer {lt.id!r}: offset {off} is not a multiple of its alignment {lt.alignment}"
        if off + lt.size > arena_bytes:
            return f"buffer {lt.id!r}: [{off}, {off + lt.size}) does not fit the arena of {arena_bytes} bytes"
    # Sweep over time. The buffers alive when one starts are disjoint in memory (else a
    # problem was returned), so sorted by offset only its two neighbours can overlap it:
    # O(n log n), where checking every live pair took seconds on 100k buffers.
    order = sorted((lt for lt in lifetimes if lt.size), key=lambda lt: (lt.start, lt.end))
    by_id = {lt.id: lt for lt in order}
    alive: list[tuple[int, int, str]] = []  # (offset, end offset, id), sorted
    expiry: list[tuple[int, int]] = []  # (end step, offset) of the alive buffers
    for lt in order:
        while expiry and expiry[0][0] <= lt.start:
            _, off = heapq.heappop(expiry)
            del alive[bisect.bisect_left(alive, (off,))]
        lo, hi = offsets[lt.id], offsets[lt.id] + lt.size
        k = bisect.bisect_left(alive, (lo,))
        for j in (k - 1, k):
            if 0 <= j < len(alive) and lo < alive[j][1] and alive[j][0] < hi:
                a = by_id[alive[j][2]]
                return (f"buffers {a.id!r} and {lt.id!r} are alive together (steps "
                        f"[{max(a.start, lt.start)}, {min(a.end, lt.end)})) and overlap in memory: "
                        f"[{alive[j][0]}, {alive[j][1]}) and [{lo}, {hi})")
        alive.insert(k, (lo, hi, lt.id))
        heapq.heappush(expiry, (lt.end, lo))
    return None
