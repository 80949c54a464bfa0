"""The recomputation anchors of issue 13 on tiny models: torch.compile's budget, checkpointing, eager."""

import pytest
import torch

from model_bench.errors import BenchError
from model_bench.recompute_anchors import (
    CHECKPOINT_EVERY_BLOCK,
    NO_RECOMPUTE,
    PEAK_GRANULARITY,
    TORCH_COMPILE,
    AnchorPoint,
    blocks_of,
    checkpoint_every_block,
    no_recompute,
    torch_compile_budget,
)
from model_bench.zoo import build_case
from model_ir import simulate
from model_ir.torch import capture_step

BUDGETS = (1.0, 0.5, 0.3)


@pytest.fixture(scope="module")
def mlp():
    return build_case("tiny-mlp", "train", 256, device="cpu")


@pytest.fixture(scope="module")
def mlp_base(mlp):
    return no_recompute(mlp.model, mlp.inputs, mlp.loss_fn, mlp.target)


@pytest.fixture(scope="module")
def compiled(mlp, mlp_base):
    before = torch._functorch.config.activation_memory_budget
    points = {b: torch_compile_budget(mlp.model, mlp.inputs, mlp.loss_fn, mlp.target, b, baseline=mlp_base)
              for b in BUDGETS}
    return before, points


@pytest.fixture(scope="module")
def transformer():
    return build_case("transformer-small", "train", 2, device="cpu")


@pytest.fixture(scope="module")
def eager(transformer):
    c = transformer
    base = no_recompute(c.model, c.inputs, c.loss_fn, c.target)
    # Without a baseline: it measures its own, the same as ``base``.
    ckpt = checkpoint_every_block(c.model, c.inputs, c.loss_fn, c.target, blocks_of(c.name, c.model))
    return base, ckpt


def test_lower_budget_never_saves_more(compiled):
    _, points = compiled
    saved = [points[b].saved_activation_bytes for b in BUDGETS]
    assert saved == sorted(saved, reverse=True)
    assert saved[-1] < saved[0]  # 0.3 does recompute something on this MLP
    for p in points.values():
        assert p.method == TORCH_COMPILE and p.fullgraph and p.graphs == 1
        assert p.recomputed_flops >= 0
        assert p.backward_flops == points[1.0].backward_flops + p.recomputed_flops


def test_full_budget_recomputes_nothing(compiled, mlp):
    _, points = compiled
    full = points[1.0]
    assert full.recomputed_flops == 0 and full.recompute_overhead == 0.0
    # Saved bytes of the default partition: the MLP's two ReLU outputs and the
    # loss's log-softmax, at least (the batch is 256).
    assert full.no_recompute_saved_bytes >= 4 * 256 * (64 + 64 + 10)
    # An MLP's forward FLOPs: 2 * batch * (32*64 + 64*64 + 64*10).
    assert full.forward_flops == 2 * 256 * (32 * 64 + 64 * 64 + 64 * 10)


def test_config_is_restored(compiled, mlp):
    before, _ = compiled
    assert before == torch._functorch.config.activation_memory_budget == 1.0
    assert all(p.grad is None for p in mlp.model.parameters())


def _simulated_eager_peak(case) -> int:
    step = capture_step(case.model, case.inputs, loss_fn=case.loss_fn, targets=(case.target,),
                        granularity=PEAK_GRANULARITY, keep_grads=True)
    return simulate(step.graph).peak_bytes


