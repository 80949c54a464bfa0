"""The public entry points: :func:`capture` and :func:`capture_step`."""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable

import torch

from model_ir.graph import Graph
from model_ir.torch.cuda_kernels import cpu_only_kernels
from model_ir.torch.errors import LiftedHyperParametersError, warn_user
from model_ir.torch.flops import annotate_flops
from model_ir.torch.dropout_masks import keep_dropout_masks
from model_ir.torch.functional_inplace import drop_redundant_clones, functionalize_forward_writes
from model_ir.torch.grad_scaler import check_scaler
from model_ir.torch.optimizer_values import kept_python_values, pre_hook_count, step_hooks_off
from model_ir.torch.step import CapturedStep
from model_ir.torch.storage_graph import build_storage_map, check_granularity, unsized_results
from model_ir.torch.tracing import trace_step

log = logging.getLogger(__name__)


def fast_path_modules(model: torch.nn.Module) -> list[str]:
    """The module types of ``model`` that eager PyTorch runs on its fused inference fast
    path in eval mode (``torch.backends.mha``, on by default), which capture does not take."""
    if not torch.backends.mha.get_fastpath_enabled():
        return []
    kinds = (torch.nn.MultiheadAttention, torch.nn.TransformerEncoderLayer)
    return sorted({type(m).__name__ for m in model.modules() if isinstance(m, kinds)})


