"""Run PyTorch Inductor's own memory-aware topological sorts on a :class:`Graph`.

``torch._inductor.memory`` orders scheduler nodes with ``topological_sort_lpmf``,
``topological_sort_bfs`` and ``topological_sort_dfs``. This module builds the few
attributes those functions (and ``prepare_planning_info``, which fills in their
size and predecessor/successor info) read, from a graph of ours, and runs the real
functions: the reference that ``model_sched.greedy``'s ports are tested against.
Needs torch; only tests and benchmark scripts import it.

How a graph is mapped (the graph Inductor would see with the same memory model):

* each op is a scheduler node, in program order (Inductor's ``mpi_node.index``);
* each buffer an op allocates is one of the node's output buffers (``uint8``, numel
  = size in bytes); an op that allocates nothing gets one 0-byte buffer, as an
  Inductor node that only mutates owns a ``NoneLayout`` buffer;
* every buffer an op uses (reads or mutates) is in ``read_writes.reads``; a produced
  one is also a ``StarDep`` in ``unmet_dependencies``, which makes it a predecessor
  buffer whose last user frees it;
* non-persistent graph inputs are freeable input buffers (alive from the start,
  freed after their last use); persistent buffers are non-freeable inputs, named
  ``primals_*`` as Inductor names parameters;
* ``output`` buffers are the graph outputs;
* the edges that are not data (``after``, and the hazards that order an in-place
  write after earlier readers) are fake ``WeakDep``\\ s on an output of the earlier
  op: Inductor orders by them and does not extend lifetimes for them, as our model.
  (For a mutation Inductor itself adds a non-fake ``WeakDep`` on the readers'
  outputs, which keeps those alive until the write; our memory model does not, so
  the equivalent graph uses fake ones.) A mutation is an ordinary use of the buffer
  here rather than Inductor's rename to a 0-byte alias: both free it after its last
  use by any op.

Inductor's memory timeline of an order is then ours less the persistent bytes, the
graph inputs no op uses, and nothing else (:func:`inductor_timeline`).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from types import SimpleNamespace

import attrs

from model_ir.graph import Graph

#: Inductor's sorts, by the names of our ports.
METHODS = ("lpmf", "bfs", "dfs")


class _Layout:
    """A plain layout (neither ``NoneLayout`` nor ``MultiOutputLayout``)."""


class _IRBuffer:
    def __init__(self, size: int) -> None:
        self.layout = _Layout()
        self._size = size

    def get_numel(self) -> int:
        return self._size

    def get_dtype(self):
        import torch

        return torch.uint8


class _SchedulerBuffer:
    def __init__(self, name: str, size: int) -> None:
        self.name = name
        self.node = _IRBuffer(size)
        self.users: list = []
        self.mpi_buffer = None

    def get_name(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"SchedulerBuffer({self.name})"


class _SchedulerNode:
    def __init__(self, name: str, index: int) -> None:
        self.name = name
        self.index = index  # position in our graph (program order)
        self.outputs: list[_SchedulerBuffer] = []
        self.unmet_dependencies: set = set()
        self.read_writes = SimpleNamespace(reads=set(), writes=set())
        self.mpi_node = None

    def get_name(self) -> str:
        return self.name

    def get_outputs(self) -> list[_SchedulerBuffer]:
        return self.outputs

    def get_buffer_names(self) -> list[str]:
        return [b.name for b in self.outputs]

    def __repr__(self) -> str:
        return f"SchedulerNode({self.name})"


class _Sizevars:
    @staticmethod
    def optimization_hint(expr, fallback: int = 0) -> int:
        return int(expr)


class _GraphLowering:
    """The parts of ``V.graph`` that the planning functions read."""

    name = ""

    def __init__(self, sizes: dict[str, int]) -> None:
        self.sizes = sizes
        self.sizevars = _Sizevars()
        self.scheduler = SimpleNamespace(mutation_real_name={})

    def get_dep_size_hint(self, dep) -> int:
        return self.sizes[dep.name]


@attrs.frozen
class InductorView:
    """A graph as Inductor's memory planner sees it, planning info filled in."""

    nodes: list
    name_to_buf: dict
    name_to_freeable_input_buf: dict
    graph_inputs: object  # OrderedSet[str]
    graph_outputs: object  # OrderedSet[str]
    fake_graph: _GraphLowering
    estimated_peak_bytes: int  # Inductor's estimate for program order


def _buffer_name(graph: Graph, i: int) -> str:
    return f"primals_{i}" if graph.buffers[i].persistent else f"buf{i}"


