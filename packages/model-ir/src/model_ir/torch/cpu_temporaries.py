"""What CPU kernels allocate and free within their call, in bytes: measured, or by rules
from their arguments' layouts.

Measured (:data:`MEASURED`: each distinct call runs once at capture,
:mod:`model_ir.torch.kernel_probes`), where no rule follows the kernel: oneDNN's
convolutions copy arguments laid out otherwise than they work, reorder operands into
oneDNN's blocked layout (channels padded to the block of the CPU's instruction set),
compute results in it beside the dense copies and take scratchpads sized by the thread
count; the slow (THNN) convolution takes column buffers; oneDNN's LSTM layers reorder
their weights; batch norm's statistics and layer norm's backward reduce in per-thread
buffers; a softmax over another dimension than the last takes a temporary; ``roll`` over
several dimensions rolls one dimension after another, each into a temporary; CPU flash
attention (``scaled_dot_product_attention``) takes per-thread score tiles (and packs
keys and values in bf16 and fp16), and its backward copies an output gradient laid out
(batch, head, query, dim); ``nn.Bilinear``'s ``_trilinear`` runs a matrix product per output
feature into a temporary; ``EmbeddingBag``'s backward sorts the indices beside index-sized
buffers (in max mode it gathers the non-empty bags), its forward takes per-bag scratch:
neither depends on the indices' values, and the probe makes every bag non-empty (max
mode's gather at its largest).

Batch norm's backward (``batch_norm_backward_cpu_template``) allocates its input
gradient, and allocates it again, dropping the first, when input and output gradient
are both dense in one memory format (its ``all_contiguous`` path); a channels-last
MobileNet's first batch norm, whose gradient comes contiguous from global pooling, takes
the other path.

Losses computed in ATen's ``Loss.cpp`` take unreduced losses of the input's size
``n`` bytes as temporaries (measured allocation by allocation): MSE, smooth L1 and
Huber reduced, ``n``; binary cross-entropy with logits ``n`` (``2n`` reduced; with
``pos_weight``, its broadcast weight more); soft margin's backward ``2n``.

Upsampling in 1-D and 3-D, and bicubic in 2-D, computes indices and weights for each
output position of each spatial dimension. 2-D nearest and bilinear upsampling
(``F.interpolate``) of an input that is not channels-last takes temporaries of the
input's and the output's size, and its out=
overload computes into a temporary result too, then copies it into ``out``
(:func:`out_overload_copies`: the arena executor runs the functional op instead, so that
result is a fallback the plan places). UNet decoders and FPNs upsample so. Its backward
copies an output gradient dense in neither memory format (a channel slice of a
concatenation's gradient), and computes a channels-last input gradient in a contiguous
temporary. Layer norm copies an input that is not contiguous; softmax's out= overload
too.
MKL's inverse real FFT over several dimensions takes two input-sized temporaries; the
magnitude (``abs``) of a complex tensor, a spectrogram's, one of the input's size. The
matrix exponential (an orthogonal parametrization's) up to 12 matrices of its result's
size, by the norm of its input. ``kthvalue`` and ``median`` select in copies of their
input. Elementwise kernels copy an operand of another dtype than the common one into it
(a float times a bool mask, a bf16 residual added to fp32). ``affine_grid`` builds a
base grid of homogeneous coordinates, 1.5 times its 2-D result.
``repeat`` permutes its result's dimensions by index tensors, 32 bytes per dimension.
The embedding and its backward, and the softmax backwards, make strided arguments
contiguous; copying a transposed matrix into a contiguous one takes a 60x60 tile.

The rules were measured with torch.profiler (torch 2.15 and 2.11), allocation by
allocation (:func:`model_ir.testing.live_memory.exact_peak_allocated_during`). The plan
counts these temporaries beside the arena (:func:`model_ir.workspaces.cpu_kernel_temporaries`).
"""

from __future__ import annotations

import functools
import math

