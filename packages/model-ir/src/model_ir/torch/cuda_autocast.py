"""CUDA's autocast policy, applied to the CPU stand-ins of an emulated CUDA capture.

``torch.autocast`` keeps one policy per device: which operators run in the lower
precision, which in float32, which at their inputs' widest type. A capture for CUDA
without a GPU traces CPU tensors (:mod:`model_ir.torch.cuda_kernels`), so CPU's policy
would apply, and it differs in what matters for memory: CUDA runs ``layer_norm``,
``group_norm``, ``softmax``, ``log_softmax``, ``sum``, ``exp``, ``pow`` and the
upsampling ops in float32 where CPU keeps the input's bfloat16/float16 (a transformer's
LayerNorm and attention-probability outputs twice the bytes), and CUDA runs ``einsum``,
``mv`` and the RNN cells in the lower precision where CPU does not.

:func:`cuda_autocast_policy` replaces, for its duration, the ``AutocastCPU`` kernel of
every operator that either device's autocast handles (``torch._C.
_dispatch_get_registrations_for_dispatch_key``) by CUDA's policy for it
(:data:`CUDA_POLICY`, aten/src/ATen/autocast_mode.h), implemented as
autocast_mode.h's ``WrapFunction`` does: cast the eligible tensor arguments (floating
point, not float64), then call the operator with autocast excluded. Operators CUDA does
not handle pass through to the next dispatch key, as a fallthrough does. Like
``cached_cast``, the lower-precision casts of float32 leaves that require grad (the
weights) are made once per context, whichever operator asks (the capture enters it with
its autocast region). Operators of other libraries (torchvision's ``roi_align``, ...)
keep CPU's policy; model code that switches CUDA autocast itself
(``torch.autocast("cuda", enabled=False)``) has no effect on the stand-ins.
"""

from __future__ import annotations

import contextlib
import warnings

import torch

LOWER = "lower_precision_fp"
FP32 = "fp32"
FP32_SET_OPT_DTYPE = "fp32_set_opt_dtype"
FP32_APPEND_DTYPE = "fp32_append_dtype"
PROMOTE = "promote"
BANNED = "banned"


def _named(policy: str, names: str) -> dict[str, str]:
    return {f"aten::{n}": policy for n in names.split()}


#: CUDA autocast's policy per operator (``aten::name.overload``), from autocast_mode.h
#: (``AT_FORALL_LOWER_PRECISION_FP``, ``AT_FORALL_FP32``, ...) and autocast_mode.cpp;
#: ``rms_norm`` and ``linalg_matrix_sqrth``, newer than the lists read, were probed on
#: fake CUDA tensors. A test checks that it covers every operator the installed torch
#: registers for CUDA autocast (:func:`unknown_cuda_operators`).
CUDA_POLICY: dict[str, str] = {
    **_named(LOWER, """_convolution _convolution.deprecated conv1d conv2d conv3d conv_tbc conv_transpose1d
        conv_transpose2d.input conv_transpose3d.input convolution prelu addmm addmv addr matmul einsum mm mv
        linalg_vecdot linear addbmm baddbmm bmm chain_matmul linalg_multi_dot _thnn_fused_lstm_cell
        _thnn_fused_gru_cell lstm_cell gru_cell rnn_tanh_cell rnn_relu_cell _scaled_dot_product_flash_attention
        scaled_dot_product_attention cudnn_convolution cudnn_convolution_transpose _cudnn_rnn"""),
    **_named(FP32, """acos asin cosh erfinv exp expm1 log log10 log2 log1p reciprocal rsqrt sinh tan
        pow.Tensor_Scalar pow.Tensor_Tensor pow.Scalar softplus layer_norm native_layer_norm group_norm rms_norm
        frobenius_norm.dim nuclear_norm nuclear_norm.dim cosine_similarity poisson_nll_loss cosine_embedding_loss
        nll_loss nll_loss2d hinge_embedding_loss kl_div l1_loss smooth_l1_loss huber_loss mse_loss
        margin_ranking_loss multilabel_margin_loss soft_margin_loss triplet_margin_loss multi_margin_loss
        binary_cross_entropy_with_logits dist pdist cdist renorm logsumexp linalg_matrix_sqrth
        upsample_nearest1d _upsample_nearest_exact1d upsample_nearest2d _upsample_nearest_exact2d
        upsample_nearest3d _upsample_nearest_exact3d upsample_linear1d upsample_bilinear2d _upsample_bilinear2d_aa
        upsample_trilinear3d upsample_bicubic2d _upsample_bicubic2d_aa"""),
    **_named(FP32_SET_OPT_DTYPE, """prod prod.dim_int prod.dim_Dimname softmax.int softmax.Dimname log_softmax.int
        log_softmax.Dimname cumprod cumprod.dimname cumsum cumsum.dimname linalg_vector_norm linalg_matrix_norm
        linalg_matrix_norm.str_ord sum sum.dim_IntList sum.dim_DimnameList"""),
    **_named(FP32_APPEND_DTYPE, "norm.Scalar norm.ScalarOpt_dim norm.names_ScalarOpt_dim"),
    **_named(PROMOTE, "addcdiv addcmul atan2 bilinear cross dot vdot grid_sampler index_put tensordot scatter_add"),
    **_named(BANNED, "binary_cross_entropy"),
}

