"""How the arena executor runs each op that allocates: the decision, apart from codegen.

An op whose results are fresh tensors is written into its arena slots in one of three
ways (``program`` emits the code):

- ``rewrite``: a hand-written slot write (:data:`model_runtime.slot_writes.REWRITES`);
- ``foreach``: a functional ``_foreach_*`` op as ``_foreach_copy_`` then its in-place twin;
- ``out``: its ``out=`` overload (:func:`model_runtime.out_variants.find_out_variant`).

Anything else is a *fallback*: the op runs as in eager PyTorch, and its fresh results
live where PyTorch's caching allocator puts them until their last use. The plan knows
these buffers before placing (:func:`fallback_buffers`): they are kept out of the
arena, and their memory is reported (``model_runtime.planning``), so nothing is
allocated behind the plan's back and nothing is copied.

Decided here because the plan needs it before the program exists: the arena holds only
what the executor can really put there, on that device.
"""

from __future__ import annotations

import attrs
import torch
from torch import fx

from model_ir.torch.cpu_temporaries import out_overload_copies
from model_ir.torch.cuda_kernels import HOST_RESULTS
from model_ir.workspaces import CPU_TEMPORARY
from model_runtime.out_variants import OutVariant, find_out_variant, named_arguments, qualified_name
from model_runtime.slot_writes import REWRITES, foreach_inplace_twin, rewrite_refusal, rewrite_scratch

#: Out overloads that must not be called with arena slots, by device type:
#: ``cudnn_batch_norm.out`` (a native CUDA kernel since torch 2.4) replaces its
#: ``reserve`` output with a new tensor instead of writing into it, which corrupts the
#: Python object of the tensor passed in: on torch 2.11 an H200 run of resnet18 failed
#: with ``has_pyobject(combined) INTERNAL ASSERT FAILED`` and then a segfault.
#: ``linalg_qr.out`` leaves R unwritten when Q and R are views of one storage, as arena
#: slots are: ``linalg_qr_out`` (device-generic) factors into Q, then asks
#: ``QR.is_alias_of(R)``, which compares storages, and skips R (measured on the CPU: a
#: model's loss turned NaN at its second step).
_QR_ALIAS = "leaves R unwritten when Q and R share a storage (is_alias_of compares storages)"
BROKEN_OUT = {
    "cuda": {"aten::cudnn_batch_norm.out": "replaces its reserve output instead of writing into it",
             "aten::linalg_qr.out": _QR_ALIAS},
    "cpu": {"aten::linalg_qr.out": _QR_ALIAS},
}

#: Out overloads, on every device, whose kernel uses ``out`` as scratch: these losses
#: (``aten/src/ATen/native/Loss.cpp``) resize the 0-dim ``out`` of a reduced loss to the
#: input's shape, write the unreduced loss there (binary cross-entropy and Huber), then
#: reduce into it and resize it back. On an arena slot that overwrites the buffers after
#: it, live ones included (PyTorch's VAE example trained on a loss of 17.3 where eager's
#: was 35147), or grows the arena's storage in the middle of the step when the slot is
#: near its end (MSE and smooth L1 write their scratch elsewhere, but resize too).
#: Found by calling every out overload the loss functions reach, and those OpInfo's
#: samples reach, with a slot between sentinels (``tests/model_runtime/test_runtime_lowering.py``).
SCRATCH_OUT = frozenset({"aten::binary_cross_entropy.out", "aten::huber_loss.out", "aten::mse_loss.out",
                         "aten::smooth_l1_loss.out"})


#: Ops whose results depend on autograd's grad mode, not only on their arguments. Eager
#: runs them in the forward pass with grad enabled; the program runs under ``no_grad``,
#: so it calls them with grad enabled on detached inputs (``program``) and never with
#: arena slots. CPU LSTM/GRU layers (oneDNN's ``mkldnn_rnn_layer``) return the workspace
#: their backward reads only with grad enabled: None under ``no_grad``, even with
#: ``train=True``.
GRAD_MODE_RESULTS = frozenset({"aten::mkldnn_rnn_layer"})


@attrs.frozen
class Lowering:
    """``kind``: ``rewrite``, ``foreach``, ``out`` or ``fallback`` (then ``reason`` says why)."""

    kind: str
    reason: str = ""
    variant: OutVariant | None = None
    twin: torch._ops.OpOverload | None = None


def result_elements(val) -> list | None:
    """The elements of a multi-result value (a node's ``meta["val"]``), or None for one result."""
    return list(val) if isinstance(val, (tuple, list)) else None


