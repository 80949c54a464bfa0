"""Large-neighbourhood search: re-optimise windows of the order around its peak.

Each step cuts the ``k`` consecutive ops around a peak step out of the current
order (see :mod:`model_sched.windows`), solves that window exactly (best-first
search or a MILP backend) under a per-window time and state budget, and splices
the better window back. The global peak never increases; the window grows while
windows are solved to optimality without improvement, and shrinks when they time
out. It stops at the deadline, at the lower bound, or when windows of the largest
size around every peak step are proven unimprovable.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from model_ir.plugins import invalid_answer
from model_sched.control import SolveControl
from model_sched.errors import SchedError
from model_sched.liveness import Liveness, peak, timeline
from model_sched.milp import build_milp, check_order, check_outcome, order_from_solution, solution_from_order
from model_sched.search import exact_search
from model_sched.windows import positions, window

#: A window solver: ``(window problem, upper bytes, deadline) -> (better order or None, proven)``.
WindowSolver = Callable[[Liveness, int, float | None], tuple[list[int] | None, bool]]


def search_window_solver(max_states: int = 200_000) -> WindowSolver:
    """Solve windows with :func:`model_sched.search.exact_search`."""

    def solve(sub: Liveness, upper: int, deadline: float | None):
        out = exact_search(sub, upper=upper, deadline=deadline, max_states=max_states)
        return out.order, out.complete

    return solve


def milp_window_solver(backend) -> WindowSolver:
    """Solve windows as MILPs with a solver backend (see :mod:`model_sched.solvers`)."""

    def solve(sub: Liveness, upper: int, deadline: float | None):
        m = build_milp(sub)
        limit = None if deadline is None else max(0.01, deadline - time.perf_counter())
        hint = solution_from_order(m, sub, list(range(sub.n_ops)))
        res = backend.solve(m.program, time_limit=limit, hint=hint)
        try:  # as run_milp checks a whole graph's: a wrong answer names the backend (and its plugin)
            values = check_outcome(m, res)
            order = None if values is None else order_from_solution(m, values)
            if order is not None:
                check_order(sub, order)
        except SchedError as e:
            raise invalid_answer(backend, f"solver {backend.name!r}", e) from None
        if res.interrupted:
            raise KeyboardInterrupt  # Ctrl-C stopped the solver: the incumbent stands
        if order is None:
            return None, res.optimal
        return (order if peak(sub, order) < upper else None), res.optimal

    return solve


def improve_by_windows(lv: Liveness, control: SolveControl, solver: WindowSolver, *,
                       window_ops: int = 24, max_window_ops: int = 48, window_seconds: float = 2.0,
                       seed: int = 0, stage: str = "lns", deadline: float | None = None) -> bool:
    """Improve ``control``'s incumbent by windowed re-optimisation until done (see module doc).

    ``window_ops``: initial window size (ops); ``window_seconds``: budget per window;
    ``deadline``: a ``time.perf_counter()`` value earlier than the control's, if any.
    Returns True when it stopped at a local optimum (every window of the largest size
    around every peak step proven unimprovable), False at a deadline or the bound.
    """
    n = lv.n_ops
    if n < 2 or control.best_order is None:
        return True
    rnd = random.Random(seed)
    order = list(control.best_order)
    k = min(window_ops, n)
    max_k = min(max_window_ops, n)
    proven: set[tuple[int, int, tuple[int, ...]]] = set()
    failures = 0
    while not control.expired() and not control.solved:
        if deadline is not None and time.perf_counter() >= deadline:
            return False
        tl = timeline(lv, order)
        top = max(tl)
        peaks = [t for t, x in enumerate(tl) if x == top]
        t = rnd.choice(peaks)
        lo = min(max(0, t - rnd.randrange(k)), n - k)
        hi = lo + k
        key = (lo, hi, tuple(order[lo:hi]))
        if key in proven:
            failures += 1
            if failures > 4 * len(peaks) + 8:
                if k >= max_k:
                    return True  # every window tried around the peaks is optimal: a local optimum
                k, failures = min(max_k, k + max(2, k // 4)), 0
            continue
        step, last_use = positions(lv, order)
        w = window(lv, order, lo, hi, step, last_use)
        upper = max(tl[lo:hi])
        remaining = control.remaining()
        if deadline is not None:
            remaining = max(0.0, deadline - time.perf_counter()) if remaining is None else \
                min(remaining, max(0.0, deadline - time.perf_counter()))
        budget = window_seconds if remaining is None else min(window_seconds, remaining)
        found, complete = solver(w.lv, upper, time.perf_counter() + budget)
        if found is not None:
            order[lo:hi] = [w.ops[i] for i in found]
            control.offer(order, stage)
            failures = 0
            proven = {p for p in proven if p[1] <= lo or p[0] >= hi}
        elif complete:
            proven.add(key)
            failures += 1
        else:
            k = max(6, k - max(2, k // 4))  # the window was too hard for its budget
    return False