#: The norm overload each ``fp32_append_dtype`` one redispatches to, with its defaults.
_APPENDED = {"Scalar": ("ScalarOpt_dtype", (2,)), "ScalarOpt_dim": ("ScalarOpt_dim_dtype", (None, None, False)),
             "names_ScalarOpt_dim": ("names_ScalarOpt_dim_dtype", (None, None, False))}

_AUTOCAST_CPU = torch._C.DispatchKey.AutocastCPU


def _eligible(x) -> bool:
    return isinstance(x, torch.Tensor) and x.is_floating_point() and x.dtype != torch.float64


class _Casts:
    """Casts of eligible arguments, with ``cached_cast``'s cache (autocast_mode.cpp):
    lower-precision casts of float32 leaves that require grad and are not views."""

    def __init__(self):
        self.cached: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # id(source) -> (source, cast)

    def __call__(self, x, dtype):
        if isinstance(x, (list, tuple)):
            return type(x)(self(v, dtype) for v in x)
        if not _eligible(x) or x.dtype == dtype:
            return x
        if (dtype == torch.get_autocast_dtype("cpu") and x.dtype == torch.float32 and x.requires_grad
                and x.is_leaf and not x._is_view() and torch.is_autocast_cache_enabled()):
            hit = self.cached.get(id(x))
            if hit is None or hit[0] is not x:
                hit = self.cached[id(x)] = (x, x.to(dtype))
            return hit[1]
        return x.to(dtype)


def _tensors(args, kwargs):
    for x in (*args, *kwargs.values()):
        yield from (x if isinstance(x, (list, tuple)) else (x,))


def _overload(name: str) -> torch._ops.OpOverload:
    base, _, overload = name.removeprefix("aten::").partition(".")
    return getattr(getattr(torch.ops.aten, base), overload or "default")


