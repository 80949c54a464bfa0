"""Real training loops with an optimized step (issue: LR schedules): five steps bitwise
equal to the same loop in eager PyTorch from the same seed, with the learning rate (and
momentum / betas) changed by a scheduler after every step, without a new plan."""

from __future__ import annotations

import copy
import re
import warnings

import pytest

torch = pytest.importorskip("torch")

from model_ir.testing.torch_models import TransformerBlock, assert_same_state, eager_step, small_cnn  # noqa: E402
from model_runtime import optimize  # noqa: E402
from model_runtime.optimized_step import ReplanWarning  # noqa: E402


def train_both(model, make_optimizer, make_scheduler, make_batch, *, executor="arena", steps=5, loss_fn=None,
               make_targets=None):
    """Run ``steps`` optimized and eager steps side by side; returns the optimizers."""
    ref = copy.deepcopy(model)
    opt, ref_opt = make_optimizer(model), make_optimizer(ref)
    sched, ref_sched = make_scheduler(opt), make_scheduler(ref_opt)
    targets = (make_targets(),) if make_targets else ()
    step = optimize(model, make_batch(), optimizer=opt, loss_fn=loss_fn, targets=targets, executor=executor,
                    time_limit=2)
    plan = step.plan
    lrs = []
    for i in range(steps):
        batch, targets = make_batch(), ((make_targets(),) if make_targets else ())
        torch.manual_seed(100 + i)
        loss = step(batch, targets=targets)
        torch.manual_seed(100 + i)
        expected = eager_step(ref, ref_opt, batch, loss_fn, targets)
        assert torch.equal(loss, expected), (i, loss, expected)
        sched.step()
        ref_sched.step()
        lrs.append(float(opt.param_groups[0]["lr"]))
    assert_same_state(model, opt, ref, ref_opt)
    assert step.plan is plan and len(step.plans) == 1 and len(set(lrs)) == steps  # another rate each step
    return opt


@pytest.mark.parametrize("executor", ["reorder", "arena"])
def test_resnet18_sgd_momentum_one_cycle(executor):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    opt = train_both(
        model, lambda m: torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9),
        lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.1, total_steps=10),
        lambda: torch.randn(8, 3, 64, 64), loss_fn=torch.nn.functional.cross_entropy,
        make_targets=lambda: torch.randint(0, 10, (8,)), executor=executor)
    assert 0.85 <= opt.param_groups[0]["momentum"] <= 0.95  # OneCycleLR cycles the momentum too


def test_resnet18_tensor_learning_rate_cosine_annealing():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    opt = train_both(
        model, lambda m: torch.optim.SGD(m.parameters(), lr=torch.tensor(0.1), momentum=0.9),
        lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=10),
        lambda: torch.randn(8, 3, 64, 64), loss_fn=torch.nn.functional.cross_entropy,
        make_targets=lambda: torch.randint(0, 10, (8,)))
    assert isinstance(opt.param_groups[0]["lr"], torch.Tensor)


@pytest.mark.parametrize("executor", ["reorder", "arena"])
def test_adam_tensor_learning_rate_is_float32_arithmetic_as_in_eager(executor):
    """Adam computes ``lr / bias_correction`` on a tensor learning rate in float32: the
    step hands the optimizer the tensor itself (read as a float64, the update differed
    from eager's in the last bit)."""
    torch.manual_seed(0)
    opt = train_both(
        TransformerBlock(32, 4, dropout=0.1), lambda m: torch.optim.Adam(m.parameters(), lr=torch.tensor(1e-3)),
        lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=10), lambda: torch.randn(4, 16, 32),
        executor=executor)
    assert isinstance(opt.param_groups[0]["lr"], torch.Tensor)


class _BetaSchedule:
    """Changes Adam's tensor betas in place (one) and by a new tuple (the other), and its lr."""

    def __init__(self, optimizer):
        self.optimizer = optimizer

    def step(self):
        group = self.optimizer.param_groups[0]
        b1, b2 = group["betas"]
        b1.mul_(0.99)
        group["betas"] = (b1, torch.tensor(float(b2) * 0.999))
        group["lr"] *= 0.9


@pytest.mark.parametrize("executor", ["reorder", "arena"])
def test_adam_tensor_betas_train_as_in_eager(executor):
    """``Adam(betas=(tensor, tensor))``, 0-dim tensors as the docs allow: lifted as inputs
    of the step like a tensor learning rate, changed in place or replaced, bitwise eager's
    (before: refused with an internal PendingUnbackedSymbolNotFound message)."""
    torch.manual_seed(0)
    model = TransformerBlock(32, 4, dropout=0.1)
    ref = copy.deepcopy(model)
    opt, ref_opt = (torch.optim.Adam(m.parameters(), lr=1e-3, betas=(torch.tensor(0.9), torch.tensor(0.999)))
                    for m in (model, ref))
    schedules = _BetaSchedule(opt), _BetaSchedule(ref_opt)
    step = optimize(model, torch.randn(4, 16, 32), optimizer=opt, executor=executor, time_limit=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ReplanWarning)
        for i in range(4):
            x = torch.randn(4, 16, 32)
            torch.manual_seed(100 + i)
            loss = step(x)
            torch.manual_seed(100 + i)
            assert torch.equal(loss, eager_step(ref, ref_opt, x))
            assert_same_state(model, opt, ref, ref_opt)
            for schedule in schedules:
                schedule.step()
    # torch 2.15: one plan; torch 2.11's Adam pins its first step counts with tensor betas (bitwise, replanned)
    assert len(step.plans) <= 3


class _NumpySchedule:
    """``param_group["lr"] = schedule[it]`` from a NumPy array, as DINO's and MoCo's loops do."""

    def __init__(self, optimizer):
        np = pytest.importorskip("numpy")
        self.optimizer, self.values, self.it = optimizer, np.cos(np.linspace(0, 1.5, 8)) * 1e-2, 0
        self.step()

    def step(self):
        for group in self.optimizer.param_groups:
            group["lr"] = self.values[self.it]
        self.it += 1


