"""Library workspaces: device memory a step needs that no graph buffer shows.

cuBLAS needs a workspace for its matmuls. PyTorch allocates one per cuBLAS handle
and stream through the caching allocator on first use and keeps it
(``aten/src/ATen/cuda/CublasHandlePool.cpp``: ``getChosenWorkspaceSize``), and it
hands out one handle per thread. So an eager training step holds up to two
workspaces: the forward (and the optimizer) runs on the calling thread, the backward
on autograd's device thread, and each thread that runs a cuBLAS operator holds one.
A planned step runs every op on the calling thread: at most one workspace. A step
without a cuBLAS operator (squeezenet: convolutions only) holds none.

Default size (``CUBLAS_WORKSPACE_CONFIG`` unset): 32 MiB on compute capability 9.x,
10.x and 12.x (Hopper, Blackwell), otherwise ``:4096:2:16:8`` = 8 MiB + 128 KiB.
Calibration (NVIDIA H200, torch 2.11, 2026-11-30; ``packages/model-runtime/benchmarks/results``):
measured ``max_memory_allocated`` exceeds the simulated peak by 64.4 MiB (vit_b_16
b1) and 73.6 MiB (bert-base b1) for eager, and by 33.0 MiB for both planned
(``reorder``) steps: two workspaces and one, the rest transient library memory.

cuDNN's convolutions take a workspace for the duration of each call, through the
caching allocator (:func:`conv_workspace_bytes`); :func:`with_workspaces` makes each one
a buffer of the graph, one more output of its convolution that no op reads (alive
during the call only), so that the simulator, the schedulers and the placement see
them as eager PyTorch and an ideal plan would hold them. A workspace's size follows
the algorithm cuDNN picks; calibration (same H200, the eager step's allocator
events recorded by ``packages/model-bench/scripts/eager_on_gpu.py --trace``, results
``h200-torch2.11-2026-11-30-eager-traces.json``): for fp32 convolutions in NCHW it is
input + weight + output bytes for a forward call and grad_output + input + weight for
a backward call (the larger of its data- and weight-gradient workspaces, which run one
after the other), exact to 0.1 MiB on most of vgg16's and resnet18's convolutions at
batch 32 (784 MiB for vgg16's second convolution), a few MiB more on some and about
half on a few. Depthwise convolutions (one input channel per group) run PyTorch's own
kernel and take none. Other dtypes and layouts (fp16/bf16, channels-last) get the same
estimate, not calibrated. Not modelled: the first steps' allocations (cuDNN's plan
building), which decide the default allocator's segments, and the CUDA context.
"""

from __future__ import annotations

import re

import attrs

from model_ir.graph import Buffer, Graph

MiB = 1 << 20

#: Compute capabilities (major) whose default cuBLAS workspace is 32 MiB.
LARGE_WORKSPACE_MAJORS = (9, 10, 12)
#: The compute capability assumed when none is given: Hopper (H100, H200).
DEFAULT_CAPABILITY = (9, 0)


def cublas_workspace_bytes(capability: tuple[int, int] = DEFAULT_CAPABILITY, config: str | None = None) -> int:
    """Bytes of one cuBLAS workspace: PyTorch's default for ``capability``, or the sum of
    the ``:SIZE_KiB:COUNT`` pairs of a ``CUBLAS_WORKSPACE_CONFIG`` value."""
    if config:
        pairs = re.findall(r":([0-9]+):([0-9]+)", config)
        if pairs:
            return sum(int(size) * 1024 * int(count) for size, count in pairs)
    if capability[0] in LARGE_WORKSPACE_MAJORS:
        return 4096 * 1024 * 8
    return 4096 * 1024 * 2 + 16 * 1024 * 8


def workspace_bytes(device: str | None, *, threads: int, capability: tuple[int, int] = DEFAULT_CAPABILITY,
                    config: str | None = None) -> int:
    """Workspace bytes a step on ``device`` holds when ``threads`` threads run its matmuls
    (:func:`cublas_threads`). Zero off CUDA."""
    if device != "cuda":
        return 0
    return threads * cublas_workspace_bytes(capability, config)


