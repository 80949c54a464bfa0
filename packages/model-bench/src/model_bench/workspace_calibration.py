"""cuDNN's convolution workspaces, read from an eager step's allocator trace.

A graph captured for CUDA lists each forward convolution's output, then its workspace
(:mod:`model_ir.workspaces`). The caching allocator's events of the same eager step
(``scripts/eager_on_gpu.py --trace``: ``[action, address, bytes]`` of the last step)
show the convolution as the allocation of its output, then, when cuDNN takes a
workspace, one more allocation freed by the very next event; a backward convolution as
its input gradient's and weight gradient's allocations, each followed by its workspace
when it takes one. :func:`conv_workspaces` walks both in program order.
``scripts/conv_workspaces_from_traces.py`` writes what it finds into
:mod:`model_ir.cudnn_workspaces`.
"""

from __future__ import annotations

from collections.abc import Sequence

from model_ir.graph import Graph
from model_ir.workspaces import CONV_BACKWARD, CONV_FORWARD, WORKSPACE_KIND, conv_signature

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


def _rounded(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


def conv_workspaces(graph: Graph,
                    trace: Sequence[Sequence]) -> tuple[dict[tuple, int], dict[tuple, tuple[int, int]]]:
    """``(forward, backward)``: :func:`model_ir.workspaces.conv_signature` -> measured
    workspace bytes of the forward convolutions, and ``(input gradient's, weight
    gradient's)`` workspace bytes of the backward ones, of ``graph`` (captured for CUDA)
    found in ``trace`` (the allocator events of an eager step of the same model, batch
    and mode).

    Forward: each buffer of the forward pass (workspaces aside) is matched with the next
    allocation of its size, allocations the graph does not have skipped; a
    convolution's workspace is the allocation right after its output's when the next
    event frees it, else none. Backward (after the last forward convolution): each
    ``convolution_backward`` is anchored on the next allocation of its weight's size
    (the weight gradient); its workspaces are the allocations freed at once right after
    the input gradient (an allocation of the input's size among the four before) and
    right after the weight gradient: cuDNN computes the two one after the other.
    A backward convolution whose anchor is not found ends the backward matching.
    """
    allocs = _allocations(trace)
    j = after_convs = 0
    forward: dict[tuple, int] = {}
    ops = list(graph.ops)
    k_op = 0
    for k_op, op in enumerate(ops):
        if op.meta.get("phase", "forward") != "forward":
            break
        for out in op.outputs:
            buf = graph.buffer(out)
            if buf.kind == WORKSPACE_KIND or buf.size == 0:
                continue  # workspaces are read off the trace (this graph's may be estimates)
            k = j
            while k < len(allocs) and abs(_rounded(allocs[k][0]) - buf.size) > 2 * BLOCK:
                k += 1
            if k < len(allocs):
                j = k + 1
        if op.target == CONV_FORWARD:
            size = allocs[j][0] if j < len(allocs) and allocs[j][1] else 0
            j += bool(size)
            forward[conv_signature(graph, op)] = size
            after_convs = j
    # A later forward buffer the trace does not have (a fused op's) may match far into
    # the backward pass: its convolutions are looked for after the last forward one.
    j = after_convs
    backward: dict[tuple, tuple[int, int]] = {}
    for op in ops[k_op:]:
        if op.target != CONV_BACKWARD:
            continue
        x, w = (graph.buffer(b) for b in op.inputs[1:3])
        k = j
        while k < len(allocs) and _rounded(allocs[k][0]) != w.size:
            k += 1
        if k >= len(allocs):
            break
        after_weight = allocs[k + 1][0] if k + 1 < len(allocs) and allocs[k + 1][1] else 0
        after_input = 0
        for q in range(k - 1, max(j, k - 4) - 1, -1):
            if _rounded(allocs[q][0]) == x.size:
                after_input = allocs[q + 1][0] if allocs[q + 1][1] else 0
                break
        backward[conv_signature(graph, op)] = (after_input, after_weight)
        j = k + 1 + bool(after_weight)
    return forward, backward
