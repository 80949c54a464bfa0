"""Measured memory of the executors (live-storage harness of model_ir.testing.live_memory):

- ``reorder``: the live bytes after every op equal the simulator's timeline of the
  planned order, so the measured peak equals the plan's peak;
- ``arena``: one arena of exactly the planned size; apart from the step's inputs and
  the arena, the only storages any op creates are the counted fallbacks' temporaries
  (freed within their op) and the step outputs returned to the caller.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from model_ir import simulate  # noqa: E402
from model_ir.testing.torch_models import TransformerBlock, mlp, small_cnn  # noqa: E402
from model_runtime import optimize  # noqa: E402
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
    # Between ops, only the inputs, the arena and the step outputs produced so far are alive.
    base = graph.persistent_bytes + step.plan.placement.arena_bytes
    produced = 0
    for t, op_id in enumerate(m.order):
        produced += outputs[op_id]
        assert m.timeline[t] == base + produced, (t, op_id)
    assert step.program.out_ops > len(step.fallbacks)


def test_arena_is_smaller_than_the_caching_allocator_would_reserve():
    step, _ = _setup("cnn-adam", "arena")
    f = step.plan.figures
    assert f["arena_bytes"] <= f["peak_bytes"] - f["persistent_bytes"]
    assert f["arena_bytes"] < f["eager_caching_allocator_bytes"]