import torch
from torch import fx
from torch._prims_common import suggest_memory_format

from model_ir.torch.kernel_probes import known_temporaries
from model_ir.torch.node_args import arg_values

_aten = torch.ops.aten


def _bytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def kernel_temporaries(node: fx.Node) -> int | None:
    """Bytes the CPU kernel of ``node`` allocates and frees within its call (traced
    values in ``node.meta["val"]``); None for an op none is known of."""
    if node.target in MEASURABLE and measures(node.target, values := _schema_values(node)):
        known = known_temporaries(node.target, values)
        if known is not None:
            return known
    rule = _RULES.get(node.target)  # and for a call not measured (a model on meta, a call that failed)
    return rule(node) if rule is not None else None


def out_overload_copies(node: fx.Node) -> bool:
    """Whether the CPU kernel of ``node``'s out= overload takes temporaries the
    functional one does not: upsampling and MKL's FFTs compute into one, then copy, and
    upsampling's backward copies gradients laid out otherwise than the slot (the
    functional one follows the output gradient's layout); softmax's copies an input that
    is not contiguous (the functional kernel's temporaries are measured, :data:`MEASURED`)."""
    if node.target in _UPSAMPLE_2D_BACKWARD or node.target in _FFTS:
        return True
    if node.target in _SOFTMAXES:
        x = _first_input(node)
        return isinstance(x, torch.Tensor) and not x.is_contiguous()
    return node.target in _UPSAMPLE_2D and _upsample_copy(node) > 0


_SOFTMAXES = frozenset({_aten._softmax.default, _aten._log_softmax.default})
_UPSAMPLE_2D = frozenset({
    _aten.upsample_nearest2d.default, _aten.upsample_nearest2d.vec, _aten._upsample_nearest_exact2d.default,
    _aten._upsample_nearest_exact2d.vec, _aten.upsample_bilinear2d.default, _aten.upsample_bilinear2d.vec,
})
_UPSAMPLE_2D_BACKWARD = frozenset({_aten.upsample_nearest2d_backward.default,
                                   _aten._upsample_nearest_exact2d_backward.default,
                                   _aten.upsample_bilinear2d_backward.default})

#: Elementwise ops whose CPU TensorIterator casts each tensor operand of another dtype
#: than the common one to it first (:func:`_promoted_copies`): functional, in-place and
#: out= overloads (the arena executor calls the out= ones); the ``Scalar`` overloads wrap
#: their number as a tensor, which is cast too.
_PROMOTING = frozenset(
    getattr(getattr(_aten, name), overload)
    for names, overloads in (
        (("add", "sub", "mul", "div", "remainder", "fmod", "copysign", "xlogy", "lerp", "eq", "ne", "lt", "le", "gt",
          "ge"), ("Tensor", "out")),
        (("add_", "sub_", "mul_", "div_", "remainder_", "fmod_", "copysign_", "lerp_"), ("Tensor",)),
        (("add", "sub", "mul", "div", "rsub", "remainder", "fmod", "floor_divide", "bitwise_and", "bitwise_or",
          "bitwise_xor", "eq", "ne", "lt", "le", "gt", "ge", "add_", "sub_", "mul_", "div_", "pow"), ("Scalar",)),
        (("maximum", "minimum", "fmax", "fmin", "addcmul", "addcdiv", "logaddexp", "atan2", "hypot"), ("default", "out")),
        (("addcmul_", "addcdiv_", "atan2_", "hypot_"), ("default",)),
        (("pow",), ("Tensor_Tensor", "Tensor_Tensor_out")), (("where",), ("self", "self_out")),
        (("clamp",), ("Tensor", "Tensor_out")), (("div",), ("Tensor_mode", "out_mode")),
    )
    for name in names for overload in overloads if hasattr(getattr(_aten, name, None), overload)
)
#: their operands that are cast (``where``'s condition is not)
_PROMOTED_OPERANDS = ("self", "other", "tensor1", "tensor2", "exponent", "end", "weight", "min", "max")

