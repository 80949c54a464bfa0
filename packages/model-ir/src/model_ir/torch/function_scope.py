"""What a user's Python function can reach outside its arguments: its closure, the
globals its code names and, for a method or a callable object, its object.

The capture runs the user's functions once (the loss, ``before_step``, the modules'
hooks); what they read there becomes a constant of the step, and what they store there
(an activation a hook saves) holds a tensor of the trace. Both are found through these.
"""

from __future__ import annotations

import dis
import functools
import types
from collections.abc import Callable
from typing import NamedTuple

import torch

#: What a read gives for a global deleted since.
ABSENT = object()


def code_names(code: types.CodeType) -> set[str]:
    """The global and attribute names ``code`` and the functions defined in it may read."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= code_names(const)
    return names


def code_strings(code: types.CodeType) -> set[str]:
    """The string constants of ``code`` and the functions defined in it (dict keys)."""
    strings = {c for c in code.co_consts if isinstance(c, str)}
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            strings |= code_strings(const)
    return strings


def code_indexes(code: types.CodeType) -> set[int]:
    """The integer constants ``code`` and the functions defined in it index with
    (``max_norm[0]``, ``xs[-1]``; not ``softmax(1)``), from its instructions, where Python
    3.14 keeps small integers."""
    instructions = list(dis.get_instructions(code))
    indexes = {i.argval for i, then in zip(instructions, instructions[1:])
               if i.opname in ("LOAD_CONST", "LOAD_SMALL_INT") and type(i.argval) is int
               and (then.opname == "BINARY_SUBSCR" or (then.opname == "BINARY_OP" and then.argrepr == "[]"))}
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            indexes |= code_indexes(const)
    return indexes


def unwrap_callable(fn) -> tuple[types.FunctionType | None, object]:
    """``(function, owner)`` for ``fn``: a ``partial``'s function, a bound method's
    function and object, a callable object's ``__call__`` and the object itself
    (modules aside: their state is the model's); ``(None, None)`` for a builtin."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    owner = getattr(fn, "__self__", None)
    function = getattr(fn, "__func__", fn)
    if not isinstance(function, types.FunctionType) and not isinstance(fn, (type, torch.nn.Module)):
        call = getattr(type(fn), "__call__", None)
        if isinstance(call, types.FunctionType):
            return call, fn
    if not isinstance(function, types.FunctionType):
        return None, None
    return function, owner if not isinstance(owner, types.ModuleType) else None


class Scope(NamedTuple):
    """What one function reaches: ``reads`` has ``(kind, name, read)`` for each closure
    variable bound now (kind ``"variable"``) and each module global its code names
    (``"global"``), ``read()`` giving its value at the time; ``owner`` is a method's or a
    callable object's object (None), ``names`` the names its code may read."""

    where: str
    code: types.CodeType
    names: set[str]
    owner: object
    reads: list[tuple[str, str, Callable[[], object]]]


def scopes(fn) -> list[Scope]:
    """The scope of ``fn`` (see :func:`unwrap_callable`), after those of the functions
    a decorator wraps (``__wrapped__``)."""
    function, owner = unwrap_callable(fn)
    if function is None:
        return []
    wrapped = getattr(function, "__wrapped__", None)
    found = scopes(wrapped) if wrapped is not None and wrapped is not function else []
    code = function.__code__
    names = code_names(code)
    reads = []
    for name, cell in zip(code.co_freevars, function.__closure__ or ()):
        try:
            cell.cell_contents
        except ValueError:  # not bound yet
            continue
        reads.append(("variable", name, lambda cell=cell: cell.cell_contents))
    scope = function.__globals__
    reads += [("global", name, lambda name=name: scope.get(name, ABSENT))
              for name in sorted(names) if name in scope and not name.startswith("__")]
    found.append(Scope(getattr(function, "__qualname__", "?"), code, names, owner, reads))
    return found


def scope_values(fn) -> list[tuple[str, object]]:
    """``(where, value)`` for each value ``fn`` can reach now outside its arguments: its
    closure variables, the module globals its code names, and the attributes of its
    object it names (``self.features``); also for the function a decorator wraps."""
    found = []
    for s in scopes(fn):
        found += [(f"{name} (a {kind} of {s.where})", read()) for kind, name, read in s.reads]
        attributes = getattr(s.owner, "__dict__", None)
        if isinstance(attributes, dict) and not isinstance(s.owner, (torch.nn.Module, type)):
            found += [(f"self.{name} (of {s.where})", attributes[name]) for name in sorted(s.names)
                      if name in attributes]
    return found


#: The hook dicts of every module, and those torch runs for all modules.
MODULE_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
GLOBAL_MODULE_HOOKS = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
                       "_global_backward_pre_hooks")


def hook_functions(model: torch.nn.Module) -> list:
    """The hooks the model's forward and backward run: its modules' hooks, torch's global
    module hooks and its parameters' gradient hooks (``p.register_hook``)."""
    hooks = [h for m in model.modules() for key in MODULE_HOOKS for h in (getattr(m, key, None) or {}).values()]
    module = torch.nn.modules.module
    hooks += [h for key in GLOBAL_MODULE_HOOKS for h in (getattr(module, key, None) or {}).values()]
    hooks += [h for p in model.parameters() for h in (p._backward_hooks or {}).values()]
    return hooks
