"""Parameters frozen, unfrozen or replaced after optimize(): the step re-plans and stays
bitwise eager's, or refuses (a parameter the optimizer does not hold), for each executor."""

from __future__ import annotations

import copy
import re
import types
import warnings

import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from model_ir.testing.torch_models import assert_same_state, eager_step  # noqa: E402
from model_runtime import RuntimeLayerError, optimize  # noqa: E402
from model_runtime.errors import ReoptimizeError  # noqa: E402
from model_runtime.optimized_step import ReplanWarning  # noqa: E402

EXECUTORS = ("reorder", "arena", "program")


def _both(executor, frozen=()):
    """A model and its eager twin, each with an SGD-with-momentum optimizer, the
    parameters named in ``frozen`` frozen in both, and the step optimized for the first."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    for name, p in model.named_parameters():
        p.requires_grad_(name not in frozen)
    ref = copy.deepcopy(model)
    opt, ref_opt = (torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (model, ref))
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    step = optimize(model, x, optimizer=opt, loss_fn=F.cross_entropy, targets=(y,), executor=executor,
                    time_limit=0.5)
    return model, opt, ref, ref_opt, step


def _compare(model, opt, ref, ref_opt, step, seed):
    x = torch.randn(8, 6, generator=torch.Generator().manual_seed(seed))
    y = torch.randint(0, 3, (8,), generator=torch.Generator().manual_seed(seed))
    assert torch.equal(step(x, targets=(y,)), eager_step(ref, ref_opt, x, F.cross_entropy, (y,)))
    assert_same_state(model, opt, ref, ref_opt)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_freezing_a_parameter_replans_and_stays_eager(executor):
    model, opt, ref, ref_opt, step = _both(executor)
    _compare(model, opt, ref, ref_opt, step, 0)
    for m in (model, ref):
        m[0].weight.requires_grad_(False)
    frozen = model[0].weight.detach().clone()
    with pytest.warns(ReplanWarning, match=r"'0\.weight' no longer requires grad"):
        _compare(model, opt, ref, ref_opt, step, 1)
    _compare(model, opt, ref, ref_opt, step, 2)
    assert torch.equal(model[0].weight, frozen)
    # Unfrozen again: the first plan fits, no new one.
    for m in (model, ref):
        m[0].weight.requires_grad_(True)
    _compare(model, opt, ref, ref_opt, step, 3)
    assert len(step.plans) == 2 and not torch.equal(model[0].weight, frozen)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_parameter_frozen_at_optimize_and_unfrozen_later_is_updated(executor):
    model, opt, ref, ref_opt, step = _both(executor, frozen=("2.weight",))
    _compare(model, opt, ref, ref_opt, step, 0)
    before = model[2].weight.detach().clone()
    for m in (model, ref):
        m[2].weight.requires_grad_(True)
    with pytest.warns(ReplanWarning, match=r"'2\.weight' requires grad"):
        _compare(model, opt, ref, ref_opt, step, 1)
    _compare(model, opt, ref, ref_opt, step, 2)
    assert not torch.equal(model[2].weight, before)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_replaced_parameter_the_optimizer_does_not_hold_is_refused(executor):
    model, opt, ref, ref_opt, step = _both(executor)
    _compare(model, opt, ref, ref_opt, step, 0)
    for m in (model, ref):
        m[2].weight = nn.Parameter(m[2].weight.detach() * 2)
    before = copy.deepcopy(model.state_dict())
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    with pytest.raises(RuntimeLayerError, match=r"not a parameter of the model \(was parameter '2\.weight' "
                                                r"replaced.*put the model's parameters in the optimizer") as info:
        step(x, targets=(y,))
    assert not isinstance(info.value, ReoptimizeError)  # no new plan can be right: not re-planned
    assert len(step.plans) == 1
    for name, t in model.state_dict().items():
        assert torch.equal(t, before[name]), name  # refused before running anything
    # Put in the optimizer too: eager updates it (from a fresh momentum buffer), and so does the step.
    for m, o in ((model, opt), (ref, ref_opt)):
        o.param_groups[0]["params"][2] = m[2].weight
    with pytest.warns(ReplanWarning):
        _compare(model, opt, ref, ref_opt, step, 1)
    _compare(model, opt, ref, ref_opt, step, 2)
    assert not torch.equal(model[2].weight, before["2.weight"])


@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_parameter_taken_out_of_the_optimizer_replans_and_is_not_updated(executor):
    model, opt, ref, ref_opt, step = _both(executor)
    _compare(model, opt, ref, ref_opt, step, 0)
    for o in (opt, ref_opt):
        del o.param_groups[0]["params"][0]  # 0.weight: still trained by nothing
    before = model[0].weight.detach().clone()
    with pytest.warns(ReplanWarning, match="optimizer's parameters changed"):
        _compare(model, opt, ref, ref_opt, step, 1)
    _compare(model, opt, ref, ref_opt, step, 2)
    assert torch.equal(model[0].weight, before)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_unfreezing_a_layer_with_add_param_group_replans_and_stays_eager(executor):
    """The fine-tuning recipe: train the head first, then unfreeze the body and give it
    a param group of its own with a smaller learning rate."""
    model, opt, ref, ref_opt, step = _both(executor, frozen=("0.weight", "0.bias"))
    for m, o in ((model, opt), (ref, ref_opt)):
        o.param_groups[0]["params"] = list(m[2].parameters())
    step = optimize(model, torch.randn(8, 6), optimizer=opt, loss_fn=F.cross_entropy,
                    targets=(torch.randint(0, 3, (8,)),), executor=executor, time_limit=0.5)
    _compare(model, opt, ref, ref_opt, step, 0)
    for m, o in ((model, opt), (ref, ref_opt)):
        m[0].requires_grad_(True)
        o.add_param_group({"params": list(m[0].parameters()), "lr": 0.01})
    with pytest.warns(ReplanWarning, match=r"param groups changed \(1 when planned, now 2\)") as record:
        _compare(model, opt, ref, ref_opt, step, 1)
    assert not any("optimize again" in str(w.message) for w in record)  # the step plans again by itself
    _compare(model, opt, ref, ref_opt, step, 2)
    assert len(step.plans) == 2


class _UnusedHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
        self.head = nn.Linear(64, 64)  # never called: no gradient, no update, no state

    def forward(self, x):
        return self.body(x)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_parameter_without_gradient_gets_no_optimizer_state(executor):
    torch.manual_seed(0)
    model = _UnusedHead()
    ref = copy.deepcopy(model)
    opt, ref_opt = (torch.optim.AdamW(m.parameters(), lr=0.1, weight_decay=0.1) for m in (model, ref))
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    step = optimize(model, x, optimizer=opt, loss_fn=F.cross_entropy, targets=(y,), executor=executor,
                    time_limit=0.5)
    assert model.head.weight not in opt.state  # optimize() created none for it either
    # The plan holds no state for it: parameters, the batch and Adam's state of body alone.
    head = sum(p.numel() * 4 for p in model.head.parameters())
    adam = sum(2 * p.numel() * 4 for p in model.body.parameters())
    assert step.figures()["persistent_bytes"] < sum(p.numel() * 4 for p in model.parameters()) + adam + head
    for seed in range(3):
        _compare(model, opt, ref, ref_opt, step, seed)
    assert len(opt.state) == len(ref_opt.state) == 4


@pytest.mark.parametrize("executor", EXECUTORS)
def test_gradient_hooks_are_part_of_the_step_and_changing_them_replans(executor):
    def clamp(g):
        return g.clamp(-0.01, 0.01)

    def halve(g):
        return g * 0.5

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    ref = copy.deepcopy(model)
    for m in (model, ref):
        m[0].weight.register_hook(clamp)
    opt, ref_opt = (torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (model, ref))
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    step = optimize(model, x, optimizer=opt, loss_fn=F.cross_entropy, targets=(y,), executor=executor,
                    time_limit=0.5)
    _compare(model, opt, ref, ref_opt, step, 0)
    _compare(model, opt, ref, ref_opt, step, 1)
    handles = [m[2].bias.register_hook(halve) for m in (model, ref)]
    with pytest.warns(ReplanWarning, match=r"'2\.bias': its gradient hooks"):
        _compare(model, opt, ref, ref_opt, step, 2)
    for h in handles:
        h.remove()
    _compare(model, opt, ref, ref_opt, step, 3)  # the first plan fits again
    assert len(step.plans) == 2
    # A post-accumulate-grad hook takes the real parameter, which the step does not run.
    model[2].weight.register_post_accumulate_grad_hook(lambda p: None)
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(RuntimeLayerError, match=r"'2\.weight' has a post-accumulate-grad hook"):
        step(x, targets=(y,))
    for name, t in model.state_dict().items():
        assert torch.equal(t, before[name]), name


@pytest.mark.parametrize("executor", EXECUTORS)
def test_training_a_model_in_eval_mode_keeps_its_modes(executor):
    """``optimize(model.eval(), ..., train=True)``: eager's loop trains the model as it
    is, BatchNorm on its running statistics (left as they are) and no dropout; so does
    the step (before: it put the whole model in training mode, silently another step).
    ``model.train()`` later asks for a plan of its own."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 3)).eval()
    ref = copy.deepcopy(model)
    opt, ref_opt = (torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (model, ref))
    stats = model[1].running_mean.clone()
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    step = optimize(model, x, optimizer=opt, loss_fn=F.cross_entropy, targets=(y,), executor=executor,
                    time_limit=0.5, train=True)
    assert not model.training
    for seed in range(3):
        _compare(model, opt, ref, ref_opt, step, seed)
    assert torch.equal(model[1].running_mean, stats)
    for m in (model, ref):
        m.train()
    with pytest.warns(ReplanWarning, match=r"training mode"):
        torch.manual_seed(3)
        got = step(x, targets=(y,))
    torch.manual_seed(3)
    assert torch.equal(got, eager_step(ref, ref_opt, x, F.cross_entropy, (y,)))
    assert not torch.equal(model[1].running_mean, stats)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_module_modes_attributes_and_hooks_changed_later_replan(executor):
    """Between training steps, the model still in training mode: BatchNorm's statistics
    frozen (``bn.eval()``), dropout's rate changed, a forward hook added, then removed.
    The step's ops were traced with the old state (batch statistics and running-stat
    updates, the old rate baked in, no hook), so each change asks for a plan of its own,
    and the step stays eager's (before: it silently ran the old ops)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Dropout(0.3),
                          nn.Linear(8 * 6 * 6, 3))
    ref = copy.deepcopy(model)
    opt, ref_opt = (torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (model, ref))
    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 3, (4,))
    step = optimize(model, x, optimizer=opt, loss_fn=F.cross_entropy, targets=(y,), executor=executor,
                    time_limit=0.5)

    def both(seed):
        torch.manual_seed(seed)
        got = step(x, targets=(y,))
        torch.manual_seed(seed)
        assert torch.equal(got, eager_step(ref, ref_opt, x, F.cross_entropy, (y,)))

    both(0)
    for m in (model, ref):
        m[1].eval()
    with pytest.warns(ReplanWarning, match=r"module '1' \(BatchNorm2d\) is in eval mode, the step was planned with "
                                           r"it in training mode"):
        both(1)
    for m in (model, ref):
        m[4].p = 0.1
    with pytest.warns(ReplanWarning, match=r"attribute 'p' of module '4' \(Dropout\) is 0.1, the step was planned "
                                           r"with 0.3"):
        both(2)
    double = lambda module, args, out: out * 2  # noqa: E731
    handles = [m[5].register_forward_hook(double) for m in (model, ref)]
    with pytest.warns(ReplanWarning, match=r"the forward hooks of module '5' \(Linear\) changed"):
        both(3)
    for h in handles:
        h.remove()
    both(4)  # the plan of the same state again
    assert_same_state(model, opt, ref, ref_opt)
    assert len(step.plans) == 4 and model.training


class _Activated(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.drop, self.act, self.out = nn.Linear(6, 8), nn.Dropout(0.3), F.relu, nn.Linear(8, 3)

    def forward(self, x):
        return self.out(self.act(self.drop(self.fc(x))))


CRITERION = nn.CrossEntropyLoss()  # rebound by the test below, as a loop switching its loss


def _global_criterion(out, y):
    return CRITERION(out, y)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_modules_and_functions_bound_in_another_place_replan(executor, monkeypatch):
    """A submodule replaced by another (a dropout of another rate, a layer wrapped), a
    function attribute swapped (``self.act``), a ``forward`` patched on the instance, a
    global criterion the loss function calls rebound: the trace inlined the old one,
    so each asks for a plan of its own and the step stays eager's (before: it silently
    ran the old one, and updated a layer no longer in the model)."""
    torch.manual_seed(0)
    model = _Activated()
    ref = copy.deepcopy(model)
    opt, ref_opt = (torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (model, ref))
    x, y = torch.randn(4, 6), torch.randint(0, 3, (4,))
    step = optimize(model, x, optimizer=opt, loss_fn=_global_criterion, targets=(y,), executor=executor,
                    time_limit=0.5)

    def both(seed):
        torch.manual_seed(seed)
        got = step(x, targets=(y,))
        torch.manual_seed(seed)
        assert torch.equal(got, eager_step(ref, ref_opt, x, _global_criterion, (y,)))
        assert_same_state(model, opt, ref, ref_opt)

    both(0)
    for m in (model, ref):
        m.drop = nn.Dropout(0.1)
    with pytest.warns(ReplanWarning, match=r"submodule 'drop' of module 'model' \(_Activated\) is another Dropout, "
                                           r"the step was planned with the Dropout it held"):
        both(1)
    for m in (model, ref):
        m.out = nn.Sequential(m.out, nn.Tanh())  # the same parameters, another function of them
    with pytest.warns(ReplanWarning, match=r"submodule 'out' .* is another Sequential"):
        both(2)
    for m in (model, ref):
        m.act = torch.tanh
    with pytest.warns(ReplanWarning, match=r"attribute 'act' of module 'model' \(_Activated\) is another "):
        both(3)
    for m in (model, ref):
        m.fc.forward = types.MethodType(lambda self, x: F.linear(x, self.weight, self.bias) * 0.5, m.fc)
    with pytest.warns(ReplanWarning, match=r"attribute 'forward' of module 'fc' \(Linear\) is a method, the step "
                                           r"was planned with none"):
        both(4)
    monkeypatch.setitem(_global_criterion.__globals__, "CRITERION", nn.CrossEntropyLoss(label_smoothing=0.1))
    with pytest.warns(ReplanWarning, match=r"global 'CRITERION' read by _global_criterion is another "
                                           r"CrossEntropyLoss, the step was planned with the CrossEntropyLoss it held"):
        both(5)
    assert len(step.plans) == 6


class _Counting(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.calls = nn.Linear(6, 3), 0

    def forward(self, x):
        self.calls += 1  # Python state the forward changes: capture warns, steps never change it
        return self.fc(x)


def test_python_state_the_forward_changes_is_no_reason_to_replan():
    """An eager call between steps changes a counter the forward keeps: not a change of
    the step's configuration (capture warned of it), so no new plan each time."""
    torch.manual_seed(0)
    model = _Counting()
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    with pytest.warns(UserWarning, match=r"_Counting.calls"):
        step = optimize(model, x, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), loss_fn=F.cross_entropy,
                        targets=(y,), time_limit=0.5, max_plans=1)
    assert step.captured.python_state == (("", "calls"),)
    for _ in range(3):
        step(x, targets=(y,))
        model(x)  # an eager call: calls += 1
    assert model.calls == 3 and len(step.plans) == 1
    model.fc.out_features = 4  # any other plain attribute: a new plan (refused here: max_plans=1)
    with pytest.raises(ReoptimizeError, match=r"attribute 'out_features' of module 'fc' \(Linear\) is 4"):
        step(x, targets=(y,))


