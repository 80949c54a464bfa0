"""Export a memory timeline in the format of PyTorch's memory snapshots.

``torch.cuda.memory._snapshot()`` returns a dict that ``torch.cuda._memory_viz`` and
https://pytorch.org/memory_viz read (pickled):

- ``segments``: the memory reserved at the end of the trace, one entry per
  ``cudaMalloc`` segment (``device``, ``address``, ``total_size``, ``stream``,
  ``blocks``), whose ``blocks`` tile the segment in address order, each
  ``active_allocated`` (``size``, ``requested_size``, ``frames``) or ``inactive``;
- ``device_traces``: per device, the events in time order, ``segment_alloc``,
  ``alloc``, ``free_requested`` and ``free_completed`` (``addr``, ``size``,
  ``stream``, ``time_us``, ``frames``).

The visualiser replays the trace backwards from the final segments, so a block that
is active in ``segments`` without an ``alloc`` event (a parameter) is drawn as alive
from the start. We write one event clock tick per op step (``time_us`` = step) and
put the op that allocates a buffer in its ``frames`` so hovering shows it.
"""

from __future__ import annotations

import bisect
import pickle
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import attrs

from model_ir.graph import Graph
from model_ir.output_files import write_output
from model_ir.recompute import instance_owners
from model_ir.simulator import simulate

#: Where exported arenas start: a typical CUDA virtual address, so that addresses look
#: like the ones users see in real snapshots.
BASE_ADDRESS = 0x7F0000000000


@attrs.frozen
class Allocation:
    """A buffer at ``address`` (bytes) alive during steps ``[start, end)``.

    ``start < 0`` means allocated before the trace (persistent); ``end > steps`` means
    still allocated when the snapshot is taken (persistent buffers, step outputs).
    """

    id: str
    address: int
    size: int
    start: int
    end: int
    label: str = ""


@attrs.frozen
class Segment:
    """A reserved range of ``size`` bytes at ``address`` (one ``cudaMalloc``).

    ``created`` is the step at which it was reserved (a ``segment_alloc`` event);
    negative means reserved before the trace.
    """

    address: int
    size: int
    created: int = -1


def _frames(a: Allocation) -> list[dict]:
    return [{"filename": a.label or "model-opt", "line": 0, "name": a.id}]


def snapshot_from_allocations(allocations: Iterable[Allocation], segments: Sequence[Segment], steps: int,
                              *, device: int = 0) -> dict:
    """A PyTorch memory snapshot for ``allocations`` inside ``segments`` over ``steps`` steps."""
    allocations = list(allocations)
    by_step_free: dict[int, list[Allocation]] = {}
    by_step_alloc: dict[int, list[Allocation]] = {}
    for a in allocations:
        if a.start >= 0:
            by_step_alloc.setdefault(a.start, []).append(a)
        if a.end <= steps:
            by_step_free.setdefault(a.end, []).append(a)
    new_segments: dict[int, list[Segment]] = {}
    for seg in segments:
        if seg.created >= 0:
            new_segments.setdefault(seg.created, []).append(seg)
    trace: list[dict] = []
    for t in range(steps + 1):
        # Frees before allocations at the same step: a buffer whose last reader ran at
        # step t-1 is gone before step t's outputs are allocated (half-open lifetimes).
        for a in by_step_free.get(t, ()):
            for action in ("free_requested", "free_completed"):
                trace.append({"action": action, "addr": a.address, "size": a.size, "stream": 0, "time_us": t,
                              "frames": _frames(a)})
        # A segment is reserved when an allocation of this step finds no cached block.
        for seg in new_segments.get(t, ()):
            trace.append({"action": "segment_alloc", "addr": seg.address, "size": seg.size, "stream": 0,
                          "time_us": t, "frames": []})
        for a in by_step_alloc.get(t, ()):
            trace.append({"action": "alloc", "addr": a.address, "size": a.size, "stream": 0, "time_us": t,
                          "frames": _frames(a)})
    alive_at_end = sorted((a for a in allocations if a.end > steps), key=lambda a: a.address)
    segs = []
    for s in sorted(segments, key=lambda s: s.address):
        blocks, cursor, allocated = [], s.address, 0
        for a in alive_at_end:
            if not (s.address <= a.address < s.address + s.size):
                continue
            if a.address > cursor:
                blocks.append({"address": cursor, "size": a.address - cursor, "requested_size": 0,
                               "state": "inactive", "frames": []})
            blocks.append({"address": a.address, "size": a.size, "requested_size": a.size,
                           "state": "active_allocated", "frames": _frames(a)})
            allocated += a.size
            cursor = a.address + a.size
        if cursor < s.address + s.size:
            blocks.append({"address": cursor, "size": s.address + s.size - cursor, "requested_size": 0,
                           "state": "inactive", "frames": []})
        segs.append({"device": device, "address": s.address, "total_size": s.size, "allocated_size": allocated,
                     "active_size": allocated, "requested_size": allocated, "stream": 0,
                     "segment_type": "large", "segment_pool_id": (0, 0), "is_expandable": False,
                     "frames": [], "blocks": blocks})
    device_traces: list[list[dict]] = [[] for _ in range(device + 1)]
    device_traces[device] = trace
    return {"segments": segs, "device_traces": device_traces,
            "allocator_settings": {"PYTORCH_CUDA_ALLOC_CONF": "exported by model-opt (simulated)"}}


