"""Checking a placement: every buffer inside the arena, aligned, and no two buffers
alive at the same time overlapping in memory."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from model_ir import Lifetime

from model_place.errors import PlacementError


def validate_placement(lifetimes: Sequence[Lifetime], offsets: Mapping[str, int], arena_bytes: int) -> None:
    """Raise :class:`PlacementError` naming the first problem, or return None.

    ``offsets`` maps each buffer id to its byte offset; ``arena_bytes`` is the
    arena size claimed for the placement.
    """
    if isinstance(arena_bytes, bool) or not isinstance(arena_bytes, int) or arena_bytes < 0:
        raise PlacementError(f"arena size must be a non-negative integer, got {arena_bytes!r}")
    ids = {lt.id for lt in lifetimes}
    extra = sorted(set(offsets) - ids)
    if extra:
        raise PlacementError(f"placement names unknown buffer {extra[0]!r}")
    for lt in lifetimes:
        if lt.id not in offsets:
            raise PlacementError(f"buffer {lt.id!r} has no offset")
        off = offsets[lt.id]
        if isinstance(off, bool) or not isinstance(off, int) or off < 0:
            raise PlacementError(f"buffer {lt.id!r}: offset must be a non-negative integer, got {off!r}")
        if off % lt.alignment:
            raise PlacementError(f"buffer {lt.id!r}: offset {off} is not a multiple of its alignment {lt.alignment}")
        if off + lt.size > arena_bytes:
            raise PlacementError(
                f"buffer {lt.id!r}: [{off}, {off + lt.size}) does not fit the arena of {arena_bytes} bytes")
    # Sweep over time; a buffer is checked against the buffers alive when it starts.
    order = sorted((lt for lt in lifetimes if lt.size), key=lambda lt: (lt.start, lt.end))
    active: list[Lifetime] = []
    for lt in order:
        active = [a for a in active if a.end > lt.start]
        lo, hi = offsets[lt.id], offsets[lt.id] + lt.size
        for a in active:
            alo = offsets[a.id]
            if lo < alo + a.size and alo < hi:
                raise PlacementError(
                    f"buffers {a.id!r} and {lt.id!r} are alive together (steps "
                    f"[{max(a.start, lt.start)}, {min(a.end, lt.end)})) and overlap in memory: "
                    f"[{alo}, {alo + a.size}) and [{lo}, {hi})")
        active.append(lt)


def arena_of(lifetimes: Sequence[Lifetime], offsets: Mapping[str, int]) -> int:
    """The smallest arena holding ``offsets``: max of offset + size (bytes)."""
    return max((offsets[lt.id] + lt.size for lt in lifetimes), default=0)
