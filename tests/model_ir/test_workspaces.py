"""The library-workspace estimates (model_ir.workspaces)."""

import math

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from model_ir.graph import Buffer, Graph, Op
from model_ir.workspaces import (
    WORKSPACE_KIND, conv_backward_workspaces, conv_workspace_bytes, cublas_threads, cublas_workspace_bytes, reduction_workspace_bytes,
    transient_workspaces, uses_cublas, with_workspaces, without_workspaces, workspace_bytes,
)

MiB, KiB = 1 << 20, 1 << 10


@pytest.mark.parametrize("capability,expected", [((9, 0), 32 * MiB), ((10, 0), 32 * MiB), ((12, 0), 32 * MiB),
                                                 ((8, 0), 8 * MiB + 128 * KiB), ((7, 5), 8 * MiB + 128 * KiB)])
def test_pytorchs_default_cublas_workspace(capability, expected):
    assert cublas_workspace_bytes(capability) == expected


def test_cublas_workspace_config_overrides_the_default():
    assert cublas_workspace_bytes((9, 0), ":4096:2:16:8") == 8 * MiB + 128 * KiB
    assert cublas_workspace_bytes((8, 0), ":16:8") == 128 * KiB
    assert cublas_workspace_bytes((9, 0), "garbage") == 32 * MiB  # PyTorch warns and uses the default


def test_workspaces_only_on_cuda_and_per_thread():
    assert workspace_bytes("cpu", threads=2) == workspace_bytes(None, threads=1) == 0
    assert workspace_bytes("cuda", threads=2) == 64 * MiB and workspace_bytes("cuda", threads=0) == 0


def step(*ops):
    return Graph([Buffer(f"b{i}", 512) for i in range(len(ops))],
                 [Op(f"o{i}", outputs=[f"b{i}"], target=t, meta={"phase": p}) for i, (t, p) in enumerate(ops)])


def test_threads_that_run_cublas():
    assert uses_cublas("aten.addmm.default") and uses_cublas("aten.bmm.default")
    assert not uses_cublas("aten.convolution.default") and not uses_cublas(None) and not uses_cublas("mm")
    train = step(("aten.addmm.default", "forward"), ("aten.mm.default", "backward"), ("aten.add_.Tensor", "optimizer"))
    assert cublas_threads(train, eager=True) == 2 and cublas_threads(train, eager=False) == 1
    convs = step(("aten.convolution.default", "forward"), ("aten.convolution_backward.default", "backward"))
    assert cublas_threads(convs, eager=True) == cublas_threads(convs, eager=False) == 0  # squeezenet: none
    forward_only = step(("aten.mm.default", "forward"), ("aten.convolution_backward.default", "backward"))
    assert cublas_threads(forward_only, eager=True) == 1


def conv_step(weight_shape=(8, 4, 3, 3), device="cuda"):
    """x -> conv -> y, backward: dy -> convolution_backward -> dx, dw."""
    buffers = [Buffer("x", 4 * MiB, shape=(2, 4, 16, 16)), Buffer("w", 1 * MiB, persistent=True, shape=weight_shape),
               Buffer("y", 8 * MiB, shape=(2, 8, 16, 16)), Buffer("dy", 8 * MiB), Buffer("dx", 4 * MiB),
               Buffer("dw", 1 * MiB)]
    ops = [Op("conv", inputs=["x", "w"], outputs=["y"], target="aten.convolution.default"),
           Op("ones", inputs=["y"], outputs=["dy"], target="aten.ones_like.default"),
           Op("conv_bwd", inputs=["dy", "x", "w"], outputs=["dx", "dw"], target="aten.convolution_backward.default")]
    return Graph(buffers, ops, meta={"device": device})


