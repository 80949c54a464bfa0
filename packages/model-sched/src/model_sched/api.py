"""``schedule()``: the one entry point, whatever the algorithm."""

from __future__ import annotations

import math
from collections.abc import Callable

from model_ir.arguments import check_graph, check_optional_callable, check_seconds, check_type
from model_ir.graph import Graph
from model_ir.errors import ScheduleError
from model_ir.plugins import invalid_answer, provider, providers
from model_ir.recompute import recompute_flops
from model_ir.simulator import simulate_indices, validate_order, working_set_bound
from model_sched.bounds import forced_bound
from model_sched.control import Progress, SolveControl
from model_sched.errors import SchedError
from model_sched.liveness import liveness
from model_sched.result import ScheduleResult
from model_sched.schedulers import Problem

#: Seconds an anytime method may run when no time limit is given.
DEFAULT_TIME_LIMIT = 60.0
#: Backends tried, in order, by methods that need a MILP solver when none is named. CP-SAT
#: proved all whole 20- to 40-op random graphs optimal within 0.9 s where HiGHS needed
#: 1.4 s to over 30 s (docs/measured.md, "Back ends"); HiGHS is the fallback, always installed.
DEFAULT_SOLVERS = ("cpsat", "highs")
DEFAULT_SOLVER = "highs"


def default_solver() -> str:
    """The first installed backend of :data:`DEFAULT_SOLVERS`."""
    from model_sched.errors import SolverUnavailableError

    for name in DEFAULT_SOLVERS:
        try:
            provider("model_opt_solvers", name, "solver").available()
        except SolverUnavailableError:
            continue
        return name
    return DEFAULT_SOLVER


def solver_backend(name: str):
    """The solver backend called ``name``, checked to be usable (clear error if not)."""
    backend = provider("model_opt_solvers", name, "solver")
    backend.available()
    return backend


def _import_solver_dependencies() -> None:
    """Import numpy (bounds) and networkx (cut bounds) now, before the clock starts: they
    are imported on first use so that every ``model-opt`` command starts fast, and a
    solve's seconds and time limit are not spent loading them (about 0.5 s)."""
    import networkx  # noqa: F401
    import numpy  # noqa: F401


#: Most ops for which a budget's lower bound includes what no recomputation can free.
RECOMPUTE_BOUND_OPS = 1500


def recompute_bound(graph: Graph) -> int:
    """Lower bound (bytes) on the peak of any order with any recomputation."""
    return recompute_bounds(graph)[0]


def recompute_bounds(graph: Graph, budget: int | None = None) -> tuple[int, int | None]:
    """Lower bounds of any plan with recomputation: its peak (bytes) and, with a
    ``budget``, the FLOPs a plan fitting it recomputes (None without a budget, when none
    fits, or for a graph too large for these quadratic bounds, whose peak bound is then
    the working sets and the step outputs alone)."""
    from model_sched.recompute_exact import outputs_bound, recompute_lower_bounds

    if len(graph.ops) > RECOMPUTE_BOUND_OPS:
        return outputs_bound(graph), None

    return recompute_lower_bounds(graph, budget)


def scheduler_names() -> list[str]:
    return sorted(providers("model_opt_schedulers"))