KL_WEIGHT = 0.0  # annealed by the loop below, read by _global_weighted_loss


def _global_weighted_loss(out, y):
    return F.cross_entropy(out, y) + KL_WEIGHT * out.pow(2).mean()


class _WeightedLoss(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = 0.0

    def forward(self, out, y):
        return F.cross_entropy(out, y) + self.weight * out.pow(2).mean()


@pytest.mark.parametrize("where", ["global", "closure", "loss module", "dict", "namespace", "list"])
def test_a_loss_weight_annealed_in_python_replans_and_stays_eager(where):
    """β-annealing as loops write it: the loss reads a Python number the loop changes
    (a module global, a variable of the enclosing function, a loss module's attribute).
    The captured step holds the number it was traced with (before: silently, at every
    call); now a change asks for a plan of its own, and the message says to pass such a
    value as a tensor instead."""
    global KL_WEIGHT
    weight = 0.0
    loss_module = _WeightedLoss()
    box, args, weights = {"weight": 0.0}, types.SimpleNamespace(weight=0.0, epoch=0), [0.0, 1.0]
    loss_fn = {"global": _global_weighted_loss,
               "closure": lambda out, y: F.cross_entropy(out, y) + weight * out.pow(2).mean(),
               "loss module": loss_module,
               "dict": lambda out, y: F.cross_entropy(out, y) + box["weight"] * out.pow(2).mean(),
               "namespace": lambda out, y: F.cross_entropy(out, y) + args.weight * out.pow(2).mean(),
               # softmax(1): a constant 1 that indexes nothing (weights[1] changes below, unread)
               "list": lambda out, y: F.cross_entropy(out, y) + weights[0] * out.softmax(1).pow(2).mean()}[where]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    ref = copy.deepcopy(model)
    opt, ref_opt = (torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (model, ref))
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    step = optimize(model, x, optimizer=opt, loss_fn=loss_fn, targets=(y,), executor="arena", time_limit=0.5)
    shown = {"global": "global 'KL_WEIGHT' read by _global_weighted_loss", "closure": "variable 'weight' of",
             "loss module": "attribute 'weight' of module 'loss_fn' \\(_WeightedLoss\\)",
             "dict": r"box\['weight'\] \(a variable of ", "namespace": r"args.weight \(a variable of ",
             "list": r"weights\[0\] \(a variable of "}[where]
    try:
        for i in range(3):
            KL_WEIGHT = weight = loss_module.weight = box["weight"] = args.weight = weights[0] = 0.5 * i
            args.epoch += 1  # not read by the loss: no new plan
            weights[1] += 1  # not read either
            with warnings.catch_warnings(record=True) as seen:
                warnings.simplefilter("always")
                got = step(x, targets=(y,))
            assert torch.equal(got, eager_step(ref, ref_opt, x, loss_fn, (y,)))
            replans = [str(w.message) for w in seen if issubclass(w.category, ReplanWarning)]
            if i:
                assert len(replans) == 1 and re.search(rf"{shown}.* is {0.5 * i}, the step was planned with "
                                                       rf"{0.5 * (i - 1)}", replans[0]), replans
        assert_same_state(model, opt, ref, ref_opt)
        assert len(step.plans) == 3
    finally:
        KL_WEIGHT = 0.0


CLASS_WEIGHTS = torch.ones(3)  # rebound by the test below, read by _globally_weighted_loss


def _globally_weighted_loss(out, y):
    return F.cross_entropy(out, y, weight=CLASS_WEIGHTS)


@pytest.mark.parametrize("where", ["loss module buffer", "model attribute", "global", "closure dict"])
@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_tensor_rebound_where_the_step_reads_it_replans_and_stays_eager(where, executor):
    """A tensor the step reads that is neither a parameter nor a buffer of the model (a
    loss module's class weights, a tensor attribute of a module, a global or an entry of a
    closure's dict) is held by the step itself: a change made in place is followed
    without a new plan, and a new tensor bound in its place (before: silently ignored,
    the step kept the old one) asks for a plan of its own, named in the warning."""
    global CLASS_WEIGHTS
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    model.scale = torch.tensor(1.0)
    model.register_forward_hook(lambda m, args, out: out * m.scale)
    ref = copy.deepcopy(model)  # the hook with it
    opt, ref_opt = (torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (model, ref))
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    CLASS_WEIGHTS = torch.ones(3)
    loss_module, config = nn.CrossEntropyLoss(weight=torch.ones(3)), {"weight": torch.ones(3)}
    loss_fn = {"loss module buffer": loss_module, "model attribute": F.cross_entropy,
               "global": _globally_weighted_loss,
               "closure dict": lambda out, y: F.cross_entropy(out, y, weight=config["weight"])}[where]

    def rebind(value):
        global CLASS_WEIGHTS
        if where == "model attribute":
            model.scale = ref.scale = torch.tensor(value)
        else:
            CLASS_WEIGHTS = loss_module.weight = config["weight"] = torch.tensor([1.0, value, 3.0])

    shown = {"loss module buffer": r"buffer 'weight' of module 'loss_fn' \(CrossEntropyLoss\)",
             "model attribute": r"tensor attribute 'scale' of module 'model' \(Sequential\)",
             "global": "global 'CLASS_WEIGHTS' read by _globally_weighted_loss",
             "closure dict": r"config\['weight'\] \(a variable of "}[where]
    step = optimize(model, x, optimizer=opt, loss_fn=loss_fn, targets=(y,), executor=executor, time_limit=0.5)
    try:
        for i in range(4):
            if i == 1:  # in place: the step's own tensor changes, no new plan
                for t in {"loss module buffer": [loss_module.weight], "model attribute": [model.scale, ref.scale],
                          "global": [CLASS_WEIGHTS], "closure dict": [config["weight"]]}[where]:
                    t.fill_(2.0)
            elif i > 1:
                rebind(0.5 * i)
            # Tensors the step does not read: rebinding them is no reason for a plan.
            model.unread, config["unread"], loss_module.unread = (torch.tensor(float(i)),) * 3
            with warnings.catch_warnings(record=True) as seen:
                warnings.simplefilter("always")
                got = step(x, targets=(y,))
            assert torch.equal(got, eager_step(ref, ref_opt, x, loss_fn, (y,)))
            replans = [str(w.message) for w in seen if issubclass(w.category, ReplanWarning)]
            assert len(replans) == (i > 1), replans
            if replans:
                assert re.search(rf"{shown}.* is another tensor than the one the step was planned with", replans[0])
        assert_same_state(model, opt, ref, ref_opt)
        assert len(step.plans) == 3
    finally:
        CLASS_WEIGHTS = torch.ones(3)


class _CountingCriterion(nn.CrossEntropyLoss):
    """A criterion that counts its calls (as a metric's update count does)."""

    calls = 0

    def forward(self, out, y):
        self.calls += 1
        return super().forward(out, y)


def test_a_criterion_a_lambda_calls_is_followed_for_its_tensors_not_its_counters():
    """loss_fn=lambda out, y: criterion(out, y): the criterion's class weights replaced ask
    for a new plan (before: not followed, the loss silently kept the old weights); a
    counter it keeps, which eager calls change, asks for none."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    ref = copy.deepcopy(model)
    opt, ref_opt = (torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (model, ref))
    criterion = _CountingCriterion(weight=torch.ones(3))
    loss_fn = lambda out, y: criterion(out, y)  # noqa: E731
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    step = optimize(model, x, optimizer=opt, loss_fn=loss_fn, targets=(y,), time_limit=0.5)
    for i in range(4):
        if i == 2:
            criterion.weight = torch.tensor([1.0, 2.0, 3.0])
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            got = step(x, targets=(y,))
        assert torch.equal(got, eager_step(ref, ref_opt, x, loss_fn, (y,)))  # eager's call counts too
        replans = [str(w.message) for w in seen if issubclass(w.category, ReplanWarning)]
        assert len(replans) == (i == 2), replans
        if replans:
            assert re.search(r"buffer 'weight' of module 'criterion' \(_CountingCriterion\) is another tensor",
                             replans[0])
    assert_same_state(model, opt, ref, ref_opt)


def _distill(out, y, teacher, x):
    return F.cross_entropy(out, y) + F.mse_loss(out, teacher(x))


def test_a_teacher_bound_by_a_partial_is_followed_when_its_mode_flips():
    """A teacher passed with functools.partial (before: its mode flip went unseen, and the
    losses and its BatchNorm statistics left eager's)."""
    import functools

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    teacher = nn.Sequential(nn.Linear(6, 3), nn.BatchNorm1d(3))
    ref, ref_teacher = copy.deepcopy(model), copy.deepcopy(teacher)
    opt, ref_opt = (torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (model, ref))
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    loss_fn = functools.partial(_distill, teacher=teacher, x=x)
    ref_loss = functools.partial(_distill, teacher=ref_teacher, x=x)
    step = optimize(model, x, optimizer=opt, loss_fn=loss_fn, targets=(y,), time_limit=0.5)
    for i in range(4):
        for t in (teacher, ref_teacher):
            t.train(i % 2 == 0)
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            got = step(x, targets=(y,))
        assert torch.equal(got, eager_step(ref, ref_opt, x, ref_loss, (y,))), i
        replans = [str(w.message) for w in seen if issubclass(w.category, ReplanWarning)]
        assert len(replans) == (i == 1), replans  # then each mode has its plan
        if replans:
            assert "module 'teacher' (Sequential) is in eval mode, the step was planned with it in training mode" \
                in replans[0]
    # num_batches_tracked too: the captures' traces no longer count batches on the teacher's real tensor
    assert all(torch.equal(a, b) for a, b in zip(teacher.state_dict().values(), ref_teacher.state_dict().values()))
    assert_same_state(model, opt, ref, ref_opt)


class _Masking(nn.Module):
    """Reads its mask, then replaces it with an equal one at every call."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 3)
        self.mask = torch.ones(3)

    def forward(self, x):
        out = self.fc(x) * self.mask
        self.mask = torch.ones(3)
        return out


def test_a_tensor_the_forward_replaces_itself_is_no_reason_to_replan():
    """The capture warns of it; eager calls between steps replace it, no configuration
    does: no new plan at each step (and no ReoptimizeError after max_plans)."""
    torch.manual_seed(0)
    model = _Masking()
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    with pytest.warns(UserWarning, match="sets tensor attributes"):
        step = optimize(model, x, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), loss_fn=F.cross_entropy,
                        targets=(y,), time_limit=0.5, max_plans=1)
    for _ in range(3):
        step(x, targets=(y,))
        model(x)  # an eager call: a new mask tensor
    assert len(step.plans) == 1


def test_function_reads_follow_partials_methods_and_decorators():
    import functools

    from model_runtime.module_state import function_reads

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            return fn(*args, **kwargs)
        return wrapper

    scale = 2.0

    @decorate
    def loss(out, y, reduction="mean"):
        return (out - y).pow(2).mean() * scale * KL_WEIGHT

    reads = dict(function_reads(functools.partial(loss, reduction="sum")))
    assert {"variable 'scale' of test_function_reads_follow_partials_methods_and_decorators.<locals>.loss",
            "global 'KL_WEIGHT' read by test_function_reads_follow_partials_methods_and_decorators.<locals>.loss",
            } <= set(reads)
    # the decorator's ``fn`` is held by identity (another bound in its place would change the step)
    assert [what for what, read in reads.items() if callable(read())] == [
        "variable 'fn' of test_function_reads_follow_partials_methods_and_decorators.<locals>.loss"]
    assert dict(function_reads(_WeightedLoss().forward)) == {}  # reads self.weight: an attribute, seen elsewhere

    class Trainer:
        def __init__(self):
            self.alpha, self.global_step = 0.5, 0

        def compute_loss(self, out, y):
            return (out - y).pow(2).mean() * self.alpha

    trainer = Trainer()
    reads = dict(function_reads(trainer.compute_loss))
    assert list(reads) == ["self.alpha (read by test_function_reads_follow_partials_methods_and_decorators."
                           "<locals>.Trainer.compute_loss)"]  # not global_step: not read
    trainer.alpha = 0.25
    assert [read() for read in reads.values()] == [0.25]
    assert function_reads(print) == [] and function_reads(None) == []


class _GradientScale:
    """A gradient hook object whose factor the loop changes."""

    def __init__(self, factor):
        self.factor = factor

    def __call__(self, grad):
        return grad * self.factor


HOOK_SCALE = 1.0  # read by the forward hook of the test below, changed by its loop


@pytest.mark.parametrize("hook", ["forward hook", "gradient hook"])
def test_a_number_a_hook_reads_replans_when_the_loop_changes_it(hook):
    """Hooks are traced into the step as the loss is: a Python number one reads (a global
    a forward hook scales by, the factor of a gradient-hook object) is a constant of the
    plan. Before, a change left the step scaling by the traced one, silently; now it asks
    for a plan of its own, and the steps stay eager's."""
    global HOOK_SCALE
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    ref = copy.deepcopy(model)  # deepcopy drops tensor hooks: both get theirs below
    scale = _GradientScale(1.0)
    for m in (model, ref):
        if hook == "forward hook":
            m[1].register_forward_hook(lambda module, args, out: out * HOOK_SCALE)
        else:
            m[0].weight.register_hook(scale)
    opt, ref_opt = (torch.optim.SGD(m.parameters(), lr=0.1) for m in (model, ref))
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    step = optimize(model, x, optimizer=opt, loss_fn=F.cross_entropy, targets=(y,), time_limit=0.5)
    shown = {"forward hook": "global 'HOOK_SCALE' read by", "gradient hook": r"self.factor \(read by _GradientScale"}
    try:
        for i in range(3):
            HOOK_SCALE = scale.factor = 1.0 / (i + 1)
            with warnings.catch_warnings(record=True) as seen:
                warnings.simplefilter("always")
                assert torch.equal(step(x, targets=(y,)), eager_step(ref, ref_opt, x, F.cross_entropy, (y,)))
            replans = [str(w.message) for w in seen if issubclass(w.category, ReplanWarning)]
            assert len(replans) == (1 if i else 0) and all(re.search(shown[hook], r) for r in replans), replans
        assert_same_state(model, opt, ref, ref_opt, stateful=False)
    finally:
        HOOK_SCALE = 1.0


class _UnhashableScale(_GradientScale):
    __hash__ = None  # as a dataclass with eq=True: hooks need not be hashable

    def __eq__(self, other):
        return isinstance(other, _UnhashableScale) and other.factor == self.factor


def test_an_unhashable_hook_object_is_fine():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 3))
    ref = copy.deepcopy(model)
    for m in (model, ref):
        m[0].weight.register_hook(_UnhashableScale(0.5))
    opt, ref_opt = (torch.optim.SGD(m.parameters(), lr=0.1) for m in (model, ref))
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    step = optimize(model, x, optimizer=opt, loss_fn=F.cross_entropy, targets=(y,), time_limit=0.5)
    assert torch.equal(step(x, targets=(y,)), eager_step(ref, ref_opt, x, F.cross_entropy, (y,)))


