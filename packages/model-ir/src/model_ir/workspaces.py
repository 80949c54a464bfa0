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
half on a few. Calls whose shapes were traced use the bytes measured for them
(:mod:`model_ir.cudnn_workspaces`, aligned by ``model_bench.workspace_calibration``):
cuDNN's choice follows the shapes in ways no one formula follows (forward: none for
vgg's first convolution, input + weight for 64-channel 3x3 ones at 56x56, 392 MiB less
than the formula on r3d_18's ``layer1``; backward: the weight gradient's workspace a
few MiB above the formula on most, none on vgg's first layer, 31.69 MiB for alexnet's
5x5 convolution at batch 1 where the formula gives 1.9). Untraced 1x1 forward
convolutions with stride 1 take none (:func:`_pointwise`). Depthwise convolutions (one input channel per group) run PyTorch's own
kernel and take none. Other dtypes and layouts (fp16/bf16, channels-last) get the same
estimate, not calibrated. Not modelled: the first steps' allocations (cuDNN's plan
building), which decide the default allocator's segments, and the CUDA context.

A sum or mean that CUDA splits across thread blocks stages partial results in a buffer
it takes from the caching allocator for the call (:func:`reduction_workspace_bytes`);
:func:`with_workspaces` adds those too, and the temporaries of two more kernels, read in
PyTorch's sources and checked against the same H200 traces (bert-base and gpt2, batch
32, fp32): the memory-efficient attention backward (:func:`attention_backward_temporaries`:
``grad_out * out``, its sum over the head dim and that sum made contiguous, then the
kernel's workspace; bert-base: 12 MiB, 2 x 0.19 MiB and 12.01 MiB per layer) and the
sorted-segment embedding backward (:func:`embedding_backward_workspace_bytes`: 13.2 MiB
for bert-base's word embeddings, 52.8 MiB for gpt2's). Not modelled: their int64 index
buffers and sort workspaces (a few KiB to 0.3 MiB). FlashAttention-2's backward
(fp16/bf16) takes ``softmax_d`` and a float query-gradient accumulator
(:func:`flash_attention_backward_temporaries`, from the sources, not traced: gpt2 b1
under bf16 autocast, 512 tokens, 1.5 MiB per layer). Not modelled: cuDNN attention's,
and the efficient kernel's at fp16/bf16 (whose float copies of ``grad_out`` and ``out``
depend on the kernel it picks).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence

import attrs

from model_ir.graph import Buffer, Graph
from model_ir.simulator import Lifetime

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


def graph_cublas_workspace_bytes(graph) -> int:
    """Bytes of one cuBLAS workspace for a step of ``graph``: sized for the GPU it was
    captured on (``meta["cuda_capability"]``; Hopper when not recorded) and
    ``CUBLAS_WORKSPACE_CONFIG``."""
    return cublas_workspace_bytes(tuple(graph.meta.get("cuda_capability") or DEFAULT_CAPABILITY),
                                  os.environ.get("CUBLAS_WORKSPACE_CONFIG"))


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


def conv_signature(graph, op) -> tuple:
    """``(input shape, weight shape, output shape, dtype)`` of a convolution, forward or
    backward (whose inputs are the output's gradient, the input and the weight): the key
    of its measured workspaces in :mod:`model_ir.cudnn_workspaces`."""
    if op.target == CONV_BACKWARD:
        y, x, w = (graph.buffer(b) for b in op.inputs[:3])
    else:
        x, w, y = (graph.buffer(b) for b in (op.inputs[0], op.inputs[1], op.outputs[0]))
    return x.shape, w.shape, y.shape, x.dtype