def capture_step(
    model: torch.nn.Module,
    example_inputs,
    *,
    loss_fn: Callable | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    train: bool = True,
    granularity: int = 512,
    targets=(),
    keep_grads: bool = False,
    before_step: Callable | None = None,
    name: str | None = None,
    return_outputs: bool = False,
    device: str | None = None,
    autocast: torch.dtype | None = None,
    return_grads: bool = False,
    accumulation_steps: int = 1,
    scaler: torch.amp.GradScaler | None = None,
    functional_inplace: bool = False,
) -> CapturedStep:
    """Capture one step of ``model`` as an IR graph plus its executable aten program.

    ``example_inputs``: a tensor, a :class:`TensorSpec`, a tuple of positional
    arguments or a dict of keyword arguments of ``model`` (tensors may be real, meta
    or fake; only shapes and dtypes are used). Train mode (default): forward,
    ``loss = loss_fn(output, *targets)`` (default: ``output["loss"]`` of a mapping that has
    one, e.g. a Hugging Face model given ``labels``; else the sum of all floating outputs),
    backward, ``before_step(params)`` if given (``params``: parameter name to tensor,
    with ``.grad`` set; e.g. ``lambda ps: clip_grad_norm_(ps.values(), 1.0)``), and
    ``optimizer.step()`` when an optimizer is given (its numeric hyper-parameters, e.g.
    the learning rate, momentum and betas, are inputs of the step, read from
    ``optimizer.param_groups`` at every call, so learning-rate schedulers need no new
    capture; see :mod:`model_ir.torch.hyper_parameters`), each module in the mode it is
    in (as eager's backward). Eval mode: forward under ``no_grad``, every module in
    eval. Buffer sizes are storage bytes rounded up to ``granularity`` bytes (512:
    CUDA's caching allocator). Gradients are freed after their last reader
    (the optimizer); ``keep_grads=True`` keeps them to the end of the step, as eager
    PyTorch's ``.grad`` does, so the program order reproduces eager's memory exactly.
    ``return_outputs=True`` (train mode) makes the step also return the model's output
    tensors after the loss (``[loss, *outputs]``; :meth:`CapturedStep.model_outputs`
    rebuilds the model's output structure): their buffers become graph outputs, alive
    to the end of the step (an output that is a view keeps its whole storage alive).
    ``device`` (``cpu`` or ``cuda``; default: the model's): the device whose kernels the
    graph records. A model not on a GPU is captured for ``cuda`` with CUDA's kernel
    choices emulated (:mod:`model_ir.torch.cuda_kernels`); such a graph is for planning
    and simulation, and its module is not executable on a GPU (capture there to run).
    The graph's ``meta`` says ``device`` and ``kernels`` (``emulated`` or ``native``);
    ops carry their FLOPs (``meta["flops"]``, :mod:`model_ir.torch.flops`), the graph
    their sums by phase.
    ``autocast`` (``torch.bfloat16``, ``torch.float16``): the forward pass and the loss
    run under ``torch.autocast`` (the AMP recipe); its casts are buffers of the graph.
    ``return_grads`` (train mode): the module also returns the parameters' gradients
    after its other outputs (:attr:`CapturedStep.returned_grads` names them), so they
    are step outputs of the graph, alive to its end like eager's ``.grad``. The tensors
    ``before_step`` returns (the gradient norm ``clip_grad_norm_`` gives, for logging)
    are step outputs too, returned just before the gradients
    (:meth:`CapturedStep.before_step_result` rebuilds what it returned).
    ``accumulation_steps=N``: gradient accumulation over N micro-batches shaped like the
    example (forward, loss and backward of each, gradients summed in ``.grad`` as eager
    does, then one update); the module takes N copies of the batch and returns N losses.
    ``scaler`` (a ``torch.amp.GradScaler``, for fp16 autocast): dynamic loss scaling as in
    the AMP recipe, captured with the step (:mod:`model_ir.torch.grad_scaler`): the
    scale and growth tracker are inputs, the update is skipped when a gradient is not
    finite, and gradients are unscaled before ``before_step``.
    ``functional_inplace``: the forward pass's in-place writes of activations
    (``ReLU(inplace=True)``, ``out += identity``) become functional ops, so that their
    producers can be recomputed under a memory budget, and dropout keeps a boolean mask
    from which its float noise is recomputed; same values, not quite eager's memory
    (:mod:`model_ir.torch.functional_inplace`, :mod:`model_ir.torch.dropout_masks`).
    Eval steps always return the outputs. Raises :class:`CaptureError` naming the operator or construct that could not be
    captured.
    """
    check_granularity(granularity)  # before the (possibly long) trace
    if scaler is not None:
        check_scaler(scaler, optimizer, train)
    started = time.perf_counter()
    log.info("capturing %s (%s step)", type(model).__name__, "training" if train else "inference")
    if train and (hooks := pre_hook_count(optimizer)):
        warn_user(f"the optimizer has step pre-hooks ({hooks}, register_step_pre_hook, its own or global): an "
                  "optimized step runs the update it traced without them (it never stops between backward and "
                  "update), and capture does not call them; pass a pre-hook's work on the gradients as before_step")

    def trace(lift: bool, in_place_sums: frozenset[int] = frozenset()):
        # The trace runs the optimizer's step() on fake tensors: its Python counters are put
        # back, and its step hooks (Python work on real objects) do not run.
        with kept_python_values(optimizer), step_hooks_off(optimizer):
            return trace_step(model, example_inputs, loss_fn=loss_fn, optimizer=optimizer, train=train,
                              targets=targets, before_step=before_step, return_outputs=return_outputs, device=device,
                              lift_hyper_parameters=lift, autocast=autocast, return_grads=return_grads and train,
                              accumulation_steps=accumulation_steps, scaler=scaler, in_place_sums=in_place_sums)

    lift = True
    try:
        traced = trace(lift)
    except LiftedHyperParametersError as e:
        # Only a failure of the update with its hyper-parameters as inputs (an optimizer
        # whose step branches on one in a way the sign does not decide): capture again with
        # them as constants (a change then needs a new capture). Any other failure (input
        # shapes, the loss, sizes) was raised at once. Said only once that capture worked.
        lift = False
        traced = trace(lift)
        log.warning("the optimizer's hyper-parameters stay constants of the captured step (%s)", e)
    if traced.sums_laid_out_otherwise:
        # A gradient sum eager runs in place keeps its first gradient's strides, which the
        # later kernels read (model_ir.torch.eager_strides): traced again, knowing which.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the first trace said it all
            traced = trace(lift, traced.in_place_sums)
    if functional_inplace and train:
        functionalize_forward_writes(traced.module, traced.backward_start)
        drop_redundant_clones(traced.module)
        keep_dropout_masks(traced.module, traced.backward_start)
    cpu_kernels = cpu_only_kernels(traced.module) if traced.emulated else []
    if cpu_kernels:
        warn_user(f"captured for CUDA without a GPU, {', '.join(cpu_kernels)} kept CPU's kernels (CUDA runs "
                  "others, e.g. cuDNN's RNN, whose memory is not modelled): the graph's figures for them are "
                  "the CPU kernels' (meta 'cpu_kernels')")
    fast = fast_path_modules(model) if not train else []
    if fast:
        warn_user(f"in eval mode eager PyTorch may run {' and '.join(fast)} on its fused "
                  "inference fast path (with a padding mask, on nested tensors that leave zeros at the padded "
                  "positions); the captured step runs their standard path, so its outputs differ from that "
                  "eager's in rounding (and at padded positions) and its figures are the standard path's. "
                  "torch.backends.mha.set_fastpath_enabled(False) makes eager run the standard path too")
    unsized = unsized_results(traced.module)
    if unsized:
        warn_user(f"the size of a result of {', '.join(unsized)} (an RNN's workspace or reserve) is known only "
                  "when its library runs, not at capture (0 bytes here): the plan's figures leave it out "
                  "(meta 'unsized_results')")
    traced_at = time.perf_counter()
    log.info("traced %d aten nodes in %.2f s", len(traced.module.graph.nodes), traced_at - started)
    smap = build_storage_map(traced, granularity=granularity, name=name or type(model).__name__,
                             keep_grads=keep_grads,
                             meta={"optimizer": type(optimizer).__name__ if optimizer is not None and train else None,
                                   "device": traced.device, "kernels": "emulated" if traced.emulated else "native",
                                   **_capability(traced),
                                   **({"cpu_kernels": cpu_kernels} if cpu_kernels else {}),
                                   **({"unsized_results": unsized} if unsized else {}),
                                   **({"autocast": str(autocast).removeprefix("torch.")} if autocast else {}),
                                   **({"accumulation_steps": accumulation_steps} if accumulation_steps > 1 else {}),
                                   **({"grad_scaler": True} if traced.scaler is not None else {}),
                                   **({"functional_inplace": True} if functional_inplace and train else {}),
                                   **({"return_outputs": True} if traced.return_outputs else {})})
    graph = annotate_flops(smap.graph, traced.module)
    log.info("built the IR: %d ops, %d buffers in %.2f s", len(graph.ops), len(graph.buffers),
             time.perf_counter() - traced_at)
    return CapturedStep(
        graph=graph,
        module=traced.module,
        inputs=traced.slots,
        op_nodes=smap.op_nodes,
        node_buffers=smap.node_buffers,
        folded=smap.folded,
        element_buffers=smap.element_buffers,
        outputs=smap.output_buffers,
        train=train,
        inputs_spec=traced.inputs_spec,
        targets_spec=traced.targets_spec,
        inputs_constants=traced.inputs_constants,
        targets_constants=traced.targets_constants,
        return_outputs=traced.return_outputs,
        outputs_structure=traced.outputs_structure,
        hyper_parameters=traced.hyper_parameters,
        returned_grads=traced.returned_grads,
        gradients=tuple(traced.grads),
        python_state=traced.python_state,
        tensor_state=traced.tensor_state,
        guards=traced.guards,
        before_step_outputs=traced.before_step_outputs,
        before_step_structure=traced.before_step_structure,
        accumulation_steps=traced.accumulation_steps,
        scaler=traced.scaler,
        found_inf=traced.found_inf,
        skipped_if_inf=traced.skipped_if_inf,
    )