@pytest.mark.parametrize("make", [lambda m: torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9),
                                  lambda m: torch.optim.Adam(m.parameters(), lr=0.1)], ids=["sgd", "adam"])
def test_a_numpy_float64_learning_rate_is_a_float(make):
    # numpy.float64 is a float: it was lifted as one, then its sign check subtracted NumPy
    # booleans (a TypeError inside optimize())
    torch.manual_seed(0)
    opt = train_both(torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)), make,
                     _NumpySchedule, lambda: torch.randn(4, 8), executor="reorder")
    assert type(opt.param_groups[0]["lr"]).__module__ == "numpy"


def test_a_numpy_float32_learning_rate_is_refused_not_rounded_otherwise():
    """Eager Adam divides a ``numpy.float32`` learning rate in float32 (NumPy's rules):
    lifted as a float64 input, or held with the step counter symbolic, the update
    differed from eager's in the last bit, silently."""
    np = pytest.importorskip("numpy")
    from model_ir.torch.errors import CaptureError

    model = torch.nn.Linear(8, 3)
    opt = torch.optim.Adam(model.parameters(), lr=np.float32(1e-3))
    with pytest.raises(CaptureError, match=r"'lr' is a numpy.float32 .*float\(lr\)"):
        optimize(model, torch.randn(4, 8), optimizer=opt)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    opt.param_groups[0]["momentum"] = np.float32(0.9)
    with pytest.raises(CaptureError, match="'momentum' is a numpy.float32"):
        optimize(model, torch.randn(4, 8), optimizer=opt)


@pytest.mark.parametrize("make", [
    lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-3, foreach=True),
    lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-3, foreach=False),
    lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=1e-3),
    lambda p: torch.optim.Adagrad(p, lr=0.1, lr_decay=1e-3, foreach=True),
    lambda p: torch.optim.RMSprop(p, lr=1e-2, momentum=0.9, centered=True, weight_decay=1e-3, foreach=True),
    lambda p: torch.optim.Adadelta(p, lr=1.0, foreach=True),
    lambda p: torch.optim.Rprop(p, lr=1e-2, foreach=True),
], ids=["sgd-foreach", "sgd", "adam", "adagrad-lr-decay", "rmsprop", "adadelta", "rprop"])
def test_a_schedule_needs_one_plan_with_a_size_one_dimension(make):
    """A parameter with a size-1 dimension (a 1-output head, a 1x1 convolution, ViT's class
    token) has results whose strides eager's kernel decides: capture ran it on stand-ins,
    passing the symbolic hyper-parameters along (``alpha=weight_decay``, Adagrad's
    ``-lr / (1 + (step - 1) * lr_decay)``), which pinned their values: each new learning
    rate, and each Adagrad step, was a new plan, then ``ReoptimizeError`` at the ninth."""
    torch.manual_seed(0)
    train_both(torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1)),
               lambda m: make(m.parameters()), lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda e: 0.9 ** e),
               lambda: torch.randn(4, 8), loss_fn=torch.nn.functional.mse_loss, make_targets=lambda: torch.randn(4, 1),
               executor="reorder")


def test_fused_sgd_with_momentum_follows_a_schedule():
    """A fused optimizer's learning rate is a constant of its step: each change is a new
    plan. Fused SGD with momentum clears a one-time flag at its first step
    (_need_device_dtype_check_for_fused), which capture took for a Python counter: the
    second plan failed with a CaptureError."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    ref = copy.deepcopy(model)
    make = lambda m: torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, fused=True)  # noqa: E731
    opt, ref_opt = make(model), make(ref)
    scheds = [torch.optim.lr_scheduler.StepLR(o, 1, gamma=0.5) for o in (opt, ref_opt)]
    x = torch.randn(4, 8)
    step = optimize(model, x, optimizer=opt, time_limit=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the new plans' ReplanWarning
        for i in range(3):
            assert torch.equal(step(x), eager_step(ref, ref_opt, x)), i
            for s in scheds:
                s.step()
    assert_same_state(model, opt, ref, ref_opt)
    assert len(step.plans) == 3


def test_transformer_block_adamw_linear_warmup():
    torch.manual_seed(0)
    train_both(
        TransformerBlock(32, 4, dropout=0.1), lambda m: torch.optim.AdamW(m.parameters(), lr=1e-3),
        lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda s: min(1.0, (s + 1) / 8)),
        lambda: torch.randn(4, 16, 32))


def test_warmup_chain_and_every_optimizer_kind():
    torch.manual_seed(0)
    for make_opt in (lambda m: torch.optim.Adam(m.parameters(), lr=1e-3, weight_decay=0.01),
                     lambda m: torch.optim.RMSprop(m.parameters(), lr=1e-3, momentum=0.5),
                     lambda m: torch.optim.Adagrad(m.parameters(), lr=1e-2),
                     lambda m: torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, nesterov=True)):
        def chain(o):
            warm = torch.optim.lr_scheduler.LinearLR(o, start_factor=0.1, total_iters=2)
            decay = torch.optim.lr_scheduler.StepLR(o, step_size=1, gamma=0.7)
            return torch.optim.lr_scheduler.SequentialLR(o, [warm, decay], milestones=[2])
        model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
        train_both(model, make_opt, chain, lambda: torch.randn(8, 16), executor="reorder")


@pytest.mark.parametrize("executor", ["reorder", "arena"])
def test_radam_takes_its_rectified_branch_from_the_sixth_step_with_a_second_plan(executor):
    """RAdam branches on its step count (``rho_t > 5``: from the 6th step with the default
    betas). The step is captured with the branch eager takes at its step count, guarded
    (model_ir.torch.step_guards); the 6th call plans the rectified update, once, and a
    cosine schedule of the learning rate needs no plan. Ten steps bitwise eager's."""
    from model_runtime.optimized_step import ReplanWarning

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 4))
    ref = copy.deepcopy(model)
    opt, ref_opt = (torch.optim.RAdam(m.parameters(), lr=1e-2, weight_decay=0.01) for m in (model, ref))
    sched, ref_sched = (torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=10) for o in (opt, ref_opt))
    loss_fn = torch.nn.functional.cross_entropy
    x, y = torch.randn(8, 16), torch.randint(0, 4, (8,))
    step = optimize(model, x, optimizer=opt, loss_fn=loss_fn, targets=(y,), executor=executor, time_limit=2)
    assert step.captured.guards
    for i in range(10):
        x, y = torch.randn(8, 16), torch.randint(0, 4, (8,))
        if i == 5:
            with pytest.warns(ReplanWarning, match=r"RAdam's update branches otherwise at this step"):
                loss = step(x, targets=(y,))
        else:
            loss = step(x, targets=(y,))
        assert torch.equal(loss, eager_step(ref, ref_opt, x, loss_fn, (y,))), i
        sched.step()
        ref_sched.step()
    assert_same_state(model, opt, ref, ref_opt)
    assert len(step.plans) == 2


