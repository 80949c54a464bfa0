"""Writing results into given tensors: out= overload lookup from the schemas and the
hand-written slot writes, each checked bitwise against the functional operator."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from torch import fx  # noqa: E402

from model_runtime.out_variants import (  # noqa: E402
    find_out_variant, has_native_kernel, named_arguments, out_call_arguments,
)
from model_runtime.slot_writes import (  # noqa: E402
    REWRITES, call_foreach_into, foreach_inplace_twin, rewrite_refusal,
)

aten = torch.ops.aten


def test_native_out_overloads_are_found():
    v = find_out_variant(aten.addmm.default, "cpu")
    assert v.overload is aten.addmm.out and v.native and v.out_names == ("out",)
    v = find_out_variant(aten.sum.dim_IntList, "cpu")
    assert v.overload is aten.sum.IntList_out and v.native
    v = find_out_variant(aten.native_batch_norm.default, "cpu")
    assert v.out_names == ("out", "save_mean", "save_invstd") and v.native
    v = find_out_variant(aten.threshold_backward.default, "cpu")
    assert v.out_names == ("grad_input",)


def test_generated_wrappers_and_missing_overloads_are_told_apart():
    v = find_out_variant(aten.convolution.default, "cpu")
    assert v is not None and not v.native  # autogen: computes, then copies
    assert not has_native_kernel(aten.convolution.out, "cpu")
    v = find_out_variant(aten.relu.default, "cpu")
    assert v is None or not v.native  # hence the clamp_min rewrite in slot_writes
    assert find_out_variant(aten.t.default, "cpu") is None  # a view: no out overload at all
    assert find_out_variant(aten.add_.Tensor, "cpu") is None  # in-place: nothing to allocate
    v = find_out_variant(aten._foreach_add.List, "cpu")
    assert v.list_out and v.returns_nothing


def test_tensor_options_may_be_dropped_but_not_other_arguments():
    v = find_out_variant(aten._to_copy.default, "cpu")
    assert v is not None and "dtype" not in v.positional + v.keyword
    # bernoulli.p(self, float p) must not match bernoulli.out(self), which has no p.
    v = find_out_variant(aten.bernoulli.p, "cpu")
    assert v is None or "p" in v.positional + v.keyword


@pytest.mark.parametrize("case", [
    (aten.addmm.default, (torch.randn(3), torch.randn(2, 4), torch.randn(4, 3)), {"beta": 0.5, "alpha": 2.0}),
    (aten.sum.dim_IntList, (torch.randn(4, 5), [1], True), {}),
    (aten.mean.dim, (torch.randn(4, 5), [0]), {}),
    (aten._softmax.default, (torch.randn(3, 7), -1, False), {}),
    (aten.native_batch_norm.default, (torch.randn(4, 3, 2, 2), torch.randn(3), torch.randn(3), torch.zeros(3),
                                      torch.ones(3), True, 0.1, 1e-5), {}),
    (aten.gelu.default, (torch.randn(10),), {"approximate": "tanh"}),
], ids=lambda c: str(c[0]) if isinstance(c, tuple) else None)
def test_out_call_is_bitwise_the_functional_call(case):
    op, args, kwargs = case
    variant = find_out_variant(op, "cpu")
    assert variant is not None and variant.native
    clone = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
    expected = op(*clone, **kwargs)
    expected = list(expected) if isinstance(expected, tuple) else [expected]
    outs = [torch.empty_like(e) for e in expected]
    clone = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
    a, kw = out_call_arguments(variant, named_arguments(op, clone, kwargs), outs)
    variant.overload(*a, **kw)
    for e, o in zip(expected, outs, strict=True):
        assert torch.equal(e, o)


_X = torch.tensor([[-1.5, 0.0, 2.25], [3.0, -0.0, -7.125]])
_I = torch.tensor([[-3, 0, 5], [7, 1, -2]])

REWRITE_CASES = {
    aten.ones_like.default: (_X,), aten.zeros_like.default: (_X,), aten.full_like.default: (_X, 3.5),
    aten.empty_like.default: (_X,), aten.ones.default: ([2, 3],), aten.zeros.default: ([2, 3],),
    aten.full.default: ([2, 3], 2.5), aten.scalar_tensor.default: (4.5,), aten.new_ones.default: (_X, [2, 3]),
    aten.new_zeros.default: (_X, [2, 3]), aten.new_full.default: (_X, [2, 3], 1.25),
    aten.new_empty.default: (_X, [2, 3]), aten.new_empty_strided.default: (_X, [2, 3], [3, 1]),
    aten.empty_strided.default: ([2, 3], [3, 1]), aten._to_copy.default: (_X,), aten.clone.default: (_X,),
    aten.lift_fresh_copy.default: (_X,), aten.relu.default: (_X,), aten.add.Scalar: (_X, 2.7),
    aten.sub.Scalar: (_I, 2.7), aten.mul.Scalar: (_I, 2.7), aten.div.Scalar: (_X, 2.7),
    aten.div.Scalar_mode: (_X, 2.7), aten.arange.default: (7,), aten.arange.start: (-2.5, 4),
    aten.select_backward.default: (torch.tensor([[1.5, -2.0], [0.25, 3.0]]), [2, 3, 2], 1, 2),
    aten.slice_backward.default: (torch.randn(2, 2, 2), [2, 5, 2], 1, 1, 5, 2),
    aten.bernoulli.p: (torch.zeros(64, 33), 0.7),
    # rows: finite, partly -inf, all -inf (zeroed), with a NaN (stays NaN)
    aten._safe_softmax.default: (torch.tensor([[1.0, 2.5, -3.0], [-float("inf"), 0.5, 2.0],
                                               [-float("inf")] * 3, [0.25, float("nan"), 1.0]]), -1),
    aten.embedding.default: (torch.randn(10, 4), torch.tensor([[1, 2, 9], [9, 0, 1]])),
    aten._adaptive_avg_pool2d.default: (torch.randn(2, 3, 7, 5), [3, 2]),
    # many repeats of few indices: each row a long chain of additions, padding row 1 skipped
    aten.embedding_dense_backward.default: (torch.randn(3, 2000, 8), torch.randint(0, 6, (3, 2000)), 6, 1, False),
}
REWRITE_KWARGS = {aten._to_copy.default: {"dtype": torch.float16}, aten.add.Scalar: {"alpha": 3},
                  aten.arange.start: {"dtype": torch.float32},
                  aten.div.Scalar_mode: {"rounding_mode": "floor"}}
_EMPTY = {aten.empty_like.default, aten.new_empty.default, aten.new_empty_strided.default, aten.empty_strided.default}


def test_every_rewrite_has_a_case():
    assert set(REWRITES) == set(REWRITE_CASES)


def _check_rewrite(op, device: str) -> None:
    args = [a.to(device) if isinstance(a, torch.Tensor) else a for a in REWRITE_CASES[op]]
    kwargs = REWRITE_KWARGS.get(op, {})
    if not any(isinstance(a, torch.Tensor) for a in args):  # a factory: made on the device too
        kwargs = {**kwargs, "device": torch.device(device)}
    torch.manual_seed(0)  # random ops (bernoulli): the same draws both ways
    expected = op(*args, **kwargs)
    g = fx.Graph()
    slot_in = g.placeholder("slot")
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    placeholders = iter([g.placeholder(f"x{i}") for i in range(len(tensors))])
    call_args = [next(placeholders) if isinstance(a, torch.Tensor) else a for a in args]
    named = named_arguments(op, call_args, kwargs)
    g.output(REWRITES[op](g, named, slot_in))
    module = fx.GraphModule({}, g)
    slot = torch.full_like(expected, 99) if expected.dtype != torch.bool else torch.empty_like(expected)
    torch.manual_seed(0)
    result = module(slot, *tensors)
    assert result is slot or result.data_ptr() == slot.data_ptr()
    assert slot.dtype == expected.dtype and slot.shape == expected.shape
    if op not in _EMPTY:
        assert torch.equal(slot, expected) or torch.equal(slot.isnan(), expected.isnan()) and torch.equal(
            slot.nan_to_num(), expected.nan_to_num()), (slot, expected)


@pytest.mark.parametrize("op", list(REWRITE_CASES), ids=str)
def test_rewrite_is_bitwise_the_functional_call(op):
    _check_rewrite(op, "cpu")


@pytest.mark.gpu
@pytest.mark.parametrize("op", list(REWRITE_CASES), ids=str)
def test_rewrite_is_bitwise_the_functional_call_on_cuda(op):
    """The same on CUDA, for every rewrite the lowering uses there (``uv run pytest -m gpu``)."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    named = named_arguments(op, REWRITE_CASES[op], REWRITE_KWARGS.get(op, {}))
    if rewrite_refusal(op, named, "cuda"):
        pytest.skip(rewrite_refusal(op, named, "cuda"))
    _check_rewrite(op, "cuda")


