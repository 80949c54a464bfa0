"""The strides and dtypes eager kernels give their results, where fake tensors differ.

Along a dimension of size 1 a tensor's stride is a free choice: ``(N, C, 1, 1)`` after
global pooling or in a squeeze-excite block is both contiguous and channels-last
contiguous. Eager kernels and the meta functions that fake tensors run choose
differently there: TensorIterator's fast path and CPU batch and layer norm make such a
result plainly contiguous, where the meta functions keep the input's channels-last
strides (and the other way round for a batch-norm backward whose gradient and input
disagree). The bytes are the same; what differs is how later kernels read them: a
convolution or batch-norm backward given channels-last strides takes its channels-last
path and sums in another order. The arena executor hands every kernel an output slot
with the traced strides, so ResNet, MobileNet and EfficientNet trained channels-last
on 32x32 images drifted from eager from their second step (last bits).

:class:`EagerStridesFakeMode`, the fake mode capture traces with, asks the real kernel:
where a fake result has a dimension of size 1, it runs the op on tiny CPU stand-ins
(every dimension longer than 1 cut to 2, strides in the same order) and gives the
result the strides the kernel chose. Only ops whose tensors all shrink alike qualify
(elementwise ops, batch norm); on another device than the CPU, only the elementwise
ones, whose stride choice (TensorIterator's) is the same on every device; seeded random
ops never (a real draw would move the generator). The same stand-ins run where an op's
floating-point inputs mix dtypes (autocast's bf16 activations with fp32 batch-norm
weights: CPU batch norm saves fp32 statistics where the meta function says bf16, so the
plan counted half their bytes), and results get eager's dtype too. And where arguments
shaped as a result come in different memory formats (a contiguous gradient from global
pooling meets a channels-last activation in ReLU6's backward): TensorIterator follows
the first, where the meta functions of ``hardtanh_backward``, ``hardswish_backward``,
``elu_backward``, ``softplus_backward``, ... follow the activation.

Where a tensor feeds several ops, eager's autograd engine sums the gradients reaching
it, often in place into the first (:mod:`model_ir.torch.gradient_accumulation`): that
sum is laid out as that gradient, where TensorIterator's out-of-place sum may choose
other strides. Capture traces once, marks the sums eager runs in place, and where one
was laid out otherwise traces again with :attr:`EagerStridesFakeMode.in_place_sums`.

Sizes too, where the meta function cannot know them: oneDNN's LSTM layer (CPU) returns,
in training, the workspace its backward reads, sized by oneDNN (page-rounded parts that
grow with the sequence and batch lengths and the larger of the input and hidden sizes);
its meta kernel says 0 bytes, so the plan left it out and the arena executor kept it
outside the arena, with a warning. Capture asks oneDNN: the layer runs once on the
model's own weights (:attr:`EagerStridesFakeMode.real_tensors`) and zeros of the traced
shapes for the rest (:func:`onednn_workspace_bytes`; one layer's activations for a
moment, once per distinct layer; zero weights too where the model has none, meta).
Its backward returns the bias gradient twice (for ``bias_ih`` and ``bias_hh``), two
storages where the meta kernel returns one tensor twice (on a miss of FakeTensorMode's
cache; a hit makes each result anew): eager's gradient accumulation then took one and
copied the other, a copy eager does not make, and the real kernel's second bias gradient
was outside the plan (an LSTM's reorder step measured 492 bytes above its plan, torch
2.11 and 2.15): capture gives it its own storage.
And storage: CPU's MSE, smooth L1, binary cross-entropy and soft margin losses, reduced
(mean or sum), return their 0-dim loss on a storage that holds the unreduced loss (the
kernel computes it there, then reduces in place): the step's loss holds that many bytes
(:data:`_REDUCED_IN_PLACE`), measured on torch 2.11 and 2.15.
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import torch
from torch._prims_common import is_non_overlapping_and_dense_or_false, make_contiguous_strides_for
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode, unset_fake_temporarily
from torch.utils import _pytree as pytree
from torch.utils.weak import WeakIdKeyDictionary

from model_ir.torch.cpu_temporaries import MEASURABLE, measures
from model_ir.torch.kernel_probes import measured_temporaries, real_or_zeros, schema_values

_aten = torch.ops.aten

#: Layer norm's first result (the output, the input's gradient) is contiguous whatever
#: its input's strides, and its statistics are fp32 for a bf16/fp16 input with fp32
#: weights (CPU, layer_norm.cpp), where the meta function keeps the input's strides and
#: dtype: rules, as its shape argument keeps stand-ins from being cut.
_LAYER_NORMS = frozenset({_aten.native_layer_norm.default, _aten.native_layer_norm_backward.default})


#: Losses whose reduced (mean or sum) result stays on a storage of the unreduced loss (CPU).
_REDUCED_IN_PLACE = frozenset({_aten.mse_loss.default, _aten.smooth_l1_loss.default,
                               _aten.binary_cross_entropy.default, _aten.soft_margin_loss.default})


#: Grouped matrix products (Hugging Face's mixture-of-experts layers): torch 2.11's meta
#: function takes bf16 only, where its CPU kernel takes every float dtype.
_GROUPED_MM = getattr(getattr(_aten, "_grouped_mm", None), "default", None)

#: oneDNN's LSTM layer and the position of the workspace among its results.
_ONEDNN_RNN, _WORKSPACE = _aten.mkldnn_rnn_layer.default, 3
#: Its backward and the positions of its two bias gradients (``bias_ih``'s, ``bias_hh``'s).
_ONEDNN_RNN_BACKWARD, _BIAS_GRADS = _aten.mkldnn_rnn_layer_backward.default, (3, 4)


class _Zeros(NamedTuple):
    shape: tuple[int, ...]
    dtype: torch.dtype


#: Workspace bytes by the layer's argument shapes and flags (the size depends on nothing else).
_workspace_sizes: dict[tuple, int] = {}


def onednn_workspace_bytes(args, real=None) -> int:
    """Bytes of the workspace oneDNN's LSTM layer returns in training for
    ``aten.mkldnn_rnn_layer`` arguments ``args`` (tensors, fake or real; 0 if this build
    returns none). ``real`` maps a fake argument to the real tensor it stands for (the
    model's weights): the layer runs on those, so that sizing allocates no copy of them."""
    key = tuple(_Zeros(tuple(a.shape), a.dtype) if isinstance(a, torch.Tensor) else tuple(a) if isinstance(a, list)
                else a for a in args)
    if key not in _workspace_sizes:
        _workspace_sizes[key] = _workspace_bytes(args, real if real is not None else {})
    return _workspace_sizes[key]


def _workspace_bytes(args, real) -> int:
    # With grad enabled, as eager's forward runs it: under no_grad it returns no workspace.
    with unset_fake_temporarily(), torch.enable_grad(), torch.autocast("cpu", enabled=False):
        workspace = _ONEDNN_RNN(*[real_or_zeros(a, real) for a in args])[_WORKSPACE]
    return workspace.numel() * workspace.element_size() if isinstance(workspace, torch.Tensor) else 0


def _qualifies(func, device_type: str) -> bool:
    schema = func._schema
    if schema.is_mutable or any(r.alias_info is not None for r in schema.returns):
        return False
    if torch.Tag.nondeterministic_seeded in func.tags or any("Generator" in str(a.type) for a in schema.arguments):
        return False
    if any("list[" in str(a.type).lower() and "int" in str(a.type).lower() for a in schema.arguments):
        return False  # shapes, dimensions, kernel sizes: cut tensors would not fit them
    return device_type == "cpu" or torch.Tag.pointwise in func.tags


def _cut(shape) -> tuple[int, ...]:
    return tuple(min(int(s), 2) for s in shape)


def _stand_in(t: torch.Tensor) -> torch.Tensor | None:
    """A CPU tensor shaped ``_cut(t.shape)`` whose strides are ordered as ``t``'s (None:
    ``t`` overlaps itself or has gaps, which a cut cannot keep)."""
    expanded = [d for d in range(t.dim()) if t.stride(d) == 0 and t.shape[d] > 1]
    if not expanded and not is_non_overlapping_and_dense_or_false(t):
        return None
    shape = _cut(t.shape)
    strides = tuple(
        0 if d in expanded else math.prod(shape[e] for e in range(t.dim())
                                          if e not in expanded and t.stride(e) < t.stride(d))
        for d in range(t.dim()))
    extent = 1 + sum((s - 1) * st for s, st in zip(shape, strides))
    # Ones where values are data, zeros where they may be indices (always in range).
    fill = torch.ones if t.is_floating_point() or t.is_complex() else torch.zeros
    return fill(extent, dtype=t.dtype).as_strided(shape, strides)


def _has_free_strides(t) -> bool:
    return isinstance(t, torch.Tensor) and t.numel() > 1 and 1 in t.shape


def _dimension_order(t: torch.Tensor) -> tuple[int, ...]:
    """``t``'s dimensions longer than 1, outermost (largest stride) first."""
    return tuple(sorted((d for d in range(t.dim()) if t.shape[d] > 1), key=lambda d: (-t.stride(d), d)))


def _mixed_layouts(flat, results) -> bool:
    """Arguments shaped as a result but laid out in different dimension orders (a
    gradient in one memory format, the activation in another): eager's kernel follows
    one of them, TensorIterator's choice, where some meta functions follow the other
    (``hardtanh_backward``, ``hardswish_backward``, ``elu_backward``, ...)."""
    shapes = {t.shape for t in results if t.dim() > 1}
    return len({_dimension_order(t) for t in flat if isinstance(t, torch.Tensor) and t.shape in shapes}) > 1


def _mixed_floats(flat) -> bool:
    """Floating-point tensors of more than one dtype among the flattened arguments
    (autocast's bf16 activations with fp32 batch-norm weights)."""
    return len({t.dtype for t in flat if isinstance(t, torch.Tensor) and t.is_floating_point()}) > 1


#: A symbolic number's kind and the plain number of that kind a stand-in call takes for it.
_SYMBOLIC_NUMBERS = ((torch.SymBool, True), (torch.SymInt, 1), (torch.SymFloat, 1.0))


def _plain_number(x):
    """``x``, or for a symbolic number (a lifted hyper-parameter or step count read with
    ``.item()``: ``alpha=weight_decay`` of a foreach optimizer's ``_foreach_add``, Adagrad's
    ``-lr / (1 + (step - 1) * lr_decay)`` list) a plain number of its kind. The real kernel
    would read the symbol's value, and reading it pins the captured value as a guard of the
    step (``Eq(weight_decay, 0.001)``): capture then held the hyper-parameters as constants,
    and a scheduler's change, or Adagrad's next step count, needed a new plan. A result's
    dtype and strides follow the number's kind only; a shape that follows its value differs
    from the traced one and is dropped below."""
    for symbolic, plain in _SYMBOLIC_NUMBERS:
        if isinstance(x, symbolic):
            return plain
    return x


def eager_results(func, args, kwargs, out) -> list[tuple[int, torch.dtype, tuple[int, ...]]]:
    """``(k, dtype, strides)`` for each tensor result of ``func(*args, **kwargs)`` (the
    ``k``-th of ``out``'s tensors) to which eager's kernel gives another dtype or layout
    than its fake tensor has (see the module's docstring)."""
    results = [t for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]
    if not results:
        return []
    device = results[0].device.type
    flat, spec = pytree.tree_flatten((args, kwargs))
    mixed = _mixed_floats(flat)
    if func in _LAYER_NORMS:
        return _layer_norm_results(func, out, mixed) if device == "cpu" else []
    layouts = _mixed_layouts(flat, results)
    if not (mixed or layouts or any(_has_free_strides(t) for t in results)):
        return []
    if not _qualifies(func, device):
        return []
    stand_ins = []
    for x in flat:
        if isinstance(x, torch.Tensor):
            x = _stand_in(x)
            if x is None:
                return []
        stand_ins.append(_plain_number(x))
    stand_args, stand_kwargs = pytree.tree_unflatten(stand_ins, spec)
    try:
        # The traced op already has autocast's dtypes; a kernel's warning is the trace's to give.
        with unset_fake_temporarily(), torch.no_grad(), torch.autocast("cpu", enabled=False), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")
            real = [t for t in pytree.tree_leaves(func(*stand_args, **stand_kwargs)) if isinstance(t, torch.Tensor)]
    except Exception:  # noqa: BLE001 - an op the stand-ins do not suit keeps the fake results
        return []
    if len(real) != len(results) or any(r.shape != _cut(t.shape) for r, t in zip(real, results)):
        return []
    changed = []
    for k, (r, t) in enumerate(zip(real, results)):
        strides = t.stride()
        if ((layouts or _has_free_strides(t)) and is_non_overlapping_and_dense_or_false(t)
                and is_non_overlapping_and_dense_or_false(r)):
            # The real result's dimension order, back on the full sizes.
            wanted = tuple(math.prod(t.shape[e] for e in range(t.dim()) if r.stride(e) < r.stride(d))
                           for d in range(t.dim()))
            if _dense(t.shape, wanted):
                strides = wanted
        if strides != t.stride() or r.dtype != t.dtype:
            changed.append((k, r.dtype, strides))
    return changed


def _layer_norm_results(func, out, mixed: bool) -> list[tuple[int, torch.dtype, tuple[int, ...]]]:
    changed = []
    first = out[0]  # the output, or the input's gradient (None when not asked for)
    if isinstance(first, torch.Tensor) and first.stride() != make_contiguous_strides_for(first.shape):
        changed.append((0, first.dtype, make_contiguous_strides_for(first.shape)))
    if func is _aten.native_layer_norm.default and mixed:
        changed += [(k, torch.float32, out[k].stride()) for k in (1, 2)
                    if out[k].dtype in (torch.bfloat16, torch.float16)]
    return changed


def _dense(shape, strides) -> bool:
    with unset_fake_temporarily():
        return is_non_overlapping_and_dense_or_false(torch.empty_strided(shape, strides, device="meta"))


class EagerStridesFakeMode(FakeTensorMode):
    """A fake mode whose results have the strides eager's kernels give them where the
    meta functions choose others, and the dtypes (:func:`eager_results`)."""

    #: Ordinals, in trace order, of the autograd engine's gradient sums eager runs in
    #: place: laid out as their first gradient.
    in_place_sums: frozenset[int] = frozenset()
    #: Whether the engine is summing gradients now (set by
    #: :func:`model_ir.torch.gradient_accumulation.marking_accumulations`), and how many
    #: sums it has traced.
    summing: bool = False
    sums: int = 0
    #: Whether the CPU tensors stand for CUDA ones (:func:`model_ir.torch.cuda_kernels.emulate_cuda`):
    #: the CPU kernels' storage sizes are not CUDA's.
    emulating_cuda: bool = False
    #: Whether to measure the CPU kernels' temporaries (:attr:`model_ir.torch.tracing.TracedStep.measures_kernels`).
    measures_kernels: bool = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        #: The real tensor each fake made by :meth:`fake_of` stands for.
        self.real_tensors = WeakIdKeyDictionary()
        #: id -> (real tensor, its value before the trace wrote it): see :meth:`restore_real_writes`.
        self.real_writes: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def _save_real_writes(self, func, args, kwargs) -> None:
        """An op on real tensors alone runs for real in a fake mode: a teacher's BatchNorm
        ``num_batches_tracked.add_(1)`` counted a batch at every capture. Save each real
        tensor such an op writes, once, for :meth:`restore_real_writes`."""
        for a, v in zip(func._schema.arguments, schema_values(func, args, kwargs)):
            if (a.alias_info is not None and a.alias_info.is_write and isinstance(v, torch.Tensor)
                    and not isinstance(v, FakeTensor) and id(v) not in self.real_writes):
                with unset_fake_temporarily(), torch.no_grad():
                    self.real_writes[id(v)] = (v, v.detach().clone())

    def restore_real_writes(self) -> None:
        """Put back the values the trace wrote into real tensors (after the trace)."""
        with unset_fake_temporarily(), torch.no_grad():
            for t, before in self.real_writes.values():
                t.copy_(before)
        self.real_writes.clear()

    def fake_of(self, t: torch.Tensor) -> torch.Tensor:
        """``t``'s fake (``from_tensor``, static shapes), remembering ``t`` behind it."""
        f = self.from_tensor(t, static_shapes=True)
        self.real_tensors[f] = t
        return f

    def dispatch(self, func, types, args=(), kwargs=None):
        if func is _GROUPED_MM:  # never None: func is an operator
            return self._grouped_mm(func, types, args, kwargs or {})
        if func._schema.is_mutable:
            self._save_real_writes(func, args, kwargs or {})
        out = super().dispatch(func, types, args, kwargs)
        if func in MEASURABLE and self.measures_kernels:
            values = schema_values(func, args, kwargs or {})
            if measures(func, values):  # measured now, while the model's weights are at hand (no copy of them)
                measured_temporaries(func, values, self.real_tensors)
        if func is _ONEDNN_RNN:
            return self._sized_workspace(types, args, kwargs or {}, out)
        if func is _ONEDNN_RNN_BACKWARD:
            return self._own_bias_grads(types, out)
        if func in _REDUCED_IN_PLACE:
            return self._unreduced_storage(func, types, args, kwargs or {}, out)
        if self.summing and func is _aten.add.Tensor:
            self.sums += 1
            if self.sums - 1 in self.in_place_sums:  # eager's old.add_(new): old's layout
                first = args[0]
                if (first.shape == out.shape and first.dtype == out.dtype
                        and is_non_overlapping_and_dense_or_false(first) and first.stride() != out.stride()):
                    self._restride(types, out, first.stride())
                return out
        changes = eager_results(func, args, kwargs or {}, out)
        if not changes:
            return out
        leaves, spec = pytree.tree_flatten(out)
        positions = [i for i, x in enumerate(leaves) if isinstance(x, torch.Tensor)]
        for k, dtype, strides in changes:
            t = leaves[positions[k]]
            if dtype == t.dtype:
                self._restride(types, t, strides)
            else:  # a fresh result (qualifying ops alias nothing): made anew with eager's dtype
                leaves[positions[k]] = super().dispatch(_aten.empty_strided.default, types, (t.shape, strides),
                                                        {"dtype": dtype, "device": t.device})
        return pytree.tree_unflatten(leaves, spec)

    def _grouped_mm(self, func, types, args, kwargs):
        """A grouped product of float operands the meta function refuses (torch 2.11: bf16
        only; the CPU kernel takes them): its shape from bf16 stand-ins, contiguous in the
        operands' dtype (``out_dtype``'s if given), as the CPU kernel makes it."""
        try:
            return super().dispatch(func, types, args, kwargs)
        except RuntimeError as e:
            a, b = args[:2]
            if "BF16" not in str(e) or a.device.type != "cpu" or not (a.is_floating_point() and b.is_floating_point()):
                raise
        stand_ins = [super(EagerStridesFakeMode, self).dispatch(  # (a comprehension has no bare super())
            _aten.empty_strided.default, types, (t.shape, t.stride()), {"dtype": torch.bfloat16, "device": t.device})
            for t in (a, b)]
        out_dtype = args[4] if len(args) > 4 else kwargs.get("out_dtype")
        shaped = super().dispatch(func, types, (*stand_ins, *args[2:4]), {**kwargs, "out_dtype": None})
        dtype = out_dtype or a.dtype
        return super().dispatch(_aten.empty.memory_format, types, (shaped.shape,), {"dtype": dtype, "device": a.device})

    def _sized_workspace(self, types, args, kwargs, out):
        workspace = out[_WORKSPACE]
        schema = _ONEDNN_RNN._schema
        values = list(args) + [kwargs[a.name] for a in schema.arguments[len(args):] if a.name in kwargs]
        if (not isinstance(workspace, torch.Tensor) or workspace.numel() or workspace.device.type != "cpu"
                or len(values) != len(schema.arguments) or not values[-1]):  # none, sized already, or eval
            return out
        nbytes = onednn_workspace_bytes(values, self.real_tensors)
        if not nbytes:
            return out
        sized = super().dispatch(_aten.empty.memory_format, types, ((nbytes,),),
                                 {"dtype": torch.uint8, "device": workspace.device})
        return (*out[:_WORKSPACE], sized, *out[_WORKSPACE + 1:])

    def _own_bias_grads(self, types, out):
        first, second = (out[i] for i in _BIAS_GRADS)
        if not (isinstance(first, torch.Tensor) and isinstance(second, torch.Tensor) and second.device.type == "cpu"
                and first.untyped_storage()._cdata == second.untyped_storage()._cdata):
            return out
        own = super().dispatch(_aten.empty_strided.default, types, (second.shape, second.stride()),
                               {"dtype": second.dtype, "device": second.device})
        return (*out[:_BIAS_GRADS[1]], own, *out[_BIAS_GRADS[1] + 1:])

    def _unreduced_storage(self, func, types, args, kwargs, out):
        schema = func._schema
        values = {a.name: v for a, v in zip(schema.arguments, args)} | kwargs
        self_, target = values.get("self"), values.get("target")
        if (self.emulating_cuda or not isinstance(out, torch.Tensor) or out.device.type != "cpu" or out.dim()
                or values.get("reduction", 1) == 0 or not isinstance(self_, torch.Tensor)):
            return out
        shape = torch.broadcast_shapes(self_.shape, target.shape) if isinstance(target, torch.Tensor) else self_.shape
        numel = math.prod(shape)
        if numel <= 1:
            return out
        unreduced = super().dispatch(_aten.empty.memory_format, types, ((numel,),),
                                     {"dtype": out.dtype, "device": out.device})
        return super().dispatch(_aten.as_strided.default, types, (unreduced, (), ()), {})

    def _restride(self, types, t: torch.Tensor, strides) -> None:
        super().dispatch(_aten.as_strided_.default, types, (t, t.shape, tuple(strides), t.storage_offset()), {})
