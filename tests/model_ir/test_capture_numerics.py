"""Executing the captured step gives bitwise the same loss, parameters, model buffers
and optimizer state as the plain eager training step (CPU, same seed)."""

from __future__ import annotations

import copy
import itertools

import pytest

torch = pytest.importorskip("torch")

from model_ir.testing.torch_models import (
    assert_same_state,
    TransformerBlock,
    channels_last_cnn,
    eager_step,
    mlp,
    random_topological_order,
    small_cnn,
)
from model_ir.torch import CaptureError, capture_step, init_optimizer_state


def _compare(make_model, make_opt, make_batch, *, steps=2, loss_fn=None, order_seed=None):
    torch.manual_seed(0)
    model = make_model()
    ref = copy.deepcopy(model)
    opt, ref_opt = make_opt(model), make_opt(ref)
    batch = make_batch()
    captured = capture_step(model, batch, optimizer=opt, loss_fn=loss_fn)
    order = None if order_seed is None else random_topological_order(captured.graph, order_seed)
    before = [p.detach().clone() for p in model.parameters()]
    for i in range(steps):
        batch = make_batch()
        torch.manual_seed(100 + i)
        expected = eager_step(ref, ref_opt, batch, loss_fn)
        torch.manual_seed(100 + i)
        (loss,) = captured.run(model, opt, batch, order=order)
        assert torch.equal(loss, expected), (i, loss, expected)
        assert_same_state(model, opt, ref, ref_opt)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters())), "the step changed nothing"
    return captured


@pytest.mark.parametrize("order_seed", [None, 1])
def test_channels_last_cnn_with_1x1_maps_bitwise(order_seed):
    # Strides eager's kernels choose along size-1 dimensions, and a residual's gradient sum
    # eager runs in place, laid out as its first gradient (model_ir.torch.eager_strides):
    # otherwise a convolution's backward sums in another order.
    target = torch.randint(0, 10, (4,))
    _compare(channels_last_cnn, lambda m: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9),
             lambda: torch.randn(4, 3, 8, 8).to(memory_format=torch.channels_last),
             loss_fn=lambda out: torch.nn.functional.cross_entropy(out, target), order_seed=order_seed)


def test_mlp_sgd_momentum_bitwise():
    _compare(lambda: mlp(16, 3), lambda m: torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, nesterov=True),
             lambda: torch.randn(8, 16), steps=3)


def test_cnn_batchnorm_adam_bitwise():
    def loss_fn(out):
        return torch.nn.functional.cross_entropy(out, torch.arange(4) % 10)
    _compare(small_cnn, lambda m: torch.optim.Adam(m.parameters(), lr=1e-2), lambda: torch.randn(4, 3, 16, 16),
             loss_fn=loss_fn)


def test_transformer_block_dropout_adamw_bitwise_in_program_and_other_order():
    for seed in (None, 7):
        captured = _compare(lambda: TransformerBlock(16, 2, dropout=0.2),
                            lambda m: torch.optim.AdamW(m.parameters(), lr=1e-2, weight_decay=0.1),
                            lambda: torch.randn(2, 6, 16), order_seed=seed)
    rng_ops = [op for op in captured.graph.ops if "bernoulli" in (op.target or "") or "dropout" in (op.target or "")]
    assert len(rng_ops) >= 2
    for prev, op in itertools.pairwise(rng_ops):
        assert prev.id in op.after  # random-number consumers keep their relative order


class _Checkpointed(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 8))
        self.head = torch.nn.Linear(8, 3)

    def forward(self, x):
        return self.head(torch.utils.checkpoint.checkpoint(self.inner, x, use_reentrant=False))


@pytest.mark.parametrize("order_seed", [None, 1, 2])
def test_activation_checkpointing_recomputes_from_the_traced_parameters(order_seed):
    """Backward reruns the checkpointed forward; it used to read the model's real
    parameters as graph constants, with no dependency on their in-place update, so an
    order could update a weight before its recomputation read it (AdamW diverged)."""
    captured = _compare(_Checkpointed, lambda m: torch.optim.AdamW(m.parameters(), lr=1e-2),
                        lambda: torch.randn(4, 8), steps=3, order_seed=order_seed)
    assert not [n.target for n in captured.module.graph.nodes if n.op == "get_attr"]
    assert not [b.id for b in captured.graph.buffers if b.id.startswith("constant:")]
    backward = [op.target for op in captured.graph.ops if op.meta["phase"] == "backward"]
    assert "aten.gelu.default" in backward  # the recomputation is in the step


