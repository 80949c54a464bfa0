"""The exact methods themselves (without greedy shortcuts) against brute force."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model_ir.simulator import validate_order
from model_ir.testing.strategies import graphs, topological_orders
from model_sched import greedy
from model_sched.bounds import forced_bound
from model_sched.liveness import liveness, peak
from model_sched.milp import build_milp, order_from_solution, peak_bytes_of_units, solution_from_order
from model_sched.search import exact_search
from model_sched.solvers import CpSatBackend, GurobiBackend, HighsBackend

from .conftest import layered_graph, pairs_graph

#: Each MILP backend; those of an extra (cpsat, gurobi) are skipped when it is not installed.
BACKENDS = [HighsBackend(), pytest.param(CpSatBackend(), marks=pytest.mark.needs("ortools"), id="cpsat"),
            pytest.param(GurobiBackend(), marks=pytest.mark.needs("gurobipy"), id="gurobi")]


def brute_force(g):
    lv = liveness(g)
    return min(peak(lv, o) for o in topological_orders(g))


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(graphs(max_ops=8))
def test_search_equals_brute_force(g):
    lv = liveness(g)
    best = brute_force(g)
    out = exact_search(lv)
    assert out.complete and out.peak == best == out.bound
    validate_order(g, out.order)
    assert peak(lv, out.order) == best
    # warm-started from a heuristic: finds a better order or proves the heuristic optimal
    h = peak(lv, greedy.bfs_order(lv))
    out = exact_search(lv, upper=h, lower=forced_bound(lv).bytes)
    assert out.complete and out.bound == best
    assert (out.peak if out.order is not None else h) == best


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(graphs(max_ops=7))
def test_milp_equals_brute_force_and_warm_start_encodes_the_order(g):
    lv = liveness(g)
    best = brute_force(g)
    m = build_milp(lv)
    eager = list(range(len(g.ops)))
    hint = solution_from_order(m, lv, eager)
    assert peak_bytes_of_units(m, hint[m.peak_col]) == peak(lv, eager)
    res = HighsBackend().solve(m.program, time_limit=20, hint=hint)
    assert res.optimal
    order = order_from_solution(m, res.values)
    validate_order(g, order)
    assert peak(lv, order) == best == peak_bytes_of_units(m, res.bound)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_backends_on_eight_pairs(backend):
    """MODeL's time-step compression misses this optimum; one op per step does not."""
    lv = liveness(pairs_graph(8))
    m = build_milp(lv)
    res = backend.solve(m.program, time_limit=30)
    assert res.optimal
    assert peak(lv, order_from_solution(m, res.values)) == 80



@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_backends_prove_optimality_exactly_under_a_large_constant(backend):
    """A big buffer alive throughout makes the pairs' 280-byte saving a 0.003 % gap: a
    solver stopping at its default relative MIP gap (1e-4) would call the eager order
    optimal, and its objective would be no lower bound."""
    from model_ir.graph import Buffer, Graph

    big = 10**7 + 3
    base = pairs_graph(8)
    lv = liveness(Graph([*base.buffers, Buffer("big", big, output=True)], base.ops))
    m = build_milp(lv)
    res = backend.solve(m.program, time_limit=30, hint=solution_from_order(m, lv, list(range(lv.n_ops))))
    assert res.optimal
    assert peak(lv, order_from_solution(m, res.values)) == big + 80
    assert peak_bytes_of_units(m, res.bound) <= big + 80

def test_search_time_limit_returns_a_valid_bound():
    g = layered_graph(120, width=10, seed=1)
    lv = liveness(g)
    h = peak(lv, greedy.lpmf_order(lv))
    import time

    out = exact_search(lv, upper=h, lower=forced_bound(lv).bytes, deadline=time.perf_counter() + 0.3)
    assert forced_bound(lv).bytes <= out.bound <= h
    if out.order is not None:
        validate_order(g, out.order)
        assert peak(lv, out.order) == out.peak < h


@pytest.mark.needs("gurobipy")
def test_gurobi_size_limit_is_a_clear_error():
    from model_sched.errors import SolverUnavailableError
    from model_sched.milp import LinearProgram

    n = 2500
    program = LinearProgram((0.0,) * n, (1.0,) * n, (True,) * n, (1.0,) * n,
                            tuple(((j,), (1,)) for j in range(n)), (0.0,) * n, (1.0,) * n)
    try:
        res = GurobiBackend().solve(program, time_limit=5)
    except SolverUnavailableError as e:
        assert "licence" in str(e) and "--solver highs" in str(e)
    else:  # a full licence is installed
        assert res.optimal and res.objective == 0


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(graphs(min_ops=2, max_ops=12), st.data())
def test_milp_and_search_agree_on_window_problems(g, data):
    """Windows carry inputs, outputs and constants of their own (and, at the start of
    the order, unused graph inputs that are only bytes); both exact methods agree."""
    from model_sched.windows import positions, window

    lv = liveness(g)
    order = greedy.lpmf_order(lv)
    n = len(order)
    lo = data.draw(st.integers(0, n - 1))
    hi = data.draw(st.integers(lo + 1, n))
    step, last_use = positions(lv, order)
    w = window(lv, order, lo, hi, step, last_use)
    best = exact_search(w.lv)
    m = build_milp(w.lv)
    res = HighsBackend().solve(m.program, time_limit=20, hint=solution_from_order(m, w.lv, list(range(w.lv.n_ops))))
    assert res.optimal
    assert peak(w.lv, order_from_solution(m, res.values)) == best.peak == peak_bytes_of_units(m, res.bound)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_warm_started_backends_return_the_optimal_solution_not_the_start(backend):
    """Regression: HiGHS once reported objective 1 while returning the peak-2 start solution."""
    from model_ir.graph import Buffer, Graph, Op

    g = Graph([Buffer("b0_0", 1, output=True), Buffer("b1_0", 1), Buffer("b1_1", 0, output=True),
               Buffer("b1_2", 0, output=True)],
              [Op("op0", outputs=["b0_0"]), Op("op1", outputs=["b1_0", "b1_1", "b1_2"]),
               Op("op2", mutates=["b0_0"], after=["op0"]), Op("op3", after=["op1"]),
               Op("op4", mutates=["b1_1"], after=["op0"])])
    lv = liveness(g)
    m = build_milp(lv)
    res = backend.solve(m.program, time_limit=10, hint=solution_from_order(m, lv, [0, 1, 2, 3, 4]))
    assert res.optimal
    assert peak(lv, order_from_solution(m, res.values)) == 1 == peak_bytes_of_units(m, res.objective)
