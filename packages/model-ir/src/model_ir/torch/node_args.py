"""The arguments of a traced aten node by schema, and which of its inputs it writes."""

from __future__ import annotations

from collections.abc import Iterable

from torch import fx
from torch.utils import _pytree as pytree

#: Operators that write arguments their schema does not annotate as written:
#: (positional index of the written argument, ...), written when ``training`` is true.
UNANNOTATED_WRITES = {
    "aten::native_batch_norm": ((3, 4), 5),
    "aten::cudnn_batch_norm": ((3, 4), 5),
    "aten::miopen_batch_norm": ((3, 4), 5),
}


def arg_values(node: fx.Node, schema) -> Iterable[tuple[int, object, object]]:
    """``(position, schema argument, value)`` of each argument ``node`` passes,
    positionally or by name."""
    for i, arg in enumerate(schema.arguments):
        if i < len(node.args):
            yield i, arg, node.args[i]
        elif arg.name in node.kwargs:
            yield i, arg, node.kwargs[arg.name]


def written_nodes(node: fx.Node) -> list[fx.Node]:
    """Input nodes whose tensors ``node`` writes, from its schema (lists of tensors
    included) and :data:`UNANNOTATED_WRITES`."""
    schema = getattr(node.target, "_schema", None)
    if schema is None:
        return []
    written: list[fx.Node] = []
    values = {i: v for i, _, v in arg_values(node, schema)}
    for i, arg, value in arg_values(node, schema):
        if arg.alias_info is not None and arg.alias_info.is_write:
            written += [n for n in pytree.tree_leaves(value) if isinstance(n, fx.Node)]
    extra = UNANNOTATED_WRITES.get(schema.name)
    if extra is not None:
        positions, training = extra
        if values.get(training):
            written += [values[p] for p in positions if isinstance(values.get(p), fx.Node)]
    return written
