"""Test helpers: a Hypothesis strategy for lifetimes and a brute-force optimum.

Imports Hypothesis, so only tests import this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import permutations

try:
    from hypothesis import strategies as st
except ImportError as e:
    raise ImportError("model_place.testing needs Hypothesis, which is not installed: "
                      "pip install 'model-place[testing]'", name=e.name) from e
from model_ir import Lifetime

from model_place.lifetimes import align_up


@st.composite
def lifetime_sets(draw, min_size: int = 0, max_size: int = 8, max_time: int = 12, max_bytes: int = 40,
                  alignments: Sequence[int] = (1,)) -> tuple[Lifetime, ...]:
    """Random valid lifetimes: ids ``b0..``, ``[start, end)`` within ``max_time``
    steps, sizes 0..``max_bytes`` bytes, alignments drawn from ``alignments``."""
    n = draw(st.integers(min_size, max_size))
    out = []
    for i in range(n):
        start = draw(st.integers(0, max_time - 1))
        end = draw(st.integers(start + 1, max_time))
        size = draw(st.integers(0, max_bytes))
        out.append(Lifetime(f"b{i}", start, end, size, draw(st.sampled_from(list(alignments)))))
    return tuple(out)


def brute_force_arena(lifetimes: Sequence[Lifetime]) -> int:
    """The smallest arena, by trying every order of "drop each buffer on top of the
    overlapping buffers placed before it". Every optimal placement can be pushed
    down into one of these (sort it by offset and let each buffer fall), so the
    minimum over all orders is the optimum. Exponential: keep to <= 7 buffers."""
    sized = [lt for lt in lifetimes if lt.size]
    best = None
    for order in permutations(range(len(sized))):
        placed: list[tuple[Lifetime, int]] = []
        top = 0
        for i in order:
            lt = sized[i]
            off = max((o + p.size for p, o in placed if p.start < lt.end and lt.start < p.end), default=0)
            off = align_up(off, lt.alignment)
            placed.append((lt, off))
            top = max(top, off + lt.size)
            if best is not None and top >= best:
                break
        else:
            best = top if best is None else min(best, top)
    return best or 0
