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

Not modelled: cuDNN's convolution workspaces (transient, chosen per call by its
algorithm search; tens of MiB at batch 32 on the H200) and the CUDA context.
"""

from __future__ import annotations

import re

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
