"""Measured memory of the executors (live-storage harness of model_ir.testing.live_memory):

- ``reorder``: the live bytes after every op equal the simulator's timeline of the
  planned order, so the measured peak equals the plan's peak;
- ``arena``: one arena of exactly the planned size; apart from the step's inputs and
  the arena, the only storages any op creates are the counted fallbacks' results
  (left out of the arena by the plan, alive until their last use, as the simulator
  says, or copied into their slots and freed within the op) and the step outputs
  returned to the caller.
"""

from __future__ import annotations

import collections
import gc

import pytest

torch = pytest.importorskip("torch")

from model_ir import simulate  # noqa: E402
from model_ir.testing.live_memory import exact_peak_allocated_during, peak_allocated_during  # noqa: E402
from model_ir.testing.torch_models import TransformerBlock, channels_last_cnn, mlp, small_cnn  # noqa: E402
from model_runtime import make_plan, optimize  # noqa: E402
from model_runtime.lowering import fallback_buffers  # noqa: E402
from model_runtime.measure import measure  # noqa: E402

CASES = {
    "mlp-sgd": (lambda: mlp(32, 3), lambda m: torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9),
                lambda: torch.randn(16, 32)),
    "cnn-adam": (small_cnn, lambda m: torch.optim.Adam(m.parameters(), lr=1e-3), lambda: torch.randn(4, 3, 16, 16)),
    "mlp-adam-foreach": (lambda: mlp(32, 3), lambda m: torch.optim.Adam(m.parameters(), lr=1e-3, foreach=True),
                         lambda: torch.randn(16, 32)),
    "transformer-adamw": (lambda: TransformerBlock(16, 2, dropout=0.1),
                          lambda m: torch.optim.AdamW(m.parameters(), lr=1e-3), lambda: torch.randn(2, 8, 16)),
}


def _setup(case, executor, **kw):
    make_model, make_opt, make_batch = CASES[case]
    torch.manual_seed(0)
    model = make_model()
    opt = make_opt(model)
    step = optimize(model, make_batch(), optimizer=opt, executor=executor, time_limit=0.5, **kw)
    return step, make_batch


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("granularity", [1, 512])
def test_reorder_measured_timeline_equals_plan(case, granularity):
    step, make_batch = _setup(case, "reorder", granularity=granularity)
    m = measure(step, make_batch())
    simulated = simulate(step.plan.graph, step.plan.schedule).timeline
    assert len(m.timeline) == len(simulated) == len(step.plan.graph.ops)
    mismatches = [(t, m.order[t], s, x) for t, (s, x) in enumerate(zip(simulated, m.timeline)) if s != x]
    assert not mismatches, mismatches[:5]
    assert m.peak_bytes == step.plan.figures["peak_bytes"]
    assert m.peak_bytes > step.plan.graph.persistent_bytes  # activations really come and go


def test_reorder_saves_measured_memory_against_program_order():
    """Not only equal to the plan: the planned order measurably lowers the peak."""
    step, make_batch = _setup("mlp-sgd", "reorder", granularity=1)
    figures = step.plan.figures
    assert figures["peak_bytes"] < figures["eager_peak_bytes"]
    assert measure(step, make_batch()).peak_bytes < figures["eager_peak_bytes"]


def assert_arena_allocates_only_counted_fallbacks_and_outputs(step, *inputs, targets=()):
    graph = step.plan.graph
    m = measure(step, *inputs, targets=targets)
    assert m.arena_bytes == step.plan.placement.arena_bytes == step.plan.figures["arena_bytes"]
    assert step.program.arena.untyped_storage().nbytes() == step.plan.placement.arena_bytes
    fallback = {f.op: f.bytes for f in step.fallbacks if not f.copied}
    outputs = {op.id: sum(graph.buffer(b).size for b in op.outputs if graph.buffer(b).output) for op in graph.ops}
    scratch = step.program.scratch  # a slot write's temporaries and copied fallbacks' results, freed within the op
    for op_id, created in m.created.items():
        assert created == fallback.get(op_id, 0) + outputs[op_id] + scratch.get(op_id, 0), op_id
    # Between ops, only the inputs, the arena, the step outputs produced so far and the
    # fallbacks' results still in use are alive.
    # a copied fallback's results are placed, the others' never
    placed = set(step.plan.placement.offsets)
    for f in step.fallbacks:
        results = set(graph.op(f.op).outputs) & fallback_buffers(step.captured, "cpu")
        assert results <= placed if f.copied else not results & placed, f
    unplaced = fallback_buffers(step.captured, "cpu") - placed
    assert sum(f.bytes for f in step.fallbacks if not f.copied) == step.plan.figures["unplaced_bytes"]
    assert sum(f.bytes for f in step.fallbacks if f.copied) == step.plan.figures["fallback_copied_bytes"]
    live = [lt for lt in simulate(graph, step.plan.schedule).lifetimes if lt.id in unplaced]
    base = graph.persistent_bytes + step.plan.placement.arena_bytes
    produced = 0
    for t, op_id in enumerate(m.order):
        produced += outputs[op_id]
        in_use = sum(lt.size for lt in live if lt.start <= t < lt.end)
        assert m.timeline[t] == base + produced + in_use, (t, op_id)
    assert max(sum(lt.size for lt in live if lt.start <= t < lt.end) for t in range(len(m.order))) \
        == step.plan.figures["unplaced_live_peak_bytes"]
    assert step.program.out_ops > len(step.fallbacks)


@pytest.mark.parametrize("case", sorted(CASES))
def test_arena_allocates_only_counted_fallbacks_and_outputs(case):
    step, make_batch = _setup(case, "arena")
    assert_arena_allocates_only_counted_fallbacks_and_outputs(step, make_batch())


@pytest.mark.parametrize("case", ["cnn-adam", "transformer-adamw"])
def test_arena_with_copied_fallbacks_allocates_only_their_temporaries(case):
    """Fallback results copied into the arena live beside it only while their op runs."""
    step, _ = _setup(case, "arena")
    copied = make_plan(step.captured.graph, unplaced=fallback_buffers(step.captured, "cpu"),
                       fallback_results="copied", time_limit=0.5)
    step, make_batch = _setup(case, "arena", plan=copied)
    assert step.plan.figures["fallback_copied_bytes"] > 0 == step.plan.figures["unplaced_bytes"]
    assert max(step.program.scratch.values()) == step.plan.figures["fallback_copy_bytes"]
    assert_arena_allocates_only_counted_fallbacks_and_outputs(step, make_batch())


