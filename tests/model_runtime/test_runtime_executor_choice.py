"""``optimize(executor="auto")``, the default: the plan runs with the arena executor or
the reorder executor, whichever its figures say holds less beside the persistent
buffers (``reorder_transient_bytes`` against ``arena_bytes + beside_arena_bytes``)."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model_ir.testing.strategies import graphs_with_unplaced
from model_place import lifetimes_from_graph, live_bytes_peak
from model_runtime.beside_arena import least_memory_executor, reorder_figures
from model_runtime.planning import make_plan

torch = pytest.importorskip("torch")


@settings(max_examples=30, deadline=None)
@given(graphs_with_unplaced(), st.sampled_from(["cpu", "cuda"]), st.booleans())
def test_reorder_figures_and_the_choice(case, device_type, expandable):
    graph, fallbacks = case
    plan = make_plan(graph, device_type=device_type, unplaced=fallbacks, time_limit=0.2,
                     expandable_segments=expandable)
    f = plan.figures
    align = f["alignment_bytes"]
    held = lifetimes_from_graph(graph, plan.schedule, alignment=align)  # every transient buffer, outputs too
    live = live_bytes_peak(held) if held else 0
    if device_type == "cpu":
        # no caching allocator: the reorder executor holds the live peak, which no arena beats
        assert f["reorder_transient_bytes"] == live and f["reorder_warm_block_bytes"] == 0
        assert f["reorder_transient_bytes"] <= f["arena_bytes"] + f["beside_arena_bytes"]
        assert "expandable_segments" not in f  # a CUDA setting
    else:
        assert f["reorder_transient_bytes"] >= live and f["expandable_segments"] == expandable
    # the reorder figures do not depend on the placement
    unplaced = make_plan(graph, device_type=device_type, placement=False, time_limit=0.2,
                         expandable_segments=expandable)
    assert unplaced.figures["reorder_transient_bytes"] == reorder_figures(
        graph, unplaced.schedule, align, device_type, expandable=expandable)["reorder_transient_bytes"]
    pick = least_memory_executor(f)
    held = {"arena": f["arena_bytes"] + f["beside_arena_bytes"], "reorder": f["reorder_transient_bytes"],
            "program": f["program_transient_bytes"]}
    assert held[pick] == min(held.values())
    assert pick == "arena" or held[pick] < held["arena"]  # a tie keeps the arena


def test_least_memory_executor_without_figures_keeps_the_arena():
    assert least_memory_executor({}) == "arena"
    assert least_memory_executor({"arena_bytes": 10}) == "arena"
    assert least_memory_executor({"arena_bytes": 10, "beside_arena_bytes": 5, "reorder_transient_bytes": 14}) \
        == "reorder"
    assert least_memory_executor({"arena_bytes": 10, "beside_arena_bytes": 5, "reorder_transient_bytes": 15}) \
        == "arena"


def test_the_allocator_setting_is_read_from_torch_or_the_environment(monkeypatch):
    from model_runtime.optimized_step import expandable_segments

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    monkeypatch.setattr(torch._C, "_accelerator_getAllocatorSettings",
                        lambda: "max_split_size_mb:128,expandable_segments:True", raising=False)
    assert expandable_segments(cuda) and not expandable_segments(cpu)
    monkeypatch.setattr(torch._C, "_accelerator_getAllocatorSettings", lambda: "", raising=False)
    assert not expandable_segments(cuda)
    monkeypatch.delattr(torch._C, "_accelerator_getAllocatorSettings", raising=False)  # older torch: the environment
    monkeypatch.delenv("PYTORCH_ALLOC_CONF", raising=False)
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    assert expandable_segments(cuda)
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:False")
    assert not expandable_segments(cuda)


def test_a_cuda_plan_simulates_the_allocator_setting_it_runs_with():
    """Captured for CUDA here (emulated kernels): with expandable segments the figures
    of what lies in PyTorch's allocator are the simulation of that setting."""
    from model_ir.testing.torch_models import small_cnn
    from model_ir.torch import capture_step
    from model_ir import Lifetime
    from model_ir.workspaces import on_allocator_clock
    from model_place import simulate_training_steps
    from model_runtime.beside_arena import workspace_lifetimes
    from model_runtime.lowering import fallback_buffers

    model = small_cnn()
    cap = capture_step(model, torch.randn(4, 3, 16, 16), optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                       device="cuda", granularity=512)
    plans = {es: make_plan(cap.graph, device_type="cuda", unplaced=fallback_buffers(cap, "cuda"), time_limit=0.5,
                           expandable_segments=es) for es in (False, True)}
    for es, plan in plans.items():
        f = plan.figures
        assert f["expandable_segments"] is es
        kept, step = workspace_lifetimes(plan.graph, plan.schedule)
        transient = list(lifetimes_from_graph(plan.graph, plan.schedule, alignment=512))
        # the persistent buffers first, then the step on the allocator's clock
        persistent = [Lifetime(b.id, 0, 1, b.size) for b in plan.graph.buffers if b.persistent]
        plain = simulate_training_steps([*persistent, *on_allocator_clock(plan.graph, kept)],
                                        on_allocator_clock(plan.graph, transient + step),
                                        expandable_segments=es).reserved_bytes - plan.graph.persistent_bytes
        assert f["reorder_transient_bytes"] <= plain  # a first block only where it reserves less
        if not f["reorder_warm_block_bytes"]:
            assert f["reorder_transient_bytes"] == plain