def capture(
    model: torch.nn.Module,
    example_inputs,
    *,
    loss_fn: Callable | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    train: bool = True,
    granularity: int = 512,
    targets=(),
    keep_grads: bool = False,
    before_step: Callable | None = None,
    return_outputs: bool = False,
    device: str | None = None,
    autocast: torch.dtype | None = None,
    functional_inplace: bool = False,
) -> Graph:
    """The storage-level :class:`Graph` of one step of ``model`` (see :func:`capture_step`)."""
    return capture_step(
        model, example_inputs, loss_fn=loss_fn, optimizer=optimizer, train=train,
        granularity=granularity, targets=targets, keep_grads=keep_grads, before_step=before_step,
        return_outputs=return_outputs, device=device, autocast=autocast, functional_inplace=functional_inplace,
    ).graph


def _capability(traced) -> dict:
    """The CUDA device's compute capability and streaming multiprocessors, for a capture
    on a real GPU (they size cuBLAS's workspace and pick the embedding backward's path,
    see :mod:`model_ir.workspaces`)."""
    if traced.device != "cuda" or traced.emulated or not torch.cuda.is_available():
        return {}
    return {"cuda_capability": list(torch.cuda.get_device_capability()),
            "cuda_sm_count": torch.cuda.get_device_properties().multi_processor_count}
