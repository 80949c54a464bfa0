"""A simulation of PyTorch's CUDA caching allocator (``c10/cuda/CUDACachingAllocator.cpp``).

It replays the allocations and frees of a set of lifetimes in time order (frees of
a step before its allocations, then input order) with the allocator's default
rules, and reports the memory PyTorch would *reserve* from the driver, which is
what an eager user pays:

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

Addresses are virtual: segments are laid end to end in creation order, so every
buffer gets an offset in ``[0, reserved_bytes)`` that a plot can show.
Not modelled: streams, ``max_split_size_mb``, expandable segments, garbage
collection thresholds, and releasing cached segments after an out-of-memory retry.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence

import attrs
from model_ir import Lifetime

from model_place.lifetimes import check_lifetimes

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
    """

    reserved_bytes: int
    allocated_peak_bytes: int
    requested_peak_bytes: int
    offsets: Mapping[str, int] = attrs.field(hash=False)
    block_bytes: Mapping[str, int] = attrs.field(hash=False)
    segment_of: Mapping[str, int] = attrs.field(hash=False)
    segments: tuple[Segment, ...]


class _Block:
    __slots__ = ("addr", "size", "pool", "segment", "prev", "next", "free")

    def __init__(self, addr: int, size: int, pool: str, segment: int):
        self.addr, self.size, self.pool, self.segment = addr, size, pool, segment
        self.prev: _Block | None = None
        self.next: _Block | None = None
        self.free = True


def simulate_caching_allocator(lifetimes: Sequence[Lifetime]) -> CachingAllocatorResult:
    """Replay ``lifetimes`` through the caching allocator; see the module docstring."""
    lifetimes = check_lifetimes(lifetimes)
    events = []
    for i, lt in enumerate(lifetimes):
        if lt.size:
            events.append((lt.start, 1, i))
            events.append((lt.end, 0, i))
    events.sort()
    free_lists: dict[str, list[tuple[int, int]]] = {"small": [], "large": []}  # (size, addr)
    by_addr: dict[int, _Block] = {}
    segments: list[Segment] = []
    reserved = allocated = requested = 0
    allocated_peak = requested_peak = 0
    held: dict[int, _Block] = {}
    offsets: dict[str, int] = {lt.id: 0 for lt in lifetimes}
    block_bytes: dict[str, int] = {lt.id: 0 for lt in lifetimes}
    segment_of: dict[str, int] = {lt.id: -1 for lt in lifetimes}

    def take(block: _Block) -> None:
        fl = free_lists[block.pool]
        del fl[bisect.bisect_left(fl, (block.size, block.addr))]

    def give(block: _Block) -> None:
        bisect.insort(free_lists[block.pool], (block.size, block.addr))

    for _, kind, i in events:
        lt = lifetimes[i]
        if kind == 1:
            size = round_size(lt.size)
            pool = pool_of(size)
            fl = free_lists[pool]
            k = bisect.bisect_left(fl, (size, -1))
            if k < len(fl):
                block = by_addr[fl[k][1]]
                take(block)
            else:
                seg = segment_size(size)
                block = _Block(reserved, seg, pool, len(segments))
                segments.append(Segment(reserved, seg, pool))
                by_addr[block.addr] = block
                reserved += seg
            if should_split(pool, block.size - size):
                rest = _Block(block.addr + size, block.size - size, pool, block.segment)
                rest.prev, rest.next = block, block.next
                if block.next is not None:
                    block.next.prev = rest
                block.next = rest
                block.size = size
                by_addr[rest.addr] = rest
                give(rest)
            block.free = False
            held[i] = block
            offsets[lt.id], block_bytes[lt.id], segment_of[lt.id] = block.addr, block.size, block.segment
            allocated += block.size
            requested += lt.size
            allocated_peak = max(allocated_peak, allocated)
            requested_peak = max(requested_peak, requested)
        else:
            block = held.pop(i)
            allocated -= block.size
            requested -= lt.size
            block.free = True
            del by_addr[block.addr]
            for nb in (block.prev, block.next):
                if nb is not None and nb.free:
                    take(nb)
                    del by_addr[nb.addr]
                    if nb is block.prev:
                        block.addr, block.prev = nb.addr, nb.prev
                        if nb.prev is not None:
                            nb.prev.next = block
                    else:
                        block.next = nb.next
                        if nb.next is not None:
                            nb.next.prev = block
                    block.size += nb.size
            by_addr[block.addr] = block
            give(block)
    return CachingAllocatorResult(reserved, allocated_peak, requested_peak, offsets, block_bytes, segment_of,
                                  tuple(segments))
