"""In-place activations of the forward pass made functional, so they can be recomputed.

``ReLU(inplace=True)`` after batch norm, or ResNet's ``out += identity``, write an
activation in place. A buffer written in place cannot be made again by rerunning its
producer (:mod:`model_ir.recompute`): the rerun would give the values before the
write. Planning under a memory budget therefore rewrites such a write, ``relu_(x)``,
into its functional form, ``y = relu(x)``, with every later use of ``x`` reading ``y``
(as torch.compile functionalizes a graph before partitioning it). The values are
bitwise the same; the memory is not quite eager's: ``y`` is a new buffer while ``x``
is still alive, where eager wrote ``x`` in place.

Only writes whose target is safe to redirect are rewritten: a forward-pass op with a
functional overload of the same name without the trailing underscore and the same
arguments, writing a buffer that a forward op produced and that no other node views
(every alias of it would also need redirecting). Then the clones autograd made of such
a write's input for the backward (``SiLU(inplace=True)``) are that input itself:
:func:`drop_redundant_clones`.

A write into a piece of a buffer stays (the CPU GRU's gates, ``r_h.add_(r_i).sigmoid_()``
on side-by-side pieces of one matmul's output): its functional form would lay the piece
out without the gaps around it, and CPU kernels loop over such a buffer otherwise, with
other rounding (sigmoid's vector and scalar loops differ), so the step would no longer
be eager's, bitwise.
"""

from __future__ import annotations

import torch
from torch import fx
from torch.multiprocessing.reductions import StorageWeakRef

from model_ir.torch.checkpoint_rng import replayed_draws
from model_ir.torch.node_args import written_nodes


def _functional(target):
    """The functional overload of in-place op ``target`` (``aten.relu_.default`` ->
    ``aten.relu.default``), or None."""
    if not isinstance(target, torch._ops.OpOverload):
        return None
    schema = target._schema
    namespace, _, name = schema.name.partition("::")
    if namespace != "aten" or not name.endswith("_") or name.startswith("_") or not schema.arguments:
        return None
    first = schema.arguments[0]
    if first.alias_info is None or not first.alias_info.is_write:
        return None
    if any(a.alias_info is not None and a.alias_info.is_write for a in schema.arguments[1:]):
        return None
    packet = getattr(torch.ops.aten, name[:-1], None)
    overload = getattr(packet, target._overloadname, None) if packet is not None else None
    if overload is None:
        return None
    args = [a.name for a in overload._schema.arguments]
    if args != [a.name for a in schema.arguments]:
        return None
    return overload


def drop_redundant_clones(gm: fx.GraphModule) -> int:
    """Make every node that reads ``y = clone(x)`` read ``x`` itself where neither is
    written in place anywhere in the graph (nor any view of them), ``y`` is laid out as
    ``x`` and ``x`` spans its whole storage; returns how many clones were dropped.

    Autograd clones the input of an in-place op whose backward needs it
    (``SiLU(inplace=True)``: ``x.clone()`` saved, then ``x.silu_()``). Once
    :func:`functionalize_forward_writes` has made the write functional, nothing
    overwrites ``x``: the clone is a second copy of the same values, alive through the
    backward pass next to ``x``'s other results. Reading ``x`` instead keeps the same
    bytes for the backward and lets a memory budget recompute the activation
    (``silu(x)``) from an input that is alive anyway (EfficientNet-B0)."""
    written = {_storage(w) for node in gm.graph.nodes if node.op == "call_function" for w in written_nodes(node)}
    dropped = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target is not torch.ops.aten.clone.default:
            continue
        source = node.args[0]
        copy, original = node.meta.get("val"), getattr(source, "meta", {}).get("val")
        if (source.op != "call_function" or not isinstance(copy, torch.Tensor) or not isinstance(original, torch.Tensor)
                or (copy.shape, copy.stride(), copy.dtype) != (original.shape, original.stride(), original.dtype)
                or copy.storage_offset() != 0 or original.storage_offset() != 0
                # a view of a larger storage: reading it would keep all of it alive
                or original.untyped_storage().nbytes() != copy.untyped_storage().nbytes()
                or _storage(node) in written or _storage(source) in written
                or any(user.op == "output" for user in node.users)):
            continue
        node.replace_all_uses_with(source)
        gm.graph.erase_node(node)
        dropped += 1
    if dropped:
        gm.graph.lint()
        gm.recompile()
    return dropped


def _view_form(target):
    """The view op that in-place view op ``target`` applies to its argument's own
    metadata (``aten.transpose_.default`` -> ``aten.transpose.int``: the overload with the
    same arguments, whatever its name), or None."""
    if not isinstance(target, torch._ops.OpOverload):
        return None
    schema = target._schema
    namespace, _, name = schema.name.partition("::")
    first = schema.arguments[0].alias_info if schema.arguments else None
    if namespace != "aten" or not name.endswith("_") or first is None or not first.is_write:
        return None
    packet = getattr(torch.ops.aten, name[:-1], None)
    args = [(a.name, str(a.type)) for a in schema.arguments]
    for overload in (getattr(packet, n) for n in (packet.overloads() if packet is not None else ())):
        returned = overload._schema.returns[0].alias_info if overload._schema.returns else None
        if (returned is not None and not returned.is_write
                and [(a.name, str(a.type)) for a in overload._schema.arguments] == args):
            return overload
    return None