class _CheckpointedDropout(torch.nn.Module):
    """Dropout before, inside (twice) and after a checkpointed region."""

    def __init__(self, use_reentrant: bool):
        super().__init__()
        self.use_reentrant = use_reentrant
        self.inner = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Dropout(0.3),
                                         torch.nn.Linear(16, 8), torch.nn.Dropout(0.2))
        self.pre, self.head, self.drop = torch.nn.Linear(8, 8), torch.nn.Linear(8, 3), torch.nn.Dropout(0.5)

    def forward(self, x):
        # (reentrant checkpointing recomputes only when the region's input requires grad)
        h = torch.utils.checkpoint.checkpoint(self.inner, self.drop(self.pre(x)), use_reentrant=self.use_reentrant)
        return self.head(self.drop(h))


@pytest.mark.parametrize("use_reentrant", [False, True])
@pytest.mark.parametrize("order_seed", [None, 3])
def test_checkpointed_dropout_replays_the_forward_draws_bitwise(use_reentrant, order_seed):
    """Eager reruns a checkpointed dropout with the forward's random numbers (checkpoint
    restores the generator, then puts it back); the captured backward's draws replay the
    forward's, and the generator ends where eager's does."""
    from model_ir.recompute import REPLAYS_DRAWS_OF

    torch.manual_seed(0)
    model = _CheckpointedDropout(use_reentrant)
    ref = copy.deepcopy(model)
    opt, ref_opt = (torch.optim.AdamW(m.parameters(), lr=1e-2) for m in (model, ref))
    x = torch.randn(4, 8)
    captured = capture_step(model, x, optimizer=opt)
    ops = {op.id: op for op in captured.graph.ops}
    replays = [op for op in captured.graph.ops if REPLAYS_DRAWS_OF in op.meta]
    assert len(replays) == 2  # the region's two dropouts, recomputed in backward
    assert all(op.meta["phase"] == "backward" and ops[op.meta[REPLAYS_DRAWS_OF]].meta["phase"] == "forward"
               for op in replays)
    order = None if order_seed is None else random_topological_order(captured.graph, order_seed)
    for i in range(3):
        torch.manual_seed(10 + i)
        expected, after_eager = eager_step(ref, ref_opt, x), torch.rand(4)
        torch.manual_seed(10 + i)
        (loss,) = captured.run(model, opt, x, order=order)
        assert torch.equal(loss, expected) and torch.equal(torch.rand(4), after_eager)
        assert_same_state(model, opt, ref, ref_opt)


def test_a_checkpointed_region_that_draws_otherwise_when_recomputed_is_refused():
    """A replay must be the forward's draw again (same operator and arguments); here the
    recomputation draws with another probability, which no replay reproduces."""
    from model_ir.torch import CaptureError

    calls = []
    lin = torch.nn.Linear(8, 8)

    def region(x):
        calls.append(1)
        return torch.nn.functional.dropout(lin(x), 0.1 if len(calls) == 1 else 0.2)

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = lin

        def forward(self, x):
            return torch.utils.checkpoint.checkpoint(region, x, use_reentrant=False)

    model = Model()
    with pytest.raises(CaptureError, match=r"draws random numbers from a restored generator state .*"
                                           r"torch.utils.checkpoint's recomputation.*another operator, shape or "
                                           r"probability"):
        capture_step(model, torch.randn(4, 8), optimizer=torch.optim.SGD(model.parameters(), lr=0.1))


class _Experts(torch.nn.Module):
    """Tokens routed to experts by a grouped matrix product (Hugging Face's mixture of
    experts on torch >= 2.9), in fp32."""

    def __init__(self):
        super().__init__()
        self.up, self.head = torch.nn.Parameter(torch.randn(3, 8, 16) * 0.1), torch.nn.Linear(16, 4)
        self.register_buffer("offs", torch.tensor([4, 8, 12], dtype=torch.int32))

    def forward(self, x):
        return self.head(torch.relu(torch._grouped_mm(x, self.up, offs=self.offs)))