@pytest.mark.parametrize("how", ["l2 penalty", "second forward", "clip model.parameters()"])
@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_loss_or_before_step_reading_the_model_trains_as_in_eager(how, executor):
    """The loss and before_step may reach the model themselves: an L2 penalty over
    model.parameters(), a consistency term that runs the model again, clipping
    model.parameters() (before: the real parameters were constants of the step, their
    gradients and the clipping silently lost)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    ref = copy.deepcopy(model)
    opt, ref_opt = (torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (model, ref))
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))

    def loss_of(m):
        if how == "l2 penalty":
            return lambda out, t: F.cross_entropy(out, t) + 0.5 * sum(p.pow(2).sum() for p in m.parameters())
        if how == "second forward":
            return lambda out, t: F.cross_entropy(out, t) + (m(x.flip(0)) - out.flip(0)).pow(2).mean()
        return F.cross_entropy

    def clip_of(m):
        return (lambda grads: nn.utils.clip_grad_norm_(m.parameters(), 0.01)) if how.startswith("clip") else None

    step = optimize(model, x, optimizer=opt, loss_fn=loss_of(model), targets=(y,), executor=executor,
                    before_step=clip_of(model), time_limit=0.5)
    for _ in range(3):
        got = step(x, targets=(y,))
        assert torch.equal(got, eager_step(ref, ref_opt, x, loss_of(ref), (y,), before_step=clip_of(ref)))
    assert_same_state(model, opt, ref, ref_opt)


def test_a_parameter_the_loss_holds_outside_the_model_is_refused():
    """A list made from model.parameters() before optimize() and read by the loss: the
    step would take those tensors as constants without their gradients; refused, naming
    the parameter, and the model's gradients are left as they were."""
    torch.manual_seed(0)
    model = nn.Linear(6, 3)
    params = list(model.parameters())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    from model_ir.torch import CaptureError

    with pytest.raises(CaptureError, match="reads parameter 'weight' of the model through a reference held"):
        optimize(model, x, optimizer=opt, targets=(y,), time_limit=0.5,
                 loss_fn=lambda out, t: F.cross_entropy(out, t) + sum(p.pow(2).sum() for p in params))
    assert model.weight.grad is None and model.bias.grad is None


