"""model-place's exceptions, rooted in :class:`model_ir.errors.ModelOptError`."""

from __future__ import annotations

from model_ir.errors import ModelOptError


class PlaceError(ModelOptError):
    """Root of model-place errors (exit status 2 on the command line)."""


class LifetimeError(PlaceError, ValueError):
    """Lifetimes given to a placer are malformed (duplicate id, empty interval, ...)."""


class PlacementError(PlaceError, ValueError):
    """A placement is invalid: overlapping buffers, outside the arena, misaligned.

    Raised when an algorithm's answer fails validation, which is a bug in that
    algorithm, so the message names the buffers involved.
    """


class SearchUnavailableError(PlaceError):
    """The exact search was asked for, but model-place was installed without its
    compiled extension (no C compiler at install time)."""
