"""A stronger lower bound on the peak of any plan with recomputation: a minimum cut per
op, and per pair of unordered ops.

:func:`~model_sched.recompute_exact.recompute_lower_bound` counts, while op ``v`` first
runs, the buffers alive across it in every order that no rerun can make again. Two
things it leaves out decide small training steps (Adagrad's, below):

- *which ops ran before* ``v``: ops unordered with ``v`` may run before or after it
  (as in :mod:`model_sched.cut_bound`, without recomputation);
- *what a rerun needs*: a buffer freed before ``v`` and read after it must be made
  again after ``v``, by a rerun of its producer, which reads the producer's inputs
  then: each is alive across ``v`` or made again too, and a rerun may not follow an op
  that wrote one of its inputs in place since its first run. After Adagrad's update
  of a weight, nothing reading that weight can run again.

While ``v`` first runs, let ``X`` be the ops that first ran before it (closed under
predecessors, with ``v``'s ancestors and without its descendants). A buffer is
*unavailable* after ``v`` when it is not alive across ``v`` and cannot be made again:
made before ``v`` by an op that cannot rerun (graph inputs, step outputs, ops the IR
never reruns, ops whose input an op of ``X`` or ``v`` wrote after them), or one of its
producer's non-persistent inputs is unavailable. Every first run after ``v`` needs its
inputs available, and step outputs stay. The least bytes alive across ``v``, over all
``X``, is a minimum s-t cut: source side = ``X`` and the unavailable buffers; a
buffer's two nodes ``in -> out`` cost its size (alive, so ``out`` is available); every
other arc is infinite:

- ``u -> q`` for each predecessor ``q`` of an op ``u``: ``X`` is closed;
- ``p -> in(b)`` for a producer that cannot rerun, ``w -> in(b)`` for each op ``w`` that
  writes an input of ``b``'s producer in place after it, ``out(c) -> in(b)`` for each
  input ``c`` of ``b``'s producer, ``source -> in(b)`` for graph inputs;
- ``out(b) -> r`` for each reader ``r`` (it ran before ``v`` if ``b`` is unavailable),
  ``out(b) -> sink`` for step outputs;
- per ``v``: ``source -> q`` for its predecessors, ``v -> sink``; ``v``'s working set
  is alive (counted apart, its arcs cost nothing); ``source -> in(b)`` where ``v``
  writes an input of ``b``'s producer.

The bound at ``v`` is the persistent bytes, ``v``'s working set and the cut. For two
unordered ops ``u`` and ``w``, one of them first runs before the other: the smaller of
the bound at ``u`` with ``w`` after it and the bound at ``w`` with ``u`` after it
holds too. Adagrad on a two-layer MLP: whichever of the two 4 KiB weights is updated
first, its gradient and square root are alive beside either the other weight's
gradient or the 1 KiB activation it is made from, which reads the first weight and so
cannot be made again; no single op shows it.

Needs OR-Tools (its C++ max-flow; the ``cpsat`` extra); without it, or above
:data:`MAX_CUT_OPS` ops, the bound is the one given.
"""

from __future__ import annotations

import numpy as np  # this module is imported on first use (recompute_exact._cut_bound)

from model_ir.graph import Graph
from model_ir.recompute import recomputable_ops
from model_sched.cut_bound import _flags

#: Most ops of a graph the cuts are tried on (one max-flow per op, two per pair).
MAX_CUT_OPS = 1500
#: Most max-flows spent on pairs of unordered ops (those with the highest bounds first).
MAX_PAIR_CUTS = 4000


def recompute_cut_bound(graph: Graph, floor: int) -> int:
    """The largest of ``floor`` (a known lower bound, bytes) and the cut bounds of the
    module docstring at each op and at the most promising pairs of unordered ops: no
    plan of ``graph`` with any recomputation peaks lower."""
    if len(graph.ops) > MAX_CUT_OPS or not graph.ops:
        return floor
    try:
        network = _Network(graph)
    except ImportError:
        return floor
    n = len(graph.ops)
    # With every op but v's ancestors after it, the bound at v is the most any set of ops
    # run before v, or pair, can give there: the others need no cut.
    early = [network.at(v, late=network.not_before(v)) for v in range(n)]
    cands = sorted((v for v in range(n) if early[v] > floor), key=lambda v: (-early[v], v))
    best = floor
    for v in cands:
        if early[v] <= best:
            break
        best = max(best, network.at(v))
    cuts = MAX_PAIR_CUTS
    for i, u in enumerate(cands):
        for w in cands[i + 1:]:
            if early[w] <= best or cuts <= 0:
                break
            if network.ordered(u, w):
                continue
            cuts -= 2
            best = max(best, min(network.at(u, late=[w]), network.at(w, late=[u])))
    return best


