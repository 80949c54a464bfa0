"""Fitting a memory budget by recomputation: run ops again instead of keeping their
outputs alive (activation checkpointing, planned op by op).

:func:`fit_budget` starts from an order (its in-place writes of persistent buffers that
touch nothing else, such as AdamW's weight decay, moved just before the ops depending
on them, where they no longer keep forward ops from running again) and, while its
peak exceeds the budget, takes the step at the peak and frees one buffer that is alive
there but not used: the buffer's producer (and, when its inputs are gone by then, their
producers, up to :data:`MAX_CHAIN` ops; or none of them, keeping those inputs alive
instead) runs again just before the buffer's next use. Of these moves it simulates a
short list, the cheapest that close the gap at that step and those freeing the most
bytes per unit of cost, and keeps the one removing the most bytes above the budget
(summed over all steps) per unit of cost, whether it closes the gap or not; a move that
raises the peak or removes nothing is not tried again. Cost is the recomputed ops'
FLOPs (``meta["flops"]``) plus the bytes they write (a memory-bound op is not
free); the answer reports the FLOPs alone. Once the order fits, the reruns it does
not need are dropped (those nobody reads, then, costliest first, any whose removal
keeps the peak within the budget: early moves can be made redundant by later ones).
Every order is the one simulator's (:func:`model_ir.simulator.timeline_indices`
while searching, :func:`~model_ir.simulator.simulate_indices` for the answer).

Recomputation is only allowed where the IR allows it (:mod:`model_ir.recompute`).
No order, with or without recomputation, goes below
:func:`model_ir.simulator.working_set_bound`: every op needs its inputs and outputs
alive while it runs; a budget under it gets an answer that says so, with the lowest
peak the greedy reaches aiming at the bound itself.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Sequence

import attrs

from model_ir.graph import Graph
from model_ir.recompute import op_flops, recomputable_ops, recompute_flops, recomputations
from model_ir.simulator import (op_buffer_positions, simulate_indices, timeline_indices, validate_order,
                                working_set_bound)

#: Most ops one move recomputes (a buffer's producer and the producers of its inputs).
MAX_CHAIN = 16
#: Chain depths tried per buffer: its producer alone (keeping its inputs), a short
#: chain, a long one (a whole block, as checkpointing recomputes).
CHAIN_DEPTHS = (1, 4, MAX_CHAIN)
#: Moves simulated per step of the search, of each kind (closing the gap alone, or not).
SHORTLIST = 6
#: Producers a chain may try to run again, per op of depth (bounds the backtracking).
EXPANSIONS_PER_CHAIN = 4
#: Refits the local search (:func:`_cheapen`) may make, per op its first answer reruns.
CHEAPEN_REFITS_PER_OP = 2
#: Share of the time :func:`fit_budget_from` gives its first run (the best order at the
#: budget itself; each later run gets half of what is left, a run going on from one that
#: ran out of time all of it). A large step's greedy is slow but steady: efficientnet_v2_s's
#: half-way budget (6041 ops) takes 1.8 s from the best order, half the 3.6 s that
#: optimize()'s 5 s leave after the order search; other starts, with less time, end further off.
FIRST_RUN_SHARE = 0.75


@contextlib.contextmanager
def _cycle_collector_paused():
    """Python's cycle collector off (as it was, after): the greedy makes no reference
    cycles, but the instance lists it keeps for a move outlive young collections, and the
    full collections that then follow walk every object of the process (with a model and
    transformers loaded, about 3x the greedy's own time)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@attrs.frozen
class BudgetFit:
    """The answer of :func:`fit_budget` (bytes include persistent buffers).

    ``order``: op positions, an op listed again being a recomputation. ``fits``: its
    peak is at most the budget. ``lower_bound_bytes``: no order, with any
    recomputation, peaks below it (:func:`~model_ir.simulator.working_set_bound`).
    """

    order: tuple[int, ...]
    peak_bytes: int
    budget_bytes: int
    lower_bound_bytes: int
    recompute_flops: int
    recomputed_ops: int
    fits: bool
    seconds: float
    #: why the search stopped short of the budget ("" when it fits)
    reason: str = ""


@attrs.frozen
class _OpFacts:
    """What the greedy reads of each op at every move, computed once per graph."""

    allowed: frozenset[int]  # ops that may run again (model_ir.recompute)
    cost: list[int]  # a rerun's cost: FLOPs plus the bytes it writes
    # per op, its inputs as (buffer position, persistent, written in place by some op)
    inputs: list[tuple[tuple[int, bool, bool], ...]]
    output: list[bool]  # per buffer position: a graph output, alive to the end
    # ops writing persistent buffers in place and touching no other (see _defer_neutral_writes)
    neutral: frozenset[int]


def _op_facts(graph: Graph) -> _OpFacts:
    cached = graph.__dict__.get("_recompute_op_facts")
    if cached is None:
        index, sizes, writers = graph.buffer_index, graph.sizes, graph.writers
        persistent = [b.persistent for b in graph.buffers]
        cached = graph.__dict__["_recompute_op_facts"] = _OpFacts(
            allowed=recomputable_ops(graph),
            cost=[op_flops(graph, i) + sum(sizes[index[o]] for o in op.outputs) for i, op in enumerate(graph.ops)],
            inputs=[tuple((index[b], persistent[index[b]], bool(writers[index[b]])) for b in op.inputs)
                    for op in graph.ops],
            output=[b.output for b in graph.buffers],
            neutral=frozenset(i for i, op in enumerate(graph.ops)
                              if op.mutates and not op.outputs and all(persistent[index[b]] for b in op.uses)))
    return cached


class _State:
    """One order's instances: who is alive where, who reads what (rebuilt per move, so
    written for speed: one pass, no per-step maps)."""

    def __init__(self, graph: Graph, order: list[int]):
        self.order = order
        uses, outputs = op_buffer_positions(graph)
        first: dict[int, int] = {}  # op -> step of its first run
        # instance k: buffer, start, end (exclusive), use steps
        by_buffer: dict[int, list[int]] = {}  # buffer -> its instances, oldest first
        buf: list[int] = []
        start: list[int] = []
        use_steps: list[list[int]] = []
        latest: dict[int, int] = {}
        made_at: list[list[int]] = []  # step -> instances made
        for t, i in enumerate(order):
            if i not in first:
                first[i] = t
            for bi in uses[i]:
                k = latest.get(bi)
                if k is None:  # a graph input: alive from the start
                    k = latest[bi] = len(buf)
                    by_buffer.setdefault(bi, []).append(k)
                    buf.append(bi)
                    start.append(0)
                    use_steps.append([t])
                else:
                    use_steps[k].append(t)
            made = []
            for bi in outputs[i]:
                k = latest[bi] = len(buf)
                by_buffer.setdefault(bi, []).append(k)
                buf.append(bi)
                start.append(t)
                use_steps.append([])
                made.append(k)
            made_at.append(made)
        self.first, self.by_buffer, self.buf, self.start, self.uses = first, by_buffer, buf, start, use_steps
        self.outputs = made_at
        n = len(order)
        output = _op_facts(graph).output
        self.end = [(n if output[b] else (u[-1] if u else s) + 1) for b, s, u in zip(buf, start, use_steps)]

    def alive(self, k: int, t: int) -> bool:
        return self.start[k] <= t < self.end[k]


@_cycle_collector_paused()
def fit_budget(graph: Graph, order: Sequence[int], budget: int, *, time_limit: float | None = None,
               max_moves: int | None = None) -> BudgetFit:
    """An order of ``graph`` with recomputations whose peak is at most ``budget`` bytes,
    found from ``order`` (op positions, each op once) by the greedy described in the
    module docstring; the best order found (lowest peak) when the budget cannot be met
    in ``time_limit`` seconds or by this method."""
    started = time.perf_counter()
    deadline = None if time_limit is None else started + time_limit
    bound = working_set_bound(graph)
    order = list(order)
    validate_order(graph, order)
    timeline = timeline_indices(graph, order)
    peak = max(timeline, default=graph.persistent_bytes)
    # Below the bound no order fits: aim at the bound, for the lowest peak the greedy finds.
    aim = max(budget, bound)
    if peak > aim:  # an order that fits is left as it is
        deferred = _defer_neutral_writes(graph, order)
        later = timeline_indices(graph, deferred) if deferred != order else timeline
        if max(later, default=peak) <= peak:  # never raised: the moved ops touch no transient byte
            order, timeline = deferred, later
    reason = ""
    banned: set[tuple] = set()  # (buffer, insertion op, ops) moves that made things worse
    moves = 0
    limit = max_moves if max_moves is not None else 8 * len(graph.ops)
    while not reason and peak > aim:
        if deadline is not None and time.perf_counter() >= deadline:
            reason = "time limit"
            break
        if moves >= limit:
            reason = f"stopped after {moves} recomputations"
            break
        state = _State(graph, order)
        t = timeline.index(peak)
        shortlist = _shortlist(graph, state, t, peak - aim, banned)
        if not shortlist:
            reason = "no buffer alive at the peak can be recomputed to lower it"
            break
        best = None  # (fits, -gain per cost or cost, ...)
        excess = _excess(timeline, aim)
        for key, at, chain, cost in shortlist:
            candidate = order[:at] + chain + order[at:]
            new = _timeline_with(graph, state, timeline, at, chain)
            new_peak = max(new)
            gain = excess - _excess(new, aim)
            if new_peak > peak or gain <= 0:
                banned.add(key)
                continue
            # Bytes above the budget removed per unit of cost, closing the gap or not: a cheap
            # partial move beats an expensive one that closes it (more cheap ones may follow).
            rank = (-gain / (cost + 1), new_peak > aim)
            if best is None or rank < best[0]:
                best = (rank, candidate, new, new_peak)
        if best is None:
            continue  # every move tried made things worse: they are banned, look again
        _, order, timeline, peak = best
        moves += 1
    if peak <= aim:
        order, peak = _drop_needless(graph, order, aim, deadline)
    if bound > budget:
        reason = (f"no order fits: op working sets need at least {bound} B (persistent buffers plus the "
                  "largest op's inputs and outputs)")
    validate_order(graph, order)
    profile = simulate_indices(graph, order)  # the one simulator's figure, as every answer's
    assert profile.peak_bytes == peak
    flops = recompute_flops(graph, order)
    return BudgetFit(tuple(order), peak, budget, bound, flops, len(order) - len(graph.ops),
                     peak <= budget, time.perf_counter() - started, reason)


def _defer_neutral_writes(graph: Graph, order: list[int]) -> list[int]:
    """``order`` with each op that writes persistent buffers in place and touches no other
    (AdamW's decoupled weight decay, ``param.mul_(1 - lr * wd)``) moved to just before the
    first op that depends on it. Such an op frees and allocates nothing, so the order
    search may leave it anywhere; but where it runs early, right after the forward pass's
    last read of its parameter, no forward op reading that parameter may run again before
    the update (the rerun would read the decayed weights). Late, they may."""
    neutral = _op_facts(graph).neutral
    if not neutral:
        return order
    predecessors = graph.predecessors
    pending: dict[int, None] = {}  # deferred ops, in their order
    out: list[int] = []

    def flush(w: int) -> None:
        del pending[w]
        for q in predecessors[w]:
            if q in pending:
                flush(q)
        out.append(w)

    for i in order:
        if i in neutral and i not in pending:
            pending[i] = None
            continue
        for q in predecessors[i]:
            if q in pending:
                flush(q)
        out.append(i)
    while pending:
        flush(next(iter(pending)))
    return out


def _timeline_with(graph: Graph, state: _State, timeline: Sequence[int], at: int, chain: list[int]) -> list[int]:
    """``timeline_indices(graph, state.order[:at] + chain + state.order[at:])`` from the
    instances of ``state.order`` and its ``timeline``: only the instances the chain reads
    (stretched to their read) or makes again (cut at their last use before ``at``; the
    chain's instance takes their later uses) change, the rest shift by the chain's
    length. Linear in the steps, as a simulation, but without rebuilding every instance."""
    uses, outputs = op_buffer_positions(graph)
    sizes = graph.sizes
    shift = len(chain)
    # Steps of the chain: what was alive across step ``at``, not what ``at`` makes.
    gap = timeline[at] - sum(sizes[state.buf[k]] for k in state.outputs[at])
    new = [*timeline[:at], *([gap] * shift), *timeline[at:]]
    stretched: dict[int, int] = {}  # instance read by the chain -> end (exclusive, new steps)
    made: dict[int, list[int]] = {}  # buffer -> [start, last read] of the chain's instance
    for j, i in enumerate(chain):
        step = at + j
        for bi in uses[i]:
            if bi in made:
                made[bi][1] = step
            else:
                k = _latest_before(state, bi, at)
                stretched[k] = max(stretched.get(k, 0), step + 1)
        for bi in outputs[i]:
            made[bi] = [step, step]
    diff: dict[int, int] = {}

    def move(start: int, old_end: int, new_end: int, size: int) -> None:
        if new_end != old_end:
            diff[old_end] = diff.get(old_end, 0) + size
            diff[new_end] = diff.get(new_end, 0) - size

    def shifted(end: int) -> int:
        return end if end <= at else end + shift

    for bi, (start, last) in made.items():
        k = _latest_before(state, bi, at)  # the instance the chain's one replaces from ``at`` on
        before = [u for u in state.uses[k] if u < at]
        later = [u for u in state.uses[k] if u >= at]
        end = max(before[-1] + 1 if before else state.start[k] + 1, stretched.pop(k, 0))
        move(state.start[k], shifted(state.end[k]), end, sizes[bi])
        last = later[-1] + shift if later else last
        diff[start] = diff.get(start, 0) + sizes[bi]
        diff[last + 1] = diff.get(last + 1, 0) - sizes[bi]
    for k, end in stretched.items():
        old = shifted(state.end[k])
        move(state.start[k], old, max(old, end), sizes[state.buf[k]])
    _add_diff(new, diff)
    return new


def _add_diff(timeline: list[int], diff: dict[int, int]) -> None:
    """Add to ``timeline`` the bytes ``diff`` gives (step -> change from there on), in place."""
    live = 0
    points = sorted(diff)
    for a, b in zip(points, points[1:]):
        live += diff[a]
        if live:
            for t in range(a, min(b, len(timeline))):
                timeline[t] += live


def _timeline_without(graph: Graph, state: _State, timeline: Sequence[int], at: int) -> list[int]:
    """``timeline_indices(graph, order)`` for ``state.order`` without the rerun at step
    ``at``, from its instances and ``timeline``: the rerun's instances go, their later
    uses read the instance before (stretched to them), the instances it read may end
    earlier; the rest shift back by one step after ``at``."""
    uses = op_buffer_positions(graph)[0]
    sizes, output, n = graph.sizes, _op_facts(graph).output, len(state.order)
    diff: dict[int, int] = {}  # old step -> bytes alive from there on, added

    def add(lo: int, hi: int, size: int) -> None:  # ``size`` bytes more over steps [lo, hi)
        if lo < hi and size:
            diff[lo] = diff.get(lo, 0) + size
            diff[hi] = diff.get(hi, 0) - size

    for k in state.outputs[at]:
        size = sizes[state.buf[k]]
        add(at, state.end[k], -size)
        if state.uses[k]:  # (an unread one stretches nothing)
            before = _latest_before(state, state.buf[k], at)
            add(state.end[before], state.end[k], size)
    for bi in set(uses[state.order[at]]):
        k = _latest_before(state, bi, at)
        left = [u for u in state.uses[k] if u != at]
        end = n if output[bi] else (left[-1] if left else state.start[k]) + 1
        add(end, state.end[k], -sizes[bi])
    new = list(timeline)
    _add_diff(new, diff)
    del new[at]
    return new


def _drop_needless(graph: Graph, order: list[int], budget: int, deadline: float | None) -> tuple[list[int], int]:
    """``order`` without the recomputations it does not need: reruns whose outputs nobody
    reads, then, costliest first, every rerun with FLOPs whose removal keeps the peak
    within ``budget`` (a greedy's early moves can be made redundant by later ones).
    Dropping a rerun is always valid: its readers read the previous instance, which no
    op writes (recomputable ops' outputs are never written in place)."""
    order = drop_unread_recomputations(graph, order)
    costly = sorted({i for _, i in recomputations(order) if op_flops(graph, i)}, key=lambda i: -op_flops(graph, i))
    state, timeline = None, timeline_indices(graph, order)
    for i in costly:
        at = len(order)
        while deadline is None or time.perf_counter() < deadline:
            at = max((t for t in range(at) if order[t] == i), default=-1)
            if at <= order.index(i):  # the first run is no recomputation
                break
            if state is None:  # of the current order, rebuilt after a drop (most tries keep the rerun)
                state = _State(graph, order)
            new = _timeline_without(graph, state, timeline, at)
            if max(new) <= budget:
                order, state, timeline = order[:at] + order[at + 1:], None, new
    order = drop_unread_recomputations(graph, order)  # dropping a rerun can leave the reruns feeding it unread
    return order, max(timeline_indices(graph, order), default=graph.persistent_bytes)


def drop_unread_recomputations(graph: Graph, order: Sequence[int]) -> list[int]:
    """``order`` without the recomputations whose new instances no later use reads
    (only non-empty, non-persistent buffers count). Dropping one changes no other
    lifetime except to shorten its inputs' ones, so the peak never rises and the
    order stays valid; repeated until none is left."""
    order = list(order)
    index = graph.buffer_index
    bufs = graph.buffers
    while True:
        latest: dict[int, int] = {}  # buffer -> step of the run that made its current instance
        read: set[int] = set()
        seen: set[int] = set()
        again: list[int] = []
        for t, i in enumerate(order):
            op = graph.ops[i]
            for b in set(op.uses):
                bi = index[b]
                if bi in latest and bufs[bi].size > 0 and not bufs[bi].persistent:
                    read.add(latest[bi])
            for b in op.outputs:
                latest[index[b]] = t
            if i in seen:
                again.append(t)
            seen.add(i)
        unread = {t for t in again if t not in read}
        if not unread:
            return order
        order = [i for t, i in enumerate(order) if t not in unread]


def _excess(timeline: Sequence[int], budget: int) -> int:
    """Bytes above the budget, summed over the steps (0 when the order fits)."""
    return sum(x - budget for x in timeline if x > budget)


def _shortlist(graph: Graph, state: _State, t: int, excess: int,
               banned: set) -> list[tuple[tuple, int, list[int], int]]:
    """The moves worth simulating at peak step ``t``: ``(key, insertion step, ops to
    insert, cost)``, the :data:`SHORTLIST` cheapest that close the gap there on their
    own and the :data:`SHORTLIST` freeing the most bytes per cost."""
    facts = _op_facts(graph)
    producer = graph.producer
    sizes = graph.sizes
    made_at_t = set(state.outputs[t])
    closing, partial = [], []
    for k in range(len(state.buf)):
        if not state.alive(k, t) or k in made_at_t or t in state.uses[k]:
            continue  # dead at t, or in the working set of step t
        b = state.buf[k]
        p = producer[b]
        if p is None or p not in facts.allowed or facts.output[b]:
            continue
        later = [u for u in state.uses[k] if u > t]
        if not later:
            continue
        at = later[0]
        seen = set()
        # A short chain keeps the inputs it needs alive; a long one makes them again too.
        for depth in CHAIN_DEPTHS:
            chain = _chain(graph, state, p, at, t, depth)
            if chain is None:
                break  # refused for the producer itself, at any depth
            ops, extra, cut = chain
            key = (b, state.order[at], tuple(ops))
            saving = sizes[b] - extra
            if key[2] not in seen and key not in banned and saving > 0:
                cost = sum(facts.cost[i] for i in ops)
                move = (key, at, ops, cost)
                if saving >= excess:
                    closing.append((cost, move))
                else:
                    partial.append((-saving / (cost + 1), move))
            seen.add(key[2])
            if not cut:
                break  # no limit stopped this chain: a deeper search makes the same one
    closing.sort(key=lambda x: x[0])
    partial.sort(key=lambda x: x[0])
    return [m for _, m in closing[:SHORTLIST]] + [m for _, m in partial[:SHORTLIST]]


def _chain(graph: Graph, state: _State, p: int, at: int, t: int,
           max_depth: int = MAX_CHAIN) -> tuple[list[int], int, bool] | None:
    """The ops to run just before step ``at`` to make op ``p``'s outputs again (``p``
    last, producers of inputs that are gone by then first), the bytes of inputs whose
    lifetime this extends across step ``t``, and whether ``max_depth`` or the expansions
    left stopped it from trying a producer (else a larger ``max_depth`` gives the same
    chain); None when not allowed."""
    facts = _op_facts(graph)
    allowed, sizes, producer = facts.allowed, graph.sizes, graph.producer
    inputs, writers = facts.inputs, graph.writers
    outputs = op_buffer_positions(graph)[1]
    first, end = state.first, state.end
    ops: list[int] = []
    planned: set[int] = set()  # buffers the chain makes itself
    # Producers already found not worth running again, and how many more may be tried:
    # backtracking over a wide graph (many inputs per op) would otherwise revisit the
    # same ops exponentially often.
    rejected: set[int] = set()
    tries = [EXPANSIONS_PER_CHAIN * max_depth]
    cut = [False]

    # (Written for speed, as _State: the search runs millions of times on a large step.)
    def need(i: int, depth: int) -> int | None:
        """Plan op ``i`` (and what it needs); the bytes stretched over ``t``, or None."""
        lo = first.get(i, at)
        if lo >= at:
            return None
        extra = 0
        for bi, persistent, written in inputs[i]:
            if written and any(lo < first.get(w, -1) < at for w in writers[bi]):
                return None  # written in place since op i first ran: a rerun would read other values
            if persistent or bi in planned:
                continue
            k = _latest_before(state, bi, at)
            if k is None:
                return None
            if end[k] > at:
                continue  # alive there anyway
            # Keeping it alive until the chain runs costs its bytes at t if it died before t.
            keep = sizes[bi] if end[k] <= t else 0
            q = producer[bi]
            if keep and q is not None and q in allowed and q not in rejected:
                if depth >= max_depth or tries[0] <= 0:
                    cut[0] = True
                else:
                    tries[0] -= 1
                    mark = len(ops)
                    sub = need(q, depth + 1)
                    if sub is not None and sub < keep:
                        extra += sub
                        continue
                    for j in ops[mark:]:  # keeping the input is cheaper, or its producer cannot run again
                        planned.difference_update(outputs[j])
                    del ops[mark:]
                    rejected.add(q)
            extra += keep
        ops.append(i)
        planned.update(outputs[i])
        return extra

    extra = need(p, 1)
    # The recursive closure refers to itself: unbound, it is freed now rather than left to
    # the cycle collector (which, over many calls, cost the search more than the search).
    need = None  # noqa: F841
    return None if extra is None else (ops, extra, cut[0])


def _latest_before(state: _State, bi: int, at: int) -> int | None:
    """The instance of buffer ``bi`` made last before step ``at``."""
    best = None
    for k in state.by_buffer.get(bi, ()):  # oldest first
        if state.start[k] >= at:
            break
        best = k
    return best


@_cycle_collector_paused()
def fit_budget_from(graph: Graph, bases: Sequence[Sequence[int]], budget: int, *,
                    time_limit: float | None = None, targets: int = 4) -> BudgetFit:
    """:func:`fit_budget` from each of ``bases`` (orders of op positions): aiming at
    ``budget``, and when none meets it at up to ``targets - 1`` lower targets halfway
    to the working-set bound each (the greedy is not monotone in its target: a tighter
    one can find a plan a looser one misses). Returns the answer that fits ``budget`` with
    the fewest recomputed FLOPs, else the one with the lowest peak; a fitting answer is
    then made cheaper in the time left (:func:`_cheapen`). A run that runs out of time
    is continued from where it stopped, before any other base is tried (efficientnet_v2_s's
    half-way budget: fits in 2 s instead of 3)."""
    started = time.perf_counter()
    bound = working_set_bound(graph)
    aims = [budget]
    while len(aims) < targets and aims[-1] > bound:
        aims.append(max(bound, (aims[-1] + bound) // 2))
    best: BudgetFit | None = None
    # (start order, aim, whether it goes on from a run that ran out of time); every base at the budget first
    runs = [(base, aim, False) for aim in aims for base in bases]
    k = -1
    while (k := k + 1) < len(runs):
        base, aim, going_on = runs[k]
        if aim != budget and best is not None and best.fits:
            break  # lower aims only rescue a budget no base met
        left = None if time_limit is None else time_limit - (time.perf_counter() - started)
        if left is not None and left <= 0 and best is not None:
            break  # (the first run always happens: with no time left it returns its start)
        # The first runs matter most (the best order, the budget itself): half of what is left
        # each, three quarters for the very first; a continuation, all of it.
        share = 1.0 if k == len(runs) - 1 or going_on else FIRST_RUN_SHARE if k == 0 else 0.5
        fit = fit_budget(graph, base, aim, time_limit=None if left is None else left * share)
        if fit.reason == "time limit" and fit.peak_bytes > budget:
            # Stopped short of the budget while still lowering the peak: going on from there gets
            # further than starting again from another base with less time (a large step's greedy
            # is slow but steady); the other bases get what a continuation that gets stuck leaves.
            runs.insert(k + 1, (list(fit.order), aim, True))
        fits = fit.peak_bytes <= budget
        fit = attrs.evolve(fit, budget_bytes=budget, fits=fits, reason="" if fits else fit.reason)
        if best is None or _better(fit, best):
            best = fit
    assert best is not None  # the first run always happens
    if best.fits and best.recompute_flops:
        deadline = None if time_limit is None else started + time_limit
        order = _cheapen(graph, list(best.order), budget, deadline)
        if order != list(best.order):
            best = attrs.evolve(best, order=tuple(order), peak_bytes=simulate_indices(graph, order).peak_bytes,
                                recompute_flops=recompute_flops(graph, order),
                                recomputed_ops=len(order) - len(graph.ops))
    return attrs.evolve(best, seconds=time.perf_counter() - started)


def _cheapen(graph: Graph, order: list[int], budget: int, deadline: float | None) -> list[int]:
    """Local search on an order that fits ``budget``: take out the costliest rerun not
    tried yet, fit the budget again from there (:func:`fit_budget`) and keep the answer
    when it recomputes fewer FLOPs; until no rerun is left to try or time is up."""
    best = recompute_flops(graph, order)
    tried: set[int] = set()
    # Each improvement lowers the FLOPs, so this ends; the cap bounds it without a deadline.
    refits = CHEAPEN_REFITS_PER_OP * len(set(i for _, i in recomputations(order))) + 8
    while (deadline is None or time.perf_counter() < deadline) and refits > 0:
        refits -= 1
        costly = [i for i in dict.fromkeys(i for _, i in recomputations(order))
                  if op_flops(graph, i) and i not in tried]
        if not costly:
            break
        i = max(costly, key=lambda i: op_flops(graph, i))
        tried.add(i)
        at = len(order) - 1 - order[::-1].index(i)
        left = None if deadline is None else deadline - time.perf_counter()
        fit = fit_budget(graph, order[:at] + order[at + 1:], budget, time_limit=left)
        if fit.fits and fit.recompute_flops < best:
            order, best = list(fit.order), fit.recompute_flops
            tried.clear()  # the new order may have new reruns worth another try
    return order


def _better(a: BudgetFit, b: BudgetFit) -> bool:
    if a.fits != b.fits:
        return a.fits
    if a.fits:
        return (a.recompute_flops, a.peak_bytes) < (b.recompute_flops, b.peak_bytes)
    return a.peak_bytes < b.peak_bytes
