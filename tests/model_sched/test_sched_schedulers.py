"""Every registered scheduler returns a valid order whose reported figures are the simulator's."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model_ir import Buffer, Graph, Op
from model_ir.plugins import providers
from model_ir.simulator import simulate
from model_ir.testing.strategies import graphs, topological_orders
from model_sched import schedule, scheduler_names
from model_sched.errors import SchedError
from model_sched.liveness import liveness, peak
from model_ir.errors import PluginError

from .conftest import diamond_graph, pairs_graph

ALL = ["program", "optimizer-in-backward", "lpmf", "bfs", "dfs", "greedy", "search", "milp", "lns", "auto"]


def test_builtin_schedulers_and_solvers_are_registered():
    assert set(ALL) <= set(scheduler_names())
    assert {"highs", "cpsat", "gurobi"} <= set(providers("model_opt_solvers"))


def check(g, r):
    sim = simulate(g, r.order)  # validates the order against every dependency and hazard
    assert r.peak_bytes == sim.peak_bytes
    assert r.transient_peak_bytes == sim.transient_peak_bytes
    assert r.eager_peak_bytes == simulate(g, eager=True).peak_bytes
    assert r.lower_bound_bytes <= r.peak_bytes
    assert r.optimal == (r.peak_bytes == r.lower_bound_bytes)
    assert r.gap == pytest.approx((r.peak_bytes - r.lower_bound_bytes) / r.peak_bytes if r.peak_bytes else 0)


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(graphs(max_ops=9))
def test_every_scheduler_valid_and_exact_never_worse(g):
    results = {m: schedule(g, method=m, time_limit=5) for m in ALL}
    for r in results.values():
        check(g, r)
    limit = 20000
    orders = list(topological_orders(g, limit=limit))
    best = min(peak(liveness(g), o) for o in orders)
    complete = len(orders) < limit  # a 9-op graph may have up to 9! orders: then brute force is a sample
    heuristic = min(results[m].peak_bytes for m in ("program", "optimizer-in-backward", "lpmf", "bfs", "dfs"))
    assert results["greedy"].peak_bytes == heuristic
    for m in ("search", "milp", "auto"):
        if complete:
            assert results[m].peak_bytes == best  # small graphs: exact methods equal brute force
            assert results[m].lower_bound_bytes == best
        else:
            assert results[m].peak_bytes <= best
        assert results[m].optimal
    for m in ("search", "milp", "auto", "lns"):
        assert results[m].peak_bytes <= heuristic
        assert results[m].lower_bound_bytes <= results["search"].peak_bytes


@pytest.mark.parametrize("method", ALL)
def test_independent_pairs(method):
    g = pairs_graph(8)
    r = schedule(g, method=method, time_limit=5)
    check(g, r)
    assert r.eager_peak_bytes == sum(10 * (i + 1) for i in range(8))
    if method not in ("program", "optimizer-in-backward", "bfs"):
        assert r.peak_bytes == 80 and r.optimal  # the single largest pair


@pytest.mark.parametrize("method", ["search", "milp", "auto"])
def test_diamond_runs_the_big_branch_first(method):
    g = diamond_graph()
    r = schedule(g, method=method, time_limit=5)
    check(g, r)
    # B,B2 first frees b (100) before c2 (60) is built: peak is a + b + x-free = 8+100+4
    assert r.peak_bytes == 112 and r.optimal
    assert r.order.index("B2") < r.order.index("C2")


def test_in_place_updates_and_control_dependencies_are_respected():
    from model_ir.graph import Buffer, Graph, Op

    g = Graph(
        [Buffer("w", 50, persistent=True), Buffer("a", 40), Buffer("g", 30), Buffer("b", 30), Buffer("o", 1, output=True)],
        [Op("fwd", inputs=["w"], outputs=["a"]),
         Op("big", outputs=["b"]),
         Op("bwd", inputs=["a"], outputs=["g"]),
         Op("upd", inputs=["g"], mutates=["w"]),  # must follow fwd's read of w
         Op("use", inputs=["b", "w"], outputs=["o"], after=["bwd"])],  # reads the updated w
    )
    for m in ALL:
        r = schedule(g, method=m, time_limit=5)
        check(g, r)
        assert r.order.index("upd") < r.order.index("use")  # read-after-write hazard
        assert r.order.index("bwd") < r.order.index("use")  # control dependency
    assert schedule(g, method="auto").peak_bytes == min(
        peak(liveness(g), o) for o in topological_orders(g))


def test_unknown_method_and_negative_time_limit_are_clear_errors():
    with pytest.raises(PluginError, match="unknown scheduler 'nope'; available: auto"):
        schedule(pairs_graph(2), method="nope")
    with pytest.raises(PluginError, match="unknown solver 'nope'"):
        schedule(pairs_graph(2), solver="nope")
    with pytest.raises(SchedError, match="time limit"):
        schedule(pairs_graph(2), time_limit=-1)


@pytest.mark.parametrize("solver", ["highs", pytest.param("cpsat", marks=pytest.mark.needs("ortools")),
                                    pytest.param("gurobi", marks=pytest.mark.needs("gurobipy"))])
def test_milp_backends_agree_with_brute_force(solver):
    from .conftest import layered_graph

    g = layered_graph(9, width=3, seed=3)
    best = min(peak(liveness(g), o) for o in topological_orders(g))
    r = schedule(g, method="milp", solver=solver, time_limit=20)
    check(g, r)
    assert r.peak_bytes == best and r.optimal


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(graphs(max_ops=12), st.data())
def test_optimizer_in_backward_moves_only_updates_and_each_as_early_as_it_can(g, data):
    from model_sched.greedy import optimizer_in_backward_order

    lv = liveness(g)
    updates = data.draw(st.lists(st.booleans(), min_size=lv.n_ops, max_size=lv.n_ops))
    order = optimizer_in_backward_order(lv, updates)
    simulate(g, [g.ops[v].id for v in order])  # a valid order
    assert [v for v in order if not updates[v]] == [v for v in range(lv.n_ops) if not updates[v]]
    position = {v: t for t, v in enumerate(order)}
    for t, v in enumerate(order):
        if updates[v]:
            ready_at = max((position[p] for p in lv.preds[v]), default=-1)
            assert all(updates[u] for u in order[ready_at + 1:t])  # nothing but updates ran in between


def test_the_eager_peak_is_eager_pytorch_s():
    """A tensor Python holds until h runs (``released_after``) is alive beside b: eager
    peaks at 120 B where freeing at the last use peaks at 110 B. The schedule's eager
    figure, and so its saving, is the eager one, as model-bench's (it said 110 B, 0 saved)."""
    g = Graph([Buffer("x", 10), Buffer("a", 100, meta={"released_after": "h"}), Buffer("b", 10),
               Buffer("c", 10, output=True)],
              [Op("f", inputs=["x"], outputs=["a"]), Op("g", inputs=["a"], outputs=["b"]),
               Op("h", inputs=["b"], outputs=["c"])])
    r = schedule(g, time_limit=2)
    assert (r.eager_peak_bytes, r.peak_bytes, r.saving_bytes) == (120, 110, 10)