def test_rewrites_refuse_the_calls_they_do_not_cover():
    x = torch.randn(2, 3)
    assert rewrite_refusal(aten._safe_softmax.default, {"self": x, "dim": 1}, "cpu") is None
    assert "dtype" in rewrite_refusal(aten._safe_softmax.default, {"self": x, "dim": 1, "dtype": torch.float64}, "cpu")
    w = torch.randn(5, 3)
    assert rewrite_refusal(aten.embedding.default, {"weight": w, "indices": torch.tensor([1, 4])}, "cpu") is None
    assert "0-dim" in rewrite_refusal(aten.embedding.default, {"weight": w, "indices": torch.tensor(2)}, "cpu")
    expanded = torch.arange(3).expand(2, 3)  # position ids: flattening them would copy
    assert "strided" in rewrite_refusal(aten.embedding.default, {"weight": w, "indices": expanded}, "cpu")
    rows = {"weight": w, "indices": torch.tensor([[1, 4]])}
    assert rewrite_refusal(aten.embedding.default, rows, "cpu", torch.empty(1, 2, 3)) is None
    assert "strided result" in rewrite_refusal(aten.embedding.default, rows, "cpu", torch.empty(1, 3, 2).mT)
    backward = aten.embedding_dense_backward.default
    named = {"grad_output": x, "indices": torch.tensor([0, 4]), "num_weights": 5, "padding_idx": -1,
             "scale_grad_by_freq": False}
    assert rewrite_refusal(backward, named, "cpu") is None
    assert "CUDA" in rewrite_refusal(backward, named, "cuda")
    assert "float32" in rewrite_refusal(backward, {**named, "grad_output": x.bfloat16()}, "cpu")
    assert "scale_grad_by_freq" in rewrite_refusal(backward, {**named, "scale_grad_by_freq": True}, "cpu")
    assert "strided" in rewrite_refusal(backward, {**named, "grad_output": x.t()}, "cpu")
    assert "strided" in rewrite_refusal(backward, {**named, "indices": expanded}, "cpu")


