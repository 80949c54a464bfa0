"""LayerDrop at rate 0 (transformers 5.0 to 5.6 still draw and compare): capture decides
``torch.rand([]) < 0`` as eager's comes out at every call, keeps the draw, and the
optimized step is bitwise eager's (``model_ir.torch.decided_draws``)."""

from __future__ import annotations

import copy
import operator

import pytest
from hypothesis import given
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

from model_ir.testing.torch_models import assert_same_state, eager_step  # noqa: E402
from model_ir.torch import CaptureError, capture_step  # noqa: E402
from model_ir.torch.decided_draws import decided  # noqa: E402
from model_runtime import optimize  # noqa: E402

_LARGEST_DRAW = 1.0 - 2.0 ** -24  # torch.rand's largest float32 value


@given(st.sampled_from([operator.lt, operator.le, operator.gt, operator.ge]),
       st.one_of(st.sampled_from([0.0, 1.0, -0.0, _LARGEST_DRAW, 2.0 ** -24, -1.0, 2.0]),
                 st.floats(-2, 3, allow_nan=False)),
       st.lists(st.sampled_from([0.0, 2.0 ** -24, 0.5, _LARGEST_DRAW]) | st.floats(0, _LARGEST_DRAW), min_size=1))
def test_a_decided_comparison_holds_for_every_draw(compare, bound, draws):
    """Where ``decided`` answers, every draw in [0, 1) compares so (the ends included);
    it answers for every bound outside the draws' range."""
    answer = decided(compare, bound)
    if answer is not None:
        assert all(compare(d, bound) == answer for d in [*draws, 0.0, _LARGEST_DRAW])
    else:
        assert 0 <= bound < 1


class _LayerDrop(torch.nn.Module):
    """Layers skipped when a draw falls below the rate, as transformers 5.0's BART does."""

    def __init__(self, rate: float):
        super().__init__()
        self.layers = torch.nn.ModuleList(torch.nn.Linear(16, 16) for _ in range(3))
        self.head, self.rate = torch.nn.Linear(16, 3), rate

    def forward(self, x):
        for layer in self.layers:
            skip = False
            if self.training:
                if torch.rand([]) < self.rate:
                    skip = True
            if not skip:
                x = torch.nn.functional.dropout(torch.relu(layer(x)), 0.2, self.training)
        return self.head(x)


@pytest.mark.parametrize("executor", ["reorder", "arena"])
def test_layerdrop_at_rate_zero_is_bitwise_eager(executor):
    """The draws stay in the step (the generator advances as eager's: the dropout after
    them is bitwise); before, capture refused the branch."""
    torch.manual_seed(0)
    model = _LayerDrop(0.0)
    ref = copy.deepcopy(model)
    opt, ref_opt = (torch.optim.SGD(m.parameters(), lr=0.1) for m in (model, ref))
    x, y = torch.randn(4, 16), torch.randint(0, 3, (4,))
    loss_fn = torch.nn.functional.cross_entropy
    step = optimize(model, x, optimizer=opt, loss_fn=loss_fn, targets=(y,), executor=executor, time_limit=0.5)
    assert sum(op.target == "aten.rand.default" for op in step.plan.graph.ops) == 3
    for i in range(3):
        torch.manual_seed(10 + i)
        loss = step(x, targets=(y,))
        torch.manual_seed(10 + i)
        assert torch.equal(loss, eager_step(ref, ref_opt, x, loss_fn, (y,))), i
    assert_same_state(model, opt, ref, ref_opt, stateful=False)


def test_layerdrop_at_a_rate_between_is_still_refused():
    model = _LayerDrop(0.1)
    with pytest.raises(CaptureError, match="data-dependent"):
        capture_step(model, torch.randn(4, 16), optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
