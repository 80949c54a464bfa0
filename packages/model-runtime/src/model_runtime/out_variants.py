"""Finding the ``out=`` overload of an aten operator, from the schemas only.

An aten operator such as ``aten::addmm`` has a functional overload (it allocates its
result) and usually an *out* overload (``aten::addmm.out``) that writes into tensors
passed as keyword-only ``Tensor(a!)`` arguments. The arena executor calls the out
overload with a view of the arena at the buffer's planned offset, so the operator
allocates nothing.

The match is made from the schemas: the out overload's non-out arguments must be
arguments of the functional overload with the same names and types; the functional
may have more arguments only among the tensor options (``dtype``, ``layout``,
``device``, ``pin_memory``), which the out tensor already fixes.

Many out overloads are *generated wrappers* (``autogen`` in PyTorch's
``native_functions.yaml``): registered only as ``CompositeExplicitAutograd``, they
call the functional operator and copy its result, so they allocate a temporary inside
the kernel, out of sight. Only an out overload with a kernel for the device's backend
(or a composite-implicit one, which calls other out overloads) is used directly; a
wrapper is reported as such, and the executor runs the functional operator and
copies, where the cost is visible and counted.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import torch

#: Functional arguments an out overload may lack: the out tensor already fixes them.
TENSOR_OPTIONS = frozenset({"dtype", "layout", "device", "pin_memory"})


@attrs.frozen
class OutVariant:
    """How to call the out overload of a functional operator.

    ``positional``/``keyword``: names of the out overload's non-out arguments,
    positional and keyword-only. ``out_names``: its out arguments in return order.
    ``list_out``: one ``Tensor[]`` out argument (``_foreach_*``). ``returns_nothing``:
    the overload returns ``()``, not its out tensors. ``native``: it has a kernel
    that writes into ``out`` (not a wrapper that computes, then copies).
    """

    overload: torch._ops.OpOverload
    positional: tuple[str, ...]
    keyword: tuple[str, ...]
    out_names: tuple[str, ...]
    list_out: bool
    returns_nothing: bool
    native: bool


def qualified_name(op: torch._ops.OpOverload) -> str:
    """``aten::name.overload`` (``aten::name`` for the default overload)."""
    schema = op._schema
    return f"{schema.name}.{schema.overload_name}" if schema.overload_name else schema.name


def has_native_kernel(op: torch._ops.OpOverload, device_type: str) -> bool:
    """True when ``op`` has a kernel for ``device_type``'s backend (``cpu`` -> ``CPU``)
    or a composite-implicit one, i.e. it is not only a generated wrapper."""
    name = qualified_name(op)
    key = {"cpu": "CPU", "cuda": "CUDA"}.get(device_type, device_type.upper())
    has = torch._C._dispatch_has_kernel_for_dispatch_key
    return has(name, key) or has(name, "CompositeImplicitAutograd")


def _matches(functional, candidate) -> bool:
    f_args = {a.name: str(a.type) for a in functional.arguments}
    outs = [a for a in candidate.arguments if a.is_out]
    if not outs:
        return False
    rest = [a for a in candidate.arguments if not a.is_out]
    for a in rest:
        if f_args.get(a.name) != str(a.type):
            return False
    names = {a.name for a in rest}
    if any(n not in names and n not in TENSOR_OPTIONS for n in f_args):
        return False
    f_returns = [str(r.type) for r in functional.returns]
    if len(outs) == 1 and _is_tensor_list(outs[0].type):
        return f_returns == ["List[Tensor]"]
    return len(outs) == len(f_returns) and all(r == "Tensor" for r in f_returns)


def _is_tensor_list(type_) -> bool:
    return str(type_) == "List[Tensor]"


@functools.cache
def find_out_variant(op: torch._ops.OpOverload, device_type: str) -> OutVariant | None:
    """The out overload matching the functional overload ``op``, or None if there is none.

    Among several matches, one with a native kernel for ``device_type`` wins.
    """
    schema = op._schema
    if any(a.alias_info is not None and a.alias_info.is_write for a in schema.arguments):
        return None  # in-place or already an out overload
    packet = getattr(torch.ops.aten, schema.name.split("::", 1)[1], None) if schema.name.startswith("aten::") else None
    if packet is None:
        return None
    found: list[OutVariant] = []
    for name in packet.overloads():
        cand = getattr(packet, name)
        cs = cand._schema
        if not _matches(schema, cs):
            continue
        outs = [a for a in cs.arguments if a.is_out]
        rest = [a for a in cs.arguments if not a.is_out]
        found.append(OutVariant(
            overload=cand,
            positional=tuple(a.name for a in rest if not a.kwarg_only),
            keyword=tuple(a.name for a in rest if a.kwarg_only),
            out_names=tuple(a.name for a in outs),
            list_out=len(outs) == 1 and _is_tensor_list(outs[0].type),
            returns_nothing=not cs.returns,
            native=has_native_kernel(cand, device_type),
        ))
    if not found:
        return None
    found.sort(key=lambda v: not v.native)
    return found[0]


_MISSING = object()


def named_arguments(op: torch._ops.OpOverload, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments of a call of ``op`` by schema name (omitted defaults left out)."""
    named: dict[str, Any] = {}
    for i, a in enumerate(op._schema.arguments):
        if i < len(args):
            named[a.name] = args[i]
        elif a.name in kwargs:
            named[a.name] = kwargs[a.name]
    return named


def out_call_arguments(variant: OutVariant, named: Mapping[str, Any],
                       outs: Sequence[Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Positional and keyword arguments of ``variant.overload`` for a call whose functional
    arguments are ``named`` and whose results go to ``outs`` (one per return, or the
    list of tensors of a ``Tensor[]`` out argument)."""
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    positional = True
    for name in variant.positional:
        value = named.get(name, _MISSING)
        if value is _MISSING:
            positional = False  # later arguments must go by name
            continue
        if positional:
            args.append(value)
        else:
            kwargs[name] = value
    for name in variant.keyword:
        if name in named:
            kwargs[name] = named[name]
    if variant.list_out:
        kwargs[variant.out_names[0]] = list(outs)
    else:
        for name, value in zip(variant.out_names, outs, strict=True):
            kwargs[name] = value
    return tuple(args), kwargs
