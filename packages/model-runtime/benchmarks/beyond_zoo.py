"""``optimize()`` on models and optimizers outside the zoo, on this CPU: is each step
bitwise eager's, and does it take the memory its plan says?

For every case and executor (``reorder``, ``arena``): a deep copy of the model runs
three plain eager steps (``model_ir.testing.torch_models.eager_step``) beside three
optimized ones from the same start, dropout and all (same seeds); the losses, the
parameters, the model's buffers and the optimizer's state must be bitwise equal, and so
must an eval step's outputs be eager's forward's (models only). Then
a steady step is measured with torch.profiler memory events (what it allocates beyond
what already exists) against the plan: ``reorder_transient_bytes`` for ``reorder``,
``beside_arena_bytes`` for ``arena`` (the arena itself exists before the step), both
per operator (``measured_bytes``: nets out what a kernel frees in its own frame) and
allocation by allocation (``exact_measured_bytes``, oneDNN's blocked-layout buffers
included).
Small configurations of Hugging Face transformers (decoders, encoders with padded
batches, encoder-decoders, CLIP, wav2vec2) and torchvision models (one with Hugging
Face's own gradient checkpointing, dropout recomputed, one with a frozen backbone, two
channels-last, one of them on 32x32 images, three segmentation models: bilinear
upsampling and 2-D cross-entropy), a variational autoencoder (MSE and KL), an LSTM, a
bidirectional GRU, activation checkpointing (and reentrant), ``torch.autograd.Function``,
parametrizations, frozen and unused parameters, the patterns of other workloads (a
recommender's ``EmbeddingBag``, an STFT spectrogram, distillation from a frozen
teacher, MoCo's momentum encoder and queue, a spatial transformer, style transfer, 3-D
convolution, ``unfold``/``fold`` and ``nn.Bilinear``, pure bf16 training, a diffusion
UNet, torch's ``nn.TransformerDecoder``, orthogonal and spectral-norm parametrizations,
1-D/3-D/bicubic upsampling, selection ops (``topk``, ``kthvalue``, ``median``, ...), graph
message passing, a WaveNet, rotary embeddings by complex multiplication, a gradient
penalty (a backward of a backward), LoRA, weight norm, ``nn.MultiheadAttention``'s
weights over padded keys, PReLU/RReLU/channel dropout/stochastic depth/pixel shuffle/
max-pool indices/Gumbel noise/``cdist``, complex weights, noise from a module's own
generator, the nested-tensor ``TransformerEncoder``), and fourteen optimizer set-ups
torch ships (Adam with a tensor learning rate, decoupled RAdam, maximizing Adam among them).
A failure is reported on its line; the others go on.

With ``--budget-share S`` (0 < S < 1) every training step is planned under a memory
budget S of the way from the lower bound of any plan with recomputation up to the peak
of the plan without (``optimize(..., memory_budget=...)``), and then
checked as above (the eval step aside); a case no plan found fits is reported as such,
not failed. ``--time-limit`` sets the seconds each plan's solvers get (default 5).

    uv run python packages/model-runtime/benchmarks/beyond_zoo.py [CASE ...] [--json OUT.json] [--budget-share S]

Exit status 1 when some case is not bitwise eager's (or fails), 0 otherwise.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
import warnings

import torch
import torch.utils._pytree as pytree
from torch import nn

from model_ir.testing.live_memory import exact_peak_allocated_during, peak_allocated_during
from model_ir.testing.torch_models import assert_same_state, call_model, eager_step
from model_runtime import BudgetError, optimize

F = nn.functional
O = torch.optim


def _labels(n: int, classes: int) -> torch.Tensor:
    return torch.randint(0, classes, (n,))


def _lm(name: str, **config):
    import transformers

    def build():
        cfg = getattr(transformers, f"{name}Config")(vocab_size=128, **config)
        model = getattr(transformers, f"{name}ForCausalLM")(cfg)
        ids = torch.randint(1, 128, (2, 16))
        mask = torch.ones(2, 16, dtype=torch.long)
        mask[1, 11:] = 0  # a padded sequence
        return model, {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}, \
            (lambda out: out.loss), ()
    return build


def _hf(build_config, model_class: str, batch):
    import transformers

    def build():
        model = getattr(transformers, model_class)(build_config(transformers))
        return model, batch(), (lambda out: out.loss), ()
    return build


def _vision(name: str, size: int = 64, channels_last: bool = False):
    def build():
        import torchvision

        model, x = getattr(torchvision.models, name)(num_classes=10), torch.randn(2, 3, size, size)
        if channels_last:
            model, x = model.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)
        return model, (x,), F.cross_entropy, (_labels(2, 10),)
    return build


def _segmentation(name: str, size: int = 64):
    def build():
        from torchvision.models import segmentation

        model = getattr(segmentation, name)(weights=None, weights_backbone=None, num_classes=5)
        return (model, (torch.randn(2, 3, size, size),), lambda out, t: F.cross_entropy(out["out"], t),
                (torch.randint(0, 5, (2, size, size)),))
    return build


class _VAE(nn.Module):
    """A variational autoencoder: reparameterized samples in training, the mean in eval."""

    def __init__(self):
        super().__init__()
        self.enc, self.mu, self.logvar = nn.Linear(64, 32), nn.Linear(32, 8), nn.Linear(32, 8)
        self.dec = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 64))

    def forward(self, x):
        h = F.relu(self.enc(x))
        mu, logvar = self.mu(h), self.logvar(h)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
        return self.dec(z), mu, logvar


def _vae_loss(out, x):
    """Reconstruction (summed squared error) plus the KL divergence to the unit Gaussian."""
    reconstruction, mu, logvar = out
    return F.mse_loss(reconstruction, x, reduction="sum") - 0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())


def _vae():
    x = torch.randn(16, 64)
    return _VAE(), (x,), _vae_loss, (x,)  # the input is its own target


def _hf_checkpointing(build):
    """``build``'s Hugging Face model with its own gradient checkpointing on."""
    def checkpointed():
        model, *rest = build()
        model.gradient_checkpointing_enable()
        return (model, *rest)
    return checkpointed


