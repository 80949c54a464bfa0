"""Plain Python values: what a traced step bakes in as a constant and a later call
compares by value (a module's ``Dropout.p``, an optimizer's param-group entry, a number
a loss function reads)."""

from __future__ import annotations

_PLAIN = (bool, int, float, str, type(None))


def is_plain(value) -> bool:
    """A number, string, flag or None (or a tuple of them) equal to itself (not NaN,
    which would never compare equal)."""
    plain = isinstance(value, _PLAIN) or (isinstance(value, tuple) and all(isinstance(v, _PLAIN) for v in value))
    return plain and value == value
