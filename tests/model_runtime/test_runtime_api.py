"""optimize() and OptimizedStep: plan, report, checks that ask to re-optimize, the
executor hook, keyword inputs, and the generated program's order."""

from __future__ import annotations

import copy
import re
import warnings

import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from model_ir import ModelOptError, PluginError, validate_order  # noqa: E402
from model_ir.hookspecs import hookimpl  # noqa: E402
from model_ir.plan import order_indices  # noqa: E402
from model_ir.plugins import plugin_manager, providers  # noqa: E402
from model_ir.testing.torch_models import assert_same_state, eager_step, mlp  # noqa: E402
from model_place import validate_placement  # noqa: E402
from model_ir import Plan, Schedule  # noqa: E402
from model_ir.testing.torch_models import random_topological_order  # noqa: E402
from model_place import place  # noqa: E402
from model_runtime import ReoptimizeError, arena_lifetimes, build_arena, build_reorder, optimize  # noqa: E402
from model_runtime.optimized_step import ReplanWarning  # noqa: E402


def _mlp_step(executor="arena", **kw):
    torch.manual_seed(0)
    model = mlp(16, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return model, opt, optimize(model, torch.randn(8, 16), optimizer=opt, executor=executor, time_limit=0.5, **kw)


def test_plan_is_valid_and_figures_are_consistent():
    _, _, step = _mlp_step()
    plan, f = step.plan, step.plan.figures
    validate_order(plan.graph, order_indices(plan.graph, plan.schedule))
    lts = arena_lifetimes(plan.graph, plan.schedule, f["alignment_bytes"])
    validate_placement(lts, plan.placement.offsets, plan.placement.arena_bytes)
    assert all(plan.placement.offsets[lt.id] % f["alignment_bytes"] == 0 for lt in lts)
    assert f["lower_bound_bytes"] <= f["peak_bytes"] <= f["eager_peak_bytes"]
    assert f["arena_lower_bound_bytes"] <= f["arena_bytes"]
    assert f["arena_bytes"] <= f["peak_bytes"] - f["persistent_bytes"]


def test_report_and_repr():
    _, _, step = _mlp_step()
    text = step.report()
    assert "executor arena" in text and "planned arena" in text and "lower bound" in text
    assert str(step.plan.figures["arena_bytes"]) in text
    assert "fall back" in text
    assert "OptimizedStep(" in repr(step)
    _, _, reorder = _mlp_step("reorder")
    assert "planned arena" not in reorder.report() and reorder.plan.placement is None


def test_changed_input_shape_asks_to_reoptimize():
    _, _, step = _mlp_step(max_plans=1)
    step(torch.randn(8, 16))
    with pytest.raises(ReoptimizeError, match=r"already has 1 plans \(max_plans\).*pass a larger max_plans") as info:
        step(torch.randn(4, 16))
    assert isinstance(info.value, ModelOptError) and info.value.exit_code == 2
    assert "(4, 16)" in str(info.value) and "(8, 16)" in str(info.value)
    with pytest.raises(ReoptimizeError, match="float64"):
        step(torch.randn(8, 16, dtype=torch.float64))
    with pytest.raises(ReoptimizeError, match=re.escape("the call is step(*, *), the step was optimized for step(*)")):
        step(torch.randn(8, 16), torch.randn(8, 16))


def test_learning_rate_changes_need_no_new_plan_but_structural_changes_do():
    model, opt, step = _mlp_step(max_plans=1)
    ref = copy.deepcopy(model)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    for lr, momentum in ((0.1, 0.9), (0.01, 0.8), (0.5, 0.95)):
        for o in (opt, ref_opt):
            o.param_groups[0].update(lr=lr, momentum=momentum)
        x = torch.randn(8, 16)
        assert torch.equal(step(x), eager_step(ref, ref_opt, x))
    assert_same_state(model, opt, ref, ref_opt)
    opt.param_groups[0]["initial_lr"] = 0.1  # a scheduler's bookkeeping: not read by step()
    step(torch.randn(8, 16))
    opt.param_groups[0]["weight_decay"] = 0.01  # was 0: the captured step skips weight decay
    with pytest.raises(ReoptimizeError, match="weight_decay"):
        step(torch.randn(8, 16))
    opt.param_groups[0]["weight_decay"] = 0
    opt.param_groups[0]["nesterov"] = True  # a constant of the step
    with pytest.raises(ReoptimizeError, match="'nesterov'"):
        step(torch.randn(8, 16))
    step = optimize(model, torch.randn(8, 16), optimizer=opt, time_limit=0.5)
    step(torch.randn(8, 16))


def test_replaced_optimizer_state_is_picked_up():
    """The optimizer stays the source of truth, even when it gets new state tensors."""
    torch.manual_seed(0)
    model = mlp(16, 3)
    ref = copy.deepcopy(model)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    ref_opt = torch.optim.Adam(ref.parameters(), lr=0.01)
    step = optimize(model, torch.randn(8, 16), optimizer=opt, time_limit=0.5)
    for i in range(3):
        x = torch.randn(8, 16)
        assert torch.equal(step(x), eager_step(ref, ref_opt, x))
        if i == 0:
            opt.load_state_dict(copy.deepcopy(opt.state_dict()))  # new state tensors, same values
            model.load_state_dict(copy.deepcopy(model.state_dict()))
    for a, b in zip(model.parameters(), ref.parameters()):
        assert torch.equal(a, b)
    # The step updated the optimizer's new state tensors, not the replaced ones.
    for p, q in zip(model.parameters(), ref.parameters()):
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(opt.state[p][key], ref_opt.state[q][key]), key


class _TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(8, 4)
        self.b = nn.Linear(6, 4)

    def forward(self, x, *, y):
        return (self.a(x) * self.b(y)).tanh()


@pytest.mark.parametrize("executor", ["reorder", "arena"])
def test_keyword_inputs_and_loss_targets(executor):
    torch.manual_seed(0)
    model = _TwoInputs()
    ref = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    loss_fn = nn.functional.mse_loss
    example = {"x": torch.randn(5, 8), "y": torch.randn(5, 6)}
    step = optimize(model, example, optimizer=opt, loss_fn=loss_fn, targets=(torch.randn(5, 4),),
                    executor=executor, time_limit=0.5, max_plans=1)
    for _ in range(2):
        batch, target = {"x": torch.randn(5, 8), "y": torch.randn(5, 6)}, torch.randn(5, 4)
        expected = eager_step(ref, ref_opt, batch, loss_fn, (target,))
        assert torch.equal(step(**batch, targets=(target,)), expected)
    with pytest.raises(ReoptimizeError):
        step(**batch, targets=(torch.randn(3, 4),))


def test_builtin_executors_are_plugins_and_unknown_names_are_clear():
    found = providers("model_opt_executors")
    assert {"reorder", "arena"} <= set(found)
    with pytest.raises(PluginError, match="unknown executor 'nope'.*arena, auto, program, reorder"):
        _mlp_step("nope")


def test_a_function_or_a_foreign_optimizer_is_a_clear_error():
    with pytest.raises(ModelOptError, match="takes a torch.nn.Module, got function"):
        optimize(lambda x: 2 * x, torch.randn(3, 4))
    model = mlp(4, 2)
    with pytest.raises(ModelOptError, match="torch.optim.Optimizer, got list"):
        optimize(model, torch.randn(3, 4), optimizer=list(model.parameters()))


class _CountingExecutor:
    """A third-party executor: the reorder executor that counts its builds."""

    name = "counting"
    help = "test executor"
    needs_placement = False
    builds = 0

    def build(self, step, plan, *, device, on_op=None):
        _CountingExecutor.builds += 1
        return build_reorder(step, plan, device=device, on_op=on_op)


class _Plugin:
    @hookimpl
    def model_opt_executors(self):
        return [_CountingExecutor()]


def test_parameters_outside_the_optimizer_are_named_in_a_warning():
    """Two optimizers (backbone and head): the step optimized with one neither updates
    the other's parameters nor sets their .grad, where eager's backward would; said at
    the user's line, and not when set_grads=True gives every .grad or none is left out."""
    torch.manual_seed(0)
    model = mlp(16, 3)
    head = list(model)[-1]
    opt = torch.optim.SGD([p for m in list(model)[:-1] for p in m.parameters()], lr=0.1)
    x = torch.randn(8, 16)
    with pytest.warns(UserWarning, match=r"2 parameter\(s\) get a gradient but are not in the optimizer "
                                         r"\(\d+\.weight, \d+\.bias\)") as seen:
        optimize(model, x, optimizer=opt, time_limit=0.5)
    assert [w.filename for w in seen if "not in the optimizer" in str(w.message)] == [__file__]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        step = optimize(model, x, optimizer=opt, time_limit=0.5, set_grads=True)
        step(x)
        assert head.weight.grad is not None
        head.requires_grad_(False)
        optimize(model, x, optimizer=opt, time_limit=0.5)


def test_parameters_the_loss_does_not_depend_on_are_not_warned_of():
    """A GAN's discriminator step runs the generator under no_grad: eager's backward
    gives its parameters no gradient, so leaving them out of the optimizer loses nothing."""
    class DiscriminatorStep(nn.Module):
        def __init__(self):
            super().__init__()
            self.generator, self.discriminator = nn.Linear(4, 8), nn.Linear(8, 1)

        def forward(self, real, z):
            with torch.no_grad():
                fake = self.generator(z)
            return self.discriminator(real).mean() - self.discriminator(fake).mean()

    torch.manual_seed(0)
    model = DiscriminatorStep()
    opt = torch.optim.SGD(model.discriminator.parameters(), lr=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        step = optimize(model, (torch.randn(6, 8), torch.randn(6, 4)), optimizer=opt, time_limit=0.5)
    step(torch.randn(6, 8), torch.randn(6, 4))
    assert step.captured.gradients == ("discriminator.weight", "discriminator.bias")


@pytest.mark.parametrize("executor", ["reorder", "arena"])
def test_calls_inside_torch_autocast_are_refused_with_the_way_to_mixed_precision(executor):
    """Inside ``torch.autocast`` the captured aten ops were cast again: the reorder
    executor failed in a kernel ("expected dtype float for `end`"), the arena silently
    computed neither the plan nor eager's AMP step. The AMP recipe is ``autocast=``."""
    from model_runtime import RuntimeLayerError

    model, _, step = _mlp_step(executor)
    x = torch.randn(8, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with pytest.raises(RuntimeLayerError, match=r"called inside torch.autocast: .*autocast=torch.bfloat16"):
            step(x)
        with pytest.raises(RuntimeLayerError, match=r"optimize is called inside torch.autocast"):
            optimize(model, x, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), time_limit=0.5)
    assert step(x).dtype == torch.float32


def test_a_training_step_under_no_grad_is_refused():
    """A validation loop under ``torch.no_grad()`` that forgot ``model.eval()``: the
    step trained on the validation batch (eager's backward would fail); with
    ``model.eval()`` the same call runs the eval step."""
    from model_runtime import RuntimeLayerError

    model, _, step = _mlp_step("reorder")
    x = torch.randn(8, 16)
    before = [p.detach().clone() for p in model.parameters()]
    for context in (torch.no_grad, torch.inference_mode):
        with context(), pytest.raises(RuntimeLayerError, match=r"training step .* gradients disabled"):
            step(x)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    model.eval()
    with torch.no_grad(), pytest.warns(Warning, match="eval mode"):
        assert step(x).shape == (8, 10)  # the logits


def test_a_call_without_the_loss_targets_says_how_to_pass_them():
    """``step(x, y)`` (the target as a second input) or ``step(x)``: no new plan is tried
    (it failed in the model's forward or the loss with torch's TypeError)."""
    from model_runtime import RuntimeLayerError

    model = nn.Linear(4, 3)
    x, y = torch.randn(5, 4), torch.randint(0, 3, (5,))
    step = optimize(model, x, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                    loss_fn=nn.functional.cross_entropy, targets=(y,), time_limit=0.5)
    for call in (lambda: step(x, y), lambda: step(x)):
        with pytest.raises(RuntimeLayerError, match=r"passes no targets, and the step's loss takes some .* "
                                                    r"step\(x, targets=\(y,\)\)"):
            call()
    assert len(step.plans) == 1 and step(x, targets=(y,)).dim() == 0


def test_a_batch_passed_packed_says_how_to_unpack_it():
    """optimize() takes the example as the model's arguments (a tuple positional, a dict by
    keyword), the step as the model does: ``step(batch)`` is answered with
    ``step(**batch)`` before any new plan (it failed in the forward with torch's TypeError)."""
    from model_runtime import RuntimeLayerError

    model = _TwoInputs()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    batch = {"x": torch.randn(5, 8), "y": torch.randn(5, 6)}
    step = optimize(model, batch, optimizer=opt, time_limit=0.5)
    with pytest.raises(RuntimeLayerError, match=re.escape("called as step({'x': *, 'y': *}), the batch's items "
                                                          "packed in one dict; it takes them as the model does, "
                                                          "step(x=*, y=*)") + ".*call step\\(\\*\\*batch\\)"):
        step(batch)
    pair = (batch["x"], batch["y"])
    bilinear = nn.Bilinear(8, 6, 4)
    positional = optimize(bilinear, pair, optimizer=torch.optim.SGD(bilinear.parameters(), lr=0.1), time_limit=0.5)
    with pytest.raises(RuntimeLayerError, match=r"step\(\[\*, \*\]\).*step\(\*, \*\).*call step\(\*batch\)"):
        positional(list(pair))
    assert len(step.plans) == len(positional.plans) == 1
    assert step(**batch).dim() == positional(*pair).dim() == 0
    # Another structure: the error writes both calls out.
    with pytest.raises(ReoptimizeError, match=re.escape("the call is step(*, y=*), the step was optimized for "
                                                        "step(x=*, y=*)")):
        step(batch["x"], y=batch["y"])


def test_third_party_executor_through_the_hook():
    pm = plugin_manager()
    plugin = _Plugin()
    pm.register(plugin)
    try:
        _, _, step = _mlp_step("counting")
        assert _CountingExecutor.builds == 1 and step.executor == "reorder"
        step(torch.randn(8, 16))
    finally:
        pm.unregister(plugin)


class _AutoImpostor(_CountingExecutor):
    name = "auto"

    def build(self, step, plan, *, device, on_op=None):
        raise AssertionError("a plugin took optimize()'s own choice")


class _AutoPlugin:
    @hookimpl
    def model_opt_executors(self):
        return [_AutoImpostor()]


def test_a_plugin_executor_named_auto_is_reported_and_ignored(capsys):
    """``auto`` is optimize()'s own choice among the executors: a plugin's of that name
    (before: listed as available, never chosen) is reported as a clash and ignored."""
    pm = plugin_manager()
    plugin = _AutoPlugin()
    pm.register(plugin)
    try:
        _, _, step = _mlp_step("auto")
        step(torch.randn(8, 16))
        assert step.executor in ("reorder", "arena", "program")
        with pytest.raises(PluginError, match=r"unknown executor 'nope'; available: arena, auto, program, reorder$"):
            _mlp_step("nope")
    finally:
        pm.unregister(plugin)
    assert "model_opt_executors provider 'auto' is ignored: model-opt already provides that name" in \
        capsys.readouterr().err


@pytest.mark.parametrize("executor", ["reorder", "arena"])
def test_generated_program_runs_ops_in_planned_order(executor):
    """The generated code calls the ops in the order of the plan, here a random valid one."""
    model, opt, step = _mlp_step(executor)
    graph = step.plan.graph
    order = random_topological_order(graph, 3)
    assert order != [op.id for op in graph.ops]
    placement = place(arena_lifetimes(graph, order, 64), method="best-fit").placement()
    plan = Plan(graph, Schedule(order), placement)
    build = build_arena if executor == "arena" else build_reorder
    program = build(step.captured, plan, device=torch.device("cpu"))
    emitted = [n.meta["ir_op"] for n in program.module.graph.nodes if "ir_op" in n.meta]
    assert emitted == order
    assert "Interpreter" not in program.code
    ref = copy.deepcopy(model)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    ref_opt.load_state_dict(opt.state_dict())
    x = torch.randn(8, 16)
    (loss,) = program.run(step.bind(x))
    assert torch.equal(loss, eager_step(ref, ref_opt, x))


def test_saved_plan_is_reused_and_checked(tmp_path):
    from model_ir import Placement, save_plan

    model, opt, step = _mlp_step()
    path = tmp_path / "plan.json"
    save_plan(step.plan, path)
    torch.manual_seed(0)
    model2 = mlp(16, 3)
    ref = copy.deepcopy(model2)
    opt2 = torch.optim.SGD(model2.parameters(), lr=0.1, momentum=0.9)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    again = optimize(model2, torch.randn(8, 16), optimizer=opt2, plan=str(path))
    assert again.plan.schedule == step.plan.schedule
    assert dict(again.plan.placement.offsets) == dict(step.plan.placement.offsets)
    x = torch.randn(8, 16)
    assert torch.equal(again(x), eager_step(ref, ref_opt, x))
    with pytest.raises(ReoptimizeError, match="another step"):
        optimize(model2, torch.randn(4, 16), optimizer=opt2, plan=path)
    offsets = dict.fromkeys(step.plan.placement.offsets, 0)  # everything at offset 0: overlaps
    bad = Plan(step.plan.graph, step.plan.schedule, Placement(offsets, step.plan.placement.arena_bytes))
    with pytest.raises(ReoptimizeError, match="not valid"):
        optimize(model2, torch.randn(8, 16), optimizer=opt2, plan=bad)
    _, _, reorder = _mlp_step("reorder")
    with pytest.raises(ReoptimizeError, match="no placement"):
        optimize(model2, torch.randn(8, 16), optimizer=opt2, plan=reorder.plan, executor="arena")
    # the default ("auto") runs a plan without placement with the reorder executor
    assert optimize(model2, torch.randn(8, 16), optimizer=opt2, plan=reorder.plan).executor == "reorder"


def test_a_plan_argument_of_the_wrong_type_is_a_clear_error():
    from model_ir import WrongTypeError

    model, opt, step = _mlp_step("reorder")
    bad = [("plan", 5), ("plan[0]", [5]), ("plan[1]", [step.plan, None]), ("plan", {}), ("plan", b"plan.json"),
           ("plan", step.plan.graph)]
    for name, value in bad:
        with pytest.raises(WrongTypeError, match=rf"^{re.escape(name)}: expected a model_ir.Plan, the path "
                                                 r"of a saved plan .*, got (int|NoneType|dict|bytes|Graph) "):
            optimize(model, torch.randn(8, 16), optimizer=opt, plan=value)


@pytest.mark.parametrize("argument,value,message", [
    ("max_plans", 0, "max_plans must be at least 1"),
    ("max_plans", -1, "max_plans must be at least 1"),
    ("max_plans", 2.0, "max_plans: expected an integer >= 1, got float"),
    ("max_plans", True, "max_plans: expected an integer >= 1, got bool"),
    ("set_grads", "no", "set_grads: expected True or False, got str 'no'"),
    ("train", "yes", "train: expected True or False or None, got str 'yes'"),
    ("return_outputs", 1, "return_outputs: expected True or False, got int"),
    ("cuda_graph", None, "cuda_graph: expected True or False, got NoneType"),
])
def test_flags_and_max_plans_of_the_wrong_type_or_value_are_refused(argument, value, message):
    model = mlp(16, 3)
    with pytest.raises(ModelOptError, match=re.escape(message)):
        optimize(model, torch.randn(8, 16), **{argument: value})


def test_saved_plan_figures_are_recomputed_not_trusted():
    """A plan made elsewhere (no figures) or edited (stale figures) gets the simulator's."""
    _, _, step = _mlp_step()
    stale = dict(step.plan.figures, peak_bytes=1, eager_peak_bytes=2, arena_bytes=3)
    for figures in ({}, stale):
        torch.manual_seed(0)
        model = mlp(16, 3)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        plan = Plan(step.plan.graph, step.plan.schedule, step.plan.placement, figures)
        again = optimize(model, torch.randn(8, 16), optimizer=opt, plan=plan)
        for key in ("peak_bytes", "eager_peak_bytes", "arena_bytes", "eager_caching_allocator_bytes"):
            assert again.plan.figures[key] == step.plan.figures[key], key
        assert "planned arena" in again.report() and repr(again)


@pytest.mark.parametrize("granularity", [0, -64])
def test_bad_granularity_is_an_error_not_the_default(granularity):
    model = mlp(16, 3)
    with pytest.raises(ModelOptError, match="granularity"):
        optimize(model, torch.randn(8, 16), granularity=granularity)


def test_non_tensor_arguments_are_constants_of_the_step():
    """A flag or scale passed with the inputs is baked into the captured step: another
    value is an error, never silently the captured one."""

    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x, scale=1.0, flip=False):
            y = self.fc(x) * scale
            return -y if flip else y

    model = Scaled().eval()
    x = torch.randn(2, 4)
    step = optimize(model, (x, 2.0), executor="reorder", time_limit=0.5, max_plans=1)
    with torch.no_grad():
        assert torch.equal(step(x, 2.0), model(x, 2.0))
    # a number gets the tip to pass it as a tensor; a flag does not
    with pytest.raises(ReoptimizeError, match=r"input leaf 1 \(not a tensor: a constant of the captured step\) "
                                              r"is 3.0, the step was captured with 2.0; .*as a 0-dim tensor"):
        step(x, 3.0)
    step = optimize(model, {"x": x, "flip": True}, executor="reorder", time_limit=0.5, max_plans=1)
    with pytest.raises(ReoptimizeError, match=r"captured with True; this step already has 1 plans"):
        step(x=x, flip=False)
    with pytest.raises(ModelOptError, match="captured with True"):
        step.captured.bind(model, None, {"x": x, "flip": False})


def test_input_with_another_memory_layout_asks_to_reoptimize():
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2)).eval()
    step = optimize(model, torch.randn(4, 3, 8), executor="reorder", time_limit=0.5, max_plans=1)
    transposed = torch.randn(8, 3, 4).permute(2, 1, 0)  # same shape, other strides
    with pytest.raises(ReoptimizeError, match="strides"):
        step(transposed)
    with torch.no_grad():
        assert torch.equal(step(transposed.contiguous()), model(transposed))
    batch = torch.randn(10, 3, 8)[2:6]  # a slice: offset storage, same strides
    with torch.no_grad():
        assert torch.equal(step(batch), model(batch))