def _bias_only(build):
    """``build``'s model with only biases and norms trained (a frozen backbone)."""
    def frozen():
        model, *rest = build()
        for name, p in model.named_parameters():
            p.requires_grad_("bias" in name or "LayerNorm" in name)
        return (model, *rest)
    return frozen


class _LSTM(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed, self.lstm, self.head = nn.Embedding(50, 16), nn.LSTM(16, 32, num_layers=2, batch_first=True), \
            nn.Linear(32, 5)

    def forward(self, x):
        return self.head(self.lstm(self.embed(x))[0][:, -1])


class _BiGRU(nn.Module):
    """A bidirectional batch-first GRU (CPU: its output is transposed in place)."""

    def __init__(self):
        super().__init__()
        self.embed, self.gru, self.head = nn.Embedding(50, 16), nn.GRU(16, 32, batch_first=True, bidirectional=True), \
            nn.Linear(64, 5)

    def forward(self, x):
        return self.head(self.gru(self.embed(x))[0][:, -1])


class _Checkpointed(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = nn.Sequential(nn.Linear(16, 64), nn.GELU(), nn.Linear(64, 16))
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        return self.head(torch.utils.checkpoint.checkpoint(self.inner, x, use_reentrant=False))


class _Square(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return 2 * x * grad


class _Custom(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.utils.parametrizations.weight_norm(nn.Linear(16, 32))
        self.b = nn.utils.parametrizations.spectral_norm(nn.Linear(32, 3))

    def forward(self, x):
        return self.b(_Square.apply(self.a(x)))


class _PartlyUsed(nn.Module):
    """A frozen layer and a head the forward never calls: no gradient, no update and no
    optimizer state for either (AdamW's decay would otherwise shrink the head)."""

    def __init__(self):
        super().__init__()
        self.frozen, self.body, self.unused = nn.Linear(16, 16), nn.Linear(16, 3), nn.Linear(16, 16)
        self.frozen.requires_grad_(False)

    def forward(self, x):
        return self.body(F.gelu(self.frozen(x)))


def _small(make_model, make_input, classes: int = 3, loss_fn=F.cross_entropy, make_targets=None):
    """A model of ours on one input; targets: 4 labels of ``classes`` unless ``make_targets``."""
    def build():
        return make_model(), (make_input(),), loss_fn, (make_targets() if make_targets else (_labels(4, classes),))
    return build


_DECODER = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2)

_BERT_PADDED = _hf(lambda t: t.BertConfig(vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                          intermediate_size=64),
                   "BertForSequenceClassification",
                   lambda: {"input_ids": torch.randint(1, 128, (2, 12)),
                            "attention_mask": torch.tensor([[1] * 7 + [0] * 5, [1] * 12]),
                            "labels": torch.tensor([0, 1])})

class _Recommender(nn.Module):
    """Pooled embeddings (``EmbeddingBag``, mean) into a linear head."""

    def __init__(self):
        super().__init__()
        self.bag, self.head = nn.EmbeddingBag(100, 16, mode="mean"), nn.Linear(16, 3)

    def forward(self, x):
        return self.head(self.bag(x))


class _Spectrogram(nn.Module):
    """An STFT's magnitude (the ``abs`` of a complex tensor) into a linear head."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(81, 3)
        self.register_buffer("window", torch.hann_window(16))

    def forward(self, x):
        return self.head(torch.stft(x, 16, 8, window=self.window, return_complex=True).abs().flatten(1)[:, :81])


class _Distillation(nn.Module):
    """A student trained against a frozen teacher kept in eval mode (batch norm's running
    statistics read, never updated), run under ``no_grad``."""

    def __init__(self):
        super().__init__()
        self.teacher = nn.Sequential(nn.Linear(16, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 3))
        self.teacher.requires_grad_(False)
        self.student = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))

    def train(self, mode=True):
        super().train(mode)
        self.teacher.eval()
        return self

    def forward(self, x):
        with torch.no_grad():
            teacher = self.teacher(x)
        return torch.stack([self.student(x), teacher])


def _distillation_loss(out, y):
    student, teacher = out
    return F.cross_entropy(student, y) + F.kl_div(F.log_softmax(student / 2, -1), F.softmax(teacher / 2, -1),
                                                  reduction="batchmean")


class _MomentumQueue(nn.Module):
    """MoCo's contrastive step: a key encoder updated as a moving average of the query
    encoder and a queue buffer written in the forward pass, both under ``no_grad``."""

    def __init__(self):
        super().__init__()
        self.query, self.key = nn.Linear(16, 8), nn.Linear(16, 8)
        self.key.requires_grad_(False)
        self.register_buffer("queue", torch.randn(8, 32))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))

    def forward(self, x):
        q = F.normalize(self.query(x), dim=1)
        with torch.no_grad():
            for pk, pq in zip(self.key.parameters(), self.query.parameters()):
                pk.mul_(0.99).add_(pq.detach(), alpha=0.01)
            k = F.normalize(self.key(x), dim=1)
        logits = torch.cat([(q * k).sum(1, keepdim=True), q @ self.queue.clone()], 1) / 0.07
        with torch.no_grad():
            self.queue[:, :4] = k[:4].T
            self.pointer += 1
        return logits


class _SpatialTransformer(nn.Module):
    """A spatial transformer: ``affine_grid`` and ``grid_sample`` before a convolution."""

    def __init__(self):
        super().__init__()
        self.localization, self.head = nn.Linear(3 * 8 * 8, 6), nn.Conv2d(3, 4, 3)

    def forward(self, x):
        grid = F.affine_grid(self.localization(x.flatten(1)).view(-1, 2, 3), x.shape, align_corners=False)
        return self.head(F.grid_sample(x, grid, align_corners=False)).mean((2, 3))


class _StyleTransfer(nn.Module):
    """A strided convolution, instance norm and a transposed convolution, MSE to the input."""

    def __init__(self):
        super().__init__()
        self.down = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.norm, self.up = nn.InstanceNorm2d(8, affine=True), nn.ConvTranspose2d(8, 3, 4, stride=2, padding=1)

    def forward(self, x):
        return self.up(F.relu(self.norm(self.down(x))))


class _Video(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.head = nn.Conv3d(3, 8, 3, padding=1), nn.Linear(8, 3)

    def forward(self, x):
        return self.head(F.adaptive_avg_pool3d(F.relu(self.conv(x)), 1).flatten(1))


class _Patches(nn.Module):
    """``unfold`` / ``fold`` (im2col, col2im), ``nn.Bilinear`` and hardswish."""

    def __init__(self):
        super().__init__()
        self.bilinear, self.proj = nn.Bilinear(12, 12, 4), nn.Linear(12, 12)

    def forward(self, x):
        patches = F.unfold(x, 2, stride=2).transpose(1, 2)
        h = self.proj(patches)
        folded = F.fold(h.transpose(1, 2), x.shape[-2:], 2, stride=2)
        return self.bilinear(patches.mean(1), h.mean(1)) + F.hardswish(folded).mean()


class _ReentrantCheckpointed(nn.Module):
    """``torch.utils.checkpoint`` with ``use_reentrant=True`` (the old default)."""

    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(16, 16), nn.GELU()) for _ in range(3))
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        for block in self.blocks:
            x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=True)
        return self.head(x)


class _Diffusion(nn.Module):
    """A small UNet denoiser: sinusoidal timestep embedding, GroupNorm, a transposed
    convolution and a skip connection; trained to predict the noise it adds."""

    def __init__(self):
        super().__init__()
        self.time = nn.Linear(16, 16)
        self.down1, self.norm1 = nn.Conv2d(3, 16, 3, padding=1), nn.GroupNorm(4, 16)
        self.down2, self.norm2 = nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.GroupNorm(4, 32)
        self.up, self.out = nn.ConvTranspose2d(32, 16, 4, stride=2, padding=1), nn.Conv2d(32, 3, 3, padding=1)

    def forward(self, x):
        t = torch.arange(x.shape[0], dtype=torch.float32)
        freqs = torch.exp(-math.log(10000) * torch.arange(8) / 8)
        emb = torch.cat([torch.sin(t[:, None] * freqs), torch.cos(t[:, None] * freqs)], -1)
        noise = torch.randn_like(x) if self.training else torch.zeros_like(x)
        h1 = F.silu(self.norm1(self.down1(x + noise))) + self.time(emb)[:, :, None, None]
        h2 = F.silu(self.norm2(self.down2(h1)))
        return self.out(torch.cat([self.up(h2), h1], 1)), noise


def _denoising_loss(out, _):
    prediction, noise = out
    return F.mse_loss(prediction, noise)


class _Decoder(nn.Module):
    """``nn.TransformerDecoder`` with a causal mask built in ``forward`` (torch compares it
    with a causal one) and a padding mask."""

    def __init__(self):
        super().__init__()
        self.embed, self.head = nn.Embedding(30, 32), nn.Linear(32, 30)
        layer = nn.TransformerDecoderLayer(32, 4, 64, batch_first=True, norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, 2)

    def forward(self, tgt, memory):
        causal = torch.triu(torch.ones(tgt.shape[1], tgt.shape[1], dtype=torch.bool), 1)
        h = self.decoder(self.embed(tgt), memory, tgt_mask=causal, tgt_key_padding_mask=tgt == 0)
        return self.head(h).flatten(0, 1)


def _decoder():
    tgt = torch.tensor([[5, 3, 2, 0, 0], [1, 2, 3, 4, 5]])
    return _Decoder(), (tgt, torch.randn(2, 6, 32)), F.cross_entropy, (torch.randint(0, 30, (10,)),)


class _Orthogonal(nn.Module):
    """Orthogonal (matrix exponential) and spectral-norm parametrizations."""

    def __init__(self):
        super().__init__()
        self.orthogonal = nn.utils.parametrizations.orthogonal(nn.Linear(16, 16))
        self.spectral = nn.utils.parametrizations.spectral_norm(nn.Linear(16, 16))
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        return self.head(F.leaky_relu(self.spectral(F.leaky_relu(self.orthogonal(x)))))


class _Interpolations(nn.Module):
    """Trilinear, nearest-exact 3-D, bicubic 2-D and linear 1-D upsampling."""

    def __init__(self):
        super().__init__()
        self.conv, self.head = nn.Conv3d(2, 4, 3, padding=1), nn.Linear(4, 3)

    def forward(self, x):
        y = F.interpolate(self.conv(x), scale_factor=2, mode="trilinear")
        y = F.interpolate(y, size=(3, 5, 5), mode="nearest-exact")
        z = F.interpolate(y.mean(2), scale_factor=1.5, mode="bicubic", align_corners=True)
        w = F.interpolate(y.mean((2, 3)), scale_factor=2, mode="linear")
        return self.head(z.mean((2, 3)) + w.mean(2))


class _Selection(nn.Module):
    """topk, sort, cummax, logcumsumexp, bucketize, median, kthvalue and gather."""

    def __init__(self):
        super().__init__()
        self.proj, self.head = nn.Linear(16, 16), nn.Linear(8, 4)
        self.register_buffer("edges", torch.linspace(-1, 1, 5))

    def forward(self, x):
        y = self.proj(x)
        top, idx = y.topk(8, dim=-1)
        ordered = torch.sort(y, dim=-1, descending=True)[0]
        z = (top + ordered[:, :8] + torch.cummax(y, -1)[0][:, 8:] + 0.1 * torch.logcumsumexp(y, -1)[:, :8]
             + torch.bucketize(y.detach(), self.edges)[:, :8] + y.median(-1, keepdim=True).values
             + y.kthvalue(3, -1, keepdim=True).values + torch.gather(y, 1, idx))
        return self.head(torch.where(z > 0, z, 0.1 * z))


class _MessagePassing(nn.Module):
    """A graph network layer: messages gathered along fixed edges, ``index_add_``."""

    def __init__(self):
        super().__init__()
        self.register_buffer("edges", torch.randint(0, 10, (2, 30), generator=torch.Generator().manual_seed(1)))
        self.message, self.head = nn.Linear(8, 16), nn.Linear(16, 3)

    def forward(self, x):
        src, dst = self.edges
        h = self.message(x)
        degree = torch.zeros(x.shape[0]).scatter_add_(0, dst, torch.ones(dst.shape[0])).clamp(min=1)
        return self.head(F.relu(torch.zeros_like(h).index_add_(0, dst, h[src]) / degree[:, None] + h))


class _WaveNet(nn.Module):
    """Dilated causal 1-D convolutions with gated activations."""

    def __init__(self):
        super().__init__()
        self.inp, self.out = nn.Conv1d(1, 16, 1), nn.Conv1d(16, 8, 1)
        self.layers = nn.ModuleList(nn.Conv1d(16, 32, 2, dilation=d) for d in (1, 2, 4))

    def forward(self, x):
        h = self.inp(x)
        for i, conv in enumerate(self.layers):
            a, b = conv(F.pad(h, (2 ** i, 0))).chunk(2, 1)
            h = h + torch.tanh(a) * torch.sigmoid(b)
        return self.out(h)


class _ComplexRotary(nn.Module):
    """Rotary position embedding by complex multiplication (``view_as_complex``)."""

    def __init__(self):
        super().__init__()
        self.embed, self.q, self.k = nn.Embedding(50, 32), nn.Linear(32, 32), nn.Linear(32, 32)
        self.v, self.head = nn.Linear(32, 32), nn.Linear(32, 50)
        freqs = 1.0 / (10000 ** (torch.arange(0, 8, 2).float() / 8))
        self.register_buffer("rotation", torch.polar(torch.ones(10, 4), torch.outer(torch.arange(10).float(), freqs)))

    def rotate(self, x):
        b, n, _ = x.shape
        pairs = torch.view_as_complex(x.reshape(b, n, 4, -1, 2))
        return torch.view_as_real(pairs * self.rotation[None, :n, :, None]).flatten(2)

    def forward(self, ids):
        h = self.embed(ids)
        q, k = self.rotate(self.q(h)), self.rotate(self.k(h))
        a = F.scaled_dot_product_attention(q[:, None], k[:, None], self.v(h)[:, None], is_causal=True)[:, 0]
        return self.head(a).flatten(0, 1)


class _GradientPenalty(nn.Module):
    """A penalty on the norm of the output's gradient with respect to the input (WGAN-GP,
    physics-informed losses): ``autograd.grad(create_graph=True)`` in training, so the
    backward differentiates a backward."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(16, 32), nn.Linear(32, 3)

    def forward(self, x):
        if not self.training:
            return self.b(torch.tanh(self.a(x)))
        x = x.clone().requires_grad_(True)
        out = self.b(torch.tanh(self.a(x)))
        (grad,) = torch.autograd.grad(out.sum(), x, create_graph=True)
        return out + grad.norm(dim=1, keepdim=True)


class _LoRA(nn.Module):
    """A frozen linear layer with a trained low-rank update (LoRA, dropout on its input)."""

    def __init__(self):
        super().__init__()
        self.base, self.head = nn.Linear(16, 16).requires_grad_(False), nn.Linear(16, 3)
        self.down, self.up = nn.Parameter(torch.randn(4, 16) * 0.1), nn.Parameter(torch.zeros(16, 4))

    def forward(self, x):
        return self.head(self.base(x) + F.dropout(x, 0.1, self.training) @ self.down.t() @ self.up.t() * 2.0)


class _WeightNorm(nn.Module):
    """``nn.utils.parametrizations.weight_norm``: the weight recomputed from its direction
    and magnitude at every call."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.utils.parametrizations.weight_norm(nn.Linear(16, 32)), nn.Linear(32, 3)

    def forward(self, x):
        return self.b(F.gelu(self.a(x)))


class _AttentionWeights(nn.Module):
    """``nn.MultiheadAttention`` over padded tokens (``key_padding_mask``, dropout) whose
    averaged attention weights the head reads too."""

    def __init__(self):
        super().__init__()
        self.embed, self.head = nn.Embedding(50, 16), nn.Linear(16, 3)
        self.attention = nn.MultiheadAttention(16, 4, dropout=0.1, batch_first=True)

    def forward(self, ids):
        h = self.embed(ids)
        out, weights = self.attention(h, h, h, key_padding_mask=ids == 0, need_weights=True)
        return self.head(out.mean(1) + weights.mean((1, 2)).unsqueeze(1))


class _Layers(nn.Module):
    """PReLU, RReLU, channel dropout, stochastic depth, pixel shuffle, adaptive max pooling
    with indices, Gumbel-softmax noise (in training) and ``cdist``."""

    def __init__(self):
        from torchvision.ops import StochasticDepth

        super().__init__()
        self.conv, self.prelu, self.rrelu = nn.Conv2d(3, 8, 3, padding=1), nn.PReLU(), nn.RReLU()
        self.drop, self.depth, self.shuffle = nn.Dropout2d(0.2), StochasticDepth(0.3, "row"), nn.PixelShuffle(2)
        self.conv2, self.head = nn.Conv2d(2, 4, 3), nn.Linear(4, 4)

    def forward(self, x):
        h = self.drop(self.rrelu(self.prelu(self.conv(x))))
        h = self.shuffle(h + self.depth(h))
        h, _ = F.adaptive_max_pool2d(self.conv2(h), 2, return_indices=True)
        if self.training:
            h = h + F.gumbel_softmax(h, tau=0.5, dim=1)
        return self.head(h.mean((2, 3)) + torch.cdist(h.flatten(2), h.flatten(2)).mean((1, 2)).unsqueeze(1))


class _ComplexWeights(nn.Module):
    """A complex-valued weight (the optimizer updates it as pairs of reals)."""

    def __init__(self):
        super().__init__()
        self.weight, self.head = nn.Parameter(torch.randn(16, 8, dtype=torch.cfloat) * 0.1), nn.Linear(8, 3)

    def forward(self, x):
        return self.head((x.to(torch.cfloat) @ self.weight).abs())


class _OwnGenerator(nn.Module):
    """Input noise drawn from the module's own ``torch.Generator``, not the global one."""

    def __init__(self):
        super().__init__()
        self.lin, self.generator = nn.Linear(16, 3), torch.Generator().manual_seed(1)

    def forward(self, x):
        return self.lin(x + 0.1 * torch.randn(x.shape, generator=self.generator)) if self.training else self.lin(x)


class _NestedEncoder(nn.Module):
    """``nn.TransformerEncoder`` with ``enable_nested_tensor`` over padded tokens (its
    nested-tensor fast path is for inference without autograd)."""

    def __init__(self):
        super().__init__()
        self.embed, self.head = nn.Embedding(50, 16), nn.Linear(16, 3)
        self.encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 4, 32, batch_first=True), 2,
                                             enable_nested_tensor=True)

    def forward(self, ids):
        return self.head(self.encoder(self.embed(ids), src_key_padding_mask=ids == 0).mean(1))


