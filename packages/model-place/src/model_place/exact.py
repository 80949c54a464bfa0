"""Exact placement: the smallest arena (or a decision at a capacity), with proof.

The decision "do these lifetimes fit ``capacity`` bytes?" is answered by the
compiled search in ``_search.c`` (MiniMalloc's search over canonical solutions with
section inference, dominance pruning and dynamic decomposition). Minimising the
arena wraps it: the peak of live bytes is a lower bound, the best heuristic
placement an upper bound (the warm start); the search first tries the bound itself
(zero fragmentation), then bisects between the proven bound and the best arena
found, until both meet or the time limit runs out. Each decision gets a quarter
of the remaining time, so a proof that stalls does not stop the arena from
improving; once every open capacity has timed out, the bisection restarts from
the proven bound with twice the share. Capacities tried are multiples of the
greatest common divisor of the sizes and alignments, the only arenas a canonical
placement can have.

The first decision (at the bound, or at the capacity) gets only a short share; if it
times out, the instance with buffers merged (:mod:`model_place.reduction`: equal
lifetimes stacked, same-size handoffs joined) is placed the same way for a share of
the time left, then randomised dives (``_skyline.c``, :mod:`model_place.skyline`) get
a share before the bisection goes on: on instances without slack both find far
smaller arenas than the bisection.
"""

from __future__ import annotations

import importlib
import math
import threading
import time
from collections.abc import Callable, Sequence

import attrs

from model_ir import Lifetime

from model_place.errors import PlaceError, SearchUnavailableError
from model_place.heuristics import best_heuristic
from model_place.lifetimes import check_lifetimes, live_bytes_peak
from model_place.reduction import VARIANTS, merge_lifetimes
from model_place.result import PlacementResult, make_result
from model_place.validation import arena_of

try:
    _search = importlib.import_module("model_place._search")
except ImportError as e:  # built without a C compiler: the heuristics still work
    _search = None
    #: Why the compiled search cannot be used (None when it can), completing "the search ...".
    SEARCH_UNAVAILABLE = ("is not installed (model-place was built without a C compiler)"
                          if isinstance(e, ModuleNotFoundError) and e.name == "model_place._search"
                          else f"failed to load ({type(e).__name__}: {e})")
else:
    SEARCH_UNAVAILABLE = None

#: Seconds an exact search may run when the caller gives no time limit.
DEFAULT_TIME_LIMIT = 60.0

#: Stack of the search thread (bytes of address space; pages are used on demand).
SEARCH_STACK_BYTES = 512 << 20

#: Share of the remaining time one decision may use while minimising the arena.
DECISION_SHARE = 0.25

#: Share of the remaining time of the first decision (at the bound, or at the
#: capacity): short, so that the dives get their turn early when it stalls.
FIRST_DECISION_SHARE = 0.1

#: Share of the remaining time the randomised dives get once the first decision
#: timed out, on up to DIVE_MAX_BUFFERS buffers (a dive scans every unplaced buffer
#: at each move: seconds per dive from ~10^4 buffers).
DIVE_SHARE = 0.3
DIVE_MAX_BUFFERS = 10_000

#: Share of the remaining time each merged instance (model_place.reduction) gets once
#: the first decision timed out.
MERGED_SHARE = 0.25

#: Largest value of the compiled search's integers.
INT64_MAX = (1 << 63) - 1


def search_available() -> bool:
    """Whether the compiled search (``model_place._search``) is installed."""
    return _search is not None


def require_search(method: str = "exact") -> None:
    """Raise :class:`SearchUnavailableError` unless the compiled search is installed."""
    if _search is None:
        raise SearchUnavailableError(
            f"placer {method!r} needs model-place's compiled search (model_place._search), which "
            f"{SEARCH_UNAVAILABLE}: reinstall model-place where gcc or clang and the Python headers are present, "
            "or use a heuristic placer (--method best-fit)")


def grain(lifetimes: Sequence[Lifetime]) -> int:
    """Greatest common divisor of every non-zero size and every alignment above 1 (bytes)."""
    return math.gcd(*(lt.size for lt in lifetimes if lt.size),
                    *(lt.alignment for lt in lifetimes if lt.alignment > 1)) or 1


