"""Capture decides, as eager does, what depends on constants only
(``model_ir.torch.constant_decisions``): transformers' attention-mask checks on
position ids made by ``arange``, never on a step input's values."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
from torch.fx.experimental.proxy_tensor import make_fx

from model_ir.torch import capture_step
from model_ir.torch.constant_decisions import decided_on_constants, fold


def _is_arange(t: torch.Tensor) -> bool:
    """A value check written as transformers writes them: it gives up on fake tensors."""
    if isinstance(t, FakeTensor):
        return False
    return bool((t == torch.arange(t.shape[-1])).all())


def _trace(fn, *shape):
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    x = mode.from_tensor(torch.randn(*shape))
    with mode:
        make_fx(fn, tracing_mode="real")(x)


def test_fold_evaluates_constants_and_refuses_inputs():
    seen = {}

    def step(x):
        seen["constant"] = fold(torch.arange(x.shape[1]).unsqueeze(0) * 1)
        seen["input"] = fold(x.argmax(-1))
        return x * 2

    _trace(step, 2, 5)
    assert torch.equal(seen["constant"], torch.arange(5).unsqueeze(0))
    assert seen["input"] is None
    assert fold(torch.arange(3)) is None  # outside a trace


def test_fold_refuses_what_an_input_may_have_written_and_random_draws():
    """A constant written through a view from an input, or drawn at random, is not
    decided on real tensors: it could differ at the next step."""
    seen = {}

    def step(x):
        base = torch.zeros(5)
        base[:2].copy_(x[0, :2])
        seen["written"] = fold(base * 1)
        seen["random"] = fold(torch.rand(3) * 1)
        ones = torch.ones(5)
        ones.add_(1)  # written in place from constants: still a constant
        seen["in place"] = fold(ones * 1)
        return x * 2

    _trace(step, 2, 5)
    assert seen["written"] is None and seen["random"] is None
    assert torch.equal(seen["in place"], torch.full((5,), 2.0))


def test_a_check_on_constants_answers_as_eager_and_on_inputs_as_traced():
    check = decided_on_constants(_is_arange)
    seen = {}

    def step(x):
        seen["constant"] = check(torch.arange(x.shape[1]) + 0)
        seen["input"] = check(x.argmax(-1))
        return x * 2

    _trace(step, 2, 5)
    assert seen == {"constant": True, "input": False}
    assert check(torch.arange(4)) is True  # eager: the check itself


def _lm(name):
    transformers = pytest.importorskip("transformers")
    if name == "gpt2":
        cfg = transformers.GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=2, n_positions=32, bos_token_id=0,
                                      eos_token_id=0, attn_implementation="sdpa", resid_pdrop=0.0, embd_pdrop=0.0,
                                      attn_pdrop=0.0, use_cache=False)
        return transformers.GPT2LMHeadModel(cfg)
    cfg = transformers.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=64, max_position_embeddings=32, attn_implementation="sdpa")
    return transformers.BertModel(cfg)


def _masks(step, batch, seq):
    """Buffers shaped as an attention mask, (batch, 1, seq, seq)."""
    return [b.id for b in step.graph.buffers if b.shape == (batch, 1, seq, seq)]


def test_gpt2_without_a_mask_is_captured_causal_as_eager_runs_it():
    """Eager GPT-2 without an attention mask (and without a key/value cache, as in
    training) passes none to SDPA (``is_causal=True``): its position ids are an
    ``arange``, not packed sequences. The capture used to build a (batch, 1, seq, seq)
    mask for every layer."""
    torch.manual_seed(0)
    model = _lm("gpt2")
    ids = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(0))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    step = capture_step(model, {"input_ids": ids, "labels": ids}, optimizer=opt, loss_fn=lambda out: out.loss)
    assert not _masks(step, 2, 12)
    with torch.no_grad():
        reference = model(input_ids=ids, labels=ids).loss
    (loss,) = step.run(model, opt, {"input_ids": ids, "labels": ids})
    assert torch.equal(loss, reference)


def test_a_mask_given_as_input_stays_in_the_graph():
    """A padding mask is a step input: whether it pads is the batch's business, so the
    graph keeps the mask for every batch (here the example pads nothing)."""
    model = _lm("bert")
    ids = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(0))
    inputs = {"input_ids": ids, "attention_mask": torch.ones(2, 12, dtype=torch.long)}
    step = capture_step(model, inputs, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                        loss_fn=lambda out: out.last_hidden_state.sum())
    assert _masks(step, 2, 12)


class _Decoder(torch.nn.Module):
    """``nn.TransformerDecoder`` given a causal mask built in ``forward`` (or passed in), no
    ``tgt_is_causal``: torch compares the mask with a causal one to decide it."""

    def __init__(self):
        super().__init__()
        layer = torch.nn.TransformerDecoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
        self.decoder = torch.nn.TransformerDecoder(layer, 1)

    def forward(self, tgt, memory, mask=None):
        if mask is None:
            mask = torch.triu(torch.ones(tgt.shape[1], tgt.shape[1], dtype=torch.bool), 1)
        return self.decoder(tgt, memory, tgt_mask=mask)


def test_torch_transformer_decides_a_constant_mask_causal_as_eager():
    """The mask built from ``torch.ones(...).triu()`` is compared on real tensors (the
    trace used to fail on the value); one passed in gets an error that names the fix."""
    from model_ir.torch import CaptureError

    torch.manual_seed(0)
    model, tgt, memory = _Decoder(), torch.randn(2, 5, 16), torch.randn(2, 7, 16)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    step = capture_step(model, (tgt, memory), optimizer=opt, loss_fn=lambda out: out.sum())
    reference = model(tgt, memory).sum()
    (loss,) = step.run(model, opt, (tgt, memory))
    assert torch.equal(loss, reference)
    mask = torch.triu(torch.ones(5, 5, dtype=torch.bool), 1)
    with pytest.raises(CaptureError, match=r"pass is_causal=True \(tgt_is_causal=True\) when the mask is causal"):
        capture_step(model, (tgt, memory, mask), optimizer=opt, loss_fn=lambda out: out.sum())