def test_attention_softmax_and_embeddings_write_into_the_arena():
    """BERT's attention softmax (``_safe_softmax``), its embeddings and their weight
    gradient (``embedding_dense_backward``, vocabulary-sized) are slot writes on CPU:
    they used to be fallbacks, 88% of bert-base's unplaced bytes at batch 2."""
    pytest.importorskip("transformers")
    from model_bench.zoo import build_case

    torch.manual_seed(0)
    case = build_case("bert-tiny", "train", 2, device="cpu")
    step = optimize(case.model, case.inputs, optimizer=case.optimizer, loss_fn=case.loss_fn,
                    targets=(case.target,), time_limit=0.5, executor="arena")
    ops = collections.Counter(str(n.target) for n in step.captured.module.graph.nodes)
    fallbacks = collections.Counter(f.target for f in step.fallbacks)
    assert ops["aten._safe_softmax.default"] > 0 == fallbacks["aten._safe_softmax.default"]
    # word and position embeddings (and their gradients) are slot writes; the token-type
    # ids are an expanded (stride 0) buffer whose flattening would copy: that one stays a
    # counted fallback
    for op in ("aten.embedding.default", "aten.embedding_dense_backward.default"):
        assert ops[op] == 3 and fallbacks[op] == 1, op
    # the softmax's row maxima and mask: one value per row of the (batch, heads, seq, seq) scores
    assert 0 < step.figures()["scratch_peak_bytes"] <= 2 * 512 * 5
    assert_arena_allocates_only_counted_fallbacks_and_outputs(step, *case.inputs, targets=(case.target,))


def test_arena_is_smaller_than_the_caching_allocator_would_reserve():
    step, _ = _setup("cnn-adam", "arena")
    f = step.plan.figures
    assert f["arena_bytes"] <= f["peak_bytes"] - f["persistent_bytes"]
    assert f["arena_bytes"] < f["eager_caching_allocator_bytes"]


def _planning_case(momentum: float):
    torch.manual_seed(0)
    model = mlp(512, 4)
    return model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=momentum), torch.randn(64, 512)


def test_planning_allocates_only_the_arena():
    """optimize() works on fake tensors: the only real memory it takes is the arena it
    keeps (it used to clone every parameter and make zero gradients: 2x the model)."""
    model, opt, x = _planning_case(0.0)
    gc.collect()  # earlier tests' garbage, freed inside the profile, would offset the peak (by 432 bytes once)
    peak, step = peak_allocated_during(lambda: optimize(model, x, optimizer=opt, time_limit=0.5, executor="arena"))
    assert peak <= step.plan.figures["arena_bytes"] + 2**20, (peak, step.plan.figures["arena_bytes"])
    assert peak >= step.plan.figures["arena_bytes"]  # the harness does see the arena


def test_planning_under_a_budget_allocates_only_the_arena():
    """Under a memory budget the capture makes in-place activations functional and keeps
    dropout's masks, all on fake tensors, and the budget is met by rerunning ops: the
    planning still takes no real memory but the arena (AdamW's state exists by then)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(inplace=True), torch.nn.Dropout(0.1),
                                torch.nn.Linear(256, 256), torch.nn.ReLU(inplace=True), torch.nn.Linear(256, 10))
    opt, x = torch.optim.AdamW(model.parameters(), lr=1e-3), torch.randn(1024, 64)  # activations dominate
    plain = optimize(model, x, optimizer=opt, time_limit=1, executor="arena", memory_budget=1 << 62).plan.figures
    budget = plain["lower_bound_bytes"] + (plain["peak_bytes"] - plain["lower_bound_bytes"]) // 2
    del plain
    gc.collect()
    peak, step = peak_allocated_during(lambda: optimize(model, x, optimizer=opt, time_limit=1, executor="arena",
                                                        memory_budget=budget))
    figures = step.plan.figures
    assert figures["fits_budget"] and figures["recomputed_ops"] > 0
    assert peak <= figures["arena_bytes"] + 2**20, (peak, figures["arena_bytes"])
    assert peak >= figures["arena_bytes"]


@pytest.mark.parametrize("optimizer", ["sgd-momentum", "adamw", "nadam", "rmsprop"])
def test_planning_with_optimizer_state_adds_only_the_state(optimizer):
    """The optimizer state a first step creates is the step's own memory, and creating it
    costs nothing more: it is made from a zero-gradient step on a stand-in (it used to
    cost one parameter's gradient, saved copy and update temporaries at a time: four
    times the largest parameter with Adam, 4 MiB here)."""
    torch.manual_seed(0)
    model, x = mlp(1024, 3), torch.randn(64, 1024)
    opt = {"sgd-momentum": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
           "adamw": lambda p: torch.optim.AdamW(p, lr=1e-3), "nadam": lambda p: torch.optim.NAdam(p, lr=1e-3),
           "rmsprop": lambda p: torch.optim.RMSprop(p, lr=1e-3)}[optimizer](model.parameters())
    peak, step = peak_allocated_during(lambda: optimize(model, x, optimizer=opt, time_limit=0.5))
    state = sum(t.untyped_storage().nbytes() for s in opt.state.values() for t in s.values()
                if isinstance(t, torch.Tensor))
    assert state >= sum(p.numel() * p.element_size() for p in model.parameters())  # a buffer per parameter
    assert peak <= step.plan.figures["arena_bytes"] + state + 2**20, (peak, step.plan.figures["arena_bytes"], state)


def test_kernel_mismatches_finds_none_on_cpu_and_reports_a_wrong_capture():
    """The CPU kernels return what the capture recorded; a capture edited to claim
    another shape is reported (the check the H200 runs used to find host tensors)."""
    from model_runtime.measure import kernel_mismatches

    step, make_batch = _setup("cnn-adam", "reorder")
    assert kernel_mismatches(step, make_batch()) == []
    node = next(n for n in step.captured.module.graph.nodes if str(n.target) == "aten.convolution.default")
    real = node.meta["val"]
    node.meta["val"] = real.new_empty((1,) + tuple(real.shape[1:]))
    found = kernel_mismatches(step, make_batch())
    assert [(m["op"], m["index"]) for m in found] == [(node.name, 0)]
    assert found[0]["real"]["shape"] == list(real.shape)


@pytest.mark.parametrize("fallback_results", ["outside", "copied"])
def test_steady_cpu_step_allocates_beyond_the_arena_what_the_plan_says(fallback_results):
    """torch.profiler memory events of a steady step on the CPU, allocation by allocation:
    beyond the arena, the fallbacks' results (left outside, or the copies' temporaries),
    the batch norm backward's second input gradient and oneDNN's convolution buffers, as
    the plan's ``beside_arena_bytes`` says (up to the 64-byte rounding of its buffers;
    before the convolutions were measured at capture, 1582092 bytes measured and 1048768
    planned)."""
    torch.manual_seed(0)
    model = small_cnn()
    x = torch.randn(8, 3, 32, 32)
    step = optimize(model, x, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), time_limit=0.5,
                    executor="arena", fallback_results=fallback_results)
    step(x)
    beyond, _ = exact_peak_allocated_during(lambda: step(x))
    f = step.figures()
    # Not one batch norm input gradient (8 * 8 * 32 * 32 * 4) any more: the convolutions'
    # blocked-layout buffers are larger (measured at capture).
    assert f["library_workspace_bytes"] > 8 * 8 * 32 * 32 * 4
    assert abs(beyond - f["beside_arena_bytes"]) <= 1024, (beyond, f["beside_arena_bytes"])


def _steady_step_memory(step, executor: str, *args, exact: bool = False, **kwargs) -> tuple[int, int]:
    """``(measured, planned)``: what a steady step (the second) allocates beyond what exists
    (torch.profiler memory events: per operator, or allocation by allocation with
    ``exact``), and what the plan says lies beside the arena (``arena``) or is the
    transient memory (``reorder``)."""
    step(*args, **kwargs)
    measure = exact_peak_allocated_during if exact else peak_allocated_during
    measured, _ = measure(lambda: step(*args, **kwargs))
    planned = step.figures()["beside_arena_bytes" if executor == "arena" else "reorder_transient_bytes"]
    if measured == 0 and planned > 0:
        # Once in a CI run (torch 2.15, 40 reruns clean) the profiler recorded no memory event
        # at all; a wrong plan reads 0 again on the next steady step, a lost profile does not.
        measured, _ = measure(lambda: step(*args, **kwargs))
    return measured, planned


class _Downsampling(torch.nn.Module):
    """ConvNeXt's downsampling: a layer norm over the channels of a permuted map, then a
    2x2 stride-2 convolution whose input is channels-last and whose weight is not."""

    def __init__(self):
        super().__init__()
        self.stem, self.norm = torch.nn.Conv2d(3, 16, 4, stride=4), torch.nn.LayerNorm(16)
        self.down, self.head = torch.nn.Conv2d(16, 32, 2, stride=2), torch.nn.Linear(32, 10)

    def forward(self, x):
        y = self.norm(self.stem(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.head(self.down(y).mean((2, 3)))


class _ResidualDownsampling(torch.nn.Module):
    """A ResNet block's downsampling: a strided 3x3 convolution beside a strided 1x1 one."""

    def __init__(self):
        super().__init__()
        self.stem, self.head = torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.Linear(32, 5)
        self.conv, self.shortcut = torch.nn.Conv2d(16, 32, 3, 2, 1), torch.nn.Conv2d(16, 32, 1, 2)

    def forward(self, x):
        h = self.stem(x).relu()
        return self.head((self.conv(h).relu() + self.shortcut(h)).mean((2, 3)))


