"""Hook specifications added by model-place, and the ``Protocol`` of a placer
(``docs/plugins.md``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from model_ir.hookspecs import hookspec

if TYPE_CHECKING:
    from model_ir import Lifetime
    from model_place.result import PlacementResult


class Placer(Protocol):
    """A placement algorithm. ``place`` receives the checked lifetimes (``id``,
    ``start``, ``end``, ``size`` and ``alignment``, bytes) and returns a
    :class:`~model_place.result.PlacementResult` (build it with
    :func:`model_place.result.make_result` from a dict of byte offsets); within
    ``capacity`` bytes when one is given, else as small an arena as it can, in about
    ``time_limit`` seconds. :func:`model_place.place` validates the answer. An optional
    ``progress`` keyword receives progress reports."""

    name: str
    help: str

    def place(self, lifetimes: Sequence[Lifetime], *, capacity: int | None = None,
              time_limit: float | None = None) -> PlacementResult: ...


@hookspec
def model_opt_placers() -> list[Placer]:
    """Placers: providers with ``name``, ``help`` and
    ``place(lifetimes, *, capacity=None, time_limit=None) -> PlacementResult``."""
