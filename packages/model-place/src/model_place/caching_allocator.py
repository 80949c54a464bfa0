"""A simulation of PyTorch's CUDA caching allocator (``c10/cuda/CUDACachingAllocator.cpp``).

It replays the allocations and frees of a set of lifetimes in time order (frees of
a step before its allocations, then input order) and reports the memory PyTorch
would *reserve* from the driver, which is what an eager user pays. Two settings:

Default (``PYTORCH_CUDA_ALLOC_CONF`` unset):

- requests round up to a multiple of 512 bytes (at least 512); zero-byte requests
  take no memory;
- requests up to 1 MiB use the small pool, carved from 2 MiB segments; larger
  ones the large pool, carved from 20 MiB segments for requests under 10 MiB and
  otherwise from a segment of exactly the request rounded up to 2 MiB;
- a request takes the best-fitting free block of its pool (smallest size, then
  lowest address), split when the remainder is at least 512 bytes (small pool) or
  more than 1 MiB (large pool); the request gets the front of the block;
- a freed block merges with free neighbours of its segment; segments are never
  released (no ``empty_cache``), so reserved memory only grows.

Expandable segments (``expandable_segments:True``; the same in torch 2.9 to 2.11):

- each pool is one segment of virtual address space that grows by mapping pages
  of 2 MiB (small pool) or 20 MiB (large pool); reserved memory is the mapped pages;
- a request takes the best-fitting mapped free block, except that the free block
  at the mapped end (which could grow) loses to the next-best fit when there is one;
- when no mapped free block fits, the segment maps just enough pages at its end,
  merged with the free block there if the last block is free;
- blocks split whenever the remainder is at least 512 bytes (both pools), so a
  block is exactly the rounded request; pages are never unmapped (no
  ``empty_cache``, no out-of-memory retry).

Training steps (:func:`simulate_training_steps`): the allocator keeps its segments
from one step to the next, so a later step starts from the free blocks the first
left and can split them differently and reserve more. At a step's end every buffer
of the step is free and merged with its free neighbours, so the state between steps
is fixed by the segments alone: a step that reserves nothing new is repeated for
ever after, and replaying steps until one reserves nothing new gives the steady
state that ``torch.cuda.max_memory_reserved`` measures over a run.

Addresses are virtual: default segments are laid end to end in creation order;
with expandable segments the large pool's segment comes first, then the small
pool's. Every buffer gets an offset in ``[0, reserved_bytes)`` that a plot can show.
Not modelled: streams, ``max_split_size_mb``, ``roundup_power2_divisions``,
garbage collection thresholds, and releasing cached memory after an out-of-memory
retry. Checked against ``torch.cuda`` on an H200 (tests/model_place/test_place_cuda_reserved.py,
``-m gpu``).
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence

import attrs
from model_ir import Lifetime

from model_place.lifetimes import check_lifetimes, live_bytes_peak

MIN_BLOCK = 512
SMALL_SIZE = 1 << 20
SMALL_BUFFER = 2 << 20
LARGE_BUFFER = 20 << 20
MIN_LARGE_ALLOC = 10 << 20
ROUND_LARGE = 2 << 20


def round_size(size: int) -> int:
    """Bytes the allocator hands out for a request of ``size`` bytes (> 0)."""
    if size < MIN_BLOCK:
        return MIN_BLOCK
    return MIN_BLOCK * (-(-size // MIN_BLOCK))


def segment_size(rounded: int) -> int:
    """Bytes reserved from the driver when no cached block fits ``rounded`` bytes."""
    if rounded <= SMALL_SIZE:
        return SMALL_BUFFER
    if rounded < MIN_LARGE_ALLOC:
        return LARGE_BUFFER
    return ROUND_LARGE * (-(-rounded // ROUND_LARGE))


def pool_of(rounded: int) -> str:
    return "small" if rounded <= SMALL_SIZE else "large"


def should_split(pool: str, remaining: int) -> bool:
    if pool == "small":
        return remaining >= MIN_BLOCK
    return remaining > SMALL_SIZE


@attrs.frozen
class Segment:
    """One reservation from the driver: ``size`` bytes at virtual address ``base``."""

    base: int
    size: int
    pool: str


@attrs.frozen
class CachingAllocatorResult:
    """What the simulated allocator did (all figures in bytes).

    ``reserved_bytes``: total segment bytes (``torch.cuda.max_memory_reserved``).
    ``allocated_peak_bytes``: peak of the bytes of blocks in use, as PyTorch counts
    them (rounded, unsplit remainders included; ``max_memory_allocated``).
    ``requested_peak_bytes``: peak of the bytes requested (live bytes).
    ``offsets``/``block_bytes``/``segment_of``: for every buffer, its virtual
    address, the size of the block it got and the index of its segment.
    ``steps``: training steps replayed (:func:`simulate_training_steps`; 1 otherwise).
    """

    reserved_bytes: int
    allocated_peak_bytes: int
    requested_peak_bytes: int
    offsets: Mapping[str, int] = attrs.field(hash=False)
    block_bytes: Mapping[str, int] = attrs.field(hash=False)
    segment_of: Mapping[str, int] = attrs.field(hash=False)
    segments: tuple[Segment, ...]
    steps: int = 1


#: Steps :func:`simulate_training_steps` replays at most (the H200 runs settled by their second).
MAX_STEPS = 8


def simulate_training_steps(kept: Sequence[Lifetime], step: Sequence[Lifetime], *,
                            expandable_segments: bool = False, max_steps: int = MAX_STEPS) -> CachingAllocatorResult:
    """The steady state of a training loop: ``kept`` (weights, optimizer state, batch,
    library workspaces) allocated first and never freed, then ``step`` replayed back to
    back until a step reserves nothing new, at most ``max_steps`` times.

    Replaying the eager traces measured on the H200 this way reproduces their
    ``max_memory_reserved`` (bert-base and r3d_18 at batch 32 reserve 11% more from their
    second step on than in their first). The result's offsets are the last step's (and
    ``kept``'s) under the ids given; ``steps`` says how many steps were replayed. The
    allocator goes on from one step to the next (the same as replaying the steps from
    the start each time, in one pass)."""
    kept, step = check_lifetimes(kept), check_lifetimes(step)
    if max_steps < 1:
        raise ValueError(f"max_steps must be at least 1, not {max_steps}")
    replay = _Replay(expandable_segments)
    for i, lt in enumerate(kept):  # allocated first, freed after every step
        replay.allocate(lt, ("kept", i))
    events = _events(step)
    previous = None
    for steps in range(1, max_steps + 1):
        replay.run(step, events)
        if replay.reserved == previous:
            break
        previous = replay.reserved
    return attrs.evolve(replay.result([(("kept", i), lt) for i, lt in enumerate(kept)]
                                      + [((None, i), lt) for i, lt in enumerate(step)]), steps=steps)


class _Block:
    __slots__ = ("addr", "size", "pool", "segment", "prev", "next", "free")

    def __init__(self, addr: int, size: int, pool: str, segment: int):
        self.addr, self.size, self.pool, self.segment = addr, size, pool, segment
        self.prev: _Block | None = None
        self.next: _Block | None = None
        self.free = True


#: Page size of an expandable segment, per pool (bytes).
EXPANDABLE_PAGE = {"small": SMALL_BUFFER, "large": LARGE_BUFFER}


class _Pool:
    """The free blocks of one pool, by (size, address), and (expandable) its mapped end."""

    def __init__(self, name: str, expandable: bool):
        self.name, self.expandable = name, expandable
        self.free: list[tuple[int, int]] = []
        self.by_addr: dict[int, _Block] = {}
        self.last: _Block | None = None  # expandable: the block at the mapped end
        self.mapped = 0

    def take(self, block: _Block) -> None:
        del self.free[bisect.bisect_left(self.free, (block.size, block.addr))]

    def give(self, block: _Block) -> None:
        bisect.insort(self.free, (block.size, block.addr))

    def best_fit(self, size: int) -> _Block | None:
        k = bisect.bisect_left(self.free, (size, -1))
        if k == len(self.free):
            return None
        block = self.by_addr[self.free[k][1]]
        if self.expandable and block is self.last and k + 1 < len(self.free):
            # the allocator ranks the growable end block by the size it could grow to
            block = self.by_addr[self.free[k + 1][1]]
        self.take(block)
        return block

    def grow(self, size: int) -> tuple[_Block, int]:
        """Map pages at the end for ``size`` bytes; the block to serve and the bytes mapped."""
        page = EXPANDABLE_PAGE[self.name]
        last = self.last
        if last is not None and last.free:
            self.take(last)
            grown = page * -(-(size - last.size) // page)
            last.size += grown
            block = last
        else:
            grown = page * -(-size // page)
            block = _Block(self.mapped, grown, self.name, 0)
            block.prev = last
            if last is not None:
                last.next = block
            self.by_addr[block.addr] = block
            self.last = block
        self.mapped += grown
        return block, grown

    def split(self, block: _Block, size: int) -> None:
        """Give the back of ``block`` beyond ``size`` bytes back to the pool if the rules allow."""
        remaining = block.size - size
        if not (remaining >= MIN_BLOCK if self.expandable else should_split(self.name, remaining)):
            return
        rest = _Block(block.addr + size, remaining, self.name, block.segment)
        rest.prev, rest.next = block, block.next
        if block.next is not None:
            block.next.prev = rest
        block.next = rest
        block.size = size
        if self.last is block:
            self.last = rest
        self.by_addr[rest.addr] = rest
        self.give(rest)

    def release(self, block: _Block) -> None:
        """Free ``block``, merged with its free neighbours."""
        block.free = True
        del self.by_addr[block.addr]
        for nb in (block.prev, block.next):
            if nb is not None and nb.free:
                self.take(nb)
                del self.by_addr[nb.addr]
                if nb is block.prev:
                    block.addr, block.prev = nb.addr, nb.prev
                    if nb.prev is not None:
                        nb.prev.next = block
                else:
                    block.next = nb.next
                    if nb.next is not None:
                        nb.next.prev = block
                block.size += nb.size
                if self.last is nb:
                    self.last = block
        self.by_addr[block.addr] = block
        self.give(block)


def reserved_lower_bound(held: Sequence[Lifetime], step: Sequence[Lifetime], *,
                         expandable_segments: bool = False) -> int:
    """Bytes below which no replay of ``step`` beside ``held`` (allocated before it and
    kept throughout) reserves, without replaying it: per pool, the blocks alive together
    at the step's peak (requests rounded as the allocator rounds them), rounded up to
    what the pool reserves in (2 MiB; expandable segments map the large pool in pages of
    20 MiB). Holds for :func:`simulate_training_steps` with ``held`` and ``kept`` (kept
    lifetimes given in ``step`` with their times), whatever else its steps allocate."""
    bound = 0
    for pool in ("small", "large"):
        requests = [Lifetime(lt.id, lt.start, lt.end, r) for lt in step
                    if lt.size and pool_of(r := round_size(lt.size)) == pool]
        peak = sum(r for lt in held if lt.size and pool_of(r := round_size(lt.size)) == pool)
        peak += live_bytes_peak(requests)
        unit = EXPANDABLE_PAGE[pool] if expandable_segments else ROUND_LARGE
        bound += unit * -(-peak // unit)
    return bound


def simulate_caching_allocator(lifetimes: Sequence[Lifetime], *,
                               expandable_segments: bool = False) -> CachingAllocatorResult:
    """Replay ``lifetimes`` through the caching allocator; see the module docstring."""
    lifetimes = check_lifetimes(lifetimes)
    replay = _Replay(expandable_segments)
    replay.run(lifetimes, _events(lifetimes))
    return replay.result([((None, i), lt) for i, lt in enumerate(lifetimes)])


def _events(lifetimes: Sequence[Lifetime]) -> list[tuple[int, int, int]]:
    """``(time, 0: free | 1: allocate, index)`` of the lifetimes that take memory, in
    replay order: frees of a time before its allocations, then input order."""
    return sorted((t, kind, i) for i, lt in enumerate(lifetimes) if lt.size
                  for t, kind in ((lt.start, 1), (lt.end, 0)))


class _Replay:
    """The allocator's state while it serves requests: pools, segments and counters."""

    def __init__(self, expandable: bool):
        self.expandable = expandable
        self.pools = {name: _Pool(name, expandable) for name in ("small", "large")}
        self.segments: list[Segment] = []
        self.reserved = self.allocated = self.requested = 0
        self.allocated_peak = self.requested_peak = 0
        self.held: dict[tuple, _Block] = {}
        #: request key -> (address in its pool's space, block bytes, segment index)
        self.placed: dict[tuple, tuple[int, int, int]] = {}

    def run(self, lifetimes: Sequence[Lifetime], events) -> None:
        """Serve ``events`` (:func:`_events` of ``lifetimes``), keyed ``(None, index)``."""
        for _, kind, i in events:
            if kind:
                self.allocate(lifetimes[i], (None, i))
            else:
                self.free(lifetimes[i], (None, i))

    def free(self, lt: Lifetime, key: tuple) -> None:
        block = self.held.pop(key)
        self.allocated -= block.size
        self.requested -= lt.size
        self.pools[block.pool].release(block)

    def allocate(self, lt: Lifetime, key: tuple) -> None:
        if not lt.size:
            return
        size = round_size(lt.size)
        pool = self.pools[pool_of(size)]
        block = pool.best_fit(size)
        if block is None and self.expandable:
            block, grown = pool.grow(size)
            self.reserved += grown
        elif block is None:
            seg = segment_size(size)
            block = _Block(self.reserved, seg, pool.name, len(self.segments))
            self.segments.append(Segment(self.reserved, seg, pool.name))
            pool.by_addr[block.addr] = block
            self.reserved += seg
        pool.split(block, size)
        block.free = False
        self.held[key] = block
        self.placed[key] = (block.addr, block.size, block.segment)
        self.allocated += block.size
        self.requested += lt.size
        self.allocated_peak = max(self.allocated_peak, self.allocated)
        self.requested_peak = max(self.requested_peak, self.requested)

    def result(self, requests: Sequence[tuple[tuple, Lifetime]]) -> CachingAllocatorResult:
        """The figures so far, with the last placement of each of ``requests`` (key, lifetime)."""
        segments = list(self.segments)
        base, index = {"large": 0, "small": 0}, {}
        if self.expandable:
            # one segment per pool that mapped pages: the large pool's first, then the small pool's
            base["small"] = self.pools["large"].mapped
            for name in ("large", "small"):
                if self.pools[name].mapped:
                    segments.append(Segment(base[name], self.pools[name].mapped, name))
            index = {seg.pool: k for k, seg in enumerate(segments)}
        offsets, block_bytes, segment_of = {}, {}, {}
        for key, lt in requests:
            addr, nbytes, segment = self.placed.get(key, (0, 0, -1))
            if self.expandable and lt.size:
                name = pool_of(round_size(lt.size))
                addr, segment = addr + base[name], index[name]
            offsets[lt.id], block_bytes[lt.id], segment_of[lt.id] = addr, nbytes, segment
        return CachingAllocatorResult(self.reserved, self.allocated_peak, self.requested_peak, offsets, block_bytes,
                                      segment_of, tuple(segments))
