"""Merging buffers that a packing can keep together: a restriction that shrinks hard instances.

Two rules, applied until neither applies:

- buffers with the same lifetime are stacked into one buffer (their sizes add up);
- a buffer that starts at the step where another of the same size ends takes its
  place (one buffer from the first's start to the second's end), when no other buffer
  of that size ends or starts at that step.

Each merged buffer is exactly the union of its parts, so a placement of the merged
buffers is one of the originals with the same arena, and the live bytes at every
step, hence the lower bound, are unchanged. It is a restriction: the merged
instance may need a larger arena than the original (a stack forbids putting another
buffer between its parts), so the exact search (:mod:`model_place.exact`) tries it,
with both rules, then each alone (:data:`VARIANTS`), as candidates when its first
decision stalls, never as the answer alone.

Instances cut from a rectangle (:mod:`model_place.hard_instances`) shrink most: a
straight cut of a rectangle leaves either two buffers of the same lifetime or a
same-size handoff, so merging undoes the cuts (2,400 buffers become 85 to 88).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence

import attrs

from model_ir import Lifetime

from model_place.lifetimes import check_lifetimes


@attrs.frozen
class Merged:
    """``lifetimes``: the merged instance (buffers that merged with nothing keep their
    lifetime and id); ``parts``: merged id -> ``(original id, offset within it)``."""

    lifetimes: tuple[Lifetime, ...]
    parts: Mapping[str, tuple[tuple[str, int], ...]] = attrs.field(hash=False)

    def expand(self, offsets: Mapping[str, int]) -> dict[str, int]:
        """Offsets of the original buffers from offsets of the merged ones."""
        return {orig: offsets[mid] + rel for mid, parts in self.parts.items() for orig, rel in parts}


#: The rule sets :mod:`model_place.exact` tries, strongest restriction first: both rules,
#: then handoffs alone, then stacks alone (each when it merges something the previous
#: did not leave as is).
VARIANTS = ((True, True), (False, True), (True, False))


def merge_lifetimes(lifetimes: Sequence[Lifetime], *, stacks: bool = True, handoffs: bool = True) -> Merged | None:
    """The lifetimes merged by the module's rules (``stacks``: equal lifetimes,
    ``handoffs``: same-size handoffs); None when none merges. Zero-byte buffers are left
    out (they take no part in a placement)."""
    lifetimes = check_lifetimes(lifetimes)
    taken = {lt.id for lt in lifetimes}
    # merged id -> [start, end, size, alignment, parts]
    items: dict[str, tuple[int, int, int, int, tuple[tuple[str, int], ...]]] = {
        lt.id: (lt.start, lt.end, lt.size, lt.alignment, ((lt.id, 0),)) for lt in lifetimes if lt.size}
    count = len(items)
    fresh = 0

    def new_id() -> str:
        nonlocal fresh
        while f"merged:{fresh}" in taken:
            fresh += 1
        fresh += 1
        return f"merged:{fresh - 1}"

    changed = True
    while changed:
        changed = False
        by_lifetime = defaultdict(list)
        for key, (start, end, *_rest) in items.items() if stacks else ():
            by_lifetime[start, end].append(key)
        for (start, end), keys in by_lifetime.items():
            if len(keys) < 2:
                continue
            align = math.lcm(*(items[k][3] for k in keys))
            if any(items[k][2] % align for k in keys):
                continue  # a part could land off its alignment inside the stack
            parts, offset = [], 0
            for key in keys:
                _, _, size, _, own = items.pop(key)
                parts += [(orig, offset + rel) for orig, rel in own]
                offset += size
            items[new_id()] = (start, end, offset, align, tuple(parts))
            changed = True
        ending, starting = defaultdict(list), defaultdict(list)
        for key, (start, end, size, *_rest) in items.items() if handoffs else ():
            ending[end, size].append(key)
            starting[start, size].append(key)
        for at, firsts in ending.items():
            seconds = starting.get(at, ())
            if len(firsts) != 1 or len(seconds) != 1 or firsts[0] not in items or seconds[0] not in items:
                continue
            (start, _, size, a1, p1), (_, end, _, a2, p2) = items.pop(firsts[0]), items.pop(seconds[0])
            items[new_id()] = (start, end, size, math.lcm(a1, a2), p1 + p2)
            changed = True
    if len(items) == count:
        return None
    return Merged(tuple(Lifetime(key, start, end, size, alignment=align)
                        for key, (start, end, size, align, _) in items.items()),
                  {key: item[4] for key, item in items.items()})
