"""The fast evaluators agree exactly with model_ir's simulator."""

import random

from hypothesis import HealthCheck, given, settings

from model_ir.simulator import simulate_indices
from model_ir.testing.strategies import graphs, topological_orders
from model_sched import greedy
from model_sched.liveness import liveness, peak, timeline
from model_sched.search import exact_search
from model_sched.windows import positions, window

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))


@SETTINGS
@given(graphs(max_ops=7))
def test_timeline_equals_simulator_on_every_order(g):
    lv = liveness(g)
    for order in topological_orders(g, limit=200):
        sim = simulate_indices(g, order)
        assert tuple(timeline(lv, order)) == sim.timeline
        assert peak(lv, order) == sim.peak_bytes


def test_empty_graph_peak_is_persistent_bytes():
    from model_ir.graph import Buffer, Graph

    # (a non-persistent graph input in an op-less graph makes model_ir's simulator index out of range)
    g = Graph([Buffer("w", 7, persistent=True)], [])
    assert peak(liveness(g), []) == simulate_indices(g, []).peak_bytes == 7


@SETTINGS
@given(graphs(min_ops=2, max_ops=14))
def test_window_problem_reproduces_the_window_of_the_timeline(g):
    """A window's sub-problem has the same timeline, and any of its orders splices back validly."""
    from model_ir.simulator import validate_order

    lv = liveness(g)
    order = greedy.lpmf_order(lv)
    full = timeline(lv, order)
    n = len(order)
    rnd = random.Random(n)
    step, last_use = positions(lv, order)
    for _ in range(3):
        lo = rnd.randrange(n)
        hi = rnd.randrange(lo + 1, n + 1)
        w = window(lv, order, lo, hi, step, last_use)
        assert timeline(w.lv, list(range(hi - lo))) == full[lo:hi]
        best = exact_search(w.lv)
        spliced = order[:lo] + [w.ops[i] for i in best.order] + order[hi:]
        validate_order(g, spliced)
        assert timeline(lv, spliced)[lo:hi] == timeline(w.lv, best.order)
        assert timeline(lv, spliced)[:lo] == full[:lo] and timeline(lv, spliced)[hi:] == full[hi:]
