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
from model_ir.plugins import invalid_answer
from model_sched import greedy, recompute_exact
from model_sched.bounds import ForcedBound, ancestor_masks, descendant_masks
from model_sched.cut_bound import raise_bound_by_cuts
from model_sched.control import SolveControl
from model_sched.errors import SchedError, SolverUnavailableError
from model_sched.liveness import Liveness, peak, timeline
from model_sched.lns import improve_by_windows, milp_window_solver, search_window_solver
from model_sched.milp import (build_milp, check_order, check_outcome, order_from_solution, peak_bytes_of_units,
                              solution_from_order)
from model_sched.moves import improve_by_moves
from model_sched.recompute_exact import RecomputeExact, solve_exact
from model_sched.search import SearchOutcome, SearchRun
from model_sched.solvers import CpSatBackend
from model_sched.target import deferrable_tails, improve_by_targets

#: Seconds of ``auto``'s first turn for each of its methods; each round doubles them.
FIRST_TURN_SECONDS = 0.25
#: Share of a turn ``auto`` gives cut bounds at more ops (a bound alone proves nothing).
CUT_TURN_SHARE = 0.25
#: Share of the remaining time given to cut bounds at the incumbent's peak ops.
CUT_SHARE = 0.1
#: Memory the exact search may use for its table of states (bytes, estimated).
SEARCH_MEMORY_BYTES = 1 << 30


def search_state_cap(n_ops: int) -> int:
    """How many states fit :data:`SEARCH_MEMORY_BYTES`: two n-bit sets per state plus about
    500 bytes of dict, tuple and heap overhead (measured with tracemalloc, rounded up)."""
    return max(10_000, SEARCH_MEMORY_BYTES // (n_ops // 4 + 500))


@attrs.frozen(slots=False)
class Problem:
    """A graph with its memory-model arrays and forced-liveness bound; ``memory_budget``
    (bytes, or None): the peak an answer must stay under, recomputing if it must."""

    graph: Graph
    lv: Liveness
    forced: ForcedBound
    memory_budget: int | None = None

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
               max_states: int | None = None) -> SearchOutcome:
    """Exact search over the whole graph, warm-started; ``complete`` if it proved optimality."""
    search = start_search(problem, control, max_states)
    return search_turn(search, control, deadline)


def start_search(problem: Problem, control: SolveControl, max_states: int | None = None) -> SearchRun:
    """An exact search warm-started from the incumbent and bound, reporting progress to ``control``."""
    def heartbeat(bound: int, states: int) -> None:
        control.raise_bound(bound, "search")
        control.report(f"search ({states} states)")

    return SearchRun(problem.lv, upper=control.best_peak, lower=control.bound,
                     max_states=max_states or search_state_cap(problem.lv.n_ops), on_progress=heartbeat)


def search_turn(search: SearchRun, control: SolveControl, deadline: float | None) -> SearchOutcome:
    """Run (or resume) ``search`` until ``deadline``, with the incumbent and bound known now;
    offer what it found."""
    out = search.run(deadline, upper=control.best_peak, lower=control.bound)
    if out.order is not None:
        control.offer(out.order, "search")
    control.raise_bound(out.bound, "search")
    return out


def run_baselines(problem: Problem, control: SolveControl) -> bool:
    """Greedy orders, then cut bounds at the incumbent's peak ops; True if they prove it optimal."""
    run_greedy(problem, control)
    if not control.solved:
        run_cut_bounds(problem, control, CUT_SHARE)
    return control.solved


class Search:
    name = "search"
    help = "exact best-first search over all topological orders (small graphs)"

    def run(self, problem, control, solver=None) -> None:
        if not run_baselines(problem, control):
            run_search(problem, control, control.deadline)


def run_milp(problem: Problem, control: SolveControl, backend) -> None:
    """Whole-graph MILP with ``backend``, warm-started from the incumbent.

    The backend's answer is checked before it is used (:func:`milp_answer`): a wrong one
    is the backend's invalid answer, naming its plugin if it has one, not the scheduler's.
    """
    lv = problem.lv
    m = build_milp(lv)
    hint = solution_from_order(m, lv, control.best_order)
    res = backend.solve(m.program, time_limit=control.remaining(), hint=hint)
    order, bound = milp_answer(m, lv, control, backend, res)
    if order is not None:
        control.offer(order, f"milp-{backend.name}")
    if bound > 0:
        control.raise_bound(bound, f"milp-{backend.name}")
    if res.interrupted:
        raise KeyboardInterrupt  # Ctrl-C stopped the solver: the caller keeps the best so far