def test_an_input_that_requires_grad_is_refused_in_train_mode_only():
    """Eager's backward would reach such an input (an upstream model's output not
    detached); the step computes the parameters' gradients only, so it must not pass."""
    from model_ir.torch import CaptureError
    from model_runtime import RuntimeLayerError

    model, opt, step = _mlp_step()
    upstream = torch.randn(8, 16, requires_grad=True) * 2
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(RuntimeLayerError, match=r"input 0 requires grad.*\.detach\(\)"):
        step(upstream)
    assert all(torch.equal(t, before[n]) for n, t in model.state_dict().items())
    step(upstream.detach())
    with pytest.raises(CaptureError, match=r"target 0 requires grad"):
        optimize(model, torch.randn(8, 16), optimizer=opt, loss_fn=nn.functional.mse_loss,
                 targets=(torch.randn(8, 3, requires_grad=True),))
    model.eval()
    with torch.no_grad():
        assert torch.equal(step(upstream), model(upstream))  # no backward: nothing is lost


def test_an_optimizer_given_with_the_model_in_eval_mode_is_warned_of():
    """``from_pretrained`` leaves a model in eval mode: optimize() then makes a forward-only
    step, where eager's loop would train; said at the user's line, once (not again when
    the step plans its eval variant during a validation loop)."""
    torch.manual_seed(0)
    model = mlp(16, 3).eval()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(8, 16)
    with pytest.warns(UserWarning, match=r"the model is in eval mode .*call model.train\(\) before training") as seen:
        step = optimize(model, x, optimizer=opt, time_limit=0.5)
    assert [w.filename for w in seen if "eval mode" in str(w.message)] == [__file__]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        optimize(model, x, optimizer=opt, time_limit=0.5, train=False)  # asked for
        step = optimize(model.train(), x, optimizer=opt, time_limit=0.5)
    model.eval()
    with pytest.warns(ReplanWarning) as seen:
        step(x)
    assert [type(w.message) for w in seen] == [ReplanWarning]
