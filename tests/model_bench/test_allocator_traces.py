"""Recorded caching-allocator events against the simulated requests (model_bench.allocator_traces)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model_bench.allocator_traces import align, trace_lifetimes, trace_reserved_bytes
from model_ir import Lifetime
from model_place import simulate_caching_allocator

MiB = 1 << 20
ROOT = Path(__file__).parents[2]
TRACES = ROOT / "packages" / "model-runtime" / "benchmarks" / "results" / "h200-torch2.11-2026-11-30-eager-traces.json"


def as_trace(lifetimes) -> list[list]:
    """The events the caching allocator records for ``lifetimes`` (address = position)."""
    events = []
    for i, lt in enumerate(lifetimes):
        events.append((lt.start, 1, i, "alloc"))
        events.append((lt.end, 0, i, "free_requested"))
        events.append((lt.end, 0, i, "free_completed"))
    return [[action, 1000 + i, lifetimes[i].size] for _, _, i, action in sorted(events)]


def test_trace_lifetimes_splits_what_was_held_from_what_the_step_allocates():
    trace = [["alloc", 1, 100], ["alloc", 2, 200], ["free_requested", 1, 100], ["free_completed", 1, 100],
             ["alloc", 3, 300],  # the step starts here
             ["free_requested", 2, 200], ["free_completed", 2, 200], ["alloc", 4, 400],
             ["free_requested", 3, 300], ["free_completed", 3, 300],
             ["free_requested", 9, 900], ["free_completed", 9, 900]]  # allocated before the trace
    held, step = trace_lifetimes(trace, start=4)
    assert held == [Lifetime("#1", 0, 3, 200)]  # #0 was freed before the step
    assert step == [Lifetime("#4", 1, 6, 300), Lifetime("#7", 4, 9, 400)]  # #7 never freed: to the end
    _, whole = trace_lifetimes(trace)
    assert [lt.id for lt in whole] == ["#0", "#1", "#4", "#7"]
    with pytest.raises(ValueError, match="outside the trace"):
        trace_lifetimes(trace, start=13)


def test_a_block_ends_when_its_free_completes():
    trace = [["alloc", 1, 100], ["free_requested", 1, 100], ["alloc", 2, 100], ["free_completed", 1, 100]]
    _, step = trace_lifetimes(trace)
    assert step[0] == Lifetime("#0", 1, 4, 100)  # still in use by a stream when #2 is allocated
    _, step = trace_lifetimes(trace[:3])  # no completions recorded: the request frees it
    assert step[0] == Lifetime("#0", 1, 2, 100)


def test_trace_reserved_bytes_is_the_peak_of_the_segment_events():
    trace = [["segment_alloc", 0, 20 * MiB], ["alloc", 0, MiB], ["segment_alloc", 1, 4 * MiB],
             ["segment_free", 1, 4 * MiB], ["segment_map", 2, 2 * MiB], ["segment_unmap", 2, 2 * MiB]]
    assert trace_reserved_bytes(trace) == 24 * MiB


lifetimes_strategy = st.lists(
    st.tuples(st.integers(0, 12), st.integers(1, 6), st.sampled_from([512, 3000, MiB, 3 * MiB, 11 * MiB, 25 * MiB])),
    min_size=1, max_size=25).map(lambda xs: [Lifetime(f"b{i}", s, s + d, size) for i, (s, d, size) in enumerate(xs)])


@settings(max_examples=150, deadline=None)
@given(lifetimes_strategy, st.booleans())
def test_replaying_a_trace_reserves_what_its_requests_do(lifetimes, expandable):
    _, step = trace_lifetimes(as_trace(lifetimes))
    assert sorted(lt.size for lt in step) == sorted(lt.size for lt in lifetimes)
    expected = simulate_caching_allocator(lifetimes, expandable_segments=expandable)
    got = simulate_caching_allocator(step, expandable_segments=expandable)
    assert got.reserved_bytes == expected.reserved_bytes
    assert got.allocated_peak_bytes == expected.allocated_peak_bytes


def test_align_names_what_moved_changed_size_or_is_on_one_side():
    def lts(*sizes):
        return [Lifetime(name, t, t + 1, size) for t, (name, size) in enumerate(sizes)]
    simulated = lts(("a", 10 * MiB), ("b", MiB), ("c", 2 * MiB), ("d", 5 * MiB), ("e", 7 * MiB), ("z", 0))
    recorded = lts(("#0", 10 * MiB), ("#1", 2 * MiB), ("#2", MiB), ("#3", 3 * MiB), ("#4", 5 * MiB + 4096),
                   ("#5", 7 * MiB))
    al = align(simulated, recorded)
    assert al.matched == 3  # a, one of b and c, e
    assert len(al.moved) == 1 and al.moved[0][1] in (MiB, 2 * MiB)
    assert al.resized == (("d", 5 * MiB, "#4", 5 * MiB + 4096),)
    assert al.only_simulated == ()
    assert al.only_recorded == (("#3", 3 * MiB, al.only_recorded[0][2]),)
    assert al.only_recorded[0][2] in ("a", "b", "c")  # the simulated request matched last before it


@settings(max_examples=150, deadline=None)
@given(lifetimes_strategy, lifetimes_strategy)
def test_align_accounts_for_every_request_once(simulated, recorded):
    al = align(simulated, recorded)
    paired = al.matched + len(al.moved) + len(al.resized)
    assert paired + len(al.only_simulated) == sum(1 for lt in simulated if lt.size)
    assert paired + len(al.only_recorded) == sum(1 for lt in recorded if lt.size)
    same = align(simulated, simulated)
    assert same.matched == sum(1 for lt in simulated if lt.size)
    assert same.moved == same.resized == same.only_simulated == same.only_recorded == ()


def load_script():
    path = ROOT / "packages" / "model-bench" / "scripts" / "traces_vs_simulation.py"
    spec = importlib.util.spec_from_file_location("traces_vs_simulation", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_the_script_reproduces_a_traced_h200_run(tmp_path, capsys):
    """alexnet train b1 (default allocator), traced on the H200: its recorded requests
    replay to the measured 570 MiB, the simulation gives the same, and its 68 simulated
    allocations are all among the 69 recorded (one 4-byte allocation more)."""
    run = next(r for r in json.loads(TRACES.read_text())
               if r["spec"]["model"] == "alexnet" and r["spec"]["batch_size"] == 1)
    path = tmp_path / "one.json"
    path.write_text(json.dumps([run, {"spec": run["spec"], "alloc": "default", "result": {"error": "crashed"}}]))
    script = load_script()
    assert script.main([str(path), "--json", str(tmp_path / "rows.json")]) == 0
    (row,) = json.loads((tmp_path / "rows.json").read_text())
    measured = run["result"]["max_reserved_bytes"]
    assert row["replayed_reserved_bytes"] == row["simulated_reserved_bytes"] == measured == 570 * MiB
    al = row["alignment"]
    assert (row["simulated_step_allocations"], row["recorded_step_allocations"]) == (68, 69)
    assert al["only_simulated"] == [] and [r[1] for r in al["only_recorded"]] == [4]
    assert al["matched"] + len(al["moved"]) + len(al["resized"]) == 68
    out = capsys.readouterr().out
    assert "alexnet train b1 default (eager, last step traced)" in out
    assert "recorded requests replayed 570.0 MiB (+0.0%)" in out


def test_the_script_refuses_a_file_that_is_not_records(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"spec": 1}')
    assert load_script().main([str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("traces_vs_simulation: error: ") and err.count("\n") == 1
