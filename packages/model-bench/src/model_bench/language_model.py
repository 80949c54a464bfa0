"""A wrapper that makes a Hugging Face language model return a plain logits tensor.

Capture works on tensors; Hugging Face models return ``ModelOutput`` objects and
take keyword arguments. The wrapper takes ``(input_ids, attention_mask)``
positionally and returns ``logits`` of shape ``(batch, sequence, vocabulary)``.
"""

from __future__ import annotations

import torch


class LogitsOnly(torch.nn.Module):
    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


def token_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the vocabulary for every token position."""
    return torch.nn.functional.cross_entropy(logits.flatten(0, -2), target.flatten())
