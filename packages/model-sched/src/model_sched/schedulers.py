"""The built-in schedulers, each a provider of the ``model_opt_schedulers`` hook.

A scheduler has a ``name``, a one-line ``help`` and ``run(problem, control, solver)``:
it offers orders (and bounds) to the :class:`~model_sched.control.SolveControl`,
which keeps the best. :func:`model_sched.api.schedule` validates the result.
"""

from __future__ import annotations

import time
from functools import cached_property

import attrs

from model_ir.graph import Graph
from model_sched import greedy
from model_sched.bounds import ForcedBound, ancestor_masks, descendant_masks
from model_sched.cut_bound import raise_bound_by_cuts
from model_sched.control import SolveControl
from model_sched.liveness import Liveness, timeline
from model_sched.lns import improve_by_windows, milp_window_solver, search_window_solver
from model_sched.milp import build_milp, order_from_solution, peak_bytes_of_units, solution_from_order
from model_sched.search import exact_search

#: Share of the time limit ``auto`` gives windowed re-optimisation before exact search.
LNS_FIRST_SHARE = 0.2
#: Share of the remaining time ``auto`` gives each round of cut bounds.
CUT_SHARE = 0.1
#: Memory the exact search may use for its table of states (bytes, estimated).
SEARCH_MEMORY_BYTES = 1 << 30


def search_state_cap(n_ops: int) -> int:
    """How many states fit :data:`SEARCH_MEMORY_BYTES`: two n-bit sets per state plus about
    500 bytes of dict, tuple and heap overhead (measured with tracemalloc, rounded up)."""
    return max(10_000, SEARCH_MEMORY_BYTES // (n_ops // 4 + 500))


@attrs.frozen(slots=False)
class Problem:
    """A graph with its memory-model arrays and forced-liveness bound."""

    graph: Graph
    lv: Liveness
    forced: ForcedBound

    @cached_property
    def masks(self) -> tuple[list[int], list[int]]:
        """Strict ancestor and descendant bitsets of every op."""
        return ancestor_masks(self.lv), descendant_masks(self.lv)


class _Heuristic:
    def __init__(self, name: str, fn, help: str):
        self.name, self._fn, self.help = name, fn, help

    def run(self, problem: Problem, control: SolveControl, solver=None) -> None:
        control.offer(self._fn(problem.lv), self.name)


PROGRAM = _Heuristic("program", greedy.program_order, "eager program order (what PyTorch runs)")
LPMF = _Heuristic("lpmf", greedy.lpmf_order, "least-peak-memory-first greedy (PyTorch inductor)")
BFS = _Heuristic("bfs", greedy.bfs_order, "BFS by input age (PyTorch inductor)")
DFS = _Heuristic("dfs", greedy.dfs_order, "DFS by size (PyTorch inductor)")


class _OptimizerInBackward:
    name = "optimizer-in-backward"
    help = "eager order with each parameter's update right after its gradient (PyTorch's recipe)"

    def run(self, problem: Problem, control: SolveControl, solver=None) -> None:
        updates = greedy.optimizer_ops(problem.graph)
        control.offer(greedy.optimizer_in_backward_order(problem.lv, updates), self.name)


OPTIMIZER_IN_BACKWARD = _OptimizerInBackward()
HEURISTICS = (PROGRAM, OPTIMIZER_IN_BACKWARD, LPMF, BFS, DFS)


def run_greedy(problem: Problem, control: SolveControl) -> None:
    """Offer every baseline; the control keeps the best."""
    for h in HEURISTICS:
        h.run(problem, control)


class Greedy:
    name = "greedy"
    help = "best of program order, optimizer-in-backward, LPMF, BFS and DFS"

    def run(self, problem, control, solver=None) -> None:
        run_greedy(problem, control)


def run_search(problem: Problem, control: SolveControl, deadline: float | None,
               max_states: int | None = None) -> bool:
    """Exact search over the whole graph, warm-started; True if it proved optimality."""
    def heartbeat(bound: int, states: int) -> None:
        control.raise_bound(bound, "search")
        control.report(f"search ({states} states)")

    out = exact_search(problem.lv, upper=control.best_peak, lower=control.bound, deadline=deadline,
                       max_states=max_states or search_state_cap(problem.lv.n_ops), on_progress=heartbeat)
    if out.order is not None:
        control.offer(out.order, "search")
    control.raise_bound(out.bound, "search")
    return out.complete


def run_baselines(problem: Problem, control: SolveControl) -> bool:
    """Greedy orders, then cut bounds at the incumbent's peak ops; True if they prove it optimal."""
    run_greedy(problem, control)
    if not control.solved:
        run_cut_bounds(problem, control, CUT_SHARE, all_ops=False)
    return control.solved


class Search:
    name = "search"
    help = "exact best-first search over all topological orders (small graphs)"

    def run(self, problem, control, solver=None) -> None:
        if not run_baselines(problem, control):
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
        if not run_baselines(problem, control):
            run_milp(problem, control, solver)


class Lns:
    name = "lns"
    help = "windowed re-optimisation around the peak (large graphs)"

    def run(self, problem, control, solver=None) -> None:
        if not run_baselines(problem, control):
            improve_by_windows(problem.lv, control, _window_solver(solver))


def _window_solver(solver):
    return search_window_solver() if solver is None else milp_window_solver(solver)


def peak_ops(lv: Liveness, order: list[int]) -> list[int]:
    """The ops that run at the peak steps of ``order``."""
    tl = timeline(lv, order)
    top = max(tl, default=0)
    return [order[t] for t, x in enumerate(tl) if x == top]


def run_cut_bounds(problem: Problem, control: SolveControl, share: float, all_ops: bool) -> None:
    """Cut bounds at the incumbent's peak ops, then (``all_ops``) at the ops with the most
    forced bytes, within ``share`` of the remaining time."""
    lv, per_op = problem.lv, problem.forced.per_op
    remaining = control.remaining()
    deadline = None if remaining is None else time.perf_counter() + remaining * share
    ops = peak_ops(lv, control.best_order)
    if all_ops:
        ops += sorted(range(lv.n_ops), key=lambda v: -per_op[v])
    raise_bound_by_cuts(lv, control, per_op, ops, deadline, problem.masks)


class Auto:
    name = "auto"
    help = "bounds, greedy baselines, windowed re-optimisation, then exact search on the residual gap"

    def run(self, problem, control, solver=None) -> None:
        if run_baselines(problem, control) or control.expired():
            return
        # a short windowed pass first: a tighter incumbent prunes the exact search
        remaining = control.remaining()
        lns_deadline = None if remaining is None else time.perf_counter() + remaining * LNS_FIRST_SHARE
        improve_by_windows(problem.lv, control, _window_solver(solver), deadline=lns_deadline)
        if control.solved or control.expired():
            return
        run_cut_bounds(problem, control, CUT_SHARE, all_ops=True)
        if control.solved or control.expired():
            return
        run_search(problem, control, control.deadline, max_states=search_state_cap(problem.lv.n_ops))
        if not control.solved and not control.expired():
            improve_by_windows(problem.lv, control, _window_solver(solver), seed=1)


BUILTIN_SCHEDULERS = (PROGRAM, OPTIMIZER_IN_BACKWARD, LPMF, BFS, DFS, Greedy(), Search(), Milp(), Lns(), Auto())