def _padded_ids():
    ids = torch.randint(1, 50, (4, 6))
    ids[1, 4:], ids[2, 3:] = 0, 0
    return ids


def _style_transfer():
    x = torch.randn(2, 3, 16, 16)
    return _StyleTransfer(), (x,), F.mse_loss, (x,)  # the input is its own target


def _bf16():
    """Pure bf16 training (weights and activations, no autocast), the loss in fp32."""
    model = nn.Sequential(nn.Linear(16, 32), nn.LayerNorm(32), nn.GELU(), nn.Linear(32, 3)).to(torch.bfloat16)
    return model, (torch.randn(4, 16, dtype=torch.bfloat16),), lambda out, y: F.cross_entropy(out.float(), y), \
        (_labels(4, 3),)


def _classifier(model_class: str, build_config, **config):
    """A Hugging Face sequence classifier on a padded batch of two."""
    return _hf(lambda t: getattr(t, build_config)(**config), model_class,
               lambda: {"input_ids": torch.randint(1, 100, (2, 12)),
                        "attention_mask": torch.tensor([[1] * 9 + [0] * 3, [1] * 12]), "labels": torch.tensor([0, 1])})


_ENCODER = dict(vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)

#: name -> () -> (model, inputs, loss_fn, targets)
CASES = {
    "llama": _lm("Llama", **_DECODER),
    "mistral": _lm("Mistral", sliding_window=8, **_DECODER),
    "qwen2": _lm("Qwen2", **_DECODER),
    "gemma": _lm("Gemma", head_dim=16, **_DECODER),
    "mixtral": _lm("Mixtral", num_local_experts=4, num_experts_per_tok=2, **_DECODER),
    "gpt-neox": _lm("GPTNeoX", hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4),
    "bert-padded": _BERT_PADDED,
    "bert-padded+frozen-backbone": _bias_only(_BERT_PADDED),
    "bert-padded+hf-checkpointing": _hf_checkpointing(_BERT_PADDED),
    "t5": _hf(lambda t: t.T5Config(vocab_size=128, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                                   decoder_start_token_id=0),
              "T5ForConditionalGeneration",
              lambda: {"input_ids": torch.randint(1, 128, (2, 12)), "labels": torch.randint(1, 128, (2, 8))}),
    "bart": _hf(lambda t: t.BartConfig(vocab_size=128, d_model=32, encoder_layers=1, decoder_layers=1,
                                       encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
                                       decoder_ffn_dim=64, max_position_embeddings=64),
                "BartForConditionalGeneration",
                lambda: {"input_ids": torch.randint(3, 128, (2, 12)), "labels": torch.randint(3, 128, (2, 8))}),
    "whisper": _hf(lambda t: t.WhisperConfig(vocab_size=128, d_model=32, encoder_layers=1, decoder_layers=1,
                                             encoder_attention_heads=4, decoder_attention_heads=4,
                                             encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=16,
                                             max_source_positions=8, max_target_positions=16, pad_token_id=0,
                                             bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
                                             suppress_tokens=None, begin_suppress_tokens=None),
                   "WhisperForConditionalGeneration",
                   lambda: {"input_features": torch.randn(2, 16, 16), "labels": torch.randint(3, 128, (2, 6))}),
    "clip": _hf(lambda t: t.CLIPConfig(
        text_config=dict(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, max_position_embeddings=16),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                           image_size=32, patch_size=8), projection_dim=16),
        "CLIPModel",
        lambda: {"input_ids": torch.randint(0, 128, (2, 8)), "pixel_values": torch.randn(2, 3, 32, 32),
                 "return_loss": True}),
    "segformer": _hf(lambda t: t.SegformerConfig(
        num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[16, 32], num_attention_heads=[1, 2],
        decoder_hidden_size=32, num_labels=4, patch_sizes=[7, 3], strides=[4, 2], mlp_ratios=[2, 2]),
        "SegformerForSemanticSegmentation",
        lambda: {"pixel_values": torch.randn(2, 3, 32, 32), "labels": torch.randint(0, 4, (2, 32, 32))}),
    "llama+hf-checkpointing": _hf_checkpointing(_lm("Llama", **_DECODER)),
    "gpt2+hf-checkpointing": _hf_checkpointing(_hf(
        lambda t: t.GPT2Config(vocab_size=128, n_embd=64, n_layer=2, n_head=4), "GPT2LMHeadModel",
        lambda: {"input_ids": (ids := torch.randint(0, 128, (2, 16))), "labels": ids})),
    "convnext_tiny": _vision("convnext_tiny"),
    "resnet18-channels-last": _vision("resnet18", channels_last=True),
    # 32x32 images: 1x1 maps, whose strides eager's kernels choose (model_ir.torch.eager_strides)
    "mobilenet_v2-channels-last-32px": _vision("mobilenet_v2", size=32, channels_last=True),
    "swin_t": _vision("swin_t"),
    "densenet121": _vision("densenet121"),
    "lraspp_mobilenet_v3_large": _segmentation("lraspp_mobilenet_v3_large"),
    "shufflenet_v2_x0_5": _vision("shufflenet_v2_x0_5"),
    "regnet_y_400mf": _vision("regnet_y_400mf"),
    "mobilenet_v3_small": _vision("mobilenet_v3_small"),
    "efficientnet_v2_s": _vision("efficientnet_v2_s"),
    "deeplabv3_mobilenet_v3_large": _segmentation("deeplabv3_mobilenet_v3_large"),
    "phi": _lm("Phi", hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4),
    "gemma2": _lm("Gemma2", head_dim=16, **_DECODER),
    "falcon": _lm("Falcon", hidden_size=64, num_hidden_layers=2, num_attention_heads=4),
    "bloom": _lm("Bloom", hidden_size=64, n_layer=2, n_head=4),
    "albert": _classifier("AlbertForSequenceClassification", "AlbertConfig", embedding_size=16, **_ENCODER),
    "deberta-v2": _classifier("DebertaV2ForSequenceClassification", "DebertaV2Config",
                              problem_type="single_label_classification", **_ENCODER),
    "wav2vec2": _hf(lambda t: t.Wav2Vec2Config(
        vocab_size=32, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64,
        conv_dim=(16, 16), conv_stride=(5, 2), conv_kernel=(10, 3), num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4, mask_time_prob=0.0, layerdrop=0.0, num_labels=3),
        "Wav2Vec2ForSequenceClassification",
        lambda: {"input_values": torch.randn(2, 400), "labels": torch.tensor([0, 2])}),
    "vae": _vae,
    "lstm": _small(_LSTM, lambda: torch.randint(0, 50, (4, 10)), classes=5),
    "bigru": _small(_BiGRU, lambda: torch.randint(0, 50, (4, 10)), classes=5),
    "checkpointed": _small(_Checkpointed, lambda: torch.randn(4, 16)),
    "autograd-function+parametrizations": _small(_Custom, lambda: torch.randn(4, 16)),
    "frozen+unused-parameters": _small(_PartlyUsed, lambda: torch.randn(4, 16)),
    "recommender-embedding-bag": _small(_Recommender, lambda: torch.randint(0, 100, (4, 5))),
    "spectrogram": _small(_Spectrogram, lambda: torch.randn(4, 64)),
    "distillation": _small(_Distillation, lambda: torch.randn(8, 16), loss_fn=_distillation_loss,
                           make_targets=lambda: (_labels(8, 3),)),
    "momentum-queue": _small(_MomentumQueue, lambda: torch.randn(8, 16),
                             make_targets=lambda: (torch.zeros(8, dtype=torch.long),)),
    "spatial-transformer": _small(_SpatialTransformer, lambda: torch.randn(4, 3, 8, 8), classes=4),
    "style-transfer": _style_transfer,
    "conv3d": _small(_Video, lambda: torch.randn(4, 3, 4, 8, 8)),
    "unfold-fold-bilinear": _small(_Patches, lambda: torch.randn(4, 3, 8, 8), classes=4),
    "reentrant-checkpoint": _small(_ReentrantCheckpointed, lambda: torch.randn(4, 16)),
    "bf16": _bf16,
    "diffusion-unet": _small(_Diffusion, lambda: torch.randn(2, 3, 8, 8), loss_fn=_denoising_loss),
    "torch-transformer-decoder": _decoder,
    "orthogonal-spectral-norm": _small(_Orthogonal, lambda: torch.randn(4, 16)),
    "interpolations": _small(_Interpolations, lambda: torch.randn(2, 2, 3, 4, 4),
                             make_targets=lambda: (_labels(2, 3),)),
    "selection-ops": _small(_Selection, lambda: torch.randn(8, 16), make_targets=lambda: (_labels(8, 4),)),
    "message-passing": _small(_MessagePassing, lambda: torch.randn(10, 8), make_targets=lambda: (_labels(10, 3),)),
    "wavenet": _small(_WaveNet, lambda: torch.randn(2, 1, 32), make_targets=lambda: (torch.randint(0, 8, (2, 32)),)),
    "complex-rotary": _small(_ComplexRotary, lambda: torch.randint(0, 50, (2, 10)),
                             make_targets=lambda: (torch.randint(0, 50, (20,)),)),
    "gradient-penalty": _small(_GradientPenalty, lambda: torch.randn(4, 16)),
    "lora": _small(_LoRA, lambda: torch.randn(4, 16)),
    "weight-norm": _small(_WeightNorm, lambda: torch.randn(4, 16)),
    "attention-padding-weights": _small(_AttentionWeights, _padded_ids),
    "layers": _small(_Layers, lambda: torch.randn(2, 3, 8, 8), make_targets=lambda: (_labels(2, 4),)),
    "complex-weights": _small(_ComplexWeights, lambda: torch.randn(4, 16)),
    "own-generator": _small(_OwnGenerator, lambda: torch.randn(4, 16)),
    "nested-tensor-encoder": _small(_NestedEncoder, _padded_ids),
}

