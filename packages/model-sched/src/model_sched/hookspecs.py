"""Hook specifications added by model-sched: schedulers and solver backends, and the
``Protocol`` of their providers (``docs/plugins.md``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from model_ir.hookspecs import hookspec

if TYPE_CHECKING:
    from model_sched.control import SolveControl
    from model_sched.milp import LinearProgram
    from model_sched.schedulers import Problem
    from model_sched.solvers import SolveOutcome


class SolverBackend(Protocol):
    """A MILP/CP solver. ``available()`` raises
    :class:`~model_sched.errors.SolverUnavailableError` naming the fix when the solver
    is not installed or licensed; ``solve`` minimises ``program`` within ``time_limit``
    seconds, starting from the ``hint`` solution when given."""

    name: str

    def available(self) -> None: ...

    def solve(self, program: LinearProgram, *, time_limit: float | None = None,
              hint: Sequence[float] | None = None) -> SolveOutcome: ...


class Scheduler(Protocol):
    """An operator-order algorithm. ``run`` receives the graph and its liveness arrays
    (``problem.graph``, ``problem.lv``: ops are indices ``0..lv.n_ops-1`` in program
    order) and offers orders, as lists of those indices, with
    ``control.offer(order, source)`` and lower bounds (bytes) with
    ``control.raise_bound`` (a bound proven only for orders without recomputation, under
    a ``problem.memory_budget``, with ``control.raise_order_bound``); it stops when
    ``control.expired()``. It returns nothing:
    :func:`model_sched.schedule` keeps the best order offered, validates it and
    recomputes its peak. ``solver`` is the chosen backend, or None (set
    ``needs_solver = True`` to always get one)."""

    name: str
    help: str

    def run(self, problem: Problem, control: SolveControl, solver: SolverBackend | None = None) -> None: ...


@hookspec
def model_opt_schedulers() -> list[Scheduler]:
    """Schedulers: providers with ``name``, ``help`` and
    ``run(problem, control, solver)`` (see :mod:`model_sched.schedulers`)."""


@hookspec
def model_opt_solvers() -> list[SolverBackend]:
    """MILP/CP solver backends: providers with ``name``, ``available()`` (raises
    :class:`~model_sched.errors.SolverUnavailableError` naming the fix) and
    ``solve(program, *, time_limit, hint) -> SolveOutcome`` (see :mod:`model_sched.solvers`)."""
