"""Language models: Hugging Face BERT, GPT-2 and OPT from configs, and torch.nn.Transformer.

Every model has a language-modelling head and is trained with token-level
cross-entropy against random labels. Configs reproduce the published sizes; the
``*-tiny`` variants exist for tests and are not in the default suite.
"""

from __future__ import annotations

from typing import Any

from model_bench.zoo import ZooModel


class HuggingFaceModel(ZooModel):
    """``transformers.<model_class>(<config_class>(**config))`` with ``sequence`` tokens per sample."""

    def __init__(self, name: str, model_class: str, config_class: str, config: dict[str, Any], *,
                 sequence: int, attention_mask: bool = False, large: bool = False, suite: bool = True,
                 what: str = ""):
        self.name = name
        self.model_class = model_class
        self.config_class = config_class
        self.config = config
        self.sequence = sequence
        self.attention_mask = attention_mask
        self.large = large
        self.suite = suite
        mask = ", with attention mask" if attention_mask else ""
        self.description = f"Hugging Face {model_class} ({what or name}), sequence {sequence}{mask}"

    def warm_up(self) -> None:
        import transformers

        getattr(transformers, self.model_class)  # transformers imports model classes lazily

    def make_config(self):
        import transformers

        # No key/value cache: a training step does not return one, and it would be an
        # extra output kept alive to the end of the step.
        return getattr(transformers, self.config_class)(**self.config, use_cache=False)

    def make_model(self):
        import transformers

        from model_bench.language_model import LogitsOnly

        return LogitsOnly(getattr(transformers, self.model_class)(self.make_config()))

    @property
    def vocab_size(self) -> int:
        return self.make_config().vocab_size

    def make_batch(self, batch_size: int):
        import torch

        vocab = self.vocab_size
        ids = torch.randint(0, vocab, (batch_size, self.sequence))
        target = torch.randint(0, vocab, (batch_size, self.sequence))
        if not self.attention_mask:
            return (ids,), target
        # A realistic mask: the last quarter of every sequence is padding.
        mask = torch.ones(batch_size, self.sequence, dtype=torch.long)
        mask[:, self.sequence - self.sequence // 4:] = 0
        return (ids, mask), target

    @staticmethod
    def loss_fn(output, target):
        from model_bench.language_model import token_cross_entropy

        return token_cross_entropy(output, target)


def _opt(hidden: int, layers: int, heads: int, ffn: int, **extra) -> dict[str, Any]:
    return {"hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads, "ffn_dim": ffn,
            "word_embed_proj_dim": extra.pop("word_embed_proj_dim", hidden), **extra}


# Published OPT sizes (Zhang et al. 2022, table 1); 350m projects embeddings to 512
# and puts layer norm after attention, as the released checkpoint does.
OPT_SIZES = {
    "opt-125m": _opt(768, 12, 12, 3072),
    "opt-350m": _opt(1024, 24, 16, 4096, word_embed_proj_dim=512, do_layer_norm_before=False),
    "opt-1.3b": _opt(2048, 24, 32, 8192),
    "opt-2.7b": _opt(2560, 32, 32, 10240),
    "opt-6.7b": _opt(4096, 32, 32, 16384),
    "opt-13b": _opt(5120, 40, 40, 20480),
    "opt-30b": _opt(7168, 48, 56, 28672),
    "opt-66b": _opt(9216, 64, 72, 36864),
}
_OPT_IN_SUITE = {"opt-125m", "opt-350m", "opt-1.3b"}
_OPT_LARGE = {"opt-1.3b", "opt-2.7b", "opt-6.7b", "opt-13b", "opt-30b", "opt-66b"}

TINY_BERT = {"vocab_size": 1000, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
             "intermediate_size": 64, "max_position_embeddings": 64}
TINY_GPT2 = {"vocab_size": 1000, "n_embd": 32, "n_layer": 2, "n_head": 2, "n_positions": 64,
             "bos_token_id": 0, "eos_token_id": 0}
TINY_OPT = {"vocab_size": 1000, "max_position_embeddings": 64, **_opt(32, 2, 2, 64)}


class TransformerModel(ZooModel):
    """``torch.nn.Transformer`` (encoder-decoder, batch first) on random embeddings.

    The decoder output is scored as ``d_model``-way logits per token with
    cross-entropy, so the step has the same shape as the other models' (no extra head).
    """

    def __init__(self, name: str, *, sequence: int, suite: bool = True, **kwargs):
        self.name = name
        self.sequence = sequence
        self.kwargs = kwargs
        self.suite = suite
        d = kwargs.get("d_model", 512)
        self.description = f"torch.nn.Transformer({', '.join(f'{k}={v}' for k, v in kwargs.items()) or 'defaults'}), " \
                           f"d_model {d}, sequence {sequence}"

    @property
    def d_model(self) -> int:
        return self.kwargs.get("d_model", 512)

    def make_model(self):
        import torch

        return torch.nn.Transformer(batch_first=True, **self.kwargs)

    def make_batch(self, batch_size: int):
        import torch

        src = torch.randn(batch_size, self.sequence, self.d_model)
        tgt = torch.randn(batch_size, self.sequence, self.d_model)
        target = torch.randint(0, self.d_model, (batch_size, self.sequence))
        return (src, tgt), target

    @staticmethod
    def loss_fn(output, target):
        from model_bench.language_model import token_cross_entropy

        return token_cross_entropy(output, target)


TEXT_MODELS = [
    HuggingFaceModel("bert-base", "BertForMaskedLM", "BertConfig", {}, sequence=128, attention_mask=True,
                     what="bert-base-uncased"),
    HuggingFaceModel("gpt2", "GPT2LMHeadModel", "GPT2Config", {}, sequence=512, what="gpt2, 124M"),
    *[HuggingFaceModel(name, "OPTForCausalLM", "OPTConfig", cfg, sequence=512, large=name in _OPT_LARGE,
                       suite=name in _OPT_IN_SUITE) for name, cfg in OPT_SIZES.items()],
    HuggingFaceModel("bert-tiny", "BertForMaskedLM", "BertConfig", TINY_BERT, sequence=16, attention_mask=True,
                     suite=False, what="2 layers, hidden 32, for tests"),
    HuggingFaceModel("gpt2-tiny", "GPT2LMHeadModel", "GPT2Config", TINY_GPT2, sequence=16, suite=False,
                     what="2 layers, hidden 32, for tests"),
    HuggingFaceModel("opt-tiny", "OPTForCausalLM", "OPTConfig", TINY_OPT, sequence=16, suite=False,
                     what="2 layers, hidden 32, for tests"),
    TransformerModel("transformer", sequence=128),
    TransformerModel("transformer-small", sequence=32, d_model=128, nhead=4, num_encoder_layers=2,
                     num_decoder_layers=2, dim_feedforward=256),
]