SCALE = 1.0  # read by _scaled, which a forward below calls


def _scaled(h):
    return h * SCALE


class _Reads(nn.Module):
    scale = 1.0  # a class attribute, changed on the class

    def __init__(self, where):
        super().__init__()
        self.where, self.linear = where, nn.Linear(6, 3)
        self.cfg, self.flags, self.opts = types.SimpleNamespace(scale=1.0), [1.0], {"scale": 1.0}

    def forward(self, x):
        h = self.linear(x)
        return {"object": lambda: h * self.cfg.scale, "list": lambda: h * self.flags[0],
                "dict": lambda: h * self.opts["scale"], "class": lambda: h * self.scale,
                "helper": lambda: _scaled(h)}[self.where]()


@pytest.mark.parametrize("where", ["object", "list", "dict", "class", "helper"])
def test_a_number_the_forward_reads_through_its_module_replans_when_the_loop_changes_it(where):
    """What a forward reads through its module one level down (self.cfg.scale, a
    Hugging Face config's entries), a class attribute, or a global read by a helper of
    its own Python module: changed by the loop, a new plan (before: the old value, silently)."""
    global SCALE
    torch.manual_seed(0)
    model = _Reads(where)
    ref = copy.deepcopy(model)
    opt, ref_opt = (torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (model, ref))
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    step = optimize(model, x, optimizer=opt, loss_fn=F.cross_entropy, targets=(y,), executor="arena",
                    time_limit=0.5)
    shown = {"object": r"self.cfg.scale \(of module 'model'", "list": r"self.flags\[0\] \(of module 'model'",
             "dict": r"self.opts\['scale'\] \(of module 'model'", "class": "class attribute 'scale' of module",
             "helper": "global 'SCALE' read by _scaled"}[where]
    try:
        for i in range(3):
            value = 1.0 + i  # changed where this forward reads it only: the others are checked too
            if where == "helper":
                SCALE = value
            elif where == "class":
                _Reads.scale = value
            for m in (model, ref):
                if where == "object":
                    m.cfg.scale = value
                elif where == "list":
                    m.flags[0] = value
                elif where == "dict":
                    m.opts["scale"] = value
            with warnings.catch_warnings(record=True) as seen:
                warnings.simplefilter("always")
                got = step(x, targets=(y,))
            assert torch.equal(got, eager_step(ref, ref_opt, x, F.cross_entropy, (y,)))
            replans = [str(w.message) for w in seen if issubclass(w.category, ReplanWarning)]
            assert len(replans) == (1 if i else 0) and all(re.search(shown, r) for r in replans), replans
        assert_same_state(model, opt, ref, ref_opt)
    finally:
        SCALE = _Reads.scale = 1.0


