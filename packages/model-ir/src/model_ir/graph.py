"""The storage-level graph IR: buffers, ops and graphs (immutable attrs classes).

A :class:`Buffer` is a storage, not a tensor view: views and in-place operators
allocate nothing, they read or mutate an existing buffer. Ops are listed in program
(eager) order; every dependency therefore points from an earlier op to a later one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import Any

import attrs

from model_ir.errors import GraphError

#: Largest total of the buffer sizes of a graph, and so of any one buffer (bytes,
#: 2**62 - 1 = 4 EiB). Sums of sizes (peaks, bounds, arenas, offsets plus sizes)
#: then fit the signed 64-bit integers that numpy, the compiled placement search and
#: PyTorch use, with room to spare for alignment.
MAX_TOTAL_BYTES = 2**62 - 1


def _ids(value: Sequence[str] | str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    return tuple(value)


def _shape(value: Sequence[int] | None) -> tuple[int, ...] | None:
    return None if value is None else tuple(value)


@attrs.frozen
class Buffer:
    """A storage of ``size`` bytes.

    ``persistent`` buffers (parameters, optimizer state, the input batch) are alive for
    the whole step; ``output`` buffers (the loss, ...) stay alive from their production
    to the end of the step. A buffer that no op produces is a graph input.
    """

    id: str
    size: int
    kind: str | None = None
    persistent: bool = False
    output: bool = False
    dtype: str | None = None
    shape: tuple[int, ...] | None = attrs.field(default=None, converter=_shape)
    meta: Mapping[str, Any] = attrs.field(factory=dict, hash=False)


@attrs.frozen
class Op:
    """One operator invocation.

    ``inputs`` are read, ``outputs`` are allocated by this op, ``mutates`` are existing
    buffers written in place (and therefore also used), ``after`` lists ops that must
    run before this one for reasons other than data (e.g. random-number order).
    """

    id: str
    inputs: tuple[str, ...] = attrs.field(default=(), converter=_ids)
    outputs: tuple[str, ...] = attrs.field(default=(), converter=_ids)
    mutates: tuple[str, ...] = attrs.field(default=(), converter=_ids)
    after: tuple[str, ...] = attrs.field(default=(), converter=_ids)
    target: str | None = None
    meta: Mapping[str, Any] = attrs.field(factory=dict, hash=False)

    @property
    def uses(self) -> tuple[str, ...]:
        """Buffers this op needs alive while it runs, besides its outputs."""
        return self.inputs + tuple(b for b in self.mutates if b not in self.inputs)


@attrs.frozen(slots=False, eq=True)
class Graph:
    """Buffers and ops, with ops in program order. Validated on construction."""

    buffers: tuple[Buffer, ...] = attrs.field(converter=tuple)
    ops: tuple[Op, ...] = attrs.field(converter=tuple)
    name: str = "graph"
    meta: Mapping[str, Any] = attrs.field(factory=dict, hash=False)

    def __attrs_post_init__(self) -> None:
        validate(self)

    # -- indices (computed once, graphs are immutable) --------------------------------

    @cached_property
    def buffer_index(self) -> dict[str, int]:
        """Position of each buffer id in :attr:`buffers`."""
        return {b.id: i for i, b in enumerate(self.buffers)}

    @cached_property
    def op_index(self) -> dict[str, int]:
        """Position of each op id in :attr:`ops` (its program-order step)."""
        return {o.id: i for i, o in enumerate(self.ops)}

    @cached_property
    def producer(self) -> tuple[int | None, ...]:
        """For each buffer (by position), the index of the op that allocates it."""
        prod: list[int | None] = [None] * len(self.buffers)
        for i, op in enumerate(self.ops):
            for b in op.outputs:
                prod[self.buffer_index[b]] = i
        return tuple(prod)

    @cached_property
    def users(self) -> tuple[tuple[int, ...], ...]:
        """For each buffer, the ops that read or mutate it, in program order."""
        users: list[list[int]] = [[] for _ in self.buffers]
        for i, op in enumerate(self.ops):
            for b in op.uses:
                users[self.buffer_index[b]].append(i)
        return tuple(tuple(u) for u in users)

    @cached_property
    def writers(self) -> tuple[tuple[int, ...], ...]:
        """For each buffer (by position), the ops that write it in place, in program order."""
        writers: list[list[int]] = [[] for _ in self.buffers]
        for i, op in enumerate(self.ops):
            for b in op.mutates:
                writers[self.buffer_index[b]].append(i)
        return tuple(tuple(w) for w in writers)

    @cached_property
    def sizes(self) -> tuple[int, ...]:
        return tuple(b.size for b in self.buffers)

    @cached_property
    def predecessors(self) -> tuple[tuple[int, ...], ...]:
        """For each op, the ops that must run before it (data, ``after``, hazards)."""
        preds: list[set[int]] = [set() for _ in self.ops]
        for i, op in enumerate(self.ops):
            for b in op.uses:
                p = self.producer[self.buffer_index[b]]
                if p is not None:
                    preds[i].add(p)
            for a in op.after:
                preds[i].add(self.op_index[a])
        for bi, users in enumerate(self.users):
            _add_hazards(self, bi, users, preds)
        for i in range(len(preds)):
            preds[i].discard(i)
        return tuple(tuple(sorted(p)) for p in preds)

    @cached_property
    def successors(self) -> tuple[tuple[int, ...], ...]:
        """Inverse of :attr:`predecessors`."""
        succ: list[list[int]] = [[] for _ in self.ops]
        for i, preds in enumerate(self.predecessors):
            for p in preds:
                succ[p].append(i)
        return tuple(tuple(s) for s in succ)

    @cached_property
    def persistent_bytes(self) -> int:
        """Bytes of buffers alive for the whole step."""
        return sum(b.size for b in self.buffers if b.persistent)

    def buffer(self, buffer_id: str) -> Buffer:
        return self.buffers[self.buffer_index[buffer_id]]

    def op(self, op_id: str) -> Op:
        return self.ops[self.op_index[op_id]]


def _add_hazards(graph: Graph, bi: int, users: tuple[int, ...], preds: list[set[int]]) -> None:
    """Order each in-place write after earlier users and before later users of ``bi``.

    Readers between two writes stay unordered among themselves; transitivity through
    the writes gives every other write-after-read / read-after-write edge.
    """
    bid = graph.buffers[bi].id
    last_write: int | None = None
    readers_since: list[int] = []
    for u in users:
        if bid in graph.ops[u].mutates:
            if last_write is not None:
                preds[u].add(last_write)
            preds[u].update(readers_since)
            last_write, readers_since = u, []
        else:
            if last_write is not None:
                preds[u].add(last_write)
            readers_since.append(u)


def validate(graph: Graph) -> None:
    """Raise :class:`GraphError` naming the first problem found in ``graph``."""
    seen: dict[str, int] = {}
    for b in graph.buffers:
        if not isinstance(b.id, str) or not b.id:
            raise GraphError(f"buffer id {b.id!r} must be a non-empty string")
        if b.id in seen:
            raise GraphError(f"duplicate buffer id {b.id!r}")
        seen[b.id] = 1
        if isinstance(b.size, bool) or not isinstance(b.size, int):
            raise GraphError(f"buffer {b.id!r}: size must be an integer number of bytes, got {b.size!r}")
        if b.size < 0:
            raise GraphError(f"buffer {b.id!r}: size must be >= 0, got {b.size}")
    total = sum(b.size for b in graph.buffers)
    if total > MAX_TOTAL_BYTES:
        raise GraphError(f"the buffers add up to {total} bytes; a graph may hold at most 2**62 - 1 bytes (4 EiB)")
    op_pos: dict[str, int] = {}
    for i, op in enumerate(graph.ops):
        if not isinstance(op.id, str) or not op.id:
            raise GraphError(f"op id {op.id!r} must be a non-empty string")
        if op.id in op_pos:
            raise GraphError(f"duplicate op id {op.id!r}")
        op_pos[op.id] = i
    produced_by: dict[str, str] = {}
    for i, op in enumerate(graph.ops):
        for field, ids in (("inputs", op.inputs), ("outputs", op.outputs), ("mutates", op.mutates)):
            for b in ids:
                if b not in seen:
                    raise GraphError(f"op {op.id!r}: {field} names unknown buffer {b!r}")
        if len(set(op.outputs)) != len(op.outputs):
            raise GraphError(f"op {op.id!r}: outputs list a buffer twice")
        for b in op.outputs:
            if b in produced_by:
                raise GraphError(f"buffer {b!r} is produced twice: by op {produced_by[b]!r} and by op {op.id!r}")
            if graph.buffers[graph.buffer_index[b]].persistent:
                raise GraphError(
                    f"op {op.id!r} produces persistent buffer {b!r}; persistent buffers exist before "
                    "the step, so an op may only mutate them"
                )
            produced_by[b] = op.id
        for a in op.after:
            if a not in op_pos:
                raise GraphError(f"op {op.id!r}: after names unknown op {a!r}")
            if op_pos[a] >= i:
                raise GraphError(
                    f"op {op.id!r} must run after op {a!r}, which comes later in program order; "
                    "list ops in program order"
                )
    for i, op in enumerate(graph.ops):
        for b in op.uses:
            if b in op.outputs:
                raise GraphError(f"op {op.id!r} both produces and uses buffer {b!r}")
            p = produced_by.get(b)
            if p is not None and op_pos[p] > i:
                raise GraphError(
                    f"op {op.id!r} uses buffer {b!r} before op {p!r} produces it; "
                    "list ops in program order"
                )

