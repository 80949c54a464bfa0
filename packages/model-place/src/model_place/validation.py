"""Checking a placement: every buffer inside the arena, aligned, and no two buffers
alive at the same time overlapping in memory (:mod:`model_ir.placement_check`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from model_ir import Lifetime
from model_ir.placement_check import placement_problem

from model_place.errors import PlacementError


def validate_placement(lifetimes: Sequence[Lifetime], offsets: Mapping[str, int], arena_bytes: int) -> None:
    """Raise :class:`PlacementError` naming the first problem, or return None.

    ``offsets`` maps each buffer id to its byte offset; ``arena_bytes`` is the
    arena size claimed for the placement.
    """
    problem = placement_problem(lifetimes, offsets, arena_bytes)
    if problem is not None:
        raise PlacementError(problem)


def arena_of(lifetimes: Sequence[Lifetime], offsets: Mapping[str, int]) -> int:
    """The smallest arena holding ``offsets``: max of offset + size (bytes)."""
    return max((offsets[lt.id] + lt.size for lt in lifetimes), default=0)
