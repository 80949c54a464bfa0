"""Executing a captured step for real, in any valid op order.

This is the ``reorder`` executor: it runs the IR ops of a :class:`CapturedStep` in the
given order on real tensors and drops every reference to a buffer right after the
last op that uses it, so PyTorch's allocator frees it exactly when the simulator says
(the model-ir README, "Memory model"). Folded nodes (views, ``getitem``, scalar
arithmetic) are evaluated when an op first needs them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch
from torch import fx

from model_ir.plan import Schedule, order_indices
from model_ir.recompute import RERUN_WITHOUT_WRITES, RngReplays, instance_owners
from model_ir.simulator import EAGER_IN_PLACE, simulate_indices, validate_order
from model_ir.torch.errors import ExecutionError
from model_ir.torch.gradient_accumulation import add_as_in_place
from model_ir.torch.rng_replay import draw_device, replaying, save_rng
from model_ir.torch.storage_graph import without_statistics


def execute(
    step,
    tensors: Sequence[torch.Tensor],
    order: Sequence[str] | Schedule | None = None,
    *,
    on_op: Callable[[int, str], None] | None = None,
) -> list:
    """Run ``step`` (a :class:`~model_ir.torch.step.CapturedStep`) on ``tensors``.

    ``tensors`` are the real step inputs in :attr:`CapturedStep.inputs` order (see
    :meth:`CapturedStep.bind`); persistent ones (parameters, model buffers, optimizer
    state) are updated in place. ``order`` is a sequence of IR op ids (default:
    program order) and is validated first. ``on_op(t, op_id)`` is called after the
    ``t``-th op ran and before the buffers it used for the last time are released.
    Returns the step's outputs (``[loss]`` in train mode, ``[loss, *outputs]`` when
    captured with ``return_outputs``, the model outputs in eval). With a GradScaler, the
    optimizer update's ops are skipped when a gradient was not finite.
    """
    graph = step.graph
    idx = list(range(len(graph.ops))) if order is None else order_indices(graph, order)
    if order is not None:
        validate_order(graph, idx)
    gm = step.module
    nodes = {n.name: n for n in gm.graph.nodes}
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(tensors) != len(placeholders):
        raise ExecutionError(f"the step takes {len(placeholders)} tensors, got {len(tensors)}")

    # When each buffer (each instance of a recomputed one) is released: after its last
    # use in this order, or right after its producer when nothing uses it, as the
    # simulator says; persistent and output buffers never.
    release_at: list[list[str]] = [[] for _ in idx]
    owner = instance_owners(graph, idx)
    for lt in simulate_indices(graph, idx).lifetimes if idx else ():
        bid = owner.get(lt.id, lt.id)
        if not graph.buffer(bid).output:
            release_at[min(lt.end, len(idx)) - 1].append(bid)
    holders: dict[str, list[str]] = {}
    for name, bids in step.node_buffers.items():
        for b in bids:
            holders.setdefault(b, []).append(name)

    env: dict[str, object] = {}
    for node, t in zip(placeholders, tensors):
        env[node.name] = t
    folded = step.folded

    def value(node: fx.Node):
        try:
            return env[node.name]
        except KeyError:
            pass
        if node.name not in folded:
            raise ExecutionError(f"node {node.name!r} is needed before the op that computes it ran")
        known = node.meta.get("val")
        if node.op == "get_attr":
            result = getattr(gm, node.target)
        elif type(known) in (int, float, bool):
            # Shapes are static: a shape query's traced value is its value, and using it
            # keeps the queried tensor from having to outlive its last real use.
            result = known
        else:
            args = fx.node.map_arg(node.args, value)
            kwargs = fx.node.map_arg(node.kwargs, value)
            result = node.target(*args, **kwargs)
        env[node.name] = list(result) if isinstance(result, tuple) else result
        return env[node.name]

    def release(bid: str) -> None:
        for name in holders.get(bid, ()):
            v = env.get(name)
            if v is None:
                continue
            if isinstance(v, list):
                # Multi-output values: drop only the elements living in this buffer.
                per = step.element_buffers.get(name)
                if per is None:
                    del env[name]
                    continue
                for k, b in enumerate(per):
                    if b == bid and k < len(v):
                        v[k] = None
                if all(x is None or not isinstance(x, torch.Tensor) for x in v):
                    del env[name]
            else:
                del env[name]

    skippable = step.skipped_if_inf
    runs: dict[str, int] = {}
    # Random ops that replay draws (model_ir.torch.rng_replay, model_ir.torch.checkpoint_rng).
    replays = RngReplays(graph, idx)
    rng_states: dict[str, tuple] = {}
    finite = None  # GradScaler: read once, before the first skippable op (as eager's .item())
    with torch.no_grad():
        for t, i in enumerate(idx):
            op_id = graph.ops[i].id
            node = nodes[op_id]
            if op_id in skippable:
                if finite is None:
                    finite = not value(nodes[step.found_inf]).item()
                if not finite:
                    env[op_id] = None
                    if on_op is not None:
                        on_op(t, op_id)
                    for bid in release_at[t]:
                        release(bid)
                    continue
            runs[op_id] = runs.get(op_id, 0) + 1
            node_args, node_kwargs = node.args, node.kwargs
            if runs[op_id] > 1 and graph.ops[i].meta.get(RERUN_WITHOUT_WRITES):
                node_args, node_kwargs = without_statistics(node)  # batch norm's statistics updated once
            args = fx.node.map_arg(node_args, value)
            kwargs = fx.node.map_arg(node_kwargs, value)
            if op_id in replays.saved and runs[op_id] == 1:
                rng_states[op_id] = save_rng(draw_device(node))
            source = replays.source(graph.ops[i], runs[op_id])
            # A gradient sum eager runs in place is laid out as eager leaves it.
            target = add_as_in_place if graph.ops[i].meta.get(EAGER_IN_PLACE) else node.target
            with replaying(rng_states[source]) if source else contextlib.nullcontext():
                result = target(*args, **kwargs)
            env[op_id] = list(result) if isinstance(result, tuple) else result
            del args, kwargs, result
            if on_op is not None:
                on_op(t, op_id)
            for bid in release_at[t]:
                release(bid)
        out_node = nodes["output"] if "output" in nodes else next(n for n in gm.graph.nodes if n.op == "output")
        outputs = fx.node.map_arg(out_node.args[0], value)
    return list(outputs)