def test_transformer_block_bf16_autocast_adamw_warmup():
    """AMP on the CPU: forward and loss under bf16 autocast, backward and update outside."""
    torch.manual_seed(0)
    model = TransformerBlock(32, 4, dropout=0.1)
    ref = copy.deepcopy(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ref_opt = torch.optim.AdamW(ref.parameters(), lr=1e-3)
    warmup = lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda s: min(1.0, (s + 1) / 8))  # noqa: E731
    sched, ref_sched = warmup(opt), warmup(ref_opt)
    step = optimize(model, torch.randn(4, 16, 32), optimizer=opt, autocast=torch.bfloat16, time_limit=2)
    assert step.plan.graph.meta["autocast"] == "bfloat16"
    assert any(b.dtype == "bfloat16" for b in step.plan.graph.buffers)  # the casts are planned buffers
    for i in range(5):
        x = torch.randn(4, 16, 32)
        torch.manual_seed(100 + i)
        loss = step(x)
        torch.manual_seed(100 + i)
        ref_opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            expected = ref(x).float().sum()
        expected.backward()
        ref_opt.step()
        assert torch.equal(loss, expected.detach()), (i, loss, expected)
        sched.step()
        ref_sched.step()
    assert_same_state(model, opt, ref, ref_opt)


def test_short_last_batch_and_an_eval_pass_get_plans_of_their_own():
    """Batches of 8, 8, 5 and an eval pass between training steps: one plan per input
    signature and mode, made on first use with a warning, then reused; eager's results."""
    from model_runtime import ReoptimizeError
    from model_runtime.optimized_step import ReplanWarning

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.BatchNorm1d(32), torch.nn.ReLU(),
                                torch.nn.Dropout(0.1), torch.nn.Linear(32, 4))
    ref = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    step = optimize(model, torch.randn(8, 16), optimizer=opt, time_limit=2)
    for epoch in range(2):
        for i, n in enumerate((8, 8, 5)):
            x = torch.randn(n, 16)
            torch.manual_seed(10 * epoch + i)
            if epoch == 0 and n == 5:
                with pytest.warns(ReplanWarning, match=r"\(5, 16\)"):
                    loss = step(x)
            else:
                loss = step(x)
            torch.manual_seed(10 * epoch + i)
            assert torch.equal(loss, eager_step(ref, ref_opt, x))
        model.eval()
        ref.eval()
        x = torch.randn(3, 16)
        if epoch == 0:
            with pytest.warns(ReplanWarning, match="eval mode"):
                out = step(x)
        else:
            out = step(x)
        with torch.no_grad():
            assert torch.equal(out, ref(x))
        model.train()
        ref.train()
    assert_same_state(model, opt, ref, ref_opt)
    assert len(step.plans) == 3  # train b8, train b5, eval b3
    # A later optimize() reuses saved plans instead of solving again.
    again = optimize(model, torch.randn(5, 16), optimizer=opt, plan=step.plans)
    assert again.plan.schedule == step.plans[1].schedule
    limited = optimize(model, torch.randn(8, 16), optimizer=opt, time_limit=2, max_plans=1)
    with pytest.raises(ReoptimizeError, match=r"1 plans \(max_plans\), one for each input shape.*pass a larger "
                                              r"max_plans \(and pad sequences"):
        limited(torch.randn(5, 16))


