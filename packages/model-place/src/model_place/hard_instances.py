"""Zero-slack placement instances: a capacity x time rectangle cut into buffers.

A rectangle ``[0, horizon) x [0, capacity)`` (steps x bytes) is cut recursively
into ``n`` rectangles; each rectangle is a buffer alive during its time side at
its memory side. The cuts tile the rectangle, so at every step exactly
``capacity`` bytes are alive: the peak of live bytes (the lower bound) equals the
capacity, and the hidden packing reaches it with no byte of slack. Any other
optimal placement must also tile it.

Straight (guillotine) cuts alone leave instances that a greedy placer, which
commits to one buffer at a time, often still solves; a *pinwheel* cuts a
rectangle into four pieces turning around a centre piece, so that no straight
line separates them and a placer must interlock them. ``pinwheels=k`` makes k of
the cuts pinwheels (the first k, on the largest rectangles, so they shape the
whole instance). Sizes are multiples of ``grain`` bytes.
"""

from __future__ import annotations

import random

from model_ir import Lifetime

#: Default capacity of the generated instances (bytes): MiniMalloc's 1 MiB.
CAPACITY = 1 << 20

#: Default grain (bytes): every size and offset is a multiple of it.
GRAIN = 64

#: A rectangle: (start step, end step, offset, end offset), half-open on both axes.
Rect = tuple[int, int, int, int]


def _can_cut(r: Rect, axis: int, grain: int) -> bool:
    return r[1] - r[0] >= 2 if axis == 0 else r[3] - r[2] >= 2 * grain


def _cut(r: Rect, axis: int, grain: int, rng: random.Random) -> list[Rect]:
    t0, t1, m0, m1 = r
    if axis == 0:
        t = rng.randrange(t0 + 1, t1)
        return [(t0, t, m0, m1), (t, t1, m0, m1)]
    m = m0 + grain * rng.randrange(1, (m1 - m0) // grain)
    return [(t0, t1, m0, m), (t0, t1, m, m1)]


def _pinwheel(r: Rect, grain: int, rng: random.Random) -> list[Rect] | None:
    """Five rectangles: four turning around a centre one (None when ``r`` is too small)."""
    t0, t1, m0, m1 = r
    g0, g1 = m0 // grain, m1 // grain
    if t1 - t0 < 3 or g1 - g0 < 3:
        return None
    ta, tb = sorted(rng.sample(range(t0 + 1, t1), 2))
    ma, mb = (grain * g for g in sorted(rng.sample(range(g0 + 1, g1), 2)))
    return [(t0, tb, m0, ma),   # bottom, reaching right to tb
            (tb, t1, m0, mb),   # right, reaching up to mb
            (ta, t1, mb, m1),   # top, reaching left to ta
            (t0, ta, ma, m1),   # left, reaching down to ma
            (ta, tb, ma, mb)]   # centre


def zero_slack_rects(n_buffers: int, *, seed: int = 0, capacity: int = CAPACITY, horizon: int | None = None,
                     pinwheels: int = 4, grain: int = GRAIN) -> list[Rect]:
    """The hidden packing of :func:`zero_slack_instance`: ``n_buffers`` rectangles
    ``(start, end, offset, offset + size)`` tiling ``[0, horizon) x [0, capacity)``."""
    if capacity % grain or capacity < grain:
        raise ValueError(f"capacity {capacity} must be a positive multiple of the grain {grain} bytes")
    horizon = 2 * n_buffers if horizon is None else horizon
    if n_buffers < 1 or n_buffers > horizon * (capacity // grain):
        raise ValueError(f"cannot cut a {horizon}-step x {capacity}-byte rectangle into {n_buffers} buffers "
                         f"of at least one step x {grain} bytes")
    rng = random.Random(seed)
    rects: list[Rect] = [(0, horizon, 0, capacity)]

    def area(r: Rect) -> float:
        return (r[1] - r[0]) / horizon * (r[3] - r[2]) / capacity

    made = 0
    while len(rects) < n_buffers:
        if made < pinwheels and n_buffers - len(rects) >= 4:
            # the largest rectangle that can hold a pinwheel
            for k in sorted(range(len(rects)), key=lambda k: -area(rects[k])):
                pieces = _pinwheel(rects[k], grain, rng)
                if pieces:
                    rects[k:k + 1] = pieces
                    break
            made += 1
            continue
        # A straight cut of a rectangle drawn by area, across its longer side (relative
        # to the whole rectangle) more often, so pieces stay of mixed shapes.
        cuttable = [(k, a) for k, r in enumerate(rects)
                    if (a := area(r)) and (_can_cut(r, 0, grain) or _can_cut(r, 1, grain))]
        k = rng.choices([k for k, _ in cuttable], weights=[a for _, a in cuttable])[0]
        r = rects[k]
        wide = (r[1] - r[0]) / horizon >= (r[3] - r[2]) / capacity
        axis = 0 if rng.random() < (0.75 if wide else 0.25) else 1
        if not _can_cut(r, axis, grain):
            axis = 1 - axis
        rects[k:k + 1] = _cut(r, axis, grain, rng)
    rng.shuffle(rects)  # the cutting order would hint at the packing
    return rects


def zero_slack_instance(n_buffers: int, *, seed: int = 0, capacity: int = CAPACITY, horizon: int | None = None,
                        pinwheels: int = 4, grain: int = GRAIN) -> list[Lifetime]:
    """``n_buffers`` lifetimes whose optimal arena is ``capacity`` bytes, the peak of
    live bytes, with no slack: a ``horizon``-step (default ``2 * n_buffers``) x
    ``capacity``-byte rectangle cut into buffers, ``pinwheels`` of the cuts
    interlocked (module docstring). Sizes are multiples of ``grain`` bytes; the
    buffers come in a shuffled order, ids ``b0``, ``b1``, ...; the same arguments give
    the same instance."""
    rects = zero_slack_rects(n_buffers, seed=seed, capacity=capacity, horizon=horizon, pinwheels=pinwheels,
                             grain=grain)
    return [Lifetime(f"b{i}", t0, t1, m1 - m0) for i, (t0, t1, m0, m1) in enumerate(rects)]


def hidden_offsets(n_buffers: int, **kwargs) -> dict[str, int]:
    """The offsets (bytes) of the hidden zero-slack packing of
    ``zero_slack_instance(n_buffers, **kwargs)``."""
    return {f"b{i}": m0 for i, (_, _, m0, _) in enumerate(zero_slack_rects(n_buffers, **kwargs))}
