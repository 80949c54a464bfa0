"""Hypothesis strategies for random valid graphs.

Generated graphs exercise every feature of the IR: graph inputs, persistent
buffers (weights) that are mutated in place (updates), multi-output ops, buffers
with several consumers, in-place mutation of activations, control dependencies
(``after``) and graph outputs. Ops are built in program order, so the result is
always valid; tests that need invalid graphs mutate a valid one.
"""

from __future__ import annotations

try:
    from hypothesis import strategies as st
except ImportError as e:
    raise ImportError("model_ir.testing.strategies needs Hypothesis, which is not installed: "
                      "pip install 'model-ir[testing]'", name=e.name) from e

from model_ir.graph import Buffer, Graph, Op


@st.composite
def graphs(
    draw,
    min_ops: int = 1,
    max_ops: int = 12,
    max_size: int = 100,
    allow_mutation: bool = True,
    allow_after: bool = True,
    max_outputs: int = 3,
) -> Graph:
    """A random valid :class:`Graph` with ``min_ops`` to ``max_ops`` ops."""
    n_ops = draw(st.integers(min_ops, max_ops))
    size = st.integers(0, max_size)
    buffers: list[Buffer] = []
    n_persistent = draw(st.integers(0, 2))
    n_inputs = draw(st.integers(0, 2))
    for i in range(n_persistent):
        buffers.append(Buffer(f"w{i}", draw(size), kind="parameter", persistent=True))
    for i in range(n_inputs):
        buffers.append(Buffer(f"x{i}", draw(size), kind="input"))
    available = [b.id for b in buffers]
    ops: list[Op] = []
    output_ids: set[str] = set()
    for k in range(n_ops):
        inputs = draw(st.lists(st.sampled_from(available), max_size=3, unique=True)) if available else []
        n_out = draw(st.integers(0 if k else 1, max_outputs))
        outs = [f"b{k}_{j}" for j in range(n_out)]
        mutates: list[str] = []
        if allow_mutation and available and draw(st.integers(0, 4)) == 0:
            mutates = [draw(st.sampled_from(available))]
        after: list[str] = []
        if allow_after and ops and draw(st.integers(0, 4)) == 0:
            after = [draw(st.sampled_from([o.id for o in ops]))]
        for o in outs:
            buffers.append(Buffer(o, draw(size), kind="activation"))
            if draw(st.integers(0, 7)) == 0:
                output_ids.add(o)
        ops.append(Op(f"op{k}", inputs=inputs, outputs=outs, mutates=mutates, after=after))
        available.extend(outs)
    buffers = [Buffer(b.id, b.size, kind=b.kind, persistent=b.persistent, output=b.id in output_ids)
               for b in buffers]
    return Graph(buffers, ops, name="random")


@st.composite
def graphs_with_unplaced(draw, max_ops: int = 9, max_size: int = 3000) -> tuple[Graph, frozenset[str]]:
    """``(graph, unplaced)``: a random graph and the fresh transient results (neither
    persistent nor step outputs) of a random subset of its ops, as an executor's
    fallbacks that PyTorch's allocator makes (``model_runtime.make_plan(unplaced=)``)."""
    graph = draw(graphs(min_ops=2, max_ops=max_ops, max_size=max_size))
    ops = draw(st.lists(st.sampled_from([op.id for op in graph.ops]), unique=True, max_size=len(graph.ops)))
    unplaced = frozenset(b for op in ops for b in graph.op(op).outputs
                         if not graph.buffer(b).output and not graph.buffer(b).persistent)
    return graph, unplaced


def topological_orders(graph: Graph, limit: int = 100_000):
    """Yield every valid order of op positions (at most ``limit``), for brute force checks."""
    n = len(graph.ops)
    indeg = [len(p) for p in graph.predecessors]
    order: list[int] = []
    count = 0

    def rec():
        nonlocal count
        if count >= limit:
            return
        if len(order) == n:
            count += 1
            yield list(order)
            return
        for i in range(n):
            if indeg[i] == 0 and i not in placed:
                placed.add(i)
                order.append(i)
                for s in graph.successors[i]:
                    indeg[s] -= 1
                yield from rec()
                for s in graph.successors[i]:
                    indeg[s] += 1
                order.pop()
                placed.discard(i)

    placed: set[int] = set()
    yield from rec()