def inductor_view(graph: Graph) -> InductorView:
    """Build Inductor's stand-in scheduler nodes for ``graph`` and run Inductor's
    ``prepare_planning_info`` on them (see the module docstring for the mapping)."""
    from torch._inductor.dependencies import StarDep, WeakDep
    from torch._inductor.memory import prepare_planning_info
    from torch._inductor.virtualized import V
    from torch.utils._ordered_set import OrderedSet

    bidx = graph.buffer_index
    names = [_buffer_name(graph, i) for i in range(len(graph.buffers))]
    sizes = {names[i]: b.size for i, b in enumerate(graph.buffers)}
    nodes = [_SchedulerNode(f"op{j}", j) for j in range(len(graph.ops))]
    name_to_buf: dict[str, _SchedulerBuffer] = {}
    for j, op in enumerate(graph.ops):
        for b in op.outputs:
            nodes[j].outputs.append(_SchedulerBuffer(names[bidx[b]], graph.buffers[bidx[b]].size))
        if not op.outputs:
            handle = f"op{j}_none"
            sizes[handle] = 0
            nodes[j].outputs.append(_SchedulerBuffer(handle, 0))
        for buf in nodes[j].outputs:
            name_to_buf[buf.name] = buf
    producer = graph.producer
    for j, op in enumerate(graph.ops):
        node = nodes[j]
        data_preds = set()
        for b in op.uses:
            i = bidx[b]
            node.read_writes.reads.add(StarDep(names[i]))
            if producer[i] is not None:
                node.unmet_dependencies.add(StarDep(names[i]))
                data_preds.add(producer[i])
        for p in graph.predecessors[j]:
            if p not in data_preds:
                node.unmet_dependencies.add(WeakDep(nodes[p].outputs[0].name, node.name, is_fake=True))
    graph_inputs = OrderedSet(names[i] for i, p in enumerate(producer) if p is None)
    graph_outputs = OrderedSet(names[i] for i, b in enumerate(graph.buffers) if b.output)
    fake = _GraphLowering(sizes)
    with V.set_graph_handler(fake):
        estimated, freeable = prepare_planning_info(nodes, name_to_buf, {}, graph_inputs, graph_outputs)
    return InductorView(nodes, name_to_buf, freeable, graph_inputs, graph_outputs, fake, estimated)


def inductor_order(view: InductorView | Graph, method: str) -> list[int]:
    """The order (op positions) Inductor's ``topological_sort_<method>`` gives."""
    from torch._inductor import memory
    from torch._inductor.virtualized import V

    if isinstance(view, Graph):
        view = inductor_view(view)
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    # Inductor's DFS recurses once per op along a chain of predecessors.
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 4 * len(view.nodes) + 1000))
    try:
        with V.set_graph_handler(view.fake_graph):
            if method == "lpmf":
                nodes = memory.topological_sort_lpmf(view.nodes, view.name_to_freeable_input_buf,
                                                     view.name_to_buf, view.graph_outputs)
            elif method == "bfs":
                nodes = memory.topological_sort_bfs(view.nodes)
            else:
                nodes = memory.topological_sort_dfs(view.nodes)
    finally:
        sys.setrecursionlimit(limit)
    return [n.index for n in nodes]


def inductor_timeline(view: InductorView, order: Sequence[int]) -> list[int]:
    """Inductor's live bytes while each op of ``order`` runs (``estimate_peak_memory``)."""
    from torch._inductor.memory import estimate_peak_memory
    from torch._inductor.virtualized import V

    with V.set_graph_handler(view.fake_graph):
        _, at = estimate_peak_memory([view.nodes[v] for v in order], view.name_to_freeable_input_buf,
                                     view.graph_outputs)
    return at[:len(order)]


def compare(graph: Graph) -> dict[str, dict[str, object]]:
    """For each method, whether our port's order equals Inductor's, both peaks (bytes,
    our memory model) and both run times (seconds)."""
    from model_sched import greedy
    from model_sched.liveness import liveness, peak

    ports = {"lpmf": greedy.lpmf_order, "bfs": greedy.bfs_order, "dfs": greedy.dfs_order}
    lv = liveness(graph)
    view = inductor_view(graph)
    out: dict[str, dict[str, object]] = {}
    for method, port in ports.items():
        t0 = time.perf_counter()
        ours = port(lv)
        t1 = time.perf_counter()
        theirs = inductor_order(view, method)
        t2 = time.perf_counter()
        out[method] = {"same": ours == theirs, "peak": peak(lv, ours), "inductor_peak": peak(lv, theirs),
                       "seconds": t1 - t0, "inductor_seconds": t2 - t1}
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m model_sched.testing_inductor GRAPH.json...``: one line per graph
    saying, for lpmf, bfs and dfs, whether our order is Inductor's; then the totals."""
    from model_ir import load_graph

    paths = list(sys.argv[1:] if argv is None else argv)
    if not paths:
        print("usage: python -m model_sched.testing_inductor GRAPH.json...", file=sys.stderr)
        return 2
    same = dict.fromkeys(METHODS, 0)
    for path in paths:
        graph = load_graph(path)
        result = compare(graph)
        cells = []
        for method in METHODS:
            r = result[method]
            same[method] += bool(r["same"])
            cells.append(f"{method} {'same' if r['same'] else 'DIFFERS'} ({r['seconds']:.3f} s vs "
                         f"{r['inductor_seconds']:.3f} s)")
        print(f"{graph.name} ({len(graph.ops)} ops): " + ", ".join(cells), flush=True)
    print("same order: " + ", ".join(f"{m} {same[m]}/{len(paths)}" for m in METHODS))
    return 0 if all(v == len(paths) for v in same.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
