"""The recomputation anchors of issue 13 on tiny models: torch.compile's budget, checkpointing, eager."""

import pytest
import torch

from model_bench.errors import BenchError
from model_bench.recompute_anchors import (
    CHECKPOINT_EVERY_BLOCK,
    NO_RECOMPUTE,
    TORCH_COMPILE,
    AnchorPoint,
    blocks_of,
    checkpoint_every_block,
    no_recompute,
    torch_compile_budget,
)
from model_bench.zoo import build_case

BUDGETS = (1.0, 0.5, 0.3)


@pytest.fixture(scope="module")
def mlp():
    return build_case("tiny-mlp", "train", 256, device="cpu")


@pytest.fixture(scope="module")
def compiled(mlp):
    before = torch._functorch.config.activation_memory_budget
    points = {b: torch_compile_budget(mlp.model, mlp.inputs, mlp.loss_fn, mlp.target, b) for b in BUDGETS}
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


def test_config_is_restored(compiled):
    before, _ = compiled
    assert before == torch._functorch.config.activation_memory_budget == 1.0


def test_budget_out_of_range_is_refused(mlp):
    with pytest.raises(BenchError, match=r"\[0, 1\]"):
        torch_compile_budget(mlp.model, mlp.inputs, mlp.loss_fn, mlp.target, 1.5)


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
    p = AnchorPoint(TORCH_COMPILE, 0.5, 50, 200, 500, 100, no_recompute_saved_bytes=200, graphs=1, fullgraph=True)
    assert p.recompute_overhead == 0.5 and p.saved_fraction == 0.25
    d = p.to_dict()
    assert d["recompute_overhead"] == 0.5 and d["budget"] == 0.5 and d["method"] == TORCH_COMPILE
