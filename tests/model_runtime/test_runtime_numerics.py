"""Three optimized steps give bitwise the same losses, parameters, model buffers and
optimizer state as three eager steps (CPU, same seeds), for both executors."""

from __future__ import annotations

import copy
import warnings

import pytest

torch = pytest.importorskip("torch")

from model_ir.testing.torch_models import (  # noqa: E402
    assert_same_state,
    TransformerBlock, channels_last_cnn, eager_step, mlp, random_topological_order, small_cnn,
)
from model_ir import Plan, Schedule, simulate  # noqa: E402
from model_ir.errors import ModelOptError  # noqa: E402
from model_runtime import make_plan, optimize  # noqa: E402
from model_runtime.lowering import fallback_buffers  # noqa: E402
from model_runtime.executors import build_arena  # noqa: E402
from model_runtime.planning import arena_lifetimes, budget_graph  # noqa: E402
from model_place import place  # noqa: E402

EXECUTORS = ("reorder", "arena")


def compare(make_model, make_opt, make_batch, executor, *, steps=3, loss_fn=None, make_targets=None,
            time_limit=1.0, fallback_results=None):
    """``fallback_results``: the arena's plan is made with it (see model_runtime.make_plan)."""
    torch.manual_seed(0)
    model = make_model()
    ref = copy.deepcopy(model)
    opt, ref_opt = make_opt(model), make_opt(ref)
    targets = make_targets() if make_targets else ()
    step = optimize(model, make_batch(), optimizer=opt, loss_fn=loss_fn, targets=targets, executor=executor,
                    time_limit=time_limit)
    if fallback_results is not None:
        plan = make_plan(step.captured.graph, unplaced=fallback_buffers(step.captured, "cpu"),
                         fallback_results=fallback_results, time_limit=time_limit)
        step = optimize(model, make_batch(), optimizer=opt, loss_fn=loss_fn, targets=targets, executor=executor,
                        plan=plan)
    before = [p.detach().clone() for p in model.parameters()]
    losses = []
    for i in range(steps):
        batch = make_batch()
        targets = make_targets() if make_targets else ()
        torch.manual_seed(100 + i)
        expected = eager_step(ref, ref_opt, batch, loss_fn, targets)
        torch.manual_seed(100 + i)
        loss = step(batch, targets=targets)
        assert torch.equal(loss, expected), (executor, i, loss, expected)
        assert_same_state(model, opt, ref, ref_opt)
        losses.append(float(loss))
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters())), "the step changed nothing"
    assert len(set(losses)) > 1, "the losses did not move: the comparison would be vacuous"
    return step


@pytest.mark.parametrize("executor", EXECUTORS)
def test_mlp_sgd_momentum(executor):
    compare(lambda: mlp(32, 3), lambda m: torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9),
            lambda: torch.randn(16, 32), executor)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_cnn_batchnorm_adam(executor):
    step = compare(small_cnn, lambda m: torch.optim.Adam(m.parameters(), lr=1e-2), lambda: torch.randn(4, 3, 16, 16),
                   executor, loss_fn=torch.nn.functional.cross_entropy,
                   make_targets=lambda: (torch.randint(0, 10, (4,)),))
    if executor == "arena":
        # Batch-norm running statistics are model buffers updated in place by the step.
        assert step.program.out_ops > 0


@pytest.mark.parametrize("executor", EXECUTORS)
def test_channels_last_cnn_with_1x1_maps(executor):
    # Its (N, C, 1, 1) tensors have strides eager's kernels choose (model_ir.torch.eager_strides):
    # with the traced ones the arena's convolution backward summed channels-last (last bits off).
    compare(channels_last_cnn, lambda m: torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9),
            lambda: torch.randn(4, 3, 8, 8).to(memory_format=torch.channels_last), executor,
            loss_fn=torch.nn.functional.cross_entropy, make_targets=lambda: (torch.randint(0, 10, (4,)),))