def _kernel(op: torch._ops.OpOverload, policy: str, _cast: _Casts):
    """The ``AutocastCPU`` kernel that applies CUDA's ``policy`` to ``op``."""

    def below_autocast(target, *args, **kwargs):
        with torch._C._ExcludeDispatchKeyGuard(torch._C.DispatchKeySet(_AUTOCAST_CPU)):
            return target(*args, **kwargs)

    def lower(*args, **kwargs):
        dtype = torch.get_autocast_dtype("cpu")
        return below_autocast(op, *_cast(args, dtype), **{k: _cast(v, dtype) for k, v in kwargs.items()})

    def fp32(*args, **kwargs):
        return below_autocast(op, *_cast(args, torch.float32), **{k: _cast(v, torch.float32) for k, v in kwargs.items()})

    def promote(*args, **kwargs):
        low = torch.get_autocast_dtype("cpu")
        dtypes = {t.dtype for t in _tensors(args, kwargs) if _eligible(t)}
        if dtypes - {torch.float32, low}:  # prioritize() refuses a third floating type
            raise RuntimeError("Unexpected floating ScalarType in at::autocast::prioritize")
        dtype = torch.float32 if torch.float32 in dtypes else low
        return below_autocast(op, *_cast(args, dtype), **{k: _cast(v, dtype) for k, v in kwargs.items()})

    index = next((i for i, a in enumerate(op._schema.arguments) if a.name == "dtype"), None)

    def set_opt_dtype(*args, **kwargs):
        # An explicit dtype is kept; none (or an ineligible input) leaves the call as it was.
        if _eligible(args[0]) and index is not None:
            if index < len(args):
                if args[index] is None:
                    args = (*args[:index], torch.float32, *args[index + 1:])
            elif kwargs.get("dtype") is None:
                kwargs = {**kwargs, "dtype": torch.float32}
        return below_autocast(op, *args, **kwargs)

    def append_dtype(*args, **kwargs):
        if not _eligible(args[0]):
            return below_autocast(op, *args, **kwargs)
        target, defaults = _APPENDED[op._overloadname]
        args = (*args, *defaults[len(args) - 1:])
        return below_autocast(getattr(torch.ops.aten.norm, target), *args, dtype=torch.float32)

    def banned(*args, **kwargs):
        raise RuntimeError(
            "torch.nn.functional.binary_cross_entropy and torch.nn.BCELoss are unsafe to autocast on CUDA: "
            "use torch.nn.functional.binary_cross_entropy_with_logits or torch.nn.BCEWithLogitsLoss")

    return {LOWER: lower, FP32: fp32, PROMOTE: promote, FP32_SET_OPT_DTYPE: set_opt_dtype,
            FP32_APPEND_DTYPE: append_dtype, BANNED: banned}[policy]


def _fallthrough(op: torch._ops.OpOverload):
    after = torch._C._dispatch_keyset_full_after(_AUTOCAST_CPU)

    def kernel(keyset, *args, **kwargs):
        return op.redispatch(keyset & after, *args, **kwargs)
    return kernel


def _registered(key: str) -> set[str]:
    # aten's operators only: other libraries' (torchvision's roi_align, ...) keep CPU's policy
    return {n for n in torch._C._dispatch_get_registrations_for_dispatch_key(key) if n.startswith("aten::")}


def unknown_cuda_operators() -> list[str]:
    """Operators the installed torch's CUDA autocast handles that :data:`CUDA_POLICY`
    lacks (a torch newer than the table): they pass through uncast, with a warning."""
    return sorted(_registered("AutocastCUDA") - CUDA_POLICY.keys())


def autocast_overrides() -> dict[str, str | None]:
    """Operator name -> the CUDA policy its ``AutocastCPU`` kernel gets (None: it passes
    through), for every operator the installed torch registers for either device's
    autocast."""
    cuda, cpu = _registered("AutocastCUDA"), _registered("AutocastCPU")
    return {name: CUDA_POLICY.get(name) if name in cuda else None for name in sorted(cuda | cpu)}


@contextlib.contextmanager
def cuda_autocast_policy():
    """Within this context, ``torch.autocast("cpu", ...)`` casts as CUDA's autocast does
    (see the module docstring). Process-global while active."""
    unknown = unknown_cuda_operators()
    if unknown:
        warnings.warn(f"CUDA autocast's policy for {', '.join(unknown)} is unknown to model_ir.torch.cuda_autocast: "
                      "the capture runs them uncast", stacklevel=3)
    casts = _Casts()
    with torch.library._scoped_library("aten", "IMPL") as lib:
        with warnings.catch_warnings():  # torch <= 2.11 warns that the kernel replaces aten's own
            warnings.filterwarnings("ignore", message="(?s).*Overriding a previously registered kernel")
            for name, policy in autocast_overrides().items():
                op = _overload(name)
                if policy is None:
                    lib.impl(name.removeprefix("aten::"), _fallthrough(op), "AutocastCPU", with_keyset=True)
                else:
                    lib.impl(name.removeprefix("aten::"), _kernel(op, policy, casts), "AutocastCPU")
        try:
            yield
        finally:
            casts.cached.clear()
