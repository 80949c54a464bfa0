"""The scheduling layer's exceptions, rooted in :class:`model_ir.errors.ModelOptError`."""

from __future__ import annotations

from model_ir.errors import ModelOptError, PluginError


class SchedError(ModelOptError):
    """Root of errors raised by model-sched."""


class SolverUnavailableError(SchedError, PluginError):
    """A solver backend is not installed or not licensed for the model's size."""
