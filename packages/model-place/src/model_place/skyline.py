"""Anytime placement by randomised valley-filling dives (``_skyline.c``).

A dive builds a placement bottom-up on the skyline (the top of the placed bytes at
each step), always filling the *valley* end with the fewest buffers that could
cover it without waste, as exact-cover solvers take the most constrained column
first (the C source says how). Each dive breaks ties at random; the smallest arena
of all dives is kept. It is a heuristic (no proof beyond the live-bytes bound), built
for instances on which the exact search's decisions time out: on zero-slack
instances (:mod:`model_place.hard_instances`) they close those of 170 buffers in a
fraction of a second, where the bisection ends 7-14% above the bound after 60 s, and
end at 1.14-1.22x on 1,000-2,400 buffers (the bisection: 1.23-1.25x; package docs/benchmarks.md).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from model_ir import Lifetime

from model_place.exact import DEFAULT_TIME_LIMIT, FINALIZE_SECONDS_PER_BUFFER, require_search, skyline_dives
from model_place.heuristics import best_heuristic
from model_place.lifetimes import check_lifetimes, live_bytes_peak
from model_place.result import PlacementResult, make_result
from model_place.validation import arena_of


def skyline_placement(lifetimes: Sequence[Lifetime], *, capacity: int | None = None,
                      time_limit: float | None = None, seed: int = 0) -> PlacementResult:
    """The smallest arena of the best heuristic placement (greedy-size, best-fit) and
    of the dives run until ``time_limit`` seconds (:data:`DEFAULT_TIME_LIMIT` when
    None), stopping early at the live-bytes bound, or within ``capacity`` when one is
    given."""
    require_search("skyline")
    t0 = time.perf_counter()
    lifetimes = check_lifetimes(lifetimes)
    limit = DEFAULT_TIME_LIMIT if time_limit is None else time_limit
    limit -= min(0.5 * limit, FINALIZE_SECONDS_PER_BUFFER * len(lifetimes))
    lb = live_bytes_peak(lifetimes)
    best = best_heuristic(lifetimes, deadline=t0 + 0.5 * limit)
    best_arena = arena_of(lifetimes, best)
    details = {"heuristic_arena_bytes": best_arena, "dives": 0}
    goal = lb if capacity is None else max(lb, capacity)
    if best_arena > goal:
        arena, offsets, details["dives"], interrupted = skyline_dives(
            lifetimes, cutoff=best_arena, goal=goal, time_limit=limit - (time.perf_counter() - t0), seed=seed)
        if offsets is not None:
            best, best_arena = offsets, arena
        if interrupted:
            details["stopped"] = "interrupted"
    return make_result(lifetimes, best, method="skyline", seconds=time.perf_counter() - t0, capacity=capacity,
                       lower_bound_bytes=lb, details=details)


class SkylinePlacer:
    """The ``skyline`` placer (registered by :func:`model_place.placers.builtin_placers`)."""

    name = "skyline"
    help = ("randomised valley-filling dives until the time limit (heuristic, anytime): small arenas on "
            "instances with no slack, where the exact search's decisions time out")

    def place(self, lifetimes, *, capacity=None, time_limit=None, progress=None) -> PlacementResult:
        return skyline_placement(lifetimes, capacity=capacity, time_limit=time_limit)