class _Generator(torch.nn.Module):
    """A DCGAN generator's (or a UNet decoder's) strided transposed convolutions."""

    def __init__(self, channels_last: bool = False):
        super().__init__()
        self.fc, self.channels_last = torch.nn.Linear(8, 16 * 4 * 4), channels_last
        self.up1, self.up2 = torch.nn.ConvTranspose2d(16, 8, 4, 2, 1), torch.nn.ConvTranspose2d(8, 3, 4, 2, 1)

    def forward(self, z):
        h = self.fc(z).view(-1, 16, 4, 4).relu()
        if self.channels_last:
            h = h.contiguous(memory_format=torch.channels_last)
        return self.up2(self.up1(h).relu()).tanh()


@pytest.mark.parametrize("executor", ["arena", "reorder"])
@pytest.mark.parametrize("model", ["convnext-downsampling", "channels-last", "strided", "transposed",
                                   "transposed-channels-last"])
def test_steady_cpu_step_counts_the_kernels_temporaries_of_its_layouts(model, executor):
    """oneDNN's convolutions copy arguments laid out otherwise than they work (the
    downsampling layer's weight, forward and backward; its stem's output gradient), and a
    batch norm backward allocates its input gradient twice only when gradient and input
    share a memory format (not after a channels-last MobileNet's global pooling): the
    steady step's measured allocations beyond the arena are what the plan says (before,
    it missed the copies: 84108 bytes measured, 59584 planned; and counted a batch norm
    temporary that never came: 131468 measured, 196928 planned). A strided NCHW
    convolution's input gradient and a strided transposed convolution's output are copied
    once made (before: 149644 bytes measured beside the arena, 84160 planned; the
    generator 24584, 12416); a channels-last transposed convolution converts its weight's
    gradient. Those were per operator; allocation by allocation, oneDNN's blocked-layout
    buffers and scratchpads come on top, now measured at capture (before: 28 to 46 KiB
    more measured than planned in 8 of these 10 cases)."""
    torch.manual_seed(0)
    if model == "channels-last":
        net, x = channels_last_cnn(32), torch.randn(8, 3, 16, 16).to(memory_format=torch.channels_last)
    elif model == "strided":
        net, x = _ResidualDownsampling(), torch.randn(4, 3, 16, 16)
    elif model.startswith("transposed"):
        net, x = _Generator(channels_last=model.endswith("channels-last")), torch.randn(4, 8)
    else:
        net, x = _Downsampling(), torch.randn(4, 3, 32, 32)
    step = optimize(net, x, optimizer=torch.optim.SGD(net.parameters(), lr=0.1), loss_fn=lambda out: out.sum(),
                    time_limit=0.5, executor=executor)
    beyond, planned = _steady_step_memory(step, executor, x, exact=True)
    assert abs(beyond - planned) <= 1024, (beyond, planned)


def test_a_cpu_step_run_with_other_threads_than_measured_warns():
    """oneDNN sizes its scratchpads by the thread count, which the plan's measured
    temporaries hold for: a step run with another count warns once (its memory may differ)."""
    import warnings

    from model_runtime import MemoryWarning

    torch.manual_seed(0)
    net, x = small_cnn(), torch.randn(4, 3, 16, 16)
    step = optimize(net, x, optimizer=torch.optim.SGD(net.parameters(), lr=0.1), time_limit=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error", MemoryWarning)
        step(x)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)
        with pytest.warns(MemoryWarning, match=f"measured with {threads} threads"):
            step(x)
        with warnings.catch_warnings():
            warnings.simplefilter("error", MemoryWarning)
            step(x)  # once
    finally:
        torch.set_num_threads(threads)


