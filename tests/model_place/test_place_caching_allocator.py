"""The caching-allocator simulation against hand-worked cases of PyTorch's rules."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from model_ir import Lifetime

from model_place import simulate_caching_allocator
from model_place.caching_allocator import round_size, segment_size

KiB, MiB = 1 << 10, 1 << 20


def lt(i, start, end, size):
    return Lifetime(i, start, end, size)


@pytest.mark.parametrize("req,rounded", [(1, 512), (511, 512), (512, 512), (513, 1024), (1000, 1024),
                                         (MiB, MiB), (MiB + 1, MiB + 512)])
def test_round_size(req, rounded):
    assert round_size(req) == rounded


@pytest.mark.parametrize("rounded,seg", [(512, 2 * MiB), (MiB, 2 * MiB), (MiB + 512, 20 * MiB),
                                         (10 * MiB - 512, 20 * MiB), (10 * MiB, 10 * MiB),
                                         (11 * MiB, 12 * MiB), (19 * MiB + 512 * KiB, 20 * MiB)])
def test_segment_size(rounded, seg):
    assert segment_size(rounded) == seg


def test_one_small_request_reserves_a_2mib_segment():
    r = simulate_caching_allocator([lt("a", 0, 1, 1000)])
    assert (r.reserved_bytes, r.allocated_peak_bytes, r.requested_peak_bytes) == (2 * MiB, 1024, 1000)
    assert r.offsets["a"] == 0 and r.block_bytes["a"] == 1024


def test_small_pool_splits_and_opens_a_second_segment():
    # 700 KiB each, all alive together: two fit the first 2 MiB segment, the third
    # (700 KiB > the 648 KiB left) needs a new segment.
    s = 700 * KiB
    r = simulate_caching_allocator([lt("a", 0, 1, s), lt("b", 0, 1, s), lt("c", 0, 1, s)])
    assert r.offsets == {"a": 0, "b": s, "c": 2 * MiB}
    assert r.reserved_bytes == 4 * MiB
    assert [g.pool for g in r.segments] == ["small", "small"]


def test_large_pool_segments_and_splitting():
    # 5 MiB in a fresh 20 MiB segment (15 MiB left, > 1 MiB: split); 12 MiB fits the
    # 15 MiB remainder (3 MiB left: split); 11 MiB fits nothing cached, so a segment
    # of exactly 12 MiB (11 MiB rounded up to 2 MiB) is reserved.
    r = simulate_caching_allocator([lt("a", 0, 1, 5 * MiB), lt("b", 0, 1, 12 * MiB), lt("c", 0, 1, 11 * MiB)])
    assert r.offsets == {"a": 0, "b": 5 * MiB, "c": 20 * MiB}
    assert r.reserved_bytes == 32 * MiB
    assert [g.size for g in r.segments] == [20 * MiB, 12 * MiB]


def test_large_pool_keeps_small_remainders_in_the_block():
    # 19.5 MiB -> a 20 MiB segment; the 0.5 MiB left is not > 1 MiB, so no split:
    # the whole 20 MiB counts as allocated.
    r = simulate_caching_allocator([lt("a", 0, 1, 19 * MiB + 512 * KiB)])
    assert r.block_bytes["a"] == 20 * MiB
    assert r.allocated_peak_bytes == 20 * MiB


def test_pools_do_not_share_memory():
    # Two 1 MiB requests fill a small segment; once freed (merged into 2 MiB), a
    # 1.5 MiB request still cannot use it: it belongs to the large pool.
    r = simulate_caching_allocator([lt("a", 0, 2, MiB), lt("b", 0, 2, MiB), lt("c", 2, 3, MiB + 512 * KiB)])
    assert r.offsets["c"] == 2 * MiB
    assert r.reserved_bytes == 22 * MiB


def test_best_fit_prefers_the_smallest_hole_and_merges_on_free():
    s = [256 * KiB, 512 * KiB, 128 * KiB, 512 * KiB]
    lts = [lt("a", 0, 1, s[0]), lt("b", 0, 9, s[1]), lt("c", 0, 9, s[2]), lt("d", 0, 9, s[3]),
           # after a is freed: holes of 256 KiB at 0 and 640 KiB at 1408 KiB
           lt("e", 2, 9, 200 * KiB), lt("f", 2, 9, 300 * KiB)]
    r = simulate_caching_allocator(lts)
    assert r.offsets["b"] == 256 * KiB and r.offsets["d"] == 896 * KiB
    assert r.offsets["e"] == 0            # the smaller hole
    assert r.offsets["f"] == 1408 * KiB   # 56 KiB left at 200 KiB is too small
    assert r.reserved_bytes == 2 * MiB
    # Everything freed at 9 merges back: a 2 MiB request... is large pool; a 1 MiB
    # one reuses the merged small segment from address 0.
    r2 = simulate_caching_allocator(lts + [lt("g", 9, 10, MiB)])
    assert r2.offsets["g"] == 0 and r2.reserved_bytes == 2 * MiB


def test_frees_happen_before_allocations_of_the_same_step():
    r = simulate_caching_allocator([lt("a", 0, 1, MiB), lt("b", 1, 2, MiB), lt("c", 1, 2, MiB)])
    assert r.offsets["b"] == 0 and r.offsets["c"] == MiB
    assert r.reserved_bytes == 2 * MiB


def test_zero_byte_requests_take_nothing():
    r = simulate_caching_allocator([lt("z", 0, 1, 0)])
    assert r.reserved_bytes == 0 and r.segments == ()


# -- expandable segments ---------------------------------------------------------------


def expandable(lts):
    return simulate_caching_allocator(lts, expandable_segments=True)


def test_expandable_maps_pages_at_the_end_and_prefers_a_fit_below_the_end():
    # Large pool, 20 MiB pages. a maps 2 pages; b does not fit the 10 MiB left and maps
    # one more page merged with it; c fits what is left at the end. Once a is freed, d
    # (2 MiB) could take the 3 MiB at the end, but the allocator keeps the growable end
    # block for later and takes the next-best fit: a's hole at address 0.
    r = expandable([lt("a", 0, 4, 30 * MiB), lt("b", 1, 5, 15 * MiB), lt("c", 2, 5, 12 * MiB),
                    lt("d", 4, 5, 2 * MiB)])
    assert [r.offsets[k] for k in "abcd"] == [0, 30 * MiB, 45 * MiB, 0]
    assert r.reserved_bytes == 60 * MiB
    assert r.allocated_peak_bytes == 57 * MiB  # blocks are the rounded requests, never a split remainder
    assert len(r.segments) == 1 and r.segments[0].size == 60 * MiB


def test_expandable_rounds_to_pages_not_to_segments():
    assert expandable([lt("a", 0, 1, 101 * MiB)]).reserved_bytes == 120 * MiB  # 6 pages of 20 MiB
    assert simulate_caching_allocator([lt("a", 0, 1, 101 * MiB)]).reserved_bytes == 102 * MiB
    # Small blocks pack across 2 MiB pages: 100 x 600 KiB map 30 pages (60 MiB), while
    # default 2 MiB segments hold 3 blocks each (34 segments, 68 MiB).
    lts = [lt(f"s{i}", 0, 1, 600 * KiB) for i in range(100)]
    assert expandable(lts).reserved_bytes == 60 * MiB
    assert simulate_caching_allocator(lts).reserved_bytes == 68 * MiB


def test_expandable_pools_are_separate_segments():
    r = expandable([lt("s", 0, 2, 100 * KiB), lt("l", 1, 2, 3 * MiB)])
    assert r.reserved_bytes == 22 * MiB
    assert r.offsets["l"] == 0 and r.offsets["s"] == 20 * MiB  # the large pool's segment comes first
    assert [seg.pool for seg in r.segments] == ["large", "small"]
    assert r.segment_of == {"s": 1, "l": 0}


def test_expandable_removes_the_fragmentation_of_a_growing_sequence():
    # Growing activations (eager's classic fragmentation): each freed block is too small
    # for the next request; default segments pile up, the expandable segment reuses the
    # hole at its end and maps only what is missing.
    lts = [lt(f"x{i}", i, i + 2, (12 + 2 * i) * MiB) for i in range(8)]
    assert expandable(lts).reserved_bytes < simulate_caching_allocator(lts).reserved_bytes


@st.composite
def mixed_lifetimes(draw):
    """Up to 30 lifetimes whose sizes span both pools (bytes to tens of MiB)."""
    out = []
    for i in range(draw(st.integers(1, 30))):
        start = draw(st.integers(0, 15))
        unit = draw(st.sampled_from([1, KiB, 64 * KiB, MiB]))
        out.append(lt(f"b{i}", start, draw(st.integers(start + 1, 16)), unit * draw(st.integers(0, 40))))
    return out


@settings(max_examples=150, deadline=None)
@given(mixed_lifetimes(), st.booleans())
def test_blocks_never_overlap_and_fit_their_segments(lts, expandable_segments):
    r = simulate_caching_allocator(lts, expandable_segments=expandable_segments)
    live = [x for x in lts if x.size]
    for x in live:
        seg = r.segments[r.segment_of[x.id]]
        assert r.block_bytes[x.id] == round_size(x.size) or not expandable_segments and r.block_bytes[x.id] > x.size
        assert seg.base <= r.offsets[x.id] and r.offsets[x.id] + r.block_bytes[x.id] <= seg.base + seg.size
        assert seg.pool == ("small" if round_size(x.size) <= MiB else "large")
    for a in live:
        for b in live:
            if a.id < b.id and a.start < b.end and b.start < a.end:
                assert (r.offsets[a.id] + r.block_bytes[a.id] <= r.offsets[b.id]
                        or r.offsets[b.id] + r.block_bytes[b.id] <= r.offsets[a.id]), (a, b)
    assert r.reserved_bytes == sum(s.size for s in r.segments)
    assert r.reserved_bytes % (2 * MiB) == 0
    steps = {x.start for x in live}
    assert r.allocated_peak_bytes == max((sum(r.block_bytes[x.id] for x in live if x.start <= t < x.end)
                                          for t in steps), default=0)
    assert r.requested_peak_bytes <= r.allocated_peak_bytes <= r.reserved_bytes


def test_a_later_step_can_reserve_more_than_the_first():
    """Step 1: b (4 MiB) opens a 20 MiB segment, c (16 MiB) fills its rest, a gets its own
    16 MiB segment: 36 MiB. Step 2 starts from free segments of 20 and 16 MiB: b now
    best-fits the 16 MiB one, c the 20 MiB one, and a finds no 16 MiB block: a third
    segment, 52 MiB. Step 3 fits in those, so 52 MiB is the steady state."""
    from model_place import simulate_training_steps

    step = [lt("a", 2, 3, 16 * MiB), lt("b", 1, 4, 4 * MiB), lt("c", 1, 4, 16 * MiB)]
    assert simulate_caching_allocator(step).reserved_bytes == 36 * MiB
    r = simulate_training_steps((), step)
    assert (r.reserved_bytes, r.steps) == (52 * MiB, 3)
    assert [s.size for s in r.segments] == [20 * MiB, 16 * MiB, 16 * MiB]
    assert r.offsets == {"b": 20 * MiB, "c": 36 * MiB, "a": 0}  # the steady step's addresses
    assert simulate_training_steps((), step, max_steps=2).reserved_bytes == 52 * MiB
    assert simulate_training_steps((), step, max_steps=1).reserved_bytes == 36 * MiB
    # a kept buffer is allocated once, before the first step, and stays
    kept = simulate_training_steps([lt("w", 0, 4, 30 * MiB)], step)
    assert kept.offsets["w"] == 0 and kept.reserved_bytes >= 30 * MiB + 36 * MiB
    with pytest.raises(ValueError, match="max_steps"):
        simulate_training_steps((), step, max_steps=0)


@settings(max_examples=100, deadline=None)
@given(mixed_lifetimes(), mixed_lifetimes(), st.booleans())
def test_training_steps_reach_a_fixed_point(kept, step, expandable_segments):
    """Never below one step; and one step more than it replayed reserves nothing new."""
    from model_place import simulate_training_steps

    span = max(x.end for x in step) + 1
    kept = [lt(f"k{i}", 0, span, x.size) for i, x in enumerate(kept[:3])]
    r = simulate_training_steps(kept, step, expandable_segments=expandable_segments)
    once = simulate_caching_allocator(kept + step, expandable_segments=expandable_segments)
    assert r.reserved_bytes >= once.reserved_bytes
    assert 1 <= r.steps
    if r.steps < 8:
        copies = [lt(f"{k}:{x.id}", x.start + k * span, x.end + k * span, x.size)
                  for k in range(r.steps + 1) for x in step]
        held = [lt(x.id, 0, (r.steps + 1) * span, x.size) for x in kept]
        again = simulate_caching_allocator(held + copies, expandable_segments=expandable_segments)
        assert again.reserved_bytes == r.reserved_bytes
    assert set(r.offsets) == {x.id for x in kept} | {x.id for x in step}


@settings(max_examples=150, deadline=None)
@given(mixed_lifetimes(), mixed_lifetimes(), st.booleans(), st.integers(1, 8))
def test_training_steps_are_the_replay_of_every_step_from_the_start(kept, step, expandable_segments, max_steps):
    """The allocator goes on from step to step: the same figures and last step's
    addresses as replaying the kept buffers and all the steps from scratch, step count
    by step count, until one reserves nothing new (how it was computed before)."""
    from model_place import simulate_training_steps

    kept = kept[:3]
    r = simulate_training_steps(kept, step, expandable_segments=expandable_segments, max_steps=max_steps)
    span, previous = max(x.end for x in step) + 1, None
    for steps in range(1, max_steps + 1):
        copies = [lt(f"{k}:{i}", x.start + k * span, x.end + k * span, x.size)
                  for k in range(steps) for i, x in enumerate(step)]
        held = [lt(f"kept:{i}", 0, steps * span, x.size) for i, x in enumerate(kept)]
        want = simulate_caching_allocator(held + copies, expandable_segments=expandable_segments)
        if want.reserved_bytes == previous:
            break
        previous = want.reserved_bytes
    names = {f"kept:{i}": x.id for i, x in enumerate(kept)} | {f"{steps - 1}:{i}": x.id for i, x in enumerate(step)}
    assert r.steps == steps
    assert (r.reserved_bytes, r.allocated_peak_bytes, r.requested_peak_bytes, r.segments) == \
        (want.reserved_bytes, want.allocated_peak_bytes, want.requested_peak_bytes, want.segments)
    for field in ("offsets", "block_bytes", "segment_of"):
        assert getattr(r, field) == {names[n]: v for n, v in getattr(want, field).items() if n in names}, field


@settings(max_examples=150, deadline=None)
@given(mixed_lifetimes(), mixed_lifetimes(), st.booleans())
def test_the_reserved_lower_bound_is_never_above_a_replay(held, step, expandable_segments):
    """Per pool, the blocks alive together rounded up to the pool's unit: no replay
    reserves less, with the held buffers kept first, or as requests of the step."""
    from model_place import simulate_training_steps
    from model_place.caching_allocator import reserved_lower_bound

    held, kept = held[:3], [lt(f"k{i}", x.start, 17, x.size) for i, x in enumerate(held[3:6])]
    bound = reserved_lower_bound(held, [*kept, *step], expandable_segments=expandable_segments)
    for k, s in (([*held, *kept], step), (held, [*kept, *step])):
        assert bound <= simulate_training_steps(k, s, expandable_segments=expandable_segments).reserved_bytes
    assert bound >= sum(round_size(x.size) for x in held if x.size)
