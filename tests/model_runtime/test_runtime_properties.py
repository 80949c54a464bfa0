"""Property: for any valid op order and any placer's placement of that order, both
executors reproduce the eager step bitwise (Hypothesis draws the order and placer)."""

from __future__ import annotations

import copy
import functools

import pytest

torch = pytest.importorskip("torch")

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from model_ir import Plan, Schedule  # noqa: E402
from model_ir.testing.torch_models import TransformerBlock, eager_step, random_topological_order  # noqa: E402
from model_ir.torch import capture_step, init_optimizer_state  # noqa: E402
from model_place import place  # noqa: E402
from model_runtime import arena_lifetimes, build_arena, build_reorder  # noqa: E402


def _make():
    torch.manual_seed(0)
    model = TransformerBlock(16, 2, dropout=0.3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    init_optimizer_state(opt)
    return model, opt


@functools.cache
def _captured():
    model, opt = _make()
    return capture_step(model, torch.randn(2, 5, 16), optimizer=opt, granularity=64)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), placer=st.sampled_from(["greedy-size", "best-fit", "exact"]),
       executor=st.sampled_from(["reorder", "arena"]))
def test_any_order_and_placement_is_bitwise_eager(seed, placer, executor):
    step = _captured()
    graph = step.graph
    order = random_topological_order(graph, seed)
    if executor == "arena":
        placement = place(arena_lifetimes(graph, order, 64), method=placer, time_limit=1.0).placement()
        program = build_arena(step, Plan(graph, Schedule(order), placement), device=torch.device("cpu"))
        assert program.arena.untyped_storage().nbytes() == placement.arena_bytes
    else:
        program = build_reorder(step, Plan(graph, Schedule(order)), device=torch.device("cpu"))
    model, opt = _make()
    ref = copy.deepcopy(model)
    ref_opt = torch.optim.AdamW(ref.parameters(), lr=1e-2, weight_decay=0.1)
    x = torch.randn(2, 5, 16)
    torch.manual_seed(seed)
    expected = eager_step(ref, ref_opt, x)
    torch.manual_seed(seed)
    (loss,) = program.run(step.bind(model, opt, x))
    assert torch.equal(loss, expected)
    for a, b in zip(model.parameters(), ref.parameters(), strict=True):
        assert torch.equal(a, b)
    for p, q in zip(model.parameters(), ref.parameters()):
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(opt.state[p][key], ref_opt.state[q][key])
