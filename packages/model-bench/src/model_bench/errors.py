"""Errors of the benchmark layer, rooted in the shared :class:`ModelOptError`."""

from __future__ import annotations

from model_ir.errors import ModelOptError


class BenchError(ModelOptError):
    """A benchmark request is wrong (unknown model, mode, batch size, budget, ...)."""


class StageUnavailableError(BenchError):
    """A pipeline stage needs a layer (capture, scheduler, placer) that is not installed."""
