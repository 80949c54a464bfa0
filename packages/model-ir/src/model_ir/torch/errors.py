"""Errors of the torch capture frontend."""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings

from model_ir.errors import ModelOptError


class CaptureError(ModelOptError, RuntimeError):
    """A model, its inputs or its optimizer could not be captured as a training step.

    The message names the operator or Python construct that failed and, where known,
    the line of user code that called it.
    """


class LiftedHyperParametersError(CaptureError):
    """The optimizer's update could not be traced with its hyper-parameters as inputs of
    the step (:mod:`model_ir.torch.hyper_parameters`), e.g. it branches on one in a way
    its sign does not decide; :func:`~model_ir.torch.capture_step` then captures it again
    with them as constants. Raised only for a failure inside the update."""


class ExecutionError(ModelOptError, RuntimeError):
    """A captured step could not be executed (wrong tensors bound, invalid order, ...)."""


def out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` says an allocation failed: ``torch.OutOfMemoryError`` (CUDA), the
    CPU allocator's ``RuntimeError`` ("can't allocate memory") or a ``MemoryError``."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text.lower())


def size_overflow(exc: BaseException) -> bool:
    """Whether ``exc`` says a tensor's size does not fit a 64-bit integer (a size
    beyond it, ``numel`` or the storage's bytes overflowing)."""
    return isinstance(exc, (OverflowError, TypeError, RuntimeError)) and "overflow" in str(exc).lower()


#: Modules whose frames a warning is not attributed to.
_LIBRARIES = frozenset({"torch", "contextlib", "model_ir", "model_runtime", "model_bench", "model_sched",
                        "model_place"})


def warn_user(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn`` attributed to the innermost caller outside torch and this
    project's packages: the user's line that called ``optimize`` or ``capture_step``."""
    level, frame = 2, sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__", "").partition(".")[0] in _LIBRARIES:
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)


@contextlib.contextmanager
def dropping_log_records(logger: str, prefix: str):
    """Drop the records of ``logger`` whose message starts with ``prefix`` (torch's logs
    of what capture turns into its own errors and warnings)."""
    def keep(record) -> bool:
        return not str(record.msg).startswith(prefix)

    log = logging.getLogger(logger)
    log.addFilter(keep)
    try:
        yield
    finally:
        log.removeFilter(keep)
