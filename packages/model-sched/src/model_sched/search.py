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
    """``order``: an order better than ``upper`` (or ``None``), with its ``peak`` (bytes).

    ``bound`` is a lower bound on the optimum (bytes); ``complete`` means the search
    finished, so the best of ``order``/``upper`` is optimal and ``bound`` equals it.
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
    n = lv.n_ops
    if n == 0:
        return SearchOutcome([], lv.persistent_bytes, lv.persistent_bytes, True, 0)
    full = (1 << n) - 1
    sizes, keep, out_bytes, op_uses, op_outs, succs = (
        lv.sizes, lv.keep, lv.out_bytes, lv.op_uses, lv.op_outs, lv.succs)
    pred_mask = [0] * n
    for v, ps in enumerate(lv.preds):
        for p in ps:
            pred_mask[v] |= 1 << p
    user_mask = [0] * len(sizes)
    for b, us in enumerate(lv.users):
        for u in us:
            user_mask[b] |= 1 << u
    # bytes freed right after op v no matter what: its outputs nobody reads
    dead_outs = [sum(sizes[b] for b in op_outs[v] if not lv.n_users[b] and not keep[b]) for v in range(n)]
    inf = float("inf")
    ub = inf if upper is None else upper
    best_order: list[int] | None = None
    ready0 = 0
    for v in range(n):
        if not pred_mask[v]:
            ready0 |= 1 << v
    # state record: [g, mem, ready, parent, op]
    rec: dict[int, tuple[int, int, int, int, int]] = {0: (0, lv.base_bytes, ready0, -1, -1)}
    heap: list[tuple[int, int, int, int]] = [(max(lower, lv.base_bytes), 0, 0, 0)]
    pops = 0
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
                ub = g2
                best_order = _path(rec, s2)
                continue
            f2 = _estimate(m2, ready2, out_bytes, g2, lower)
            if f2 < ub:
                heapq.heappush(heap, (f2, negdepth - 1, s2, g2))
    else:
        complete = True
    if complete:
        bound = ub if ub != inf else lower
    else:
        bound = min(ub, max(lower, heap[0][0])) if heap else ub
    return SearchOutcome(best_order, None if best_order is None else int(ub), int(bound), complete, len(rec))


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