def _floor(case) -> int:
    """Bytes alive at the end of any of the steps: parameters, their gradients, inputs and targets."""
    def rounded(t):
        return -(-t.untyped_storage().nbytes() // PEAK_GRANULARITY) * PEAK_GRANULARITY

    params = sum(rounded(p) for p in case.model.parameters())
    return 2 * params + sum(rounded(t) for t in (*case.inputs, case.target))


def test_no_recompute_peak_is_the_simulated_eager_peak(mlp, mlp_base, eager, transformer):
    """The measured eager peak is the simulated peak of the same step captured with
    ``keep_grads=True`` (granularity 64, no optimizer), plus what eager holds longer:
    the backward pass's seed ``ones_like(loss)``, which ``torch.autograd.backward``
    holds to its end (one 64-byte granule; the capture frees it after its reader), and
    on transformer-small 512 bytes more: the last FFN linear's bias gradient (128
    floats) is summed after its weight gradient's matmul, when the capture has freed
    that matmul's saved input (64 KiB, last read there) but eager still holds it
    (an autograd node releases its saved tensors when it has computed all its
    gradients)."""
    assert mlp_base.peak_bytes == _simulated_eager_peak(mlp) + PEAK_GRANULARITY
    base, _ = eager
    assert base.peak_bytes == _simulated_eager_peak(transformer) + PEAK_GRANULARITY + 512
    assert base.no_recompute_peak_bytes == base.peak_bytes and base.peak_cut_bytes == 0


def test_lower_budgets_do_not_lower_this_mlps_peak(compiled, mlp, mlp_base):
    """The measurement is exact (live storage bytes, the same on every run), and the
    peak is not monotone in the budget: on this MLP the peak comes late in the
    backward pass, and recomputing ReLU outputs there adds to it. Budget 1.0 (nothing
    recomputed; the compiled backward frees each value after its last use) peaks
    below eager; 0.5 and 0.3 save 54% and 91% fewer activation bytes but peak higher,
    0.3 above eager."""
    _, points = compiled
    peaks = {b: points[b].peak_bytes for b in BUDGETS}
    assert all(p.no_recompute_peak_bytes == mlp_base.peak_bytes for p in points.values())
    assert peaks[1.0] < mlp_base.peak_bytes
    assert peaks[1.0] < peaks[0.5] < peaks[0.3]
    assert points[0.3].peak_cut_bytes < 0 < points[1.0].peak_cut_bytes
    assert min(peaks.values()) > _floor(mlp)


def test_budget_out_of_range_is_refused(mlp):
    with pytest.raises(BenchError, match=r"\[0, 1\]"):
        torch_compile_budget(mlp.model, mlp.inputs, mlp.loss_fn, mlp.target, 1.5)


def test_checkpoint_lowers_the_peak(eager, transformer):
    base, ckpt = eager
    assert ckpt.no_recompute_peak_bytes == base.peak_bytes  # measured twice: the same bytes
    assert _floor(transformer) < ckpt.peak_bytes < base.peak_bytes
    assert ckpt.peak_cut_bytes == base.peak_bytes - ckpt.peak_bytes > 0
    assert ckpt.peak_fraction == ckpt.peak_bytes / base.peak_bytes


def test_checkpoint_saves_less_and_recomputes_the_blocks_forward(eager, transformer):
    from torch.utils.flop_counter import FlopCounterMode

    base, ckpt = eager
    assert base.method == NO_RECOMPUTE and base.recomputed_flops == 0
    assert ckpt.method == CHECKPOINT_EVERY_BLOCK
    assert 0 < ckpt.saved_activation_bytes < base.saved_activation_bytes
    assert ckpt.no_recompute_saved_bytes == base.saved_activation_bytes
    assert ckpt.forward_flops == base.forward_flops
    # Recomputation reruns each block's forward once.
    c = transformer
    names = {m: n for n, m in c.model.named_modules()}
    with FlopCounterMode(display=False) as count:
        c.model(*c.inputs)
    per_module = {k: sum(v.values()) for k, v in count.get_flop_counts().items()}
    blocks_forward = sum(per_module[f"Transformer.{names[b]}"] for b in blocks_of(c.name, c.model))
    assert ckpt.recomputed_flops == pytest.approx(blocks_forward, rel=0.01)
    assert ckpt.recompute_overhead == pytest.approx(blocks_forward / base.forward_flops, rel=0.01)


def test_the_model_is_left_as_it_was(eager, transformer):
    model = transformer.model
    assert all(p.grad is None for p in model.parameters())
    assert all("forward" not in b.__dict__ for b in blocks_of(transformer.name, model))


def test_checkpoint_arguments_are_checked(eager, transformer):
    c = transformer
    base, ckpt = eager
    with pytest.raises(BenchError, match="at least one block"):
        checkpoint_every_block(c.model, c.inputs, c.loss_fn, c.target, [])
    with pytest.raises(BenchError, match="baseline must be a 'no-recompute' point"):
        checkpoint_every_block(c.model, c.inputs, c.loss_fn, c.target, blocks_of(c.name, c.model), baseline=ckpt)


def test_blocks_of_zoo_models():
    resnet = build_case("resnet50", "train", 1).model  # meta device: no memory
    assert len(blocks_of("resnet50", resnet)) == 3 + 4 + 6 + 3
    assert all(type(b).__name__ == "Bottleneck" for b in blocks_of("resnet50", resnet))
    with pytest.raises(BenchError, match="no blocks known for model 'tiny-mlp'"):
        blocks_of("tiny-mlp", resnet)
    with pytest.raises(BenchError, match="no 'encoder.layers'"):
        blocks_of("vit_b_16", resnet)


def test_anchor_point_ratios():
    p = AnchorPoint(TORCH_COMPILE, 0.5, 50, 200, 500, 100, no_recompute_saved_bytes=200, peak_bytes=300,
                    no_recompute_peak_bytes=400, graphs=1, fullgraph=True)
    assert p.recompute_overhead == 0.5 and p.saved_fraction == 0.25
    assert p.peak_cut_bytes == 100 and p.peak_fraction == 0.75
    d = p.to_dict()
    assert d["recompute_overhead"] == 0.5 and d["budget"] == 0.5 and d["method"] == TORCH_COMPILE
    assert d["peak_bytes"] == 300 and d["no_recompute_peak_bytes"] == 400 and d["peak_cut_bytes"] == 100
    assert d["peak_fraction"] == 0.75
