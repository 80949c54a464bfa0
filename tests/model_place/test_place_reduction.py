"""Merging buffers a packing can keep together (model_place.reduction), and the exact
search's use of it."""

from __future__ import annotations

from hypothesis import given, settings
from model_ir import Lifetime

from model_place import greedy_by_size, live_bytes_peak, place, validate_placement
from model_place.hard_instances import zero_slack_instance
from model_place.reduction import merge_lifetimes
from model_place.testing import lifetime_sets


def lt(i, start, end, size, alignment=1):
    return Lifetime(i, start, end, size, alignment=alignment)


def test_equal_lifetimes_stack_and_a_unique_handoff_joins():
    lts = [lt("a", 0, 2, 8), lt("b", 0, 2, 4), lt("c", 2, 5, 12), lt("d", 1, 4, 3)]
    m = merge_lifetimes(lts)
    # a and b stack (12 bytes over [0, 2)), then c takes the stack's place at step 2
    assert sorted((x.start, x.end, x.size) for x in m.lifetimes) == [(0, 5, 12), (1, 4, 3)]
    assert m.expand({x.id: 100 if x.size == 12 else 0 for x in m.lifetimes}) == {"a": 100, "b": 108, "c": 100,
                                                                                 "d": 0}
    assert merge_lifetimes([lt("a", 0, 2, 8), lt("b", 1, 3, 8)]) is None  # nothing to merge
    # one rule at a time: the stack alone; without it no handoff matches a size
    assert sorted(x.size for x in merge_lifetimes(lts, handoffs=False).lifetimes) == [3, 12, 12]
    assert merge_lifetimes(lts, stacks=False) is None
    (joined,) = merge_lifetimes([lt("a", 0, 2, 8), lt("b", 2, 3, 8)], stacks=False).lifetimes
    assert (joined.start, joined.end, joined.size) == (0, 3, 8)


def test_an_ambiguous_handoff_stays_apart():
    # two 8-byte buffers end at step 2 and one starts there: which it follows is a choice, not merged
    lts = [lt("a", 0, 2, 8), lt("b", 1, 2, 8), lt("c", 2, 4, 8)]
    assert merge_lifetimes(lts) is None


def test_a_stack_keeps_every_part_aligned():
    # 8 + 4 bytes with a 8-byte alignment would put the second part off alignment
    assert merge_lifetimes([lt("a", 0, 2, 4, 8), lt("b", 0, 2, 8, 8)]) is None
    m = merge_lifetimes([lt("a", 0, 2, 16, 8), lt("b", 0, 2, 8, 4)])
    (stack,) = m.lifetimes
    assert stack.size == 24 and stack.alignment == 8 and stack.id.startswith("merged:")


@settings(max_examples=200, deadline=None)
@given(lifetime_sets(max_size=10, max_time=6, max_bytes=6))
def test_any_placement_of_the_merged_buffers_places_the_originals(lts):
    m = merge_lifetimes(lts)
    if m is None:
        return
    assert len(m.lifetimes) < len([x for x in lts if x.size])
    assert live_bytes_peak(m.lifetimes) == live_bytes_peak(lts)  # the bound is unchanged
    offsets = greedy_by_size(m.lifetimes)
    arena = max((offsets[x.id] + x.size for x in m.lifetimes), default=0)
    expanded = {x.id: 0 for x in lts if not x.size} | m.expand(offsets)
    validate_placement(lts, expanded, arena)


def test_the_exact_search_closes_zero_slack_instances_through_the_merged_one():
    """Cut from a 1 MiB rectangle: the bisection and the dives alone ended at 1.14x the
    bound on this one after 60 s (package docs/benchmarks.md); merged, it packs at the bound."""
    lts = zero_slack_instance(400, seed=1)
    r = place(lts, method="auto", time_limit=10)
    assert r.arena_bytes == r.lower_bound_bytes == 1 << 20 and r.optimal
    assert r.details["merged_buffers"] < 40


def test_the_merged_instance_is_only_a_candidate(monkeypatch):
    """A merged instance that packs badly (here: every buffer stacked for the whole step,
    no reuse) does not keep the search from the optimum."""
    import model_place.exact as exact
    from model_place.reduction import Merged
    from model_place.testing import brute_force_arena

    lts = [lt("a", 0, 2, 3), lt("b", 1, 3, 2), lt("c", 2, 4, 3), lt("d", 0, 1, 2), lt("e", 3, 4, 2)]
    offsets, parts = 0, []
    for x in lts:
        parts.append((x.id, offsets))
        offsets += x.size
    calls = []

    def no_reuse(lifetimes, **rules):
        calls.append(rules)
        return Merged((lt("all", 0, 4, offsets),), {"all": tuple(parts)}) if len(lifetimes) == len(lts) else None

    monkeypatch.setattr(exact, "merge_lifetimes", no_reuse)
    # a warm start without reuse, and a first decision that times out at once: the merged turn comes
    def stacked(lifetimes, deadline=None):
        return {x.id: sum(y.size for y in lifetimes[:k]) for k, x in enumerate(lifetimes)}

    monkeypatch.setattr(exact, "best_heuristic", stacked)
    monkeypatch.setattr(exact, "FIRST_DECISION_SHARE", 0.0)
    r = place(lts, method="auto", time_limit=5)
    assert calls and r.details["merged_buffers"] == 1  # tried (the other rule sets give the same instance)
    assert r.optimal and r.arena_bytes == brute_force_arena(lts) < offsets


@settings(max_examples=30, deadline=None)
@given(lifetime_sets(min_size=2, max_size=7, max_time=5, max_bytes=6))
def test_with_the_merged_turn_forced_the_search_still_ends_at_the_optimum(lts):
    """Property: whatever the merged instances give, the answer is valid, never below the
    bound and, on these small sets, the proven optimum."""
    import pytest

    import model_place.exact as exact
    from model_place.testing import brute_force_arena

    def stacked(lifetimes, deadline=None):  # a warm start without reuse: the search must run
        return {x.id: sum(y.size for y in lifetimes[:k]) for k, x in enumerate(lifetimes)}

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(exact, "best_heuristic", stacked)
        mp.setattr(exact, "FIRST_DECISION_SHARE", 0.0)  # the first decision times out: merging runs
        r = place(lts, method="auto", time_limit=5)
    validate_placement(lts, r.offsets, r.arena_bytes)
    assert r.lower_bound_bytes <= r.arena_bytes == brute_force_arena(lts) and r.optimal