#: Upsampling kernels that interpolate one spatial dimension at a time -> the input
#: positions (taps) each output position reads (:func:`_upsample_indices`)
_UPSAMPLE_TAPS = {getattr(getattr(_aten, name), overload): taps for name, taps in (
    ("upsample_linear1d", 2), ("upsample_nearest1d", 1), ("_upsample_nearest_exact1d", 1), ("upsample_bicubic2d", 4),
    ("upsample_trilinear3d", 2), ("upsample_nearest3d", 1), ("_upsample_nearest_exact3d", 1),
) for overload in ("default", "vec")}

_MATRIX_PRODUCTS = frozenset({_aten.mm.default, _aten.addmm.default})


def _gemm_copies(node: fx.Node) -> int:
    """The copies ``addmm_impl_cpu_`` (LinearAlgebra.cpp) makes before its BLAS call:
    each factor whose strides BLAS cannot take (no unit stride, or a leading dimension
    too short: an expanded gradient, the backward of ``out.sum()``) is cloned contiguous,
    and so is a result laid out so (never a traced one)."""
    v = _values(node)
    m1, m2 = (v["self"], v["mat2"]) if node.target is _aten.mm.default else (v["mat1"], v["mat2"])
    result = node.meta.get("val")
    if not all(isinstance(t, torch.Tensor) and t.dim() == 2 for t in (m1, m2, result)):
        return 0
    (rows, cols), (row_stride, col_stride) = result.shape, result.stride()
    total = 0
    if row_stride == 1 and (cols == 1 or col_stride >= max(1, rows)):
        swapped = False
    elif col_stride == 1 and (rows == 1 or row_stride >= max(1, cols)):
        swapped, m1, m2 = True, m2, m1
    else:
        swapped, total = False, _bytes(result)
    m, n = (cols, rows) if swapped else (rows, cols)
    k = m1.shape[0 if swapped else 1]
    inner, outer = (1, 0) if swapped else (0, 1)  # m1's and m2's stride indices BLAS reads

    def usable(t: torch.Tensor, first: int, second: int) -> bool:
        st = t.stride()
        return (st[inner] == 1 and st[outer] >= max(1, first)) or (st[outer] == 1 and st[inner] >= max(1, second))

    total += 0 if usable(m1, m, k) else _bytes(m1)
    total += 0 if usable(m2, k, n) else _bytes(m2)
    return total


_FFTS = frozenset({_aten._fft_r2c.default, _aten._fft_c2c.default, _aten._fft_c2r.default})


def _fft_temporaries(node: fx.Node) -> int | None:
    """MKL's FFTs (``SpectralOps.cpp``): a transform over the trailing dimensions takes
    none, except an inverse real one over several (``irfft2``, a Fourier neural
    operator's): while its result is made, the complex-to-complex pass over the leading
    dimensions and the copy MKL's complex-to-real pass overwrites, two of the input's
    size; over other dimensions a copy of the input. Measured allocation by allocation
    (:func:`model_ir.testing.live_memory.exact_peak_allocated_during`) for complex64;
    None for the rest, and without MKL (pocketfft)."""
    v = _values(node)
    x, dims = v["self"], v["dim"]
    if not isinstance(x, torch.Tensor) or not torch.backends.mkl.is_available():
        return None
    trailing = sorted(d % x.dim() for d in dims) == list(range(x.dim() - len(dims), x.dim()))
    if node.target is not _aten._fft_c2r.default:
        return 0 if trailing else _bytes(x)
    if not trailing or x.dtype != torch.complex64:
        return None
    return 2 * _bytes(x) if len(dims) > 1 else 0


def _layer_norm_copy(node: fx.Node) -> int:
    """Layer norm makes an input that is not contiguous contiguous (a transformer on a
    convolution's flattened, transposed map: Segformer, ViT's stem)."""
    x = _values(node)["input"]
    return _bytes(x) if isinstance(x, torch.Tensor) and not x.is_contiguous() else 0


