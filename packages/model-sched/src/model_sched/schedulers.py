"""The built-in schedulers, each a provider of the ``model_opt_schedulers`` hook.

A scheduler has a ``name``, a one-line ``help`` and ``run(problem, control, solver)``:
it offers orders (and bounds) to the :class:`~model_sched.control.SolveControl`,
which keeps the best. :func:`model_sched.api.schedule` validates the result.
"""

from __future__ import annotations

import time

import attrs

from model_ir.graph import Graph
from model_sched import greedy
from model_sched.bounds import ForcedBound
from model_sched.control import SolveControl
from model_sched.liveness import Liveness, peak
from model_sched.lns import improve_by_windows, milp_window_solver, search_window_solver
from model_sched.milp import build_milp, order_from_solution, peak_bytes_of_units, solution_from_order
from model_sched.search import exact_search

#: Graphs up to this many ops are first attacked by exact search over the whole graph
#: (README: measured on random graphs; larger ones go to windowed re-optimisation).
WHOLE_GRAPH_SEARCH_OPS = 60
#: Share of the time limit ``auto`` gives whole-graph search before switching to windows.
WHOLE_GRAPH_SEARCH_SHARE = 0.5


@attrs.frozen
class Problem:
    """A graph with its memory-model arrays and forced-liveness bound."""

    graph: Graph
    lv: Liveness
    forced: ForcedBound


class _Heuristic:
    def __init__(self, name: str, fn, help: str):
        self.name, self._fn, self.help = name, fn, help

    def run(self, problem: Problem, control: SolveControl, solver=None) -> None:
        control.offer(self._fn(problem.lv), self.name)


PROGRAM = _Heuristic("program", greedy.program_order, "eager program order (what PyTorch runs)")
LPMF = _Heuristic("lpmf", greedy.lpmf_order, "least-peak-memory-first greedy (PyTorch inductor)")
BFS = _Heuristic("bfs", greedy.bfs_order, "BFS by input age (PyTorch inductor)")
DFS = _Heuristic("dfs", greedy.dfs_order, "DFS by size (PyTorch inductor)")
HEURISTICS = (PROGRAM, LPMF, BFS, DFS)


def run_greedy(problem: Problem, control: SolveControl) -> None:
    """Offer every baseline; the control keeps the best."""
    for h in HEURISTICS:
        h.run(problem, control)


class Greedy:
    name = "greedy"
    help = "best of program order, LPMF, BFS and DFS"

    def run(self, problem, control, solver=None) -> None:
        run_greedy(problem, control)


def run_search(problem: Problem, control: SolveControl, deadline: float | None) -> bool:
    """Exact search over the whole graph, warm-started; True if it proved optimality."""
    out = exact_search(problem.lv, upper=control.best_peak, lower=control.bound, deadline=deadline)
    if out.order is not None:
        control.offer(out.order, "search")
    control.raise_bound(out.bound, "search")
    return out.complete


class Search:
    name = "search"
    help = "exact best-first search over all topological orders (small graphs)"

    def run(self, problem, control, solver=None) -> None:
        run_greedy(problem, control)
        if not control.solved:
            run_search(problem, control, control.deadline)


def run_milp(problem: Problem, control: SolveControl, backend) -> None:
    """Whole-graph MILP with ``backend``, warm-started from the incumbent."""
    lv = problem.lv
    m = build_milp(lv)
    hint = solution_from_order(m, lv, control.best_order)
    res = backend.solve(m.program, time_limit=control.remaining(), hint=hint)
    if res.values is not None:
        order = order_from_solution(m, res.values)
        control.offer(order, f"milp-{backend.name}")
    if res.bound > 0:
        control.raise_bound(peak_bytes_of_units(m, res.bound), f"milp-{backend.name}")


class Milp:
    name = "milp"
    help = "whole-graph MILP (one op per step) with a solver backend"
    needs_solver = True

    def run(self, problem, control, solver=None) -> None:
        run_greedy(problem, control)
        if not control.solved:
            run_milp(problem, control, solver)


class Lns:
    name = "lns"
    help = "windowed re-optimisation around the peak (large graphs)"

    def run(self, problem, control, solver=None) -> None:
        run_greedy(problem, control)
        if not control.solved:
            improve_by_windows(problem.lv, control, _window_solver(solver))


def _window_solver(solver):
    return search_window_solver() if solver is None else milp_window_solver(solver)


class Auto:
    name = "auto"
    help = "bound, greedy baselines, then exact search (small graphs) or windowed re-optimisation"

    def run(self, problem, control, solver=None) -> None:
        run_greedy(problem, control)
        if control.solved:
            return
        n = problem.lv.n_ops
        if n <= WHOLE_GRAPH_SEARCH_OPS:
            remaining = control.remaining()
            deadline = None if remaining is None else time.perf_counter() + remaining * WHOLE_GRAPH_SEARCH_SHARE
            if run_search(problem, control, deadline) or control.expired():
                return
        improve_by_windows(problem.lv, control, _window_solver(solver))


BUILTIN_SCHEDULERS = (PROGRAM, LPMF, BFS, DFS, Greedy(), Search(), Milp(), Lns(), Auto())
