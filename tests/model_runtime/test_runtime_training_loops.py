"""Real training loops with an optimized step (issue: LR schedules): five steps bitwise
equal to the same loop in eager PyTorch from the same seed, with the learning rate (and
momentum / betas) changed by a scheduler after every step, without a new plan."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")

from model_ir.testing.torch_models import TransformerBlock, assert_same_state, eager_step, small_cnn  # noqa: E402
from model_runtime import optimize  # noqa: E402


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
    assert step.plan is plan and len(set(lrs)) == steps  # every step had another learning rate, one plan
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
    with pytest.raises(ReoptimizeError, match="max_plans"):
        limited(torch.randn(5, 16))


@pytest.mark.parametrize("executor", ["reorder", "arena"])
def test_set_grads_leaves_eager_gradients_in_dot_grad(executor):
    """``set_grads=True``: after each step ``.grad`` holds eager's gradients (clipped by
    ``before_step``, as the optimizer saw them), and the plan pays for keeping them."""
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
    for i in range(3):
        x = torch.randn(4, 16, 32)
        loss = step(x)
        ref_opt.zero_grad(set_to_none=True)
        expected = ref(x).sum()
        expected.backward()
        clip(dict(ref.named_parameters()))
        grads = [p.grad.clone() for p in ref.parameters()]
        ref_opt.step()
        assert torch.equal(loss, expected.detach())
        for p, g in zip(model.parameters(), grads):
            assert p.grad is not None and torch.equal(p.grad, g)
    assert_same_state(model, opt, ref, ref_opt)


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
    step = optimize(model, torch.randn(*shape), optimizer=opt, loss_fn=loss_fn, targets=(y(),),
                    accumulation_steps=4, time_limit=2)
    assert step.plan.graph.meta["accumulation_steps"] == 4
    for _ in range(5):
        batches = [torch.randn(*shape) for _ in range(4)]
        targets = [(y(),) for _ in range(4)]
        losses = step.accumulate(batches, targets)
        ref_opt.zero_grad(set_to_none=True)
        expected = []
        for x, (t,) in zip(batches, targets):
            loss = loss_fn(ref(x), t)
            loss.backward()
            expected.append(loss.detach())
        ref_opt.step()
        assert len(losses) == 4 and all(torch.equal(a, b) for a, b in zip(losses, expected))
    assert_same_state(model, opt, ref, ref_opt)
    with pytest.raises(ReoptimizeError, match="accumulate"):
        step(torch.randn(*shape), targets=(y(),))
    with pytest.raises(ReoptimizeError, match="4 micro-batch"):
        step.accumulate([torch.randn(*shape)] * 3, [(y(),)] * 3)


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
