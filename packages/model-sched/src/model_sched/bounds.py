"""Lower bounds on the peak of every valid order.

The *forced-liveness* bound: when op ``v`` runs, a buffer whose producer must run
at or before ``v`` (an ancestor of ``v``, or ``v``) and that has a reader that must
run at or after ``v`` (``v`` or a descendant) is alive, whatever the order. The
largest total over ops, plus persistent bytes, bounds every order's peak. It
contains the working-set bound (an op's own inputs and outputs are forced at it).

Ancestor and descendant sets are Python-int bitsets (one big-int OR per edge);
per-op totals are accumulated with numpy, so a 10,000-op graph takes well under a
second.
"""

from __future__ import annotations

import attrs

from model_sched.liveness import Liveness


@attrs.frozen
class ForcedBound:
    """``bytes``: the bound (persistent included). ``per_op[v]``: bytes forced alive at op ``v``."""

    bytes: int
    per_op: tuple[int, ...]


def ancestor_masks(lv: Liveness) -> list[int]:
    """Bitset of every op's strict ancestors (ops are in program order, so one pass)."""
    anc = [0] * lv.n_ops
    for v, preds in enumerate(lv.preds):
        m = 0
        for p in preds:
            m |= anc[p] | (1 << p)
        anc[v] = m
    return anc


def descendant_masks(lv: Liveness) -> list[int]:
    """Bitset of every op's strict descendants."""
    desc = [0] * lv.n_ops
    for v in range(lv.n_ops - 1, -1, -1):
        m = 0
        for s in lv.succs[v]:
            m |= desc[s] | (1 << s)
        desc[v] = m
    return desc


def forced_bound(lv: Liveness) -> ForcedBound:
    """The forced-liveness lower bound of the graph behind ``lv`` (bytes)."""
    import numpy as np  # on first use: every model-opt command imports this module

    n = lv.n_ops
    if n == 0:
        return ForcedBound(lv.persistent_bytes, ())
    full = (1 << n) - 1
    anc = ancestor_masks(lv)
    desc = descendant_masks(lv)
    acc = np.zeros(n + 8, dtype=np.int64)
    for b, size in enumerate(lv.sizes):
        if lv.persistent[b] or size == 0:
            continue
        p = lv.producer[b]
        start = full if p < 0 else desc[p] | (1 << p)
        if lv.keep[b]:
            end = full
        elif lv.users[b]:
            end = 0
            for u in lv.users[b]:
                end |= anc[u] | (1 << u)
        elif p >= 0:
            end = 1 << p  # produced and never read: alive at its producer only
        else:
            continue  # unused graph input: alive at step 0 only, which no op is forced to take
        forced = start & end
        if not forced:
            continue
        lo = (forced & -forced).bit_length() - 1
        bits = forced >> lo
        nbits = bits.bit_length()
        raw = np.frombuffer(bits.to_bytes((nbits + 7) // 8, "little"), dtype=np.uint8)
        acc[lo:lo + nbits] += np.unpackbits(raw, bitorder="little")[:nbits].astype(np.int64) * size
    per_op = tuple(int(x) for x in acc[:n])
    return ForcedBound(lv.persistent_bytes + max(per_op), per_op)