#: name -> params -> optimizer, each run on the ``checkpointed`` model
OPTIMIZERS = {
    "sgd-nesterov": lambda p: O.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4),
    "adagrad": lambda p: O.Adagrad(p, lr=0.1),
    "rmsprop-centered": lambda p: O.RMSprop(p, lr=0.01, momentum=0.9, centered=True),
    "adamax": lambda p: O.Adamax(p, lr=0.01),
    "nadam": lambda p: O.NAdam(p, lr=0.01),
    "adam-amsgrad": lambda p: O.Adam(p, lr=0.01, amsgrad=True),
    "adamw-fused": lambda p: O.AdamW(p, lr=0.01, fused=True),
    "adadelta": lambda p: O.Adadelta(p),
    "rprop": lambda p: O.Rprop(p, lr=0.01),
    "adam-tensor-lr": lambda p: O.Adam(p, lr=torch.tensor(0.01)),
    "radam-decoupled": lambda p: O.RAdam(p, lr=0.01, decoupled_weight_decay=True, weight_decay=0.01),
    "adam-maximize": lambda p: O.Adam(p, lr=0.01, maximize=True),
    "adagrad-lr-decay": lambda p: O.Adagrad(p, lr=0.1, lr_decay=0.01, weight_decay=0.1),
    "adamw-amsgrad-foreach": lambda p: O.AdamW(p, lr=0.01, amsgrad=True, foreach=True),
}


