"""Exact minimum-peak search over all topological orders (one op per step).

The future of a partial order depends only on the *set* of ops already run (which
buffers are alive is a function of that set), so the search runs over sets, keeps
for each set the least peak that reaches it, and expands sets best-first by
``f = max(peak so far, live bytes + the smallest allocation of any ready op)``,
an admissible estimate. States at or above the incumbent are pruned.

Dominance rule: if a ready op fits under the peak so far and frees at least as
many bytes as it allocates, some optimal completion runs it next (moving it to the
front only lowers every intermediate step), so only that successor is kept.

When the frontier's least ``f`` reaches the incumbent, the incumbent is optimal;
at a time or state limit the frontier's least ``f`` is still a valid lower bound.
A :class:`SearchRun` stopped at a deadline resumes with its states kept, and with
a better incumbent found meanwhile (entries at or above it are then pruned as popped).
Sets are Python-int bitsets; this is practical up to a few dozen ops of width.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable

import attrs

from model_sched.liveness import Liveness


@attrs.frozen
class SearchOutcome:
    """``order``: the best order found better than ``upper`` (or ``None``), with its ``peak`` (bytes).

    ``bound`` is a lower bound on the optimum (bytes); ``complete`` means the search
    finished, so the best of ``order``/``upper`` is optimal and ``bound`` equals it.
    ``states``: the states stored (above ``max_states`` when the cap stopped it).
    """

    order: list[int] | None
    peak: int | None
    bound: int
    complete: bool
    states: int


def exact_search(lv: Liveness, *, upper: int | None = None, lower: int = 0,
                 deadline: float | None = None, max_states: int | None = None,
                 on_progress: Callable[[int, int], None] | None = None,
                 progress_seconds: float = 2.0) -> SearchOutcome:
    """Find an order with peak below ``upper`` (bytes; ``None`` for no incumbent), or prove none exists.

    ``lower`` is a known lower bound (it only lets the search stop early);
    ``deadline`` is a ``time.perf_counter()`` value; ``max_states`` caps the states stored.
    ``on_progress(bound, states)`` is called about every ``progress_seconds`` with the
    current lower bound (bytes) and the number of states stored.
    """
    search = SearchRun(lv, upper=upper, lower=lower, max_states=max_states, on_progress=on_progress,
                       progress_seconds=progress_seconds)
    return search.run(deadline)


class SearchRun:
    """One best-first search that can stop at a deadline and go on later, keeping its
    states: ``auto`` gives it turns between other methods (see :func:`exact_search`
    for the arguments). Each :meth:`run` may lower the incumbent (``upper``: a better
    order found elsewhere prunes more) or raise the known bound (``lower``)."""

    def __init__(self, lv: Liveness, *, upper: int | None = None, lower: int = 0,
                 max_states: int | None = None, on_progress: Callable[[int, int], None] | None = None,
                 progress_seconds: float = 2.0):
        self.lv, self.max_states = lv, max_states
        self.on_progress, self.progress_seconds = on_progress, progress_seconds
        n = lv.n_ops
        self.pred_mask = [0] * n
        for v, ps in enumerate(lv.preds):
            for p in ps:
                self.pred_mask[v] |= 1 << p
        self.user_mask = [0] * len(lv.sizes)
        for b, us in enumerate(lv.users):
            for u in us:
                self.user_mask[b] |= 1 << u
        # bytes freed right after op v no matter what: its outputs nobody reads
        self.dead_outs = [sum(lv.sizes[b] for b in lv.op_outs[v] if not lv.n_users[b] and not lv.keep[b])
                          for v in range(n)]
        self.ub = float("inf") if upper is None else upper
        self.lower = lower
        self.best_order: list[int] | None = None
        self.best_peak: int | None = None
        self.complete = n == 0
        ready0 = 0
        for v in range(n):
            if not self.pred_mask[v]:
                ready0 |= 1 << v
        # state record: [g, mem, ready, parent, op]
        self.rec: dict[int, tuple[int, int, int, int, int]] = {0: (0, lv.base_bytes, ready0, -1, -1)}
        self.heap: list[tuple[int, int, int, int]] = [(max(lower, lv.base_bytes), 0, 0, 0)]
        self.pops = 0

    def outcome(self) -> SearchOutcome:
        """The best order this search found (or ``None``), its peak, the bound, and whether it is done."""
        lv, ub, heap = self.lv, self.ub, self.heap
        if lv.n_ops == 0:
            return SearchOutcome([], lv.persistent_bytes, lv.persistent_bytes, True, 0)
        if self.complete:
            bound = ub if ub != float("inf") else self.lower
        else:
            bound = min(ub, max(self.lower, heap[0][0])) if heap else ub
        return SearchOutcome(self.best_order, self.best_peak, int(bound), self.complete, len(self.rec))

    def run(self, deadline: float | None = None, *, upper: int | None = None,
            lower: int | None = None) -> SearchOutcome:
        """Search until done, ``deadline`` (a ``time.perf_counter()`` value) or the state cap."""
        if upper is not None and upper < self.ub:
            self.ub = upper
        if lower is not None and lower > self.lower:
            self.lower = lower
        if self.complete:
            return self.outcome()
        lv, lower = self.lv, self.lower
        n = lv.n_ops
        full = (1 << n) - 1
        sizes, keep, out_bytes, op_uses, succs = lv.sizes, lv.keep, lv.out_bytes, lv.op_uses, lv.succs
        pred_mask, user_mask, dead_outs = self.pred_mask, self.user_mask, self.dead_outs
        max_states, on_progress, progress_seconds = self.max_states, self.on_progress, self.progress_seconds
        rec, heap, ub, pops = self.rec, self.heap, self.ub, self.pops
        best_order, best_peak = self.best_order, self.best_peak
        complete = False
        next_report = time.perf_counter() + progress_seconds
        while heap:
            f, negdepth, s, g_pushed = heapq.heappop(heap)
            if f >= ub:
                complete = True
                heap.clear()
                break
            g, mem, ready, _, _ = rec[s]
            if g < g_pushed:
                continue  # stale entry: the set was reached again with a lower peak
            pops += 1
            if pops & 255 == 0:
                now = time.perf_counter()
                if deadline is not None and now >= deadline:
                    heapq.heappush(heap, (f, negdepth, s, g_pushed))
                    break
                if on_progress is not None and now >= next_report:
                    next_report = now + progress_seconds
                    on_progress(int(min(ub, max(lower, f))), len(rec))
            if max_states is not None and len(rec) > max_states:
                heapq.heappush(heap, (f, negdepth, s, g_pushed))
                break
            succ = []
            r = ready
            while r:
                low = r & -r
                r ^= low
                v = low.bit_length() - 1
                s2 = s | low
                m1 = mem + out_bytes[v]
                freed = dead_outs[v]
                rest = full & ~s2
                for b in op_uses[v]:
                    if not (user_mask[b] & rest) and not keep[b]:
                        freed += sizes[b]
                if s == 0:
                    freed += lv.first_free_bytes
                if m1 <= g and freed >= out_bytes[v]:
                    succ = [(v, low, s2, m1, freed)]
                    break
                succ.append((v, low, s2, m1, freed))
            for v, low, s2, m1, freed in succ:
                g2 = g if g >= m1 else m1
                if g2 >= ub:
                    continue
                old = rec.get(s2)
                if old is not None and old[0] <= g2:
                    continue
                m2 = m1 - freed
                ready2 = ready & ~low
                for w in succs[v]:
                    if not (pred_mask[w] & ~s2):
                        ready2 |= 1 << w
                rec[s2] = (g2, m2, ready2, s, v)
                if s2 == full:
                    ub = best_peak = g2
                    best_order = _path(rec, s2)
                    continue
                f2 = _estimate(m2, ready2, out_bytes, g2, lower)
                if f2 < ub:
                    heapq.heappush(heap, (f2, negdepth - 1, s2, g2))
        else:
            complete = True
        self.ub, self.pops, self.complete = ub, pops, complete
        self.best_order, self.best_peak = best_order, None if best_peak is None else int(best_peak)
        return self.outcome()


def _estimate(mem: int, ready: int, out_bytes, g: int, lower: int) -> int:
    least = min(out_bytes[v] for v in _bits(ready)) if ready else 0
    return max(g, lower, mem + least)


def _bits(mask: int):
    while mask:
        low = mask & -mask
        mask ^= low
        yield low.bit_length() - 1


def _path(rec: dict, s: int) -> list[int]:
    order = []
    while s:
        _, _, _, parent, v = rec[s]
        order.append(v)
        s = parent
    order.reverse()
    return order
