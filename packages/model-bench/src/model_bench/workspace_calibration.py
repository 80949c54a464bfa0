"""cuDNN's forward-convolution workspaces, read from an eager step's allocator trace.

A graph captured for CUDA lists each forward convolution's output, then its workspace
(:mod:`model_ir.workspaces`). The caching allocator's events of the same eager step
(``scripts/eager_on_gpu.py --trace``: ``[action, address, bytes]`` of the last step)
show the convolution as the allocation of its output, then, when cuDNN takes a
workspace, one more allocation freed by the very next event. :func:`forward_conv_workspaces`
walks both in program order: each buffer of the forward pass (workspaces aside) is
matched with the next allocation of its size (allocations the graph does not have are
skipped), and a convolution's workspace is the allocation right after its output's when
that one is freed at once, else nothing. ``scripts/conv_workspaces_from_traces.py`` writes what it
finds into :mod:`model_ir.cudnn_workspaces`.
"""

from __future__ import annotations

from collections.abc import Sequence

from model_ir.graph import Graph
from model_ir.workspaces import CONV_FORWARD, WORKSPACE_KIND, conv_signature

#: The caching allocator's block: requested sizes round up to it.
BLOCK = 512


def _allocations(trace: Sequence[Sequence]) -> list[tuple[int, bool]]:
    """``(bytes, freed by the next event)`` of every allocation in ``trace``."""
    out = []
    for i, (action, address, size) in enumerate(trace):
        if action == "alloc":
            nxt = trace[i + 1] if i + 1 < len(trace) else None
            out.append((size, nxt is not None and nxt[0] == "free_requested" and nxt[1] == address))
    return out


def forward_conv_workspaces(graph: Graph, trace: Sequence[Sequence]) -> dict[tuple, int]:
    """:func:`model_ir.workspaces.conv_signature` -> measured workspace bytes of every
    forward convolution of ``graph`` (captured for CUDA, with workspaces) found in
    ``trace`` (the allocator events of an eager step of the same model, batch and mode)."""
    allocs = _allocations(trace)
    j = 0
    found: dict[tuple, int] = {}
    for op in graph.ops:
        if op.meta.get("phase", "forward") != "forward":
            break
        for out in op.outputs:
            buf = graph.buffer(out)
            if buf.kind == WORKSPACE_KIND or buf.size == 0:
                continue  # workspaces are read off the trace below (this graph's may be estimates)
            k = j
            while k < len(allocs) and abs(-(-allocs[k][0] // BLOCK) * BLOCK - buf.size) > 2 * BLOCK:
                k += 1
            if k < len(allocs):
                j = k + 1
        if op.target == CONV_FORWARD:
            size = allocs[j][0] if j < len(allocs) and allocs[j][1] else 0
            j += bool(size)
            found[conv_signature(graph, op)] = size
    return found