@pytest.mark.parametrize("executor", ["reorder", "arena", "program"])
def test_an_eval_plan_made_under_inference_mode_serves_later_calls(executor):
    """The eval pass's plan is made on its first call, inside the caller's
    torch.inference_mode(): its arena must still be writable by later calls outside it."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.BatchNorm1d(16), torch.nn.ReLU(),
                                torch.nn.Linear(16, 3))
    ref = copy.deepcopy(model)
    opt, ref_opt = (torch.optim.AdamW(m.parameters(), lr=1e-2) for m in (model, ref))
    step = optimize(model, torch.randn(6, 8), optimizer=opt, executor=executor, time_limit=2)
    for i in range(2):
        x = torch.randn(6, 8)
        for m in (model, ref):
            m.train()
        assert torch.equal(step(x), eager_step(ref, ref_opt, x))
        for m in (model, ref):
            m.eval()
        with torch.inference_mode():
            out = step(x)
        assert torch.equal(out, ref(x).detach())
        with torch.no_grad():
            assert torch.equal(step(x), ref(x))
    assert_same_state(model, opt, ref, ref_opt)


class _DropoutAndCheckpoint(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.pre, self.head = torch.nn.Linear(16, 16), torch.nn.Linear(16, 4)
        self.inner = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Dropout(0.3),
                                         torch.nn.Linear(32, 16))

    def forward(self, x):
        h = torch.utils.checkpoint.checkpoint(self.inner, self.pre(x), use_reentrant=False)
        return self.head(torch.nn.functional.dropout(h, 0.2, self.training))


@pytest.mark.parametrize("executor", ["reorder", "arena"])
def test_gradient_accumulation_with_dropout_and_checkpointing(executor):
    """Every micro-batch's forward draws new dropout masks (after the previous
    micro-batch's backward) and its checkpointed region replays them: eager's results."""
    torch.manual_seed(0)
    model = _DropoutAndCheckpoint()
    ref = copy.deepcopy(model)
    opt, ref_opt = (torch.optim.AdamW(m.parameters(), lr=1e-2) for m in (model, ref))
    loss_fn = lambda out, y: torch.nn.functional.cross_entropy(out, y) / 3  # noqa: E731
    batches = [torch.randn(4, 16) for _ in range(3)]
    targets = [(torch.randint(0, 4, (4,)),) for _ in range(3)]
    step = optimize(model, batches[0], optimizer=opt, loss_fn=loss_fn, targets=targets[0], accumulation_steps=3,
                    executor=executor, time_limit=2)
    for update in range(3):
        torch.manual_seed(update)
        losses = step.accumulate(batches, targets)
        torch.manual_seed(update)
        expected = _eager_accumulated(ref, ref_opt, loss_fn, batches, targets)
        assert all(torch.equal(a, b) for a, b in zip(losses, expected)), update
    assert_same_state(model, opt, ref, ref_opt)


@pytest.mark.parametrize("executor", ["reorder", "arena"])
def test_set_grads_leaves_eager_gradients_in_dot_grad(executor):
    """``set_grads=True``: after each step ``.grad`` holds eager's gradients (clipped by
    ``before_step``, as the optimizer saw them), and the plan pays for keeping them; the
    gradient norm ``before_step`` returns is ``step.before_step_result``, eager's, and
    stays the caller's through later steps."""
    torch.manual_seed(0)
    model = TransformerBlock(32, 4, dropout=0.0)
    ref = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    clip = lambda ps: torch.nn.utils.clip_grad_norm_(list(ps.values()), 0.5)  # noqa: E731
    x = torch.randn(4, 16, 32)
    step = optimize(model, x, optimizer=opt, executor=executor, time_limit=2, set_grads=True, before_step=clip)
    twin = copy.deepcopy(model)
    plain = optimize(twin, x, optimizer=torch.optim.SGD(twin.parameters(), lr=0.1, momentum=0.9),
                     executor=executor, time_limit=2)
    assert step.plan.figures["peak_bytes"] > plain.plan.figures["peak_bytes"]  # kept gradients cost memory
    assert step.before_step_result is None
    norms = []
    for i in range(3):
        x = torch.randn(4, 16, 32)
        loss = step(x)
        norms.append(step.before_step_result)
        ref_opt.zero_grad(set_to_none=True)
        expected = ref(x).sum()
        expected.backward()
        expected_norm = clip(dict(ref.named_parameters()))
        grads = [p.grad.clone() for p in ref.parameters()]
        ref_opt.step()
        assert torch.equal(loss, expected.detach())
        assert torch.equal(norms[-1], expected_norm) and (i == 0 or not torch.equal(norms[-1], norms[-2]))
        for p, g in zip(model.parameters(), grads):
            assert p.grad is not None and torch.equal(p.grad, g)
    assert float(norms[0]) > 0.5  # clipping clipped
    assert_same_state(model, opt, ref, ref_opt)


def _eager_accumulated(model, optimizer, loss_fn, batches, targets, before_step=None) -> list:
    """Eager gradient accumulation: each micro-batch's backward, then one update; the
    losses (and what ``before_step`` returned, last)."""
    optimizer.zero_grad(set_to_none=True)
    losses = []
    for x, (t,) in zip(batches, targets):
        loss = loss_fn(model(x), t)
        loss.backward()
        losses.append(loss.detach())
    if before_step is not None:
        losses.append(before_step(dict(model.named_parameters())))
    optimizer.step()
    return losses


@pytest.mark.parametrize("make_model,shape", [
    (lambda: torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4)), (2, 16)),
    (lambda: small_cnn(), (2, 3, 16, 16)),
], ids=["mlp", "cnn"])
def test_gradient_accumulation_of_four_micro_batches(make_model, shape):
    """Four micro-batches of 2 per update, five updates: eager's losses, parameters,
    buffers and optimizer state bitwise; the plan covers all four passes and the update."""
    from model_runtime import ReoptimizeError

    torch.manual_seed(0)
    model = make_model()
    ref = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    loss_fn = lambda out, y: torch.nn.functional.cross_entropy(out, y) / 4  # noqa: E731 - mean over micro-batches
    y = lambda: torch.randint(0, 4, (2,))  # noqa: E731
    # what before_step returns is kept for the caller, here the summed gradients' norm
    report = lambda ps: (torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in ps.values()])),)  # noqa: E731
    step = optimize(model, torch.randn(*shape), optimizer=opt, loss_fn=loss_fn, targets=(y(),),
                    accumulation_steps=4, time_limit=2, before_step=report)
    assert step.plan.graph.meta["accumulation_steps"] == 4
    for _ in range(5):
        batches = [torch.randn(*shape) for _ in range(4)]
        targets = [(y(),) for _ in range(4)]
        losses = step.accumulate(batches, targets)
        expected = _eager_accumulated(ref, ref_opt, loss_fn, batches, targets, before_step=report)
        assert len(losses) == 4 and all(torch.equal(a, b) for a, b in zip(losses, expected[:4]))
        assert isinstance(step.before_step_result, tuple) and torch.equal(step.before_step_result[0], expected[4][0])
    assert_same_state(model, opt, ref, ref_opt)
    with pytest.raises(ReoptimizeError, match="accumulate"):
        step(torch.randn(*shape), targets=(y(),))
    with pytest.raises(ReoptimizeError, match="4 micro-batch"):
        step.accumulate([torch.randn(*shape)] * 3, [(y(),)] * 3)
    short = (1, *shape[1:])
    odd = re.escape(f"micro-batch 3 is shaped otherwise than micro-batch 0 ([({short}")
    with pytest.raises(ReoptimizeError, match=odd):
        step.accumulate([torch.randn(*shape)] * 3 + [torch.randn(*short)], [(y(),)] * 3 + [(y()[:1],)])
    assert len(step.plans) == 1  # refused before any plan