def test_an_emulated_cuda_step_leaves_only_cuda_only_kernels_results_to_the_allocator():
    """The arena executor's fallbacks on a step captured for CUDA here (CPU stand-ins):
    cuDNN's kernels, never the matrix products, elementwise and foreach ops whose
    stand-ins are CPU tensors (a check of the results' device made every op a fallback
    of the simulated executor)."""
    from model_ir.testing.torch_models import small_cnn
    from model_ir.torch import capture_step
    from model_runtime.lowering import fallback_buffers

    model = small_cnn()
    cap = capture_step(model, torch.randn(4, 3, 16, 16), optimizer=torch.optim.Adam(model.parameters()),
                       device="cuda", granularity=512)
    producers = {b: op.target for op in cap.graph.ops for b in op.outputs}
    left = {producers[b] for b in fallback_buffers(cap, "cuda")}
    assert "aten.cudnn_batch_norm.default" in left
    assert not any(t.startswith(("aten.addmm", "aten.mm", "aten.threshold_backward", "aten._foreach")) for t in left)


def test_a_plan_that_holds_more_than_eager_says_so():
    from model_runtime.beside_arena import above_eager, held_by

    f = {"persistent_bytes": 100, "arena_bytes": 50, "beside_arena_bytes": 20, "reorder_transient_bytes": 60,
         "eager_reserved_bytes": 165, "expandable_segments": True}
    assert held_by(f, "arena") == 70 and held_by(f, "reorder") == 60 and held_by({}, "arena") is None
    assert above_eager(f, "reorder") is None  # 160 <= 165
    assert "the arena executor would reserve 170 bytes, more than eager PyTorch's 165 (simulated, expandable" \
        in above_eager(f, "arena")
    assert above_eager({k: v for k, v in f.items() if k != "eager_reserved_bytes"}, "arena") is None  # CPU plans


def _cnn_step(**kwargs):
    from model_ir.testing.torch_models import small_cnn
    from model_runtime import optimize

    torch.manual_seed(0)
    model = small_cnn()
    x = torch.randn(8, 3, 32, 32)
    return optimize(model, x, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), time_limit=0.5,
                    **kwargs), x


def test_auto_runs_the_executor_that_holds_less_and_says_so():
    step, x = _cnn_step()
    f = step.figures()
    assert step.executor == least_memory_executor(f) == "reorder"  # CPU: no arena beats the live peak
    assert f["reorder_transient_bytes"] < f["arena_bytes"] + f["beside_arena_bytes"]
    report = step.report()
    assert "executor reorder" in report and "reorder executor" in report and "arena executor" in report
    # where only the arena does what is asked, auto is the arena
    assert _cnn_step(fallback_results="copied")[0].executor == "arena"
    assert _cnn_step(executor="arena")[0].executor == "arena"


def test_auto_on_the_cpu_runs_reorder_where_the_arena_ties_with_it():
    """On the CPU the arena never holds less than reorder (the live peak): on a tie auto
    runs reorder too (it ran the arena, the first of the choices)."""
    from model_runtime import optimize
    from model_runtime.beside_arena import held_by

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 4))
    x, y = torch.randn(6, 8), torch.randint(0, 4, (6,))
    step = optimize(model, x, optimizer=torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
                    loss_fn=torch.nn.functional.multi_margin_loss, targets=(y,), time_limit=0.5)
    f = step.figures()
    assert held_by(f, "arena") == held_by(f, "reorder") and step.executor == "reorder"