def test_embedding_backward_rewrite_is_bitwise_with_padding_and_without():
    grad, idx = torch.randn(4, 300, 16, dtype=torch.float64), torch.randint(0, 50, (4, 300), dtype=torch.int32)
    for padding in (-1, 7):
        expected = aten.embedding_dense_backward.default(grad, idx, 64, padding, False)
        g = fx.Graph()
        slot, x, i = g.placeholder("slot"), g.placeholder("x"), g.placeholder("i")
        named = {"grad_output": x, "indices": i, "num_weights": 64, "padding_idx": padding}
        g.output(REWRITES[aten.embedding_dense_backward.default](g, named, slot))
        out = fx.GraphModule({}, g)(torch.full_like(expected, 5.0), grad, idx)
        assert torch.equal(out, expected)


def _xs(n=3):
    return [torch.rand(4, 3) + 0.5 for _ in range(n)]  # positive: sqrt and division stay finite


FOREACH_CASES = [
    (aten._foreach_sqrt.default, lambda: (_xs(),), {}),
    (aten._foreach_add.List, lambda: (_xs(), _xs()), {"alpha": 0.5}),
    (aten._foreach_div.ScalarList, lambda: (_xs(), [2.0, 3.0, 0.5]), {}),
    (aten._foreach_mul.Scalar, lambda: (_xs(), 1.7), {}),
    (aten._foreach_addcdiv.Scalar, lambda: (_xs(), _xs(), _xs()), {"value": -0.3}),
]