def run_case(name: str, executor: str, budget_share: float | None = None, time_limit: float = 5) -> dict:
    """One case with one executor: bitwise check and the steady step's memory. With
    ``budget_share``, the step is planned under a memory budget that share of the way
    from the lower bound of any plan with recomputation up to the peak of the plan
    without (captured as under a budget: in-place activations functional); a case no
    plan fits comes back with ``fits: False`` and the planner's reason. ``time_limit``:
    seconds each plan's solvers get."""
    if name in CASES:
        build, make_opt = CASES[name], (lambda p: O.AdamW(p, lr=1e-3))
    else:
        build, make_opt = CASES["checkpointed"], OPTIMIZERS[name]
    torch.manual_seed(0)
    model, inputs, loss_fn, targets = build()
    model.train()
    ref = copy.deepcopy(model)
    opt = make_opt([p for p in model.parameters() if p.requires_grad])
    ref_opt = make_opt([p for p in ref.parameters() if p.requires_grad])
    budget = None
    if budget_share is not None:
        # Under a budget (any budget), the plan's lower bound is that of any plan with recomputation.
        unbudgeted = optimize(model, inputs, optimizer=opt, loss_fn=loss_fn, targets=targets, executor=executor,
                              time_limit=time_limit, memory_budget=1 << 62).plan.figures
        bound = unbudgeted["lower_bound_bytes"]
        budget = bound + int(budget_share * (unbudgeted["peak_bytes"] - bound))
    started = time.perf_counter()
    try:
        step = optimize(model, inputs, optimizer=opt, loss_fn=loss_fn, targets=targets, executor=executor,
                        time_limit=time_limit, memory_budget=budget)
    except BudgetError as e:
        return {"bitwise": None, "fits": False, "why": str(e).splitlines()[0]}
    planning = time.perf_counter() - started

    def call():
        return step(**inputs, targets=targets) if isinstance(inputs, dict) else step(*inputs, targets=targets)

    for i in range(3):
        torch.manual_seed(100 + i)
        expected = eager_step(ref, ref_opt, inputs, loss_fn, targets)
        torch.manual_seed(100 + i)
        got = call()
        if not torch.equal(got, expected):
            return {"bitwise": False, "why": f"step {i}: loss {float(got)!r}, eager {float(expected)!r}"}
    try:
        assert_same_state(model, opt, ref, ref_opt, stateful=False)
    except AssertionError as e:
        return {"bitwise": False, "why": f"state differs after 3 steps: {e}"}
    if name in CASES and budget is None:  # an eval step has no backward to recompute for
        why = _eval_differs(model, ref, inputs, executor)
        if why:
            return {"bitwise": False, "why": why}
    measured, _ = peak_allocated_during(call)
    exact, _ = exact_peak_allocated_during(call)
    figures = step.figures()
    planned = figures["beside_arena_bytes"] if executor == "arena" else figures["reorder_transient_bytes"]
    row = {"bitwise": True, "planning_seconds": round(planning, 2), "measured_bytes": measured,
           "exact_measured_bytes": exact, "planned_bytes": planned, "ops": len(step.plan.graph.ops)}
    if budget is not None:
        row.update(fits=True, budget_bytes=budget, peak_bytes=figures["peak_bytes"], bound_bytes=bound,
                   unbudgeted_peak_bytes=unbudgeted["peak_bytes"], recomputed_ops=figures.get("recomputed_ops", 0))
    return row