def test_cudnn_convolution_workspaces_last_the_call():
    g = conv_step()
    assert conv_workspace_bytes(g, g.ops[0]) == 13 * MiB  # input + weight + output
    assert conv_workspace_bytes(g, g.ops[2]) == 13 * MiB  # grad_output + input + weight
    assert conv_workspace_bytes(g, g.ops[1]) == 0
    assert transient_workspaces(g) == {"conv": 13 * MiB, "conv_bwd": 13 * MiB}
    assert transient_workspaces(conv_step(device="cpu")) == {}
    assert transient_workspaces(conv_step(weight_shape=(4, 1, 3, 3))) == {}  # depthwise: PyTorch's own kernel


def test_workspaces_become_buffers_alive_during_their_call():
    from model_ir import simulate

    g = with_workspaces(conv_step())
    assert [op.outputs for op in g.ops] == [("y", "workspace:conv"), ("dy",), ("dx", "dw", "workspace:conv_bwd")]
    ws = [b for b in g.buffers if b.kind == WORKSPACE_KIND]
    assert [(b.id, b.size) for b in ws] == [("workspace:conv", 13 * MiB), ("workspace:conv_bwd", 13 * MiB)]
    assert with_workspaces(g) is g and with_workspaces(conv_step(device="cpu")) == conv_step(device="cpu")
    assert without_workspaces(g) == conv_step() and without_workspaces(conv_step()) == conv_step()
    # Beside the weight (1 MiB): the forward call holds x, y and its workspace (25 MiB); the
    # backward call dy, x, dx, dw and its workspace (8 + 4 + 4 + 1 + 13 = 30 MiB): the peak.
    profile = simulate(g)
    assert profile.timeline == (26 * MiB, 1 * MiB + 20 * MiB, 31 * MiB)
    assert {lt.id: (lt.start, lt.end) for lt in profile.lifetimes}["workspace:conv"] == (0, 1)


def _reduction(shape, dims, dtype="float32", strides=None):
    if strides is None:
        strides = [1] * len(shape)
        for d in reversed(range(len(shape) - 1)):
            strides[d] = strides[d + 1] * shape[d + 1]
    return {"shape": list(shape), "strides": list(strides), "dims": dims, "dtype": dtype}


@pytest.mark.parametrize("shape,staging,semaphores", [
    ((4096, 768), 24 * MiB, 24),  # bert-base b32: a 768-wide linear layer's bias gradient
    ((4096, 3072), 96 * MiB, 96),  # bert-base b32: the 3072-wide one
    ((4096, 30522), 23440896, 1908),  # bert-base b32: the vocabulary's
    ((16384, 2304), 139198464, 72),  # gpt2 b32: the fused qkv projection's
])
def test_split_reduction_staging_as_traced_on_the_h200(shape, staging, semaphores):
    """Bias gradients, ``grad.sum(0)``, at the sizes eager's allocator traces hold."""
    assert reduction_workspace_bytes(_reduction(shape, [0])) == staging + semaphores


def test_reductions_without_staging():
    assert reduction_workspace_bytes(_reduction((128, 768), [0])) == 0  # batch 1: one block per output
    assert reduction_workspace_bytes(_reduction((32, 64, 56, 56), [0, 2, 3])) == 0  # along the fastest dim
    assert reduction_workspace_bytes(_reduction((32, 1000), None)) == 0  # a loss: along the fastest dim
    assert reduction_workspace_bytes(_reduction((4096, 768), [0], dtype="int64")) == 0  # not modelled
    assert reduction_workspace_bytes({}) == 0 and reduction_workspace_bytes(_reduction((0, 768), [0])) == 0
    assert reduction_workspace_bytes(_reduction((), None)) == 0 == reduction_workspace_bytes(_reduction((1, 1), [0]))
    # A small GPU: 12 SMs x 16 blocks over 6 block columns, 32 blocks per output instead of 64.
    assert reduction_workspace_bytes(_reduction((4096, 768), [0]), sms=12) == 12 * MiB + 24
    # ... and a graph captured on that GPU says so (meta cuda_sm_count)
    graph = Graph([Buffer("g", 4096 * 768 * 4), Buffer("b", 768 * 4)],
                  [Op("make", outputs=["g"]), Op("sum", inputs=["g"], outputs=["b"],
                                                 meta={"reduction": _reduction((4096, 768), [0])})],
                  meta={"device": "cuda", "granularity": 1})
    assert transient_workspaces(graph) == {"sum": 24 * MiB + 24}
    small = attrs.evolve(graph, meta={**graph.meta, "cuda_sm_count": 12})
    assert transient_workspaces(small) == {"sum": 12 * MiB + 24}


