"""The one memory simulator every layer uses (the model-ir README, "Memory model").

For an op order it gives each buffer's lifetime (first and last step it is alive),
the live bytes while each op runs, the peak, and simple lower bounds. Rules:

- persistent buffers are alive throughout;
- a graph input (no producer) is alive from the start until its last use;
- a produced buffer is alive from the step of its producer to the step of its last
  reader or mutator (eager reference counting), or to the end if it is an output;
- while an op runs, its inputs and outputs are all alive;
- an op run again (a recomputation, :mod:`model_ir.recompute`) allocates new
  instances of its outputs; a use reads the most recent instance, and each instance
  lives from its producer to its last reader;
- with ``eager=True``, what eager PyTorch does: a buffer whose ``meta["released_after"]``
  names an op stays allocated until that op ran (Python still held a tensor on it,
  see :mod:`model_ir.torch.python_releases`), and an op whose ``meta[EAGER_IN_PLACE]``
  names one of its inputs writes its result into that input's memory when it is the
  input's last use (autograd sums two gradients in place, see
  :mod:`model_ir.torch.gradient_accumulation`): the input's lifetime runs on to the
  result's last use and the result's takes no bytes. Captured, a gradient is held that
  way to the end of the step, as ``.grad`` is (:func:`without_held_gradients`).
  Plans free at the last use and may run such an op either way; eager baselines are
  simulated this way.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from model_ir.arguments import check_graph
from model_ir.errors import ScheduleError
from model_ir.graph import Graph
from model_ir.plan import Schedule, order_indices
from model_ir.recompute import instance_id, recomputable_ops


#: Op meta key: the input buffer eager PyTorch writes the op's (same-sized) result into.
EAGER_IN_PLACE = "eager_in_place"


def without_held_gradients(graph: Graph) -> Graph:
    """``graph`` with no gradient (buffer ``meta["grad_of"]``) held past its last reader
    in eager's simulation, for the eager runs that keep no ``.grad``: the optimizer step
    fused into backward (its hook sets ``p.grad = None`` after each update) and
    model-runtime's program executor. Capture has eager's training loop hold each one to
    the end of the step (``meta["released_after"]``, the last op)."""
    last = graph.ops[-1].id if graph.ops else None
    held = [b for b in graph.buffers if "grad_of" in b.meta and b.meta.get("released_after") == last]
    if not held:
        return graph
    ids = {b.id for b in held}
    buffers = [attrs.evolve(b, meta={k: v for k, v in b.meta.items() if k != "released_after"}) if b.id in ids else b
               for b in graph.buffers]
    return attrs.evolve(graph, buffers=buffers)


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
    """Raise :class:`ScheduleError` unless ``order`` runs every op, first after its
    dependencies, and runs again only ops that may be recomputed, while their inputs
    still hold the values they first read (:mod:`model_ir.recompute`)."""
    n = len(graph.ops)
    if len(order) < n:
        raise ScheduleError(f"schedule has {len(order)} ops, graph {graph.name!r} has {n}")
    step = [-1] * n
    again = []
    for t, i in enumerate(order):
        if step[i] == -1:
            step[i] = t
        else:
            again.append((t, i))
    if again and -1 in step:
        raise ScheduleError(f"schedule runs op {graph.ops[again[0][1]].id!r} twice and never runs op "
                            f"{graph.ops[step.index(-1)].id!r}")
    for i, preds in enumerate(graph.predecessors):
        for p in preds:
            if step[p] > step[i]:
                raise ScheduleError(
                    f"schedule runs op {graph.ops[i].id!r} before op {graph.ops[p].id!r}, which it depends on"
                )
    if again:
        _validate_recomputations(graph, step, again)


def _validate_recomputations(graph: Graph, step: list[int], again: list[tuple[int, int]]) -> None:
    allowed = recomputable_ops(graph)
    for t, i in again:
        op = graph.ops[i]
        if i not in allowed:
            raise ScheduleError(
                f"schedule runs op {op.id!r} twice; only an op that allocates buffers, writes none in place and "
                "draws no random numbers it cannot replay may run again (a recomputation)"
            )
        for b in op.inputs:
            for w in graph.writers[graph.buffer_index[b]]:
                if step[i] < step[w] < t:
                    raise ScheduleError(
                        f"schedule recomputes op {op.id!r} after op {graph.ops[w].id!r} wrote its input {b!r}: "
                        "the recomputation would read other values"
                    )


def simulate(graph: Graph, order: Sequence[str] | Schedule | None = None, *, check: bool = True,
             eager: bool = False) -> MemoryProfile:
    """Simulate ``order`` (program order by default) and return its memory profile.

    With ``check`` (the default) the order is validated first. ``eager``: free buffers
    as eager PyTorch does, when Python drops them (module docstring).
    """
    check_graph(graph)
    idx = list(range(len(graph.ops))) if order is None else order_indices(graph, order)
    if check and order is not None:
        validate_order(graph, idx)
    return simulate_indices(graph, idx, eager=eager)


def simulate_indices(graph: Graph, order: Sequence[int], *, eager: bool = False) -> MemoryProfile:
    """:func:`simulate` for an order of op positions, without validation."""
    n = len(order)
    if n > len(graph.ops):
        if eager:
            raise ScheduleError("an eager step runs every op once: eager=True takes no recomputation")
        return _simulate_instances(graph, order)
    step = [0] * len(graph.ops)
    for t, i in enumerate(order):
        step[i] = t
    spans: dict[int, list[int]] = {}  # buffer index -> [start, end, bytes]
    for bi, buf in enumerate(graph.buffers):
        if buf.persistent:
            continue
        start, end = _span(graph, bi, step, n)
        if eager and (held_by := graph.op_index.get(buf.meta.get("released_after"))) is not None:
            end = max(end, step[held_by] + 1)
        spans[bi] = [start, end, buf.size]
    if eager:
        _write_in_place(graph, step, spans)
    diff = [0] * (n + 2)  # +2: an unused input of an empty graph still spans [0, 1)
    lifetimes = []
    for bi, (start, end, size) in spans.items():
        diff[start] += size
        diff[end] -= size
        lifetimes.append(Lifetime(graph.buffers[bi].id, start, end, size))
    timeline, live = [], graph.persistent_bytes
    for t in range(n):
        live += diff[t]
        timeline.append(live)
    return MemoryProfile(tuple(order), tuple(timeline), graph.persistent_bytes, tuple(lifetimes))


def _write_in_place(graph: Graph, step: list[int], spans: dict[int, list[int]]) -> None:
    """Eager's sums in place (``meta[EAGER_IN_PLACE]``): where the sum is its input's last
    use, the memory holding the input lives on as the result, which takes none of its own
    (a 0-byte lifetime); a chain of sums keeps one block, as eager does."""
    holder: dict[int, int] = {}  # buffer -> the buffer whose memory it lives in
    for s, i in sorted((step[i], i) for i, op in enumerate(graph.ops) if EAGER_IN_PLACE in op.meta):
        op = graph.ops[i]
        a = graph.buffer_index.get(op.meta[EAGER_IN_PLACE])
        if a not in spans or len(op.outputs) != 1 or spans[a][1] != s + 1:
            continue
        o = graph.buffer_index[op.outputs[0]]
        if o not in spans or graph.buffers[o].size != graph.buffers[a].size:
            continue
        h = holder.get(a, a)
        spans[h][1] = max(spans[h][1], spans[o][1])
        spans[o][2] = 0
        holder[o] = h


def _simulate_instances(graph: Graph, order: Sequence[int]) -> MemoryProfile:
    """:func:`simulate_indices` for an order that runs some ops more than once: every
    run makes new instances of its outputs, each alive until its own last reader."""
    spans = _instance_spans(graph, order)
    lifetimes = []
    count = [0] * len(graph.buffers)
    for bi, start, end in spans:
        buf = graph.buffers[bi]
        count[bi] += 1
        lifetimes.append(Lifetime(instance_id(buf.id, count[bi]), start, end, buf.size))
    if len({lt.id for lt in lifetimes}) != len(lifetimes):
        raise ScheduleError("a recomputed buffer's instance id (<buffer>@<k>) is also the id of another buffer; "
                            "rename that buffer to recompute this one")
    return MemoryProfile(tuple(order), _timeline(graph, spans, len(order)), graph.persistent_bytes,
                         tuple(lifetimes))


def timeline_indices(graph: Graph, order: Sequence[int]) -> tuple[int, ...]:
    """``simulate_indices(graph, order).timeline`` without building the lifetimes: for
    searches that simulate many orders (recomputation or not) and keep few."""
    return _timeline(graph, _instance_spans(graph, order), len(order))


def _timeline(graph: Graph, spans: list[tuple[int, int, int]], n: int) -> tuple[int, ...]:
    sizes = graph.sizes
    diff = [0] * (n + 2)  # +2: an unused input of an empty graph still spans [0, 1)
    for bi, start, end in spans:
        diff[start] += sizes[bi]
        diff[end] -= sizes[bi]
    timeline, live = [], graph.persistent_bytes
    for t in range(n):
        live += diff[t]
        timeline.append(live)
    return tuple(timeline)


def _instance_spans(graph: Graph, order: Sequence[int]) -> list[tuple[int, int, int]]:
    """``(buffer position, start, end)`` of every instance of a non-persistent buffer in
    ``order``: each run of an op makes new instances of its outputs, alive until their
    own last reader (to the end for step outputs); graph inputs live from step 0."""
    n = len(order)
    uses, outputs = op_buffer_positions(graph)
    # Instances: [buffer position, start, last step alive]; latest[b] is the current one.
    instances: list[list[int]] = []
    latest: dict[int, int] = {}
    for t, i in enumerate(order):
        for bi in uses[i]:
            k = latest.get(bi)
            if k is None:  # a graph input: alive from the start
                k = latest[bi] = len(instances)
                instances.append([bi, 0, 0])
            instances[k][2] = t
        for bi in outputs[i]:
            latest[bi] = len(instances)
            instances.append([bi, t, t])
    for bi, buf in enumerate(graph.buffers):
        if not buf.persistent and bi not in latest:  # an unused graph input
            instances.append([bi, 0, 0])
    is_output = [b.output for b in graph.buffers]
    return [(bi, start, max(n, start + 1) if is_output[bi] else last + 1) for bi, start, last in instances]


def op_buffer_positions(graph: Graph) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]]]:
    """Per op, the positions of the non-persistent buffers it uses (reads or writes) and
    of its outputs (cached on the graph, which is immutable)."""
    cached = graph.__dict__.get("_op_buffer_positions")
    if cached is None:
        index = graph.buffer_index
        persistent = [b.persistent for b in graph.buffers]
        uses = [tuple(index[b] for b in op.uses if not persistent[index[b]]) for op in graph.ops]
        outputs = [tuple(index[b] for b in op.outputs) for op in graph.ops]
        cached = graph.__dict__["_op_buffer_positions"] = (uses, outputs)
    return cached


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