def conv_workspace_bytes(graph, op) -> int:
    """cuDNN's workspace for one call of ``op`` (bytes; 0 for other ops and depthwise
    convolutions): the bytes measured for its shapes (:mod:`model_ir.cudnn_workspaces`)
    when they were traced, else input + weight + output for a forward convolution and
    grad_output + input + weight for a backward one (see the module docstring)."""
    if op.target == CONV_FORWARD and len(op.inputs) >= 2:
        x, w, other = (graph.buffer(b) for b in (op.inputs[0], op.inputs[1], op.outputs[0]))
    elif op.target == CONV_BACKWARD and len(op.inputs) >= 3:
        other, x, w = (graph.buffer(b) for b in op.inputs[:3])
    else:
        return 0
    from model_ir.cudnn_workspaces import BACKWARD, FORWARD

    measured = (FORWARD if op.target == CONV_FORWARD else BACKWARD).get(conv_signature(graph, op))
    if measured is not None:
        granularity = graph.meta.get("granularity", 1)
        return -(-(measured if op.target == CONV_FORWARD else max(measured)) // granularity) * granularity
    if _depthwise(x, w) or (op.target == CONV_FORWARD and _pointwise(x, w, other)):
        return 0
    return x.size + w.size + other.size


def conv_backward_workspaces(graph, op) -> tuple[int, int] | None:
    """cuDNN's two workspaces in a traced ``convolution_backward`` call (bytes, rounded to
    the graph's granularity): the input gradient's, then the weight gradient's, each
    taken right after its gradient is allocated and freed at once; None for untraced
    shapes and other ops. The graph holds one workspace, the larger (the call's peak);
    the caching allocator sees the two."""
    if op.target != CONV_BACKWARD or len(op.inputs) < 3:
        return None
    from model_ir.cudnn_workspaces import BACKWARD

    measured = BACKWARD.get(conv_signature(graph, op))
    if measured is None:
        return None
    granularity = graph.meta.get("granularity", 1)
    return tuple(-(-size // granularity) * granularity for size in measured)


def _pointwise(x, w, y) -> bool:
    """A 1x1 convolution with stride 1 (the output's spatial shape is the input's):
    taken to need no workspace (cuDNN's implicit GEMM needs none; which algorithm it
    picks at batch 32 is not traced). Traced: 12 of squeezenet1_0's 13 at batch 1 take
    none (the 13th, 0.36 MiB); chosen so, mobilenet_v2, mnasnet0_5 and efficientnet_b0 in
    eval at batch 32 went from +6-8% to within 1% of the H200."""
    return bool(w.shape and x.shape and y.shape and all(k == 1 for k in w.shape[2:])
                and x.shape[2:] == y.shape[2:])


def _depthwise(x, w) -> bool:
    """A convolution with one input channel per group (weight ``[C, 1, ...]``) over a
    multi-channel input: PyTorch runs its own kernel in fp32, not cuDNN's."""
    return bool(w.shape and x.shape and len(w.shape) >= 2 and w.shape[1] == 1 and x.shape[1] > 1)


#: Streaming multiprocessors and resident threads per SM of the GPU the reduction
#: staging is computed for: the H200 and H100 SXM (Hopper).
DEFAULT_SMS = 132
DEFAULT_THREADS_PER_SM = 2048

_ITEMSIZE = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8}


def sm_count(graph) -> int:
    """Streaming multiprocessors of the GPU ``graph`` was captured on (``meta``
    ``cuda_sm_count``), else :data:`DEFAULT_SMS`."""
    return graph.meta.get("cuda_sm_count") or DEFAULT_SMS


def reduction_workspace_bytes(reduction, *, granularity: int = 1, sms: int = DEFAULT_SMS,
                              threads_per_sm: int = DEFAULT_THREADS_PER_SM) -> int:
    """Bytes a CUDA sum or mean takes from the caching allocator for the duration of its
    call: the sum of :func:`reduction_workspace_parts`."""
    return sum(reduction_workspace_parts(reduction, granularity=granularity, sms=sms, threads_per_sm=threads_per_sm))


def reduction_workspace_parts(reduction, *, granularity: int = 1, sms: int = DEFAULT_SMS,
                              threads_per_sm: int = DEFAULT_THREADS_PER_SM) -> tuple[int, ...]:
    """``(staging, semaphores)``: the two allocations a CUDA sum or mean split across
    thread blocks takes from the caching allocator for the duration of its call, each
    rounded up to ``granularity`` (``()`` when it is not split, or for a layout this
    does not model).

    ``reduction`` is an op's ``meta["reduction"]`` (input ``shape``, ``strides`` in
    elements, ``dims``, ``dtype``). The launch configuration follows PyTorch's
    ``setReduceConfig`` (``aten/src/ATen/native/cuda/Reduce.cuh``): the input is laid out
    as ``TensorIterator`` does (reduced dims first, each group by stride, coalesced);
    a reduction that does not run along the fastest dimension (a linear layer's bias
    gradient, ``grad.sum(0)``) puts 32 outputs x 4 vectorised per block and splits the
    inputs over up to 64 blocks per output, which stage their partial sums in global
    memory: 4 bytes x outputs x blocks x 128, 24 MiB for bert-base's 768-wide bias
    gradients at batch 32 (4096 tokens). Calibrated: the eager traces of bert-base and
    gpt2 at batch 32 on the H200 hold exactly the staging sizes and counts this gives
    (61 x 24 MiB, 12 x 96 MiB and 22.4 MiB; 24 x 96 MiB, 12 x 132 MiB and 12 x 132.75 MiB).
    """
    itemsize = _ITEMSIZE.get(reduction.get("dtype"))
    shape, strides = reduction.get("shape"), reduction.get("strides")
    if itemsize is None or shape is None or strides is None or len(shape) != len(strides):
        return ()
    sizes, in_strides, reduced = _reduction_layout(shape, strides, reduction.get("dims"))
    numel = math.prod(sizes)
    outputs = math.prod(sizes[reduced:])
    if not sizes or numel == 0 or numel >= 2**31:  # one element, none, or split in 32-bit pieces (not modelled)
        return ()
    per_output = numel // outputs
    arg_size = max(4, itemsize)  # float accumulation for 16-bit inputs
    along_fastest = reduced == len(sizes) or in_strides[0] < in_strides[reduced]
    dim0, dim1 = (per_output, outputs) if along_fastest else (outputs, per_output)
    vec = 1
    if (in_strides[0] if along_fastest else in_strides[reduced]) == 1:
        if along_fastest and dim0 >= 128 and reduced == 1:
            dim0 //= 8 if itemsize == 2 else 4  # vectorised along the input
        elif not along_fastest:
            vec = _output_vec_size(sizes, in_strides, reduced)
            dim0 //= vec
    max_threads = 512 // vec
    width0 = _last_pow2(dim0) if dim0 < max_threads else max_threads
    width1 = _last_pow2(dim1) if dim1 < max_threads else max_threads
    block_x = min(width0, 32)
    block_y = min(width1, max_threads // block_x)
    block_x = min(width0, max_threads // block_y)
    step_in = step_out = 1
    if along_fastest:
        step_in *= block_x
    else:
        step_out *= block_x
    split_warps = -(-per_output // step_in) >= min(block_y * 16, 256)
    if split_warps:
        step_in *= block_y
    else:
        step_out *= block_y
    values_per_thread = -(-per_output // step_in)
    grid = -(-(outputs // vec) // step_out)
    target_grid = sms * (threads_per_sm // (block_x * block_y))
    if not (split_warps and values_per_thread >= 256 and grid <= target_grid):
        return ()
    blocks = max(-(-values_per_thread // 256), min(-(-target_grid // grid), -(-values_per_thread // 16)))
    if blocks <= 1:
        return ()
    staging = arg_size * outputs * blocks * (1 if along_fastest else block_x * vec)
    semaphores = 4 * grid  # one int per block column
    return tuple(-(-n // granularity) * granularity for n in (staging, semaphores))


def _last_pow2(n: int) -> int:
    return max(1, 1 << (n.bit_length() - 1)) if n > 0 else 1


def _reduction_layout(shape, strides, dims) -> tuple[list[int], list[int], int]:
    """TensorIterator's view of a reduction: sizes and input strides, fastest first, with
    the reduced dims leading and adjacent dims coalesced; and how many dims are reduced.
    The output is contiguous (stride 0 along the reduced dims)."""
    n = len(shape)
    reduced = {d % n for d in dims} if dims else set(range(n))
    out_strides, step = [0] * n, 1
    for d in reversed(range(n)):
        if d not in reduced:
            out_strides[d], step = step, step * shape[d]
    kept = [d for d in range(n) if shape[d] != 1]
    # TensorIterator's reorder_dimensions: reduced dims first, by input stride; the
    # others by the output's stride
    kept.sort(key=lambda d: (0, strides[d], shape[d]) if d in reduced else (1, out_strides[d], 0))
    sizes, ins, outs = [], [], []
    for d in kept:
        if sizes and ins[-1] * sizes[-1] == strides[d] and outs[-1] * sizes[-1] == out_strides[d]:
            sizes[-1] *= shape[d]
        else:
            sizes.append(shape[d])
            ins.append(strides[d])
            outs.append(out_strides[d])
    return sizes, ins, sum(1 for s in outs if s == 0)


def _output_vec_size(sizes, in_strides, reduced: int) -> int:
    """Outputs per thread when vectorising along the output (``get_output_vec_size``;
    the input's base address is taken as aligned)."""
    vec = 4
    for n in [sizes[reduced], *(s for j, s in enumerate(in_strides) if j != reduced)]:
        while n % vec:
            vec //= 2
    return vec


#: The memory-efficient attention's backward, as the CUDA capture emits it.
EFFICIENT_ATTENTION_BACKWARD = "aten._scaled_dot_product_efficient_attention_backward.default"


#: The memory-efficient attention backward's query tile and its query-gradient tile
#: width for fp32 (``kBlockSizeI``, ``MatmulGradQ::ThreadblockShape::kN``): the
#: configuration the H200 traces fit, head dim 64.
ATTENTION_BACKWARD_TILE = (64, 64)


def attention_backward_temporaries(graph, op) -> tuple[tuple[int, int, int], ...]:
    """What ``_efficient_attention_backward`` (aten/src/ATen/native/transformers/cuda/
    attention_backward.cu) takes from the caching allocator during its call, as
    ``(first, last, bytes)`` in :data:`ALLOCATOR_SUBSTEPS` of the call (the results come
    at 0): ``delta``, computed as ``(grad_out * out).sum(-1)`` then made contiguous (the
    product, batch x heads x queries x value dim floats, and the sum are temporaries of
    that expression, freed once ``delta`` is made), then the kernel's workspace while
    ``delta`` lives: the query gradient's float accumulator (``workspace_elements_gq`` in
    kernel_backward.h), per batch and head one ``GradQTempStorage`` (a tile of
    :data:`ATTENTION_BACKWARD_TILE` floats and 4 words) per query tile and head-dim
    tile. Exact on the H200 traces for fp32 with head dim 64 (bert-base, 128 queries;
    gpt2, 512); other head dims assume the same tiles; empty for other dtypes (not
    traced) and other ops. Each rounded up to the graph's granularity."""
    if op.target != EFFICIENT_ATTENTION_BACKWARD or len(op.outputs) < 3:
        return ()
    grad_q, _, grad_v = (graph.buffer(b) for b in op.outputs[:3])
    if (grad_q.dtype != "float32" or grad_q.shape is None or grad_v.shape is None or len(grad_q.shape) != 4
            or len(grad_v.shape) != 4):
        return ()
    batch, heads, queries, head_dim = grad_q.shape
    value_dim = grad_v.shape[-1]
    granularity = graph.meta.get("granularity", 512)

    def rounded(n: int) -> int:
        return -(-n // granularity) * granularity

    rows = batch * heads * queries
    product, delta = rounded(4 * rows * value_dim), rounded(4 * rows)
    tile_i, tile_n = ATTENTION_BACKWARD_TILE
    per_head = -(-queries // tile_i) * -(-head_dim // tile_n) * (tile_i * tile_n + 4)
    workspace = rounded(4 * batch * heads * -(-per_head // 4) * 4)
    # product and sum, then delta, then the workspace (product and sum freed)
    return (1, 3, product), (1, 3, delta), (2, 4, delta), (3, 4, workspace)


FLASH_ATTENTION_BACKWARD = "aten._scaled_dot_product_flash_attention_backward.default"


def flash_attention_backward_temporaries(graph, op) -> tuple[tuple[int, int, int], ...]:
    """What FlashAttention-2's ``mha_bwd`` (aten/src/ATen/native/transformers/cuda/
    flash_attn/flash_api.cpp) takes from the caching allocator after the gradients, as
    :func:`attention_backward_temporaries` gives them: ``softmax_d``, batch x heads x
    queries rounded up to 128 floats, then the query gradient's float accumulator
    ``dq_accum``, batch x rounded queries x heads x the head dim rounded up to 32 (to 64
    above 128, as the copy torch 2.15 vendors has it), both freed when the call returns. Read in the sources, not traced (no
    fp16/bf16 step was traced on a GPU yet). Not modelled: deterministic mode (one
    ``dq_accum`` per split), grouped-query attention's expanded key/value gradients,
    and the copy of a gradient whose layout the kernel does not take. Each rounded up
    to the graph's granularity; empty for other ops."""
    if op.target != FLASH_ATTENTION_BACKWARD or not op.outputs:
        return ()
    grad_q = graph.buffer(op.outputs[0])
    if grad_q.shape is None or len(grad_q.shape) != 4:
        return ()
    batch, heads, queries, head_dim = grad_q.shape
    granularity = graph.meta.get("granularity", 512)

    def rounded(n: int) -> int:
        return -(-n // granularity) * granularity

    queries_rounded = -(-queries // 128) * 128
    step = 32 if head_dim <= 128 else 64
    head_dim_rounded = -(-head_dim // step) * step
    softmax_d = rounded(4 * batch * heads * queries_rounded)
    dq_accum = rounded(4 * batch * queries_rounded * heads * head_dim_rounded)
    return (1, ALLOCATOR_SUBSTEPS, softmax_d), (1, ALLOCATOR_SUBSTEPS, dq_accum)


def call_temporaries(graph, op) -> tuple[tuple[int, int, int], ...]:
    """The allocations of an op's workspace that the caching allocator sees apart, as
    ``(first, last, bytes)`` in :data:`ALLOCATOR_SUBSTEPS` of the call: the attention
    backward's temporaries (efficient or flash), or a split reduction's staging buffer
    and semaphores (both for the whole call); ``()`` for a workspace of one allocation."""
    parts = attention_backward_temporaries(graph, op) or flash_attention_backward_temporaries(graph, op)
    if parts or graph.meta.get("device") != "cuda" or not op.meta.get("reduction"):
        return parts
    sizes = reduction_workspace_parts(op.meta["reduction"], granularity=graph.meta.get("granularity", 512),
                                      sms=sm_count(graph))
    return tuple((0, ALLOCATOR_SUBSTEPS, n) for n in sizes)


def call_peak(parts: Sequence[tuple[int, int, int]]) -> int:
    """The most bytes of ``parts`` (``(first, last, bytes)``) alive at once."""
    return max((sum(n for a, b, n in parts if a <= t < b) for t in range(ALLOCATOR_SUBSTEPS)), default=0)


#: CUDA's embedding backward sorts its indices (and takes temporaries) above this many.
EMBEDDING_SORT_THRESHOLD = 3072
EMBEDDING_BACKWARD = "aten.embedding_dense_backward.default"


def embedding_backward_workspace_bytes(graph, op) -> int:
    """What CUDA's ``embedding_dense_backward`` stages when it sorts its indices (more
    than :data:`EMBEDDING_SORT_THRESHOLD`; ``embedding_backward_cuda_kernel``,
    aten/src/ATen/native/cuda/EmbeddingBackwardKernel.cu), for
    ``max_partial = indices / 10 + min(indices, rows)`` partial segments:

    - the two-pass path: ``grad_weight_per_segment``, max_partial x embedding dim in the
      gradient's accumulation type (bert-base's and gpt2's word embeddings at batch 32
      on the H200: 4505 and 18022 x 768 floats, exact);
    - the fused path, taken when the second pass would fill few blocks (fewer than 4
      per streaming multiprocessor, ``MAX_ATOMIC_ACCUM_BLOCKS_PER_SM``) and there are
      over 4 partial segments per block: ``partial_to_segment_idx`` (max_partial indices),
      plus a float accumulator of the whole weight for half types (BERT's two-row
      token types at batch 32: 3288 bytes, traced on the H200).

    Not modelled: deterministic algorithms (``torch.use_deterministic_algorithms``: the
    two-pass path) and ``scale_grad_by_freq`` (sorted at any size). 0 for other ops."""
    if op.target != EMBEDDING_BACKWARD or not op.inputs or not op.outputs:
        return 0
    grad, weight = graph.buffer(op.inputs[0]), graph.buffer(op.outputs[0])
    if grad.shape is None or weight.shape is None or len(weight.shape) != 2 or not grad.shape:
        return 0
    rows, dim = weight.shape
    indices = math.prod(grad.shape[:-1])
    itemsize = _ITEMSIZE.get(grad.dtype)
    if itemsize is None or indices <= EMBEDDING_SORT_THRESHOLD or not rows or not dim:
        return 0
    max_segments = min(indices, rows)
    max_partial = indices // 10 + max_segments
    stride_warped = -(-dim // 32) * 32
    second_pass_blocks = -(-max_segments * stride_warped // min(stride_warped, 1024))
    if second_pass_blocks < 4 * sm_count(graph) and max_partial > 4 * second_pass_blocks:
        index_size = 4 if len(op.inputs) > 1 and graph.buffer(op.inputs[1]).dtype == "int32" else 8
        size = max_partial * index_size + (rows * dim * 4 if itemsize < 4 else 0)
    else:
        size = max_partial * dim * max(4, itemsize)
    granularity = graph.meta.get("granularity", 512)
    return -(-size // granularity) * granularity


def transient_workspaces(graph) -> dict[str, int]:
    """Op id -> bytes of the workspace the op takes for the duration of its call, for a
    graph captured for CUDA (empty otherwise): cuDNN's convolutions, the staging
    buffers of split reductions, the attention backwards' temporaries (their peak) and
    the embedding backward's partial sums."""
    if graph.meta.get("device") != "cuda":
        return {}
    out = {}
    for op in graph.ops:
        size = (conv_workspace_bytes(graph, op)
                or call_peak(call_temporaries(graph, op))  # split reductions, attention backward
                or embedding_backward_workspace_bytes(graph, op))
        if size:
            out[op.id] = size
    return out


#: Times of the caching allocator's clock per op of a step (:func:`on_allocator_clock`).
ALLOCATOR_SUBSTEPS = 4


def on_allocator_clock(graph: Graph, step: Sequence[Lifetime]) -> list[Lifetime]:
    """``step`` (lifetimes in op steps) in the order the caching allocator sees its requests.

    Times become ``ALLOCATOR_SUBSTEPS`` per op. Each op still allocates its outputs,
    then its workspace, when it starts, except a traced ``convolution_backward``
    (:func:`conv_backward_workspaces`): cuDNN allocates the input gradient, takes and
    frees its workspace, then the weight gradient and its workspace, and then the bias
    gradient. A call's workspace is the lifetime ``workspace:<op id>`` (or
    ``workspace:<op id>@<anything>``, one per run) starting with the call; its results
    are those named after their buffer (``<id>`` or ``<id>@<anything>``) starting with
    it. The larger workspace keeps the lifetime's id (what a plot shows), the other is
    ``<id>:other``. Replaying the H200 traces of vgg16, resnet18 and alexnet, the two
    workspaces' sizes and moments decide how the segments fragment (vgg16 b32: 5008 MiB
    reserved with one workspace, 5936 with two, 5932 measured). An attention
    backward's workspace becomes its temporaries, each at its moment
    (:func:`attention_backward_temporaries`, :func:`flash_attention_backward_temporaries`),
    and a split reduction's into its staging
    buffer and semaphores (:func:`call_temporaries`); the largest keeps the id, the
    others are ``<id>:<n>``.
    """
    f = ALLOCATOR_SUBSTEPS
    timed = [attrs.evolve(lt, start=lt.start * f, end=lt.end * f) for lt in step]
    starting: dict[tuple[str, int], list[int]] = {}  # (buffer or workspace id, start) -> positions in timed
    for i, lt in enumerate(timed):
        starting.setdefault((lt.id.split("@")[0], lt.start), []).append(i)
    runs: dict[str, list[int]] = {}  # workspace id -> its lifetimes' positions
    for (name, _), where in starting.items():
        if name.startswith("workspace:"):
            runs.setdefault(name, []).extend(where)
    extra = []
    for op in graph.ops:
        ws = f"workspace:{op.id}"
        parts = call_temporaries(graph, op) if ws in runs else ()
        for i in runs.get(ws, ()) if parts else ():
            k = timed[i].start
            largest = max(range(len(parts)), key=lambda p: parts[p][2])
            for p, (first, last, size) in enumerate(parts):
                lt = Lifetime(timed[i].id if p == largest else f"{timed[i].id}:{p}", k + first, k + last, size)
                if p == largest:
                    timed[i] = lt
                else:
                    extra.append(lt)
        pair = conv_backward_workspaces(graph, op) if ws in runs else None
        if pair is None:
            continue
        x, w = (graph.buffer(b) for b in op.inputs[1:3])
        for i in runs[ws]:
            k = timed[i].start
            for b in op.outputs:
                buf = graph.buffer(b)
                if b == ws or buf.shape == x.shape:
                    continue
                later = k + 2 if buf.shape == w.shape else k + 3  # the weight's gradient, then the bias's
                for j in starting.get((b, k), ()):
                    timed[j] = attrs.evolve(timed[j], start=later, end=max(timed[j].end, later + 1))
            first, second = Lifetime(timed[i].id, k + 1, k + 2, pair[0]), Lifetime(timed[i].id, k + 3, k + 4, pair[1])
            larger, smaller = (first, second) if pair[0] >= pair[1] else (second, first)
            timed[i] = larger
            if smaller.size:
                extra.append(attrs.evolve(smaller, id=f"{larger.id}:other"))
    return [*timed, *extra]


#: CPU kernels known to allocate a temporary they free before returning.
CPU_BATCH_NORM_BACKWARD = "aten.native_batch_norm_backward.default"
#: ``Op.meta`` key: bytes the op's CPU kernel allocates and frees within its call, known
#: at capture from its arguments' layouts (``model_ir.torch.cpu_temporaries``).
CPU_TEMPORARY = "cpu_temporary_bytes"


def cpu_kernel_temporaries(graph) -> dict[str, int]:
    """Op id -> bytes a CPU kernel allocates and frees within its call, for a graph
    captured for the CPU (empty otherwise): what capture recorded in
    ``meta[CPU_TEMPORARY]`` (convolutions' buffers, measured at capture; batch norm's
    backward allocating its input gradient twice; see ``model_ir.torch.cpu_temporaries``).
    A graph saved without that meta counts the batch norm backwards' input gradient (the
    contiguous case). :func:`with_workspaces` makes them buffers of a graph captured for
    the CPU (model-bench's figures); the CPU captures themselves are checked against the
    storages ops return (``model_ir.testing.live_memory``), which never see them, and the
    arena executor's plan counts them beside the arena (``model_runtime.beside_arena``)."""
    if graph.meta.get("device") not in (None, "cpu"):
        return {}
    out = {}
    for op in graph.ops:
        if CPU_TEMPORARY in op.meta:
            if op.meta[CPU_TEMPORARY]:
                out[op.id] = int(op.meta[CPU_TEMPORARY])
        elif op.target == CPU_BATCH_NORM_BACKWARD and op.outputs:
            grad_input = graph.buffer(op.outputs[0])
            if grad_input.shape is not None and len(grad_input.shape) >= 2:
                out[op.id] = grad_input.size
    return out


#: ``Graph.meta`` key: op id -> bytes an executor's own code for that op allocates and
#: frees in place of the op's kernel (model-runtime's arena executor rewrites some ops:
#: ``model_runtime.lowering.rewrite_temporaries``).
ARENA_TEMPORARIES = "arena_temporaries"


#: ``Buffer.kind`` of the workspace buffers :func:`with_workspaces` adds.
WORKSPACE_KIND = "workspace"


def with_workspaces(graph: Graph, temporaries: dict[str, int] | None = None) -> Graph:
    """``graph`` with the workspace of each call that takes one (:func:`transient_workspaces`;
    captured for the CPU, the kernels' temporaries of :func:`cpu_kernel_temporaries`) as
    one more output of that op, buffer ``workspace:<op id>`` of kind ``workspace`` that no
    op reads (alive while the op runs; each run of a recomputed op makes its own instance);
    unchanged when there is none or they are there already. ``temporaries``: op id ->
    bytes an executor's own code may take for that op instead of its kernel's
    (:data:`ARENA_TEMPORARIES`), counted where larger."""
    cpu = graph.meta.get("device") == "cpu"
    sizes = cpu_kernel_temporaries(graph) if cpu else transient_workspaces(graph)
    for op_id, size in (temporaries or {}).items():
        if size > sizes.get(op_id, 0):
            sizes[op_id] = int(size)
    if not sizes or graph.meta.get("workspaces"):
        return graph
    buffers = [*graph.buffers,
               *(Buffer(f"workspace:{op_id}", size, kind=WORKSPACE_KIND) for op_id, size in sizes.items())]
    ops = [attrs.evolve(op, outputs=(*op.outputs, f"workspace:{op.id}")) if op.id in sizes else op
           for op in graph.ops]
    what = ("CPU kernels' temporaries (model_ir.torch.cpu_temporaries)" if cpu else
            "cuDNN convolutions, split reductions, attention and embedding backward (model_ir.workspaces)")
    return attrs.evolve(graph, buffers=buffers, ops=ops, meta={**graph.meta, "workspaces": what})


def without_workspaces(graph: Graph) -> Graph:
    """``graph`` without the workspace buffers :func:`with_workspaces` added (the graph
    model-runtime plans: its executors' workspaces are cuDNN's own allocations, which
    ``model_runtime.beside_arena`` counts beside the arena); unchanged without them."""
    if not graph.meta.get("workspaces"):
        return graph
    dropped = {b.id for b in graph.buffers if b.kind == WORKSPACE_KIND}
    ops = [attrs.evolve(op, outputs=tuple(b for b in op.outputs if b not in dropped)) if dropped & set(op.outputs)
           else op for op in graph.ops]
    meta = {k: v for k, v in graph.meta.items() if k != "workspaces"}
    return attrs.evolve(graph, buffers=[b for b in graph.buffers if b.id not in dropped], ops=ops, meta=meta)