def plan_allocations(graph: Graph, order: Sequence[str] | None, offsets: Mapping[str, int], arena_bytes: int,
                     *, base: int = BASE_ADDRESS, workspace_bytes: int = 0
                     ) -> tuple[list[Allocation], list[Segment], int]:
    """Allocations and segments of a static plan: the persistent buffers and library
    workspace, then the arena.

    Persistent buffers (weights, optimizer state, the batch) are packed from ``base``
    in graph order and alive throughout, followed by ``workspace_bytes`` of library
    workspace; the arena follows them, so the top of the last segment is the plan's
    whole memory. Returns ``(allocations, segments, steps)``. Zero-byte buffers and
    buffers without an offset are left out. A recomputed buffer shows once per instance.
    """
    profile = simulate(graph, order)
    steps = len(profile.order)
    owner = instance_owners(graph, profile.order)
    producer = {b.id: graph.ops[p] for b, p in zip(graph.buffers, graph.producer) if p is not None}
    allocs, segments, cursor = [], [], base
    for b in graph.buffers:
        if b.persistent and b.size:
            allocs.append(Allocation(b.id, cursor, b.size, -1, steps + 1, b.kind or "persistent"))
            cursor += b.size
    if workspace_bytes:
        allocs.append(Allocation("workspace", cursor, workspace_bytes, -1, steps + 1, "library workspace"))
        cursor += workspace_bytes
    if cursor > base:
        segments.append(Segment(base, cursor - base))
    arena = cursor
    for lt in profile.lifetimes:
        if lt.id not in offsets or lt.size == 0:
            continue
        bid = owner.get(lt.id, lt.id)
        op = producer.get(bid)
        label = f"{op.id} ({op.target})" if op is not None and op.target else (op.id if op else "input")
        if bid != lt.id:
            label += " (recomputed)"
        end = steps + 1 if graph.buffer(bid).output else lt.end
        allocs.append(Allocation(lt.id, arena + offsets[lt.id], lt.size, lt.start, end, label))
    if arena_bytes:
        segments.append(Segment(arena, arena_bytes))
    return allocs, segments, steps


def allocator_allocations(graph: Graph, lifetimes, offsets: Mapping[str, int], segments,
                          *, base: int = BASE_ADDRESS) -> tuple[list[Allocation], list[Segment], int]:
    """Allocations and segments of a caching-allocator simulation of ``lifetimes``.

    ``offsets`` are the simulated virtual addresses and ``segments`` the simulated
    reservations (objects with ``base`` and ``size``, in creation order). Persistent
    buffers of ``graph`` are shown as allocated before the step, and so are the
    segments they opened; every other segment is reserved at the step of the first
    buffer placed in it. Lifetimes that are no buffer of ``graph`` (library
    workspaces) are shown as persistent.
    """
    allocs = []
    for lt in lifetimes:
        if lt.size == 0 or lt.id not in offsets:
            continue
        buf = graph.buffer(lt.id) if lt.id in graph.buffer_index else None
        persistent = buf is None or buf.persistent
        start = -1 if persistent else lt.start
        end = len(graph.ops) + 1 if persistent or buf.output else lt.end
        kind = "library workspace" if buf is None else buf.kind or ""
        allocs.append(Allocation(lt.id, base + offsets[lt.id], lt.size, start, end, kind))
    created = [len(graph.ops) + 1] * len(segments)
    bounds = sorted((s.base, i) for i, s in enumerate(segments))
    for a in allocs:
        k = bisect.bisect_right(bounds, (a.address - base, len(segments))) - 1
        if k >= 0:
            created[bounds[k][1]] = min(created[bounds[k][1]], a.start)
    return allocs, [Segment(base + s.base, s.size, created[i]) for i, s in enumerate(segments)], len(graph.ops)


def plan_snapshot(graph: Graph, order: Sequence[str] | None, offsets: Mapping[str, int], arena_bytes: int) -> dict:
    """The snapshot of a plan (order plus placement), ready for PyTorch's memory visualiser."""
    return snapshot_from_allocations(*plan_allocations(graph, order, offsets, arena_bytes))


def save_snapshot(snapshot: dict, path: str | Path) -> Path:
    """Pickle ``snapshot`` to ``path`` (what the visualiser's file picker opens)."""
    path = Path(path)
    # Protocol 4 is what the visualiser's loaders (and Pythons back to 3.4) read.
    write_output(path, pickle.dumps(snapshot, protocol=4))
    return path
