"""The forced-liveness bound is valid, contains the working-set bound, and is tight where expected."""

from hypothesis import HealthCheck, given, settings

from model_ir.graph import Buffer, Graph, Op
from model_ir.simulator import working_set_bound
from model_ir.testing.strategies import graphs, topological_orders
from model_sched.bounds import forced_bound
from model_sched.liveness import liveness, peak

from .conftest import pairs_graph


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(graphs(max_ops=8))
def test_bound_is_below_every_order_and_above_working_set(g):
    lv = liveness(g)
    b = forced_bound(lv).bytes
    assert b >= working_set_bound(g)
    best = min(peak(lv, o) for o in topological_orders(g, limit=5000))
    assert b <= best


def test_pairs_bound_is_the_largest_pair():
    assert forced_bound(liveness(pairs_graph(8))).bytes == 80


def test_chain_bound_counts_saved_activation():
    # x -> a -> b -> c, and a is read again at the end: a is alive at every op between
    g = Graph([Buffer("a", 100), Buffer("b", 10), Buffer("c", 10), Buffer("d", 1, output=True)],
              [Op("A", outputs=["a"]), Op("B", inputs=["a"], outputs=["b"]), Op("C", inputs=["b"], outputs=["c"]),
               Op("D", inputs=["c", "a"], outputs=["d"])])
    fb = forced_bound(liveness(g))
    assert fb.per_op == (100, 110, 120, 111)
    assert fb.bytes == 120 == peak(liveness(g), [0, 1, 2, 3])