def _first_input(node: fx.Node):
    """The traced value of ``node``'s first argument (``self`` or ``input`` by overload)."""
    return node.args[0].meta.get("val") if node.args and isinstance(node.args[0], fx.Node) else None


def _complex_abs(node: fx.Node) -> int:
    """``abs`` of a complex tensor (``unary_op_impl_with_complex_to_float_out``,
    UnaryOps.cpp) runs complex to complex into a temporary of the input's size, then copies
    its real part into the result; its out= overload too."""
    x = _first_input(node)
    return x.numel() * x.element_size() if isinstance(x, torch.Tensor) and x.is_complex() else 0


def _matrix_exp_temporaries(node: fx.Node) -> int:
    """``linalg.matrix_exp`` (``mexp``, LinearAlgebra.cpp; its backward runs it on a 2n x 2n
    block matrix) on one matrix picks the degree of its Taylor polynomial by the matrix's
    norm: at degree 18 (norms above about 0.1) it takes matrices of 12 times the result's
    bytes, fewer at lower degrees. The rule takes the most, since the norm of a weight
    changes between steps. A batch computes degree 18 for all, 10 times the result. Both
    take a few bytes per matrix more (norms, indices)."""
    x = _first_input(node)
    if not isinstance(x, torch.Tensor) or x.dim() < 2 or x.shape[-1] <= 1:
        return 0  # 1x1: exp
    batch = x.numel() // (x.shape[-1] * x.shape[-2])
    return (12 if batch == 1 else 10) * _bytes(x) + 32 * batch + 64


def _selection_copies(node: fx.Node) -> int:
    """Selection by quickselect works on copies: ``kthvalue`` copies the input's values
    and an int64 index per element (Sorting.cpp), whatever the dimension; ``median`` and
    ``nanmedian`` of all elements copy the values, along a dimension only when that
    dimension, moved last, is not contiguous."""
    values = _values(node)
    x = values.get("self")
    if not isinstance(x, torch.Tensor):
        return 0
    if node.target in (_aten.kthvalue.default, _aten.kthvalue.values):
        return x.numel() * (x.element_size() + 8)
    if "dim" in values and x.dim() > 0 and x.movedim(values["dim"], -1).is_contiguous():
        return 0
    return _bytes(x)


def _affine_grid_base(node: fx.Node) -> int:
    """``affine_grid_generator`` builds the base grid, every output position's homogeneous
    coordinates (``N x *spatial x (dims + 1)``), and multiplies it by theta
    (AffineGridGenerator.cpp). Without ``align_corners``, each axis's coordinates are
    scaled in three temporaries (and two numbers) before the result is allocated: they
    show where they outgrow it (a single row of positions). Exact within 4 bytes; its
    backward is traced as the ops it is made of."""
    values = _values(node)
    theta, size = values.get("theta"), values.get("size")
    if not isinstance(theta, torch.Tensor) or not isinstance(size, (list, tuple)) or len(size) < 3:
        return 0
    positions, item = math.prod(int(n) for n in (size[0], *size[2:])), theta.element_size()
    base, result = positions * (len(size) - 1) * item, positions * (len(size) - 2) * item
    longest = max(int(n) for n in size[2:])  # an axis of one position is not scaled
    scaling = 0 if values.get("align_corners") or longest < 2 else 3 * longest * item + 16
    return base + max(0, scaling - result)


def _upsample_copy(node: fx.Node) -> int:
    x = _first_input(node)
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.is_contiguous(memory_format=torch.channels_last):
        return 0
    return _bytes(x) + _bytes(node.meta["val"])


