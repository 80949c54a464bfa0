"""Measured memory of the executors (live-storage harness of model_ir.testing.live_memory):

- ``reorder``: the live bytes after every op equal the simulator's timeline of the
  planned order, so the measured peak equals the plan's peak;
- ``arena``: one arena of exactly the planned size; apart from the step's inputs and
  the arena, the only storages any op creates are the counted fallbacks' results
  (left out of the arena by the plan, alive until their last use, as the simulator
  says) and the step outputs returned to the caller.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from model_ir import simulate  # noqa: E402
from model_ir.testing.live_memory import peak_allocated_during  # noqa: E402
from model_ir.testing.torch_models import TransformerBlock, mlp, small_cnn  # noqa: E402
from model_runtime import optimize  # noqa: E402
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


@pytest.mark.parametrize("case", sorted(CASES))
def test_arena_allocates_only_counted_fallbacks_and_outputs(case):
    step, make_batch = _setup(case, "arena")
    graph = step.plan.graph
    m = measure(step, make_batch())
    assert m.arena_bytes == step.plan.placement.arena_bytes == step.plan.figures["arena_bytes"]
    assert step.program.arena.untyped_storage().nbytes() == step.plan.placement.arena_bytes
    fallback = {f.op: f.bytes for f in step.fallbacks}
    outputs = {op.id: sum(graph.buffer(b).size for b in op.outputs if graph.buffer(b).output) for op in graph.ops}
    for op_id, created in m.created.items():
        assert created == fallback.get(op_id, 0) + outputs[op_id], op_id
    # Between ops, only the inputs, the arena, the step outputs produced so far and the
    # fallbacks' results still in use are alive.
    unplaced = fallback_buffers(step.captured, "cpu")
    assert sum(f.bytes for f in step.fallbacks) == step.plan.figures["unplaced_bytes"]
    assert not unplaced & set(step.plan.placement.offsets)  # never placed in the arena
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
    peak, step = peak_allocated_during(lambda: optimize(model, x, optimizer=opt, time_limit=0.5))
    assert peak <= step.plan.figures["arena_bytes"] + 2**20, (peak, step.plan.figures["arena_bytes"])
    assert peak >= step.plan.figures["arena_bytes"]  # the harness does see the arena


def test_planning_with_optimizer_state_adds_the_state_and_one_parameter():
    """The optimizer state a first step creates is the step's own memory; creating it
    costs one parameter's gradient and saved copy at a time, not the whole model."""
    model, opt, x = _planning_case(0.9)
    params = list(model.parameters())
    largest = max(p.numel() * p.element_size() for p in params)
    state = sum(p.numel() * p.element_size() for p in params)  # one momentum buffer each
    peak, step = peak_allocated_during(lambda: optimize(model, x, optimizer=opt, time_limit=0.5))
    assert peak <= step.plan.figures["arena_bytes"] + state + 2 * largest + 2**20


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