@pytest.mark.parametrize("model", ["cnn", "transformer"])
def test_copied_fallbacks(model):
    """Fallback results copied into their arena slots byte for byte: the same step.
    (The CNN's convolutions, batch norm backward; the transformer's layer norms.)"""
    if model == "cnn":
        step = compare(small_cnn, lambda m: torch.optim.Adam(m.parameters(), lr=1e-2),
                       lambda: torch.randn(4, 3, 16, 16), "arena", loss_fn=torch.nn.functional.cross_entropy,
                       make_targets=lambda: (torch.randint(0, 10, (4,)),), fallback_results="copied")
    else:
        step = compare(lambda: TransformerBlock(16, 2, dropout=0.2),
                       lambda m: torch.optim.AdamW(m.parameters(), lr=1e-2, weight_decay=0.1),
                       lambda: torch.randn(2, 6, 16), "arena", fallback_results="copied")
    assert step.plan.figures["fallback_copied_bytes"] > 0
    assert step.fallbacks and all(f.copied for f in step.fallbacks)
    assert step.figures()["scratch_peak_bytes"] == step.plan.figures["fallback_copy_bytes"] > 0


@pytest.mark.parametrize("executor", EXECUTORS)
def test_transformer_block_dropout_adamw(executor):
    step = compare(lambda: TransformerBlock(16, 2, dropout=0.2),
                   lambda m: torch.optim.AdamW(m.parameters(), lr=1e-2, weight_decay=0.1),
                   lambda: torch.randn(2, 6, 16), executor)
    assert any("bernoulli" in (op.target or "") or "dropout" in (op.target or "") for op in step.plan.graph.ops)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_foreach_adam_list_outputs(executor):
    """foreach optimizers (the default on CUDA) return lists of fresh tensors."""
    step = compare(lambda: mlp(16, 3), lambda m: torch.optim.Adam(m.parameters(), lr=1e-2, foreach=True),
                   lambda: torch.randn(8, 16), executor)
    assert any((op.target or "").startswith("aten._foreach") for op in step.plan.graph.ops)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_torchvision_squeezenet_small(executor):
    """A torchvision model with dropout in its classifier (p=0.5), at a small input size."""
    torchvision = pytest.importorskip("torchvision")
    compare(lambda: torchvision.models.squeezenet1_1(num_classes=10),
            lambda m: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9), lambda: torch.randn(2, 3, 32, 32),
            executor, loss_fn=torch.nn.functional.cross_entropy, make_targets=lambda: (torch.randint(0, 10, (2,)),))


class _AsStrided(torch.nn.Module):
    """Reads the second half of a fresh tensor through ``as_strided`` with an explicit
    storage offset (backward makes another one: a ``new_zeros`` written through it),
    as autograd's view replay does in ConvNeXt's and Swin's classifiers."""

    def __init__(self):
        super().__init__()
        self.a, self.c, self.b = torch.nn.Linear(8, 32), torch.nn.Linear(8, 16), torch.nn.Linear(16, 3)

    def forward(self, x):
        gate = torch.tanh(self.c(x))
        h = self.a(x)
        return self.b(torch.as_strided(h, (x.shape[0], 16), (32, 1), 16) * gate)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_as_strided_offsets_count_from_the_buffer(executor):
    """An ``as_strided`` offset is absolute in its input's storage: in the arena that
    storage is the arena, so it used to read (and backward to write) the arena's first
    bytes instead of the buffer's, whatever lived there (ConvNeXt's stochastic-depth
    mask: wrong gradients)."""
    step = compare(_AsStrided, lambda m: torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9), lambda: torch.randn(4, 8),
                   executor, loss_fn=torch.nn.functional.cross_entropy,
                   make_targets=lambda: (torch.randint(0, 3, (4,)),))
    if executor == "arena":
        bases = {n.args[0].name for n in step.captured.module.graph.nodes
                 if n.target is torch.ops.aten.as_strided.default}
        offsets = step.plan.placement.offsets
        assert any(offsets.get(b, 0) > 0 for b in bases), "every as_strided base at offset 0: the test is vacuous"


