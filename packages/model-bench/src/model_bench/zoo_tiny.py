"""Tiny models for tests and quick checks: an MLP and a CNN (not in the default suite)."""

from __future__ import annotations

from model_bench.zoo import ZooModel


class TinyMLP(ZooModel):
    name = "tiny-mlp"
    description = "MLP 32-64-64-10 (for tests)"
    suite = False

    def make_model(self):
        import torch.nn as nn

        return nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))

    def make_batch(self, batch_size: int):
        import torch

        return (torch.randn(batch_size, 32),), torch.randint(0, 10, (batch_size,))


class TinyCNN(ZooModel):
    name = "tiny-cnn"
    description = "CNN conv8-conv16-linear on 3x16x16 (for tests)"
    suite = False

    def make_model(self):
        import torch.nn as nn

        return nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
            nn.Flatten(), nn.Linear(64, 10),
        )

    def make_batch(self, batch_size: int):
        import torch

        return (torch.randn(batch_size, 3, 16, 16),), torch.randint(0, 10, (batch_size,))


TINY_MODELS = [TinyMLP(), TinyCNN()]