def test_gradient_accumulation_with_a_warmup_from_zero_plans_again():
    """Hugging Face's get_linear_schedule_with_warmup starts at lr=0, which the step
    holds as a constant (a zero decides the optimizer's branches); the first positive
    lr asks for a plan of its own, which step.accumulate makes as calls do (before: a
    ReoptimizeError at the second update), with as many micro-batches."""
    from model_runtime.optimized_step import ReplanWarning

    torch.manual_seed(0)
    model = small_cnn()
    ref = copy.deepcopy(model)
    opt, ref_opt = (torch.optim.AdamW(m.parameters(), lr=1e-3) for m in (model, ref))
    scheds = [torch.optim.lr_scheduler.LambdaLR(o, lambda s: min(1.0, s / 2)) for o in (opt, ref_opt)]
    loss_fn = lambda out, y: torch.nn.functional.cross_entropy(out, y) / 2  # noqa: E731
    y = lambda: torch.randint(0, 10, (2,))  # noqa: E731
    step = optimize(model, torch.randn(2, 3, 16, 16), optimizer=opt, loss_fn=loss_fn, targets=(y(),),
                    accumulation_steps=2, time_limit=2)
    for i in range(4):
        batches, targets = [torch.randn(2, 3, 16, 16) for _ in range(2)], [(y(),) for _ in range(2)]
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            losses = step.accumulate(batches, targets)
        replans = [w for w in seen if issubclass(w.category, ReplanWarning)]
        assert len(replans) == (i == 1) and all(w.filename == __file__ for w in replans)
        expected = _eager_accumulated(ref, ref_opt, loss_fn, batches, targets)
        assert all(torch.equal(a, b) for a, b in zip(losses, expected))
        for s in scheds:
            s.step()
    assert_same_state(model, opt, ref, ref_opt)
    assert [p.graph.meta["accumulation_steps"] for p in step.plans] == [2, 2]


