"""Hook specifications added by model-place."""

from __future__ import annotations

from typing import Any

from model_ir.hookspecs import hookspec


@hookspec
def model_opt_placers() -> list[Any]:
    """Placers: providers with ``name``, ``help`` and
    ``place(lifetimes, *, capacity=None, time_limit=None) -> PlacementResult``."""
