"""Small PyTorch models and helpers for capture tests and benchmarks (needs torch)."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from model_ir.testing.examples import random_topological_order  # noqa: F401 - re-exported for the tests


def mlp(width: int = 32, depth: int = 3, classes: int = 10) -> nn.Module:
    """A ReLU MLP on ``width`` features."""
    layers: list[nn.Module] = []
    for _ in range(depth - 1):
        layers += [nn.Linear(width, width), nn.ReLU()]
    layers.append(nn.Linear(width, classes))
    return nn.Sequential(*layers)


def small_cnn(channels: int = 8, classes: int = 10) -> nn.Module:
    """Conv-BatchNorm-ReLU(inplace) twice, pooling and a linear head, on 3x16x16 images."""
    return nn.Sequential(
        nn.Conv2d(3, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
        nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(4 * channels, classes),
    )


class _Residual(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 1)
        self.norm = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.norm(self.conv(x))


def channels_last_cnn(channels: int = 16, classes: int = 10) -> nn.Module:
    """A channels-last CNN on 3x8x8 images whose later layers see 1x1 maps (global
    pooling, then 1x1 convolutions with batch norm, a residual block on a batch norm's
    output as MobileNet's, and a sigmoid gate): tensors of shape ``(N, C, 1, 1)``, whose
    strides along the size-1 dimensions eager kernels choose, a gradient sum eager runs
    in place, laid out as the gradient it sums into, and MobileNet's in-place ReLU6 before
    the pooling, whose backward gets a contiguous gradient and a channels-last input."""
    return nn.Sequential(
        nn.Conv2d(3, channels, 3, stride=2, padding=1), nn.BatchNorm2d(channels), nn.ReLU6(inplace=True),
        nn.AdaptiveAvgPool2d(1),
        nn.Conv2d(channels, 2 * channels, 1), nn.BatchNorm2d(2 * channels),
        _Residual(2 * channels),
        nn.Conv2d(2 * channels, channels, 1), nn.BatchNorm2d(channels), nn.Sigmoid(),
        nn.Flatten(), nn.Linear(channels, classes),
    ).to(memory_format=torch.channels_last)


class TransformerBlock(nn.Module):
    """A pre-norm transformer block with dropout: attention (split into q/k/v with
    ``chunk``) and an MLP, each with a residual connection."""

    def __init__(self, dim: int = 16, heads: int = 2, dropout: float = 0.1, causal: bool = False):
        super().__init__()
        self.heads = heads
        self.causal = causal
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).chunk(3, dim=-1)
        q, k, v = (t.reshape(b, s, self.heads, d // self.heads).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-2, -1)) / (d // self.heads) ** 0.5
        if self.causal:
            future = torch.ones(s, s, dtype=torch.bool, device=x.device).triu(1)
            att = att.masked_fill(future, float("-inf"))
        att = self.drop(att.softmax(dim=-1))
        y = (att @ v).transpose(1, 2).reshape(b, s, d)
        x = x + self.drop(self.proj(y))
        return x + self.mlp(self.norm2(x))


class DecoderLM(nn.Module):
    """A decoder-only language model: token and position embeddings, ``layers`` causal
    :class:`TransformerBlock`s, a final norm and an LM head tied to the embedding.
    About ``12 * layers * dim**2 + (vocab + context) * dim`` parameters."""

    def __init__(self, vocab: int = 256, dim: int = 32, layers: int = 2, heads: int = 2, context: int = 64,
                 dropout: float = 0.0):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.pos = nn.Embedding(context, dim)
        self.blocks = nn.ModuleList(TransformerBlock(dim, heads, dropout, causal=True) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids) + self.pos(torch.arange(ids.shape[1], device=ids.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy of ``logits`` (batch, seq, vocab) against ``targets``."""
    return nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())


def call_model(model: nn.Module, inputs):
    """``model(inputs)``: a dict is keyword arguments, a tuple or list positional ones."""
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def eager_step(model: nn.Module, optimizer, inputs, loss_fn=None, targets=(), before_step=None,
               return_outputs: bool = False, autocast: torch.dtype | None = None):
    """One plain eager training step (the reference the captured step must reproduce).

    Returns the detached loss, or ``(loss, output)`` with ``return_outputs`` (the
    model's output, detached).

    The step holds no reference to the model's output past the loss (as Hugging Face's
    ``Trainer.compute_loss`` returns the loss alone), so the output's memory goes as
    soon as autograd no longer needs it: the lean eager loop that the simulated eager
    baseline (program order of a loss-only capture) models. A loop that keeps ``out``
    through backward holds a language model's logits too (bert-base at batch 32: 477 MiB
    more at the peak, gpt2 3.1 GiB).

    ``autocast``: the forward pass and the loss run under ``torch.autocast`` with this
    dtype on the parameters' device (the AMP recipe), backward and the update outside.
    """
    if optimizer is not None:
        optimizer.zero_grad(set_to_none=True)
    device = next(iter(model.parameters()), torch.empty(0)).device.type
    with torch.autocast(device, dtype=autocast) if autocast is not None else contextlib.nullcontext():
        out = call_model(model, inputs)
        if loss_fn is not None:
            loss = loss_fn(out, *targets)
        else:
            from model_ir.torch.tracing import default_loss

            loss = default_loss(out)
    if return_outputs:
        out = torch.utils._pytree.tree_map(lambda t: t.detach() if isinstance(t, torch.Tensor) else t, out)
    else:
        del out
    loss.backward()
    if before_step is not None:
        before_step(dict(model.named_parameters()))
    if optimizer is not None:
        optimizer.step()
    model.zero_grad(set_to_none=True)
    if return_outputs:
        return loss.detach(), out
    return loss.detach()


def optimizer_state_tensors(optimizer) -> list[tuple[str, torch.Tensor]]:
    """``(key, tensor)`` of every tensor in ``optimizer.state``, in parameter order (read
    without creating entries: ``optimizer.state`` is a defaultdict)."""
    params = (p for g in optimizer.param_groups for p in g["params"])
    return [(k, v) for p in params for k, v in sorted(optimizer.state.get(p, {}).items())
            if isinstance(v, torch.Tensor)]


def assert_same_state(model_a: nn.Module, opt_a, model_b: nn.Module, opt_b, *, stateful: bool = True) -> None:
    """Assert bitwise-equal parameters, buffers and optimizer state.

    With ``stateful`` (the default) the optimizer must have state, so a comparison of
    two empty states cannot pass by accident; plain SGD has none (``stateful=False``).
    """
    for (name, a), (_, b) in zip(model_a.state_dict().items(), model_b.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    sa, sb = optimizer_state_tensors(opt_a), optimizer_state_tensors(opt_b)
    assert sa or not stateful, "the optimizer has no state to compare"
    assert [k for k, _ in sa] == [k for k, _ in sb]
    for (k, a), (_, b) in zip(sa, sb):
        assert torch.equal(a, b), k
