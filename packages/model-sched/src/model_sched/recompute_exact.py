"""Exact recomputation under a memory budget for small graphs: a CP-SAT model in the
style of Moccasin (Bartan et al., ICML 2023), which solves Checkmate's problem
(Jain et al., MLSys 2020) with retention intervals instead of a step-by-step MILP.

:func:`fit_budget_exact` finds, for a graph and a budget (bytes, persistent buffers
included, the simulator's peak), an order that may run ops again and fits the budget
with the fewest recomputed FLOPs (``meta["flops"]``, :func:`model_ir.recompute.op_flops`);
ties are broken by the fewest bytes the recomputations write. (The greedy of
:mod:`model_sched.recompute` minimises FLOPs plus bytes as one sum; here FLOPs come
first, so the exact answer never costs more FLOPs than any plan of its space.)

The model, for ``T`` = the most runs allowed:

- *runs*: op ``i`` has copies ``c = 0 .. k_i - 1``; copy 0 (its first run) is
  mandatory, copy ``c >= 1`` (a recomputation) optional and present only if copy
  ``c - 1`` is, at a later slot. Every run has a slot in ``[0, T)``; present runs take
  distinct slots, all below the number of present runs (no holes, so slot = step).
  ``k_i`` is ``max_runs`` for the ops :func:`~model_ir.recompute.recomputable_ops`
  allows that make a non-empty buffer some op reads, else 1;
- *first runs* respect ``graph.predecessors`` (data, ``after`` and hazard edges);
- *hazard*: a recomputation runs before any op writing one of its inputs in place
  that its first run precedes (what :func:`~model_ir.simulator.validate_order`
  checks);
- *retention*: each present run makes one instance of each output, alive from its
  slot to an end variable (to ``T - 1`` for step outputs); a graph input lives from
  slot 0 to its end variable, an unused one at slot 0 only;
- *coverage*: each present run's use of a non-persistent, non-empty buffer is covered
  by one instance of it: one made by an earlier present run of its producer whose end
  reaches the use; a recomputation must cover at least one use (else it is useless);
- *memory*: a cumulative constraint over the instances (demand = size) with capacity
  ``budget - persistent bytes - step outputs that are graph inputs``, in units of
  the sizes' greatest common divisor (exact);
- *forced cuts* (redundant): while op ``v`` first runs, every buffer an ancestor of
  ``v`` made and a descendant reads is alive unless its producer runs again after
  ``v``; a knapsack constraint per op on those bytes lets the LP bound the FLOPs a
  budget needs (:func:`_forced_at`). Before any solve, a budget under
  :func:`recompute_lower_bound` (the same bytes whose producers never rerun, raised
  by :mod:`model_sched.recompute_cut`'s minimum cuts) is answered ``below-bound``;
- *objective*: ``sum(flops_i * W + bytes_i)`` over present recomputations, ``W`` one
  more than the most bytes they could write (lexicographic; when that product would
  pass 2**62 the bytes are dropped and the objective is FLOPs alone).

How it relates to the simulator (:mod:`model_ir.simulator`), which has the last word:
for an order in the model's space, encoding each use as covered by the instance the
simulator reads (the latest) and each end at the last such use gives exactly the
simulator's lifetimes, so the simulator's feasible orders are model-feasible. The
model may cover a use by an older instance, or stretch an end; that only adds bytes
at every step (the simulator has at most one instance of a buffer alive per step,
and some model instance covers it), so a model-feasible answer fits in the simulator
too. Every answer is still checked: its recomputations that no later use reads are
dropped, it is validated by ``validate_order`` and its peak and FLOPs are the
simulator's; an answer over the budget there is reported as not fitting.

Relaxations and limits, so that the bound means what it says: the space is the
orders running each op at most ``k_i`` times (``max_runs``, default 2: at most one
recomputation per op; raised for an op to the runs a given hint uses). ``optimal``
and ``flops_lower_bound`` hold in that space only: a plan running some op more often
may fit a budget the model proves infeasible, or cost fewer FLOPs. Nothing else is
restricted: any op the IR lets run again may, anywhere after its first run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence

import attrs

from model_ir.graph import Graph
from model_ir.recompute import op_flops, recomputable_ops, recompute_flops
from model_ir.simulator import simulate_indices, validate_order, working_set_bound
from model_sched.recompute import drop_unread_recomputations

#: Graphs with more ops get the greedy only, from ``recompute-exact`` and ``recompute``
#: (whose greedy falls back on the model when it cannot fit). Measured on the budgeted
#: beyond-the-zoo steps (benchmarks/beyond_zoo.py --budget-share 0.5, 2 cores): CP-SAT
#: fits 53-183-op steps the greedy cannot within 2-31 s, and finds nothing for 486- and
#: 737-op ones in 30 s; the model builds in under 0.5 s at 737 ops.
MAX_EXACT_OPS = 250
#: Runs per recomputable op the model allows by default (one recomputation).
DEFAULT_MAX_RUNS = 2
#: CP-SAT workers by default: with 2, its portfolio leaves out the LP worker whose bound
#: proves most answers (chain(14) at 30% of its peak range: bound 0 after 20 s with 2
#: workers, 45000 of 49000 FLOPs within 1.2 s with 4, on 2 cores).
DEFAULT_WORKERS = 4
#: Largest objective coefficient sum kept exact (CP-SAT works in 64-bit integers).
_MAX_OBJECTIVE = 2**62


@attrs.frozen
class ExactFit:
    """The answer of :func:`fit_budget_exact` (bytes include persistent buffers).

    ``order``: op positions, an op listed again being a recomputation; ``peak_bytes``,
    ``recompute_flops`` and ``recompute_bytes`` (bytes the recomputations write) are
    the simulator's. ``status``: ``optimal`` (proven least FLOPs, then bytes, among the
    plans with at most ``max_runs`` runs per op), ``feasible`` (fits, not proven),
    ``infeasible`` (proven: no plan of that space fits), ``unknown`` (time ran out
    first), ``below-bound`` (the budget is under ``lower_bound_bytes``: no plan at all
    fits). ``flops_lower_bound``: no plan of the space that fits recomputes fewer FLOPs
    (None when none fits). ``lower_bound_bytes``: no plan with any recomputation peaks
    lower (:func:`recompute_lower_bound`).
    """

    order: tuple[int, ...]
    peak_bytes: int
    budget_bytes: int
    lower_bound_bytes: int
    recompute_flops: int
    recompute_bytes: int
    recomputed_ops: int
    fits: bool
    status: str
    flops_lower_bound: int | None
    max_runs: int
    seconds: float
    interrupted: bool = False
    #: where the order comes from: "model", "hint" (a given order the model did not beat) or "program"
    source: str = "model"
    reason: str = ""

    @property
    def optimal(self) -> bool:
        """Proven least recomputed FLOPs, then bytes, in the model's space."""
        return self.status == "optimal"

    @property
    def flops_optimal(self) -> bool:
        """Fits, and proven least recomputed FLOPs in the model's space (the bytes that
        break ties may not be proven)."""
        return self.fits and self.flops_lower_bound == self.recompute_flops

    @property
    def flops_gap(self) -> float | None:
        """``(FLOPs - bound) / FLOPs`` (0.0 when proven; None when it does not fit)."""
        if not self.fits or self.flops_lower_bound is None:
            return None
        if not self.recompute_flops:
            return 0.0
        return (self.recompute_flops - self.flops_lower_bound) / self.recompute_flops