def test_auto_and_arena_steps_are_bitwise_the_same():
    from model_ir.testing.torch_models import small_cnn
    from model_runtime import optimize

    x = torch.randn(8, 3, 32, 32)
    losses = {}
    for executor in ("auto", "arena"):
        torch.manual_seed(0)
        model = small_cnn()
        step = optimize(model, x, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), time_limit=0.5,
                        executor=executor)
        losses[executor] = [step(x) for _ in range(3)]
    assert all(torch.equal(a, b) for a, b in zip(losses["auto"], losses["arena"]))


def test_a_steady_cpu_reorder_step_allocates_what_the_plan_says():
    """torch.profiler memory events of a steady reorder step on the CPU: what it
    allocates beyond the persistent buffers is the plan's ``reorder_transient_bytes``
    (the live peak, batch norm backward's second input gradient and the convolutions'
    temporaries measured at capture included), allocation by allocation, up to the
    64-byte rounding of its buffers and the loss."""
    from model_ir.testing.live_memory import exact_peak_allocated_during

    step, x = _cnn_step(executor="reorder")
    step(x)
    beyond, _ = exact_peak_allocated_during(lambda: step(x))
    f = step.figures()
    assert abs(beyond - f["reorder_transient_bytes"]) <= 1024, (beyond, f["reorder_transient_bytes"])


def test_a_cuda_reorder_step_starts_with_its_own_first_block():
    from model_ir import Plan, Schedule

    from model_runtime.executors import _warm_block

    plan = Plan(None, Schedule([]), None, {"warm_block_bytes": 1 << 20, "reorder_warm_block_bytes": 3 << 20})
    assert _warm_block(plan, torch.device("cuda"), "reorder_warm_block_bytes") == (3 << 20, "cuda")
    assert _warm_block(plan, torch.device("cpu"), "reorder_warm_block_bytes") is None


def test_planned_device_bytes_follows_the_executor_that_ran():
    from model_runtime.measured_runs import planned_device_bytes

    plan = {"persistent_bytes": 100, "arena_bytes": 50, "beside_arena_bytes": 20, "reorder_transient_bytes": 60,
            "peak_bytes": 150}
    assert planned_device_bytes({"plan": {**plan, "executor": "arena"}}) == 170
    assert planned_device_bytes({"plan": {**plan, "executor": "reorder"}}) == 160
    assert planned_device_bytes({"plan": {**plan, "executor": "reorder"}, "persistent_allocated_bytes": 90}) == 150
    assert planned_device_bytes({"plan": {**plan, "executor": "program", "program_transient_bytes": 80}}) == 180
    old_arena = {"persistent_bytes": 100, "arena_bytes": 50, "unplaced_caching_allocator_bytes": 30}
    assert planned_device_bytes({"plan": old_arena}) == 180  # a plan from before beside_arena_bytes
    old = {"persistent_bytes": 100, "peak_bytes": 150}  # a reorder plan from before reorder_transient_bytes
    assert planned_device_bytes({"plan": old}) == 150
    assert planned_device_bytes({}) is None


