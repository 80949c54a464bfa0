"""``optimize(..., return_outputs=True)``: a training step returns ``(loss, outputs)``
with the model outputs of that very step, bitwise as eager's forward pass, allocated
outside the arena (they stay valid after the next step), for both executors."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from model_ir import simulate  # noqa: E402
from model_ir.testing.torch_models import assert_same_state, eager_step, mlp, small_cnn  # noqa: E402
from model_runtime import ReoptimizeError, optimize  # noqa: E402
from model_runtime.measure import measure  # noqa: E402

F = nn.functional
EXECUTORS = ("reorder", "arena")

CASES = {
    "mlp-sgd": (lambda: mlp(32, 3), lambda m: torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9),
                lambda: torch.randn(16, 32), None, None),
    "cnn-bn-adam": (small_cnn, lambda m: torch.optim.Adam(m.parameters(), lr=1e-2), lambda: torch.randn(4, 3, 16, 16),
                    F.cross_entropy, lambda: (torch.randint(0, 10, (4,)),)),
}


def _in_arena(step, t: torch.Tensor) -> bool:
    arena = step.program.arena
    if arena is None:
        return False
    start = arena.untyped_storage().data_ptr()
    ptr = t.untyped_storage().data_ptr()
    return start <= ptr < start + arena.untyped_storage().nbytes()


def _optimize(case, executor, **kw):
    make_model, make_opt, make_batch, loss_fn, make_targets = CASES[case]
    torch.manual_seed(0)
    model = make_model()
    opt = make_opt(model)
    targets = make_targets() if make_targets else ()
    step = optimize(model, make_batch(), optimizer=opt, loss_fn=loss_fn, targets=targets, executor=executor,
                    time_limit=0.5, **kw)
    return model, opt, step


@pytest.mark.parametrize("executor", EXECUTORS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_outputs_loss_and_parameters_match_eager_bitwise(case, executor):
    make_model, make_opt, make_batch, loss_fn, make_targets = CASES[case]
    model, opt, step = _optimize(case, executor, return_outputs=True)
    ref = copy.deepcopy(model)
    ref_opt = make_opt(ref)
    assert step.return_outputs
    kept = []
    for i in range(2):
        batch = make_batch()
        targets = make_targets() if make_targets else ()
        want_loss, want_out = eager_step(ref, ref_opt, batch, loss_fn, targets, return_outputs=True)
        loss, out = step(batch, targets=targets)
        assert torch.equal(loss, want_loss), (executor, i, loss, want_loss)
        assert isinstance(out, torch.Tensor) and torch.equal(out, want_out), (executor, i)
        assert not _in_arena(step, out) and not _in_arena(step, loss)
        assert_same_state(model, opt, ref, ref_opt)
        kept.append((out, out.clone(), want_out))
    # The first step's outputs are still intact after the second step ran.
    out0, copy0, want0 = kept[0]
    assert torch.equal(out0, copy0) and torch.equal(out0, want0)
    assert not torch.equal(out0, kept[1][0])
    if executor == "arena":
        assert step.program.arena is not None and step.program.out_ops > 0


@pytest.mark.parametrize("case", sorted(CASES))
def test_peak_with_outputs_is_at_least_the_peak_without(case):
    _, _, plain = _optimize(case, "arena")
    _, _, with_out = _optimize(case, "arena", return_outputs=True)
    g_plain, g_out = plain.plan.graph, with_out.plan.graph
    assert simulate(g_out).peak_bytes >= simulate(g_plain).peak_bytes
    assert with_out.plan.figures["eager_peak_bytes"] >= plain.plan.figures["eager_peak_bytes"]
    assert with_out.plan.figures["output_bytes"] > plain.plan.figures["output_bytes"]
    # Keeping more buffers alive cannot beat the optimum without them.
    assert with_out.plan.figures["peak_bytes"] >= plain.plan.figures["lower_bound_bytes"]
    outputs = {b.id for b in g_out.buffers if b.output}
    assert outputs - {b.id for b in g_plain.buffers if b.output}
    assert not outputs & set(with_out.plan.placement.offsets)  # never placed in the arena


def test_reorder_measured_peak_equals_plan_with_outputs():
    _, _, step = _optimize("cnn-bn-adam", "reorder", return_outputs=True)
    m = measure(step, torch.randn(4, 3, 16, 16), targets=(torch.randint(0, 10, (4,)),))
    assert list(m.timeline) == list(simulate(step.plan.graph, step.plan.schedule).timeline)
    assert m.peak_bytes == step.plan.figures["peak_bytes"]


@pytest.mark.parametrize("case", sorted(CASES))
def test_arena_allocates_only_fallbacks_and_outputs(case):
    _, _, make_batch, _, make_targets = CASES[case]
    _, _, step = _optimize(case, "arena", return_outputs=True)
    graph = step.plan.graph
    m = measure(step, make_batch(), targets=make_targets() if make_targets else ())
    assert m.arena_bytes == step.plan.placement.arena_bytes
    fallback = {f.op: f.bytes for f in step.fallbacks}
    outputs = {op.id: sum(graph.buffer(b).size for b in op.outputs if graph.buffer(b).output) for op in graph.ops}
    assert sum(outputs.values()) == step.plan.figures["output_bytes"]
    for op_id, created in m.created.items():
        assert created == fallback.get(op_id, 0) + outputs[op_id], op_id


class Heads(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        h = self.fc(x)
        return h, [h[:, :2], h.relu()]


@pytest.mark.parametrize("executor", EXECUTORS)
def test_structured_outputs_like_eager(executor):
    torch.manual_seed(0)
    model = Heads()
    ref = copy.deepcopy(model)
    opt, ref_opt = torch.optim.SGD(model.parameters(), lr=0.1), torch.optim.SGD(ref.parameters(), lr=0.1)

    def loss_fn(out):
        return out[0].sum() + out[1][1].square().sum()

    step = optimize(model, torch.randn(4, 8), optimizer=opt, loss_fn=loss_fn, executor=executor, time_limit=0.5,
                    return_outputs=True)
    for _ in range(2):
        x = torch.randn(4, 8)
        ref_opt.zero_grad(set_to_none=True)
        want = ref(x)
        want_loss = loss_fn(want)
        want_loss.backward()
        ref_opt.step()
        loss, out = step(x)
        assert torch.equal(loss, want_loss.detach())
        assert isinstance(out, tuple) and isinstance(out[1], list) and len(out[1]) == 2
        for a, b in zip([out[0], *out[1]], [want[0], *want[1]]):
            assert torch.equal(a, b) and not _in_arena(step, a)
        assert out[1][0].data_ptr() == out[0].data_ptr()  # the view shares its base's storage, as in eager
        _assert_same_params(model, ref)


def _assert_same_params(a, b):
    for (n, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), n


def test_default_returns_the_loss_only_and_plans_do_not_mix(tmp_path):
    from model_ir import save_plan

    model, opt, plain = _optimize("mlp-sgd", "reorder")
    assert not plain.return_outputs
    loss = plain(torch.randn(16, 32))
    assert isinstance(loss, torch.Tensor) and loss.numel() == 1
    path = tmp_path / "plan.json"
    save_plan(plain.plan, path)
    with pytest.raises(ReoptimizeError, match="another step"):
        optimize(model, torch.randn(16, 32), optimizer=opt, executor="reorder", plan=path, return_outputs=True)
    model.eval()
    ev = optimize(model, torch.randn(16, 32), executor="reorder", return_outputs=True, time_limit=0.5)
    y = ev(torch.randn(16, 32))
    assert isinstance(y, torch.Tensor) and y.shape == (16, 10)
