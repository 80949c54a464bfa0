"""Writing an operator's result into a given tensor when its out= overload is missing
or only a generated wrapper.

Each entry rewrites one functional aten overload as the in-place or out= operation
PyTorch itself implements it with, so the result is bitwise the same:
``ones_like`` is ``empty_like`` then ``fill_(1)``, ``_to_copy`` and ``clone`` are
``empty`` then ``copy_``, ``select_backward``/``slice_backward`` are ``zeros`` then
a ``copy_`` into the selected part, ``relu`` is ``clamp_min(self, 0)`` (ATen's
``relu`` on CPU and CUDA), ``bernoulli.p`` is ``bernoulli_`` of a contiguous result
(the same draws), ``embedding`` is ``index_select`` of the flattened indices,
``_safe_softmax`` (attention's softmax, which zeroes rows that are all ``-inf``) is
``_softmax`` then a ``masked_fill_`` of those rows, ``_adaptive_avg_pool2d``
is ``adaptive_avg_pool2d.out`` (one CPU and one CUDA template behind both), and on
CPU ``embedding_dense_backward`` is ``zero_`` then ``index_add_`` (both add the rows
of each index in the order they come, with the same add kernel);
``mul.Scalar`` and friends are the ``Tensor`` overload with the
number wrapped as a tensor. A rewrite gets the call's arguments by schema name (values
may be FX nodes) and the slot node, adds nodes to the FX graph and returns the node
whose value is the result (the slot).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import fx

aten = torch.ops.aten

Rewrite = Callable[[fx.Graph, Mapping[str, Any], fx.Node], fx.Node]


def _fill(value_arg: str | None, constant=None) -> Rewrite:
    def rewrite(g: fx.Graph, named: Mapping[str, Any], slot: fx.Node) -> fx.Node:
        value = named[value_arg] if value_arg is not None else constant
        return g.call_function(aten.fill_.Scalar, (slot, value))
    return rewrite


def _zero(g: fx.Graph, named: Mapping[str, Any], slot: fx.Node) -> fx.Node:
    return g.call_function(aten.zero_.default, (slot,))


def _nothing(g: fx.Graph, named: Mapping[str, Any], slot: fx.Node) -> fx.Node:
    return slot


def _copy(g: fx.Graph, named: Mapping[str, Any], slot: fx.Node) -> fx.Node:
    return g.call_function(aten.copy_.default, (slot, named["self"]))


def _tensor_out(out_overload, extra: tuple[str, ...] = ()) -> Rewrite:
    """A ``*.Scalar`` overload as the ``Tensor`` overload's out=: the Python number
    becomes a wrapped-number tensor, which is what the ``Scalar`` overload does too."""
    def rewrite(g: fx.Graph, named: Mapping[str, Any], slot: fx.Node) -> fx.Node:
        kwargs = {k: named[k] for k in extra if k in named}
        return g.call_function(out_overload, (named["self"], named["other"]), {**kwargs, "out": slot})
    return rewrite


def _arange(g: fx.Graph, named: Mapping[str, Any], slot: fx.Node) -> fx.Node:
    # arange(end) and arange(start, end) are arange(start=0, end, step=1) into out.
    args = (named.get("start", 0), named["end"], named.get("step", 1))
    return g.call_function(aten.arange.start_out, args, {"out": slot})


def _select_backward(g: fx.Graph, named: Mapping[str, Any], slot: fx.Node) -> fx.Node:
    # ATen: zeros(input_sizes), then select(dim, index).copy_(grad_output).
    zeroed = g.call_function(aten.zero_.default, (slot,))
    part = g.call_function(aten.select.int, (zeroed, named["dim"], named["index"]))
    g.call_function(aten.copy_.default, (part, named["grad_output"]))
    return zeroed


def _slice_backward(g: fx.Graph, named: Mapping[str, Any], slot: fx.Node) -> fx.Node:
    # ATen: zeros(input_sizes), then slice(dim, start, end, step).copy_(grad_output).
    zeroed = g.call_function(aten.zero_.default, (slot,))
    part = g.call_function(aten.slice.Tensor,
                           (zeroed, named["dim"], named["start"], named["end"], named["step"]))
    g.call_function(aten.copy_.default, (part, named["grad_output"]))
    return zeroed


def _relu(g: fx.Graph, named: Mapping[str, Any], slot: fx.Node) -> fx.Node:
    return g.call_function(aten.clamp_min.out, (named["self"], 0), {"out": slot})


def _bernoulli(g: fx.Graph, named: Mapping[str, Any], slot: fx.Node) -> fx.Node:
    # ATen: empty_like(self, contiguous), then bernoulli_(p): the same draws into the slot
    # (bernoulli.p has no default p: the trace always passes it).
    return g.call_function(aten.bernoulli_.float, (slot, named["p"]), {"generator": named.get("generator")})


def _embedding(g: fx.Graph, named: Mapping[str, Any], slot: fx.Node) -> fx.Node:
    # ATen: weight.index_select(0, indices.reshape(-1)).view(*indices.shape, dim).
    index = g.call_function(aten.reshape.default, (named["indices"], [-1]))
    rows = g.call_function(aten.flatten.using_ints, (slot, 0, -2))
    g.call_function(aten.index_select.out, (named["weight"], 0, index), {"out": rows})
    return slot


def _safe_softmax(g: fx.Graph, named: Mapping[str, Any], slot: fx.Node) -> fx.Node:
    # ATen: where(all(self == -inf, dim, keepdim), 0, softmax(self, dim)); a row is all
    # -inf exactly when its max is -inf (NaN compares unequal both ways), so the mask is
    # one value per row instead of a bool tensor of the input's size.
    g.call_function(aten._softmax.out, (named["self"], named["dim"], False), {"out": slot})
    row_max = g.call_function(aten.amax.default, (named["self"], [named["dim"]], True))
    dead = g.call_function(aten.eq.Scalar, (row_max, float("-inf")))
    return g.call_function(aten.masked_fill_.Scalar, (slot, dead, 0))


def _embedding_dense_backward(g: fx.Graph, named: Mapping[str, Any], slot: fx.Node) -> fx.Node:
    # ATen (CPU): zeros, then grad_weight[k] += grad[i] for each i with indices[i] == k,
    # in the order of i, skipping padding_idx.
    zeroed = g.call_function(aten.zero_.default, (slot,))
    index = g.call_function(aten.reshape.default, (named["indices"], [-1]))
    rows = g.call_function(aten.flatten.using_ints, (named["grad_output"], 0, -2))
    g.call_function(aten.index_add_.default, (zeroed, 0, index, rows))
    if named["padding_idx"] >= 0:  # an int: rewrite_refusal checks
        g.call_function(aten.zero_.default, (g.call_function(aten.select.int, (zeroed, 0, named["padding_idx"])),))
    return zeroed


def _adaptive_avg_pool2d(g: fx.Graph, named: Mapping[str, Any], slot: fx.Node) -> fx.Node:
    return g.call_function(aten.adaptive_avg_pool2d.out, (named["self"], named["output_size"]), {"out": slot})


#: functional overload -> rewrite; every entry is covered by a bitwise test.
REWRITES: dict[torch._ops.OpOverload, Rewrite] = {
    aten.ones_like.default: _fill(None, 1),
    aten.zeros_like.default: _zero,
    aten.full_like.default: _fill("fill_value"),
    aten.empty_like.default: _nothing,
    aten.ones.default: _fill(None, 1),
    aten.zeros.default: _zero,
    aten.full.default: _fill("fill_value"),
    aten.scalar_tensor.default: _fill("s"),
    aten.new_ones.default: _fill(None, 1),
    aten.new_zeros.default: _zero,
    aten.new_full.default: _fill("fill_value"),
    aten.new_empty.default: _nothing,
    aten.new_empty_strided.default: _nothing,
    aten.empty_strided.default: _nothing,
    aten._to_copy.default: _copy,
    aten.clone.default: _copy,
    aten.lift_fresh_copy.default: _copy,
    aten.relu.default: _relu,
    aten.bernoulli.p: _bernoulli,
    aten.arange.default: _arange,
    aten.select_backward.default: _select_backward,
    aten.slice_backward.default: _slice_backward,
    aten.arange.start: _arange,
    aten.add.Scalar: _tensor_out(aten.add.out, ("alpha",)),
    aten.sub.Scalar: _tensor_out(aten.sub.out, ("alpha",)),
    aten.mul.Scalar: _tensor_out(aten.mul.out),
    aten.div.Scalar: _tensor_out(aten.div.out),
    aten.div.Scalar_mode: _tensor_out(aten.div.out_mode, ("rounding_mode",)),
    aten.embedding.default: _embedding,
    aten._safe_softmax.default: _safe_softmax,
    aten._adaptive_avg_pool2d.default: _adaptive_avg_pool2d,
    aten.embedding_dense_backward.default: _embedding_dense_backward,
}


def _value(arg):
    return arg.meta.get("val") if isinstance(arg, fx.Node) else arg


def rewrite_scratch(op: torch._ops.OpOverload, result: torch.Tensor, named: Mapping[str, Any]) -> tuple[int, ...]:
    """Bytes of each temporary storage the rewrite of ``op`` allocates (and frees before
    the next op: FX drops a value after its last use) for a call returning ``result``
    (``named``'s values may be FX nodes with ``meta["val"]``)."""
    if op is aten._safe_softmax.default:
        rows = result.numel() // max(result.shape[named["dim"]], 1) if result.dim() else 1
        scores = _value(named["self"])
        # the CPU softmax kernel works on a contiguous copy of a strided input (measured; CUDA's taken alike)
        copy = (scores.numel() * scores.element_size(),) \
            if isinstance(scores, torch.Tensor) and not scores.is_contiguous() else ()
        return (*copy, rows * result.element_size(), rows)  # and the row maxima and their bool mask
    return ()


def rewrite_refusal(op: torch._ops.OpOverload, named: Mapping[str, Any], device_type: str,
                    result: torch.Tensor | None = None) -> str | None:
    """Why the rewrite of ``op`` does not apply to a call with these arguments (values
    may be FX nodes with ``meta["val"]``) on ``device_type``, returning ``result`` (its
    captured value, when known), or None when it does."""
    if op is aten._safe_softmax.default and named.get("dtype") is not None:
        return "_safe_softmax with a dtype (the softmax converts its input first)"
    if op is aten.embedding.default and result is not None and not result.is_contiguous():
        return "embedding into a strided result (its rows would be a copy of the slot)"
    if op in (aten.embedding.default, aten.embedding_dense_backward.default):
        indices = _value(named.get("indices"))
        if not isinstance(indices, torch.Tensor) or indices.dim() == 0:
            return f"{op._schema.name} of a 0-dim index"
        if not indices.is_contiguous():
            return f"{op._schema.name} of strided indices (flattening them copies)"
    if op is aten.embedding_dense_backward.default:
        grad = _value(named.get("grad_output"))
        if device_type != "cpu":
            return "embedding_dense_backward off CPU (CUDA's kernel sums in sorted order, index_add_ atomically)"
        if not isinstance(grad, torch.Tensor) or grad.dtype not in (torch.float32, torch.float64):
            # index_add_ of bf16/fp16 rows with int64 indices takes another path: not bitwise
            return "embedding_dense_backward of a gradient that is not float32 or float64"
        if not grad.is_contiguous() or grad.dim() < 2 or named.get("scale_grad_by_freq") \
                or not isinstance(named.get("padding_idx"), int):
            return "embedding_dense_backward of a strided gradient, with scale_grad_by_freq or a symbolic padding_idx"
    return None


def foreach_inplace_twin(op: torch._ops.OpOverload) -> torch._ops.OpOverload | None:
    """The in-place overload of a functional ``_foreach_*`` overload with the same
    arguments (``_foreach_sqrt`` -> ``_foreach_sqrt_``), or None.

    A functional foreach op returning a list of fresh tensors is written into its slots
    as ``_foreach_copy_(slots, self)`` then the in-place twin on the slots: elementwise,
    the same arithmetic on the same values (the caller checks that every result has its
    input's dtype, so no type promotion is involved).
    """
    schema = op._schema
    name = schema.name.removeprefix("aten::")
    if not name.startswith("_foreach_") or name.endswith("_"):
        return None
    packet = getattr(aten, name + "_", None)
    overload = schema.overload_name or "default"
    if packet is None or overload not in packet.overloads():
        return None
    twin = getattr(packet, overload)
    f_args = [(a.name, str(a.type)) for a in schema.arguments]
    t_args = [(a.name, str(a.type)) for a in twin._schema.arguments]
    if f_args != t_args or not schema.arguments or schema.arguments[0].name != "self":
        return None
    return twin


def call_foreach_into(g: fx.Graph, twin: torch._ops.OpOverload, named: Mapping[str, Any],
                      slots: list[fx.Node]) -> fx.Node:
    """Emit ``_foreach_copy_(slots, self)`` and ``twin(slots, ...)``; returns the list of slots."""
    g.call_function(aten._foreach_copy_.default, (slots, named["self"]))
    args: list[Any] = [slots]
    kwargs: dict[str, Any] = {}
    positional = True
    for a in twin._schema.arguments[1:]:
        if a.name not in named:
            positional = False
            continue
        if a.kwarg_only or not positional:
            kwargs[a.name] = named[a.name]
        else:
            args.append(named[a.name])
    g.call_function(twin, tuple(args), kwargs)
    return g.call_function(list, (slots,))
