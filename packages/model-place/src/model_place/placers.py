"""The built-in placer providers and :func:`place`, which runs one by name.

A placer is any object with ``name``, ``help`` and
``place(lifetimes, *, capacity=None, time_limit=None) -> PlacementResult``,
returned by the ``model_opt_placers`` hook; third-party packages add theirs the
same way. Every answer is validated before :func:`place` returns it.
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

from model_ir import Lifetime
from model_ir.arguments import check_optional_callable, check_seconds, check_type
from model_ir.errors import PluginError
from model_ir.plugins import invalid_answer, plugin_manager, providers

from model_place.caching_allocator import simulate_caching_allocator
from model_place.errors import PlaceError, PlacementError
from model_place.exact import SEARCH_UNAVAILABLE, exact_placement, search_available
from model_place.heuristics import best_fit, best_heuristic, greedy_by_size, no_reuse
from model_place.lifetimes import check_lifetimes, live_bytes_peak
from model_place.result import STATUSES, PlacementResult, make_result, status_for
from model_place.skyline import SkylinePlacer
from model_place.validation import validate_placement

#: What ``method="auto"`` runs.
AUTO = "exact"

#: What ``method="auto"`` runs when model-place was built without its compiled search.
AUTO_WITHOUT_SEARCH = "best-heuristic"

#: Alignment (bytes) of every block the CUDA caching allocator hands out.
MIN_ALIGNMENT = 512


class HeuristicPlacer:
    """A placer from a function ``lifetimes -> offsets`` (ignores the time limit)."""

    def __init__(self, name: str, help: str, fn: Callable[[Sequence[Lifetime]], Mapping[str, int]]):
        self.name, self.help, self.fn = name, help, fn

    def place(self, lifetimes, *, capacity=None, time_limit=None) -> PlacementResult:
        t0 = time.perf_counter()
        offsets = self.fn(lifetimes)
        return make_result(lifetimes, offsets, method=self.name, seconds=time.perf_counter() - t0,
                           capacity=capacity)


class CachingAllocatorPlacer:
    """PyTorch's CUDA caching allocator, replayed in time order; the arena is the
    memory it reserves."""

    name = "caching-allocator"
    help = "PyTorch CUDA caching allocator simulation (arena = reserved bytes)"

    def place(self, lifetimes, *, capacity=None, time_limit=None) -> PlacementResult:
        t0 = time.perf_counter()
        bad = [lt.id for lt in lifetimes if MIN_ALIGNMENT % lt.alignment]
        if bad:
            raise PlaceError(f"caching-allocator: buffer {bad[0]!r} needs an alignment the CUDA caching "
                             f"allocator does not guarantee (it aligns to {MIN_ALIGNMENT} bytes)")
        sim = simulate_caching_allocator(lifetimes)
        return make_result(lifetimes, sim.offsets, method=self.name, seconds=time.perf_counter() - t0,
                           capacity=capacity, arena_bytes=sim.reserved_bytes,
                           details={"allocated_peak_bytes": sim.allocated_peak_bytes,
                                    "requested_peak_bytes": sim.requested_peak_bytes,
                                    "segments": len(sim.segments)})


class ExactPlacer:
    name = "exact"
    help = ("exact search over canonical placements (MiniMalloc-style, compiled); minimises the arena "
            "or decides a capacity, best answer and gap at the time limit")

    def place(self, lifetimes, *, capacity=None, time_limit=None, progress=None) -> PlacementResult:
        return exact_placement(lifetimes, capacity=capacity, time_limit=time_limit, method=self.name,
                               progress=progress)


class CpSatPlacer:
    name = "cpsat"
    help = "OR-Tools CP-SAT no-overlap-2D (extra model-place[cpsat]); minimises or decides a capacity"

    def place(self, lifetimes, *, capacity=None, time_limit=None) -> PlacementResult:
        from model_place.cpsat import cpsat_placement

        return cpsat_placement(lifetimes, capacity=capacity, time_limit=time_limit)


def fallback_placer() -> HeuristicPlacer:
    """``auto`` without the compiled search: the better of greedy-size and best-fit,
    after a one-line warning on stderr (once per process)."""
    plugin_manager().report(f"model-place's compiled search {SEARCH_UNAVAILABLE}: placer 'auto' uses the best "
                            "heuristic (greedy-size or best-fit) instead of the exact search; reinstall "
                            "model-place where gcc or clang and the Python headers are present for it")
    return HeuristicPlacer(AUTO_WITHOUT_SEARCH, "the better of greedy-size and best-fit", best_heuristic)


def builtin_placers() -> list:
    """The placers model-place registers through its own plugin."""
    return [
        HeuristicPlacer("none", "no reuse: every buffer at its own address", no_reuse),
        HeuristicPlacer("greedy-size", "TFLite's greedy by size: decreasing size, smallest fitting gap",
                        greedy_by_size),
        HeuristicPlacer("best-fit", "XLA heap simulator: best fit, decreasing size or lifetime (smaller wins)",
                        best_fit),
        CachingAllocatorPlacer(),
        ExactPlacer(),
        SkylinePlacer(),
        CpSatPlacer(),
    ]


def placer_names() -> list[str]:
    """Names of every registered placer, plus ``auto``."""
    return sorted([*providers("model_opt_placers", reserved=("auto",)), "auto"])


def place(lifetimes: Iterable[Lifetime], *, method: str = "auto", capacity: int | None = None,
          time_limit: float | None = None, progress: Callable | None = None) -> PlacementResult:
    """Choose a byte offset for every buffer so that buffers alive together never overlap.

    ``method`` names a placer (``auto`` is the exact search warm-started by the
    heuristics; where model-place was built without its compiled search, ``auto`` is
    the best heuristic, after a one-line warning on stderr, and ``exact`` raises
    :class:`~model_place.errors.SearchUnavailableError`). ``capacity`` (bytes) turns
    minimisation into a decision: any placement within it is accepted, and ``status``
    says ``infeasible`` when it is proven too small. ``time_limit`` in seconds (exact
    methods; 60 s when None).
    ``progress`` receives a :class:`~model_place.exact.SearchProgress` after each
    decision of a placer that reports progress (``exact``; others ignore it).
    The answer is validated: :class:`~model_place.errors.PlacementError` otherwise. A
    third-party placer's status, capacity and method are model-place's own, recomputed
    from its offsets, arena and lower bound (:func:`checked_plugin_result`); an invalid
    answer of a plugin raises :class:`~model_ir.errors.PluginFailedError` naming it.
    """
    lifetimes = check_lifetimes(lifetimes)
    check_type(method, str, "method", "a placer name")
    time_limit = check_seconds(time_limit)
    check_optional_callable(progress, "progress")
    if capacity is not None:
        check_type(capacity, int, "capacity", "a whole number of bytes or None")
        if capacity < 0:
            raise PlaceError(f"capacity must be a non-negative number of bytes, got {capacity!r}")
    if time_limit is not None and not time_limit >= 0:
        raise PlaceError(f"time limit must be >= 0 seconds, got {time_limit!r}")
    found = providers("model_opt_placers", reserved=("auto",))
    name = AUTO if method == "auto" else method
    if name not in found:
        raise PluginError(f"unknown placer {method!r}; available: {', '.join(placer_names())}")
    if method == "auto" and not search_available():
        name, placer = AUTO_WITHOUT_SEARCH, fallback_placer()
    else:
        placer = found[name]
    kwargs = {}
    if progress is not None and "progress" in inspect.signature(placer.place).parameters:
        kwargs["progress"] = progress
    try:
        result = placer.place(lifetimes, capacity=capacity, time_limit=time_limit, **kwargs)
        if not isinstance(result, PlacementResult):
            raise PlacementError(f"it returned a {type(result).__name__}, not a PlacementResult")
        if getattr(placer, "plugin_origin", None) is not None:
            result = checked_plugin_result(lifetimes, result, name, capacity)
        elif type(placer).__module__ != __name__:
            # The built-in placers answer through make_result, which validates (2 s per 100k).
            validate_placement(lifetimes, result.offsets, result.arena_bytes)
    except PlacementError as e:
        raise invalid_answer(placer, f"placer {name!r}", e) from None
    return result


def checked_plugin_result(lifetimes: Sequence[Lifetime], result: PlacementResult, name: str,
                          capacity: int | None) -> PlacementResult:
    """A third-party placer's ``result`` rebuilt from what can be checked: its offsets,
    arena, lower bound and time are validated; its status, capacity and method are
    model-place's own (those of :func:`~model_place.result.make_result`), from the
    ``capacity`` asked. Raises :class:`PlacementError` for an invalid answer.

    A lower bound below the peak of live bytes is raised to it (that much is proven for
    any placement); one above the plugin's own arena, a status model-place does not know,
    or ``infeasible`` for a placement that fits the capacity asked are invalid answers.
    """
    offsets, arena = result.offsets, result.arena_bytes
    if not isinstance(offsets, Mapping):
        raise PlacementError(f"offsets must be a mapping of buffer ids to bytes, got a {type(offsets).__name__}")
    validate_placement(lifetimes, offsets, arena)
    bound = result.lower_bound_bytes
    if isinstance(bound, bool) or not isinstance(bound, int):
        raise PlacementError(f"lower bound must be a whole number of bytes, got {bound!r}")
    if bound > arena:
        raise PlacementError(f"lower bound {bound} bytes exceeds its own arena of {arena} bytes")
    if result.status not in STATUSES:
        raise PlacementError(f"status {result.status!r} is none of {', '.join(STATUSES)}")
    fits = capacity is None or arena <= capacity
    if result.status == "infeasible" and fits:
        within = "no capacity was asked" if capacity is None else f"it fits the capacity of {capacity} bytes"
        raise PlacementError(f"status 'infeasible' for a placement of {arena} bytes, but {within}")
    seconds = result.seconds
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 <= seconds < math.inf:
        raise PlacementError(f"seconds must be a non-negative number, got {seconds!r}")
    details = result.details
    if not isinstance(details, Mapping):
        raise PlacementError(f"details must be a mapping, got a {type(details).__name__}")
    # A valid placement's arena holds every set of buffers alive together: bound <= arena still.
    bound = max(bound, live_bytes_peak(lifetimes))
    return PlacementResult(dict(offsets), arena, bound, status_for(arena, bound, capacity), float(seconds),
                           name, capacity, dict(details))
