"""Tracing the kernels CUDA runs on a machine without a GPU.

A training step cannot be traced on fake CUDA tensors without a driver (autograd's
engine asks the driver for the device's streams), so a capture for CUDA traces on
fake CPU tensors and makes, explicitly, the choices by which PyTorch's CUDA dispatch
differs from its CPU dispatch. :func:`emulate_cuda` overrides, for the duration of a
trace, the ``CompositeImplicitAutograd`` kernels of five aten operators (so calls from
C++ and from other composites, such as ``nn.MultiheadAttention``, are covered):

- ``scaled_dot_product_attention`` -> the fused kernel CUDA's ``select_sdp_backend``
  picks on sm80-sm90 (``_scaled_dot_product_efficient_attention`` for fp32,
  ``_scaled_dot_product_flash_attention`` for fp16/bf16 without a mask, ...), with the
  composite's mask and head-dim padding; ``torch.backends.cuda.sdp_kernel`` settings
  and the priority order are honoured;
- ``_batch_norm_impl_index`` -> ``cudnn_batch_norm`` where cuDNN would be selected
  (its reserve is 0 bytes in the meta kernel, as in a capture made on a GPU);
- ``dropout`` -> ``native_dropout`` (a bool mask) in training;
- ``softmax``/``log_softmax`` of fp16 with ``dtype=float32`` -> the fused half-to-float kernel;
- optimizers built with ``foreach=None`` run their foreach kernels, as they do on CUDA
  (under fake tensors PyTorch's default check fails and picks the for-loop path), except
  Adam's with a tensor learning rate, which torch leaves off foreach unless
  ``capturable``; ``capturable`` optimizers accept the CPU stand-ins as a device of theirs.

The optimizer state a CUDA step keeps in host memory (Adam's step counts unless
``capturable`` or ``fused``) is learned by creating it for fake CUDA parameters, which
needs no driver (``model_ir.torch.tracing``); the graph gives it no device bytes.

A capture with ``autocast=`` also casts by CUDA's autocast policy instead of CPU's
(:mod:`model_ir.torch.cuda_autocast`: LayerNorm, softmax, sums, ... in float32).

Not emulated: RNNs (cuDNN: an LSTM is traced with CPU's oneDNN kernels, named in the
graph's ``meta["cpu_kernels"]`` with a warning, :func:`cpu_only_kernels`), CTC loss,
``embedding_bag``, nested tensors, GQA with differing head counts, and user code that
branches on ``torch.cuda.is_available()``.
The SDPA choice for fp16/bf16 on Hopper depends on the cuDNN version (recent torch puts
cuDNN attention first with cuDNN > 9.15); ``sdpa=`` forces a backend.
"""

from __future__ import annotations

import contextlib
import functools
import math
import sys
import warnings

import torch

aten = torch.ops.aten
F = torch.nn.functional
_HALF = (torch.float16, torch.bfloat16)
_BACKENDS = {0: "math", 1: "flash", 2: "efficient", 3: "cudnn"}
SDPA_BACKENDS = ("flash", "efficient", "cudnn", "math")

#: Results that the CUDA kernels of these operators return in host memory, while their
#: meta kernels say otherwise: the philox seed and offset of memory-efficient (and
#: cuDNN) attention, found on an H200 with torch 2.11 (``model_runtime.measure.
#: kernel_mismatches``; the recorded eager traces have no device block for them). A
#: capture for CUDA sizes them 0 device bytes. Under CUDA graph capture the kernels put
#: them on the device instead (16 bytes, not modelled).
HOST_RESULTS = {
    "aten::_scaled_dot_product_efficient_attention": (2, 3),
    "aten::_efficient_attention_forward": (2, 3),
    "aten::_scaled_dot_product_cudnn_attention": (6, 7),
}


#: Operators only CPU dispatch runs (oneDNN): where an emulated CUDA capture holds one, the
#: GPU would run another kernel (``nn.LSTM``: cuDNN's ``_cudnn_rnn``, whose reserve space
#: and weight buffer are not known without cuDNN), so that part of the graph's memory is
#: the CPU kernel's.
CPU_ONLY_PREFIXES = ("aten::mkldnn", "aten::_mkldnn", "aten::to_mkldnn")


def cpu_only_kernels(module: torch.fx.GraphModule) -> list[str]:
    """The CPU-only operators (:data:`CPU_ONLY_PREFIXES`) that ``module`` calls, sorted."""
    return sorted({n.target._schema.name for n in module.graph.nodes
                   if n.op == "call_function" and isinstance(n.target, torch._ops.OpOverload)
                   and n.target._schema.name.startswith(CPU_ONLY_PREFIXES)})


