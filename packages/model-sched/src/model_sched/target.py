"""Orders under a target peak: list scheduling that defers whatever would exceed it.

At the top of a large model's backward pass every saved activation is alive, and a
weight gradient computed there (OPT-30B: 822 MB for a feed-forward weight) sits on
top of all of them. An order that keeps the peak near the bound defers such ops until
enough activations are freed, and defers the next layers' ones in turn, a lag that
runs through the whole backward pass; windows of ~48 ops cannot build that, and no
single-op move gets there.

:func:`order_under` runs the ops of a *base* order by priority (their position in it):
at each step the first ready op whose step stays within ``target`` bytes runs; an op
that would exceed it waits, its inputs alive, while later ops free memory. With the
base's own peak as target it returns the base order itself; below the optimum it
fails. :func:`improve_by_targets` bisects the target between the bound and the
incumbent's peak, from the incumbent and from other base orders (``auto`` adds the
optimizer-in-backward order after single-op moves: OPT-30B b1 129.74 -> 129.10 GB
against a 129.08 GB bound, in a tenth of a second).

A greedy list schedule runs an op as soon as it fits, also one that only allocates:
Adam's ``sqrt(exp_avg_sq)`` reads persistent state only, fits early, and then holds
its result until the division it feeds fits too, which eats the headroom the deferred
weight gradients need. Such *tails* (:func:`deferrable_tails`) keep no other buffer
alive, so they can all run last; each base is also tried with its tails moved to the
end (:func:`tails_last`): OPT-30B AdamW b1 from 8944.7 to 8776.7 MiB of transient
memory against an 8728.2 MiB bound.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from model_sched.control import SolveControl
from model_sched.greedy import MinTree
from model_sched.liveness import Liveness, peak

#: Bisection stops once the target interval is this small relative to the peak.
RELATIVE_TOLERANCE = 1e-6


def order_under(lv: Liveness, base: Sequence[int], target: int) -> list[int] | None:
    """A valid order whose every step is at most ``target`` live bytes, built by list
    scheduling in ``base``'s priority (see the module docstring), or None if it gets
    stuck (no ready op fits)."""
    n = lv.n_ops
    rank = [0] * n
    for k, v in enumerate(base):
        rank[v] = k
    by_rank = list(base)
    indeg = [len(p) for p in lv.preds]
    remaining = list(lv.n_users)
    sizes, keep, out_bytes = lv.sizes, lv.keep, lv.out_bytes
    empty = max(target, 0) + 1  # above every threshold (target - live bytes): no op there
    tree = MinTree(n, empty)
    for v in range(n):
        if indeg[v] == 0:
            tree.set(rank[v], out_bytes[v])
    mem = lv.base_bytes
    order: list[int] = []
    while len(order) < n:
        k = tree.leftmost_at_most(target - mem)
        if k < 0:
            return None
        v = by_rank[k]
        tree.set(k, empty)
        order.append(v)
        mem += out_bytes[v]
        if len(order) == 1:
            mem -= lv.first_free_bytes
        for b in lv.op_uses[v]:
            remaining[b] -= 1
            if remaining[b] == 0 and not keep[b]:
                mem -= sizes[b]
        for b in lv.op_outs[v]:
            if remaining[b] == 0 and not keep[b]:
                mem -= sizes[b]
        for s in lv.succs[v]:
            indeg[s] -= 1
            if indeg[s] == 0:
                tree.set(rank[s], out_bytes[s])
    return order


def deferrable_tails(lv: Liveness, desc: Sequence[int]) -> frozenset[int]:
    """Ops that can all run last without keeping any other buffer alive longer.

    The union, over ops ``s`` that read no transient buffer, of ``s`` and its
    descendants (``desc``: descendant bitsets, :func:`model_sched.bounds.descendant_masks`)
    when every transient buffer read in that set is produced in it: successor-closed
    sets whose only inputs are persistent (an Adam update's ``sqrt(exp_avg_sq)``, the
    division and the in-place update it feeds). Running such a set later only delays
    its own allocations; every other op then has at most the live bytes it had."""
    found: set[int] = set()
    for s in range(lv.n_ops):
        if lv.op_uses[s] or s in found:
            continue
        inside = desc[s] | (1 << s)
        members, m = [], inside
        while m:  # in program order, so a set that fails usually fails within a few ops
            low = m & -m
            m ^= low
            u = low.bit_length() - 1
            if not all(lv.producer[b] >= 0 and (inside >> lv.producer[b]) & 1 for b in lv.op_uses[u]):
                break
            members.append(u)
        else:
            found.update(members)
    return frozenset(found)


def tails_last(order: Sequence[int], tails: frozenset[int]) -> list[int]:
    """``order`` with the ops of ``tails`` (successor-closed) moved to its end, in the same relative order."""
    return [v for v in order if v not in tails] + [v for v in order if v in tails]


def improve_by_targets(lv: Liveness, control: SolveControl, *, bases: Sequence[Sequence[int]] = (),
                       tails: frozenset[int] = frozenset(), deadline: float | None = None,
                       stage: str = "targets") -> bool:
    """Bisect the target between the bound and the incumbent's peak with
    :func:`order_under` from the incumbent, then from each of ``bases``, then from each
    of them with ``tails`` last (:func:`deferrable_tails`; a target is met if one of
    them meets it); offer each order found. Returns True when the bisection is done,
    False at the deadline or the control's time limit."""
    if control.best_order is None or lv.n_ops == 0:
        return True
    priorities = [list(control.best_order), *(list(b) for b in bases)]
    if tails:
        priorities += [tails_last(p, tails) for p in priorities]
    lo, hi = control.bound, control.best_peak - 1  # the least target not yet refuted, the most still worth trying
    target = lo  # the bound first: success proves the optimum
    while lo <= hi and hi - lo >= RELATIVE_TOLERANCE * hi:
        for base in priorities:
            if control.expired() or (deadline is not None and time.perf_counter() >= deadline):
                return False
            found = order_under(lv, base, target)
            if found is not None:
                control.offer(found, stage)
                hi = min(hi, peak(lv, found) - 1)
                break
        else:
            lo = target + 1
        target = (lo + hi) // 2
    return True

