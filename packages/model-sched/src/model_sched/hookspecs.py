"""Hook specifications added by model-sched: schedulers and solver backends."""

from __future__ import annotations

from typing import Any

from model_ir.hookspecs import hookspec


@hookspec
def model_opt_schedulers() -> list[Any]:
    """Schedulers: providers with ``name``, ``help`` and
    ``run(problem, control, solver)`` (see :mod:`model_sched.schedulers`)."""


@hookspec
def model_opt_solvers() -> list[Any]:
    """MILP/CP solver backends: providers with ``name``, ``available()`` (raises
    :class:`~model_sched.errors.SolverUnavailableError` naming the fix) and
    ``solve(program, *, time_limit, hint) -> SolveOutcome`` (see :mod:`model_sched.solvers`)."""