class _EmbeddingNorm(nn.Module):
    """Token ids in, so the batch keeps its dtype when the model's changes; RMSNorm's
    default eps is its input dtype's."""

    def __init__(self):
        super().__init__()
        self.embed, self.norm, self.head = nn.Embedding(20, 16), nn.RMSNorm(16), nn.Linear(16, 4)

    def forward(self, ids):
        return self.head(self.norm(self.embed(ids) * 1e-3).mean(1))


@pytest.mark.parametrize("executor", EXECUTORS)
@pytest.mark.parametrize("convert", ["double", "channels-last", "channels-last-1x1"])
def test_a_model_converted_in_place_replans_and_stays_eager(convert, executor):
    """``model.double()`` and ``model.to(memory_format=torch.channels_last)`` keep each
    Parameter and swap its data (``Module._apply``): the step checks the dtype and strides
    of what it binds, not only which tensor it is (before: the float32 plan ran float64
    weights with float32's eps, and the arena trained channels-last weights as if
    contiguous, a loss of 2.07 for eager's 2.05, or a view error)."""
    torch.manual_seed(0)
    if convert == "double":
        model = _EmbeddingNorm()
        x, y = torch.randint(0, 20, (8, 5)), torch.randint(0, 4, (8,))
    else:  # a 1x1 convolution's weight made channels-last changes only strides of size-1 dimensions
        k = 1 if convert.endswith("1x1") else 3
        model = nn.Sequential(nn.Conv2d(3, 8, k, padding=k // 2), nn.ReLU(), nn.Conv2d(8, 8, k, padding=k // 2),
                              nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 4))
        x, y = torch.randn(2, 3, 16, 16), torch.randint(0, 4, (2,))
    ref = copy.deepcopy(model)
    opt, ref_opt = (torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (model, ref))
    step = optimize(model, x, optimizer=opt, loss_fn=F.cross_entropy, targets=(y,), executor=executor,
                    time_limit=0.5)
    assert torch.equal(step(x, targets=(y,)), eager_step(ref, ref_opt, x, F.cross_entropy, (y,)))
    for m in (model, ref):
        m.double() if convert == "double" else m.to(memory_format=torch.channels_last)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ReplanWarning)
        for _ in range(2):
            loss = step(x, targets=(y,))
            expected = eager_step(ref, ref_opt, x, F.cross_entropy, (y,))
            assert loss.dtype == expected.dtype and torch.equal(loss, expected)
            assert_same_state(model, opt, ref, ref_opt)
    assert len(step.plans) == 2


