"""The caching-allocator simulation against hand-worked cases of PyTorch's rules."""

from __future__ import annotations

import pytest
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