@given(st.lists(st.integers(1, 64), min_size=2, max_size=4), st.integers(1, 3), st.sampled_from(
    ["float32", "float16", "float64"]))
def test_reduction_staging_depends_on_the_layout_not_on_how_dims_are_split(sizes, split, dtype):
    """Reducing the leading dims of a contiguous tensor is the same kernel whether they come
    as one dim or several (TensorIterator coalesces them), and a transposed input reduced
    along the same elements is the same reduction."""
    split = min(split, len(sizes) - 1)
    lead, rest = math.prod(sizes[:split]), math.prod(sizes[split:])
    flat = reduction_workspace_bytes(_reduction((lead * 64, rest), [0], dtype))
    assert reduction_workspace_bytes(_reduction((64, *sizes), list(range(split + 1)), dtype)) == flat
    # (rest, lead*64) stored column-major, reduced over its second dim: the same memory walk.
    transposed = _reduction((rest, lead * 64), [1], dtype, strides=[1, rest])
    assert reduction_workspace_bytes(transposed) == flat
    assert flat == 0 or flat >= 4 * rest * 2  # staged partial sums of at least two blocks per output


def test_a_cuda_capture_records_reductions_and_stages_the_bias_gradient():
    torch = pytest.importorskip("torch")
    from model_ir.torch import capture_step

    model = torch.nn.Linear(64, 768)
    x, y = torch.randn(4096, 64), torch.randn(4096, 768)
    mse = torch.nn.functional.mse_loss

    def capture(device):
        return capture_step(model, x, loss_fn=mse, targets=(y,), optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                            device=device).graph

    graph = capture("cuda")
    sums = [op for op in graph.ops if op.target == "aten.sum.dim_IntList"]
    assert [op.meta["reduction"] for op in sums] == [_reduction((4096, 768), [0])]
    staged = with_workspaces(graph)
    assert staged.buffer(f"workspace:{sums[0].id}").size == 24 * MiB + 512  # 24 bytes of semaphores, rounded
    cpu = capture("cpu")
    assert [op.meta["reduction"] for op in cpu.ops if op.target == "aten.sum.dim_IntList"] == [sums[0].meta["reduction"]]
    # the CPU stages no reduction: its graph gains only its kernels' temporaries (MSE's unreduced losses)
    from model_ir.workspaces import WORKSPACE_KIND, cpu_kernel_temporaries

    added = {b.id for b in with_workspaces(cpu).buffers if b.kind == WORKSPACE_KIND}
    assert added == {f"workspace:{op}" for op in cpu_kernel_temporaries(cpu)} and f"workspace:{sums[0].id}" not in added


def traced_conv(x_shape, w_shape, y_shape, dtype="float32", granularity=512):
    """One forward convolution with real shapes and sizes (fp32) and nothing else."""
    def nbytes(shape):
        return 4 * math.prod(shape)
    buffers = [Buffer("x", nbytes(x_shape), shape=x_shape, dtype=dtype),
               Buffer("w", nbytes(w_shape), persistent=True, shape=w_shape, dtype=dtype),
               Buffer("y", nbytes(y_shape), shape=y_shape, dtype=dtype)]
    return Graph(buffers, [Op("conv", inputs=["x", "w"], outputs=["y"], target="aten.convolution.default")],
                 meta={"device": "cuda", "granularity": granularity})