def run_search(*args, function: str = "solve"):
    """Run ``_search.solve(*args)`` (or another function of the compiled module) in a
    thread with a large stack.

    The search recurses once per placed buffer, deeper than a main thread's stack
    allows for large graphs; it releases the GIL, so this thread stays free to
    turn Ctrl-C into a cancellation (status ``interrupted``, best answer kept).
    """
    require_search()
    box: dict = {}
    # Completion is signalled by an event, not by Thread.join: a KeyboardInterrupt that
    # lands inside join() can leave the thread marked as finished while it still runs
    # (CPython gh-90882), and the result was then read before the search had returned.
    done = threading.Event()

    def target() -> None:
        try:
            box["out"] = getattr(_search, function)(*args)
        except BaseException as e:  # handed to the caller's thread below
            box["err"] = e
        finally:
            done.set()

    old = threading.stack_size()
    threading.stack_size(SEARCH_STACK_BYTES)
    try:
        worker = threading.Thread(target=target, name="model-place-search", daemon=True)
        worker.start()
    finally:
        threading.stack_size(old)
    interrupted = False
    while True:
        try:
            if interrupted:
                _search.cancel()  # again: the search may have started after the first cancel
            if done.wait(0.05):
                break
        except KeyboardInterrupt:
            interrupted = True
    if "err" in box:
        raise box["err"]
    return box["out"]


def decide(lifetimes: Sequence[Lifetime], capacity: int, time_limit: float | None,
           lower_bound: int | None = None) -> tuple[str, dict[str, int] | None, dict]:
    """Search for a placement within ``capacity`` bytes.

    Returns ``(status, offsets, stats)``: status ``found`` (offsets set),
    ``infeasible`` (proven), ``timeout`` or ``interrupted`` (Ctrl-C). Zero-byte
    buffers get offset 0 and take no part in the search. ``time_limit`` in seconds,
    None for no limit. ``lower_bound``: the peak of live bytes when the caller knows it.
    """
    sized = [lt for lt in lifetimes if lt.size > 0]
    offsets = {lt.id: 0 for lt in lifetimes if lt.size == 0}
    if not sized:
        return "found", offsets, {"nodes": 0, "backtracks": 0}
    if capacity < (live_bytes_peak(sized) if lower_bound is None else lower_bound):
        return "infeasible", None, {"nodes": 0, "backtracks": 0}
    # the compiled search adds offsets, sizes and alignments in signed 64-bit integers
    if (capacity + sum(lt.size for lt in sized) + max(lt.alignment for lt in sized) > INT64_MAX
            or any(not -INT64_MAX <= t <= INT64_MAX for lt in sized for t in (lt.start, lt.end))):
        raise PlaceError("the exact search works in 64-bit integers: the sizes, alignments and capacity "
                         "must add up to less than 2**63 bytes and every step fit in 64 bits; "
                         "use a heuristic method (best-fit) for these lifetimes")
    status, found, nodes, backtracks = run_search(
        [lt.start for lt in sized], [lt.end for lt in sized], [lt.size for lt in sized],
        [lt.alignment for lt in sized], capacity, -1.0 if time_limit is None else max(0.0, time_limit))
    stats = {"nodes": nodes, "backtracks": backtracks}
    if status != "found":
        return status, None, stats
    offsets.update((lt.id, off) for lt, off in zip(sized, found))
    return "found", offsets, stats


def skyline_dives(lifetimes: Sequence[Lifetime], *, cutoff: int, time_limit: float | None, goal: int = 0,
                  max_dives: int = 1 << 62, seed: int = 0) -> tuple[int, dict[str, int] | None, int, bool]:
    """Randomised valley-filling dives (``_skyline.c``, :mod:`model_place.skyline`)
    until an arena of at most ``goal`` bytes is found, ``time_limit`` seconds pass
    (None: no limit) or ``max_dives`` dives were made.

    Returns ``(arena, offsets, dives, interrupted)``: the smallest arena below
    ``cutoff`` bytes with its offsets, or ``cutoff`` and None when no dive got below
    it; ``interrupted`` when Ctrl-C stopped the dives. Zero-byte buffers get offset
    0. The same arguments give the same dives (the time limit may cut them short)."""
    require_search("skyline")
    sized = [lt for lt in lifetimes if lt.size > 0]
    if not sized:
        return 0, {lt.id: 0 for lt in lifetimes}, 0, False
    if cutoff + max(lt.size for lt in sized) + max(lt.alignment for lt in sized) > INT64_MAX:
        return cutoff, None, 0, False  # the dives add heights in signed 64-bit integers
    steps = sorted({t for lt in sized for t in (lt.start, lt.end)})
    index = {t: k + 1 for k, t in enumerate(steps)}
    arena, found, dives, interrupted = run_search(
        [index[lt.start] for lt in sized], [index[lt.end] for lt in sized], [lt.size for lt in sized],
        [lt.alignment for lt in sized], len(steps) - 1, cutoff, goal, seed & ((1 << 64) - 1),
        max_dives, -1.0 if time_limit is None else max(0.0, time_limit), function="skyline")
    if found is None:
        return cutoff, None, dives, interrupted
    offsets = {lt.id: 0 for lt in lifetimes if lt.size == 0}
    offsets.update((lt.id, off) for lt, off in zip(sized, found))
    return arena, offsets, dives, interrupted


