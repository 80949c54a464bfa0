"""Long-range single-op moves: hill climbing on the peak by moving one op to the far end
of its free range.

Windowed re-optimisation (:mod:`model_sched.lns`) rearranges up to ~48 consecutive ops
and cannot carry an op across a whole backward pass. Some of the largest savings are
exactly that: a tied embedding's weight gradient (OPT-30B: 1.4 GB) is computed at the
start of backward in eager order, yet its only reader, the accumulation with the
embedding's own gradient, is the last op of backward; run just before that reader,
it no longer sits on top of every saved activation (OPT-30B b1: 131.06 -> 129.74 GB).

A move takes op ``v`` from its step ``i`` either as late as it can go (right before
its first successor) or as early (right after its last predecessor). The new peak is
computed in O(inputs of v) from the current timeline and a sparse table of its range
maxima: between the old and the new step, every step loses ``v``'s outputs (sinking)
or gains them (lifting), and gains or loses the inputs whose last use moves with
``v``; the state after the later of the two steps is unchanged. The best move that
lowers the peak is applied (or, at an equal peak, one that leaves fewer steps at it,
checked on the whole timeline), until none does or the deadline passes.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from model_sched.control import SolveControl
from model_sched.liveness import Liveness, timeline
from model_sched.windows import positions

#: At most this many equal-peak moves are checked on the whole timeline per round.
PLATEAU_CHECKS = 32


def improve_by_moves(lv: Liveness, control: SolveControl, *, deadline: float | None = None,
                     stage: str = "moves") -> bool:
    """Improve ``control``'s incumbent by single-op moves until no move helps (returns
    True), or the deadline, the control's time or the bound stops it (False)."""
    if control.best_order is None or lv.n_ops < 3:
        return True
    order = list(control.best_order)
    tl = timeline(lv, order)
    while not control.expired() and not control.solved:
        if deadline is not None and time.perf_counter() >= deadline:
            return False
        moved = best_move(lv, order, tl, deadline)
        if moved is None or _key(moved[1]) >= _key(tl):
            return True
        order, tl = moved
        control.offer(order, stage)
    return False


def _key(tl: Sequence[int]) -> tuple[int, int]:
    top = max(tl)
    return top, sum(1 for x in tl if x == top)


def best_move(lv: Liveness, order: Sequence[int], tl: Sequence[int],
              deadline: float | None = None) -> tuple[list[int], list[int]] | None:
    """The order (and timeline) after the best improving move of ``order``, or None."""
    top = max(tl)
    peaks = [s for s, x in enumerate(tl) if x == top]
    first, last = peaks[0], peaks[-1]
    moves = MoveEvaluator(lv, order, tl)
    best: tuple[int, int, int, int] | None = None  # (peak, -bytes moved, op, target step)
    plateau: list[tuple[int, int]] = []
    for v in range(lv.n_ops):
        if deadline is not None and v % 256 == 0 and time.perf_counter() >= deadline:
            break
        i = moves.pos[v]
        for j in moves.targets(v):
            if not (min(i, j) <= last and first <= max(i, j)):
                continue  # the move spans no peak step: it cannot lower the peak
            new = moves.peak_after(v, j)
            if new < top:
                cand = (new, -lv.out_bytes[v], v, j)
                if best is None or cand < best:
                    best = cand
            elif new == top and len(plateau) < PLATEAU_CHECKS:
                plateau.append((v, j))
    if best is not None:
        moved = _moved(order, moves.pos[best[2]], best[3])
        return moved, timeline(lv, moved)
    for v, j in plateau:
        moved = _moved(order, moves.pos[v], j)
        new_tl = timeline(lv, moved)
        if _key(new_tl) < (top, len(peaks)):
            return moved, new_tl
    return None


class MoveEvaluator:
    """The peak of ``order`` after moving one op, in O(its inputs) per move."""

    def __init__(self, lv: Liveness, order: Sequence[int], tl: Sequence[int] | None = None):
        self.lv, self.order = lv, order
        self.tl = timeline(lv, order) if tl is None else tl
        n = len(order)
        self.pos, last_use = positions(lv, order)
        self.frees = _free_steps(lv, self.pos, last_use, n)
        freed = [0] * n  # bytes freed after each step
        if n:
            freed[0] = lv.first_free_bytes
        for b, f in enumerate(self.frees):
            if 0 <= f < n:
                freed[f] += lv.sizes[b]
        self.after = [self.tl[s] - freed[s] for s in range(n)]  # live bytes after each step
        self.table = _MaxTable(self.tl)
        # Unread graph inputs are freed after step 0, whichever op runs there: moves to or
        # from step 0 would shift that, which the estimates do not model.
        self.edge = 1 if lv.first_free_bytes else 0

    def targets(self, v: int) -> list[int]:
        """The steps ``v`` can move to: as late as it can go (before its first successor)
        and as early (after its last predecessor), where those differ from its own."""
        i, n = self.pos[v], len(self.order)
        lo = max((self.pos[p] for p in self.lv.preds[v]), default=-1) + 1
        hi = min((self.pos[q] for q in self.lv.succs[v]), default=n) - 1
        return [j for j in dict.fromkeys((hi, lo)) if j != i and min(i, j) >= self.edge]

    def peak_after(self, v: int, j: int) -> int:
        """Peak when ``v`` runs at step ``j`` instead (one of :meth:`targets`)."""
        i = self.pos[v]
        return _sink_peak(self, v, i, j) if j > i else _lift_peak(self, v, i, j)