@pytest.mark.parametrize("accumulate, eval_first", [(False, False), (True, False), (False, True)])
def test_state_seeded_by_the_learning_rate_follows_a_schedule_made_after_optimize(accumulate, eval_first):
    """Rprop's step sizes start at ``lr`` when eager's first ``step()`` creates its state.
    optimize() creates that state earlier (for the step to update it from its first call),
    and a LambdaLR made after optimize() scales ``lr`` at once: the state is made again
    at the first call, from the ``lr`` of then (before: the step sizes started from the
    ``lr`` of optimize() and the updates differed from eager's). A change after the
    first call touches no state, as in eager."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    ref = copy.deepcopy(model)
    opt, ref_opt = (torch.optim.Rprop(m.parameters(), lr=1e-2) for m in (model, ref))
    loss_fn = torch.nn.functional.cross_entropy
    micro = 2 if accumulate else 1
    step = optimize(model, torch.randn(8, 16), optimizer=opt, loss_fn=loss_fn, targets=(torch.randint(0, 4, (8,)),),
                    accumulation_steps=micro, time_limit=2)
    scheds = [torch.optim.lr_scheduler.LambdaLR(o, lambda s: 0.1 * (s + 1)) for o in (opt, ref_opt)]
    if eval_first:  # a validation pass before training: no update, the state stays to be made
        model.eval()
        with pytest.warns(UserWarning, match="planning a new step"):
            step(torch.randn(8, 16))
        model.train()
        for sched in scheds:
            sched.step()
    for i in range(3):
        batches, targets = [torch.randn(8, 16) for _ in range(micro)], [(torch.randint(0, 4, (8,)),)] * micro
        losses = step.accumulate(batches, targets) if accumulate else (step(batches[0], targets=targets[0]),)
        expected = _eager_accumulated(ref, ref_opt, loss_fn, batches, targets)
        assert all(torch.equal(a, b) for a, b in zip(losses, expected)), i
        for sched in scheds:
            sched.step()
    assert_same_state(model, opt, ref, ref_opt)


@pytest.mark.parametrize("executor", ["reorder", "arena"])
def test_cnn_with_batch_norm_under_bf16_autocast(executor):
    """BatchNorm under autocast takes a bf16 input with fp32 weights, which CPU's
    native_batch_norm.out refuses: such mixed-dtype ops run as fallbacks in the arena."""
    torch.manual_seed(0)
    model = small_cnn()
    ref = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    step = optimize(model, torch.randn(4, 3, 16, 16), optimizer=opt, autocast=torch.bfloat16, executor=executor,
                    time_limit=2)
    for _ in range(3):
        x = torch.randn(4, 3, 16, 16)
        loss = step(x)
        ref_opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            expected = ref(x).sum()  # the default loss: the sum of the (bf16) output
        expected.backward()
        ref_opt.step()
        assert torch.equal(loss, expected.detach())
    assert_same_state(model, opt, ref, ref_opt)


def test_the_training_loop_example_runs():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[2] / "examples" / "training_loop.py"
    spec = importlib.util.spec_from_file_location("training_loop", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    assert 0.0 <= example.main(["--epochs", "1", "--device", "cpu"]) <= 1.0
    assert 0.0 <= example.main(["--epochs", "1", "--device", "cpu", "--amp", "fp16"]) <= 1.0


def eager_scaled_step(model, optimizer, scaler, x, y, before_step=None):
    """The AMP recipe with dynamic loss scaling: fp16 autocast, scale, (unscale, clip,) step, update."""
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.float16):
        loss = torch.nn.functional.cross_entropy(model(x), y)
    scaler.scale(loss).backward()
    if before_step is not None:
        scaler.unscale_(optimizer)
        before_step(dict(model.named_parameters()))
    scaler.step(optimizer)
    scaler.update()
    return loss.detach()


@pytest.mark.parametrize("executor", ["reorder", "arena"])
@pytest.mark.parametrize("clip", [False, True])
def test_cnn_fp16_autocast_with_grad_scaler_skips_an_inf_step(executor, clip):
    """fp16 autocast with a GradScaler: a huge initial scale overflows the fp16 gradients
    of the first step, which is skipped (parameters, momentum and Adam's step count
    untouched) while the scale backs off; later steps update. Five steps bitwise equal
    to eager: loss, parameters, buffers, optimizer state, scale and growth tracker."""
    torch.manual_seed(0)
    model = small_cnn()
    ref = copy.deepcopy(model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    ref_opt = torch.optim.Adam(ref.parameters(), lr=1e-2)

    def make_scaler():
        return torch.amp.GradScaler("cpu", init_scale=2.0 ** 24, backoff_factor=2.0 ** -12, growth_interval=2)

    scaler, ref_scaler = make_scaler(), make_scaler()
    updates = {id(opt): 0, id(ref_opt): 0}  # a step post-hook runs after updates only, as eager's
    for o in (opt, ref_opt):
        o.register_step_post_hook(lambda o, args, kwargs: updates.__setitem__(id(o), updates[id(o)] + 1))
    clip_fn = (lambda ps: torch.nn.utils.clip_grad_norm_(ps.values(), 1.0)) if clip else None
    y = torch.randint(0, 10, (4,))
    step = optimize(model, torch.randn(4, 3, 16, 16), optimizer=opt, loss_fn=torch.nn.functional.cross_entropy,
                    targets=(y,), autocast=torch.float16, scaler=scaler, executor=executor, time_limit=2,
                    before_step=clip_fn)
    assert step.plan.graph.meta["grad_scaler"] is True
    before = copy.deepcopy(model.state_dict())
    scales = []
    for i in range(5):
        x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,))
        loss = step(x, targets=(y,))
        expected = eager_scaled_step(ref, ref_opt, ref_scaler, x, y, clip_fn)
        assert torch.equal(loss, expected), i
        if i == 0:  # skipped: nothing changed but the scale
            assert all(torch.equal(a, before[k]) for k, a in model.state_dict().items() if "running" not in k
                       and "num_batches" not in k)
            assert all(float(s["step"]) == 0 for s in opt.state.values())
        assert torch.equal(scaler._scale, ref_scaler._scale) and torch.equal(scaler._growth_tracker,
                                                                             ref_scaler._growth_tracker), i
        scales.append(scaler.get_scale())
        assert updates[id(opt)] == updates[id(ref_opt)] == i, (i, updates)  # none at the skipped step 0
        if ref_opt.state:  # eager creates Adam's (zero) state at its first update, not at a skipped one
            assert_same_state(model, opt, ref, ref_opt)
    assert scales[0] == 2.0 ** 12 and scales[-1] > scales[0]  # backed off once, then grew
    assert any(float(s["step"]) > 0 for s in opt.state.values())


@pytest.mark.parametrize("executor", ["reorder", "arena"])
def test_optimizer_step_post_hooks_run_after_each_optimized_update_as_in_eager(executor):
    """A step post-hook keeping an exponential moving average of the weights (and one
    registered globally after ``optimize``) runs after every optimized update, with
    ``step()``'s arguments, seeing the updated parameters: the average is bitwise
    eager's. Before, the optimized step never called them."""
    from torch.optim.optimizer import register_optimizer_step_post_hook

    torch.manual_seed(0)
    model = small_cnn()
    ref = copy.deepcopy(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ref_opt = torch.optim.AdamW(ref.parameters(), lr=1e-2)
    averages, calls = {}, []

    def ema(optimizer, args, kwargs):
        calls.append((optimizer, args, kwargs))
        for group in optimizer.param_groups:
            for p in group["params"]:
                averages.setdefault((id(optimizer), id(p)), p.detach().clone()).lerp_(p.detach(), 0.1)

    for o in (opt, ref_opt):
        o.register_step_post_hook(ema)
    y = torch.randint(0, 10, (4,))
    step = optimize(model, torch.randn(4, 3, 16, 16), optimizer=opt, loss_fn=torch.nn.functional.cross_entropy,
                    targets=(y,), executor=executor, time_limit=2)
    assert calls == [] and averages == {}  # capture calls no hook
    handle = register_optimizer_step_post_hook(lambda o, args, kwargs: calls.append("global"))
    try:
        for i in range(3):
            x = torch.randn(4, 3, 16, 16)
            assert torch.equal(step(x, targets=(y,)), eager_step(ref, ref_opt, x, torch.nn.functional.cross_entropy,
                                                                  (y,)))
            assert calls[-4:] == [(opt, (opt,), {}), "global", (ref_opt, (ref_opt,), {}), "global"], i
    finally:
        handle.remove()
    assert_same_state(model, opt, ref, ref_opt)
    for p, q in zip(model.parameters(), ref.parameters()):
        assert torch.equal(averages[id(opt), id(p)], averages[id(ref_opt), id(q)])
    assert not torch.equal(averages[id(opt), id(next(model.parameters()))], next(model.parameters()))


def test_grad_scaler_misuse_is_refused():
    from model_ir.torch.errors import CaptureError, ExecutionError
    from model_runtime.optimized_step import ReplanWarning

    model = small_cnn()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(CaptureError, match="GradScaler"):
        optimize(model, torch.randn(2, 3, 16, 16), optimizer=opt, scaler=object(), time_limit=1)
    fused = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    with pytest.raises(CaptureError, match="fused"):
        optimize(model, torch.randn(2, 3, 16, 16), optimizer=fused, scaler=torch.amp.GradScaler("cpu"),
                 time_limit=1)
    scaler = torch.amp.GradScaler("cpu")
    step = optimize(model, torch.randn(2, 3, 16, 16), optimizer=opt, scaler=scaler, time_limit=1,
                    executor="reorder")
    step(torch.randn(2, 3, 16, 16))
    scaler._growth_factor = 4.0  # a constant of the step: a new plan, as for a new shape
    with pytest.warns(ReplanWarning, match="growth_factor"):
        step(torch.randn(2, 3, 16, 16))
    assert len(step.plans) == 2
    with pytest.raises(ExecutionError, match="GradScaler"):
        step.captured.bind(model, opt, torch.randn(2, 3, 16, 16))  # the scaler is not optional


def test_captured_step_run_skips_the_update_with_a_grad_scaler():
    """The reference executor (CapturedStep.run) skips the update as the compiled programs do."""
    from model_ir.torch import capture_step

    torch.manual_seed(0)
    model = small_cnn()
    ref = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 24, backoff_factor=2.0 ** -12)
    ref_scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 24, backoff_factor=2.0 ** -12)
    y = torch.randint(0, 10, (4,))
    captured = capture_step(model, torch.randn(4, 3, 16, 16), optimizer=opt, targets=(y,),
                            loss_fn=torch.nn.functional.cross_entropy, autocast=torch.float16, scaler=scaler)
    skipped = [op for op in captured.graph.ops if op.meta.get("skipped_if_inf")]
    assert skipped and all(op.meta["phase"] == "optimizer" for op in skipped)
    for _ in range(3):
        x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,))
        (loss,) = captured.run(model, opt, x, (y,), scaler=scaler)
        assert torch.equal(loss, eager_scaled_step(ref, ref_opt, ref_scaler, x, y))
        assert torch.equal(scaler._scale, ref_scaler._scale)
    assert ref_scaler.get_scale() < 2.0 ** 24  # a step was skipped
    assert_same_state(model, opt, ref, ref_opt)