@attrs.frozen
class SearchProgress:
    """Reported after each decision: the capacity tried (bytes), its outcome
    (``found``, ``infeasible``, ``timeout``, ``interrupted``), the best arena and
    the proven bound so far (bytes), and the seconds elapsed. After the randomised
    dives: the capacity they aimed at and ``found`` or ``dives`` (not reached); after
    the merged instance, ``found`` or ``merged``."""

    capacity: int
    outcome: str
    arena_bytes: int
    lower_bound_bytes: int
    seconds: float


#: Share of the time limit the heuristic warm start may use.
WARM_START_SHARE = 0.5

#: Seconds per buffer kept back from the time limit for validating the answer and
#: building the result after the search (about 2 s for 100k buffers on this machine).
FINALIZE_SECONDS_PER_BUFFER = 2e-5


def exact_placement(lifetimes: Sequence[Lifetime], *, capacity: int | None = None,
                    time_limit: float | None = None, method: str = "exact",
                    progress: Callable[[SearchProgress], None] | None = None, merge: bool = True) -> PlacementResult:
    """Place ``lifetimes`` exactly: the smallest arena, or (with ``capacity``) any
    placement within ``capacity`` bytes, or a proof that none exists.

    ``time_limit`` (seconds, :data:`DEFAULT_TIME_LIMIT` when None) bounds the whole
    call; when it runs out the best placement found so far is returned with its
    gap to the proven lower bound. ``progress`` is called after every decision.
    ``merge``: try merged instances (:mod:`model_place.reduction`) when the first
    decision times out (they are placed with ``merge=False``).
    """
    require_search(method)
    t0 = time.perf_counter()
    lifetimes = check_lifetimes(lifetimes)
    limit = DEFAULT_TIME_LIMIT if time_limit is None else time_limit
    # What comes after the search (validation, the result) counts against the limit too.
    limit -= min(0.5 * limit, FINALIZE_SECONDS_PER_BUFFER * len(lifetimes))
    lb = live_bytes_peak(lifetimes)
    # The warm start may take at most a share of the time limit (on 100k buffers the
    # heuristic passes alone take minutes); the search starts from whatever it found.
    best = best_heuristic(lifetimes, deadline=t0 + limit * WARM_START_SHARE)
    best_arena = arena_of(lifetimes, best)
    nodes = backtracks = decisions = 0
    # Every size and alignment is a multiple of g, so are all offsets of canonical
    # placements, hence their arenas: bisect over multiples of g only, and a proof
    # that no arena <= x exists rules out everything below the next multiple.
    g = grain(lifetimes)

    def above(x: int) -> int:
        return (x // g + 1) * g
    stopped = None  # why the search stopped early, if it did

    def remaining() -> float:
        return max(0.0, limit - (time.perf_counter() - t0))

    def run(cap: int, seconds: float | None = None) -> tuple[str, dict[str, int] | None]:
        nonlocal nodes, backtracks, decisions
        status, offsets, stats = decide(lifetimes, cap, remaining() if seconds is None else seconds, lb)
        nodes += stats["nodes"]
        backtracks += stats["backtracks"]
        decisions += 1
        if progress is not None:
            arena = best_arena if offsets is None else min(best_arena, arena_of(lifetimes, offsets))
            bound = above(cap) if status == "infeasible" else lb
            progress(SearchProgress(cap, status, arena, max(lb, bound), time.perf_counter() - t0))
        return status, offsets

    dives = 0

    def dive() -> None:
        """Randomised dives (model_place.skyline) below the best arena, aiming at the
        bound (or the capacity), for a share of the time left."""
        nonlocal best, best_arena, dives, stopped
        if len(lifetimes) > DIVE_MAX_BUFFERS:
            return
        goal = lb if capacity is None else capacity
        arena, offsets, dives, interrupted = skyline_dives(lifetimes, cutoff=best_arena, goal=goal,
                                                           time_limit=remaining() * DIVE_SHARE)
        if offsets is not None:
            best, best_arena = offsets, arena
        if progress is not None:
            progress(SearchProgress(goal, "found" if arena <= goal else "dives", best_arena, lb,
                                    time.perf_counter() - t0))
        if interrupted:
            stopped = "interrupted"

    merged_buffers = 0

    def merged() -> None:
        """With ``merge``: the instance with buffers merged (model_place.reduction), each
        rule set in turn, strongest restriction first, placed the same way for a share
        of the time left until one reaches the goal; a placement, expanded, is kept if
        smaller."""
        nonlocal best, best_arena, merged_buffers, stopped
        if not merge:
            return
        goal = lb if capacity is None else capacity
        tried: list[list[tuple[int, int, int]]] = []
        for stacks, handoffs in VARIANTS:
            if best_arena <= goal or stopped == "interrupted" or remaining() <= 0:
                return
            reduced = merge_lifetimes(lifetimes, stacks=stacks, handoffs=handoffs)
            shape = None if reduced is None else sorted((x.start, x.end, x.size) for x in reduced.lifetimes)
            if shape is None or shape in tried:
                continue  # nothing merged, or the same instance again
            tried.append(shape)
            merged_buffers = merged_buffers or len(reduced.lifetimes)
            sub = exact_placement(reduced.lifetimes, capacity=capacity, time_limit=remaining() * MERGED_SHARE,
                                  method=method, merge=False)
            offsets = {lt.id: 0 for lt in lifetimes if not lt.size} | reduced.expand(sub.offsets)
            arena = arena_of(lifetimes, offsets)
            if arena < best_arena:
                best, best_arena = offsets, arena
            if progress is not None:
                progress(SearchProgress(goal, "found" if best_arena <= goal else "merged", best_arena, lb,
                                        time.perf_counter() - t0))
            if sub.details.get("stopped") == "interrupted":
                stopped = "interrupted"

    if capacity is not None:
        # Decision mode: any placement within the capacity will do.
        if capacity < lb:
            lb = max(lb, capacity + 1)
        elif best_arena > capacity:
            # A short decision, the dives if it timed out, then the search again with
            # what is left (a fresh start: its node limits double anyway).
            status, offsets = run(capacity, remaining() * FIRST_DECISION_SHARE)
            if status == "timeout":
                merged()
                if best_arena > capacity and not stopped:
                    dive()
                if best_arena > capacity and not stopped:
                    status, offsets = run(capacity)
            if status == "found":
                best, best_arena = offsets, arena_of(lifetimes, offsets)
            elif status == "infeasible":
                lb = above(capacity)
            elif best_arena > capacity and not stopped:
                stopped = status
    else:
        # Bisect between the proven bound and the best arena. Each decision gets a
        # share of the remaining time: proofs near the optimum can be very long,
        # and one that stalls must not stop the search from improving the arena.
        # A decision that times out moves the search up without moving the bound.
        lo, share = lb, FIRST_DECISION_SHARE
        while remaining() > 0 and lb < best_arena:
            if lo >= best_arena:
                # Every open capacity timed out: start again from the proven bound,
                # giving each decision a larger share of the time left.
                lo, share = lb, min(1.0, 2 * share)
            target = lo if decisions == 0 else max(lo, (lo + best_arena - 1) // 2 // g * g)
            status, offsets = run(target, remaining() * share)
            first, share = decisions == 1, max(share, DECISION_SHARE)
            if status == "found":
                best, best_arena = offsets, arena_of(lifetimes, offsets)
            elif status == "infeasible":
                # no arena <= target exists, so every smaller one is ruled out too
                lo = lb = max(lb, above(target))
            elif status == "timeout":
                stopped, lo = status, above(target)
                if first:
                    # zero fragmentation did not come quickly: the merged instance's turn,
                    # then the dives'
                    merged()
                    if best_arena > lb and stopped != "interrupted":
                        dive()
                    if stopped == "interrupted":
                        break
            else:
                stopped = status
                break
    details = {"nodes": nodes, "backtracks": backtracks, "decisions": decisions}
    if dives:
        details["dives"] = dives
    if merged_buffers:
        details["merged_buffers"] = merged_buffers
    if stopped:
        details["stopped"] = stopped
    return make_result(lifetimes, best, method=method, seconds=time.perf_counter() - t0, capacity=capacity,
                       lower_bound_bytes=lb, details=details)