def test_set_grads_leaves_no_old_gradient_on_a_parameter_frozen_later():
    """With ``set_grads=True`` a parameter frozen after some steps holds no ``.grad``, as
    after eager's ``zero_grad()`` (before: the last gradient from before it was frozen)."""
    model, opt, ref, ref_opt, _ = _both("reorder")
    step = optimize(model, torch.randn(8, 6), optimizer=opt, loss_fn=F.cross_entropy,
                    targets=(torch.randint(0, 3, (8,)),), set_grads=True, time_limit=0.5)
    _compare(model, opt, ref, ref_opt, step, 0)
    assert model[0].weight.grad is not None
    for m in (model, ref):
        m[0].weight.requires_grad_(False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ReplanWarning)
        _compare(model, opt, ref, ref_opt, step, 1)
    assert model[0].weight.grad is None and model[2].weight.grad is not None


class _OptionalMask(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(6, 3)
        self.register_buffer("mask", None)

    def forward(self, x):
        if self.mask is not None:
            x = x * self.mask
        return self.lin(x)


@pytest.mark.parametrize("executor", ["reorder", "arena"])
def test_a_buffer_registered_as_none_and_set_later_replans(executor):
    """``register_buffer("mask", None)`` and a forward that tests it: set to a tensor
    after optimize(), eager's branch changes, and the step replans (before: it kept the
    unmasked trace, a loss of 1.277 for eager's 1.392)."""
    torch.manual_seed(0)
    model = _OptionalMask()
    ref = copy.deepcopy(model)
    opt, ref_opt = (torch.optim.Adam(m.parameters(), lr=1e-2) for m in (model, ref))
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    step = optimize(model, x, optimizer=opt, loss_fn=F.cross_entropy, targets=(y,), executor=executor,
                    time_limit=0.5)
    assert torch.equal(step(x, targets=(y,)), eager_step(ref, ref_opt, x, F.cross_entropy, (y,)))
    mask = torch.rand(6)
    for m in (model, ref):
        m.mask = mask.clone()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ReplanWarning)
        assert torch.equal(step(x, targets=(y,)), eager_step(ref, ref_opt, x, F.cross_entropy, (y,)))
    assert_same_state(model, opt, ref, ref_opt)
    assert len(step.plans) == 2