class _ReturnsItsLoss(torch.nn.Module):
    """A model that computes its loss when given labels and returns a dict, as Hugging
    Face models return ``ModelOutput(loss=..., logits=...)``."""

    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))

    def forward(self, x, labels=None):
        logits = self.body(x)
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = torch.nn.functional.cross_entropy(logits, labels)
        return out


@pytest.mark.parametrize("executor", ["reorder", "arena"])
def test_a_model_returning_its_loss_trains_on_it(executor):
    """Without loss_fn, a mapping output's "loss" is the loss (before: the sum of every
    floating output, logits included: silently another training)."""
    torch.manual_seed(0)
    model = _ReturnsItsLoss()
    ref = copy.deepcopy(model)
    opt, ref_opt = (torch.optim.AdamW(m.parameters(), lr=1e-2) for m in (model, ref))
    batch = lambda: {"x": torch.randn(8, 6), "labels": torch.randint(0, 3, (8,))}  # noqa: E731
    step = optimize(model, batch(), optimizer=opt, executor=executor, time_limit=1)
    for _ in range(3):
        b = batch()
        ref_opt.zero_grad()
        expected = ref(**b)["loss"]
        expected.backward()
        ref_opt.step()
        assert torch.equal(step(**b), expected.detach())
    assert_same_state(model, opt, ref, ref_opt)


def test_a_hugging_face_model_given_labels_trains_on_its_loss():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50, n_positions=16)
    model = transformers.GPT2LMHeadModel(config).train()
    ref = copy.deepcopy(model)
    opt, ref_opt = (torch.optim.AdamW(m.parameters(), lr=1e-3) for m in (model, ref))
    ids = torch.randint(0, 50, (2, 8))
    step = optimize(model, {"input_ids": ids, "labels": ids}, optimizer=opt, time_limit=1)
    for seed in range(2):
        ids = torch.randint(0, 50, (2, 8))
        torch.manual_seed(seed)
        loss = step(input_ids=ids, labels=ids)
        torch.manual_seed(seed)
        ref_opt.zero_grad()
        expected = ref(input_ids=ids, labels=ids).loss
        expected.backward()
        ref_opt.step()
        assert torch.equal(loss, expected.detach())
    assert_same_state(model, opt, ref, ref_opt)