@pytest.mark.skipif(not hasattr(torch, "_grouped_mm"), reason="torch without grouped matrix products")
def test_grouped_matrix_products_in_fp32_bitwise():
    """torch 2.11's meta function of ``_grouped_mm`` refuses fp32 operands that its CPU
    kernel takes (Mixtral failed to capture there): the fake result is shaped with bf16
    stand-ins (``EagerStridesFakeMode``). CI's compatibility run checks it on torch 2.11."""
    _compare(_Experts, lambda m: torch.optim.AdamW(m.parameters(), lr=1e-2), lambda: torch.randn(12, 8),
             order_seed=1)


def test_init_optimizer_state_matches_a_fresh_optimizer():
    torch.manual_seed(0)
    model = mlp(8, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.5)
    before = copy.deepcopy(model.state_dict())
    init_optimizer_state(opt)
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
    for p in model.parameters():
        assert p.grad is None
        st = opt.state[p]
        assert float(st["step"]) == 0.0
        assert not st["exp_avg"].any() and not st["exp_avg_sq"].any()


class _Averaging(torch.optim.SGD):
    """Keeps a running average of each parameter, started at its value: state that
    depends on the parameter, which no stand-in can make."""

    @torch.no_grad()
    def step(self, closure=None):
        super().step(closure)
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    state = self.state[p]
                    if "average" not in state:
                        state["average"] = p.detach().clone()
                    state["average"].lerp_(p, 0.1)