def recompute_bytes(graph: Graph, order: Sequence[int]) -> int:
    """Bytes the recomputations of ``order`` (op positions) write: their outputs' sizes."""
    seen: set[int] = set()
    total = 0
    for i in order:
        if i in seen:
            total += sum(graph.sizes[graph.buffer_index[b]] for b in graph.ops[i].outputs)
        seen.add(i)
    return total


class _Model:
    """The CP-SAT model of the module docstring, with the maps to encode and decode orders."""

    def __init__(self, graph: Graph, budget: int, copies: list[int]):
        from ortools.sat.python import cp_model

        self.graph = graph
        self.copies = copies
        n = len(graph.ops)
        index = graph.buffer_index
        bufs = graph.buffers
        self.horizon = H = sum(copies)
        m = self.model = cp_model.CpModel()
        anc = _ancestors(graph)
        # runs
        self.runs: list[tuple[int, int]] = [(i, c) for i in range(n) for c in range(copies[i])]
        self.run_of = {rc: r for r, rc in enumerate(self.runs)}
        self.slot = []
        self.present: list = []  # None: mandatory
        for i, c in self.runs:
            lo = anc[i].bit_count()
            self.slot.append(m.new_int_var(lo + c, H - 1, f"s{i}_{c}"))
            self.present.append(None if c == 0 else m.new_bool_var(f"p{i}_{c}"))
        count = n + sum(p for p in self.present if p is not None)
        slots = []
        for r, (i, c) in enumerate(self.runs):
            self._add(self.slot[r] <= count - 1, self.present[r])
            if self.present[r] is None:
                slots.append(m.new_fixed_size_interval_var(self.slot[r], 1, f"run{r}"))
            else:
                slots.append(m.new_optional_fixed_size_interval_var(self.slot[r], 1, self.present[r], f"run{r}"))
                prev = self.run_of[i, c - 1]
                m.add(self.slot[r] > self.slot[prev]).only_enforce_if(self.present[r])
                if self.present[prev] is not None:
                    m.add_implication(self.present[r], self.present[prev])
        m.add_no_overlap(slots)
        first = [self.slot[self.run_of[i, 0]] for i in range(n)]
        for i, preds in enumerate(graph.predecessors):
            implied = 0
            for p in preds:
                implied |= anc[p]
            for p in preds:
                if not implied >> p & 1:
                    m.add(first[p] < first[i])
        self._add_hazards(anc, first)
        # instances: (buffer, copy) -> end variable; graph inputs have copy 0
        size = graph.sizes
        unit = math.gcd(*(s for b, s in zip(bufs, size) if not b.persistent)) or 1
        self.unit = unit
        capacity = budget - graph.persistent_bytes
        self.end: dict[tuple[int, int], object] = {}
        intervals, demands = [], []
        producer = graph.producer
        for bi, buf in enumerate(bufs):
            if buf.persistent or size[bi] == 0:
                continue
            p = producer[bi]
            if p is None:
                if buf.output:
                    capacity -= size[bi]  # alive at every step
                elif not graph.users[bi]:
                    intervals.append(m.new_fixed_size_interval_var(0, 1, f"unused{bi}"))
                    demands.append(size[bi] // unit)
                else:
                    e = self.end[bi, 0] = m.new_int_var(0, H - 1, f"e{bi}")
                    intervals.append(m.new_interval_var(0, e + 1, e + 1, f"i{bi}"))
                    demands.append(size[bi] // unit)
                continue
            for c in range(copies[p]):
                r = self.run_of[p, c]
                e = self.end[bi, c] = m.new_int_var(0, H - 1, f"e{bi}_{c}")
                if buf.output:
                    m.add(e == H - 1)
                self._add(e >= self.slot[r], self.present[r])
                length = m.new_int_var(1, H, f"l{bi}_{c}")
                m.add(length == e + 1 - self.slot[r])
                if self.present[r] is None:
                    intervals.append(m.new_interval_var(self.slot[r], length, e + 1, f"i{bi}_{c}"))
                else:
                    intervals.append(m.new_optional_interval_var(self.slot[r], length, e + 1, self.present[r],
                                                                 f"i{bi}_{c}"))
                demands.append(size[bi] // unit)
        m.add_cumulative(intervals, demands, max(0, capacity) // unit)
        # _forced_at counts step outputs that are graph inputs itself
        self._add_forced_cuts(anc, first, budget - graph.persistent_bytes)
        # coverage: cover[(run, buffer)] -> {copy: literal} (absent when one instance only)
        self.cover: dict[tuple[int, int], dict[int, object]] = {}
        readers: dict[int, list] = {r: [] for r, (_, c) in enumerate(self.runs) if c > 0}
        for r, (j, _) in enumerate(self.runs):
            for b in set(graph.ops[j].uses):
                bi = index[b]
                if bufs[bi].persistent or size[bi] == 0:
                    continue
                p = producer[bi]
                if p is None or copies[p] == 1:
                    if (bi, 0) in self.end:
                        self._add(self.end[bi, 0] >= self.slot[r], self.present[r])
                    continue
                lits = {}
                for c in range(copies[p]):
                    x = lits[c] = m.new_bool_var(f"x{r}_{bi}_{c}")
                    q = self.run_of[p, c]
                    if self.present[q] is not None:
                        m.add_implication(x, self.present[q])
                        readers[q].append(x)
                    m.add(self.slot[q] < self.slot[r]).only_enforce_if(x)
                    m.add(self.end[bi, c] >= self.slot[r]).only_enforce_if(x)
                self.cover[r, bi] = lits
                m.add(sum(lits.values()) == (1 if self.present[r] is None else self.present[r]))
        for q, xs in readers.items():
            if xs:
                m.add(sum(xs) >= 1).only_enforce_if(self.present[q])
            else:
                m.add(self.present[q] == 0)
        self._set_objective()

    def _add(self, constraint, presence) -> None:
        ct = self.model.add(constraint)
        if presence is not None:
            ct.only_enforce_if(presence)

    def _add_hazards(self, anc: list[int], first: list) -> None:
        """A recomputation of op ``i`` runs before any in-place writer of its inputs that
        runs after ``i`` first does (hazard edges order every writer with ``i``)."""
        g = self.graph
        for r, (i, c) in enumerate(self.runs):
            if c == 0:
                continue
            for b in g.ops[i].inputs:
                for w in g.writers[g.buffer_index[b]]:
                    if anc[i] >> w & 1:
                        continue  # wrote it before the first run: every run reads the same
                    if anc[w] >> i & 1:
                        self.model.add(self.slot[r] < first[w]).only_enforce_if(self.present[r])
                    else:  # not ordered by the graph (cannot happen with hazard edges): either side
                        before = self.model.new_bool_var(f"h{r}_{w}")
                        self.model.add(first[w] < first[i]).only_enforce_if(before)
                        self.model.add(first[w] > self.slot[r]).only_enforce_if([before.Not(), self.present[r]])

    def _add_forced_cuts(self, anc: list[int], first: list, capacity: int) -> None:
        """Redundant constraints that tie memory to recomputations (:func:`_forced_at`):
        while op ``v`` first runs, a buffer made by an ancestor of ``v`` and read by a
        descendant of it is alive unless its producer runs again after ``v``, so
        ``sum(size_b * (1 - again[p_b, v])) <= capacity - fixed bytes at v``, where
        ``again[p, v]`` implies a recomputation of ``p`` after ``v``. They cut off no
        solution, and give the LP a knapsack bound on the FLOPs a budget needs."""
        g, m = self.graph, self.model
        desc = _descendants(anc)
        again: dict[tuple[int, int], object] = {}
        for v in range(len(g.ops)):
            fixed, movable = _forced_at(g, anc, desc, v, lambda p: self.copies[p] > 1)
            room = (capacity - fixed) // self.unit
            if room < 0:
                m.add_bool_or([])  # v's working set and what must stay alive exceed the budget
                return
            if sum(g.sizes[bi] for bi, _ in movable) // self.unit <= room:
                continue
            terms = []
            for bi, p in movable:
                if (p, v) not in again:
                    r = again[p, v] = m.new_bool_var(f"again{p}_{v}")
                    later = []
                    for c in range(1, self.copies[p]):
                        q = self.run_of[p, c]
                        w = m.new_bool_var(f"after{p}_{c}_{v}")
                        m.add_implication(w, self.present[q])
                        m.add(self.slot[q] > first[v]).only_enforce_if(w)
                        later.append(w)
                    m.add(sum(later) >= r)
                terms.append((g.sizes[bi] // self.unit, again[p, v]))
            m.add(sum(k * (1 - r) for k, r in terms) <= room)

    def _set_objective(self) -> None:
        g = self.graph
        reruns = [(r, i) for r, (i, c) in enumerate(self.runs) if c > 0]
        flops = {i: op_flops(g, i) for _, i in reruns}
        written = {i: sum(g.sizes[g.buffer_index[b]] for b in g.ops[i].outputs) for _, i in reruns}
        self.flops_unit = math.gcd(*flops.values()) or 1
        bytes_unit = math.gcd(*written.values()) or 1
        most_bytes = sum(written[i] // bytes_unit for _, i in reruns)
        most_flops = sum(flops[i] // self.flops_unit for _, i in reruns)
        self.weight = most_bytes + 1  # FLOPs first, bytes break ties
        if most_flops * self.weight + most_bytes >= _MAX_OBJECTIVE:
            self.weight = 0  # FLOPs alone
        terms = []
        for r, i in reruns:
            coef = (flops[i] // self.flops_unit) * max(1, self.weight) + (written[i] // bytes_unit if self.weight
                                                                         else 0)
            if coef:
                terms.append(coef * self.present[r])
        self.model.minimize(sum(terms))

    def flops_bound(self, objective_bound: float) -> int:
        """Least recomputed FLOPs of any solution whose objective is at least ``objective_bound``."""
        lb = max(0, math.ceil(objective_bound - 1e-6))
        return (lb // self.weight if self.weight else lb) * self.flops_unit

    def hint(self, order: Sequence[int]) -> None:
        """Hint every variable with the encoding of ``order`` (it must fit the copies)."""
        g, m = self.graph, self.model
        index = g.buffer_index
        n_steps = len(order)
        count = [0] * len(g.ops)
        step_of: dict[int, int] = {}  # run -> step
        run_at: list[int] = []
        for t, i in enumerate(order):
            r = self.run_of[i, count[i]]
            count[i] += 1
            step_of[r] = t
            run_at.append(r)
        free = iter(range(n_steps, self.horizon))
        for r in range(len(self.runs)):
            if self.present[r] is not None:
                m.add_hint(self.present[r], r in step_of)
            m.add_hint(self.slot[r], step_of[r] if r in step_of else next(free))
        last: dict[tuple[int, int], int] = {}
        latest: dict[int, int] = {}  # buffer -> copy of its current instance
        for t, r in enumerate(run_at):
            j = self.runs[r][0]
            for b in set(g.ops[j].uses):
                bi = index[b]
                c = latest.get(bi, 0)
                if (bi, c) in self.end:
                    last[bi, c] = t
                if (r, bi) in self.cover:
                    for k, x in self.cover[r, bi].items():
                        m.add_hint(x, k == c)
            for b in g.ops[j].outputs:
                latest[index[b]] = self.runs[r][1]
                last[index[b], self.runs[r][1]] = t
        for (bi, c), e in self.end.items():
            p = g.producer[bi]
            made = p is None or self.run_of[p, c] in step_of
            if g.buffers[bi].output:
                m.add_hint(e, self.horizon - 1)
            elif made:
                m.add_hint(e, last.get((bi, c), 0))
            else:
                m.add_hint(e, step_of.get(self.run_of[p, c], 0) if p is not None else 0)
        for r, lits in self.cover.items():
            if r[0] not in step_of:
                for x in lits.values():
                    m.add_hint(x, False)

    def decode(self, solver) -> list[int]:
        """The order of a solution: present runs by slot."""
        runs = [(solver.value(self.slot[r]), i) for r, (i, _) in enumerate(self.runs)
                if self.present[r] is None or solver.value(self.present[r])]
        return [i for _, i in sorted(runs)]


def _ancestors(graph: Graph) -> list[int]:
    """Bitset of the strict ancestors of every op (ops are in a topological program order)."""
    anc = [0] * len(graph.ops)
    for i, preds in enumerate(graph.predecessors):
        for p in preds:
            anc[i] |= anc[p] | (1 << p)
    return anc


def _descendants(anc: list[int]) -> list[int]:
    desc = [0] * len(anc)
    for i, a in enumerate(anc):
        while a:
            low = a & -a
            desc[low.bit_length() - 1] |= 1 << i
            a ^= low
    return desc


def _forced_at(graph: Graph, anc: list[int], desc: list[int], v: int,
               can_rerun) -> tuple[int, list[tuple[int, int]]]:
    """What is alive while op ``v`` first runs, in any order: its working set, plus every
    non-persistent buffer made by an ancestor of ``v`` (or a graph input) that a
    descendant of ``v`` reads or that is a step output. Returns the bytes of those
    that stay alive whatever is recomputed (producer ``p`` with ``not can_rerun(p)``,
    graph inputs, step outputs, the working set) and ``(buffer, producer)`` for the
    others, which are alive unless their producer runs again after ``v``."""
    index = graph.buffer_index
    ws = {index[b] for b in graph.ops[v].uses} | {index[b] for b in graph.ops[v].outputs}
    fixed = sum(graph.sizes[bi] for bi in ws if not graph.buffers[bi].persistent)
    movable = []
    for bi, buf in enumerate(graph.buffers):
        if buf.persistent or graph.sizes[bi] == 0 or bi in ws:
            continue
        p = graph.producer[bi]
        if p is not None and not anc[v] >> p & 1:
            continue
        if not (buf.output or any(desc[v] >> u & 1 for u in graph.users[bi])):
            continue
        if p is None or buf.output or not can_rerun(p):
            fixed += graph.sizes[bi]
        else:
            movable.append((bi, p))
    return fixed, movable


def recompute_lower_bound(graph: Graph) -> int:
    """Lower bound on the peak (bytes, persistent included) of any order with any
    recomputation: at each op, its working set plus the buffers that are alive across
    it in every order and that no recomputation can make again (made by an op the IR
    never reruns, graph inputs, step outputs). At least
    :func:`~model_ir.simulator.working_set_bound`, and raised by the minimum cuts of
    :mod:`model_sched.recompute_cut` (which ops ran before, what a rerun needs)."""
    return recompute_lower_bounds(graph)[0]


def outputs_bound(graph: Graph) -> int:
    """The part of :func:`recompute_lower_bound` a large graph affords: at each op, its
    working set plus the step outputs made before it in every order (by its ancestors,
    or graph inputs), alive to the end whatever runs again (a training step's loss).
    Linear in the graph per distinct set of outputs an op follows."""
    index, sizes = graph.buffer_index, graph.sizes
    outputs = [bi for bi, b in enumerate(graph.buffers) if b.output and not b.persistent and sizes[bi]]
    bit = {bi: 1 << k for k, bi in enumerate(outputs)}
    always = sum(bit[bi] for bi in outputs if graph.producer[bi] is None)
    made = [0] * len(graph.ops)  # per op, the outputs it or its ancestors make (a bitset)
    total: dict[int, int] = {}
    best = 0
    for v, op in enumerate(graph.ops):  # ops are in a topological program order
        before = 0  # made by its strict ancestors
        for p in graph.predecessors[v]:
            before |= made[p]
        made[v] = before | sum(bit.get(index[b], 0) for b in op.outputs)
        ws = {index[b] for b in op.uses} | {index[b] for b in op.outputs}
        ws = {bi for bi in ws if not graph.buffers[bi].persistent}
        alive = (before | always) & ~sum(bit.get(bi, 0) for bi in ws)
        if alive not in total:
            total[alive] = sum(sizes[bi] for bi in outputs if alive & bit[bi])
        best = max(best, sum(sizes[bi] for bi in ws) + total[alive])
    return graph.persistent_bytes + best


def recompute_flops_lower_bound(graph: Graph, budget: int) -> int | None:
    """Lower bound on the FLOPs any plan fitting ``budget`` bytes recomputes (None when
    no plan fits). While op ``v`` first runs, the buffers alive across it in every order
    (:func:`_forced_at`) that a recomputation can make again are alive unless their
    producer runs again after ``v``, which costs at least its FLOPs once: fitting the
    budget at ``v`` is a covering knapsack over those producers (bytes freed, FLOPs
    paid), whose fractional relaxation bounds it; the bound is the largest over ``v``.
    Free producers (no FLOPs counted, e.g. elementwise ops) cover first, so the bound is
    0 until the budget is below what they can free. Quadratic: for small graphs."""
    return recompute_lower_bounds(graph, budget)[1]


def recompute_lower_bounds(graph: Graph, budget: int | None = None) -> tuple[int, int | None]:
    """:func:`recompute_lower_bound` and, with a ``budget``, :func:`recompute_flops_lower_bound`
    (else None), in one pass over the ops' forced sets (the quadratic part)."""
    most, flops, fits = 0, 0, budget is not None
    for fixed, movable in _forced_sets(graph):
        most = max(most, fixed)
        if fits:
            at_v = _flops_to_free(graph, graph.persistent_bytes + fixed - budget, movable)
            fits = at_v is not None
            flops = max(flops, at_v or 0)
    bound = _cut_bound(graph, max(graph.persistent_bytes + most, working_set_bound(graph)))
    return bound, (flops if fits and bound <= budget else None)


def _cut_bound(graph: Graph, floor: int) -> int:
    """:func:`~model_sched.recompute_cut.recompute_cut_bound`, once per graph (each
    budget's solve asks for it)."""
    from model_sched.recompute_cut import recompute_cut_bound

    cached = graph.__dict__.get("_recompute_cut_bound")
    if cached is None or cached[0] != floor:
        cached = (floor, recompute_cut_bound(graph, floor))
        graph.__dict__["_recompute_cut_bound"] = cached
    return cached[1]


def _flops_to_free(graph: Graph, excess: int, movable: list[tuple[int, int]]) -> int | None:
    """The fractional covering knapsack of :func:`recompute_flops_lower_bound` at one op:
    the least FLOPs of reruns of the producers of ``movable`` (``(buffer, producer)``)
    freeing the bytes above the budget (``excess`` plus the movable bytes); None when
    even all of them do not."""
    need = excess + sum(graph.sizes[bi] for bi, _ in movable)
    if need <= 0:
        return 0
    freed: dict[int, int] = {}
    for bi, p in movable:
        freed[p] = freed.get(p, 0) + graph.sizes[bi]
    flops = 0
    for p in sorted(freed, key=lambda p: op_flops(graph, p) / freed[p]):
        if freed[p] >= need:
            return flops + -(-op_flops(graph, p) * need // freed[p])
        flops += op_flops(graph, p)
        need -= freed[p]
    return None


def _forced_sets(graph: Graph) -> Iterator[tuple[int, list[tuple[int, int]]]]:
    """:func:`_forced_at` of every op, with the IR's recomputable ops."""
    anc = _ancestors(graph)
    desc = _descendants(anc)
    allowed = recomputable_ops(graph)
    for v in range(len(graph.ops)):
        yield _forced_at(graph, anc, desc, v, allowed.__contains__)


def _useful_recomputations(graph: Graph) -> set[int]:
    """Ops the IR lets run again that make a non-empty buffer some op reads."""
    out = set()
    for i in recomputable_ops(graph):
        for b in graph.ops[i].outputs:
            bi = graph.buffer_index[b]
            if graph.sizes[bi] > 0 and not graph.buffers[bi].persistent and graph.users[bi]:
                out.add(i)
                break
    return out


def fit_budget_exact(graph: Graph, budget: int, *, max_runs: int = DEFAULT_MAX_RUNS,
                     time_limit: float | None = None, hints: Sequence[Sequence[int]] = (),
                     workers: int = DEFAULT_WORKERS) -> ExactFit:
    """The order of ``graph`` with recomputations that fits ``budget`` bytes (the
    simulator's peak, persistent buffers included) with the fewest recomputed FLOPs,
    then bytes, among the orders running each op at most ``max_runs`` times, solved
    by CP-SAT within ``time_limit`` seconds (see the module docstring).

    ``hints``: orders (op positions, ops possibly repeated) to warm-start from; the
    best of them that fits seeds the solver, an op's runs allowed are raised to what
    it uses, and it is returned when the solver finds nothing better. When the time
    runs out or Ctrl-C stops the solve, the best order found so far is returned
    (``interrupted`` says which); when nothing fits, the best given or program order.
    """
    from model_sched.solvers import CpSatBackend

    CpSatBackend().available()
    started = time.perf_counter()
    if max_runs < 1:
        raise ValueError(f"max_runs must be >= 1, got {max_runs}")
    n = len(graph.ops)
    bound = recompute_lower_bound(graph)
    runs_allowed = max_runs

    def answer(order: list[int], source: str, status: str, flops_lb: int | None, interrupted=False,
               reason: str = "") -> ExactFit:
        order = drop_unread_recomputations(graph, order)
        validate_order(graph, order)
        peak = simulate_indices(graph, order).peak_bytes
        fits = peak <= budget
        flops = recompute_flops(graph, order)
        if status in ("optimal", "feasible") and not fits:
            # the model's accounting never undercounts the simulator's; if it ever does,
            # the simulator wins and the answer is not claimed
            status, flops_lb, reason = "unknown", 0, f"model answer peaks at {peak} B in the simulator"
        elif status == "infeasible" and fits:  # a given order fits: the proof cannot hold
            status, flops_lb, reason = "unknown", 0, "the model refused an order the simulator fits"
        if fits and flops_lb is not None:
            flops_lb = min(flops_lb, flops)
        return ExactFit(tuple(order), peak, budget, bound, flops, recompute_bytes(graph, order),
                        len(order) - n, fits, status, flops_lb, runs_allowed, time.perf_counter() - started,
                        interrupted, source, reason)

    candidates = []
    for h in hints:
        h = drop_unread_recomputations(graph, list(h))
        validate_order(graph, h)
        peak = simulate_indices(graph, h).peak_bytes
        key = (peak > budget, recompute_flops(graph, h), recompute_bytes(graph, h), peak)
        candidates.append((key, h))
    candidates.sort(key=lambda kv: kv[0])
    fallback = candidates[0][1] if candidates else list(range(n))
    fallback_source = "hint" if candidates else "program"
    if bound > budget:
        return answer(fallback, fallback_source, "below-bound", None, reason=(
            f"no plan fits: some op needs at least {bound} B alive while it runs, whatever is recomputed "
            "(persistent buffers, its inputs and outputs, and buffers no recomputation can free)"))
    useful = _useful_recomputations(graph)
    copies = [max_runs if i in useful else 1 for i in range(n)]
    seed = candidates[0][1] if candidates and not candidates[0][0][0] else None
    if seed is not None:
        runs = [0] * n
        for i in seed:
            runs[i] += 1
        copies = [max(c, k) for c, k in zip(copies, runs)]
        runs_allowed = max(max_runs, *copies)
    model = _Model(graph, budget, copies)
    if seed is not None:
        model.hint(seed)
    from model_sched.solvers import solve_cpsat

    solver, status, interrupted = solve_cpsat(model.model, time_limit=time_limit, workers=workers)
    from ortools.sat.python import cp_model

    if status == cp_model.INFEASIBLE:
        return answer(fallback, fallback_source, "infeasible", None, interrupted,
                      f"no order running each op at most {runs_allowed} times fits {budget} B")
    if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        name = "optimal" if status == cp_model.OPTIMAL else "feasible"
        found = answer(model.decode(solver), "model", name, model.flops_bound(solver.best_objective_bound),
                       interrupted)
        if seed is None or not found.fits:
            return found
        hinted = answer(seed, "hint", name, found.flops_lower_bound, interrupted)
        if (hinted.recompute_flops, hinted.recompute_bytes, hinted.peak_bytes) < \
                (found.recompute_flops, found.recompute_bytes, found.peak_bytes):
            return hinted
        return found
    lb = model.flops_bound(solver.best_objective_bound) if math.isfinite(solver.best_objective_bound) else 0
    if seed is not None:
        return answer(seed, "hint", "feasible", lb, interrupted, "the solver found no order in time")
    return answer(fallback, fallback_source, "unknown", lb, interrupted, "the solver found no order in time")


class RecomputeExact:
    """Scheduler ``recompute-exact``: under a budget, the ``recompute`` greedy's answer
    as a warm start, then :func:`fit_budget_exact` with the time left (graphs of at
    most :data:`MAX_EXACT_OPS` ops; larger ones get the greedy only). Without a
    budget it is ``auto``."""

    name = "recompute-exact"
    help = (f"fits --budget with the fewest recomputed FLOPs: CP-SAT over orders with at most one "
            f"recomputation per op, warm-started by 'recompute' (graphs up to {MAX_EXACT_OPS} ops)")
    #: share of the time the greedy warm start gets
    GREEDY_SHARE = 0.3

    def run(self, problem, control, solver=None) -> None:
        from model_sched.control import SolveControl
        from model_sched.schedulers import Auto, Recompute
        from model_sched.solvers import CpSatBackend

        budget = problem.memory_budget
        if budget is None:
            Auto().run(problem, control, solver)
            return
        n = len(problem.graph.ops)
        if n > MAX_EXACT_OPS:
            Recompute().run(problem, control, solver)
            control.report(f"recompute-exact: {n} ops > {MAX_EXACT_OPS}, greedy recomputation only")
            return
        CpSatBackend().available()
        remaining = control.remaining()
        inner = SolveControl(problem.lv, None if remaining is None else remaining * self.GREEDY_SHARE,
                             control.progress, budget)
        inner.raise_bound(control.bound, "bound")
        inner.raise_order_bound(control.order_bound)
        try:
            Recompute().run(problem, inner, solver)
        finally:
            for source, p in inner.sources.items():
                control.sources[source] = min(p, control.sources.get(source, p))
            if inner.best_order is not None:
                control.offer(inner.best_order, inner.best_source, inner.best_peak, inner.best_flops)
            control.raise_bound(inner.bound, "bound")
            control.raise_order_bound(inner.order_bound, "order bound")
        if control.best_peak <= budget and len(control.best_order) == n:
            return  # fits without recomputation: nothing to pay
        solve_exact(problem, control)


def solve_exact(problem, control) -> None:
    """:func:`fit_budget_exact` on ``problem`` under its budget with the time ``control``
    has left, warm-started by its best order: offers the answer (source
    ``recompute-exact``) and reports how it ended. Ctrl-C during the solve is raised
    again once the best order so far is offered."""
    n = len(problem.graph.ops)
    hints = [control.best_order] if control.best_order is not None else []
    control.report(f"recompute-exact: CP-SAT on {n} ops, at most {DEFAULT_MAX_RUNS} runs per op "
                   "(more where the warm start has them)")
    fit = fit_budget_exact(problem.graph, problem.memory_budget, time_limit=control.remaining(), hints=hints)
    control.offer(list(fit.order), RecomputeExact.name, fit.peak_bytes, fit.recompute_flops)
    if fit.status == "infeasible":
        control.no_fit_within_runs = fit.max_runs
    bound = "none fits" if fit.flops_lower_bound is None else f">= {fit.flops_lower_bound} FLOPs"
    control.report(f"recompute-exact: {fit.status} in {fit.seconds:.2f} s, {fit.recompute_flops} FLOPs "
                   f"recomputed, bound {bound} (orders with at most {fit.max_runs} runs per op)")
    if fit.interrupted:
        raise KeyboardInterrupt  # Ctrl-C stopped the solver: the caller keeps the best so far