class _QR(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Linear(16, 16), torch.nn.Linear(16, 3)

    def forward(self, x):
        return self.b(torch.linalg.qr(self.a(x).reshape(-1, 4, 4))[0].flatten(1))


@pytest.mark.parametrize("executor", EXECUTORS)
def test_qr_in_the_arena(executor):
    """``linalg_qr.out`` with Q and R in one storage (arena slots) left R unwritten: the
    arena step's loss was NaN from its second step (lowering.BROKEN_OUT)."""
    compare(_QR, lambda m: torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9), lambda: torch.randn(4, 16), executor,
            loss_fn=torch.nn.functional.cross_entropy, make_targets=lambda: (torch.randint(0, 3, (4,)),))


class _Symmetric(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(16, 16)

    def forward(self, x):
        h = self.a(x)
        return h + h.T


@pytest.mark.parametrize("executor", [*EXECUTORS, "program"])
def test_a_gradient_summed_with_its_own_transpose(executor):
    """``h + h.T``: h's gradients are g and a view of g, summed out of place by eager;
    marked in place, the program executor ran ``g.add_(g.T)`` and raised."""
    compare(_Symmetric, lambda m: torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9),
            lambda: torch.randn(16, 16), executor, loss_fn=torch.nn.functional.cross_entropy,
            make_targets=lambda: (torch.randint(0, 16, (16,)),))


