"""FLOPs of the ops of a captured step, from ``torch.utils.flop_counter``'s formulas.

The cost model of recomputation: how much arithmetic re-running an op costs. The
counts are torch's own (:data:`torch.utils.flop_counter.flop_registry`, the formulas
``FlopCounterMode`` uses), applied to the shapes the tracer recorded on each FX node
(``node.meta["val"]``), so a captured step and the same step run eagerly under
``FlopCounterMode`` agree op by op.

Conventions are torch's: matrix products and convolutions (and attention) count
``2 * m * n * k``-style multiply-adds, and an operator without a formula counts 0
FLOPs (elementwise ops, reductions, normalizations, the optimizer's update, copies).
The figures are therefore a dense-arithmetic estimate, not a measurement of time.

``FlopCounterMode`` also decomposes operators that have no formula but a
``CompositeImplicitAutograd`` kernel before counting; a traced step never holds
such operators (they are decomposed before the tracer records them), so
:func:`node_flops` only looks formulas up.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs
import torch
from torch import fx
from torch.utils import _pytree as pytree
from torch.utils import flop_counter

from model_ir.graph import Graph
from model_ir.torch.errors import CaptureError

#: Where the counts come from (the graph's ``meta["flops_source"]``).
FLOPS_SOURCE = "torch.utils.flop_counter"

#: The phases an op's ``meta["phase"]`` names; each has a key in the graph's ``meta["flops"]``.
PHASES = ("forward", "backward", "optimizer")


def _value(arg):
    """The traced value of an FX argument: a node's fake tensor (or list of them), or the literal."""
    if not isinstance(arg, fx.Node):
        return arg
    if "val" in arg.meta:
        return arg.meta["val"]
    if arg.op == "get_attr":  # constants of the module carry no traced value
        return getattr(arg.graph.owning_module, arg.target)
    return None


def node_flops(node: fx.Node) -> int:
    """FLOPs of one aten FX node (floating-point operations, multiply and add counted
    apart), by the formula ``torch.utils.flop_counter`` registers for its operator,
    called as ``FlopCounterMode`` calls it: with the node's arguments (fake tensors from
    ``meta["val"]``) and ``out_val``, its traced result.

    0 for nodes that are not operator calls and for operators without a formula
    (torch's convention). Raises :class:`CaptureError` when a formula fails on the
    node's arguments.
    """
    target = node.target
    if node.op != "call_function" or not isinstance(target, torch._ops.OpOverload):
        return 0
    formula = flop_counter.flop_registry.get(target.overloadpacket)
    if formula is None:
        return 0
    args, kwargs = pytree.tree_map(_value, (node.args, node.kwargs))
    try:
        flops = formula(*args, **kwargs, out_val=node.meta.get("val"))
    except Exception as exc:
        raise CaptureError(
            f"torch.utils.flop_counter's formula for {target} failed on node {node.name} "
            f"({type(exc).__name__}: {exc}); the node's traced arguments do not fit the formula"
        ) from exc
    return int(flops)


def annotate_flops(graph: Graph, module: fx.GraphModule) -> Graph:
    """``graph`` with the FLOPs of each op, from the FX graph ``module`` it was captured
    from (op ids are FX node names).

    An op's FLOPs are those of its node plus those of the folded nodes it runs
    (``meta["folded"]``). Ops with a non-zero count get ``meta["flops"]`` (an int);
    ops without the key cost 0 FLOPs (absent rather than 0 keeps graph JSON small;
    ``meta["flops_source"]`` on the graph says the ops were counted). The graph's
    ``meta["flops"]`` holds ``total`` and the sum of each phase (``forward``,
    ``backward``, ``optimizer``, by the ops' ``meta["phase"]``); buffers, ops and
    their order are otherwise unchanged. Raises :class:`CaptureError` when an op names
    no node of ``module``.
    """
    nodes: Mapping[str, fx.Node] = {n.name: n for n in module.graph.nodes}
    totals = dict.fromkeys(("total", *PHASES), 0)
    ops = []
    for op in graph.ops:
        names = (op.id, *op.meta.get("folded", ()))
        missing = [n for n in names if n not in nodes]
        if missing:
            raise CaptureError(
                f"op {op.id!r}: no node {missing[0]!r} in the FX graph; annotate a graph with the module "
                "it was captured from"
            )
        flops = sum(node_flops(nodes[n]) for n in names)
        totals["total"] += flops
        phase = op.meta.get("phase")
        if phase is not None:
            totals[phase] = totals.get(phase, 0) + flops
        meta = {k: v for k, v in op.meta.items() if k != "flops"}  # re-annotating replaces an old count
        if flops:
            meta["flops"] = flops
        ops.append(op if meta == op.meta else attrs.evolve(op, meta=meta))
    return attrs.evolve(graph, ops=tuple(ops),
                        meta={**graph.meta, "flops": totals, "flops_source": FLOPS_SOURCE})
