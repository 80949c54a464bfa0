"""A solver backend's answer to the ``milp`` scheduler is checked before it is used: a
wrong one is the backend's invalid answer, naming its plugin (exit status 4), never a
traceback nor the built-in scheduler's fault."""

from __future__ import annotations

import math

import pytest

from model_ir.errors import PluginFailedError
from model_ir.hookspecs import hookimpl
from model_ir.plugins import plugin_manager
from model_ir.simulator import simulate
from model_sched import schedule
from model_sched.errors import SchedError
from model_sched.liveness import liveness, peak
from model_sched.milp import build_milp, solution_from_order
from model_sched.solvers import HighsBackend, SolveOutcome

from .conftest import layered_graph

# The baselines do not prove this graph's best order optimal: the milp scheduler asks its solver.
G = layered_graph(40, width=6, seed=5)


def objective(program, values):
    return sum(c * x for c, x in zip(program.objective, values))


def reverse_order_values(program, hint):
    """Values of the whole-graph model of ``G`` encoding its ops in reverse (not topological)."""
    lv = liveness(G)
    m = build_milp(lv)
    assert m.program == program
    return solution_from_order(m, lv, list(reversed(range(lv.n_ops))))


def program_order_values(program, hint):
    lv = liveness(G)
    m = build_milp(lv)
    return solution_from_order(m, lv, list(range(lv.n_ops)))


ANSWERS = {
    "test-dict": lambda p, h: {"values": h, "bound": 0.0},
    "test-none": lambda p, h: None,
    "test-huge-bound": lambda p, h: SolveOutcome(tuple(h), objective(p, h), 1e12, False),
    "test-nan-bound": lambda p, h: SolveOutcome(None, None, math.nan, False),
    "test-inf-bound": lambda p, h: SolveOutcome(None, None, math.inf, False),
    "test-text-bound": lambda p, h: SolveOutcome(None, None, "0", False),
    "test-short-values": lambda p, h: SolveOutcome(tuple(h[:-1]), objective(p, h), 0.0, False),
    "test-dict-values": lambda p, h: SolveOutcome(dict(enumerate(h)), objective(p, h), 0.0, False),
    "test-nan-value": lambda p, h: SolveOutcome((math.nan, *h[1:]), objective(p, h), 0.0, False),
    "test-inf-objective": lambda p, h: SolveOutcome(tuple(h), math.inf, 0.0, False),
    "test-bound-above-objective": lambda p, h: SolveOutcome(tuple(h), objective(p, h) - 2, objective(p, h) - 1,
                                                            False),
    "test-not-topological": lambda p, h: SolveOutcome(tuple(reverse_order_values(p, h)), None, 0.0, False),
    # program order's values with its own objective as the bound ("optimal"), yet the
    # baselines found a better order: the bound cannot hold
    "test-bound-above-incumbent": lambda p, h: SolveOutcome(
        tuple(v := program_order_values(p, h)), objective(p, v), objective(p, v), True),
}


class FakeSolver:
    def __init__(self, name, answer):
        self.name, self.answer, self.calls = name, answer, 0

    def available(self) -> None:
        pass

    def solve(self, program, *, time_limit=None, hint=None):
        self.calls += 1
        return self.answer(program, list(hint))


class GoodSolver:
    """A third-party backend that hands the model to HiGHS."""

    name = "test-good"

    def available(self) -> None:
        pass

    def solve(self, program, *, time_limit=None, hint=None):
        return HighsBackend().solve(program, time_limit=time_limit, hint=hint)


SOLVERS = {name: FakeSolver(name, answer) for name, answer in ANSWERS.items()}


class Plugin:
    @hookimpl
    def model_opt_solvers(self):
        return [*SOLVERS.values(), GoodSolver()]


@pytest.fixture
def solvers():
    pm = plugin_manager()
    plugin = Plugin()
    pm.register(plugin)
    yield
    pm.unregister(plugin)


def test_the_fixture_graph_needs_the_solver():
    lv = liveness(G)
    r = schedule(G, method="greedy")
    assert r.lower_bound_bytes < r.peak_bytes < peak(lv, list(range(lv.n_ops)))


def test_a_sound_third_party_solver_is_used(solvers):
    r = schedule(G, method="milp", solver="test-good", time_limit=2)
    assert r.peak_bytes == simulate(G, r.order).peak_bytes and r.lower_bound_bytes <= r.peak_bytes
    assert "milp-test-good" in r.candidates


@pytest.mark.parametrize("name, message", [
    ("test-dict", "solve returned a dict, not a SolveOutcome"),
    ("test-none", "solve returned a NoneType, not a SolveOutcome"),
    ("test-huge-bound", r"its bound 1000000000000.0 exceeds the objective of its values"),
    ("test-nan-bound", "its bound must be a number below infinity .* got nan"),
    ("test-inf-bound", "its bound must be a number below infinity .* got inf"),
    ("test-text-bound", "its bound must be a number below infinity .* got '0'"),
    ("test-short-values", r"it returned \d+ values for a program of \d+ columns"),
    ("test-dict-values", "its values must be a sequence of numbers or None, got a dict"),
    ("test-nan-value", "its value of column 0 is nan, not a finite number"),
    ("test-inf-objective", "its objective must be a finite number or None, got inf"),
    ("test-bound-above-objective", r"its bound \d+\.0 exceeds the objective it reported, \d+"),
    ("test-not-topological", "its values run op .* before op .*, which it depends on"),
    ("test-bound-above-incumbent", r"its bound .* B\) exceeds the peak \d+ B of the order from "),
])
def test_an_invalid_answer_names_the_solver_plugin(solvers, name, message):
    with pytest.raises(PluginFailedError, match=rf"plugin Plugin .* failed: solver '{name}' gave an invalid "
                                                rf"answer: {message}") as caught:
        schedule(G, method="milp", solver=name, time_limit=5)
    assert caught.value.exit_code == 4
    assert SOLVERS[name].calls >= 1
    assert "scheduler 'milp'" not in str(caught.value)


def test_the_command_exits_4_naming_the_solver(solvers, tmp_path, capsys):
    from model_ir import save_graph
    from model_ir.cli import main

    src = tmp_path / "g.json"
    save_graph(G, src)
    assert main(["schedule", str(src), "--method", "milp", "--solver", "test-dict", "--time-limit", "5"]) == 4
    err = capsys.readouterr().err
    assert "solver 'test-dict' gave an invalid answer" in err and "Traceback" not in err


def test_a_builtin_backends_invalid_answer_names_it_with_its_own_status(monkeypatch):
    def solve(self, program, *, time_limit=None, hint=None):
        return SolveOutcome(tuple(hint), objective(program, hint), 1e12, False)

    monkeypatch.setattr(HighsBackend, "solve", solve)
    with pytest.raises(SchedError, match="solver 'highs' gave an invalid answer: its bound") as caught:
        schedule(G, method="milp", solver="highs", time_limit=5)
    assert not isinstance(caught.value, PluginFailedError) and caught.value.exit_code == 2


@pytest.mark.parametrize("name, message", [("test-dict", "solve returned a dict, not a SolveOutcome"),
                                           ("test-nan-value", "its value of column 0 is nan")])
def test_a_window_solver_s_invalid_answer_names_it_too(solvers, name, message):
    """lns solves windows of the order with the backend: its answers are checked as milp's."""
    with pytest.raises(PluginFailedError, match=rf"solver '{name}' gave an invalid answer: {message}"):
        schedule(G, method="lns", solver=name, time_limit=5)
