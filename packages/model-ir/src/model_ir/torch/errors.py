"""Errors of the torch capture frontend."""

from __future__ import annotations

from model_ir.errors import ModelOptError


class CaptureError(ModelOptError, RuntimeError):
    """A model, its inputs or its optimizer could not be captured as a training step.

    The message names the operator or Python construct that failed and, where known,
    the line of user code that called it.
    """


class ExecutionError(ModelOptError, RuntimeError):
    """A captured step could not be executed (wrong tensors bound, invalid order, ...)."""