def test_init_optimizer_state_is_the_first_steps_in_the_parameters_layout():
    """torch's optimizers get their state from a stand-in (no temporaries), laid out as
    the parameter (channels-last here, as eager's zeros_like); an optimizer of the user's
    from a real zero-gradient step, so state made from the parameter's values is right."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(4, 8, 3).to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(conv.parameters(), lr=0.1)
    init_optimizer_state(opt)
    assert opt.state[conv.weight]["exp_avg"].stride() == conv.weight.stride() != (36, 9, 3, 1)
    assert not opt.state[conv.weight]["exp_avg_sq"].any() and float(opt.state[conv.weight]["step"]) == 0.0
    averaging = _Averaging(conv.parameters(), lr=0.1)
    init_optimizer_state(averaging)
    assert torch.equal(averaging.state[conv.weight]["average"], conv.weight)


def test_init_optimizer_state_keeps_state_shaped_otherwise():
    """Adafactor factors a matrix's second moment into a row and a column: state of
    another shape than the parameter, which the stand-in (of the parameter's rank) shows;
    it got a parameter-shaped 'variance' from a one-dimensional stand-in."""
    torch.manual_seed(0)
    model = torch.nn.Linear(16, 8)
    opt, eager = torch.optim.Adafactor(model.parameters(), lr=1e-2), copy.deepcopy(model)
    reference = torch.optim.Adafactor(eager.parameters(), lr=1e-2)
    init_optimizer_state(opt)
    for p in eager.parameters():
        p.grad = torch.zeros_like(p)
    reference.step()
    for p, q in zip(model.parameters(), eager.parameters()):
        made, first = opt.state[p], reference.state[q]
        assert sorted(made) == sorted(first)
        assert all(made[k].shape == first[k].shape for k in made if isinstance(made[k], torch.Tensor))


@pytest.mark.parametrize("make", [
    lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.1),
    lambda ps: torch.optim.Adam(ps, lr=1e-2, weight_decay=0.1),
    lambda ps: torch.optim.RMSprop(ps, lr=1e-2, weight_decay=0.1),
], ids=["sgd", "adam", "rmsprop"])
def test_coupled_weight_decay_bitwise(make):
    # weight decay adds wd * param to the gradient: the state created from zero gradients
    # must still be zeros, not a fraction of the parameters
    _compare(lambda: mlp(8, 3), lambda m: make(m.parameters()), lambda: torch.randn(4, 8), steps=3)


@pytest.mark.parametrize("make", [
    lambda ps: torch.optim.NAdam(ps, lr=1e-2),
    lambda ps: torch.optim.NAdam(ps, lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True),
    lambda ps: torch.optim.Adamax(ps, lr=1e-2),
    lambda ps: torch.optim.Adadelta(ps),
    lambda ps: torch.optim.Rprop(ps, lr=1e-2),
    lambda ps: torch.optim.RMSprop(ps, lr=1e-2, momentum=0.9, centered=True),
], ids=["nadam", "nadam-decoupled", "adamax", "adadelta", "rprop", "rmsprop-centered"])
def test_more_optimizers_bitwise(make):
    # NAdam's mu_product is a product of per-step factors: the state made by a step with
    # a zero gradient held one factor already (the second step diverged), not eager's 1
    _compare(lambda: mlp(8, 3), lambda m: make(m.parameters()), lambda: torch.randn(4, 8), steps=3)


def test_init_optimizer_state_puts_back_the_scalars_a_step_created():
    model = mlp(8, 2)
    opt = torch.optim.NAdam(model.parameters(), lr=0.1)
    init_optimizer_state(opt)
    for p in model.parameters():
        assert type(opt.state[p]) is dict
        assert float(opt.state[p]["mu_product"]) == 1.0 and float(opt.state[p]["step"]) == 0.0


def test_reseed_optimizer_state_only_where_a_hyper_parameter_changed_and_no_step_ran():
    from model_ir.torch.step import reseed_optimizer_state, seed_values

    model = mlp(8, 2)
    params = list(model.parameters())
    opt = torch.optim.Rprop(params, lr=torch.tensor(0.1))
    init_optimizer_state(opt)
    seeded = seed_values(opt)
    assert reseed_optimizer_state(opt, params, seeded) == []  # nothing changed
    opt.param_groups[0]["lr"].fill_(0.02)  # in place: a tensor lr's value is what counts
    stepped = params[0]
    opt.state[stepped]["step"] += 1  # as if a step had run from its state: kept
    assert reseed_optimizer_state(opt, params, seeded) == params[1:]
    assert all(bool((opt.state[p]["step_size"] == 0.02).all()) for p in params[1:])
    assert bool((opt.state[stepped]["step_size"] == 0.1).all())


def test_sgd_dampening_without_momentum_state_is_a_clear_error():
    # eager's first SGD step copies the gradient into the momentum buffer undampened;
    # a steady-state step from a zero buffer would scale it by (1 - dampening)
    from model_ir.torch.errors import ExecutionError

    model = mlp(8, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, dampening=0.5)
    with pytest.raises(ExecutionError, match="dampening"):
        init_optimizer_state(opt)


def test_eval_capture_runs_forward_only():
    torch.manual_seed(0)
    model = small_cnn().eval()
    x = torch.randn(2, 3, 16, 16)
    captured = capture_step(model, x, train=False)
    assert all(op.meta["phase"] == "forward" for op in captured.graph.ops)
    persistent = {b.id for b in captured.graph.buffers if b.persistent}
    assert not any(set(op.mutates) & persistent for op in captured.graph.ops)  # running stats untouched
    assert any(op.mutates for op in captured.graph.ops)  # ReLU(inplace=True) writes its input
    (out,) = captured.run(model, None, x)
    with torch.no_grad():
        assert torch.equal(out, model(x))


@pytest.mark.parametrize("impl", [{"foreach": True}, {"fused": True}])
@pytest.mark.parametrize("make", [
    lambda ps, **kw: torch.optim.SGD(ps, lr=0.1, momentum=0.9, **kw),
    lambda ps, **kw: torch.optim.Adam(ps, lr=1e-2, **kw),
    lambda ps, **kw: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.1, **kw),
], ids=["sgd", "adam", "adamw"])
def test_foreach_and_fused_optimizers_bitwise(make, impl):
    # multi-tensor optimizers (the CUDA default) mutate lists of tensors in one op
    captured = _compare(lambda: mlp(8, 3), lambda m: make(m.parameters(), **impl), lambda: torch.randn(4, 8))
    assert any("_foreach_" in op.target or "_fused_" in op.target for op in captured.graph.ops)


def test_frozen_submodules_and_parameters_are_respected():
    def make():
        model = small_cnn()
        model[1].eval()  # a frozen BatchNorm: uses and keeps its running statistics
        for p in model[0].parameters():
            p.requires_grad_(False)
        return model

    captured = _compare(make, lambda m: torch.optim.Adam(m.parameters(), lr=1e-2), lambda: torch.randn(4, 3, 16, 16))
    assert not any(b.id.startswith("optimizer_state:0.") for b in captured.graph.buffers)
    mutated = {b for op in captured.graph.ops for b in op.mutates}
    assert "model_buffer:1.running_mean" not in mutated and "model_buffer:4.running_mean" in mutated


class _WithUnusedHead(torch.nn.Module):
    """An MLP and a head its forward never calls (as a pooler a loss ignores)."""

    def __init__(self):
        super().__init__()
        self.body = mlp(16, 3)
        self.unused = torch.nn.Linear(16, 16)

    def forward(self, x):
        return self.body(x)


def test_no_optimizer_state_for_parameters_without_gradient():
    # Eager's step() skips parameters whose .grad is None and creates no state for them;
    # so does the captured step (AdamW's decoupled decay would otherwise shrink them).
    captured = _compare(_WithUnusedHead, lambda m: torch.optim.AdamW(m.parameters(), lr=1e-2, weight_decay=0.1),
                        lambda: torch.randn(8, 16), steps=3)
    state = {b.id for b in captured.graph.buffers if b.id.startswith("optimizer_state:")}
    assert state and not any(b.startswith("optimizer_state:unused.") for b in state)
    assert captured.stateful_parameters() == tuple(f"body.{i}.{k}" for i in (0, 2, 4) for k in ("weight", "bias"))
    # State the optimizer already holds stays an input (it is memory) even when unused.
    model = _WithUnusedHead()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    init_optimizer_state(opt)
    again = capture_step(model, torch.randn(8, 16), optimizer=opt)
    assert "unused.weight" in again.stateful_parameters()


def test_gradient_hooks_of_parameters_are_traced_bitwise():
    torch.manual_seed(0)
    model = mlp(16, 3)
    ref = copy.deepcopy(model)  # deepcopy drops tensor hooks: register them on both
    for m in (model, ref):
        m[0].weight.register_hook(lambda g: g.clamp(-1e-3, 1e-3))
        m[4].bias.register_hook(lambda g: g * 0.5)
    opt, ref_opt = (torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (model, ref))
    x = torch.randn(8, 16)
    captured = capture_step(model, x, optimizer=opt)
    assert any("clamp" in op.target for op in captured.graph.ops if op.meta["phase"] == "backward")
    for _ in range(3):
        assert torch.equal(captured.run(model, opt, x)[0], eager_step(ref, ref_opt, x))
        assert_same_state(model, opt, ref, ref_opt)
    model = mlp(16, 3)
    model[2].weight.register_post_accumulate_grad_hook(lambda p: None)
    with pytest.raises(CaptureError, match=r"parameter '2\.weight' has a post-accumulate-grad hook"):
        capture_step(model, torch.randn(8, 16), optimizer=torch.optim.SGD(model.parameters(), lr=0.1))


def test_gradient_clipping_before_the_update_bitwise():
    def clip(params):
        torch.nn.utils.clip_grad_norm_(params.values(), max_norm=0.05)

    torch.manual_seed(0)
    model = TransformerBlock(16, 2, dropout=0.1)
    ref = copy.deepcopy(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ref_opt = torch.optim.AdamW(ref.parameters(), lr=1e-2)
    x = torch.randn(2, 6, 16)
    captured = capture_step(model, x, optimizer=opt, before_step=clip)
    assert any("norm" in op.target for op in captured.graph.ops if op.meta["phase"] == "backward")
    for i in range(2):
        torch.manual_seed(10 + i)
        expected = eager_step(ref, ref_opt, x, before_step=clip)
        torch.manual_seed(10 + i)
        (loss,) = captured.run(model, opt, x)
        assert torch.equal(loss, expected)
        assert_same_state(model, opt, ref, ref_opt)
