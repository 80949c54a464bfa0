"""Plain Python values: what a traced step bakes in as a constant and a later call
compares by value (a module's ``Dropout.p``, an optimizer's param-group entry, a number
a loss function reads); :func:`same_value` compares them, hyper-parameters held as
tensors too."""

from __future__ import annotations

import torch

_PLAIN = (bool, int, float, str, type(None))


def is_plain(value) -> bool:
    """A number, string, flag or None (or a tuple of them) equal to itself (not NaN,
    which would never compare equal)."""
    plain = isinstance(value, _PLAIN) or (isinstance(value, tuple) and all(isinstance(v, _PLAIN) for v in value))
    return plain and value == value


def same_value(a, b) -> bool:
    """Whether two hyper-parameter values are the same: tensors of equal shape and values,
    else ``a == b`` (values that cannot be compared are different unless identical)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape
                and bool(torch.equal(a, b)))
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - incomparable values are different
        return a is b