def _moved(order: Sequence[int], i: int, j: int) -> list[int]:
    """``order`` with the op at step ``i`` run at step ``j`` instead (after the op now at
    ``j`` when ``j > i``, before it when ``j < i``)."""
    out = list(order)
    v = out.pop(i)
    out.insert(j, v)
    return out


def _free_steps(lv: Liveness, pos: Sequence[int], last_use: Sequence[int], n: int) -> list[int]:
    """Per buffer, the step after which it is freed: its last user's, or its producer's
    when nobody reads it; ``n`` for graph outputs (never freed), -1 for persistent
    buffers and unread graph inputs."""
    return [-1 if lv.persistent[b] else n if lv.keep[b] else last if last >= 0
            else pos[lv.producer[b]] if lv.producer[b] >= 0 else -1
            for b, last in enumerate(last_use)]


def _live_out_bytes(lv: Liveness, v: int) -> int:
    """Bytes of ``v``'s outputs that outlive its step (read later, or graph outputs)."""
    return sum(lv.sizes[b] for b in lv.op_outs[v] if lv.keep[b] or lv.n_users[b])


def _sink_peak(m: MoveEvaluator, v: int, i: int, j: int) -> int:
    """Peak when ``v`` moves from step ``i`` to right after the op at step ``j > i``."""
    lv, frees, table = m.lv, m.frees, m.table
    out_live = _live_out_bytes(lv, v)
    # Inputs freed by step j now live on to v: from their old free step to j.
    ext = sorted((frees[b], lv.sizes[b]) for b in lv.op_uses[v] if not lv.keep[b] and frees[b] <= j)
    peak = max(table.max(0, i - 1), table.max(j + 1, len(m.order) - 1))
    start, extra, k = i + 1, -out_live, 0
    while start <= j:
        while k < len(ext) and ext[k][0] < start:
            extra += ext[k][1]
            k += 1
        end = ext[k][0] if k < len(ext) and ext[k][0] <= j else j
        peak = max(peak, table.max(start, end) + extra)
        start = end + 1
    gained = sum(size for _, size in ext)
    return max(peak, m.after[j] - out_live + gained + lv.out_bytes[v])


def _lift_peak(m: MoveEvaluator, v: int, i: int, j: int) -> int:
    """Peak when ``v`` moves from step ``i`` to right before the op at step ``j < i``."""
    lv, frees, table, pos = m.lv, m.frees, m.table, m.pos
    out_live = _live_out_bytes(lv, v)
    # Inputs v was the last to read are now freed after their previous reader, or after v.
    cut = []
    for b in lv.op_uses[v]:
        if lv.keep[b] or frees[b] != i:
            continue
        others = [pos[u] for u in lv.users[b] if u != v]
        cut.append((max(max(others, default=-1), j - 1), lv.sizes[b]))  # freed after this step
    cut.sort()
    peak = max(table.max(0, j - 1), table.max(i + 1, len(m.order) - 1))
    start, extra, k = j, out_live, 0
    while start <= i - 1:
        while k < len(cut) and cut[k][0] < start:
            extra -= cut[k][1]
            k += 1
        end = cut[k][0] if k < len(cut) and cut[k][0] <= i - 1 else i - 1
        peak = max(peak, table.max(start, end) + extra)
        start = end + 1
    value_v = m.tl[j] - lv.out_bytes[m.order[j]] + lv.out_bytes[v]  # the state before step j
    return max(peak, value_v)


class _MaxTable:
    """Range maxima of a list in O(1) per query (a sparse table, O(n log n) to build)."""

    def __init__(self, values: Sequence[int]):
        self.levels = [list(values)]
        width = 1
        while 2 * width <= len(values):
            prev = self.levels[-1]
            self.levels.append([max(prev[k], prev[k + width]) for k in range(len(prev) - width)])
            width *= 2

    def max(self, a: int, b: int) -> int:
        """Max over ``values[a..b]`` (inclusive); very small for an empty range."""
        if a > b:
            return -1
        level = (b - a + 1).bit_length() - 1
        row = self.levels[level]
        return max(row[a], row[b - (1 << level) + 1])