def test_a_hugging_face_attention_implementation_switched_later_replans():
    """``model.set_attn_implementation("eager")`` after optimize(): the forward reads
    ``config._attn_implementation``, a property over another attribute, which the step
    follows (before: it kept SDPA while eager switched, and the parameters differed)."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=2,
                                      num_key_value_heads=1, intermediate_size=64, vocab_size=100,
                                      max_position_embeddings=64)
    model = transformers.LlamaForCausalLM(config).train()
    ref = copy.deepcopy(model)
    opt, ref_opt = (torch.optim.AdamW(m.parameters(), lr=1e-3) for m in (model, ref))
    ids = torch.randint(0, 100, (2, 8), generator=torch.Generator().manual_seed(1))
    step = optimize(model, {"input_ids": ids, "labels": ids}, optimizer=opt, time_limit=1)
    for m in (model, ref):
        m.set_attn_implementation("eager")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loss = step(input_ids=ids, labels=ids)
    ref_opt.zero_grad()
    expected = ref(input_ids=ids, labels=ids).loss
    expected.backward()
    ref_opt.step()
    assert torch.equal(loss, expected.detach()) and len(step.plans) == 2
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), ref.parameters()))


class _RebindsABuffer(nn.Module):
    """A functional running mean: the forward rebinds its buffer at every call."""

    def __init__(self, lazy: bool = False):
        super().__init__()
        self.lin = nn.Linear(6, 3)
        self.register_buffer("ema", None if lazy else torch.zeros(6))

    def forward(self, x):
        if self.ema is None:
            self.ema = x.mean(0).detach().clone()
        self.ema = 0.9 * self.ema + 0.1 * x.mean(0).detach()
        return self.lin(x - self.ema)


class _ScalesThenRebinds(nn.Module):
    """Multiplies by its buffer (autograd saves it for the backward), then rebinds it."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(6, 3)
        self.register_buffer("ema", torch.full((3,), 2.0))

    def forward(self, x):
        h = self.lin(x) * self.ema
        self.ema = 0.5 * self.ema + 0.25
        return h


