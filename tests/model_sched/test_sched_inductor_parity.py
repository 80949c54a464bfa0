"""``lpmf``, ``bfs`` and ``dfs`` give the orders of PyTorch Inductor's own functions.

``model_sched.testing_inductor`` runs ``torch._inductor.memory.topological_sort_lpmf``,
``_bfs`` and ``_dfs`` (after Inductor's ``prepare_planning_info``) on stand-in
scheduler nodes built from our graph. Every IR feature is mapped, so the properties
hold for all graphs: an in-place mutation is a use of the buffer (freed after its
last user, as Inductor frees a mutated buffer after the last use of any of its
aliases), and ``after`` edges and write-after-read hazards are fake ``WeakDep``\\ s
(they order ops without keeping buffers alive; Inductor's own hazard deps would
keep the readers' outputs alive until the write, which our memory model does not).
Each graph also checks the mapping: Inductor's memory estimate of program order is
our timeline less the persistent bytes and the graph inputs nobody reads.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model_ir.graph import Buffer, Graph, Op
from model_ir.testing.strategies import graphs
from model_sched import greedy
from model_sched.liveness import liveness, timeline

pytestmark = pytest.mark.needs("torch")

PORTS = {"lpmf": greedy.lpmf_order, "bfs": greedy.bfs_order, "dfs": greedy.dfs_order}


def check_parity(g: Graph) -> None:
    from model_sched.testing_inductor import inductor_order, inductor_timeline, inductor_view

    lv = liveness(g)
    view = inductor_view(g)
    program = list(range(lv.n_ops))
    freeable = sum(b.mpi_buffer.size_free for b in view.name_to_freeable_input_buf.values())
    shift = [lv.base_bytes - freeable - (lv.first_free_bytes if t else 0) for t in program]
    assert [a - s for a, s in zip(timeline(lv, program), shift)] == inductor_timeline(view, program)
    for method, port in PORTS.items():
        assert port(lv) == inductor_order(view, method), method


# Small sizes (0..3 bytes) make ties in size and freed bytes common, so tie-breaking is exercised.
@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.one_of(graphs(max_ops=14), graphs(min_ops=8, max_ops=30, max_size=3)))
def test_ports_give_inductors_orders_on_random_graphs(g):
    check_parity(g)


def test_lpmf_breaks_ties_among_ops_that_do_not_fit_by_bytes_left_after():
    # Nothing fits at the start (the peak so far is the 10-byte input); A and B allocate
    # 10 bytes each, B frees the input: Inductor runs B first although A comes first.
    g = Graph([Buffer("x", 10), Buffer("a", 10), Buffer("b", 10), Buffer("loss", 1, output=True)],
              [Op("A", outputs=["a"]), Op("B", inputs=["x"], outputs=["b"]),
               Op("C", inputs=["a", "b"], outputs=["loss"])])
    assert greedy.lpmf_order(liveness(g)) == [1, 0, 2]
    check_parity(g)


def test_bfs_runs_the_op_whose_earliest_input_is_oldest():
    # Q's inputs ran at steps 1 and 2, P's at 0 and 3: all steps ascending, P's (0, 3)
    # comes first although Q is earlier in program order and P has the latest input.
    ops = [Op(f"s{i}", outputs=[f"t{i}"]) for i in range(4)]
    ops += [Op("Q", inputs=["t1", "t2"], outputs=["q"]), Op("P", inputs=["t0", "t3"], outputs=["p"])]
    g = Graph([*(Buffer(f"t{i}", 1) for i in range(4)), Buffer("q", 1), Buffer("p", 1)], ops)
    assert greedy.bfs_order(liveness(g)) == [0, 1, 2, 3, 5, 4]
    check_parity(g)


@pytest.mark.needs("model_bench")
@pytest.mark.parametrize("name", ["tiny-mlp", "tiny-cnn", "gpt2-tiny"])
def test_ports_give_inductors_orders_on_captured_steps(name):
    from model_bench.pipeline import capture_model

    _, g = capture_model(name, "train", 2)
    check_parity(g)