def _promoted_copies(node: fx.Node) -> int:
    """CPU elementwise kernels (TensorIterator's ``promote_inputs_to_common_dtype``) copy
    each operand whose dtype is not the common one into a tensor of the common dtype:
    a float times a bool mask, a bf16 residual added to an fp32 stream, integers divided.
    A number given for a tensor operand (``p.mul_(1 - lr * wd)`` in an optimizer, with
    its hyper-parameters traced as numbers) is first wrapped as a 0-dim float64 (int64,
    bool, complex128) tensor, cast too. The common dtype is the result's, or for a
    comparison the operands' promotion, a number's kind included (``torch.result_type``)."""
    values, out = _values(node), node.meta.get("val")
    operands = [v for k in _PROMOTED_OPERANDS if isinstance(v := values.get(k), torch.Tensor)]
    numbers = [n for k in _PROMOTED_OPERANDS if (n := _number_kind(values.get(k))) is not None]
    if not isinstance(out, torch.Tensor) or not operands:
        return 0
    common = out.dtype
    if common == torch.bool and node.target._schema.name.split("::")[-1].rstrip("_") in _COMPARISONS:
        common = functools.reduce(torch.promote_types, (t.dtype for t in operands))
        for number in numbers:
            common = torch.result_type(torch.empty((), dtype=common), number)
    copies = sum(t.numel() * common.itemsize for t in operands if t.dtype != common)
    wrapped = [_WRAPPED[type(n)] for n in numbers]
    return copies + sum(d.itemsize + (common.itemsize if d != common else 0) for d in wrapped)


_COMPARISONS = frozenset({"eq", "ne", "lt", "le", "gt", "ge"})
#: the dtype of the tensor a number is wrapped in (``wrapped_scalar_tensor``), by its kind
_WRAPPED = {bool: torch.bool, int: torch.int64, float: torch.float64, complex: torch.complex128}


def _number_kind(value) -> bool | int | float | complex | None:
    """A number of ``value``'s kind (symbolic ones included), None for anything else."""
    for symbolic, kind in ((torch.SymBool, bool), (torch.SymInt, int), (torch.SymFloat, float)):
        if isinstance(value, symbolic):
            return kind(1)
    return value if isinstance(value, (bool, int, float, complex)) else None


def _upsample_indices(node: fx.Node) -> int:
    """Upsampling that interpolates one spatial dimension at a time
    (``compute_indices_weights_*``, UpSampleKernel.cpp) computes, for each output position
    of each dimension, an int64 index and a weight of the input's dtype per tap."""
    x, out = _first_input(node), node.meta.get("val")
    if not isinstance(x, torch.Tensor) or not isinstance(out, torch.Tensor):
        return 0
    return sum(out.shape[2:]) * _UPSAMPLE_TAPS[node.target] * (8 + x.element_size())


def _upsample_backward_copies(node: fx.Node) -> int:
    """The functional backward copies an output gradient dense in neither memory format
    (a channel slice of a concatenation's gradient: FPN and Segformer decoders), and
    computes a channels-last input gradient in a contiguous temporary."""
    grad, result = _first_input(node), node.meta.get("val")
    if not isinstance(grad, torch.Tensor) or grad.dim() != 4 or _dense(grad):
        return 0
    return _bytes(grad) + (_bytes(result) if suggest_memory_format(grad) == torch.channels_last else 0)


#: ATen's CPU copy of a transposed matrix into a contiguous one goes through a tile
#: of this many elements (``copy_same_type_transpose_``, ``Copy.cpp``).
_TRANSPOSE_TILE = 60 * 60


def _transpose_tile(src, dst_dtype=None) -> int:
    """Bytes of the tile a contiguous copy of ``src`` takes: a transposed contiguous
    matrix of at least one tile's elements, copied into its own dtype."""
    if not isinstance(src, torch.Tensor) or src.dim() != 2 or src.numel() < _TRANSPOSE_TILE \
            or src.stride() != (1, src.size(0)) or (dst_dtype is not None and dst_dtype != src.dtype):
        return 0
    return _TRANSPOSE_TILE * src.element_size()


