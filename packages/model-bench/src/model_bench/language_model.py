"""A wrapper that makes a Hugging Face language model return a plain logits tensor.

Capture works on tensors; Hugging Face models return ``ModelOutput`` objects and
take keyword arguments. The wrapper takes ``(input_ids, attention_mask)``
positionally and returns ``logits`` of shape ``(batch, sequence, vocabulary)``.

In training mode the wrapper leaves OPT's decoder module itself in eval mode when
LayerDrop is off (``layerdrop == 0``, every zoo config): transformers before 5.23
still draws ``torch.rand([])`` per layer and branches on it
(``if dropout_probability < self.layerdrop``), a data-dependent branch that capture
under fake tensors cannot follow. The decoder's own flag gates only LayerDrop (and
gradient checkpointing, which the zoo does not use); its layers, and their dropout,
stay in training mode, so the step computes the same thing.
"""

from __future__ import annotations

import torch


class LogitsOnly(torch.nn.Module):
    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits

    def train(self, mode: bool = True):
        super().train(mode)
        for m in self.model.modules():
            if type(m).__name__ == "OPTDecoder" and not m.layerdrop:
                m.training = False  # see the module docstring: LayerDrop off, no torch.rand branch
        return self


def token_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the vocabulary for every token position."""
    return torch.nn.functional.cross_entropy(logits.flatten(0, -2), target.flatten())