def storage_bytes(t: torch.Tensor) -> int:
    """Bytes of ``t``'s whole storage (fake tensors included)."""
    return int(t.untyped_storage().nbytes())


def element_buffers(step, node: fx.Node) -> list[str | None]:
    """The IR buffer of each result of ``node`` (one entry for a single result)."""
    val = node.meta.get("val")
    elems = result_elements(val)
    if elems is None:
        bufs = step.node_buffers.get(node.name, ())
        return [bufs[0] if bufs else None]
    return list(step.element_buffers.get(node.name, (None,) * len(elems)))


def _same_dtypes_as_self(node: fx.Node, results: list) -> bool:
    """True when each result of a foreach op has the dtype and shape of its ``self`` element."""
    first = node.args[0] if node.args else node.kwargs.get("self")
    items = first if isinstance(first, (list, tuple)) else [first]
    vals = []
    for item in items:
        v = item.meta.get("val") if isinstance(item, fx.Node) else None
        vals.extend(v if isinstance(v, (list, tuple)) else [v])
    return len(vals) == len(results) and all(
        isinstance(a, torch.Tensor) and a.dtype == r.dtype and a.shape == r.shape for a, r in zip(vals, results)
    )


def _mixed_float_inputs(node: fx.Node) -> bool:
    """True when the node's floating-point tensor arguments have more than one dtype."""
    dtypes = set()
    for arg in (*node.args, *node.kwargs.values()):
        for item in arg if isinstance(arg, (list, tuple)) else (arg,):
            v = item.meta.get("val") if isinstance(item, fx.Node) else None
            if isinstance(v, torch.Tensor) and v.is_floating_point():
                dtypes.add(v.dtype)
    return len(dtypes) > 1


def _dense_fresh(t: torch.Tensor) -> bool:
    return storage_bytes(t) == t.numel() * t.element_size() and t.storage_offset() == 0


def lower(step, op, node: fx.Node, device_type: str, output_buffers) -> Lowering:
    """How the arena executor runs ``op`` (an IR op with fresh results; ``node`` its FX node)."""
    target = node.target
    if not isinstance(target, torch._ops.OpOverload):
        return Lowering("fallback", "not an aten operator")
    if device_type == "cuda" and target._schema.name in HOST_RESULTS:
        # Kernels read these results on the host: a CUDA arena slot crashes the process.
        return Lowering("fallback", "returns some results in host memory")
    if target._schema.name in GRAD_MODE_RESULTS:
        return Lowering("fallback", "returns some results only with autograd enabled")
    if device_type == "cpu" and out_overload_copies(node):
        return Lowering("fallback", "its CPU out= kernel takes temporaries the functional one does not "
                                    "(model_ir.torch.cpu_temporaries.out_overload_copies)")
    val = node.meta.get("val")
    elems = result_elements(val)
    tensors = [val] if elems is None else elems
    bufs = element_buffers(step, node)
    if device_type == "cuda" and any(b is not None and step.graph.buffer(b).meta.get("host") for b in bufs):
        return Lowering("fallback", "returns a result in host memory (a CPU scalar of the step)")
    fresh = set(op.outputs)
    if not (all(isinstance(v, torch.Tensor) for v in tensors)
            and all(b is not None and b in fresh and b not in output_buffers for b in bufs)
            and len(set(bufs)) == len(bufs)
            and all(_dense_fresh(v) for v in tensors)):
        return Lowering("fallback", "returns a result that is not one fresh tensor per output")
    if elems is None and target in REWRITES:
        refusal = rewrite_refusal(target, named_arguments(target, node.args, node.kwargs), device_type, val)
        return Lowering("fallback", refusal) if refusal else Lowering("rewrite")
    if isinstance(val, list) and (twin := foreach_inplace_twin(target)) is not None \
            and _same_dtypes_as_self(node, tensors):
        return Lowering("foreach", twin=twin)
    if _mixed_float_inputs(node):
        # Autocast mixes dtypes (a bf16 input with fp32 BatchNorm weights) that some out=
        # kernels refuse where the functional one accepts them: CPU native_batch_norm.out
        # raises "expected scalar type Float but found BFloat16".
        return Lowering("fallback", "floating-point inputs of mixed dtypes (mixed precision)")
    variant = usable_out_variant(target, device_type)
    if isinstance(variant, str):
        return Lowering("fallback", variant)
    if variant.list_out != (elems is not None and isinstance(val, list)):
        return Lowering("fallback", "out= overload returns a different structure")
    return Lowering("out", variant=variant)