def _contiguous_copies(*tensors) -> int:
    """Peak bytes of making each of ``tensors`` contiguous in turn, the copies kept:
    each that is not contiguous is copied (through a tile, :func:`_transpose_tile`)."""
    held = peak = 0
    for t in tensors:
        if isinstance(t, torch.Tensor) and not t.is_contiguous():
            peak = max(peak, held + _bytes(t) + _transpose_tile(t))
            held += _bytes(t)
    return peak


def _copy_tile(node: fx.Node) -> int:
    """A copy (``clone``, ``_to_copy``, ``copy_``) of a transposed matrix into a
    contiguous result of its dtype takes the tile."""
    v, result = _values(node), node.meta.get("val")
    src = v.get("src", v.get("self"))
    if not isinstance(result, torch.Tensor) or not result.is_contiguous():
        return 0
    return _transpose_tile(src, result.dtype)


def _embedding_copies(node: fx.Node) -> int:
    """``embedding`` flattens strided indices into a copy (through the tile), which
    ``index_select`` reads as it fills the result."""
    indices, result = _values(node)["indices"], node.meta.get("val")
    if not isinstance(indices, torch.Tensor) or indices.is_contiguous() or not isinstance(result, torch.Tensor):
        return 0
    return _bytes(indices) + max(_transpose_tile(indices) - _bytes(result), 0)


def _embedding_backward_copies(node: fx.Node) -> int:
    """``embedding_dense_backward_cpu`` makes its indices and then its output gradient
    contiguous (T5's relative-position bias: a permuted gradient); nothing else, even
    with ``scale_grad_by_freq`` (measured at 15 to 3M elements, int32 and int64 indices)."""
    v = _values(node)
    return _contiguous_copies(v["indices"], v["grad_output"])


def _softmax_backward_copies(node: fx.Node) -> int:
    """The softmax backwards make the output gradient (expanded after ``out.sum()``)
    and the output contiguous."""
    v = _values(node)
    return _contiguous_copies(v["grad_output"], v["output"])


#: Loss kernels' temporaries: (unreduced losses, more when reduced), in inputs' sizes.
_LOSS_TEMPORARIES = {
    _aten.mse_loss.default: (0, 1),
    _aten.smooth_l1_loss.default: (0, 1),
    _aten.huber_loss.default: (0, 1),
    _aten.binary_cross_entropy_with_logits.default: (1, 1),
    _aten.soft_margin_loss_backward.default: (2, 0),
}


def _loss_temporaries(node: fx.Node) -> int:
    v = _values(node)
    x, target = v["self"], v["target"]
    if not (isinstance(x, torch.Tensor) and isinstance(target, torch.Tensor)):
        return 0
    n = math.prod(torch.broadcast_shapes(x.shape, target.shape)) * x.element_size()
    unreduced, reduced = _LOSS_TEMPORARIES[node.target]
    total = (unreduced + (reduced if v.get("reduction", 1) else 0)) * n  # the schemas default to mean
    pos_weight = v.get("pos_weight")
    if isinstance(pos_weight, torch.Tensor):  # pos_weight - 1
        total += _bytes(pos_weight)
    return total


def _values(node: fx.Node) -> dict:
    """``node``'s arguments by schema name, traced values for its input nodes."""
    return {arg.name: fx.node.map_arg(v, lambda n: n.meta.get("val"))
            for _, arg, v in arg_values(node, node.target._schema)}


def _dense(t: torch.Tensor) -> bool:
    """Dense in the contiguous or the channels-last memory format (``is_contiguous`` of
    batch_norm_backward_cpu_template)."""
    channels_last = {4: torch.channels_last, 5: torch.channels_last_3d}.get(t.dim())
    return t.is_contiguous() or (channels_last is not None and t.is_contiguous(memory_format=channels_last))