def test_foreach_twins():
    assert foreach_inplace_twin(aten._foreach_sqrt.default) is aten._foreach_sqrt_.default
    assert foreach_inplace_twin(aten._foreach_add.List) is aten._foreach_add_.List
    assert foreach_inplace_twin(aten._foreach_add_.List) is None  # already in place
    assert foreach_inplace_twin(aten.add.Tensor) is None


@pytest.mark.parametrize("case", FOREACH_CASES, ids=lambda c: str(c[0]))
def test_foreach_into_slots_is_bitwise_the_functional_call(case):
    op, make_args, kwargs = case
    torch.manual_seed(0)
    args = make_args()
    torch.manual_seed(0)  # random ops (bernoulli): the same draws both ways
    expected = op(*args, **kwargs)
    g = fx.Graph()
    slot_nodes = [g.placeholder(f"slot{i}") for i in range(len(expected))]
    flat = []
    call_args = []
    for a in args:
        if isinstance(a, list) and a and isinstance(a[0], torch.Tensor):
            nodes = [g.placeholder(f"t{len(flat) + i}") for i in range(len(a))]
            flat += a
            call_args.append(nodes)
        else:
            call_args.append(a)
    g.output(call_foreach_into(g, foreach_inplace_twin(op), named_arguments(op, call_args, kwargs), slot_nodes))
    slots = [torch.full_like(e, 99.0) for e in expected]
    before = [t.clone() for t in flat]
    result = fx.GraphModule({}, g)(*slots, *flat)
    assert all(r is s for r, s in zip(result, slots, strict=True))
    for s, e in zip(slots, expected, strict=True):
        assert torch.equal(s, e)
    for t, b in zip(flat, before):
        assert torch.equal(t, b)  # the inputs are not modified


def test_cuda_tables_name_real_operators():
    """The CUDA-only tables of model_runtime.lowering name overloads that exist, with the
    result indices their schemas have (a typo would silently disable the protection)."""
    from model_runtime.lowering import BROKEN_OUT, HOST_RESULTS

    for name, indices in HOST_RESULTS.items():
        packet = getattr(torch.ops.aten, name.removeprefix("aten::"))
        returns = packet.default._schema.returns
        assert [returns[i].name for i in indices] == ["philox_seed", "philox_offset"], name
    variant = find_out_variant(torch.ops.aten.cudnn_batch_norm.default, "cuda")
    assert variant is not None
    s = variant.overload._schema
    assert f"{s.name}.{s.overload_name}" in BROKEN_OUT["cuda"]


