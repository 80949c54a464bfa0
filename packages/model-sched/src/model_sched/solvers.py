"""MILP/CP solver backends, each a provider of the ``model_opt_solvers`` hook.

A backend has a ``name`` and ``solve(program, *, time_limit, hint) -> SolveOutcome``.
HiGHS (``highspy``) is a dependency and the default; CP-SAT (``ortools``) and Gurobi
(``gurobipy``) are the extras ``model-sched[cpsat]`` and ``model-sched[gurobi]``.
A missing or unlicensed backend raises :class:`SolverUnavailableError` naming the fix.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Sequence

import attrs

from model_ir.interrupts import call_interruptibly, wait_interruptibly

from model_sched.errors import SolverUnavailableError
from model_sched.milp import LinearProgram


@attrs.frozen
class SolveOutcome:
    """``values``: the best solution found (``None`` if none); ``objective`` its value;
    ``bound``: a proven lower bound on the optimum; ``optimal``: proven optimal;
    ``interrupted``: the solve was stopped by Ctrl-C (the values are the best so far)."""

    values: tuple[float, ...] | None
    objective: float | None
    bound: float
    optimal: bool
    interrupted: bool = False


def solve_cpsat(model, *, time_limit: float | None, workers: int):
    """Solve a CP-SAT ``model`` on a worker thread, so that Ctrl-C stops the search with
    its best solution (:func:`model_ir.interrupts.call_interruptibly`); returns
    ``(solver, status, interrupted)``."""
    from ortools.sat.python import cp_model

    solver = cp_model.CpSolver()
    if time_limit is not None:
        solver.parameters.max_time_in_seconds = max(0.01, float(time_limit))
    solver.parameters.num_workers = workers
    # CP-SAT's own SIGINT handler stops the search but leaves no trace of it
    solver.parameters.catch_sigint_signal = False
    status, interrupted = call_interruptibly(lambda: solver.Solve(model), solver.StopSearch)
    return solver, status, interrupted


def _missing(name: str, extra: str | None, module: str) -> SolverUnavailableError:
    how = f"pip install 'model-sched[{extra}]'" if extra else f"pip install {module}"
    return SolverUnavailableError(
        f"solver {name!r} needs the Python package {module!r}, which is not installed; "
        f"install it with: {how} (or choose another --solver)")


class HighsBackend:
    """HiGHS through ``highspy`` (MIT licence, always installed)."""

    name = "highs"

    def available(self) -> None:
        try:
            import highspy  # noqa: F401
        except ImportError:
            raise _missing("highs", None, "highspy") from None

    def solve(self, program: LinearProgram, *, time_limit: float | None = None,
              hint: Sequence[float] | None = None) -> SolveOutcome:
        self.available()
        import highspy

        start = time.perf_counter()
        h = _quiet_highs(highspy)
        h.setOptionValue("threads", 1)
        # "optimal" must mean proven: the default relative gap (1e-4) stops early on
        # models whose peak carries a large constant (objective values are integers)
        h.setOptionValue("mip_rel_gap", 0.0)
        if time_limit is not None:
            h.setOptionValue("time_limit", max(0.01, float(time_limit)))
        inf = highspy.kHighsInf
        lp = highspy.HighsLp()
        lp.num_col_ = program.n_vars
        lp.num_row_ = len(program.rows)
        lp.col_cost_ = list(program.objective)
        lp.col_lower_ = [x if math.isfinite(x) else -inf for x in program.lower]
        lp.col_upper_ = [x if math.isfinite(x) else inf for x in program.upper]
        lp.row_lower_ = [x if math.isfinite(x) else -inf for x in program.row_lower]
        lp.row_upper_ = [x if math.isfinite(x) else inf for x in program.row_upper]
        starts, index, value = [0], [], []
        for idx, coef in program.rows:
            index.extend(idx)
            value.extend(float(c) for c in coef)
            starts.append(len(index))
        lp.a_matrix_.format_ = highspy.MatrixFormat.kRowwise
        lp.a_matrix_.num_col_ = program.n_vars
        lp.a_matrix_.num_row_ = len(program.rows)
        lp.a_matrix_.start_ = starts
        lp.a_matrix_.index_ = index
        lp.a_matrix_.value_ = value
        lp.integrality_ = [highspy.HighsVarType.kInteger if i else highspy.HighsVarType.kContinuous
                           for i in program.integer]
        h.passModel(lp)
        if hint is not None:
            sol = highspy.HighsSolution()
            sol.col_value = list(hint)
            sol.value_valid = True
            h.setSolution(sol)
        # solve on highspy's worker thread so that Ctrl-C here cancels it (through
        # HiGHS's interrupt callbacks) instead of waiting for the time limit
        h.HandleUserInterrupt = True
        h.startSolve()
        interrupted = wait_interruptibly(lambda t: h.wait(t)[0], h.cancelSolve)
        status = h.getModelStatus()
        info = h.getInfo()
        values = None
        objective = None
        if info.primal_solution_status == 2:  # feasible
            values = tuple(h.getSolution().col_value)
            objective = info.objective_function_value
        optimal = status == highspy.HighsModelStatus.kOptimal
        if hint is not None and values is not None and objective is not None and not interrupted:
            achieved = sum(c * x for c, x in zip(program.objective, values) if c)
            if abs(achieved - objective) > 1e-6 * max(1.0, abs(objective)):
                # HiGHS 1.16 can report a better objective yet return the user's start
                # solution (seen when presolve settles the whole model); solve cold instead,
                # within what is left of the time limit
                left = None if time_limit is None else time_limit - (time.perf_counter() - start)
                return self.solve(program, time_limit=left, hint=None)
        # with no relative gap, an optimal objective is the optimum (the dual bound is not
        # set when presolve alone settles the model)
        bound = objective if optimal and objective is not None else info.mip_dual_bound
        if not math.isfinite(bound):
            bound = -math.inf
        return SolveOutcome(values, objective, bound, optimal, interrupted)


class CpSatBackend:
    """OR-Tools CP-SAT (Apache licence; extra ``model-sched[cpsat]``)."""

    name = "cpsat"

    def available(self) -> None:
        try:
            from ortools.sat.python import cp_model  # noqa: F401
        except ImportError:
            raise _missing("cpsat", "cpsat", "ortools") from None

    def solve(self, program: LinearProgram, *, time_limit: float | None = None,
              hint: Sequence[float] | None = None) -> SolveOutcome:
        self.available()
        from ortools.sat.python import cp_model

        model = cp_model.CpModel()
        xs = [model.NewIntVar(int(lo), int(hi), f"x{j}") for j, (lo, hi) in
              enumerate(zip(program.lower, program.upper))]
        for (idx, coef), lo, hi in zip(program.rows, program.row_lower, program.row_upper):
            expr = sum(int(c) * xs[j] for j, c in zip(idx, coef))
            if math.isfinite(lo) and math.isfinite(hi) and lo == hi:
                model.Add(expr == int(lo))
                continue
            if math.isfinite(lo):
                model.Add(expr >= math.ceil(lo))
            if math.isfinite(hi):
                model.Add(expr <= math.floor(hi))
        model.Minimize(sum(int(c) * xs[j] for j, c in enumerate(program.objective) if c))
        if hint is not None:
            for x, v in zip(xs, hint):
                model.AddHint(x, int(round(v)))
        solver, status, interrupted = solve_cpsat(model, time_limit=time_limit, workers=2)
        if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            values = tuple(float(solver.Value(x)) for x in xs)
            return SolveOutcome(values, solver.ObjectiveValue(), solver.BestObjectiveBound(),
                                status == cp_model.OPTIMAL, interrupted)
        bound = solver.BestObjectiveBound() if status != cp_model.INFEASIBLE else math.inf
        return SolveOutcome(None, None, bound, False, interrupted)


def _quiet_highs(highspy):
    """A ``Highs`` object without its banner: the C++ constructor writes it to file
    descriptor 1, which would corrupt ``--json`` output, so fd 1 points to /dev/null meanwhile."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 1)
            h = highspy.Highs()
            h.setOptionValue("output_flag", False)
    finally:
        os.dup2(saved, 1)
        os.close(saved)
    return h