#: aten operators that run on cuBLAS (and so need its workspace).
CUBLAS_OPS = frozenset({"mm", "addmm", "bmm", "baddbmm", "addbmm", "addmv", "mv", "dot", "vdot", "matmul",
                        "linear", "_addmm_activation", "_scaled_mm"})


def uses_cublas(target: str | None) -> bool:
    """Whether an op with this target (``aten.addmm.default``) calls cuBLAS."""
    parts = (target or "").split(".")
    return len(parts) >= 2 and parts[0] == "aten" and parts[1] in CUBLAS_OPS


def cublas_threads(graph, *, eager: bool) -> int:
    """How many threads run cuBLAS operators in a step of ``graph``: in eager PyTorch, the
    calling thread (forward, optimizer) and autograd's device thread (ops whose
    ``meta["phase"]`` is ``backward``); in a planned step, the calling thread alone."""
    threads = {("backward" if eager and op.meta.get("phase") == "backward" else "main")
               for op in graph.ops if uses_cublas(op.target)}
    return len(threads)


#: aten convolution operators cuDNN runs on CUDA: the forward call and the backward call.
CONV_FORWARD = "aten.convolution.default"
CONV_BACKWARD = "aten.convolution_backward.default"


def conv_workspace_bytes(graph, op) -> int:
    """cuDNN's workspace for one call of ``op`` (bytes; 0 for other ops and depthwise
    convolutions): input + weight + output for a forward convolution, grad_output +
    input + weight for a backward one (see the module docstring for the calibration)."""
    if op.target == CONV_FORWARD and len(op.inputs) >= 2:
        x, w, other = (graph.buffer(b) for b in (op.inputs[0], op.inputs[1], op.outputs[0]))
    elif op.target == CONV_BACKWARD and len(op.inputs) >= 3:
        other, x, w = (graph.buffer(b) for b in op.inputs[:3])
    else:
        return 0
    return 0 if _depthwise(x, w) else x.size + w.size + other.size


def _depthwise(x, w) -> bool:
    """A convolution with one input channel per group (weight ``[C, 1, ...]``) over a
    multi-channel input: PyTorch runs its own kernel in fp32, not cuDNN's."""
    return bool(w.shape and x.shape and len(w.shape) >= 2 and w.shape[1] == 1 and x.shape[1] > 1)


def transient_workspaces(graph) -> dict[str, int]:
    """Op id -> bytes of the workspace the op takes for the duration of its call, for a
    graph captured for CUDA (empty otherwise): cuDNN's convolutions."""
    if graph.meta.get("device") != "cuda":
        return {}
    out = {}
    for op in graph.ops:
        size = conv_workspace_bytes(graph, op)
        if size:
            out[op.id] = size
    return out


#: ``Buffer.kind`` of the workspace buffers :func:`with_workspaces` adds.
WORKSPACE_KIND = "workspace"


def with_workspaces(graph: Graph) -> Graph:
    """``graph`` with the workspace of each call that takes one (:func:`transient_workspaces`)
    as one more output of that op, buffer ``workspace:<op id>`` of kind ``workspace`` that
    no op reads; unchanged when there is none (e.g. off CUDA) or they are there already."""
    sizes = transient_workspaces(graph)
    if not sizes or graph.meta.get("workspaces"):
        return graph
    buffers = [*graph.buffers,
               *(Buffer(f"workspace:{op_id}", size, kind=WORKSPACE_KIND) for op_id, size in sizes.items())]
    ops = [attrs.evolve(op, outputs=(*op.outputs, f"workspace:{op.id}")) if op.id in sizes else op
           for op in graph.ops]
    return attrs.evolve(graph, buffers=buffers, ops=ops,
                        meta={**graph.meta, "workspaces": "cuDNN convolutions (model_ir.workspaces)"})
