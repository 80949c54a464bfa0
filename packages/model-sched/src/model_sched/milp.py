"""The minimum-peak scheduling problem as a mixed-integer linear program.

One op per step, no compression of time steps (so no optimum is lost). Variables:

- ``y[v,t]`` (binary): op ``v`` has run by step ``t``, only inside its window
  ``[asap(v), alap(v))`` (ASAP = number of ancestors, ALAP = ops minus descendants);
  it is 0 before and 1 from ALAP on, so those are constants, not columns;
- ``a[b,t]`` (0..1): buffer ``b`` is alive at step ``t``;
- ``peak``: transient peak in units of the sizes' greatest common divisor.

Constraints: ``y`` is non-decreasing in ``t``; exactly ``t+1`` ops have run by step
``t``; ``v`` can have run by ``t`` only if each predecessor ``u`` had by ``t-1``
(edges of the transitive reduction suffice); ``a[b,t] >= y[p,t] - y[u,t-1]`` for the
producer ``p`` and each user ``u`` that no other user must follow; outputs are alive
from their producer on; ``peak >= sum_b size_b a[b,t]`` at every step. Sizes are
divided by their gcd, which keeps coefficients small for the solvers and integral
for CP-SAT.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence

import attrs

from model_sched.bounds import ancestor_masks, descendant_masks
from model_sched.errors import SchedError
from model_sched.liveness import Liveness


@attrs.frozen
class LinearProgram:
    """``min objective . x`` subject to ``row_lower <= A x <= row_upper`` and column bounds.

    Rows are sparse: ``rows[i] = (indices, coefficients)``. ``integer[j]`` marks integer
    columns. All coefficients are integers so that every backend, CP-SAT included,
    can take the model as is.
    """

    lower: tuple[float, ...]
    upper: tuple[float, ...]
    integer: tuple[bool, ...]
    objective: tuple[float, ...]
    rows: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]
    row_lower: tuple[float, ...]
    row_upper: tuple[float, ...]

    @property
    def n_vars(self) -> int:
        return len(self.lower)


@attrs.frozen
class ScheduleMilp:
    """A :class:`LinearProgram` plus what is needed to read an order back from a solution."""

    program: LinearProgram
    y: dict  # (op, step) -> column
    alive: dict  # (buffer, step) -> column
    peak_col: int
    unit: int  # bytes per unit of the peak column
    asap: tuple[int, ...]
    alap: tuple[int, ...]
    persistent_bytes: int  # bytes not modelled by columns


#: Whole-graph models beyond this many ``y`` columns are refused: they take minutes
#: to build and no backend proves anything on them (docs/measured.md, "Back ends").
MAX_MILP_COLUMNS = 100_000


def build_milp(lv: Liveness) -> ScheduleMilp:
    """Formulate the minimum-peak order of ``lv`` (see the module docstring).

    Raises :class:`~model_sched.errors.SchedError` if the model would exceed
    :data:`MAX_MILP_COLUMNS` scheduling columns.
    """
    n = lv.n_ops
    anc, desc = ancestor_masks(lv), descendant_masks(lv)
    asap = tuple(a.bit_count() for a in anc)
    alap = tuple(n - 1 - d.bit_count() for d in desc)
    columns = sum(alap[v] - asap[v] for v in range(n))
    if columns > MAX_MILP_COLUMNS:
        raise SchedError(
            f"a whole-graph MILP of these {n} ops needs {columns} scheduling columns (limit "
            f"{MAX_MILP_COLUMNS}); use --method auto, or --method lns --solver NAME to solve windows")
    sizes = [s for b, s in enumerate(lv.sizes) if not lv.persistent[b] and s > 0]
    # unused graph inputs of a window are not buffers of its problem, only bytes
    unit = math.gcd(*sizes, lv.first_free_bytes) or 1
    lower: list[float] = []
    upper: list[float] = []
    integer: list[bool] = []
    y: dict[tuple[int, int], int] = {}

    def col(lo: float, hi: float, is_int: bool) -> int:
        lower.append(lo)
        upper.append(hi)
        integer.append(is_int)
        return len(lower) - 1

    for v in range(n):
        for t in range(asap[v], alap[v]):
            y[v, t] = col(0, 1, True)

    def yterm(v: int, t: int) -> tuple[int | None, int]:
        """``y[v,t]`` as (column or None, constant)."""
        if v < 0 or t >= alap[v]:
            return None, 1  # graph inputs exist from the start
        if t < asap[v]:
            return None, 0
        return y[v, t], 0

    rows: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
    rlo: list[float] = []
    rhi: list[float] = []

    def add(terms: dict[int, int], const: int, lo: float, hi: float) -> None:
        """``lo <= sum(terms) + const <= hi``, dropping zero coefficients."""
        items = [(c, k) for c, k in terms.items() if k]
        if not items:
            return
        rows.append((tuple(c for c, _ in items), tuple(k for _, k in items)))
        rlo.append(lo - const)
        rhi.append(hi - const)

    inf = math.inf
    for v in range(n):  # y non-decreasing
        for t in range(asap[v] + 1, alap[v]):
            add({y[v, t]: 1, y[v, t - 1]: -1}, 0, 0, inf)
    by_step: list[dict[int, int]] = [dict() for _ in range(n)]
    done_from = [0] * (n + 1)  # ops whose y is the constant 1 from step alap on
    for v in range(n):
        done_from[alap[v]] += 1
        for t in range(asap[v], alap[v]):
            by_step[t][y[v, t]] = 1
    const_by_step, running = [0] * n, 0
    for t in range(n):
        running += done_from[t]
        const_by_step[t] = running
    for t in range(n):  # exactly t+1 ops have run by step t
        add(by_step[t], const_by_step[t], t + 1, t + 1)
    for v in range(n):  # precedence, over the transitive reduction
        redundant = 0
        for u in lv.preds[v]:
            redundant |= anc[u]
        for u in lv.preds[v]:
            if redundant >> u & 1:
                continue
            for t in range(asap[v], alap[v]):
                cu, ku = yterm(u, t - 1)
                terms = {y[v, t]: 1}
                if cu is not None:
                    terms[cu] = terms.get(cu, 0) - 1
                add(terms, -ku, -inf, 0)
    alive: dict[tuple[int, int], int] = {}
    load: list[dict[int, int]] = [dict() for _ in range(n)]
    load_const = [0] * n
    for b, size in enumerate(lv.sizes):
        if lv.persistent[b] or size == 0:
            continue
        p = lv.producer[b]
        first = 0 if p < 0 else asap[p]
        if lv.keep[b]:
            enders: list[int] = []
            last = n - 1
        elif lv.users[b]:
            # only users no other user must follow decide when b dies
            enders = [u for u in lv.users[b] if not any(desc[u] >> w & 1 for w in lv.users[b])]
            last = max(alap[u] for u in enders)
        elif p >= 0:
            enders = [p]  # never read: alive at its producer's step only
            last = alap[p]
        else:
            continue  # unused graph input: in first_free_bytes, added below
        for t in range(first, last + 1):
            cp, kp = yterm(p, t)
            exprs = []
            if lv.keep[b]:
                exprs.append(({} if cp is None else {cp: 1}, kp))
            else:
                for u in enders:
                    cu, ku = yterm(u, t - 1) if t > 0 else (None, 0)
                    terms: dict[int, int] = {} if cp is None else {cp: 1}
                    if cu is not None:
                        terms[cu] = terms.get(cu, 0) - 1
                    exprs.append((terms, kp - ku))
            exprs = [(terms, k) for terms, k in exprs if terms or k > 0]
            if not exprs:
                continue
            if any(not terms and k >= 1 for terms, k in exprs):
                load_const[t] += size // unit  # alive at t in every order
                continue
            a = col(0, 1, False)
            alive[b, t] = a
            load[t][a] = size // unit
            for terms, k in exprs:
                row = dict(terms)
                row[a] = row.get(a, 0) - 1
                add(row, k, -inf, 0)
    if n and lv.first_free_bytes:
        load_const[0] += lv.first_free_bytes // unit  # unused graph inputs: alive at step 0 only
    peak_col = col(0, sum(s // unit for s in sizes) + lv.first_free_bytes // unit, False)
    for t in range(n):
        row = dict(load[t])
        row[peak_col] = -1
        add(row, load_const[t], -inf, 0)
    objective = [0.0] * len(lower)
    objective[peak_col] = 1.0
    program = LinearProgram(tuple(lower), tuple(upper), tuple(integer), tuple(objective),
                            tuple(rows), tuple(rlo), tuple(rhi))
    return ScheduleMilp(program, y, alive, peak_col, unit, asap, alap, lv.persistent_bytes)


def order_from_solution(m: ScheduleMilp, values: Sequence[float]) -> list[int]:
    """The order a solution encodes: ops by the first step at which ``y`` reaches 1."""
    n = len(m.asap)
    when = []
    for v in range(n):
        t = m.asap[v]
        while t < m.alap[v] and values[m.y[v, t]] < 0.5:
            t += 1
        when.append((t, v))
    when.sort()
    return [v for _, v in when]


def solution_from_order(m: ScheduleMilp, lv: Liveness, order: Sequence[int]) -> list[float]:
    """Column values encoding ``order`` (a warm start for the solvers)."""
    step = [0] * len(order)
    for t, v in enumerate(order):
        step[v] = t
    values = [0.0] * m.program.n_vars
    for (v, t), c in m.y.items():
        values[c] = 1.0 if step[v] <= t else 0.0
    peak_units = 0
    for (b, t), c in m.alive.items():
        p = lv.producer[b]
        start = 0 if p < 0 else step[p]
        if lv.keep[b]:
            end = len(order) - 1
        elif lv.users[b]:
            end = max(step[u] for u in lv.users[b])
        else:
            end = start
        if start <= t <= end:
            values[c] = 1.0
    # the peak column must cover the constant part of each step too: recompute via the rows
    for (idx, coef), hi in zip(m.program.rows, m.program.row_upper):
        if m.peak_col in idx:
            k = dict(zip(idx, coef))
            total = sum(values[c] * w for c, w in k.items() if c != m.peak_col)
            peak_units = max(peak_units, total - hi)
    values[m.peak_col] = float(peak_units)
    return values


def peak_bytes_of_units(m: ScheduleMilp, units: float) -> int:
    """Bytes (persistent included) of a value of the peak column; rounded up for bounds."""
    return m.persistent_bytes + int(math.ceil(units - 1e-6)) * m.unit


#: Relative slack allowed between a solver's bound and the objective of its solution.
OBJECTIVE_TOLERANCE = 1e-6


def _number(x: object) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def check_outcome(m: ScheduleMilp, outcome: object) -> tuple[float, ...] | None:
    """The solution of ``outcome``, a backend's answer for ``m``, as a tuple (None if it
    found none); :class:`SchedError` unless ``outcome`` is a
    :class:`~model_sched.solvers.SolveOutcome` with ``values`` None or one finite number
    per column, ``objective`` None or finite, and ``bound`` a number below infinity (any
    order is a solution) and not above the objective, reported or of its ``values``."""
    from model_sched.solvers import SolveOutcome  # solvers imports this module

    if not isinstance(outcome, SolveOutcome):
        raise SchedError(f"solve returned a {type(outcome).__name__}, not a SolveOutcome")
    values, objective, bound = outcome.values, outcome.objective, outcome.bound
    if not _number(bound) or math.isnan(bound) or bound == math.inf:
        raise SchedError(f"its bound must be a number below infinity (any order is a solution), got {bound!r}")
    if objective is not None and not (_number(objective) and math.isfinite(objective)):
        raise SchedError(f"its objective must be a finite number or None, got {objective!r}")
    if values is None:
        return None
    if isinstance(values, (str, bytes, Mapping)) or not (hasattr(values, "__len__") and hasattr(values, "__getitem__")):
        raise SchedError(f"its values must be a sequence of numbers or None, got a {type(values).__name__}")
    values = tuple(values)
    n = m.program.n_vars
    if len(values) != n:
        raise SchedError(f"it returned {len(values)} values for a program of {n} columns")
    for j, x in enumerate(values):
        if not (_number(x) and math.isfinite(x)):
            raise SchedError(f"its value of column {j} is {x!r}, not a finite number")
    achieved = math.fsum(c * values[j] for j, c in enumerate(m.program.objective) if c)
    for what, top in (("the objective of its values", achieved), ("the objective it reported", objective)):
        if top is not None and bound > top + OBJECTIVE_TOLERANCE * max(1.0, abs(top)):
            raise SchedError(f"its bound {bound} exceeds {what}, {top}")
    return values


def check_order(lv: Liveness, order: Sequence[int]) -> None:
    """:class:`SchedError` unless ``order`` (read from a solution) runs each op after its
    predecessors: a solution breaking the model's precedence rows encodes no valid order."""
    step = [0] * lv.n_ops
    for t, v in enumerate(order):
        step[v] = t
    for v in range(lv.n_ops):
        for u in lv.preds[v]:
            if step[u] > step[v]:
                raise SchedError(f"its values run op {v} before op {u}, which it depends on "
                                 "(they break the model's precedence constraints)")
