"""A third-party scheduler plugs in through the hook; edge cases of schedule()."""

import pytest

from model_ir.graph import Buffer, Graph
from model_ir.hookspecs import hookimpl
from model_ir.plugins import plugin_manager
from model_ir.simulator import simulate
from model_sched import schedule

from .conftest import layered_graph


class ReverseFriendly:
    """A toy third-party scheduler: offers the program order under its own name."""

    name = "third-party"
    help = "test plugin"

    def run(self, problem, control, solver=None) -> None:
        control.offer(list(range(problem.lv.n_ops)), self.name)


class Plugin:
    @hookimpl
    def model_opt_schedulers(self):
        return [ReverseFriendly()]


@pytest.fixture
def third_party():
    pm = plugin_manager()
    plugin = Plugin()
    pm.register(plugin)
    yield
    pm.unregister(plugin)


def test_third_party_scheduler_is_selectable_by_name(third_party):
    g = layered_graph(30, seed=4)
    r = schedule(g, method="third-party")
    assert r.source == "third-party" and r.peak_bytes == simulate(g).peak_bytes


def test_graph_without_ops():
    g = Graph([Buffer("w", 7, persistent=True)], [])
    r = schedule(g)
    assert r.order == () and r.peak_bytes == 7 == r.lower_bound_bytes and r.optimal


@pytest.mark.parametrize("solver", ["highs", pytest.param("cpsat", marks=pytest.mark.needs("ortools"))])
def test_lns_with_milp_windows(solver):
    g = layered_graph(60, width=6, seed=5)
    r = schedule(g, method="lns", solver=solver, time_limit=3)
    assert r.peak_bytes == simulate(g, r.order).peak_bytes
    assert r.peak_bytes <= min(v for k, v in r.candidates.items() if k in ("program", "lpmf", "bfs", "dfs"))


def test_zero_time_limit_still_returns_a_valid_order():
    g = layered_graph(200, seed=6)
    r = schedule(g, time_limit=0)
    assert r.peak_bytes == simulate(g, r.order).peak_bytes and r.seconds < 5


def test_whole_graph_milp_on_a_big_graph_is_a_clear_error():
    from model_sched.errors import SchedError

    with pytest.raises(SchedError, match="--method lns --solver NAME"):
        schedule(layered_graph(3000, seed=1), method="milp", time_limit=5)


@pytest.mark.parametrize("bad", [-1.0, float("nan")])
def test_bad_time_limit_is_a_clear_error(bad):
    from model_sched.errors import SchedError

    with pytest.raises(SchedError, match="time limit must be >= 0 seconds"):
        schedule(layered_graph(20, seed=1), time_limit=bad)


def test_infinite_time_limit_means_no_limit():
    g = layered_graph(40, seed=3)
    r = schedule(g, method="auto", time_limit=float("inf"))
    assert r.peak_bytes == simulate(g, r.order).peak_bytes and r.lower_bound_bytes <= r.peak_bytes
