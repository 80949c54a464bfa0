"""Anytime placement: the exact search, then short decisions at random capacities.

On instances with no slack (every step as full as the optimal arena, such as
:mod:`model_place.hard_instances`) the exact search's bisection stalls far above
the bound: a decision that times out moves the bisection up, yet whether a
decision finishes quickly is close to a lottery over the capacity and the order
the buffers come in (on a 170-buffer instance: found in 0.3 s at 1.18x and 1.22x
the bound, no answer in 0.3 s at 1.20x). So once the bisection has had a share of
the time limit, this placer spends the rest on short decisions, each at a random
capacity between the proven bound and the best arena and on the buffers in a
random order (the search's preorders break ties by position), keeping every
placement found that is smaller. Decisions proven infeasible raise the bound.
Large-neighbourhood search (re-placing a window of buffers with CP-SAT around
the others, or ruin-and-recreate with best-fit) was tried first and made almost no
progress on these instances: the arena is set by large buffers that only move if
most buffers alive with them move too.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence

from model_ir import Lifetime

from model_place.exact import (DEFAULT_TIME_LIMIT, FINALIZE_SECONDS_PER_BUFFER, SearchProgress, decide,
                               exact_placement, grain, require_search)
from model_place.lifetimes import check_lifetimes
from model_place.result import PlacementResult, make_result
from model_place.validation import arena_of

#: Share of the time limit the exact search's bisection gets first.
EXACT_SHARE = 0.25

#: Seconds of one short decision: this share of the time left, at least MIN_PROBE_SECONDS.
PROBE_SHARE = 0.05
MIN_PROBE_SECONDS = 0.5


def restarts_placement(lifetimes: Sequence[Lifetime], *, capacity: int | None = None,
                       time_limit: float | None = None, seed: int = 0, method: str = "exact-restarts",
                       progress: Callable[[SearchProgress], None] | None = None) -> PlacementResult:
    """Minimise the arena (or fit ``capacity`` bytes) within ``time_limit`` seconds
    (:data:`DEFAULT_TIME_LIMIT` when None): the exact placement for
    :data:`EXACT_SHARE` of the limit, then short decisions at random capacities on
    shuffled buffers (module docstring). Never worse than that exact placement;
    ``progress`` receives a :class:`SearchProgress` after each decision."""
    require_search(method)
    t0 = time.perf_counter()
    lifetimes = check_lifetimes(lifetimes)
    limit = DEFAULT_TIME_LIMIT if time_limit is None else time_limit
    limit -= min(0.5 * limit, FINALIZE_SECONDS_PER_BUFFER * len(lifetimes))
    start = exact_placement(lifetimes, capacity=capacity, time_limit=limit * EXACT_SHARE, method=method,
                            progress=progress)
    lb, best = start.lower_bound_bytes, dict(start.offsets)
    best_arena = arena_of(lifetimes, best)
    details = {"exact_arena_bytes": best_arena, "exact": dict(start.details), "probes": 0, "improved": 0}
    g = grain(lifetimes)
    rng = random.Random(seed)
    order = list(lifetimes)

    def remaining() -> float:
        return limit - (time.perf_counter() - t0)

    # With a capacity, any placement within it ends the call; without, every smaller arena counts.
    while remaining() > 0.05 and best_arena > (lb if capacity is None else capacity) and lb <= (capacity or lb):
        if capacity is None:
            cap = rng.randrange(lb // g, (best_arena - 1) // g + 1) * g if best_arena - lb > g else lb
            cap = max(cap, lb)
        else:
            cap = capacity
        rng.shuffle(order)
        status, offsets, _ = decide(order, cap, max(MIN_PROBE_SECONDS, PROBE_SHARE * remaining()) if
                                    remaining() > MIN_PROBE_SECONDS else remaining(), lb)
        details["probes"] += 1
        if status == "found":
            best, best_arena = offsets, arena_of(lifetimes, offsets)
            details["improved"] += 1
        elif status == "infeasible":
            lb = max(lb, (cap // g + 1) * g)
            if capacity is not None:
                break
        elif status == "interrupted":
            details["stopped"] = status
            break
        if progress is not None:
            progress(SearchProgress(cap, status, best_arena, min(lb, best_arena), time.perf_counter() - t0))
    return make_result(lifetimes, best, method=method, seconds=time.perf_counter() - t0, capacity=capacity,
                       lower_bound_bytes=min(lb, best_arena) if capacity is None else lb, details=details)


class RestartsPlacer:
    """The ``exact-restarts`` placer (registered by :func:`model_place.placers.builtin_placers`)."""

    name = "exact-restarts"
    help = ("exact search for a quarter of the time limit, then short decisions at random capacities on "
            "shuffled buffers: smaller arenas at the limit on hard (zero-slack) instances")

    def place(self, lifetimes, *, capacity=None, time_limit=None, progress=None) -> PlacementResult:
        return restarts_placement(lifetimes, capacity=capacity, time_limit=time_limit, progress=progress)