def schedule(graph: Graph, *, method: str = "auto", solver: str | None = None,
             time_limit: float | None = None,
             progress: Callable[[Progress], None] | None = None,
             memory_budget: int | None = None) -> ScheduleResult:
    """Find an op order of ``graph`` with a small peak of live bytes.

    ``method``: a scheduler name (``auto``, ``greedy``, ``search``, ``milp``, ``lns``,
    ``program``, ``lpmf``, ``bfs``, ``dfs``, or a plugin's). ``solver``: a backend
    name (``highs``, ``cpsat``, ``gurobi``): ``milp`` uses it for the whole graph
    (default: CP-SAT if installed, else HiGHS), ``lns`` and ``auto`` for their windows
    (default: exact search, no MILP). ``time_limit`` in seconds (default 60, ``inf`` for
    none); when it runs out, or on Ctrl-C, the best order found so far is returned with
    its gap. ``progress``
    receives a :class:`Progress` at each improvement. The order is validated and its
    peak recomputed by the simulator before it is returned.

    ``memory_budget`` (bytes, persistent buffers included): the peak the answer must
    stay under. ``auto`` then means ``recompute``, which runs ops again (recomputation)
    when no order alone fits (a greedy, then, where it cannot fit a graph of at most
    :data:`~model_sched.recompute_exact.MAX_EXACT_OPS` ops, the exact model of
    ``recompute-exact`` in the time left); the best answer is the one that fits with the fewest
    recomputed FLOPs. The result says whether it fits (``fits_budget``), what the
    recomputations cost (``recompute_flops``) and, as lower bound, the least any plan
    with recomputation can peak at (the working sets plus the buffers no recomputation
    can make again, :func:`~model_sched.recompute_exact.recompute_lower_bound`, up to
    :data:`RECOMPUTE_BOUND_OPS` ops; above, the working sets and the step outputs alone),
    next to the least any order without it can (``reorder_lower_bound_bytes``).
    """
    check_graph(graph)
    check_type(method, str, "method", "a scheduler name")
    if solver is not None:
        check_type(solver, str, "solver", "a solver backend name or None")
    time_limit = check_seconds(time_limit)
    check_optional_callable(progress, "progress")
    if memory_budget is not None:
        check_type(memory_budget, int, "memory_budget", "a number of bytes or None")
        if memory_budget < 0:
            raise SchedError(f"memory budget must be >= 0 bytes, got {memory_budget}")
        if method == "auto":
            method = "recompute"
    sched = provider("model_opt_schedulers", method, "scheduler")
    backend = None
    if solver is not None:
        backend = solver_backend(solver)
    elif getattr(sched, "needs_solver", False):
        backend = solver_backend(default_solver())
    if time_limit is None:
        time_limit = DEFAULT_TIME_LIMIT
    elif not time_limit >= 0:  # also rejects NaN
        raise SchedError(f"time limit must be >= 0 seconds, got {time_limit}")
    _import_solver_dependencies()
    lv = liveness(graph)
    control = SolveControl(lv, None if math.isinf(time_limit) else time_limit, progress, memory_budget)
    try:
        forced = forced_bound(lv)
        control.raise_order_bound(forced.bytes, "forced-liveness bound")
        if memory_budget is not None:  # a bound of every plan, recomputing ones too (the strong one comes last)
            control.raise_bound(working_set_bound(graph), "working-set bound")
        sched.run(Problem(graph, lv, forced, memory_budget), control, backend)
    except KeyboardInterrupt:
        control.interrupted = True
    eager = simulate_indices(graph, range(lv.n_ops), eager=True).peak_bytes  # as model-bench's eager baseline
    if control.best_order is None:
        control.offer(list(range(lv.n_ops)), "program")
    order = control.best_order
    recomputes = len(order) > lv.n_ops
    # Without recomputation the forced-liveness bound holds; with it, the working sets
    # plus what no recomputation can make again (quadratic: small graphs only), and the
    # FLOPs bound of a budget some plan meets. A bound of every plan bounds the orders
    # without recomputation too (reorder_lower_bound_bytes: the largest of them).
    bound, flops_bound = (control.bound, None) if memory_budget is None else recompute_bounds(
        graph, memory_budget if control.best_peak <= memory_budget else None)
    try:
        validate_order(graph, order)
        simulated = simulate_indices(graph, order).peak_bytes
        if simulated != control.best_peak:
            raise SchedError(f"{control.best_source} reported a peak of {control.best_peak} B, "
                             f"the simulator measures {simulated} B")
        claimed = bound if recomputes else max(control.bound, control.order_bound)
        if claimed > simulated:
            raise SchedError(f"lower bound {claimed} B exceeds the peak {simulated} B "
                             f"of a valid order (from {control.best_source})")
        program = simulate_indices(graph, range(lv.n_ops)).peak_bytes  # an order without recomputation
        if control.order_bound > program:
            raise SchedError(f"lower bound of orders {control.order_bound} B exceeds the peak {program} B of "
                             "program order")
        flops = recompute_flops(graph, order)
        if recomputes and flops != control.best_flops:
            raise SchedError(f"{control.best_source} reported {control.best_flops} recomputed FLOPs, "
                             f"the graph's ops add up to {flops}")
    except (ScheduleError, SchedError) as e:
        raise invalid_answer(sched, f"scheduler {method!r}", e) from None
    return ScheduleResult(
        order=tuple(graph.ops[i].id for i in order), peak_bytes=simulated, eager_peak_bytes=eager,
        lower_bound_bytes=bound, seconds=control.elapsed(), method=method,
        source=control.best_source, candidates=dict(control.sources), interrupted=control.interrupted,
        persistent_bytes=graph.persistent_bytes, memory_budget=memory_budget, recompute_flops=flops,
        recomputed_ops=len(order) - lv.n_ops, reorder_lower_bound_bytes=max(control.bound, control.order_bound, bound),
        recompute_flops_lower_bound=flops_bound, no_fit_within_runs=control.no_fit_within_runs,
    )