def milp_answer(m, lv: Liveness, control: SolveControl, backend, res) -> tuple[list[int] | None, int]:
    """The order (None if none) and the bound (bytes) of ``backend``'s outcome ``res`` for
    ``m``, checked: a :class:`~model_sched.solvers.SolveOutcome` with sane fields
    (:func:`~model_sched.milp.check_outcome`), values encoding a valid order, and a bound
    not above the peak of that order nor of the incumbent (each is a solution). Otherwise
    :func:`~model_ir.plugins.invalid_answer` names the solver (and its plugin: exit 4)."""
    try:
        values = check_outcome(m, res)
        order = None if values is None else order_from_solution(m, values)
        peaks = []
        if order is not None:
            check_order(lv, order)
            peaks.append((peak(lv, order), "the order its values encode"))
        if control.best_order is not None and len(control.best_order) == lv.n_ops:
            peaks.append((control.best_peak, f"the order from {control.best_source}"))
        bound = peak_bytes_of_units(m, res.bound) if res.bound > 0 else 0
        for top, which in peaks:
            if bound > top:
                raise SchedError(f"its bound {res.bound} ({bound} B) exceeds the peak {top} B of {which}")
    except SchedError as e:
        raise invalid_answer(backend, f"solver {backend.name!r}", e) from None
    return order, bound


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


def run_cut_bounds(problem: Problem, control: SolveControl, share: float) -> None:
    """Cut bounds at the incumbent's peak ops, within ``share`` of the remaining time."""
    lv, per_op = problem.lv, problem.forced.per_op
    remaining = control.remaining()
    deadline = None if remaining is None else time.perf_counter() + remaining * share
    raise_bound_by_cuts(lv, control, per_op, peak_ops(lv, control.best_order), deadline, problem.masks)


def race(problem: Problem, control: SolveControl, window_solver) -> None:
    """Exact search, windowed re-optimisation and cut bounds at every op take turns of
    doubling length (:data:`FIRST_TURN_SECONDS`, then twice as long each round; cut
    bounds get :data:`CUT_TURN_SHARE` of a turn) until the incumbent is proven, the
    time is up, or none of them can do more. Between the search's turn and the windows',
    long-range single-op moves (:mod:`model_sched.moves`) and list scheduling under
    bisected targets (:mod:`model_sched.target`) improve a new incumbent.

    So ``auto`` proves about as soon as the fastest of them would on its own (within
    a small factor), instead of first spending a fixed share of the time limit on one:
    many captured steps are proven by the search in a fraction of a second, others
    only by windows reaching the bound. Each turn helps the others: a better
    incumbent prunes the search, a higher bound stops the windows.

    The search resumes where its last turn stopped; once it hits its memory cap it
    waits for a better incumbent and then starts afresh from it (fewer states). The
    windows start from the incumbent, and wait for a better one once they reach a
    local optimum. Cut bounds go through the incumbent's peak ops, then the ops by
    decreasing forced bytes, each op once. When search and windows both wait, cut
    bounds get whole turns as long as they raise the bound.
    """
    lv = problem.lv
    cap = search_state_cap(lv.n_ops)
    cut_done: set[int] = set()
    by_forced = sorted(range(lv.n_ops), key=lambda v: -problem.forced.per_op[v])
    turn = FIRST_TURN_SECONDS
    search = start_search(problem, control, cap)
    search_from = control.best_peak  # the incumbent the search started from
    search_capped = False
    windows_stuck_at = None  # the incumbent at which the windows reached a local optimum
    moves_done_at = None  # the incumbent single-op moves could not improve
    targets_done_at = None  # the incumbent list scheduling under targets started from
    target_bases = None  # the other orders it starts from (computed once)
    tails = frozenset()  # ops that can run last (target.deferrable_tails)
    seed = 0

    def turn_end(seconds: float) -> float:
        end = time.perf_counter() + seconds
        return end if control.deadline is None else min(end, control.deadline)

    def finished() -> bool:
        return control.solved or control.expired()

    while True:
        start = (control.best_peak, control.bound)
        if search_capped and control.best_peak < search_from:
            search = None  # free its states first
            search = start_search(problem, control, cap)
            search_from, search_capped = control.best_peak, False
        if not search_capped:
            out = search_turn(search, control, turn_end(turn))
            if finished():
                return
            search_capped = not out.complete and out.states > cap
        if moves_done_at != control.best_peak:
            if improve_by_moves(lv, control, deadline=turn_end(turn)):
                moves_done_at = control.best_peak
            if finished():
                return
        if targets_done_at != control.best_peak:
            if target_bases is None:
                target_bases = [_moved_base(problem, turn_end(turn))]
                tails = deferrable_tails(lv, problem.masks[1])
            if improve_by_targets(lv, control, bases=target_bases, tails=tails, deadline=turn_end(turn)):
                targets_done_at = control.best_peak
            if finished():
                return
        if windows_stuck_at != control.best_peak:
            windows_stuck_at = None
            if improve_by_windows(lv, control, window_solver, seed=seed, deadline=turn_end(turn)):
                windows_stuck_at = control.best_peak
            seed += 1
            if finished():
                return
        waiting = search_capped and windows_stuck_at == control.best_peak
        cut_left = [v for v in dict.fromkeys(peak_ops(lv, control.best_order) + by_forced) if v not in cut_done]
        if cut_left:
            seconds = turn if waiting else turn * CUT_TURN_SHARE
            cut_done.update(raise_bound_by_cuts(lv, control, problem.forced.per_op, cut_left,
                                                turn_end(seconds), problem.masks))
            if finished():
                return
        if waiting and (not cut_left or (control.best_peak, control.bound) == start):
            return  # nothing left that could improve the order or the bound
        turn *= 2


