"""What a placer returns: offsets, arena, proven lower bound, status and time."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs
from model_ir import Lifetime, Placement

from model_place.errors import PlacementError
from model_place.lifetimes import live_bytes_peak
from model_place.validation import arena_of, validate_placement

#: ``optimal``: the arena equals the proven lower bound (and fits any capacity).
#: ``feasible``: a placement within the capacity (or, with none, a placement) that
#: is not proven optimal. ``infeasible``: the capacity is proven too small.
#: ``over_capacity``: no placement within the capacity was found (time limit, or a
#: heuristic), but the capacity was not proven too small either.
STATUSES = ("optimal", "feasible", "infeasible", "over_capacity")


@attrs.frozen
class PlacementResult:
    """A validated placement and how good it is.

    ``offsets`` (bytes) always holds a valid placement of every buffer, the best
    found, even when it does not fit ``capacity``. ``lower_bound_bytes`` is proven:
    the peak of live bytes, raised by any infeasibility the search proved.
    ``seconds`` is wall-clock time of the placer.
    """

    offsets: Mapping[str, int] = attrs.field(hash=False)
    arena_bytes: int
    lower_bound_bytes: int
    status: str
    seconds: float
    method: str
    capacity: int | None = None
    details: Mapping[str, Any] = attrs.field(factory=dict, hash=False)

    @property
    def optimal(self) -> bool:
        """True only when the arena equals the proven lower bound and fits the capacity."""
        fits = self.capacity is None or self.arena_bytes <= self.capacity
        return fits and self.arena_bytes == self.lower_bound_bytes

    @property
    def gap(self) -> float:
        """``(arena - bound) / arena``: 0.0 when optimal; the same convention as the
        scheduler's gap (and MILP solvers'), so the two layers' gaps compare directly."""
        if self.arena_bytes == 0:
            return 0.0
        return (self.arena_bytes - self.lower_bound_bytes) / self.arena_bytes

    @property
    def fits(self) -> bool:
        """True when the placement fits ``capacity`` (always, with no capacity)."""
        return self.capacity is None or self.arena_bytes <= self.capacity

    def placement(self) -> Placement:
        """The IR :class:`model_ir.Placement` (for a :class:`model_ir.Plan`)."""
        return Placement(dict(self.offsets), self.arena_bytes)


def status_for(arena_bytes: int, lower_bound_bytes: int, capacity: int | None) -> str:
    """The status of a placement of ``arena_bytes`` given the bound and the capacity."""
    if capacity is not None and lower_bound_bytes > capacity:
        return "infeasible"
    if capacity is not None and arena_bytes > capacity:
        return "over_capacity"
    return "optimal" if arena_bytes == lower_bound_bytes else "feasible"


def make_result(lifetimes: Sequence[Lifetime], offsets: Mapping[str, int], *, method: str, seconds: float,
                capacity: int | None = None, lower_bound_bytes: int | None = None,
                arena_bytes: int | None = None, details: Mapping[str, Any] | None = None) -> PlacementResult:
    """Validate ``offsets`` and wrap them in a :class:`PlacementResult`.

    ``arena_bytes`` defaults to the top of the highest buffer; a placer that
    reserves more (the caching allocator) passes its own figure. The lower bound
    defaults to the peak of live bytes.
    """
    offsets = dict(offsets)
    arena = arena_of(lifetimes, offsets) if arena_bytes is None else arena_bytes
    validate_placement(lifetimes, offsets, arena)
    lb = live_bytes_peak(lifetimes) if lower_bound_bytes is None else lower_bound_bytes
    if arena < lb:
        # Only reachable with a wrong bound handed in: never claim better than proven.
        raise PlacementError(f"{method}: arena {arena} bytes is below the proven lower bound {lb} bytes")
    return PlacementResult(offsets, arena, lb, status_for(arena, lb, capacity), seconds, method, capacity,
                           dict(details or {}))