def _eval_differs(model, ref, inputs, executor: str) -> str | None:
    """Why the eval step of ``model`` (trained like ``ref``) differs from ``ref``'s eager
    forward under ``no_grad``, or None when every output tensor is bitwise equal.
    PyTorch's fused fast path of ``nn.MultiheadAttention`` is off in both (capture warns)."""
    fast_path = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        model.eval()
        ref.eval()
        step = optimize(model, inputs, executor=executor, train=False, time_limit=5)
        got = step(**inputs) if isinstance(inputs, dict) else step(*inputs)
        with torch.no_grad():
            expected = call_model(ref, inputs)
    finally:
        torch.backends.mha.set_fastpath_enabled(fast_path)
        model.train()
        ref.train()
    got, expected = ([t for t in pytree.tree_leaves(v) if isinstance(t, torch.Tensor)] for v in (got, expected))
    if len(got) != len(expected):
        return f"eval: {len(got)} output tensors, eager {len(expected)}"
    for k, (a, b) in enumerate(zip(got, expected)):
        if a.shape != b.shape or not torch.equal(a, b):
            return f"eval: output {k} differs from eager's"
    return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cases", nargs="*", help=f"of {', '.join([*CASES, *OPTIMIZERS])} (default: all)")
    parser.add_argument("--executors", default="reorder,arena")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--budget-share", type=float,
                        help="plan each training step under a memory budget this share of the way from the lower "
                             "bound of any plan with recomputation to the peak of the plan without; cases no plan "
                             "fits are reported, not failed")
    parser.add_argument("--time-limit", type=float, default=5.0, help="seconds each plan's solvers get (default 5)")
    args = parser.parse_args(argv)
    unknown = [c for c in args.cases if c not in CASES and c not in OPTIMIZERS]
    if unknown:
        parser.error(f"unknown case {unknown[0]!r}")
    if args.budget_share is not None and not 0 < args.budget_share < 1:
        parser.error(f"--budget-share must lie between 0 and 1, got {args.budget_share}")
    if not args.time_limit > 0:
        parser.error(f"--time-limit must be a positive number of seconds, got {args.time_limit}")
    torch.set_num_threads(1)  # steadier step times; bitwise results do not depend on it
    # capture's and the arena's warnings (a case whose memory is not modelled shows as its ratio)
    warnings.simplefilter("ignore")
    rows, failed = [], 0
    print(f"{'case':36s} {'executor':8s} {'bitwise':8s} {'plan s':>7s} {'measured B':>12s} {'planned B':>12s} "
          "measured/planned  exact/planned")
    for name in args.cases or [*CASES, *OPTIMIZERS]:
        for executor in args.executors.split(","):
            try:
                row = run_case(name, executor, args.budget_share, args.time_limit)
            except Exception as e:  # noqa: BLE001 - reported on its line, the others go on
                row = {"bitwise": False, "why": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
            rows.append({"case": name, "executor": executor, **row})
            if row.get("fits") is False:
                print(f"{name:36s} {executor:8s} no plan fits the budget: {row['why'][:160]}")
                continue
            if not row["bitwise"]:
                failed += 1
                print(f"{name:36s} {executor:8s} FAILED   {row['why']}")
                continue
            planned = row["planned_bytes"] or float("nan")
            print(f"{name:36s} {executor:8s} {'yes':8s} {row['planning_seconds']:7.1f} {row['measured_bytes']:12d} "
                  f"{row['planned_bytes']:12d} {row['measured_bytes'] / planned:16.3f} "
                  f"{row['exact_measured_bytes'] / planned:14.3f}"
                  + (f"  peak {row['peak_bytes'] / row['unbudgeted_peak_bytes']:.3f} of unbudgeted (bound "
                     f"{row['bound_bytes'] / row['unbudgeted_peak_bytes']:.3f}), {row['recomputed_ops']} ops "
                     "recomputed" if "budget_bytes" in row else ""), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "budget_share": args.budget_share, "time_limit": args.time_limit,
                       "rows": rows}, f, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