def sdpa_backend(q, k, v, mask, causal: bool, gqa: bool, prefer_cudnn: bool = False) -> str:
    """The backend ``select_sdp_backend`` (aten/src/ATen/native/transformers/cuda/sdp_utils.cpp)
    picks for dense inputs on sm80-sm90."""
    flags = torch.backends.cuda
    half = q.dtype in _HALF
    dq, dv, sq, sk = q.size(-1), v.size(-1), q.size(-2), k.size(-2)
    align = 8 if half else 4
    usable = {
        "flash": flags.flash_sdp_enabled() and mask is None and half and dq == dv <= 256
        and not (causal and sq != sk),
        "efficient": flags.mem_efficient_sdp_enabled() and dq % align == 0 and dv % align == 0,
        "cudnn": flags.cudnn_sdp_enabled() and half and dq % 8 == 0 and dq <= 128 and dv <= 128 and sk > 1
        and all(t.stride(1) == t.size(-1) for t in (q, k, v)),
        "math": flags.math_sdp_enabled(),
    }
    if q.dim() != 4 or (gqa and q.size(1) != k.size(1)) or min(sq, sk) == 0:
        return "math"
    priority = getattr(torch._C, "_get_sdp_priority_order", lambda: [1, 2, 0, 3])()
    order = [_BACKENDS[i] for i in priority if i in _BACKENDS]
    if prefer_cudnn:
        order = ["cudnn", *order]
    return next((name for name in order if usable[name]), "math")


def _sdpa(backend: str | None, prefer_cudnn: bool):
    def sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, *, scale=None, enable_gqa=False):
        chosen = backend or sdpa_backend(q, k, v, attn_mask, is_causal, enable_gqa, prefer_cudnn)
        if attn_mask is not None and attn_mask.dtype == torch.bool:
            # convert_boolean_attn_mask (attention.cpp): one where, no inverted copy of the mask
            attn_mask = torch.where(attn_mask, 0.0, torch.scalar_tensor(-math.inf, dtype=q.dtype,
                                                                        device=attn_mask.device))
        log_sumexp = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
        if chosen == "flash":  # the CUDA composite pads the head dim to a multiple of 8
            d = q.size(-1)
            pad = (lambda t: t) if d % 8 == 0 else (lambda t: F.pad(t, (0, -d % 8)))
            out = aten._scaled_dot_product_flash_attention(
                pad(q), pad(k), pad(v), dropout_p, is_causal, False, scale=d ** -0.5 if scale is None else scale)[0]
            return out if d % 8 == 0 else out[..., :d]
        if chosen == "efficient":
            if attn_mask is not None:  # preprocess_mask: the last dim padded to a multiple of 16
                n = k.size(-2)
                attn_mask = attn_mask.expand(*q.shape[:-1], n)
                if n % 16:
                    attn_mask = F.pad(attn_mask, (0, -n % 16))[..., :n]
                elif any(attn_mask.stride(i) % 16 for i in range(3)):
                    attn_mask = attn_mask.contiguous()
            return aten._scaled_dot_product_efficient_attention(q, k, v, attn_mask, log_sumexp, dropout_p,
                                                                is_causal, scale=scale)[0]
        if chosen == "cudnn":
            return aten._scaled_dot_product_cudnn_attention(q, k, v, attn_mask, log_sumexp, dropout_p, is_causal,
                                                            False, scale=scale)[0]
        return aten._scaled_dot_product_attention_math(q, k, v, attn_mask, dropout_p, is_causal, None, scale=scale,
                                                       enable_gqa=enable_gqa)[0]
    return sdpa


def _uses_cudnn_batch_norm(x, weight, bias, running_mean, running_var, training: bool, cudnn_enabled: bool) -> bool:
    """``_select_batch_norm_backend``'s cuDNN rule (aten/src/ATen/native/Normalization.cpp)."""
    return (cudnn_enabled and torch.backends.cudnn.enabled and weight is not None and bias is not None
            and torch.bfloat16 not in (x.dtype, weight.dtype)
            and (x.dtype != torch.float16 or weight.dtype == torch.float32)
            and ((running_mean is not None and running_var is not None)
                 or (running_mean is None and running_var is None and training))
            and x.dim() >= 3 and x.size(0) <= (880801 if training else 65535) and x.numel() < 2**31 - 1)


