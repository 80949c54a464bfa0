"""Compact, index-based form of a graph's memory model, and fast peak evaluation.

:class:`Liveness` flattens a :class:`model_ir.Graph` into tuples of ints so that
schedulers can evaluate an order, or extend a partial order one op at a time, in
O(ops + uses) without touching the attrs objects. It follows the simulator's rules
exactly (the model-ir README, "Memory model"); the tests check both agree on every order.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from model_ir.graph import Graph


@attrs.frozen
class Liveness:
    """Per-op and per-buffer arrays of the memory model (sizes in bytes).

    Persistent buffers appear only in ``base_bytes``: they never change the timeline.
    ``base_bytes`` also holds the graph inputs, alive from step 0; ``first_free_bytes``
    are the graph inputs nobody uses, which the simulator frees after step 0.
    """

    n_ops: int
    sizes: tuple[int, ...]
    keep: tuple[bool, ...]  # graph outputs: never freed
    n_users: tuple[int, ...]  # distinct ops reading or mutating each buffer
    producer: tuple[int, ...]  # -1 for graph inputs and persistent buffers
    persistent: tuple[bool, ...]
    users: tuple[tuple[int, ...], ...]
    op_uses: tuple[tuple[int, ...], ...]  # distinct non-persistent buffers used
    op_outs: tuple[tuple[int, ...], ...]
    out_bytes: tuple[int, ...]
    preds: tuple[tuple[int, ...], ...]
    succs: tuple[tuple[int, ...], ...]
    persistent_bytes: int
    base_bytes: int
    first_free_bytes: int


def liveness(graph: Graph) -> Liveness:
    """Build the :class:`Liveness` arrays of ``graph`` (O(ops + uses))."""
    bidx = graph.buffer_index
    sizes = graph.sizes
    persistent = tuple(b.persistent for b in graph.buffers)
    keep = tuple(b.output for b in graph.buffers)
    users = tuple(tuple(sorted(set(u))) for u in graph.users)
    n_users = tuple(len(u) for u in users)
    producer = tuple(-1 if p is None else p for p in graph.producer)
    op_uses, op_outs, out_bytes = [], [], []
    for op in graph.ops:
        uses = []
        for b in op.uses:
            i = bidx[b]
            if not persistent[i] and i not in uses:
                uses.append(i)
        outs = tuple(bidx[b] for b in op.outputs)
        op_uses.append(tuple(uses))
        op_outs.append(outs)
        out_bytes.append(sum(sizes[i] for i in outs))
    base = first_free = 0
    for i in range(len(graph.buffers)):
        if not persistent[i] and producer[i] < 0:
            base += sizes[i]
            if n_users[i] == 0 and not keep[i]:
                first_free += sizes[i]
    return Liveness(
        n_ops=len(graph.ops), sizes=sizes, keep=keep, n_users=n_users, producer=producer,
        persistent=persistent, users=users, op_uses=tuple(op_uses), op_outs=tuple(op_outs),
        out_bytes=tuple(out_bytes), preds=graph.predecessors, succs=graph.successors,
        persistent_bytes=graph.persistent_bytes, base_bytes=graph.persistent_bytes + base,
        first_free_bytes=first_free,
    )


def timeline(lv: Liveness, order: Sequence[int]) -> list[int]:
    """Live bytes (persistent included) while each op of ``order`` runs; no validation."""
    sizes, keep, op_uses, op_outs, out_bytes = lv.sizes, lv.keep, lv.op_uses, lv.op_outs, lv.out_bytes
    remaining = list(lv.n_users)
    mem = lv.base_bytes
    out = []
    for t, v in enumerate(order):
        mem += out_bytes[v]
        out.append(mem)
        if t == 0:
            mem -= lv.first_free_bytes
        for b in op_uses[v]:
            remaining[b] -= 1
            if remaining[b] == 0 and not keep[b]:
                mem -= sizes[b]
        for b in op_outs[v]:
            if remaining[b] == 0 and not keep[b]:
                mem -= sizes[b]
    return out


def peak(lv: Liveness, order: Sequence[int]) -> int:
    """Peak live bytes of ``order`` (persistent included); equals ``simulate(...).peak_bytes``."""
    return max(timeline(lv, order), default=lv.persistent_bytes)


def peak_step(lv: Liveness, order: Sequence[int]) -> int:
    """Position in ``order`` of the first step that reaches the peak."""
    tl = timeline(lv, order)
    return tl.index(max(tl)) if tl else 0