def _moved_base(problem: Problem, deadline: float | None) -> list[int]:
    """The optimizer-in-backward order after single-op moves: a base order for
    :func:`~model_sched.target.improve_by_targets` that keeps the layer structure of
    the backward pass (the incumbent may have lost it in windows)."""
    lv = problem.lv
    scratch = SolveControl(lv)
    scratch.offer(greedy.optimizer_in_backward_order(lv, greedy.optimizer_ops(problem.graph)), "base")
    improve_by_moves(lv, scratch, deadline=deadline)
    return scratch.best_order


class Auto:
    name = "auto"
    help = ("bounds, greedy baselines, then exact search, long-range moves, targets, windowed "
            "re-optimisation and cut bounds in turns")

    def run(self, problem, control, solver=None) -> None:
        if run_baselines(problem, control) or control.expired():
            return
        race(problem, control, _window_solver(solver))


class Recompute:
    name = "recompute"
    help = ("fits --budget: the best order auto finds in half the time, then recomputations "
            "(greedy, cheapest FLOPs per byte) until the peak fits; where the greedy cannot, "
            "the CP-SAT model of 'recompute-exact' in the time left "
            f"(graphs up to {recompute_exact.MAX_EXACT_OPS} ops)")
    #: share of the time the order search gets before recomputation starts
    ORDER_SHARE = 0.5

    def run(self, problem, control, solver=None) -> None:
        from model_sched.recompute import fit_budget_from

        remaining = control.remaining()
        inner = SolveControl(problem.lv, None if remaining is None else remaining * self.ORDER_SHARE,
                             control.progress)
        inner.raise_bound(max(control.bound, control.order_bound), "forced-liveness bound")
        try:
            Auto().run(attrs.evolve(problem, memory_budget=None), inner, solver)
        finally:
            # Every order tried counts, even when interrupted.
            for source, p in inner.sources.items():
                control.sources[source] = min(p, control.sources.get(source, p))
            if inner.best_order is not None:
                control.offer(inner.best_order, inner.best_source, inner.best_peak)
            control.raise_order_bound(inner.bound, "order bound")  # what the search proved of orders
        budget = problem.memory_budget
        if budget is None or control.best_peak <= budget:
            return
        if control.expired():
            return
        from model_sched.api import recompute_bounds

        bound = recompute_bounds(problem.graph)[0]
        if budget < bound:  # proven: no plan fits, so no search (CP-SAT would spend the time left)
            control.report(f"recompute: the budget is below the lower bound of any plan ({bound} B); no search")
            return
        # Bases: the best order (it often keeps the peak's step lowest), eager's with each
        # update right after its gradient (recomputation can move the peak to the end of the
        # backward pass, where an order that updates late keeps every gradient), eager's.
        updates_early = greedy.optimizer_in_backward_order(problem.lv, greedy.optimizer_ops(problem.graph))
        bases = [inner.best_order, updates_early, list(range(problem.lv.n_ops))]
        bases = [b for k, b in enumerate(bases) if b is not None and b not in bases[:k]]
        fit = fit_budget_from(problem.graph, bases, budget, time_limit=control.remaining())
        control.offer(list(fit.order), "recompute", fit.peak_bytes, fit.recompute_flops)
        if fit.fits or control.expired():
            return
        # The greedy only inserts reruns into a fixed order; a budget can need the order
        # changed around them too (a weight's update moved before the activations it frees).
        n, most = len(problem.graph.ops), recompute_exact.MAX_EXACT_OPS
        if n > most:
            control.report(f"recompute: the greedy cannot fit; {n} ops > {most}, no exact search")
            return
        try:
            CpSatBackend().available()
        except SolverUnavailableError as e:
            control.report(f"recompute: the greedy cannot fit; no exact search ({e})")
            return
        solve_exact(problem, control)


BUILTIN_SCHEDULERS = (PROGRAM, OPTIMIZER_IN_BACKWARD, LPMF, BFS, DFS, Greedy(), Search(), Milp(), Lns(), Auto(),
                      Recompute(), RecomputeExact())