#: Reductions whose CPU kernel casts its input to the result's dtype first when the two differ
#: (a bool or integer input summed as int64, ``sum(dtype=)``): a copy of the input in that dtype.
_CASTING_REDUCTIONS = frozenset({
    _aten.sum.default, _aten.sum.dim_IntList, _aten.sum.IntList_out, _aten.cumsum.default, _aten.cumsum.out,
    _aten.cumprod.default, _aten.cumprod.out, _aten.prod.default, _aten.prod.dim_int, _aten.prod.int_out,
})


def _reduction_cast(node: fx.Node) -> int:
    """A reduction of a tensor of another dtype than its result (``(mask).sum()``: bool to
    int64; ``cumsum`` of int32 position ids) reduces a copy of its input cast to the result's
    dtype (measured: ``sum`` of a 64x64 bool mask takes 32 KiB beside its 512-byte result)."""
    x, out = _first_input(node), node.meta.get("val")
    if isinstance(out, (tuple, list)):
        out = out[0]
    if not (isinstance(x, torch.Tensor) and isinstance(out, torch.Tensor)) or x.dtype == out.dtype:
        return 0
    return x.numel() * out.element_size()


def _count_nonzero_copies(node: fx.Node) -> int:
    """``count_nonzero`` over dimensions sums ``self != 0`` (a bool mask, unless ``self``
    is one) as int64, a copy of the mask (measured; over every dimension it has a kernel
    of its own, which takes none)."""
    x = _first_input(node)
    if not isinstance(x, torch.Tensor):
        return 0
    return x.numel() * (8 + (x.dtype != torch.bool))


def _repeat_indices(node: fx.Node) -> int:
    """``repeat`` computes the permutation of its result's dimensions in small int64
    tensors (two ``arange``s, their sum, a ``cat``): 32 bytes per dimension, alive with
    its result (measured for 1 to 4 dimensions)."""
    return 32 * node.meta["val"].dim()


def _batch_norm_backward(node: fx.Node) -> int:
    v = _values(node)
    grad_out, x = v["grad_out"], v["input"]
    if not (isinstance(x, torch.Tensor) and isinstance(grad_out, torch.Tensor)) or x.dim() < 2 \
            or not v["output_mask"][0]:
        return 0
    same = _dense(x) and _dense(grad_out) and suggest_memory_format(x) == suggest_memory_format(grad_out)
    return _bytes(x) if same else 0


#: Ops whose temporaries are measured (:mod:`model_ir.torch.kernel_probes`): convolutions
#: and oneDNN's LSTM layers; batch norm (training statistics; the backward of a map whose
#: layout is both formats, a 1x1 one, too) and layer norm's backward, which reduce in
#: per-thread buffers; softmaxes over a dimension other than the last, and attention's
#: ``_safe_softmax`` (a mask of every score); roll over several dimensions (one roll
#: after another: Swin's shifted windows); GELU's backward of a gradient laid out
#: otherwise than its input (two copies); sort; CPU flash attention (per-thread tiles;
#: keys and values packed in bf16 and fp16). Their rules, if any, stand for the rest
#: (:func:`kernel_temporaries`).
MEASURED = frozenset({_aten.convolution.default, _aten.convolution_backward.default,
                      _aten.mkldnn_rnn_layer.default, _aten.mkldnn_rnn_layer_backward.default,
                      _aten.native_batch_norm.default, _aten.native_batch_norm_backward.default,
                      _aten.native_layer_norm_backward.default,
                      _aten._softmax.default, _aten._log_softmax.default, _aten._safe_softmax.default,
                      _aten.roll.default, _aten.gelu_backward.default, _aten.sort.default,
                      _aten._embedding_bag.default, _aten._embedding_bag_forward_only.default,
                      _aten._embedding_bag_backward.default, _aten._trilinear.default,
                      _aten._scaled_dot_product_flash_attention_for_cpu.default,
                      _aten._scaled_dot_product_flash_attention_for_cpu_backward.default,
                      # composite kernels that allocate and free inside their call: logsumexp's
                      # max/shifted copy, scatter_reduce's counts and copies, LAPACK's workspaces
                      _aten.logsumexp.default, _aten.scatter_reduce.two, _aten.linalg_inv_ex.default,
                      _aten._linalg_svd.default, _aten.linalg_pinv.atol_rtol_tensor,
                      _aten.linalg_pinv.atol_rtol_float,
                      # tril/triu copy a non-contiguous input (an expanded sum() gradient) first
                      _aten.tril.default, _aten.triu.default, _aten.masked_scatter_backward.default})
