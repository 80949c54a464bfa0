"""The one memory simulator every layer uses (DESIGN.md, "Memory model").

For an op order it gives each buffer's lifetime (first and last step it is alive),
the live bytes while each op runs, the peak, and simple lower bounds. Rules:

- persistent buffers are alive throughout;
- a graph input (no producer) is alive from the start until its last use;
- a produced buffer is alive from the step of its producer to the step of its last
  reader or mutator (eager reference counting), or to the end if it is an output;
- while an op runs, its inputs and outputs are all alive.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from model_ir.arguments import check_graph
from model_ir.errors import ScheduleError
from model_ir.graph import Graph
from model_ir.plan import Schedule, order_indices


@attrs.frozen
class Lifetime:
    """A buffer alive during steps ``[start, end)`` (half-open), ``size`` bytes.

    ``alignment`` (bytes, >= 1) constrains where a placement may put it: its offset
    must be a multiple of ``alignment``.
    """

    id: str
    start: int
    end: int
    size: int
    alignment: int = 1


@attrs.frozen
class MemoryProfile:
    """What the simulator reports for one order.

    ``timeline[t]`` is the live bytes (persistent included) while the ``t``-th op of
    the order runs. ``lifetimes`` covers the non-persistent buffers, the ones a
    placement has to pack.
    """

    order: tuple[int, ...]
    timeline: tuple[int, ...]
    persistent_bytes: int
    lifetimes: tuple[Lifetime, ...]

    @property
    def peak_bytes(self) -> int:
        """Peak live bytes, persistent buffers included."""
        return max(self.timeline, default=self.persistent_bytes)

    @property
    def transient_peak_bytes(self) -> int:
        """Peak live bytes of non-persistent buffers only."""
        return self.peak_bytes - self.persistent_bytes


def validate_order(graph: Graph, order: Sequence[int]) -> None:
    """Raise :class:`ScheduleError` unless ``order`` runs every op once, after its dependencies."""
    n = len(graph.ops)
    if len(order) != n:
        raise ScheduleError(f"schedule has {len(order)} ops, graph {graph.name!r} has {n}")
    step = [-1] * n
    for t, i in enumerate(order):
        if step[i] != -1:
            raise ScheduleError(f"schedule runs op {graph.ops[i].id!r} twice")
        step[i] = t
    for i, preds in enumerate(graph.predecessors):
        for p in preds:
            if step[p] > step[i]:
                raise ScheduleError(
                    f"schedule runs op {graph.ops[i].id!r} before op {graph.ops[p].id!r}, which it depends on"
                )


def simulate(graph: Graph, order: Sequence[str] | Schedule | None = None, *, check: bool = True) -> MemoryProfile:
    """Simulate ``order`` (program order by default) and return its memory profile.

    With ``check`` (the default) the order is validated first.
    """
    check_graph(graph)
    idx = list(range(len(graph.ops))) if order is None else order_indices(graph, order)
    if check and order is not None:
        validate_order(graph, idx)
    return simulate_indices(graph, idx)


def simulate_indices(graph: Graph, order: Sequence[int]) -> MemoryProfile:
    """:func:`simulate` for an order of op positions, without validation."""
    n = len(order)
    step = [0] * len(graph.ops)
    for t, i in enumerate(order):
        step[i] = t
    diff = [0] * (n + 2)  # +2: an unused input of an empty graph still spans [0, 1)
    lifetimes = []
    for bi, buf in enumerate(graph.buffers):
        if buf.persistent:
            continue
        start, end = _span(graph, bi, step, n)
        diff[start] += buf.size
        diff[end] -= buf.size
        lifetimes.append(Lifetime(buf.id, start, end, buf.size))
    timeline, live = [], graph.persistent_bytes
    for t in range(n):
        live += diff[t]
        timeline.append(live)
    return MemoryProfile(tuple(order), tuple(timeline), graph.persistent_bytes, tuple(lifetimes))


def _span(graph: Graph, bi: int, step: list[int], n: int) -> tuple[int, int]:
    prod = graph.producer[bi]
    start = 0 if prod is None else step[prod]
    if graph.buffers[bi].output:
        end = max(n, start + 1)
    else:
        end = max((step[u] for u in graph.users[bi]), default=start) + 1
    return start, end


def working_set_bound(graph: Graph) -> int:
    """Lower bound on any order's peak: persistent bytes plus the largest op working set.

    An op's working set is the non-persistent buffers it reads, writes or allocates.
    """
    best = 0
    for op in graph.ops:
        ids = set(op.uses) | set(op.outputs)
        ws = sum(graph.buffers[graph.buffer_index[b]].size for b in ids if not graph.buffer(b).persistent)
        best = max(best, ws)
    return graph.persistent_bytes + best