@pytest.mark.parametrize("executor", ["reorder", "arena"])
@pytest.mark.parametrize("make", [_RebindsABuffer, _ScalesThenRebinds], ids=["running-mean", "saved-then-rebound"])
def test_a_buffer_the_forward_rebinds_is_updated_as_in_eager(make, executor):
    """``self.ema = 0.9 * self.ema + ...`` on a registered buffer: the step writes the new
    value into the buffer at its end, as eager's module holds it from then on (before: the
    trace's rebinding was dropped without a word, and the buffer never moved; written
    right after the forward, it overwrote the value autograd saved for the backward)."""
    torch.manual_seed(0)
    model = make()
    ref = copy.deepcopy(model)
    opt, ref_opt = (torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (model, ref))
    step = optimize(model, torch.randn(8, 6), optimizer=opt, loss_fn=F.cross_entropy,
                    targets=(torch.randint(0, 3, (8,)),), executor=executor, time_limit=0.5)
    for seed in range(3):
        _compare(model, opt, ref, ref_opt, step, seed)
    assert torch.equal(model.ema, ref.ema) and model.ema.abs().sum() > 0


def test_a_buffer_the_forward_creates_from_none_is_warned_of():
    """A buffer registered as None that the forward sets at its first call: the step
    cannot follow it and says so, as for a plain attribute the forward sets."""
    torch.manual_seed(0)
    model = _RebindsABuffer(lazy=True)
    with pytest.warns(UserWarning, match=r"sets tensor attributes of its modules \(_RebindsABuffer\.ema"):
        optimize(model, torch.randn(8, 6), optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                 loss_fn=F.cross_entropy, targets=(torch.randint(0, 3, (8,)),), time_limit=0.5)