#: Ops measured in reduced precision (bf16, fp16), where oneDNN's matrix products convert
#: and reorder their operands and reductions accumulate in fp32; rules hold in fp32 and fp64.
_MEASURED_REDUCED = frozenset({*_MATRIX_PRODUCTS, _aten.bmm.default, _aten.mean.dim})
MEASURABLE = MEASURED | _MEASURED_REDUCED


def measures(func, values) -> bool:
    """Whether capture measures the temporaries of op ``func`` on argument ``values``: CPU
    tensors only (a CUDA capture never runs its kernels on the CPU)."""
    tensors = [v for v in values if isinstance(v, torch.Tensor)]
    if not tensors or any(t.device.type != "cpu" for t in tensors):
        return False
    return func in MEASURED or (func in _MEASURED_REDUCED and any(t.dtype in (torch.bfloat16, torch.float16)
                                                                  for t in tensors))


def measured_calls(nodes) -> list[tuple[object, list]]:
    """``(op, argument values)`` of each of ``nodes`` whose temporaries are measured, for
    :func:`model_ir.torch.kernel_probes.measure_calls`."""
    calls = [(n.target, _schema_values(n)) for n in nodes if n.op == "call_function" and n.target in MEASURABLE]
    return [(func, values) for func, values in calls if measures(func, values)]


def _schema_values(node: fx.Node) -> list:
    values = _values(node)
    return [values.get(a.name, a.default_value) for a in node.target._schema.arguments]


#: Each op's rule (:func:`kernel_temporaries`).
_RULES = {target: rule for targets, rule in (
    ({_aten.native_batch_norm_backward.default}, _batch_norm_backward),
    (_LOSS_TEMPORARIES, _loss_temporaries),
    (_UPSAMPLE_2D, _upsample_copy),
    (_UPSAMPLE_2D_BACKWARD, _upsample_backward_copies),
    (_UPSAMPLE_TAPS, _upsample_indices),
    (_PROMOTING, _promoted_copies),
    (_MATRIX_PRODUCTS, _gemm_copies),
    (_FFTS, _fft_temporaries),
    ({_aten.abs.default}, _complex_abs),
    ({_aten.affine_grid_generator.default}, _affine_grid_base),
    ({_aten.linalg_matrix_exp.default}, _matrix_exp_temporaries),
    ({_aten.kthvalue.default, _aten.kthvalue.values, _aten.median.default, _aten.median.dim, _aten.median.dim_values,
      _aten.nanmedian.default, _aten.nanmedian.dim, _aten.nanmedian.dim_values}, _selection_copies),
    ({_aten.native_layer_norm.default}, _layer_norm_copy),
    ({_aten.embedding.default}, _embedding_copies),
    ({_aten.embedding_dense_backward.default}, _embedding_backward_copies),
    ({_aten._softmax_backward_data.default, _aten._log_softmax_backward_data.default}, _softmax_backward_copies),
    ({_aten.clone.default, _aten._to_copy.default, _aten.copy_.default, _aten.copy.default}, _copy_tile),
    ({_aten.repeat.default}, _repeat_indices),
    (_CASTING_REDUCTIONS, _reduction_cast),
    ({_aten.count_nonzero.dim_IntList}, _count_nonzero_copies),
) for target in targets}