class _LSTMClassifier(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = torch.nn.LSTM(8, 16, num_layers=2, batch_first=True)
        self.head = torch.nn.Linear(16, 3)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.head(out[:, -1])


@pytest.mark.parametrize("executor", EXECUTORS)
def test_lstm_adamw(executor):
    """CPU LSTM layers run oneDNN's ``mkldnn_rnn_layer``, which returns the workspace its
    backward reads only with grad enabled: run under the program's ``no_grad`` it gave
    None and the backward failed ("Expected a proper Tensor but got None ... 'workspace'").
    The workspace has the slot oneDNN sizes (its meta kernel says 0 bytes: the arena
    executor kept it outside the arena, with a warning)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        step = compare(_LSTMClassifier, lambda m: torch.optim.AdamW(m.parameters(), lr=1e-2),
                       lambda: torch.randn(4, 5, 8), executor, loss_fn=torch.nn.functional.cross_entropy,
                       make_targets=lambda: (torch.randint(0, 3, (4,)),))
    ops = {op.target for op in step.plan.graph.ops}
    if "aten.mkldnn_rnn_layer.default" not in ops:
        pytest.skip("this torch build runs CPU LSTMs without oneDNN")
    if executor == "arena":  # run as eager runs it, never with arena slots (model_runtime.lowering)
        assert "aten.mkldnn_rnn_layer.default" in {f.target for f in step.fallbacks}


@pytest.mark.parametrize("executor", EXECUTORS)
def test_lstm_eval_bitwise(executor):
    """An eval step runs oneDNN's LSTM layers under no_grad, as eager's forward does (grad
    mode picks other kernels, 1.5e-8 off)."""
    torch.manual_seed(0)
    model = _LSTMClassifier().eval()
    step = optimize(model, torch.randn(4, 5, 8), executor=executor, time_limit=0.5)
    for _ in range(2):
        x = torch.randn(4, 5, 8)
        with torch.no_grad():
            assert torch.equal(step(x), model(x))


class _InPlaceViews(torch.nn.Module):
    """A bidirectional batch-first GRU (CPU: its output is transposed in place) and an
    activation transposed in place by hand."""

    def __init__(self):
        super().__init__()
        self.gru = torch.nn.GRU(8, 16, batch_first=True, bidirectional=True)
        self.mix, self.head = torch.nn.Linear(5, 5), torch.nn.Linear(32, 3)

    def forward(self, x):
        h = self.mix(self.gru(x)[0].transpose(1, 2))  # (4, 32, 5)
        h.transpose_(1, 2)
        return self.head(h[:, -1])


@pytest.mark.filterwarnings("error:An output with one or more elements was resized")
@pytest.mark.parametrize("executor", EXECUTORS)
def test_in_place_view_ops_never_reshape_a_slot(executor):
    """``x.transpose_()`` changes the sizes of the tensor it is called on: on an arena
    slot, kept from step to step, the next step's op wrote into a slot of the wrong shape
    (PyTorch resized it, with a warning that is to become an error). Capture rewrites
    such ops on intermediate tensors into views."""
    step = compare(_InPlaceViews, lambda m: torch.optim.AdamW(m.parameters(), lr=1e-2),
                   lambda: torch.randn(4, 5, 8), executor, steps=4, loss_fn=torch.nn.functional.cross_entropy,
                   make_targets=lambda: (torch.randint(0, 3, (4,)),))
    targets = {str(n.target) for n in step.captured.module.graph.nodes}
    assert not targets & {"aten.transpose_.default", "aten.t_.default"}, targets


class _CheckpointedDropout(torch.nn.Module):
    def __init__(self, use_reentrant: bool):
        super().__init__()
        self.use_reentrant = use_reentrant
        self.pre, self.head = torch.nn.Linear(16, 16), torch.nn.Linear(16, 3)
        self.inner = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.GELU(), torch.nn.Dropout(0.3),
                                         torch.nn.Linear(64, 16), torch.nn.Dropout(0.2))

    def forward(self, x):
        h = torch.utils.checkpoint.checkpoint(self.inner, self.pre(x), use_reentrant=self.use_reentrant)
        return self.head(torch.nn.functional.dropout(h, 0.1, self.training))


@pytest.mark.parametrize("executor", [*EXECUTORS, "program"])
@pytest.mark.parametrize("use_reentrant,budget", [(False, False), (True, False), (False, True)])
def test_checkpointed_dropout_replays_its_draws(executor, use_reentrant, budget):
    """torch.utils.checkpoint over dropout: the backward's recomputed dropout replays the
    forward's draws, alone or with the plan's own recomputation under a memory budget."""
    torch.manual_seed(0)
    model = _CheckpointedDropout(use_reentrant)
    ref = copy.deepcopy(model)
    opt, ref_opt = (torch.optim.AdamW(m.parameters(), lr=1e-2) for m in (model, ref))
    x = torch.randn(64, 16)
    kwargs = {}
    if budget:
        twin = copy.deepcopy(model)
        free = optimize(twin, x, optimizer=torch.optim.AdamW(twin.parameters(), lr=1e-2), time_limit=1).plan
        bounded = budget_graph(free.graph)  # what a budget bounds: the kernels' temporaries too
        peak, persistent = simulate(bounded, free.schedule).peak_bytes, bounded.persistent_bytes
        kwargs["memory_budget"] = int(persistent + 0.8 * (peak - persistent))
    if budget and executor == "program":  # eager's order: it would not run the plan's recomputations
        with pytest.raises(ModelOptError, match="with the program executor: it runs eager's order"):
            optimize(model, x, optimizer=opt, executor=executor, **kwargs)
        return
    # The budgeted solve ends in about 0.5 s; 1 s was once too short on a loaded machine.
    step = optimize(model, x, optimizer=opt, executor=executor, time_limit=5 if budget else 1, **kwargs)
    for i in range(3):
        torch.manual_seed(100 + i)
        expected, after_eager = eager_step(ref, ref_opt, x), torch.rand(4)
        torch.manual_seed(100 + i)
        assert torch.equal(step(x), expected) and torch.equal(torch.rand(4), after_eager)
        assert_same_state(model, opt, ref, ref_opt)
    if budget:
        assert step.plan.figures["recomputed_ops"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("executor", EXECUTORS)
def test_torchvision_resnet18_small(executor):
    torchvision = pytest.importorskip("torchvision")
    compare(lambda: torchvision.models.resnet18(num_classes=10),
            lambda m: torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9), lambda: torch.randn(2, 3, 32, 32),
            executor, loss_fn=torch.nn.functional.cross_entropy, make_targets=lambda: (torch.randint(0, 10, (2,)),))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_arena_in_random_valid_orders(seed):
    """The arena executor is exact in any valid order with a placement made for that order."""
    torch.manual_seed(0)
    model = TransformerBlock(16, 2, dropout=0.2)
    ref = copy.deepcopy(model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    ref_opt = torch.optim.Adam(ref.parameters(), lr=1e-2)
    step = optimize(model, torch.randn(2, 5, 16), optimizer=opt, executor="reorder", time_limit=0.5)
    graph = step.plan.graph
    order = random_topological_order(graph, seed)
    placement = place(arena_lifetimes(graph, order, 64), method="greedy-size")
    plan = Plan(graph, Schedule(order), placement.placement())
    program = build_arena(step.captured, plan, device=torch.device("cpu"))
    for i in range(2):
        x = torch.randn(2, 5, 16)
        torch.manual_seed(10 + i)
        expected = eager_step(ref, ref_opt, x)
        torch.manual_seed(10 + i)
        (loss,) = program.run(step.bind(x))
        assert torch.equal(loss, expected)
        assert_same_state(model, opt, ref, ref_opt)


def test_eval_mode_forward_only_bitwise():
    torch.manual_seed(0)
    model = small_cnn().eval()
    x = torch.randn(3, 3, 16, 16)
    before = copy.deepcopy(model.state_dict())
    for executor in EXECUTORS:
        step = optimize(model, x, executor=executor, time_limit=0.5)
        assert not step.train
        for _ in range(2):
            x = torch.randn(3, 3, 16, 16)
            out = step(x)
            with torch.no_grad():
                assert torch.equal(out, model(x))
            # The output is the caller's: the next step must not overwrite it.
            kept = out.clone()
            step(torch.randn(3, 3, 16, 16))
            assert torch.equal(out, kept)
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name  # running stats untouched in eval


@pytest.fixture
def mha_fast_path_off():
    enabled = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    yield
    torch.backends.mha.set_fastpath_enabled(enabled)


class _Encoder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        layer = torch.nn.TransformerEncoderLayer(32, 4, 64, batch_first=True)
        self.encoder = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)

    def forward(self, x, padding):
        return self.encoder(x, src_key_padding_mask=padding)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_eval_transformer_encoder_bitwise(executor, mha_fast_path_off):
    """Eval captures keep the parameters' requires_grad: matmul decides by it whether to
    fold a batched input into one mm (eager's in-projection of nn.MultiheadAttention) or
    run a bmm, which rounds otherwise (3.6e-7 off before)."""
    torch.manual_seed(0)
    model = _Encoder().eval()
    x, padding = torch.randn(2, 6, 32), torch.tensor([[False] * 6, [False] * 4 + [True] * 2])
    step = optimize(model, (x, padding), executor=executor, time_limit=0.5)
    with torch.no_grad():
        assert torch.equal(step(x, padding), model(x, padding))


def test_eval_capture_warns_of_eager_fast_path():
    from model_ir.torch import capture

    model = _Encoder().eval()
    x, padding = torch.randn(2, 6, 32), torch.tensor([[False] * 6, [False] * 4 + [True] * 2])
    with pytest.warns(UserWarning, match=r"MultiheadAttention and TransformerEncoderLayer on its fused inference "
                                         r"fast path.*set_fastpath_enabled\(False\)"):
        capture(model, (x, padding), train=False)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_gradient_clipping_before_the_update(executor):
    def clip(params):
        torch.nn.utils.clip_grad_norm_(params.values(), max_norm=0.05)

    torch.manual_seed(0)
    model = mlp(16, 3)
    ref = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    step = optimize(model, torch.randn(8, 16), optimizer=opt, executor=executor, time_limit=0.5, before_step=clip)
    for _ in range(2):
        x = torch.randn(8, 16)
        assert torch.equal(step(x), eager_step(ref, ref_opt, x, before_step=clip))
        assert_same_state(model, opt, ref, ref_opt)


def test_ctrl_c_in_the_scheduler_stops_planning(monkeypatch):
    """The scheduler turns Ctrl-C into its best order so far (``interrupted``): planning
    stops there (before: ``run --budget`` went on and reported that no plan fits)."""
    import attrs

    import model_runtime.planning as planning

    model = mlp(8, 2)
    step = optimize(model, torch.randn(4, 8), optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                    time_limit=0.5)
    real = planning.schedule
    monkeypatch.setattr(planning, "schedule", lambda *a, **k: attrs.evolve(real(*a, **k), interrupted=True))
    with pytest.raises(KeyboardInterrupt):
        make_plan(step.captured.graph, time_limit=0.5)
