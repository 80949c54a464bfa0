"""Describing example inputs by shape and dtype instead of real tensors."""

from __future__ import annotations

import attrs
import torch


def _shape(value) -> tuple[int, ...]:
    return tuple(int(d) for d in value)


@attrs.frozen
class TensorSpec:
    """An example input given by ``shape``, ``dtype`` and ``device`` only (no data).

    Capture works on fake tensors, so the values of example inputs never matter; a
    spec avoids allocating a real batch (e.g. ``TensorSpec((8, 512), torch.long)``
    for token ids).
    """

    shape: tuple[int, ...] = attrs.field(converter=_shape)
    dtype: torch.dtype = torch.float32
    device: str = "cpu"

    def empty(self) -> torch.Tensor:
        """A real, uninitialized tensor of this spec (bytes: ``numel * itemsize``)."""
        return torch.empty(self.shape, dtype=self.dtype, device=self.device)
