"""A stronger lower bound at chosen ops: the least live bytes any valid order can have
while a given op runs, computed exactly as a minimum cut.

The forced-liveness bound (:mod:`model_sched.bounds`) ignores ops that are unordered
with op ``v`` (neither ancestors nor descendants). Whether a buffer is alive when
``v`` runs then depends on which of them run before ``v``. Choosing that set ``X``
(closed under predecessors) to minimise the live bytes is a minimum-closure problem,
so a minimum s-t cut (source side = ops run before ``v``):

- ``u -> pred`` (infinite) for unordered ops: ``X`` is closed under predecessors;
- a buffer read after ``v`` (or a graph output) whose producer ``p`` is unordered
  costs its size if ``p`` runs before ``v``: edge ``p -> sink``;
- a buffer whose readers are all before ``v`` or unordered, produced before ``v`` or
  by an unordered ``p``, is alive at ``v`` unless all its readers ran before: an
  auxiliary node ``z`` with ``z -> reader`` (infinite) and ``p -> z`` (its size).

Example (GPT-2 training step): the backward of tanh-GELU recomputes ``x**2`` from the
saved input ``x``; the recomputation is unordered with the loss, so the forced bound
does not count ``x`` there, but either ``x`` or ``x**2`` is alive in every order.
The cut counts the smaller. One max-flow per op, so it is applied to a few
candidate ops (the incumbent's peak steps first), within a time budget.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from model_sched.liveness import Liveness

if TYPE_CHECKING:
    import networkx as nx


#: Networks with more edges are not cut (networkx's max-flow would take seconds); the
#: function then returns the forced-liveness value, still a valid bound.
MAX_CUT_EDGES = 20_000


def step_cut_bound(lv: Liveness, v: int, anc: list[int], desc: list[int], forced_at_v: int,
                   max_edges: int = MAX_CUT_EDGES) -> int:
    """Least live bytes (persistent included) of any valid order while op ``v`` runs.

    ``anc``/``desc``: strict ancestor/descendant bitsets (see :mod:`model_sched.bounds`);
    ``forced_at_v``: the forced-liveness bytes at ``v`` (``ForcedBound.per_op[v]``).
    Exact unless the network has more than ``max_edges`` edges (then the forced value).
    """
    import networkx as nx  # on first use: every model-opt command imports this module

    n = lv.n_ops
    after_mask = desc[v] | (1 << v)
    after = _flags(after_mask, n)  # at or after v in every order
    ordered = _flags(anc[v] | after_mask, n)
    g = nx.DiGraph()
    g.add_node("s")
    g.add_node("t")

    def unordered(u: int) -> bool:
        return not ordered[u]

    edges = 0
    touched = set(lv.op_uses[v]) | set(lv.op_outs[v])
    for b, size in enumerate(lv.sizes):
        if lv.persistent[b] or size == 0 or b in touched:
            continue
        p = lv.producer[b]
        if p >= 0 and after[p]:
            continue  # produced at or after v: not alive while v runs
        p_free = p >= 0 and unordered(p)
        users = lv.users[b]
        read_after = lv.keep[b] or any(after[u] for u in users)
        if read_after:
            if p_free:
                _add_capacity(g, ("op", p), "t", size)
                edges += 1
            continue  # else: forced, already in forced_at_v
        free_users = [u for u in users if unordered(u)]
        if not free_users:
            continue  # every reader runs before v: dead by then
        z = ("buf", b)
        for u in free_users:
            g.add_edge(z, ("op", u))
        _add_capacity(g, ("op", p) if p_free else "s", z, size)
        edges += len(free_users) + 1
        if edges > max_edges:
            return lv.persistent_bytes + forced_at_v
    # closure of the before-set: an op before v brings every unordered ancestor; only the
    # ancestors that appear in the network matter, so link each op to those directly
    ops = [node[1] for node in g.nodes if isinstance(node, tuple) and node[0] == "op"]
    relevant = 0
    for u in ops:
        relevant |= 1 << u
    for u in ops:
        m = anc[u] & relevant
        while m:
            low = m & -m
            m ^= low
            g.add_edge(("op", u), ("op", low.bit_length() - 1))
            edges += 1
        if edges > max_edges:
            return lv.persistent_bytes + forced_at_v  # too big to cut within the budget
    if edges == 0:
        return lv.persistent_bytes + forced_at_v
    cut = nx.maximum_flow_value(g, "s", "t")
    return lv.persistent_bytes + forced_at_v + int(cut)


def _flags(mask: int, n: int) -> list[bool]:
    """A bitset as a list of n booleans (one C-speed conversion instead of n big-int shifts)."""
    import numpy as np

    raw = np.frombuffer(mask.to_bytes((n + 7) // 8 or 1, "little"), dtype=np.uint8)
    return np.unpackbits(raw, bitorder="little")[:n].astype(bool).tolist()


def _add_capacity(g: nx.DiGraph, a, b, size: int) -> None:
    """Parallel costs add up (a DiGraph keeps one edge per pair)."""
    if g.has_edge(a, b):
        g[a][b]["capacity"] += size
    else:
        g.add_edge(a, b, capacity=size)


def raise_bound_by_cuts(lv: Liveness, control, per_op: tuple[int, ...], ops, deadline: float | None,
                        masks: tuple[list[int], list[int]] | None = None) -> list[int]:
    """Offer :func:`step_cut_bound` at each op of ``ops`` (in order) to ``control`` until
    the incumbent is proven, or ``deadline`` (a ``time.perf_counter()`` value) passes.

    Returns the ops that are done with: cut in full, or already bounded as high by forced
    liveness. The others were not reached, or were cut short to fit the time left, and
    may be worth another try with more time."""
    import time

    from model_sched.bounds import ancestor_masks, descendant_masks

    anc, desc = masks if masks is not None else (ancestor_masks(lv), descendant_masks(lv))
    done = []
    for v in ops:
        if control.solved or control.expired() or (deadline is not None and time.perf_counter() >= deadline):
            break
        if lv.persistent_bytes + per_op[v] >= control.best_peak:
            done.append(v)
            continue  # forced-liveness already says as much
        left = control.remaining()
        if deadline is not None:
            left = deadline - time.perf_counter() if left is None else min(left, deadline - time.perf_counter())
        # networkx's max-flow costs roughly 25 microseconds per edge here: fit the budget
        cap = MAX_CUT_EDGES if left is None else min(MAX_CUT_EDGES, int(left / 25e-6))
        bound = step_cut_bound(lv, v, anc, desc, per_op[v], max_edges=cap)
        control.raise_bound(bound, "cut bound")
        if cap == MAX_CUT_EDGES or bound > lv.persistent_bytes + per_op[v]:
            done.append(v)
    return done


def first_of_set_bound(lv: Liveness, members, anc: list[int], desc: list[int], *,
                       max_edges: int = MAX_CUT_EDGES, deadline: float | None = None,
                       progress=None) -> int | None:
    """A lower bound on every valid order's peak (bytes, persistent included) from the
    moment the first op of ``members`` runs, or None if ``deadline`` (a
    ``time.perf_counter()`` value) passed first.

    In any order some op ``d`` of the set runs first: every other member, and all their
    descendants, run after it. For each ``d`` that can be first (no member among its
    ancestors) the least live bytes at ``d`` under that condition are a minimum cut
    (:func:`step_cut_bound` with those ops added to ``d``'s descendants); the least over
    ``d`` bounds every order. With ``members`` the ops of the largest results (a
    step's weight gradients), it sees what one op cannot: the first of them runs on
    top of whatever the order has not freed yet, and freeing means running others.
    One cut per candidate, each exact only within ``max_edges`` (else the forced
    value, still a bound). ``progress(op, bound)`` is called after each candidate."""
    import time

    members = list(dict.fromkeys(members))
    if not members:
        raise ValueError("first_of_set_bound needs at least one member op")
    member_mask = 0
    for u in members:
        member_mask |= 1 << u
    first = [d for d in members if not anc[d] & member_mask]
    # the ops after the first member d: every other member and its descendants
    later = [(1 << u) | desc[u] for u in first]
    prefix, suffix = [0] * (len(first) + 1), [0] * (len(first) + 1)
    for k, m in enumerate(later):
        prefix[k + 1] = prefix[k] | m
    for k in range(len(first) - 1, -1, -1):
        suffix[k] = suffix[k + 1] | later[k]
    best = None  # (a member with a member ancestor descends from some first one: in its set)
    for k, d in enumerate(first):
        if deadline is not None and time.perf_counter() >= deadline:
            return None
        after = desc[d] | prefix[k] | suffix[k + 1]
        conditioned = list(desc)
        conditioned[d] = after
        value = step_cut_bound(lv, d, anc, conditioned, _forced_at(lv, d, anc[d], after), max_edges=max_edges)
        best = value if best is None else min(best, value)
        if progress is not None:
            progress(d, value)
    return best


def _forced_at(lv: Liveness, v: int, before: int, after: int) -> int:
    """Bytes alive at ``v`` in every order where the ops of ``before`` run before it and
    those of ``after`` after it: produced before (or by ``v``), read at or after ``v``."""
    n = lv.n_ops
    is_before = _flags(before | (1 << v), n)
    is_after = _flags(after | (1 << v), n)
    total = 0
    for b, size in enumerate(lv.sizes):
        if lv.persistent[b] or size == 0:
            continue
        p = lv.producer[b]
        if p >= 0 and not is_before[p]:
            continue
        if lv.keep[b] or p == v or any(is_after[u] for u in lv.users[b]):
            total += size
    return total