def _is_view(node: fx.Node) -> bool:
    schema = getattr(node.target, "_schema", None)
    if node.op != "call_function" or schema is None or not schema.returns:
        return False
    alias = schema.returns[0].alias_info
    return alias is not None and not alias.is_write


def retrace(node: fx.Node, mode=None) -> None:
    """Recompute ``node``'s traced value from its inputs' (under their fake mode, or
    ``mode`` for a node with no tensor input)."""
    def value(a):
        return a.meta["val"] if isinstance(a, fx.Node) else a

    args = fx.node.map_aggregate(node.args, value)
    kwargs = fx.node.map_aggregate(node.kwargs, value)
    with mode or _fake_mode(node):
        node.meta["val"] = node.target(*args, **kwargs)


def _fake_mode(node: fx.Node):
    for a in node.all_input_nodes:
        mode = getattr(a.meta.get("val"), "fake_mode", None)
        if mode is not None:
            return mode
    raise RuntimeError(f"internal error: no fake tensor among the inputs of {node.name}")


def _storage(node: fx.Node):
    val = node.meta.get("val")
    return StorageWeakRef(val.untyped_storage()) if isinstance(val, torch.Tensor) else None


def views_for_metadata_writes(gm: fx.GraphModule) -> int:
    """Rewrite in-place view ops on intermediate tensors (``x.transpose_(0, 1)``,
    ``squeeze_``, ``t_``, ``as_strided_``: they change ``x``'s sizes and strides, not its
    values) into their view forms, with every later use of ``x`` reading the view; returns
    how many were rewritten.

    Eager gets the same values either way, but the arena executor hands an op a slot
    tensor kept from step to step: an in-place view op would change that slot's shape for
    every later step (PyTorch's nn.GRU with ``batch_first`` on CPU transposes its output
    in place). Placeholders (parameters, inputs) keep eager's in-place semantics."""
    nodes = list(gm.graph.nodes)
    position = {n: i for i, n in enumerate(nodes)}
    rewritten = 0
    for node in nodes:
        if node.op != "call_function" or not node.args or not isinstance(node.args[0], fx.Node):
            continue
        view = _view_form(node.target)
        if view is None:
            continue
        target = node.args[0]
        if target.op != "call_function":
            continue
        node.target = view  # same name, arguments and traced value: the view of target's old metadata
        for user in list(target.users):
            if user is not node and position[user] > position[node]:
                user.replace_input_with(target, node)
        rewritten += 1
    if rewritten:
        gm.graph.lint()
        gm.recompile()
    return rewritten


def functionalize_forward_writes(gm: fx.GraphModule, backward_start: str | None) -> int:
    """Rewrite the forward pass's in-place writes of activations into functional ops
    (see the module docstring); returns how many were rewritten."""
    nodes = list(gm.graph.nodes)
    end = next((i for i, n in enumerate(nodes) if n.name == backward_start), len(nodes))
    by_storage: dict = {}
    for n in nodes:
        ref = _storage(n)
        if ref is not None:
            by_storage.setdefault(ref, []).append(n)
    position = {n: i for i, n in enumerate(nodes)}
    replayed = replayed_draws(nodes)  # a checkpointed region's backward replays them: kept
    rewritten = 0
    for node in nodes[:end]:
        if node.op != "call_function" or node.name in replayed:
            continue
        functional = _functional(node.target)
        if functional is None or not node.args or not isinstance(node.args[0], fx.Node):
            continue
        target = node.args[0]
        ref = _storage(target)
        holders = by_storage.get(ref, [])
        # The written buffer: made by an op of the forward pass (not a parameter or input),
        # held only by its producer, in-place writes returning it and views made after this
        # write (re-derived below); a view made before would keep reading the old values.
        views = [h for h in holders if h is not target and h is not node and _is_view(h)]
        if (ref is None or target.op != "call_function" or position.get(target, end) >= end
                or any(position[h] < position[node] for h in views)
                or any(h is not target and h is not node and h not in views and _functional(h.target) is None
                       for h in holders)):
            continue
        with gm.graph.inserting_after(node):
            new = gm.graph.call_function(functional, node.args, node.kwargs)
        new.meta = dict(node.meta)
        new.meta["val"] = node.meta["val"].clone() if isinstance(node.meta.get("val"), torch.Tensor) else None
        if new.meta["val"] is None:
            gm.graph.erase_node(new)
            continue
        # Everything after the write reads the result: through the write's return value or the buffer itself.
        for user in list(node.users):
            user.replace_input_with(node, new)
        for user in list(target.users):
            if user is not node and position.get(user, -1) > position[node]:
                user.replace_input_with(target, new)
        gm.graph.erase_node(node)
        for view in views:  # now views of the new buffer: their traced values follow
            retrace(view)
        by_storage.setdefault(_storage(new), []).extend([new, *views])
        position[new] = position.pop(node)
        rewritten += 1
    if rewritten:
        gm.graph.lint()
        gm.recompile()
    return rewritten
