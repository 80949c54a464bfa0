"""A window of an order as a scheduling problem of its own.

Fixing the ops before and after positions ``[lo, hi)`` of an order, any valid
reordering of the window's ops keeps the whole order valid (dependencies that
leave the window point to fixed ops on the right side), and the live bytes at the
window's steps are those of a small problem: buffers produced before the window and
last used inside it behave as graph inputs, buffers produced inside it and used
after it (or graph outputs) behave as outputs, and buffers alive across the whole
window are a constant, folded into ``persistent_bytes``. Its peak equals the peak of
the full timeline restricted to the window's steps (tests check this).
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from model_sched.liveness import Liveness


@attrs.frozen
class Window:
    """``lv``: the window as its own problem; ``ops[i]``: the full graph's op for its op ``i``."""

    lo: int
    hi: int
    lv: Liveness
    ops: tuple[int, ...]


def window(lv: Liveness, order: Sequence[int], lo: int, hi: int,
           step: Sequence[int], last_use: Sequence[int]) -> Window:
    """The sub-problem of ``order[lo:hi]``.

    ``step[v]`` is op ``v``'s position in ``order`` and ``last_use[b]`` the position of
    buffer ``b``'s last user (-1 if none); see :func:`positions`.
    """
    ops = tuple(order[lo:hi])
    local = {v: i for i, v in enumerate(ops)}
    n = len(ops)
    sizes, keep, users, producer = lv.sizes, lv.keep, lv.users, lv.producer
    touched: list[int] = []
    seen = set()
    for v in ops:
        for b in lv.op_uses[v] + lv.op_outs[v]:
            if b not in seen:
                seen.add(b)
                touched.append(b)
    constant = 0
    sub_sizes, sub_keep, sub_users, sub_prod = [], [], [], []
    remap: dict[int, int] = {}
    for b in touched:
        p = producer[b]
        inside_users = tuple(local[u] for u in users[b] if u in local)
        after = keep[b] or last_use[b] >= hi
        if p >= 0 and p in local:
            remap[b] = len(sub_sizes)
            sub_sizes.append(sizes[b])
            sub_keep.append(after)
            sub_users.append(inside_users)
            sub_prod.append(local[p])
        elif after:
            constant += sizes[b]  # produced before the window, needed after it: alive throughout
        else:
            remap[b] = len(sub_sizes)
            sub_sizes.append(sizes[b])
            sub_keep.append(False)
            sub_users.append(inside_users)
            sub_prod.append(-1)
    untouched_inputs_first = 0
    if lo == 0:
        # graph inputs nobody uses are alive at step 0 only, whichever op runs first
        for b, size in enumerate(sizes):
            if producer[b] < 0 and not lv.persistent[b] and not users[b] and not keep[b]:
                untouched_inputs_first += size
    # buffers untouched by the window but alive across it
    for b in range(len(sizes)):
        if b in seen or lv.persistent[b]:
            continue
        p = producer[b]
        if (p < 0 or step[p] < lo) and (keep[b] or last_use[b] >= hi):
            constant += sizes[b]
    op_uses, op_outs = [], []
    for v in ops:
        op_uses.append(tuple(remap[b] for b in lv.op_uses[v] if b in remap))
        op_outs.append(tuple(remap[b] for b in lv.op_outs[v]))
    preds = tuple(tuple(local[p] for p in lv.preds[v] if p in local) for v in ops)
    succs_l: list[list[int]] = [[] for _ in ops]
    for i, ps in enumerate(preds):
        for p in ps:
            succs_l[p].append(i)
    persistent_bytes = lv.persistent_bytes + constant
    inputs = sum(s for s, p in zip(sub_sizes, sub_prod) if p < 0)
    sub = Liveness(
        n_ops=n, sizes=tuple(sub_sizes), keep=tuple(sub_keep),
        n_users=tuple(len(u) for u in sub_users), producer=tuple(sub_prod),
        persistent=(False,) * len(sub_sizes), users=tuple(sub_users), op_uses=tuple(op_uses),
        op_outs=tuple(op_outs), out_bytes=tuple(sum(sub_sizes[b] for b in o) for o in op_outs),
        preds=preds, succs=tuple(tuple(s) for s in succs_l), persistent_bytes=persistent_bytes,
        base_bytes=persistent_bytes + inputs + untouched_inputs_first,
        first_free_bytes=untouched_inputs_first,
    )
    return Window(lo, hi, sub, ops)


def positions(lv: Liveness, order: Sequence[int]) -> tuple[list[int], list[int]]:
    """``(step, last_use)``: each op's position in ``order``, each buffer's last user's (-1: none)."""
    step = [0] * lv.n_ops
    for t, v in enumerate(order):
        step[v] = t
    return step, [max((step[u] for u in us), default=-1) for us in lv.users]
