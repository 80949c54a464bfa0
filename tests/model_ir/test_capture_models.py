"""Real architectures: torchvision CNNs and vision transformers, Hugging Face BERT (with
an attention mask), GPT-2, OPT and ViT built from small configs (no downloads).

For each: the simulator's per-op live bytes equal the measured ones, and (where cheap)
the captured step is bitwise equal to the eager step, dropout included."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")

from model_ir import simulate
from model_ir.testing.live_memory import measure_live_bytes
from model_ir.testing.torch_models import eager_step
from model_ir.torch import capture_step


def _measure_matches(model, inputs, optimizer, loss_fn=None):
    step = capture_step(model, inputs, optimizer=optimizer, loss_fn=loss_fn, granularity=1)
    tensors = step.bind(model, optimizer, inputs)
    simulated = list(simulate(step.graph).timeline)
    measured = measure_live_bytes(step, tensors)
    bad = [(step.graph.ops[t].id, s, m) for t, (s, m) in enumerate(zip(simulated, measured)) if s != m]
    assert not bad, bad[:5]
    return step


def _bitwise(make_model, make_opt, inputs, loss_fn=None):
    torch.manual_seed(0)
    model = make_model()
    ref = copy.deepcopy(model)
    opt, ref_opt = make_opt(model), make_opt(ref)
    step = capture_step(model, inputs, optimizer=opt, loss_fn=loss_fn)
    torch.manual_seed(1)
    expected = eager_step(ref, ref_opt, inputs, loss_fn)
    torch.manual_seed(1)
    (loss,) = step.run(model, opt, inputs)
    assert torch.equal(loss, expected)
    for (name, a), (_, b) in zip(model.state_dict().items(), ref.state_dict().items()):
        assert torch.equal(a, b), name


def _adamw(m):
    return torch.optim.AdamW(m.parameters(), lr=1e-3)


# -- Hugging Face transformers --------------------------------------------------------


def _bert():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=64, max_position_embeddings=32, attn_implementation="eager")
    return transformers.BertModel(cfg)


def _bert_inputs():
    ids = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[1, 8:] = 0  # padding in the second sequence
    return {"input_ids": ids, "attention_mask": mask}


def _gpt2():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=2, n_positions=32,
                                  bos_token_id=0, eos_token_id=0, attn_implementation="eager")
    return transformers.GPT2LMHeadModel(cfg)


def _lm_inputs():
    ids = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(0))
    return {"input_ids": ids, "labels": ids}


def _hf_loss(out):
    return out.loss


def test_bert_with_attention_mask_memory_and_bitwise():
    torch.manual_seed(0)
    model = _bert()
    step = _measure_matches(model, _bert_inputs(), _adamw(model))
    assert step.graph.buffer("input:inputs[1]").dtype == "int64"  # the attention mask is a step input
    _bitwise(_bert, _adamw, _bert_inputs())


def test_gpt2_memory_and_bitwise():
    torch.manual_seed(0)
    model = _gpt2()
    step = _measure_matches(model, _lm_inputs(), _adamw(model), _hf_loss)
    # the LM head is tied to the token embedding: one parameter, one buffer
    assert sum(b.kind == "parameter" and b.shape == (64, 32) for b in step.graph.buffers) == 1
    _bitwise(_gpt2, _adamw, _lm_inputs(), _hf_loss)


@pytest.mark.slow
def test_opt_and_hf_vit():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    opt_model = transformers.OPTForCausalLM(transformers.OPTConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, ffn_dim=64, num_attention_heads=2,
        max_position_embeddings=32, word_embed_proj_dim=32, bos_token_id=0, eos_token_id=0, pad_token_id=1))
    # transformers < 5.23 branches on torch.rand([]) for LayerDrop (off here) in training
    # mode; the decoder's own flag gates only that, its layers stay in training mode.
    opt_model.model.decoder.training = False
    _measure_matches(opt_model, _lm_inputs(), _adamw(opt_model), _hf_loss)
    vit = transformers.ViTModel(transformers.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                                       intermediate_size=64, image_size=32, patch_size=8))
    _measure_matches(vit, torch.randn(2, 3, 32, 32), _adamw(vit), lambda out: out.last_hidden_state.sum())
    bert_sdpa = transformers.BertModel(transformers.BertConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=32, attn_implementation="sdpa"))
    _measure_matches(bert_sdpa, _bert_inputs(), _adamw(bert_sdpa))


# -- torchvision ----------------------------------------------------------------------


def test_resnet18_bitwise():
    torchvision = pytest.importorskip("torchvision")
    _bitwise(lambda: torchvision.models.resnet18(num_classes=10),
             lambda m: torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9), torch.randn(2, 3, 32, 32))


@pytest.mark.slow
@pytest.mark.parametrize("name,size", [("alexnet", 64), ("vgg11", 32), ("mobilenet_v2", 32),
                                       ("efficientnet_b0", 32), ("vit_b_16", 32)])
def test_torchvision_models_memory(name, size):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    kwargs = {"image_size": size} if name.startswith("vit") else {}
    model = getattr(torchvision.models, name)(num_classes=10, **kwargs)
    _measure_matches(model, torch.randn(2, 3, size, size), torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