def _loss_calls(reduction: int) -> dict[str, tuple]:
    """A call of each aten loss operator (forward and backward) with ``reduction``, by name."""
    x, t, y = torch.randn(16, 32), torch.rand(16, 32), torch.randint(0, 32, (16,))
    p, img, labels = x.sigmoid(), torch.randn(4, 8, 6, 6).log_softmax(1), torch.randint(0, 8, (4, 6, 6))
    multi = torch.full((16, 32), -1, dtype=torch.long)
    multi[:, :2] = torch.tensor([3, 7])
    grad = torch.randn(16, 32) if reduction == 0 else torch.tensor(1.0)
    per_row = torch.randn(16) if reduction == 0 else torch.tensor(1.0)
    per_pixel = torch.randn(4, 6, 6) if reduction == 0 else torch.tensor(1.0)
    _, is_target = aten.multilabel_margin_loss_forward(x, multi, reduction)
    _, weight = aten.nll_loss_forward(x.log_softmax(1), y, None, reduction, -100)
    _, weight2d = aten.nll_loss2d_forward(img, labels, None, reduction, -100)
    return {
        "binary_cross_entropy": (p, t, t, reduction),
        "binary_cross_entropy_backward": (grad, p, t, t, reduction),
        "huber_loss": (x, t, reduction, 0.5), "huber_loss_backward": (grad, x, t, reduction, 0.5),
        "mse_loss": (x, t, reduction), "mse_loss_backward": (grad, x, t, reduction),
        "smooth_l1_loss": (x, t, reduction, 0.5), "smooth_l1_loss_backward": (grad, x, t, reduction, 0.5),
        "multi_margin_loss": (x, y, 1, 1.0, None, reduction),
        "multi_margin_loss_backward": (per_row if reduction == 0 else grad, x, y, 1, 1.0, None, reduction),
        "multilabel_margin_loss": (x, multi, reduction), "multilabel_margin_loss_forward": (x, multi, reduction),
        "multilabel_margin_loss_backward": (per_row, x, multi, reduction, is_target),
        "nll_loss": (x.log_softmax(1), y, None, reduction),
        "nll_loss_forward": (x.log_softmax(1), y, None, reduction, -100),
        "nll_loss_backward": (per_row, x.log_softmax(1), y, None, reduction, -100, weight),
        "nll_loss2d": (img, labels, None, reduction), "nll_loss2d_forward": (img, labels, None, reduction, -100),
        "nll_loss2d_backward": (per_pixel, img, labels, None, reduction, -100, weight2d),
    }


def _reduction_operators() -> list[torch._ops.OpOverload]:
    """Every functional aten operator that takes a loss ``reduction``."""
    found = []
    for qualified in sorted(torch._C._dispatch_get_all_op_names()):
        name, _, overload = qualified.removeprefix("aten::").partition(".")
        op = getattr(getattr(aten, name, None), overload or "default", None) if qualified.startswith("aten::") else None
        arguments = op._schema.arguments if op is not None else ()
        if any(a.name == "reduction" for a in arguments) and not any(
                a.alias_info is not None and a.alias_info.is_write for a in arguments):
            found.append(op)
    return found


@pytest.mark.parametrize("reduction", [0, 1, 2], ids=["none", "mean", "sum"])
def test_out_overloads_the_arena_calls_for_losses_write_their_slot_only(reduction):
    """Some loss kernels use ``out`` as scratch (resized to the input's shape for the
    unreduced loss): with an arena slot that overwrote the buffers after it (PyTorch's
    VAE example trained on a wrong loss) or grew the arena mid-step. Every aten loss
    operator whose out overload the arena executor calls (``usable_out_variant``) writes
    its slot only, with the functional call's bits, and leaves the slot as shaped; the
    loss operators are found from the schemas, so one a new torch adds needs a case here."""
    import warnings

    from model_runtime.lowering import usable_out_variant

    calls = _loss_calls(reduction)
    used = [op for op in _reduction_operators() if not isinstance(usable_out_variant(op, "cpu"), str)]
    assert used and all(op._schema.name.removeprefix("aten::") in calls for op in used), used
    for op in used:
        args = calls[op._schema.name.removeprefix("aten::")]
        variant = usable_out_variant(op, "cpu")
        expected = op(*args)
        expected = list(expected) if isinstance(expected, tuple) else [expected]
        pad = 4 * max(a.numel() for a in args if isinstance(a, torch.Tensor))
        buffers = [torch.randn(2 * pad + e.numel()).to(e.dtype) for e in expected]
        before = [b.clone() for b in buffers]
        slots = [b[pad:pad + e.numel()].view(e.shape) for b, e in zip(buffers, expected)]
        call_args, call_kwargs = out_call_arguments(variant, named_arguments(op, args, {}), slots)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # "An output with one or more elements was resized"
            variant.overload(*call_args, **call_kwargs)
        for buffer, old, slot, e in zip(buffers, before, slots, expected):
            assert slot.shape == e.shape and torch.equal(slot, e), op
            end = pad + e.numel()
            assert torch.equal(buffer[:pad], old[:pad]) and torch.equal(buffer[end:], old[end:]), op