class _Encoder(torch.nn.Module):
    """A transformer encoder layer (``nn.MultiheadAttention``: CPU flash attention)."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.TransformerEncoderLayer(32, 2, 64, dropout=0.0, batch_first=True)
        self.head = torch.nn.Linear(32, 5)

    def forward(self, x):
        return self.head(self.layer(x).mean(1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("executor", ["arena", "reorder"])
def test_steady_cpu_step_counts_flash_attentions_tiles(executor, dtype):
    """CPU flash attention takes per-thread score tiles, and its backward copies the
    output gradient ``nn.MultiheadAttention`` hands it: the steady step's allocations
    beyond the arena, allocation by allocation, are the plan's (before: 114060 bytes
    measured beside the arena by the per-operator view, 83264 planned). In bf16 and fp16
    it packs keys and values, and oneDNN's matrix products convert and reorder their
    operands: measured at capture (before, bf16: 104076 bytes beside the arena, 42304
    planned; fp16 165516 and 42304)."""
    torch.manual_seed(0)
    net, x = _Encoder().to(dtype), torch.randn(4, 40, 32, dtype=dtype)
    step = optimize(net, x, optimizer=torch.optim.SGD(net.parameters(), lr=0.1),
                    loss_fn=lambda out: out.float().logsumexp(1).mean(), time_limit=0.5, executor=executor)
    beyond, planned = _steady_step_memory(step, executor, x, exact=True)
    assert abs(beyond - planned) <= 1024, (beyond, planned)


class _SpectralConv(torch.nn.Module):
    """A Fourier neural operator's layer: rfft2, a product of the lowest modes with
    complex weights, irfft2 (lifted and projected by products, not oneDNN's convolutions)."""

    def __init__(self, channels: int = 8, modes: int = 6):
        super().__init__()
        self.lift, self.modes = torch.nn.Parameter(torch.randn(channels, 1, 1)), modes
        self.weight = torch.nn.Parameter(torch.randn(channels, channels, modes, modes, dtype=torch.cfloat) * 0.1)

    def forward(self, x):
        h, m = x * self.lift, self.modes
        spectrum = torch.fft.rfft2(h)
        out = torch.zeros_like(spectrum)
        out[:, :, :m, :m] = torch.einsum("bixy,ioxy->boxy", spectrum[:, :, :m, :m], self.weight)
        return torch.nn.functional.gelu(h + torch.fft.irfft2(out, s=h.shape[-2:])).mean(1, keepdim=True)


@pytest.mark.skipif(not torch.backends.mkl.is_available(), reason="measured on MKL's FFTs")
@pytest.mark.parametrize("executor", ["arena", "reorder"])
def test_steady_cpu_step_counts_the_ffts_temporaries(executor):
    """MKL's irfft2 takes two temporaries of its input's size while it makes its result,
    and the FFTs' out= overloads compute into a temporary result (they run as
    fallbacks): a Fourier neural operator's steady step allocates beyond the arena,
    allocation by allocation, what the plan says (before, with 1x1 convolutions around
    it, by the per-operator view: 176168 bytes beside the arena, 36992 planned; reorder
    222248, 167936)."""
    torch.manual_seed(0)
    net, x, t = _SpectralConv(), torch.randn(4, 1, 16, 16), torch.randn(4, 1, 16, 16)
    step = optimize(net, x, optimizer=torch.optim.SGD(net.parameters(), lr=0.1),
                    loss_fn=torch.nn.functional.mse_loss, targets=(t,), time_limit=0.5, executor=executor)
    beyond, planned = _steady_step_memory(step, executor, x, targets=(t,), exact=True)
    assert abs(beyond - planned) <= 1024, (beyond, planned)


@pytest.mark.parametrize("executor", ["arena", "reorder"])
def test_steady_cpu_step_counts_the_copies_of_an_expanded_gradient(executor):
    """``out.sum()``'s gradient is expanded (zero strides), which BLAS cannot read: the
    last linear layer's backward matrix products clone it (the arena executor's out=
    products as eager's). Measured allocation by allocation as planned (before: 32780
    bytes beside the arena, 64 planned; the per-operator view misses the clone of a
    functional product, freed in the product's own frame)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 128))
    x = torch.randn(64, 64)
    step = optimize(net, x, optimizer=torch.optim.SGD(net.parameters(), lr=0.1), loss_fn=lambda out: out.sum(),
                    time_limit=0.5, executor=executor)
    beyond, planned = _steady_step_memory(step, executor, x, exact=True)
    assert abs(beyond - planned) <= 1024, (beyond, planned)


class _Body(torch.nn.Module):
    """A linear layer, ``fn`` of its output, a per-row mean and a classifier."""

    def __init__(self, fn, width: int = 64):
        super().__init__()
        self.proj, self.fn, self.head = torch.nn.Linear(64, 64), fn, torch.nn.Linear(width, 3)

    def forward(self, x):
        y = self.fn(self.proj(x))
        return self.head(y.mean(1))


#: Ops whose kernels take temporaries beyond their result (name -> fn, width of its result)
_KERNEL_TEMPORARIES = {
    # bool and integer reductions reduce a copy of their input cast to int64
    "masked-mean": (lambda h: (h * (h.detach() > 0)).sum(1, keepdim=True) / (h.detach() > 0).sum(1, keepdim=True), 64),
    "int32-cumsum": (lambda h: h + (h.detach() > 0).int().cumsum(1), 64),
    # composite kernels that allocate and free inside their call (measured at capture)
    "logsumexp": (lambda h: h.logsumexp(2, keepdim=True) * h, 64),
    "linalg-inv": (lambda h: torch.linalg.inv(h.reshape(-1, 8, 8) + 8 * torch.eye(8)).reshape(h.shape), 64),
    "svdvals": (lambda h: torch.linalg.svdvals(h.reshape(-1, 8, 8)).reshape(h.shape[0], -1, 8), 8),
    "tril-of-an-expanded-gradient": (lambda h: h.reshape(-1, 4, 64, 64).tril().sum((1, 2)).unsqueeze(1), 64),
}


@pytest.mark.parametrize("executor", ["arena", "reorder"])
@pytest.mark.parametrize("case", sorted(_KERNEL_TEMPORARIES))
def test_steady_cpu_step_counts_reductions_casts_and_composite_kernels(case, executor):
    """A bool mask's or int32 ids' sum or cumsum reduces an int64 copy; logsumexp,
    LAPACK's inverse and SVD, and tril of a non-contiguous input allocate inside their
    call: measured allocation by allocation as planned (before, 16x256x64 inputs: the int32
    cumsum 6291456 bytes measured, 5242880 planned; svdvals 4341760 and 3276864; beside
    the arena, 2x to 8000x the plan)."""
    fn, width = _KERNEL_TEMPORARIES[case]
    torch.manual_seed(0)
    net, x, y = _Body(fn, width), torch.randn(8, 256, 64), torch.randint(0, 3, (8,))
    step = optimize(net, x, optimizer=torch.optim.SGD(net.parameters(), lr=0.01),
                    loss_fn=torch.nn.functional.cross_entropy, targets=(y,), time_limit=0.5, executor=executor)
    beyond, planned = _steady_step_memory(step, executor, x, targets=(y,), exact=True)
    assert abs(beyond - planned) <= 1024, (beyond, planned)


_LOSSES = {
    "mse": lambda out, t: torch.nn.functional.mse_loss(out, t),
    "smooth_l1": lambda out, t: torch.nn.functional.smooth_l1_loss(out, t, reduction="sum"),
    "bce": lambda out, t: torch.nn.functional.binary_cross_entropy(out.sigmoid(), t.sigmoid()),
    "soft_margin": lambda out, t: torch.nn.functional.soft_margin_loss(out, t.sign()),
    "huber": lambda out, t: torch.nn.functional.huber_loss(out, t),
    "bce_logits_pos_weight": lambda out, t: torch.nn.functional.binary_cross_entropy_with_logits(
        out, t.sigmoid(), pos_weight=torch.full((32,), 2.0)),
    "vae": lambda out, t: torch.nn.functional.mse_loss(out, t, reduction="sum") + out.exp().sum(),
}


@pytest.mark.parametrize("executor", ["arena", "reorder"])
@pytest.mark.parametrize("loss", sorted(_LOSSES))
def test_steady_cpu_step_counts_what_loss_kernels_hold(loss, executor):
    """ATen's losses hold unreduced losses of their input's size: MSE, smooth L1, BCE and
    soft margin return the reduced loss on a storage of the unreduced one (the step's
    loss holds it; MSE inside a VAE's sum too); MSE, smooth L1, Huber, BCE with logits
    and soft margin's backward take temporaries of that size. Measured beyond the arena,
    allocation by allocation, as planned (before: the MSE step 8204 bytes beside the arena
    where the plan said 64, reorder 1.5x; then calibrated on the per-operator view, which
    nets out MSE's temporary and counts BCE with logits' twice)."""
    torch.manual_seed(0)
    net, x, t = torch.nn.Linear(32, 32), torch.randn(64, 32), torch.randn(64, 32)
    step = optimize(net, x, optimizer=torch.optim.SGD(net.parameters(), lr=0.1), loss_fn=_LOSSES[loss],
                    targets=(t,), time_limit=0.5, executor=executor)
    beyond, planned = _steady_step_memory(step, executor, x, targets=(t,), exact=True)
    assert abs(beyond - planned) <= 256, (beyond, planned)


class _Upsampling(torch.nn.Module):
    """A decoder's upsampling (UNet, FPN), scaled per channel rather than convolved (the
    exact measurement would see oneDNN's unmodelled buffers), optionally concatenated
    with a skip connection and split again (the backward then gets a channel slice)."""

    def __init__(self, mode: str, concatenated: bool = False):
        super().__init__()
        self.mode, self.concatenated = mode, concatenated
        self.scale = torch.nn.Parameter(torch.randn(1, 16, 1, 1))

    def forward(self, x):
        up = torch.nn.functional.interpolate((x * self.scale).relu(), scale_factor=2, mode=self.mode)
        if self.concatenated:
            return torch.cat([up, up.detach().flip(1)], 1)[:, :20]
        return up


@pytest.mark.parametrize("executor", ["arena", "reorder"])
@pytest.mark.parametrize("layout", ["contiguous", "channels-last", "concatenated", "concatenated-channels-last"])
@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_steady_cpu_step_counts_the_upsampling_copies(mode, layout, executor):
    """CPU 2-D upsampling of an input that is not channels-last takes temporaries of its
    input's and output's size, and its out= overload computes into a temporary before
    copying into the slot: the arena executor runs it as a fallback. Its backward copies
    a gradient that is a channel slice (a concatenation's), and computes a channels-last
    one's result in a temporary. Measured allocation by allocation as planned (before: a
    steady bilinear arena step 59468 bytes beside the arena where the plan said 43136;
    then the output-sized temporary was netted out by the per-operator view: 589832
    measured, 327680 planned)."""
    torch.manual_seed(0)
    net, x = _Upsampling(mode, concatenated=layout.startswith("concatenated")), torch.randn(4, 16, 16, 16)
    if layout.endswith("channels-last"):
        net, x = net.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)
    # A dense output gradient (a sum's is expanded, which the backward copies: not modelled).
    step = optimize(net, x, optimizer=torch.optim.SGD(net.parameters(), lr=0.1),
                    loss_fn=lambda out: (out * out).mean(), time_limit=0.5, executor=executor)
    beyond, planned = _steady_step_memory(step, executor, x, exact=True)
    assert abs(beyond - planned) <= 256, (beyond, planned)


class _SegmentationHead(torch.nn.Module):
    """Segformer's pattern: a convolution's map flattened and transposed into a layer
    norm (not contiguous), a channels-last map upsampled to the labels' size, and a 2-D
    cross-entropy over channels (softmax of an input that is not contiguous)."""

    def __init__(self):
        super().__init__()
        self.embed, self.norm = torch.nn.Conv2d(3, 32, 4, stride=4), torch.nn.LayerNorm(32)
        self.classify = torch.nn.Linear(32, 4)

    def forward(self, x):
        h = self.embed(x)
        n, c, height, width = h.shape
        tokens = self.norm(h.flatten(2).transpose(1, 2))
        logits = self.classify(tokens).transpose(1, 2).reshape(n, 4, height, width)  # channels-last strides
        return torch.nn.functional.interpolate(logits, size=x.shape[-2:], mode="bilinear")


@pytest.mark.parametrize("executor", ["arena", "reorder"])
def test_steady_cpu_step_counts_layer_norm_and_softmax_copies(executor):
    """CPU layer norm copies an input and an output gradient that are not contiguous;
    softmax's and upsampling's backward out= kernels take temporaries their functional
    kernels do not, so the arena executor runs those as fallbacks (before: the arena
    step measured 2x the plan beside the arena; Segformer 1.8x)."""
    torch.manual_seed(0)
    net, x, labels = _SegmentationHead(), torch.randn(2, 3, 32, 32), torch.randint(0, 4, (2, 32, 32))
    step = optimize(net, x, optimizer=torch.optim.SGD(net.parameters(), lr=0.1),
                    loss_fn=torch.nn.functional.cross_entropy, targets=(labels,), time_limit=0.5, executor=executor)
    beyond, planned = _steady_step_memory(step, executor, x, targets=(labels,), exact=True)
    assert abs(beyond - planned) <= 1024, (beyond, planned)


class _RelativeBias(torch.nn.Module):
    """T5's relative-position bias: an embedding looked up by a transposed index map, its
    result permuted to (heads, query, key); its output gradient comes permuted."""

    def __init__(self, heads: int = 8, length: int = 64):
        super().__init__()
        self.proj, self.bias = torch.nn.Linear(length, length), torch.nn.Embedding(2 * length, heads)
        self.register_buffer("position", torch.arange(length)[None, :] - torch.arange(length)[:, None] + length)

    def forward(self, scores):
        return (self.proj(scores) + self.bias(self.position.t()).permute(2, 0, 1)).softmax(-1)


@pytest.mark.parametrize("executor", ["arena", "reorder"])
def test_steady_cpu_step_counts_the_copies_of_strided_arguments(executor):
    """CPU ``embedding`` and ``embedding_dense_backward`` make strided indices and a
    strided output gradient contiguous (the arena's rewrites refuse those, so ATen's
    kernels run: T5's arena step measured 2860 bytes beside the arena, 576 planned), a
    transposed matrix's copy takes a tile, and the softmax backward copies the expanded
    gradient of ``out.sum()``. Before: 262156 bytes measured beside the arena, 131072
    planned; ``reorder`` 786448, 655360."""
    torch.manual_seed(0)
    net, x = _RelativeBias(), torch.randn(2, 8, 64, 64)
    step = optimize(net, x, optimizer=torch.optim.SGD(net.parameters(), lr=0.1), loss_fn=lambda out: out.sum(),
                    time_limit=0.5, executor=executor)
    beyond, planned = _steady_step_memory(step, executor, x, exact=True)
    assert abs(beyond - planned) <= 1024, (beyond, planned)


class _PaddedAttention(torch.nn.Module):
    """Attention over padded keys through SDPA's math path (``_safe_softmax``, as BERT
    with a padding mask on the CPU)."""

    def __init__(self, dim: int = 32):
        super().__init__()
        self.qkv, self.out = torch.nn.Linear(dim, 3 * dim), torch.nn.Linear(dim, dim)

    def forward(self, x, keep):
        q, k, v = self.qkv(x).unflatten(-1, (3, 4, -1)).permute(2, 0, 3, 1, 4)
        with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
            y = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=keep[:, None, None, :])
        return self.out(y.transpose(1, 2).flatten(2))


@pytest.mark.parametrize("executor", ["arena", "reorder"])
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_steady_cpu_step_counts_safe_softmaxs_masks_as_each_executor_runs_it(train, executor):
    """ATen's ``_safe_softmax`` masks every element equal to -inf (a bool per score) and
    then the rows (measured at capture; ``reorder`` runs it); the arena executor's
    rewrite takes only the row maxima and their mask (the plan counts those instead).
    Before: ``reorder`` in eval 9572356 bytes measured, 8523776 planned; with the
    kernel's mask counted for the arena too, the arena in train 393228 measured,
    1052676 planned."""
    torch.manual_seed(0)
    net, x = _PaddedAttention().train(train), torch.randn(4, 256, 32)
    keep = torch.ones(4, 256, dtype=torch.bool)
    keep[:, 200:] = False
    opt = torch.optim.SGD(net.parameters(), lr=0.1) if train else None
    step = optimize(net, (x, keep), optimizer=opt, loss_fn=(lambda out: out.square().mean()) if train else None,
                    time_limit=0.5, executor=executor)
    assert any(op.target == "aten._safe_softmax.default" for op in step.plan.graph.ops)
    beyond, planned = _steady_step_memory(step, executor, x, keep, exact=True)
    assert abs(beyond - planned) <= 1024, (beyond, planned)


class _TransposedScores(torch.nn.Module):
    """Attention's softmax of transposed scores (``_safe_softmax`` of a strided input)."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(32, 32)

    def forward(self, x):
        scores = self.proj(x) @ x.transpose(1, 2)
        return torch.ops.aten._safe_softmax(scores.transpose(1, 2), -1) @ x


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_steady_cpu_step_counts_the_softmax_copy_of_strided_scores_in_the_arena(train):
    """The arena executor's ``_safe_softmax`` rewrite runs ``_softmax.out``, whose CPU
    kernel copies a strided input contiguous first: the plan counts that copy (now 32768
    bytes measured beside the arena, 33408 planned: the row maxima are counted beside the
    copy, which is freed before them). Before: 32768 measured, 640 planned in eval."""
    torch.manual_seed(0)
    net, x = _TransposedScores().train(train), torch.randn(2, 64, 32)
    opt = torch.optim.SGD(net.parameters(), lr=0.1) if train else None
    step = optimize(net, x, optimizer=opt, loss_fn=(lambda out: out.sum()) if train else None, time_limit=0.5,
                    executor="arena")
    assert all(f.target != "aten._safe_softmax.default" for f in step.fallbacks)  # rewritten
    beyond, planned = _steady_step_memory(step, "arena", x, exact=True)
    assert abs(beyond - planned) <= 1024, (beyond, planned)


class _SpatialTransformer(torch.nn.Module):
    """A spatial transformer: a predicted affine grid (``affine_grid``) samples the input
    at twice its resolution."""

    def __init__(self):
        super().__init__()
        self.loc, self.conv = torch.nn.Linear(1, 6), torch.nn.Conv2d(1, 1, 3, stride=2)

    def forward(self, x):
        theta = self.loc(x.mean((2, 3))).view(-1, 2, 3)
        n, c, h, w = x.shape
        grid = torch.nn.functional.affine_grid(theta, [n, c, 2 * h, 2 * w], align_corners=False)
        return self.conv(torch.nn.functional.grid_sample(x, grid, align_corners=False))


@pytest.mark.parametrize("executor", ["arena", "reorder"])
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_steady_cpu_step_counts_affine_grids_base_grid(train, executor):
    """``affine_grid_generator`` builds a base grid of homogeneous coordinates, 1.5 times
    its result, in its kernel: the plan counts it (its backward is traced as ops).
    Before: the arena's eval step 2621440 bytes measured beside the arena, 2159168
    planned (the other three peak elsewhere)."""
    torch.manual_seed(0)
    net, x = _SpatialTransformer().train(train), torch.randn(8, 1, 64, 64)
    opt = torch.optim.SGD(net.parameters(), lr=0.1) if train else None
    step = optimize(net, x, optimizer=opt, loss_fn=(lambda out: out.sum()) if train else None, time_limit=0.5,
                    executor=executor)
    beyond, planned = _steady_step_memory(step, executor, x, exact=True)
    assert abs(beyond - planned) <= 1024, (beyond, planned)


class _TransposedGelu(torch.nn.Module):
    """Whisper's stem: GELU, then a transpose, so that its output gradient comes laid out
    otherwise than its input."""

    def __init__(self):
        super().__init__()
        self.proj, self.head = torch.nn.Linear(32, 256), torch.nn.Linear(128, 4)

    def forward(self, x):
        return self.head(torch.nn.functional.gelu(self.proj(x)).transpose(1, 2))


@pytest.mark.parametrize("executor", ["arena", "reorder"])
def test_steady_cpu_step_counts_gelu_backwards_copies(executor):
    """CPU GELU's backward of a gradient laid out otherwise than its input takes two
    temporaries of its size, measured at capture (before: the arena step 2097164 bytes
    measured beside it, 32832 planned; ``reorder`` 5242892, 3145792)."""
    torch.manual_seed(0)
    net, x = _TransposedGelu(), torch.randn(8, 128, 32)
    step = optimize(net, x, optimizer=torch.optim.SGD(net.parameters(), lr=0.1), loss_fn=lambda out: out.sum(),
                    time_limit=0.5, executor=executor)
    beyond, planned = _steady_step_memory(step, executor, x, exact=True)
    assert abs(beyond - planned) <= 1024, (beyond, planned)


class _Recurrent(torch.nn.Module):
    """Two LSTM layers (CPU: oneDNN's ``mkldnn_rnn_layer``) on embeddings."""

    def __init__(self):
        super().__init__()
        self.embed, self.lstm = torch.nn.Embedding(50, 16), torch.nn.LSTM(16, 32, num_layers=2, batch_first=True)
        self.head = torch.nn.Linear(32, 5)

    def forward(self, x):
        return self.head(self.lstm(self.embed(x))[0][:, -1])


@pytest.mark.parametrize("executor", ["arena", "reorder"])
def test_steady_cpu_step_counts_onednn_lstm_layers_temporaries(executor):
    """oneDNN's LSTM layers take their weights in its own layout and a scratchpad beside
    their results, forward and backward, measured at capture (before: a steady step
    allocated 1.3x the plan, allocation by allocation)."""
    torch.manual_seed(0)
    net, x = _Recurrent(), torch.randint(0, 50, (4, 10))
    step = optimize(net, x, optimizer=torch.optim.SGD(net.parameters(), lr=0.1), loss_fn=lambda out: out.sum(),
                    time_limit=0.5, executor=executor)
    if not any(op.target == "aten.mkldnn_rnn_layer.default" for op in step.plan.graph.ops):
        pytest.skip("this torch build runs CPU LSTMs without oneDNN")
    beyond, planned = _steady_step_memory(step, executor, x, exact=True)
    # within the 64-byte rounding of the plan's buffers; the arena's slots are one storage,
    # in which oneDNN's backward copies cx (492 bytes above the plan before it was counted)
    assert 0 <= planned - beyond <= 64, (beyond, planned)


def test_onednn_lstm_layers_bias_gradients_are_two_storages():
    """oneDNN's LSTM backward (CPU) returns ``bias_ih``'s and ``bias_hh``'s gradients in
    two storages where its meta kernel returns one tensor twice: captured as one, eager's
    gradient accumulation copied the other and the real kernel's second one was outside
    the plan (512 bytes per layer measured above the simulated timeline). Only on a miss
    of FakeTensorMode's cache: a hit makes each result anew."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    FakeTensorMode.cache_clear()
    torch.manual_seed(0)
    net, x = _Recurrent(), torch.randint(0, 50, (4, 10))
    step = optimize(net, x, optimizer=torch.optim.AdamW(net.parameters(), lr=1e-3), loss_fn=lambda out: out.sum(),
                    time_limit=0.5, executor="reorder", granularity=1)
    graph = step.plan.graph
    targets = [op.target for op in graph.ops]
    if "aten.mkldnn_rnn_layer_backward.default" not in targets:
        pytest.skip("this torch build runs CPU LSTMs without oneDNN")
    assert "aten.new_empty_strided.default" not in targets  # no copy eager does not make
    grads = {b.meta["grad_of"]: b.id for b in graph.buffers if b.meta.get("grad_of")}
    assert grads["lstm.bias_ih_l1"] != grads["lstm.bias_hh_l1"]
    m = measure(step, x)
    assert list(m.timeline) == list(simulate(graph, step.plan.schedule).timeline)


class _ShiftedWindows(torch.nn.Module):
    """Swin's shifted windows: ``roll`` over two dimensions."""

    def __init__(self):
        super().__init__()
        self.embed, self.head = torch.nn.Linear(3, 64), torch.nn.Linear(64, 4)

    def forward(self, x):
        return self.head(torch.roll(self.embed(x.permute(0, 2, 3, 1)), (2, 2), (1, 2)))


@pytest.mark.parametrize("executor", ["arena", "reorder"])
def test_steady_cpu_step_counts_the_temporary_of_a_roll(executor):
    """``roll`` over two dimensions rolls one, then the other, into a temporary the size
    of its input: measured at capture (before: 524288 bytes measured beside the arena,
    262144 planned; ``reorder`` 786432, 524288)."""
    torch.manual_seed(0)
    net, x = _ShiftedWindows().eval(), torch.randn(4, 3, 16, 16)
    step = optimize(net, x, time_limit=0.5, executor=executor)
    beyond, planned = _steady_step_memory(step, executor, x, exact=True)
    assert abs(beyond - planned) <= 256, (beyond, planned)


class _Bags(torch.nn.Module):
    """A recommender's pooled embeddings: ``EmbeddingBag`` then a linear head."""

    def __init__(self, mode: str):
        super().__init__()
        self.bag, self.head = torch.nn.EmbeddingBag(100, 16, mode=mode), torch.nn.Linear(16, 3)

    def forward(self, x):
        return self.head(self.bag(x))


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
@pytest.mark.parametrize("executor", ["arena", "reorder"])
def test_steady_cpu_step_counts_embedding_bags_temporaries(mode, executor):
    """CPU ``EmbeddingBag``'s backward sorts the indices beside index-sized buffers (max
    mode: gathers the non-empty bags, which the probe's zeros would leave out), and its
    forward takes per-bag scratch: measured at capture (before: the arena step of ``mean``
    measured 7404 bytes beside the arena, 6464 planned; ``max`` 9428, 7872 with zeros)."""
    torch.manual_seed(0)
    net, x = _Bags(mode), torch.randint(0, 100, (8, 5))
    step = optimize(net, x, optimizer=torch.optim.SGD(net.parameters(), lr=0.1), loss_fn=lambda out: out.sum(),
                    time_limit=0.5, executor=executor)
    beyond, planned = _steady_step_memory(step, executor, x, exact=True)
    assert 0 <= planned - beyond <= 128, (beyond, planned)


class _Spectrogram(torch.nn.Module):
    """An STFT's magnitude (``abs`` of a complex tensor) into a linear head."""

    def __init__(self):
        super().__init__()
        self.head = torch.nn.Linear(81, 3)
        self.register_buffer("window", torch.hann_window(16))

    def forward(self, x):
        return self.head(torch.stft(x, 16, 8, window=self.window, return_complex=True).abs().flatten(1)[:, :81])


@pytest.mark.parametrize("executor", ["arena", "reorder"])
def test_steady_cpu_step_counts_complex_abs_temporary(executor):
    """``abs`` of a complex tensor computes complex to complex into a temporary of its
    input's size, then copies the real part (before: the arena step measured 5192 bytes
    beside the arena, 2624 planned; ``reorder`` 6488, 4928)."""
    torch.manual_seed(0)
    net, x = _Spectrogram(), torch.randn(4, 64)
    step = optimize(net, x, optimizer=torch.optim.SGD(net.parameters(), lr=0.1), loss_fn=lambda out: out.sum(),
                    time_limit=0.5, executor=executor)
    beyond, planned = _steady_step_memory(step, executor, x, exact=True)
    assert 0 <= planned - beyond <= 128, (beyond, planned)


@pytest.mark.parametrize("executor", ["arena", "reorder"])
def test_steady_cpu_step_counts_bilinear_layers_temporaries(executor):
    """``nn.Bilinear``'s weight gradient (``_trilinear``) runs one matrix product per
    output feature into a temporary: measured at capture (before: the arena step measured
    2988 bytes beside the arena, 2368 planned; ``reorder`` 2992, 2432)."""
    torch.manual_seed(0)
    net, x = torch.nn.Bilinear(12, 12, 4), torch.randn(2, 12)
    step = optimize(net, (x, x.flip(0)), optimizer=torch.optim.SGD(net.parameters(), lr=0.1),
                    loss_fn=lambda out: out.sum(), time_limit=0.5, executor=executor)
    beyond, planned = _steady_step_memory(step, executor, x, x.flip(0), exact=True)
    assert 0 <= planned - beyond <= 128, (beyond, planned)


@pytest.mark.parametrize("executor", ["arena", "reorder"])
def test_steady_cpu_step_counts_matrix_exponential_temporaries(executor):
    """An orthogonal parametrization's ``matrix_exp`` (forward, and backward on a 2n x 2n
    block matrix) takes up to 12 matrices of its result's size, by its input's norm: the
    plan counts the most (before: the arena step measured 40976 bytes beside the arena,
    4160 planned)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.utils.parametrizations.orthogonal(torch.nn.Linear(16, 16)),
                              torch.nn.Linear(16, 3))
    x = torch.randn(4, 16)
    step = optimize(net, x, optimizer=torch.optim.SGD(net.parameters(), lr=0.1), loss_fn=lambda out: out.sum(),
                    time_limit=0.5, executor=executor)
    beyond, planned = _steady_step_memory(step, executor, x, exact=True)
    assert beyond <= planned <= beyond + 16 * 1024, (beyond, planned)  # 16x16 matrices: 1 KiB


class _MaskedUnits(torch.nn.Module):
    """A float activation times its bool mask (a custom ``autograd.Function``'s saved mask
    in backward), and a float64 bias added to it."""

    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Linear(16, 32), torch.nn.Linear(32, 4)
        self.register_buffer("shift", torch.zeros(32, dtype=torch.float64))

    def forward(self, x):
        h = self.a(x)
        return self.b((h * (h > 0) + self.shift).float())


@pytest.mark.parametrize("executor", ["arena", "reorder"])
def test_steady_cpu_step_counts_the_copies_of_promoted_operands(executor):
    """CPU elementwise kernels copy an operand of another dtype than the common one
    into it first (before: the arena step of a float times its bool mask measured 1028
    bytes beside the arena, 128 planned)."""
    torch.manual_seed(0)
    net, x = _MaskedUnits(), torch.randn(8, 16)
    step = optimize(net, x, optimizer=torch.optim.SGD(net.parameters(), lr=0.1), loss_fn=lambda out: out.sum(),
                    time_limit=0.5, executor=executor)
    beyond, planned = _steady_step_memory(step, executor, x, exact=True)
    assert beyond <= planned <= beyond + 512, (beyond, planned)


def test_hyper_parameters_are_persistent_not_allocated_by_each_call():
    """The optimizer's float hyper-parameters are inputs the plan counts as persistent:
    each call fills the same tensors in place (before: AdamW's five, 40 bytes, were
    allocated by every call, beside the arena and outside the plan)."""
    torch.manual_seed(0)
    net, x = mlp(16, 3), torch.randn(8, 16)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    schedule = torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5)
    step = optimize(net, x, optimizer=opt, loss_fn=lambda out: out.sum(), time_limit=0.5, executor="arena",
                    granularity=1)
    step(x)
    schedule.step()  # a new learning rate: filled into the same tensor
    beyond, planned = _steady_step_memory(step, "arena", x, exact=True)
    assert beyond == planned, (beyond, planned)


class _CheckpointedDropout(torch.nn.Module):
    """Dropout in checkpointed blocks: each replays its draws in the backward."""

    def __init__(self):
        super().__init__()
        self.blocks = torch.nn.ModuleList(
            torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.Dropout(0.1)) for _ in range(4))

    def forward(self, x):
        for block in self.blocks:
            x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
        return x


@pytest.mark.parametrize("executor", ["arena", "reorder"])
def test_steady_cpu_step_counts_the_generator_states_of_replayed_dropout(executor):
    """A replayed dropout keeps the CPU generator's state (5 KiB) from its first run to
    its replay, and swaps another in while the replay runs: the plan counts them (before:
    the arena step measured 25292 bytes beside the arena where the plan said 64)."""
    torch.manual_seed(0)
    net, x = _CheckpointedDropout(), torch.randn(2, 16)
    step = optimize(net, x, optimizer=torch.optim.SGD(net.parameters(), lr=0.1), loss_fn=lambda out: out.sum(),
                    time_limit=0.5, executor=executor)
    beyond, planned = _steady_step_memory(step, executor, x)
    assert beyond > 4 * 5000 and abs(beyond - planned) <= 256, (beyond, planned)


class _Wide(torch.nn.Module):
    """A wide activation read twice: backward sums its two gradients, in place in eager."""

    def __init__(self):
        super().__init__()
        self.up = torch.nn.Linear(16, 2048)
        self.register_buffer("s1", torch.randn(2048))
        self.register_buffer("s2", torch.randn(2048))

    def forward(self, x):
        h = self.up(x)
        return (h * self.s1).sum() + (h * self.s2).sum()


def test_program_executor_sums_gradients_in_place_as_eager():
    """The ``program`` executor (eager's order and frees) sums the gradients eager sums in
    place into the first one: measured op by op it is eager's simulation, a gradient
    below the same order with the sum out of place (which a plan may choose), and its
    step is bitwise eager's."""
    import copy

    from model_ir.simulator import EAGER_IN_PLACE, without_held_gradients
    from model_ir.testing.torch_models import eager_step

    torch.manual_seed(0)
    model, x = _Wide(), torch.randn(64, 16)
    ref = copy.deepcopy(model)
    opt, ref_opt = (torch.optim.SGD(m.parameters(), lr=0.1) for m in (model, ref))
    step = optimize(model, x, optimizer=opt, executor="program", granularity=1)
    graph = step.plan.graph
    assert sum(EAGER_IN_PLACE in op.meta for op in graph.ops) == 1
    assert torch.equal(step(x), eager_step(ref, ref_opt, (x,)))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), ref.state_dict().values()))
    eager = simulate(without_held_gradients(graph), eager=True).timeline  # no .grad held: it sets none
    assert list(measure(step, x).timeline) == list(eager)
    assert simulate(graph).peak_bytes - max(eager) >= 64 * 2048 * 4 - 16
