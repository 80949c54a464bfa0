"""``capture_step(..., return_outputs=True)``: the captured training step also returns
the model's output tensors; their storages are graph outputs (alive to the end of the
step), so the simulator accounts for them, and they match eager's forward outputs."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from model_ir import simulate  # noqa: E402
from model_ir.testing.torch_models import (  # noqa: E402
    assert_same_state, eager_step, mlp, random_topological_order, small_cnn,
)
from model_ir.torch import capture_step  # noqa: E402

F = nn.functional


CASES = {
    "mlp-sgd": (lambda: mlp(16, 3), lambda m: torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9),
                lambda: torch.randn(8, 16), None, None),
    "cnn-bn-adam": (small_cnn, lambda m: torch.optim.Adam(m.parameters(), lr=1e-2), lambda: torch.randn(4, 3, 16, 16),
                    F.cross_entropy, lambda: (torch.randint(0, 10, (4,)),)),
}


def _setup(case, **kw):
    make_model, make_opt, make_batch, loss_fn, make_targets = CASES[case]
    torch.manual_seed(0)
    model = make_model()
    opt = make_opt(model)
    targets = make_targets() if make_targets else ()
    captured = capture_step(model, make_batch(), optimizer=opt, loss_fn=loss_fn, targets=targets, **kw)
    return model, opt, captured


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("order_seed", [None, 1])
def test_outputs_match_eager_forward_bitwise(case, order_seed):
    make_model, make_opt, make_batch, loss_fn, make_targets = CASES[case]
    model, opt, captured = _setup(case, return_outputs=True)
    ref = copy.deepcopy(model)
    ref_opt = make_opt(ref)
    order = None if order_seed is None else random_topological_order(captured.graph, order_seed)
    kept = []
    for i in range(2):
        batch = make_batch()
        targets = make_targets() if make_targets else ()
        want_loss, want_out = eager_step(ref, ref_opt, batch, loss_fn, targets, return_outputs=True)
        loss, *outs = captured.run(model, opt, batch, targets, order=order)
        assert torch.equal(loss, want_loss), (i, loss, want_loss)
        (out,) = outs
        assert torch.equal(out, want_out), i
        assert captured.model_outputs(outs) is out  # a single tensor output comes back as itself
        assert_same_state(model, opt, ref, ref_opt)
        kept.append((out, want_out))
    # The first step's output is its own storage: the second step did not overwrite it.
    assert torch.equal(*kept[0]) and not torch.equal(kept[0][0], kept[1][0])


@pytest.mark.parametrize("case", sorted(CASES))
def test_output_buffers_are_graph_outputs_alive_to_the_end(case):
    _, _, plain = _setup(case)
    _, _, with_out = _setup(case, return_outputs=True)
    assert with_out.return_outputs and not plain.return_outputs
    assert with_out.graph.meta["return_outputs"] is True and "return_outputs" not in plain.graph.meta
    assert len(with_out.outputs) == len(plain.outputs) + 1
    extra = with_out.outputs[-1]
    buf = with_out.graph.buffer(extra)
    assert buf.output and not buf.persistent and buf.kind == "output"
    # Same ops and buffers; only the output flag of the model output's storage differs.
    assert [o.id for o in plain.graph.ops] == [o.id for o in with_out.graph.ops]
    assert {b.id for b in plain.graph.buffers} == {b.id for b in with_out.graph.buffers}
    assert not plain.graph.buffer(extra).output
    a, b = simulate(plain.graph), simulate(with_out.graph)
    assert b.peak_bytes >= a.peak_bytes
    # Alive to the end: the last timeline entry holds the output's bytes too.
    assert b.timeline[-1] - a.timeline[-1] == buf.size


class Heads(nn.Module):
    """Outputs that alias: a view of an activation, one tensor twice, the input, constants."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.bn = nn.BatchNorm1d(8)

    def forward(self, x):
        h = self.fc(x)
        z = self.bn(h)
        return {"view": h[:, :3], "pair": (z, z), "input": x, "none": None, "k": 3}


def _heads_loss(out):
    return out["pair"][0].square().sum() + out["view"].sum()


def test_aliasing_outputs_storage_level_and_structure():
    torch.manual_seed(0)
    model = Heads()
    ref = copy.deepcopy(model)
    opt, ref_opt = torch.optim.SGD(model.parameters(), lr=0.1), torch.optim.SGD(ref.parameters(), lr=0.1)
    captured = capture_step(model, torch.randn(4, 8), optimizer=opt, loss_fn=_heads_loss, return_outputs=True)
    g = captured.graph
    # The view's storage is the whole activation buffer (one IR buffer), flagged as an output;
    # the repeated tensor is returned once; the input is persistent and not an output buffer.
    output_node = next(n for n in captured.module.graph.nodes if n.op == "output")
    assert len(output_node.args[0]) == 1 + 3  # loss, view, z (once), input
    flagged = [b for b in g.buffers if b.output]
    assert {b.kind for b in flagged} == {"output"} and len(flagged) == 3  # loss, h, z
    h_buffer = captured.node_buffers[output_node.args[0][1].name]
    assert len(h_buffer) == 1 and g.buffer(h_buffer[0]).shape == (4, 8) and g.buffer(h_buffer[0]).output
    assert all(g.buffer(b).persistent for b in captured.node_buffers[output_node.args[0][3].name])
    for i in range(2):
        x = torch.randn(4, 8)
        ref_opt.zero_grad(set_to_none=True)
        want = ref(x)
        want_loss = _heads_loss(want)
        want_loss.backward()
        ref_opt.step()
        loss, *outs = captured.run(model, opt, x)
        out = captured.model_outputs(outs)
        assert torch.equal(loss, want_loss.detach())
        assert set(out) == set(want) and out["none"] is None and out["k"] == 3
        assert torch.equal(out["view"], want["view"]) and out["view"].shape == (4, 3)
        assert torch.equal(out["pair"][0], want["pair"][0]) and out["pair"][0] is out["pair"][1]
        assert out["input"].data_ptr() == x.data_ptr() and torch.equal(out["input"], x)
        assert_same_state(model, opt, ref, ref_opt, stateful=False)  # plain SGD


def test_without_the_option_nothing_changes_and_eval_ignores_it():
    model, opt, plain = _setup("mlp-sgd")
    out_node = next(n for n in plain.module.graph.nodes if n.op == "output")
    assert len(out_node.args[0]) == 1 and plain.outputs_structure is None
    (loss,) = plain.run(model, opt, torch.randn(8, 16))
    assert loss.numel() == 1
    model.eval()
    ev = capture_step(model, torch.randn(8, 16), train=False, return_outputs=True)
    assert not ev.return_outputs and "return_outputs" not in ev.graph.meta
    (y,) = ev.run(model, None, torch.randn(8, 16))
    assert y.shape == (8, 10)