class _HoldsALocal(torch.nn.Module):
    """Eager PyTorch keeps ``h`` until ``forward`` returns, long after its last reader."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = torch.nn.Linear(64, 256), torch.nn.Linear(256, 256), torch.nn.Linear(256, 10)

    def forward(self, x):
        h = self.fc1(x)
        out = self.fc2(torch.relu(h))
        return self.fc3(torch.relu(out))


@pytest.mark.parametrize("train", [False, True])
def test_the_program_executor_frees_as_eager_does(train):
    """The ``program`` executor runs eager's order and frees each buffer when eager does
    (in eval, what a forward method's locals hold): its measured live bytes after every
    op are the eager simulation's, its results eager's bitwise."""
    from model_ir import simulate
    from model_ir.simulator import without_held_gradients
    from model_ir.testing.torch_models import eager_step
    from model_runtime import optimize
    from model_runtime.measure import measure

    torch.manual_seed(0)
    model = _HoldsALocal().train(train)
    ref = copy.deepcopy(model)
    x = torch.randn(32, 64)
    kwargs = dict(optimizer=torch.optim.SGD(model.parameters(), lr=0.1), loss_fn=lambda y: y.square().mean()) \
        if train else {}
    step = optimize(model, x, executor="program", time_limit=0.5, **kwargs)
    graph = step.plan.graph
    if not train:
        assert any("released_after" in b.meta for b in graph.buffers)  # h
    if train:
        ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1)
        for _ in range(2):
            assert torch.equal(step(x), eager_step(ref, ref_opt, x, lambda y: y.square().mean()))
    else:
        with torch.no_grad():
            assert torch.equal(step(x), ref(x))
    m = measure(step, x)
    # it sets no .grad: each gradient is freed after its last reader (eager holds it in .grad)
    assert m.timeline == simulate(without_held_gradients(graph), eager=True).timeline
    assert m.peak_bytes - graph.persistent_bytes == step.figures()["program_transient_bytes"]


def test_auto_runs_the_program_executor_where_it_holds_least():
    from model_runtime.beside_arena import least_memory_executor

    f = {"persistent_bytes": 100, "arena_bytes": 50, "beside_arena_bytes": 20, "reorder_transient_bytes": 60,
         "program_transient_bytes": 55}
    assert least_memory_executor(f) == "program"
    assert least_memory_executor({**f, "program_transient_bytes": 60}) == "reorder"  # a tie: the earlier
    assert least_memory_executor(f, ("reorder", "program")) == "program"  # a saved plan without placement


def test_under_a_memory_budget_auto_keeps_the_planned_order(monkeypatch):
    """The program executor runs eager's order, which a budget's plan does not bound:
    ``auto`` leaves it out under ``memory_budget``."""
    import model_runtime.optimized_step as optimized_step

    seen = []
    real = optimized_step.least_memory_executor
    monkeypatch.setattr(optimized_step, "least_memory_executor",
                        lambda figures, choices: seen.append(choices) or real(figures, choices))
    step, x = _cnn_step()
    budget = 2 * step.plan.figures["peak_bytes"]  # room for the kernels' temporaries, which a budget counts
    _cnn_step(memory_budget=budget)
    assert seen == [("reorder", "program"), ("reorder",)]  # on the CPU never the arena


def test_the_cpu_report_compares_the_executors_with_what_eager_holds():
    """On the CPU the report's eager figure is eager's order and frees with the kernels'
    temporaries, as the executors' figures count them, and what an eager step allocates
    (torch.profiler) beyond the persistent buffers. It was eager_peak_bytes, which leaves
    the temporaries out: the program executor, eager itself, read +16% (tiny-cnn b4)."""
    from model_ir.testing.live_memory import exact_peak_allocated_during
    from model_ir.testing.torch_models import eager_step, small_cnn
    from model_ir.formatting import human_bytes

    step, x = _cnn_step(executor="program")
    f = step.figures()
    report = step.report()
    eager = f["persistent_bytes"] + f["program_transient_bytes"]
    assert eager > f["eager_peak_bytes"]  # the convolutions' temporaries
    assert f"eager {human_bytes(eager)};" in report and "(+0.0%, runs)" in report
    arena = _cnn_step(executor="arena")[0].report()
    assert "left to PyTorch's allocator until their last use" in arena
    assert "caching allocator" not in arena  # the CPU has none (it gave a simulated 2 MiB segment)
    torch.manual_seed(0)
    model = small_cnn()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    eager_step(model, optimizer, (x,))
    beyond, _ = exact_peak_allocated_during(lambda: eager_step(model, optimizer, (x,)))
    assert abs(beyond - f["program_transient_bytes"]) <= 1024, (beyond, f["program_transient_bytes"])


def test_the_cpu_reports_eager_holds_every_gradient_to_the_end_of_the_step():
    """Eager's loop holds each ``.grad`` until ``zero_grad()``, after ``optimizer.step()``:
    AdamW's temporaries come on top of every gradient. The report's eager figure holds
    them so, as measured (before: an MLP's eager step allocated 1.5x what the report
    said); the program executor, which sets no ``.grad``, frees them after their last
    reader, as its own figure says."""
    from model_ir.formatting import human_bytes
    from model_ir.testing.live_memory import exact_peak_allocated_during
    from model_ir.testing.torch_models import eager_step
    from model_runtime import optimize

    def make():
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(512, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 3))
        return model, torch.optim.AdamW(model.parameters(), lr=1e-3)

    x = torch.randn(8, 512)
    model, opt = make()
    step = optimize(model, x, optimizer=opt, executor="program", time_limit=0.5)
    f = step.figures()
    assert f["eager_transient_bytes"] > 1.3 * f["program_transient_bytes"]
    assert f"eager {human_bytes(f['persistent_bytes'] + f['eager_transient_bytes'])};" in step.report()
    step(x)
    program, _ = exact_peak_allocated_during(lambda: step(x))
    assert abs(program - f["program_transient_bytes"]) <= 1024, (program, f["program_transient_bytes"])
    ref, ref_opt = make()
    eager_step(ref, ref_opt, (x,))
    eager, _ = exact_peak_allocated_during(lambda: eager_step(ref, ref_opt, (x,)))
    assert abs(eager - f["eager_transient_bytes"]) <= 1024, (eager, f["eager_transient_bytes"])