class _Lion(torch.optim.Optimizer):
    """A hand-written optimizer as users write them (Lion: sign of an interpolated
    momentum), its state created lazily in step(); ``counter`` says where it counts its
    steps: "tensor" (as torch's optimizers, in state), or in Python: "state" (an int in
    the state), "group" (a param-group entry) or "attribute"."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1, counter="tensor"):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay, k=0))
        self.counter, self.k = counter, 0

    @torch.no_grad()
    def step(self, closure=None):
        if self.counter == "attribute":
            self.k += 1
        for group in self.param_groups:
            if self.counter == "group":
                group["k"] += 1
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p)
                    state["step"] = torch.tensor(0.0) if self.counter == "tensor" else 0
                state["step"] += 1
                b1, b2 = group["betas"]
                warmup = torch.clamp(state["step"] / 3, max=1.0) if self.counter == "tensor" else 1.0
                p.mul_(1 - group["lr"] * group["weight_decay"])
                update = state["exp_avg"].mul(b1).add(p.grad, alpha=1 - b1).sign_()
                p.add_(update * warmup, alpha=-group["lr"])
                state["exp_avg"].mul_(b2).add_(p.grad, alpha=1 - b2)


@pytest.mark.parametrize("executor", ["reorder", "arena"])
def test_a_hand_written_optimizer_with_lazy_state_is_eager(executor):
    torch.manual_seed(0)
    train_both(TransformerBlock(16, 2), lambda m: _Lion(m.parameters()),
               lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda s: 1 / (s + 1)),
               lambda: torch.randn(2, 6, 16), executor=executor)


@pytest.mark.parametrize("counter", ["state", "group", "attribute"])
def test_an_optimizer_counting_in_python_is_refused_and_left_as_it_was(counter):
    """Its update would run with the count it had when captured, at every call (before:
    silently; and planning itself bumped the user's counter)."""
    from model_ir.torch.errors import CaptureError

    torch.manual_seed(0)
    model = TransformerBlock(16, 2)
    opt = _Lion(model.parameters(), counter=counter)
    where = {"state": r"state\['step'\] of parameter '[\w.]+'", "group": r"param_groups\[0\]\['k'\]",
             "attribute": r"\.k"}[counter]
    with pytest.raises(CaptureError, match=rf"_Lion.step\(\) changes a Python value \({where} went from "
                                           r"\d+ to \d+\): .*keep such counters in tensors"):
        optimize(model, torch.randn(2, 6, 16), optimizer=opt, time_limit=1)
    assert opt.k == 0 and opt.param_groups[0]["k"] == 0
    assert all(st["step"] == 0 for st in opt.state.values())


def test_a_loss_among_tuple_outputs_is_pointed_out():
    """A model returning ``(loss, logits)`` (Hugging Face's ``return_dict=False``), no
    loss_fn: the default loss sums both, which is not what the user trains on; said at
    the user's line, with the loss_fn to pass. One output, or a loss_fn: nothing said."""
    class LossAndLogits(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(6, 3)

        def forward(self, x, y):
            logits = self.fc(x)
            return torch.nn.functional.cross_entropy(logits, y), logits

    torch.manual_seed(0)
    model = LossAndLogits()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    example = (torch.randn(4, 6), torch.randint(0, 3, (4,)))
    with pytest.warns(UserWarning, match=r"output\[0\] is a single number, a loss it computed\? .*pass "
                                         r"loss_fn=lambda out: out\[0\]") as seen:
        optimize(model, example, optimizer=opt, time_limit=0.5)
    assert [w.filename for w in seen if "a loss it computed" in str(w.message)] == [__file__]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        step = optimize(model, example, optimizer=opt, loss_fn=lambda out: out[0], time_limit=0.5)
        ref = copy.deepcopy(model)
        expected = torch.nn.functional.cross_entropy(ref.fc(example[0]), example[1])
        assert torch.equal(step(*example), expected.detach())


def test_the_plans_of_one_step_share_one_arena():
    """A short last batch, a bigger batch and an eval pass each get a plan, which never
    run at once: they run in one arena, the largest plan's (before: one arena each, their
    sum held for good, where eager's caching allocator reuses one pool). A plan bigger
    than the arena grows it in place; the plans made before run on, bitwise eager's."""
    from model_runtime.optimized_step import ReplanWarning

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 512), torch.nn.ReLU(), torch.nn.Dropout(0.1),
                                torch.nn.Linear(512, 5))
    ref = copy.deepcopy(model)
    opt, ref_opt = (torch.optim.AdamW(m.parameters(), lr=1e-3) for m in (model, ref))
    loss_fn = torch.nn.functional.cross_entropy
    step = optimize(model, torch.randn(4, 32), optimizer=opt, loss_fn=loss_fn, targets=(torch.randint(0, 5, (4,)),),
                    executor="arena", time_limit=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ReplanWarning)
        for i, batch in enumerate([4, 64, 4, 3, 64]):
            x, y = torch.randn(batch, 32), torch.randint(0, 5, (batch,))
            torch.manual_seed(i)
            got = step(x, targets=(y,))
            torch.manual_seed(i)
            assert torch.equal(got, eager_step(ref, ref_opt, x, loss_fn, (y,))), batch
        model.eval()
        ref.eval()
        x = torch.randn(64, 32)
        with torch.no_grad():
            assert torch.equal(step(x), ref(x))
    assert_same_state(model, opt, ref, ref_opt)
    arenas = {v.program.arena.untyped_storage().data_ptr() for v in step.variants}
    sizes = [v.plan.placement.arena_bytes for v in step.variants]
    assert len(step.variants) == 4 and len(arenas) == 1 and len(set(sizes)) > 1
    assert step.variants[0].program.arena.numel() == max(sizes) > sizes[0]


class _VAE(torch.nn.Module):
    """PyTorch's VAE example, smaller (examples/vae/main.py: BCE summed plus the KL term)."""

    def __init__(self, pixels=96, hidden=48, latent=8):
        super().__init__()
        self.pixels = pixels
        self.fc1, self.fc21, self.fc22 = (torch.nn.Linear(pixels, hidden), torch.nn.Linear(hidden, latent),
                                          torch.nn.Linear(hidden, latent))
        self.fc3, self.fc4 = torch.nn.Linear(latent, hidden), torch.nn.Linear(hidden, pixels)

    def forward(self, x):
        h = torch.relu(self.fc1(x.view(-1, self.pixels)))
        mu, logvar = self.fc21(h), self.fc22(h)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return torch.sigmoid(self.fc4(torch.relu(self.fc3(z)))), mu, logvar


def _vae_loss(out, x):
    recon, mu, logvar = out
    bce = torch.nn.functional.binary_cross_entropy(recon, x.view(-1, recon.shape[1]), reduction="sum")
    return bce + -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())


def _huber_with_penalty(out, target):
    return torch.nn.functional.huber_loss(out, target) + 0.01 * out.pow(2).mean()


@pytest.mark.parametrize("case", ["vae (binary cross-entropy)", "huber plus a penalty"])
def test_reduced_losses_inside_the_step_in_the_arena(case):
    """A reduced loss that is not the step's result (the VAE's BCE plus its KL term) gets
    an arena slot. Binary cross-entropy's and Huber's out= kernels write the unreduced
    loss through their 0-dim out tensor, over the buffers after it: the VAE trained on a
    loss of 17.3 where eager's was 35147. Now they run as fallbacks, their result copied
    into the slot (4 bytes of the kernel's larger storage), without a warning."""
    torch.manual_seed(0)
    if case.startswith("vae"):
        model, loss_fn, x = _VAE(), _vae_loss, torch.rand(32, 96)
        target = x
    else:
        model = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64))
        loss_fn, x, target = _huber_with_penalty, torch.randn(32, 16), torch.rand(32, 64)
    ref = copy.deepcopy(model)
    opt, ref_opt = (torch.optim.Adam(m.parameters(), lr=1e-3) for m in (model, ref))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        step = optimize(model, x, optimizer=opt, loss_fn=loss_fn, targets=(target,), executor="arena", time_limit=2)
        for i in range(3):
            torch.manual_seed(100 + i)
            loss = step(x, targets=(target,))
            torch.manual_seed(100 + i)
            assert torch.equal(loss, eager_step(ref, ref_opt, x, loss_fn, (target,))), i
    assert_same_state(model, opt, ref, ref_opt)