def usable_out_variant(target: torch._ops.OpOverload, device_type: str) -> OutVariant | str:
    """The out overload the arena executor may call with arena slots for ``target`` on
    ``device_type``, or why there is none."""
    variant = find_out_variant(target, device_type)
    if variant is None:
        return "no out= overload"
    name = qualified_name(variant.overload)
    broken = BROKEN_OUT.get(device_type, {}).get(name)
    if broken:
        return f"{name} {broken}"
    if name in SCRATCH_OUT:
        return f"{name} resizes its out tensor to hold the unreduced loss"
    if not variant.native:
        return f"{variant.overload} is a generated wrapper (computes, then copies)"
    return variant


def rewrite_temporaries(step, device_type: str) -> dict[str, int]:
    """Op id -> bytes of the temporaries the arena executor's rewrite of that op takes
    (:func:`model_runtime.slot_writes.rewrite_scratch`: ``_safe_softmax``'s row maxima
    and their mask), for the ops it rewrites with some: they stand in for what the op's
    own kernel would take (ATen's ``_safe_softmax`` masks every element)."""
    graph = step.graph
    outputs = {b.id for b in graph.buffers if b.output}
    nodes = {n.name: n for n in step.module.graph.nodes}
    found = {}
    for op in graph.ops:
        node = nodes[op.id]
        fresh = [b for b in op.outputs if b not in outputs]
        if not fresh or node.target not in REWRITES or lower(step, op, node, device_type, outputs).kind != "rewrite":
            continue
        scratch = rewrite_scratch(node.target, node.meta["val"], named_arguments(node.target, node.args, node.kwargs))
        if scratch:
            found[op.id] = sum(scratch)
    return found


#: oneDNN's LSTM backward (CPU) and the positions of ``hx`` and ``cx`` among its arguments.
_ONEDNN_RNN_BACKWARD, _HX, _CX = "aten.mkldnn_rnn_layer_backward.default", 5, 6


def shared_storage_temporaries(step, device_type: str) -> dict[str, int]:
    """Op id -> bytes of the temporaries an op's kernel takes when its arguments sit in one
    storage, as the arena's slots do, for the ops whose kernel then takes more than
    capture measured on separate tensors: oneDNN's LSTM backward copies ``cx`` when it
    shares ``hx``'s storage (measured on torch 2.11 and 2.15; an LSTM's arena step held
    492 bytes above its plan)."""
    graph = step.graph
    ops = [op for op in graph.ops if op.target == _ONEDNN_RNN_BACKWARD and CPU_TEMPORARY in op.meta]
    if device_type != "cpu" or not ops:  # no lowering of the whole graph for nothing
        return {}
    outside = fallback_buffers(step, device_type)
    in_arena = {b.id for b in graph.buffers if not b.persistent and b.id not in outside}
    nodes = {n.name: n for n in step.module.graph.nodes}
    found = {}
    for op in ops:
        states = nodes[op.id].args[_HX:_CX + 1]
        if len(states) < 2 or not all(isinstance(a, fx.Node) for a in states):
            continue
        buffers = {step.node_buffers.get(a.name, (None,))[0] for a in states}
        cx = states[1].meta.get("val")
        if len(buffers) == 2 and buffers <= in_arena and isinstance(cx, torch.Tensor):
            found[op.id] = int(op.meta[CPU_TEMPORARY]) + cx.numel() * cx.element_size()
    return found


def arena_temporaries(step, device_type: str) -> dict[str, int]:
    """Op id -> bytes the arena executor's run of that op takes for a moment, for the ops
    that take otherwise than their kernel on separate tensors (what the plan counts
    instead of the kernel's): :func:`shared_storage_temporaries`, :func:`rewrite_temporaries`."""
    return {**shared_storage_temporaries(step, device_type), **rewrite_temporaries(step, device_type)}


def fallback_buffers(step, device_type: str) -> frozenset[str]:
    """The transient buffers the arena executor leaves to PyTorch's allocator on
    ``device_type``: the fresh results of every op it runs as a fallback."""
    graph = step.graph
    outputs = {b.id for b in graph.buffers if b.output}
    nodes = {n.name: n for n in step.module.graph.nodes}
    found: set[str] = set()
    for op in graph.ops:
        fresh = [b for b in op.outputs if b not in outputs]
        if fresh and lower(step, op, nodes[op.id], device_type, outputs).kind == "fallback":
            found.update(fresh)
    return frozenset(found)
