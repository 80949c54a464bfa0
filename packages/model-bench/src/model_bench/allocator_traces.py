"""The caching allocator's recorded events against the simulated requests.

A traced GPU run (``scripts/eager_on_gpu.py --trace`` or ``--trace-all``, the runs
model-runtime's ``gpu_matrix.py`` lists in ``TRACED``) records the allocator's events as
``[action, address, bytes]``: ``alloc``, ``free_requested`` and ``free_completed`` for
blocks, ``segment_alloc``/``segment_free`` (``segment_map``/``segment_unmap`` with
expandable segments) for the memory it reserves. Two questions decide where a
simulated figure's miss lies:

- Does the simulated allocator, fed the *recorded* requests, reserve what was measured?
  (:func:`trace_lifetimes`, then :func:`model_place.simulate_caching_allocator`.) If so,
  the allocator model is right and the miss is in the requests.
- Which requests differ? :func:`align` matches a recorded step's allocations with the
  simulated step's in order and sorts the rest into moved (same size, another moment),
  resized (same place, another size) and present on one side only.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

import attrs

from model_ir import Lifetime
from model_place.caching_allocator import round_size

#: Events that reserve (+) or release (-) device memory.
SEGMENT_EVENTS = {"segment_alloc": 1, "segment_map": 1, "segment_free": -1, "segment_unmap": -1}

#: Two requests of one place whose sizes differ by at most this fraction are one request resized.
RESIZED = 0.05


def trace_lifetimes(events: Sequence[Sequence], start: int = 0) -> tuple[list[Lifetime], list[Lifetime]]:
    """``(held, step)``: the blocks of ``events`` alive when event ``start`` happens
    (``held``: allocated before it, in the order they were allocated), and those
    allocated from it on (``step``), as lifetimes on the events' clock: event ``i`` is
    time ``i - start + 1``, ``held`` starts at 0. A block ends when it is freed
    (``free_completed``, or ``free_requested`` when the trace has no completion), or
    after the last event. Frees of blocks allocated before the trace are ignored.
    Ids: ``#<index of the allocation's event>``."""
    if not 0 <= start <= len(events):
        raise ValueError(f"start {start} is outside the trace's {len(events)} events")
    completes = any(e[0] == "free_completed" for e in events)
    free_action = "free_completed" if completes else "free_requested"
    opened: dict[int, tuple[int, int]] = {}  # address -> (event index, bytes)
    ended: list[tuple[int, int, int]] = []  # (allocated at, freed at, bytes)
    for i, (action, address, size) in enumerate(events):
        if action == "alloc":
            opened[address] = (i, size)
        elif action == free_action and address in opened:
            at, nbytes = opened.pop(address)
            ended.append((at, i, nbytes))
    last = len(events) - start + 1
    ended += [(at, len(events), nbytes) for at, nbytes in opened.values()]
    held, step = [], []
    for at, freed, nbytes in sorted(ended):
        if freed < start:
            continue
        end = freed - start + 1 if freed < len(events) else last
        if at < start:
            held.append(Lifetime(f"#{at}", 0, end, nbytes))
        else:
            step.append(Lifetime(f"#{at}", at - start + 1, end, nbytes))
    return held, step


def trace_reserved_bytes(events: Sequence[Sequence]) -> int:
    """The most bytes the trace's segment events had reserved at once: what
    ``torch.cuda.max_memory_reserved`` says when the trace covers the whole run."""
    reserved = peak = 0
    for action, _, size in events:
        reserved += SEGMENT_EVENTS.get(action, 0) * size
        peak = max(peak, reserved)
    return peak


@attrs.frozen
class Alignment:
    """A recorded step's allocations against a simulated step's (bytes as requested).

    ``matched``: allocations found in both, in the same order. ``moved``: ``(simulated
    id, simulated bytes, recorded id)`` of one size (or within :data:`RESIZED`) on both
    sides at other moments. ``resized``:
    ``(simulated id, simulated bytes, recorded id, recorded bytes)`` at one place
    within :data:`RESIZED` of each other. ``only_simulated``: ``(id, bytes)``.
    ``only_recorded``: ``(id, bytes, after)``, ``after`` the simulated request matched
    last before it (``""`` at the start): where the simulation lacks it."""

    matched: int
    moved: tuple[tuple[str, int, str], ...]
    resized: tuple[tuple[str, int, str, int], ...]
    only_simulated: tuple[tuple[str, int], ...]
    only_recorded: tuple[tuple[str, int, str], ...]


def _in_order(lifetimes: Sequence[Lifetime]) -> list[Lifetime]:
    return [lt for _, lt in sorted(((lt.start, i), lt) for i, lt in enumerate(lifetimes) if lt.size)]


def align(simulated: Sequence[Lifetime], recorded: Sequence[Lifetime]) -> Alignment:
    """Match the allocations of ``recorded`` (a step of :func:`trace_lifetimes`) with
    ``simulated`` (the simulated step's requests), each taken in the order it allocates;
    sizes compare after the allocator's rounding. See :class:`Alignment`."""
    sim, rec = _in_order(simulated), _in_order(recorded)
    a, b = [round_size(lt.size) for lt in sim], [round_size(lt.size) for lt in rec]
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    matched = 0
    after: dict[int, str] = {}  # recorded position -> last matched simulated id before it
    left_sim: list[tuple[int, int]] = []  # (position, opcode block) not matched in order
    left_rec: list[tuple[int, int]] = []
    last = ""
    for block, (tag, i1, i2, j1, j2) in enumerate(matcher.get_opcodes()):
        if tag == "equal":
            matched += i2 - i1
            last = sim[i2 - 1].id
            continue
        left_sim += [(i, block) for i in range(i1, i2)]
        left_rec += [(j, block) for j in range(j1, j2)]
        after.update({j: last for j in range(j1, j2)})
    taken_sim: set[int] = set()
    rest_rec = list(left_rec)

    def pair(fits) -> list[tuple[int, int]]:
        """Pair the simulated and recorded requests left that ``fits(i, block, j,
        recorded block)``, each with the first recorded one that does."""
        pairs = []
        for i, blk in left_sim:
            if i in taken_sim:
                continue
            k = next((k for k, (j, rblk) in enumerate(rest_rec) if fits(i, blk, j, rblk)), None)
            if k is not None:
                pairs.append((i, rest_rec.pop(k)[0]))
                taken_sim.add(i)
        return pairs

    def near(i: int, j: int) -> bool:
        return abs(b[j] - a[i]) <= RESIZED * max(a[i], b[j])

    # one size elsewhere in the step: the same request, moved; then, within one block of
    # differences, a size close by: the same request, resized; then one close by elsewhere: moved
    moved = pair(lambda i, blk, j, rblk: a[i] == b[j])
    resized = pair(lambda i, blk, j, rblk: blk == rblk and near(i, j))
    moved += pair(lambda i, blk, j, rblk: near(i, j))
    return Alignment(
        matched=matched, moved=tuple((sim[i].id, sim[i].size, rec[j].id) for i, j in moved),
        resized=tuple((sim[i].id, sim[i].size, rec[j].id, rec[j].size) for i, j in resized),
        only_simulated=tuple((sim[i].id, sim[i].size) for i, _ in left_sim if i not in taken_sim),
        only_recorded=tuple((rec[j].id, rec[j].size, after[j]) for j, _ in rest_rec))
