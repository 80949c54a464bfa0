"""Placement with OR-Tools CP-SAT: one 2-D no-overlap constraint (time x memory).

An alternative exact method (extra ``model-place[cpsat]``). Each buffer is a
rectangle with a fixed time side and a free memory offset; CP-SAT minimises the
arena (or decides a capacity), warm-started from the best heuristic placement,
and its objective bound raises the proven lower bound. Measured slower than the
canonical search on the MiniMalloc suite (see the package's docs/benchmarks.md).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from model_ir import Lifetime
from model_ir.interrupts import call_interruptibly

from model_place.errors import PlaceError
from model_place.exact import DEFAULT_TIME_LIMIT, INT64_MAX
from model_place.heuristics import best_heuristic
from model_place.lifetimes import check_lifetimes, live_bytes_peak
from model_place.result import PlacementResult, make_result
from model_place.validation import arena_of

#: CP-SAT search workers; the development and CI machines have 2 cores.
WORKERS = 2


def cpsat_placement(lifetimes: Sequence[Lifetime], *, capacity: int | None = None,
                    time_limit: float | None = None, workers: int = WORKERS) -> PlacementResult:
    """Minimise the arena (or fit ``capacity`` bytes) with CP-SAT in ``time_limit`` seconds."""
    try:
        from ortools.sat.python import cp_model
    except ImportError:
        raise PlaceError("placer 'cpsat' needs OR-Tools: install model-place[cpsat]") from None
    t0 = time.perf_counter()
    lifetimes = check_lifetimes(lifetimes)
    lb = live_bytes_peak(lifetimes)
    best = best_heuristic(lifetimes)
    best_arena = arena_of(lifetimes, best)
    details: dict = {"workers": workers}
    sized = [lt for lt in lifetimes if lt.size]
    target = best_arena if capacity is None else min(capacity, best_arena)
    if capacity is not None and capacity < lb:
        pass  # proven too small already: the live-bytes peak exceeds it
    elif sized and lb < best_arena and (capacity is None or best_arena > capacity):
        # CP-SAT's domains are signed 64-bit: an offset plus a size must stay inside them
        if (target + max(lt.size for lt in sized) + max(lt.alignment for lt in sized) > INT64_MAX
                or any(not -INT64_MAX <= t <= INT64_MAX for lt in sized for t in (lt.start, lt.end))):
            raise PlaceError("placer 'cpsat' works in 64-bit integers: the arena, sizes and alignments must add "
                             "up to less than 2**63 bytes and every step fit in 64 bits; use a heuristic method "
                             "(best-fit) for these lifetimes")
        m = cp_model.CpModel()
        top = m.NewIntVar(lb, target, "arena")
        xs, times, mems = [], [], []
        for lt in sized:
            k = m.NewIntVar(0, (target - lt.size) // lt.alignment, f"k_{lt.id}")
            x = k if lt.alignment == 1 else m.NewIntVar(0, target - lt.size, f"x_{lt.id}")
            if lt.alignment != 1:
                m.Add(x == lt.alignment * k)
            xs.append(x)
            times.append(m.NewFixedSizeIntervalVar(lt.start, lt.end - lt.start, f"t_{lt.id}"))
            mems.append(m.NewFixedSizeIntervalVar(x, lt.size, f"m_{lt.id}"))
            m.Add(x + lt.size <= top)
        m.AddNoOverlap2D(times, mems)
        if capacity is None:
            m.Minimize(top)
        if best_arena <= target:
            for lt, x in zip(sized, xs):
                m.AddHint(x, best[lt.id])
        solver = cp_model.CpSolver()
        limit = DEFAULT_TIME_LIMIT if time_limit is None else time_limit
        solver.parameters.max_time_in_seconds = max(0.0, limit - (time.perf_counter() - t0))
        solver.parameters.num_workers = workers
        solver.parameters.catch_sigint_signal = False  # CP-SAT's own handler stops it without a trace
        status, interrupted = call_interruptibly(lambda: solver.Solve(m), solver.StopSearch)
        details["cpsat_status"] = solver.StatusName(status)
        if interrupted:  # Ctrl-C: the best placement and bound so far stand
            details["stopped"] = "interrupted"
        if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            offs = {lt.id: solver.Value(x) for lt, x in zip(sized, xs)}
            offs.update({lt.id: 0 for lt in lifetimes if not lt.size})
            if arena_of(lifetimes, offs) < best_arena:
                best, best_arena = offs, arena_of(lifetimes, offs)
            if capacity is None:
                lb = max(lb, int(-(-solver.BestObjectiveBound() // 1)))
                if status == cp_model.OPTIMAL:
                    lb = best_arena
        elif status == cp_model.INFEASIBLE:
            # Only the capacity (or the warm start's arena) was proven too small.
            lb = target + 1 if capacity is not None else lb
    return make_result(lifetimes, best, method="cpsat", seconds=time.perf_counter() - t0, capacity=capacity,
                       lower_bound_bytes=min(lb, best_arena) if capacity is None else lb, details=details)