class _Network:
    """The cut network of a graph, built once; each bound sets the arcs of its op."""

    def __init__(self, graph: Graph):
        from ortools.graph.python.max_flow import SimpleMaxFlow

        from model_sched.recompute_exact import _ancestors, _descendants

        self.graph = graph
        n = len(graph.ops)
        index, sizes = graph.buffer_index, graph.sizes
        allowed = recomputable_ops(graph)
        relevant = [bi for bi, b in enumerate(graph.buffers) if not b.persistent and sizes[bi]]
        node = {bi: 2 + n + 2 * k for k, bi in enumerate(relevant)}  # in; out is in + 1
        self.inf = sum(sizes[bi] for bi in relevant) + 1
        self.anc = _ancestors(graph)
        desc = _descendants(self.anc)
        tails, heads, caps = [], [], []

        def arc(a: int, b: int, cap: int) -> int:
            tails.append(a)
            heads.append(b)
            caps.append(cap)
            return len(tails) - 1

        self.size_arc = {bi: arc(node[bi], node[bi] + 1, sizes[bi]) for bi in relevant}
        self.written_by: dict[int, list[int]] = {}  # op -> its arcs source -> in(b), opened at that op
        for bi in relevant:
            b_in, p = node[bi], graph.producer[bi]
            if p is None:
                arc(0, b_in, self.inf)
            elif graph.buffers[bi].output or p not in allowed:
                arc(2 + p, b_in, self.inf)
            else:
                # A rerun reads p's inputs; what p writes in place (batch norm's running
                # statistics, rerun without writes) its outputs do not depend on.
                inputs = {index[c] for c in graph.ops[p].inputs}
                for w in sorted(set().union(*(graph.writers[ci] for ci in inputs))):
                    if desc[p] >> w & 1:  # writes after p's first run
                        arc(2 + w, b_in, self.inf)
                        self.written_by.setdefault(w, []).append(arc(0, b_in, 0))
                for ci in sorted(inputs):
                    if ci in node:
                        arc(node[ci] + 1, b_in, self.inf)
            if graph.buffers[bi].output:
                arc(node[bi] + 1, 1, self.inf)
            for r in set(graph.users[bi]):
                arc(node[bi] + 1, 2 + r, self.inf)
        for u, preds in enumerate(graph.predecessors):
            for q in preds:
                arc(2 + u, 2 + q, self.inf)
        self.first_arc = [arc(0, 2 + q, 0) for q in range(n)]  # source -> op: ran before
        self.last_arc = np.array([arc(2 + q, 1, 0) for q in range(n)])  # op -> sink: runs after
        self.flow = SimpleMaxFlow()
        self.flow.add_arcs_with_capacity(np.array(tails), np.array(heads), np.array(caps, dtype=np.int64))

    def not_before(self, v: int) -> list[int]:
        """The ops that are not ancestors of ``v``."""
        return [u for u, ancestor in enumerate(_flags(self.anc[v], len(self.graph.ops))) if not ancestor]

    def ordered(self, u: int, w: int) -> bool:
        return bool(self.anc[u] >> w & 1 or self.anc[w] >> u & 1)

    def at(self, v: int, late=None) -> int:
        """The bound while ``v`` first runs, with the ops ``late`` (not ancestors of
        ``v``) first running after it."""
        g = self.graph
        index = g.buffer_index
        ws = {index[b] for b in g.ops[v].uses} | {index[b] for b in g.ops[v].outputs}
        ws_bytes = sum(g.sizes[bi] for bi in ws if not g.buffers[bi].persistent)
        opened = ([self.first_arc[q] for q in g.predecessors[v]] + [self.last_arc[v]]
                  + ([] if late is None else self.last_arc[late].tolist()) + self.written_by.get(v, []))
        alive = [bi for bi in ws if bi in self.size_arc]  # counted in ws_bytes: free to cut
        arcs = np.array(opened + [self.size_arc[bi] for bi in alive])
        self.flow.set_arcs_capacity(arcs, np.array([self.inf] * len(opened) + [0] * len(alive), dtype=np.int64))
        # Without an optimal flow (OR-Tools' overflow guard), the working set still holds.
        cut = self.flow.optimal_flow() if self.flow.solve(0, 1) == self.flow.OPTIMAL else 0
        self.flow.set_arcs_capacity(arcs, np.array([0] * len(opened) + [g.sizes[bi] for bi in alive],
                                                   dtype=np.int64))
        return g.persistent_bytes + ws_bytes + cut