def _batch_norm_impl_index(x, weight, bias, running_mean, running_var, training, momentum, eps, cudnn_enabled):
    if _uses_cudnn_batch_norm(x, weight, bias, running_mean, running_var, training, cudnn_enabled):
        def contiguous(t):
            return None if t is None else t.contiguous()

        x = x.contiguous(memory_format=torch._prims_common.suggest_memory_format(x))
        out = aten.cudnn_batch_norm(x, contiguous(weight), contiguous(bias), contiguous(running_mean),
                                    contiguous(running_var), training, momentum, eps)
        return (*out, 1)
    out = aten.native_batch_norm(x, weight, bias, running_mean, running_var, training, momentum, eps)
    return (*out, x.new_empty(0, dtype=torch.uint8), 0)


def _dropout(x, p, train):
    if train and 0 < p < 1 and x.numel() > 0:  # CUDA's fused kernel (is_fused_kernel_acceptable)
        return aten.native_dropout(x, p, train)[0]
    if p == 0 or not train or x.numel() == 0:
        return x
    return x.mul(x.new_zeros(()))


def _softmax(op):
    def softmax(x, dim, dtype=None):  # CUDA converts half to float inside the kernel
        if x.dtype == torch.float16 and dtype == torch.float32:
            return op(x, dim, True)
        return op(x if dtype is None else x.to(dtype), dim, False)
    return softmax


def _adam_tensor_lr(optimizer: torch.optim.Optimizer, group: dict) -> bool:
    """Whether CUDA's Adam keeps ``group`` off foreach: torch does not turn foreach on for
    a tensor learning rate unless ``capturable`` (``torch.optim.adam.adam``)."""
    return (isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW)) and isinstance(group.get("lr"), torch.Tensor)
            and not group.get("capturable"))


@contextlib.contextmanager
def emulate_cuda(optimizer: torch.optim.Optimizer | None = None, *, sdpa: str | None = None,
                 prefer_cudnn_sdpa: bool = False):
    """Within this context, aten dispatches CPU tensors to the kernels CUDA would run
    (see the module docstring); ``optimizer``'s groups with ``foreach=None`` use foreach.

    ``sdpa``: force an attention backend (one of :data:`SDPA_BACKENDS`).
    Process-global while active: do not run other eager work concurrently.
    """
    if sdpa is not None and sdpa not in SDPA_BACKENDS:
        raise ValueError(f"unknown SDPA backend {sdpa!r}; choose one of {', '.join(SDPA_BACKENDS)}")
    groups = [g for g in (optimizer.param_groups if optimizer is not None else [])
              if g.get("foreach", False) is None and not g.get("fused") and not g.get("differentiable")
              and not _adam_tensor_lr(optimizer, g)]
    kernels = [("scaled_dot_product_attention", _sdpa(sdpa, prefer_cudnn_sdpa)), ("dropout", _dropout),
               ("_batch_norm_impl_index", _batch_norm_impl_index), ("softmax.int", _softmax(aten._softmax)),
               ("log_softmax.int", _softmax(aten._log_softmax))]
    with torch.library._scoped_library("aten", "IMPL") as lib:
        with warnings.catch_warnings():  # torch <= 2.11 warns that the kernel replaces aten's own
            warnings.filterwarnings("ignore", message="(?s).*Overriding a previously registered kernel")
            for name, fn in kernels:
                lib.impl(name, fn, "CompositeImplicitAutograd")
        for g in groups:
            g["foreach"] = True
        try:
            with _capturable_on_the_stand_ins():
                yield
        finally:
            for g in groups:
                g["foreach"] = None


@contextlib.contextmanager
def _capturable_on_the_stand_ins():
    """torch's ``capturable`` optimizers (Adam, NAdam, ... as CUDA graphs need them)
    assert that their parameters are on a device that supports it: the CPU stand-ins of
    CUDA tensors pass too, so that the update is traced as CUDA runs it."""
    name = "_get_capturable_supported_devices"
    modules = [m for key, m in list(sys.modules.items())
               if key.startswith("torch.optim.") and callable(getattr(m, name, None))]
    originals = [(m, getattr(m, name)) for m in modules]
    for m, original in originals:
        setattr(m, name, functools.partial(_with_cpu, original))
    try:
        yield
    finally:
        for m, original in originals:
            setattr(m, name, original)


def _with_cpu(devices, *args, **kwargs) -> list[str]:
    return [*devices(*args, **kwargs), "cpu"]