#: Error number gurobipy raises when a model exceeds the size-limited (pip) licence.
GUROBI_SIZE_LIMIT = 10010


class GurobiBackend:
    """Gurobi through ``gurobipy`` (extra ``model-sched[gurobi]``; the pip licence
    stops at 2000 variables and 2000 constraints)."""

    name = "gurobi"

    def available(self) -> None:
        try:
            import gurobipy  # noqa: F401
        except ImportError:
            raise _missing("gurobi", "gurobi", "gurobipy") from None

    def solve(self, program: LinearProgram, *, time_limit: float | None = None,
              hint: Sequence[float] | None = None) -> SolveOutcome:
        self.available()
        import gurobipy as gp

        try:
            env = gp.Env(empty=True)
            env.setParam("OutputFlag", 0)
            env.start()
            model = gp.Model(env=env)
            vtype = [gp.GRB.INTEGER if i else gp.GRB.CONTINUOUS for i in program.integer]
            xs = model.addVars(program.n_vars, lb=list(program.lower),
                               ub=[u if math.isfinite(u) else gp.GRB.INFINITY for u in program.upper],
                               vtype=vtype, obj=list(program.objective))
            for (idx, coef), lo, hi in zip(program.rows, program.row_lower, program.row_upper):
                expr = gp.LinExpr(list(coef), [xs[j] for j in idx])
                if math.isfinite(lo) and math.isfinite(hi) and lo == hi:
                    model.addLConstr(expr, gp.GRB.EQUAL, lo)
                    continue
                if math.isfinite(lo):
                    model.addLConstr(expr, gp.GRB.GREATER_EQUAL, lo)
                if math.isfinite(hi):
                    model.addLConstr(expr, gp.GRB.LESS_EQUAL, hi)
            if time_limit is not None:
                model.Params.TimeLimit = max(0.01, float(time_limit))
            model.Params.Threads = 2
            model.Params.MIPGap = 0.0  # OPTIMAL must mean proven (default stops at 1e-4)
            if hint is not None:
                for j, v in enumerate(hint):
                    xs[j].Start = v
            model.optimize()
        except gp.GurobiError as e:
            if getattr(e, "errno", None) == GUROBI_SIZE_LIMIT:
                raise SolverUnavailableError(
                    f"solver 'gurobi': the model has {program.n_vars} variables and "
                    f"{len(program.rows)} constraints, more than the size-limited pip licence allows "
                    "(2000); install a full Gurobi licence (gurobi.lic, see GRB_LICENSE_FILE) "
                    "or use --solver highs") from None
            raise SolverUnavailableError(f"solver 'gurobi' failed: {e}") from None
        values = objective = None
        if model.SolCount > 0:
            values = tuple(float(x.X) for x in xs.values())
            objective = model.ObjVal
        bound = model.ObjBound if model.SolCount > 0 or model.Status == gp.GRB.OPTIMAL else -math.inf
        # Gurobi stops itself on Ctrl-C, with status INTERRUPTED
        return SolveOutcome(values, objective, bound, model.Status == gp.GRB.OPTIMAL,
                            model.Status == gp.GRB.INTERRUPTED)
