"""Type checks of the arguments of public functions (``schedule``, ``place``,
``simulate``, ``load_graph``, ...): a wrong type is reported at the entry point as a
:class:`~model_ir.errors.WrongTypeError` naming the argument, not as an
``AttributeError`` from deep inside an algorithm."""

from __future__ import annotations

from typing import Any

from model_ir.errors import WrongTypeError
from model_ir.graph import Graph


def check_type(value: Any, types: type | tuple[type, ...], name: str, expected: str) -> Any:
    """Return ``value`` if it is an instance of ``types`` (a bool only where ``bool`` is
    listed: ``True`` is no number of seconds), else raise :class:`WrongTypeError`."""
    allowed = types if isinstance(types, tuple) else (types,)
    if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
        raise WrongTypeError(f"{name}: expected {expected}, got {describe(value)}")
    return value


def check_graph(value: Any, name: str = "graph") -> Graph:
    return check_type(value, Graph, name, "a model_ir.Graph (read a file with model_ir.load_graph(path))")


def check_seconds(value: Any, name: str = "time_limit") -> float | None:
    """A time limit: None, or an int or float (its sign is the caller's to check)."""
    if value is None:
        return None
    return float(check_type(value, (int, float), name, "a number of seconds or None"))


def check_ids(value: Any, name: str = "order") -> Any:
    """A sequence of ids; a string is refused (it would be read as one id per character)."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise WrongTypeError(f"{name}: expected a sequence of op ids, got {describe(value)}")
    return value


def check_optional_callable(value: Any, name: str) -> Any:
    if value is not None and not callable(value):
        raise WrongTypeError(f"{name}: expected a function or None, got {describe(value)}")
    return value


def describe(value: Any) -> str:
    """``type value`` for a message, cut to a readable length."""
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"