@pytest.mark.parametrize("shapes,formula_over", [
    # vgg's first convolution: cuDNN takes no workspace at all (the formula: input + weight + output)
    (((32, 3, 224, 224), (64, 3, 3, 3), (32, 64, 224, 224)), True),
    # resnet18's layer1: input + weight, not input + weight + output
    (((32, 64, 56, 56), (64, 64, 3, 3), (32, 64, 56, 56)), True),
    # vgg16's second: the formula's input + weight + output, measured the same
    (((32, 64, 224, 224), (64, 64, 3, 3), (32, 64, 224, 224)), False),
])
def test_traced_convolution_shapes_use_the_measured_workspace(shapes, formula_over):
    from model_ir.cudnn_workspaces import FORWARD

    g = traced_conv(*shapes)
    measured = FORWARD[(*shapes, "float32")]
    formula = sum(b.size for b in g.buffers)
    assert conv_workspace_bytes(g, g.ops[0]) == -(-measured // 512) * 512
    assert (formula > measured + MiB) == formula_over
    # other shapes (here another batch size), or another dtype, keep the formula
    other = traced_conv((16, *shapes[0][1:]), shapes[1], (16, *shapes[2][1:]))
    assert conv_workspace_bytes(other, other.ops[0]) == sum(b.size for b in other.buffers)
    half = traced_conv(*shapes, dtype="float16")
    assert conv_workspace_bytes(half, half.ops[0]) == sum(b.size for b in half.buffers)


def test_a_traced_backward_convolution_uses_the_measured_workspace():
    from model_ir.cudnn_workspaces import BACKWARD

    # alexnet b1's second convolution: cuDNN's weight-gradient workspace is 31.69 MiB,
    # the formula (grad_output + input + weight) 1.9 MiB
    shapes = ((1, 64, 27, 27), (192, 64, 5, 5), (1, 192, 27, 27))
    fwd = traced_conv(*shapes)
    x, w, y = fwd.buffers
    g = Graph([*fwd.buffers, Buffer("dy", y.size, shape=y.shape, dtype="float32"),
               Buffer("dx", x.size), Buffer("dw", w.size)],
              [*fwd.ops, Op("conv_bwd", inputs=["dy", "x", "w"], outputs=["dx", "dw"],
                            target="aten.convolution_backward.default")],
              meta=fwd.meta)
    assert conv_workspace_bytes(g, g.ops[1]) == -(-max(BACKWARD[(*shapes, "float32")]) // 512) * 512 > 30 * MiB
    assert y.size + x.size + w.size < 2 * MiB
    # the allocator sees both: none for the input gradient, then the weight gradient's
    first, second = conv_backward_workspaces(g, g.ops[1])
    assert first == 0 and second % 512 == 0 and second > 30 * MiB
    assert conv_backward_workspaces(g, g.ops[0]) is None  # a forward convolution
    other = traced_conv((2, *shapes[0][1:]), shapes[1], (2, *shapes[2][1:]))
    other = Graph([*other.buffers, Buffer("dy", 1), Buffer("dx", 1), Buffer("dw", 1)],
                  [*other.ops, Op("conv_bwd", inputs=["dy", "x", "w"], outputs=["dx", "dw"],
                                  target="aten.convolution_backward.default")], meta=other.meta)
    assert conv_backward_workspaces(other, other.ops[1]) is None  # untraced: the formula, one workspace


def test_the_measured_tables_are_well_formed():
    from model_ir.cudnn_workspaces import BACKWARD, FORWARD, MEASURED_ON

    assert FORWARD and BACKWARD and "H200" in MEASURED_ON
    for (x, w, y, dtype), size in [*FORWARD.items(), *((k, s) for k, pair in BACKWARD.items() for s in pair)]:
        assert len(x) == len(w) == len(y) >= 3 and x[0] == y[0] and w[0] == y[1] and dtype == "float32"
        assert isinstance(size, int) and size >= 0
    assert all(isinstance(pair, tuple) and len(pair) == 2 for pair in BACKWARD.values())


def test_pointwise_forward_convolutions_take_no_workspace():
    # a 1x1 stride-1 convolution (mobilenet_v2's expansions): cuDNN's GEMM, no workspace
    pointwise = traced_conv((32, 24, 56, 56), (144, 24, 1, 1), (32, 144, 56, 56))
    assert conv_workspace_bytes(pointwise, pointwise.ops[0]) == 0
    # stride 2 (resnet's downsampling) or a 3x3 kernel keep the formula
    for shapes in (((32, 24, 56, 56), (144, 24, 1, 1), (32, 144, 28, 28)),
                   ((32, 24, 56, 56), (144, 24, 3, 3), (32, 144, 56, 56))):
        g = traced_conv(*shapes)
        assert conv_workspace_bytes(g, g.ops[0]) == sum(b.size for b in g.buffers)


def test_cpu_kernel_temporaries_are_batch_norm_backwards_second_input_gradient():
    from model_ir.workspaces import CPU_BATCH_NORM_BACKWARD, cpu_kernel_temporaries

    buffers = [Buffer("x", 4096, shape=(2, 8, 8, 8)), Buffer("gx", 4096, shape=(2, 8, 8, 8)),
               Buffer("gw", 32, shape=(8,)), Buffer("gw2", 32, shape=(8,))]
    ops = [Op("make", outputs=["x"]), Op("bnb", inputs=["x"], outputs=["gx", "gw"], target=CPU_BATCH_NORM_BACKWARD),
           # without an input gradient (output_mask[0] false) its first result is the weight's
           Op("bnb_w", inputs=["x"], outputs=["gw2"], target=CPU_BATCH_NORM_BACKWARD)]
    graph = Graph(buffers, ops, meta={"device": "cpu"})
    assert cpu_kernel_temporaries(graph) == {"bnb": 4096}
    assert cpu_kernel_temporaries(Graph(buffers, ops, meta={"device": "cuda"})) == {}


def attention_backward(batch, heads, queries, head_dim=64, dtype="float32", device="cuda"):
    """grad_out, q, k, v, out -> _scaled_dot_product_efficient_attention_backward -> dq, dk, dv."""
    shape = (batch, heads, queries, head_dim)
    size = 4 * math.prod(shape)
    names = ["dout", "q", "k", "v", "out", "dq", "dk", "dv"]
    buffers = [Buffer(n, size, shape=shape, dtype=dtype) for n in names]
    ops = [Op("make", outputs=names[:5]),
           Op("attn_bwd", inputs=names[:5], outputs=names[5:],
              target="aten._scaled_dot_product_efficient_attention_backward.default")]
    return Graph(buffers, ops, meta={"device": device, "granularity": 512})


@pytest.mark.parametrize("batch,heads,queries,product,delta,workspace", [
    (32, 12, 128, 12 * MiB, 196608, 12595200),  # bert-base b32, traced on the H200
    (32, 12, 512, 48 * MiB, 786432, 50380800),  # gpt2 b32
    # vit_b_16 b2, 197 tokens: four 64-query tiles of 64 x 64 floats and 4 words each
    (2, 12, 197, 2 * 12 * 197 * 64 * 4, 18944, 2 * 12 * 4 * 4100 * 4),
])
def test_efficient_attention_backward_temporaries_as_traced_on_the_h200(batch, heads, queries, product, delta,
                                                                         workspace):
    from model_ir.workspaces import attention_backward_temporaries, call_peak

    g = attention_backward(batch, heads, queries)
    parts = attention_backward_temporaries(g, g.ops[1])
    # the product and its sum, then delta (both still alive), then the workspace (both freed)
    rounded = -(-product // 512) * 512
    assert parts == ((1, 3, rounded), (1, 3, delta), (2, 4, delta), (3, 4, workspace))
    assert call_peak(parts) == max(rounded + 2 * delta, delta + workspace)
    assert transient_workspaces(g) == {"attn_bwd": call_peak(parts)}
    assert attention_backward_temporaries(g, g.ops[0]) == ()
    half = attention_backward(batch, heads, queries, dtype="float16")
    assert attention_backward_temporaries(half, half.ops[1]) == () and transient_workspaces(half) == {}
    assert transient_workspaces(attention_backward(batch, heads, queries, device="cpu")) == {}


@pytest.mark.parametrize("queries,head_dim,softmax_d,dq_accum", [
    (512, 64, 4 * 12 * 512, 4 * 512 * 12 * 64),  # gpt2 b1 under bf16 autocast
    (197, 72, 4 * 12 * 256, 4 * 256 * 12 * 96),  # queries to 128s, head dim to 32s
    (100, 160, 4 * 12 * 128, 4 * 128 * 12 * 192),  # above 128: to 64s
    (100, 200, 4 * 12 * 128, 4 * 128 * 12 * 256),
])
def test_flash_attention_backward_takes_softmax_d_and_a_float_dq_accumulator(queries, head_dim, softmax_d,
                                                                             dq_accum):
    from model_ir.workspaces import call_peak, call_temporaries, flash_attention_backward_temporaries

    g = attention_backward(1, 12, queries, head_dim, dtype="bfloat16")
    g = Graph(g.buffers, [g.ops[0], attrs.evolve(g.ops[1], target="aten._scaled_dot_product_flash_attention_backward"
                                                                     ".default")], meta=g.meta)

    def rounded(n):
        return -(-n // 512) * 512

    parts = ((1, 4, rounded(softmax_d)), (1, 4, rounded(dq_accum)))
    assert flash_attention_backward_temporaries(g, g.ops[1]) == call_temporaries(g, g.ops[1]) == parts
    assert transient_workspaces(g) == {"attn_bwd": call_peak(parts)} and call_peak(parts) == sum(n for *_, n in parts)
    assert flash_attention_backward_temporaries(g, g.ops[0]) == ()
    assert transient_workspaces(Graph(g.buffers, g.ops, meta={**g.meta, "device": "cpu"})) == {}


def test_attention_backward_temporaries_each_at_their_moment_on_the_allocator_clock():
    from model_bench.pipeline import eager_step_lifetimes
    from model_ir.workspaces import on_allocator_clock

    g = with_workspaces(attention_backward(32, 12, 128))
    _, step = eager_step_lifetimes(g)
    clock = {lt.id: (lt.start, lt.end, lt.size) for lt in on_allocator_clock(g, step)}
    k = 4  # the second op's first allocator time
    assert clock["workspace:attn_bwd"] == (k + 3, k + 4, 12595200)  # the largest keeps the id
    assert clock["workspace:attn_bwd:0"] == (k + 1, k + 3, 12 * MiB)
    assert clock["workspace:attn_bwd:1"] == (k + 1, k + 3, 196608)
    assert clock["workspace:attn_bwd:2"] == (k + 2, k + 4, 196608)
    assert clock["dq"][0] == k  # the results come first


def test_a_split_reductions_staging_and_semaphores_are_two_allocations_on_the_clock():
    """CUDA's reduce kernel takes its staging buffer and its semaphores apart (the H200
    traces of bert-base b32 hold 24 MiB and 512 B, not one block of 24 MiB + 512)."""
    from model_bench.pipeline import eager_step_lifetimes
    from model_ir.workspaces import call_temporaries, on_allocator_clock

    g = with_workspaces(Graph(
        [Buffer("g", 4096 * 768 * 4), Buffer("b", 768 * 4)],
        [Op("make", outputs=["g"]),
         Op("sum", inputs=["g"], outputs=["b"], meta={"reduction": _reduction((4096, 768), [0])})],
        meta={"device": "cuda", "granularity": 512}))
    assert call_temporaries(g, g.ops[1]) == ((0, 4, 24 * MiB), (0, 4, 512))
    assert g.buffer("workspace:sum").size == 24 * MiB + 512  # the graph holds their sum
    _, step = eager_step_lifetimes(g)
    clock = {lt.id: (lt.start, lt.end, lt.size) for lt in on_allocator_clock(g, step)}
    assert clock["workspace:sum"] == (4, 8, 24 * MiB) and clock["workspace:sum:1"] == (4, 8, 512)
    assert call_temporaries(g, g.ops[0]) == ()


@pytest.mark.parametrize("rows,dim", [(0, 768), (30522, 0)])
def test_embedding_backward_of_an_empty_weight_takes_nothing(rows, dim):
    from model_ir.workspaces import embedding_backward_workspace_bytes

    g = Graph([Buffer("dy", 4096 * dim * 4, shape=(4096, dim), dtype="float32"),
               Buffer("dw", rows * dim * 4, shape=(rows, dim), dtype="float32")],
              [Op("make", outputs=["dy"]),
               Op("emb_bwd", inputs=["dy"], outputs=["dw"], target="aten.embedding_dense_backward.default")],
              meta={"device": "cuda"})
    assert embedding_backward_workspace_bytes(g, g.ops[1]) == 0


@pytest.mark.parametrize("tokens,rows,dtype,sms,expected", [
    (32 * 128, 30522, "float32", None, 13839360),  # bert-base b32's word embeddings, traced on the H200
    (32 * 512, 50257, "float32", None, 55363584),  # gpt2 b32's
    (3072, 30522, "float32", None, 0),  # not sorted: no partial sums
    # BERT's token types: two rows fill 2 blocks of the second pass, so the fused path
    # takes partial_to_segment_idx alone (3288 bytes traced on the H200) ...
    (32 * 128, 2, "float32", None, (409 + 2) * 8),
    (32 * 128, 2, "float16", None, (409 + 2) * 8 + 2 * 768 * 4),  # ... and a float accumulator for halves
    # 100 rows fill 100 blocks: fused on a GPU of 132 SMs, two passes on one of 20
    (32 * 128, 100, "float32", None, (409 + 100) * 8),
    (32 * 128, 100, "float32", 20, (409 + 100) * 768 * 4),
    (32 * 128, 2, "int32 ids", None, (409 + 2) * 4),  # partial_to_segment_idx has the ids' type
])
def test_embedding_backward_workspace(tokens, rows, dtype, sms, expected):
    from model_ir.workspaces import embedding_backward_workspace_bytes

    item = 2 if dtype == "float16" else 4
    ids = "int32" if dtype == "int32 ids" else "int64"
    dtype = "float32" if dtype == "int32 ids" else dtype
    g = Graph([Buffer("dy", tokens * 768 * item, shape=(tokens, 768), dtype=dtype),
               Buffer("ids", tokens * 8, shape=(tokens,), dtype=ids),
               Buffer("dw", rows * 768 * item, shape=(rows, 768), dtype=dtype)],
              [Op("make", outputs=["dy", "ids"]),
               Op("emb_bwd", inputs=["dy", "ids"], outputs=["dw"], target="aten.embedding_dense_backward.default")],
              meta={"device": "cuda", "granularity": 512, **({"cuda_sm_count": sms} if sms else {})})
    size = embedding_backward_workspace_bytes(g, g.ops[1])
    assert size == -(-expected // 512) * 512 and embedding_backward_workspace_bytes(g, g.ops[0]) == 0
    assert transient_workspaces(g) == ({"emb_bwd": size} if size else {})


def test_cpu_kernel_temporaries_recorded_at_capture_come_first():
    """A capture records each CPU kernel's temporaries from its arguments' layouts
    (model_ir.torch.cpu_temporaries): a batch norm backward recorded at 0 bytes (its
    gradient and input in different memory formats) has none, a convolution its copies."""
    from model_ir.workspaces import CPU_BATCH_NORM_BACKWARD, CPU_TEMPORARY, cpu_kernel_temporaries

    buffers = [Buffer("x", 4096, shape=(2, 8, 8, 8)), Buffer("gx", 4096, shape=(2, 8, 8, 8)),
               Buffer("gw", 32, shape=(8,)), Buffer("y", 4096, shape=(2, 8, 8, 8))]
    ops = [Op("make", outputs=["x"]),
           Op("bnb", inputs=["x"], outputs=["gx", "gw"], target=CPU_BATCH_NORM_BACKWARD, meta={CPU_TEMPORARY: 0}),
           Op("conv", inputs=["gx"], outputs=["y"], target="aten.convolution.default", meta={CPU_TEMPORARY: 2304})]
    assert cpu_kernel_temporaries(Graph(buffers, ops, meta={"device": "cpu"})) == {"conv": 2304}


def test_a_cpu_graph_holds_its_kernels_temporaries_as_workspaces():
    """For model-bench's figures, a CPU graph's kernel temporaries are buffers of their op
    alive during its call (as cuDNN's workspaces on CUDA): the eager peak counts them
    (before, a CPU bench left them out: resnet18 b32's first batch norm backward
    allocates its 98 MiB input gradient twice)."""
    from model_ir import simulate
    from model_ir.workspaces import CPU_TEMPORARY, WORKSPACE_KIND, with_workspaces, without_workspaces

    buffers = [Buffer("x", 4096, persistent=True), Buffer("y", 4096), Buffer("loss", 4, output=True)]
    ops = [Op("conv", inputs=["x"], outputs=["y"], target="aten.convolution.default", meta={CPU_TEMPORARY: 2304}),
           Op("sum", inputs=["y"], outputs=["loss"], target="aten.sum.default")]
    graph = Graph(buffers, ops, meta={"device": "cpu"})
    staged = with_workspaces(graph)
    assert staged.buffer("workspace:conv").size == 2304 and staged.buffer("workspace:conv").kind == WORKSPACE_KIND
    assert simulate(graph).peak_bytes == 4096 + 4096 + 4
    assert simulate(staged).peak_bytes == 4096 + 4096 + 2304  # x, y and the convolution's temporaries
    assert without_workspaces(staged) == graph and with_workspaces(staged) is staged
    assert with_workspaces(Graph(buffers, ops, meta={"device": "cuda"})).buffers == tuple(buffers)


def test_capture_records_the_temporaries_of_layouts():
    import collections

    torch = pytest.importorskip("torch")
    from model_ir.testing.torch_models import channels_last_cnn
    from model_ir.torch import capture
    from model_ir.workspaces import CPU_TEMPORARY

    torch.manual_seed(0)
    model = channels_last_cnn()
    graph = capture(model, torch.randn(2, 3, 8, 8).to(memory_format=torch.channels_last),
                    optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    recorded = collections.defaultdict(list)
    for op in graph.ops:
        if CPU_TEMPORARY in op.meta:
            recorded[op.target].append(op.meta[CPU_TEMPORARY])
    # the first batch norm's gradient comes contiguous: its backward (measured at capture)
    # takes per-thread sums, not a second input gradient; oneDNN's convolutions take
    # scratchpads even with input and weights channels-last (no copy)
    first = [op for op in graph.ops if op.target == "aten.native_batch_norm_backward.default"][-1]
    assert 0 < first.meta[CPU_TEMPORARY] < graph.buffer(first.outputs[0]).size
    assert recorded["aten.convolution.default"] and recorded["aten.convolution_backward.default"]
    assert all(b > 0 for b in recorded["aten.convolution.default"] + recorded["aten.convolution_backward.default"])
