"""Export to PyTorch's memory-snapshot format: structure, pickle round trip, PyTorch's own readers."""

import pickle

import pytest
from torch.cuda import _memory_viz

from model_bench.memory_snapshot import (
    BASE_ADDRESS,
    Allocation,
    Segment,
    plan_allocations,
    plan_snapshot,
    save_snapshot,
    snapshot_from_allocations,
)
from model_ir import simulate


def _events(snapshot):
    return snapshot["device_traces"][0]


def test_hand_made_trace_events_and_final_state():
    allocs = [
        Allocation("w", 0, 1024, -1, 4, "parameter"),       # alive before and after
        Allocation("a", 1024, 512, 0, 2, "op0"),           # freed at step 2
        Allocation("b", 1024, 512, 2, 3, "op2"),           # reuses a's address after it is freed
        Allocation("out", 1536, 512, 1, 4, "op1"),         # an output: alive at the end (3 steps)
    ]
    snap = snapshot_from_allocations(allocs, [Segment(0, 4096)], steps=3)
    ev = [(e["action"], e["addr"], e["time_us"]) for e in _events(snap)]
    assert ev == [("alloc", 1024, 0), ("alloc", 1536, 1),
                  ("free_requested", 1024, 2), ("free_completed", 1024, 2), ("alloc", 1024, 2),
                  ("free_requested", 1024, 3), ("free_completed", 1024, 3)]
    (seg,) = snap["segments"]
    assert seg["address"] == 0 and seg["total_size"] == 4096 and seg["device"] == 0
    blocks = [(b["address"], b["size"], b["state"]) for b in seg["blocks"]]
    assert blocks == [(0, 1024, "active_allocated"), (1024, 512, "inactive"), (1536, 512, "active_allocated"),
                      (2048, 2048, "inactive")]
    assert seg["allocated_size"] == 1536


def test_plan_snapshot_matches_the_simulator(training_graph, tmp_path):
    g = training_graph
    profile = simulate(g)
    offsets, top = {}, 0
    for lt in profile.lifetimes:  # no reuse: a valid (if wasteful) placement
        offsets[lt.id], top = top, top + lt.size
    snap = plan_snapshot(g, None, offsets, top)
    # Blocks tile every segment exactly.
    for seg in snap["segments"]:
        assert sum(b["size"] for b in seg["blocks"]) == seg["total_size"]
        addr = seg["address"]
        for b in seg["blocks"]:
            assert b["address"] == addr
            addr += b["size"]
    assert snap["segments"][0]["address"] == BASE_ADDRESS
    assert sum(s["total_size"] for s in snap["segments"]) == g.persistent_bytes + top
    # Replaying the trace from the persistent state gives the simulator's timeline.
    live = g.persistent_bytes
    by_step = {}
    for e in _events(snap):
        if e["action"] == "alloc":
            live += e["size"]
        elif e["action"] == "free_completed":
            live -= e["size"]
        by_step[e["time_us"]] = live
    allocs, _, steps = plan_allocations(g, None, offsets, top)
    assert steps == len(g.ops)
    for t, value in by_step.items():
        if t < steps:
            # after the frees and allocations of step t, live bytes are those of step t
            assert value == profile.timeline[t]
    # Round trip through pickle (what the visualiser reads) and PyTorch's own readers.
    path = save_snapshot(snap, tmp_path / "snapshot.pickle")
    with path.open("rb") as f:
        back = pickle.load(f)
    assert back == snap
    assert "TOTAL MEM" in _memory_viz.trace(back)
    assert "segments: 2" in _memory_viz.segsum(back)
    assert "snapshot.pickle" in _memory_viz.trace_plot(back)


def test_segments_can_be_empty_and_outputs_stay_allocated():
    snap = snapshot_from_allocations([Allocation("loss", 0, 512, 0, 5)], [Segment(0, 512)], steps=2)
    assert [e["action"] for e in _events(snap)] == ["alloc"]
    assert snap["segments"][0]["blocks"] == [{"address": 0, "size": 512, "requested_size": 512,
                                              "state": "active_allocated",
                                              "frames": [{"filename": "model-opt", "line": 0, "name": "loss"}]}]
    assert snapshot_from_allocations([], [], steps=0)["segments"] == []


@pytest.mark.parametrize("steps", [1, 3])
def test_every_alloc_has_one_free_or_stays(steps):
    allocs = [Allocation(f"b{i}", 512 * i, 512, i % steps, i % steps + 1 + i % 2) for i in range(6)]
    snap = snapshot_from_allocations(allocs, [Segment(0, 512 * 6)], steps=steps)
    actions = [e["action"] for e in _events(snap)]
    alive_at_end = sum(1 for a in allocs if a.end > steps)
    assert actions.count("alloc") == 6
    assert actions.count("free_completed") == actions.count("free_requested") == 6 - alive_at_end


def _big_chain():
    from model_ir import Buffer, Graph, Op

    mib = 2**20
    return Graph([Buffer("w", mib // 2, persistent=True), Buffer("a", 12 * mib), Buffer("b", 12 * mib),
                  Buffer("loss", 512, output=True)],
                 [Op("op0", inputs=["w"], outputs=["a"]), Op("op1", inputs=["a"], outputs=["b"]),
                  Op("op2", inputs=["b"], outputs=["loss"])], name="chain")


@pytest.mark.parametrize("which", ["hand-made", "big-chain"])
def test_eager_snapshot_reserves_segments_as_the_allocator_does(which, training_graph):
    from model_bench.memory_snapshot import allocator_allocations
    from model_bench.pipeline import eager_lifetimes
    from model_place import simulate_caching_allocator

    graph = training_graph if which == "hand-made" else _big_chain()
    lifetimes = eager_lifetimes(graph)
    sim = simulate_caching_allocator(lifetimes)
    allocs, segments, steps = allocator_allocations(graph, lifetimes, sim.offsets, sim.segments)
    snap = snapshot_from_allocations(allocs, segments, steps)
    events = _events(snap)
    reserved_later = [e for e in events if e["action"] == "segment_alloc"]
    initial = [s for s in segments if s.created < 0]
    assert initial, "the persistent buffers open the first segment before the step"
    assert sum(s.size for s in initial) + sum(e["size"] for e in reserved_later) == sim.reserved_bytes
    # Every allocation lies in a segment reserved no later than it.
    reserved: list[tuple[int, int]] = [(s.address, s.address + s.size) for s in initial]
    for e in events:
        if e["action"] == "segment_alloc":
            reserved.append((e["addr"], e["addr"] + e["size"]))
        elif e["action"] == "alloc":
            assert any(lo <= e["addr"] and e["addr"] + e["size"] <= hi for lo, hi in reserved), e
    if which == "big-chain":
        # a and b are alive together: two 12 MiB segments, reserved at steps 0 and 1.
        assert [(e["size"], e["time_us"]) for e in reserved_later] == [(12 * 2**20, 0), (12 * 2**20, 1)]
        assert _memory_viz.trace(snap).count("cudaMalloc") == 2


def test_snapshot_pickles_with_protocol_4(tmp_path):
    path = save_snapshot({"segments": [], "device_traces": [[]]}, tmp_path / "snapshot.pickle")
    assert path.read_bytes()[:2] == b"\x80\x04"  # PROTO opcode, protocol 4
