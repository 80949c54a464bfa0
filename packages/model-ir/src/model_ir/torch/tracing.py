"""Tracing one training (or inference) step to an aten-level FX graph under fake tensors.

The step is traced with ``make_fx`` *without* functionalization: the resulting graph
keeps eager PyTorch's views and in-place operators (``relu_``, the optimizer's
``addcdiv_`` on the parameters, ...), so its storages and their lifetimes are those of
the eager step. Everything runs on fake tensors: no parameter, optimizer state or
activation memory is allocated, whatever the model size.

The traced function takes one flat list of tensors (parameters, model buffers,
optimizer state, batch inputs, loss targets), described by :class:`InputSlot`s, and
returns the loss (train; then the model's output tensors too with ``return_outputs``)
or the model outputs (eval). Parameters, model buffers and optimizer state are updated
in place by the graph itself.
"""

from __future__ import annotations

import collections
import contextlib
import inspect
import itertools
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import torch
from torch import fx
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.experimental.proxy_tensor import make_fx
from torch.fx.experimental.symbolic_shapes import ShapeEnv
from torch.multiprocessing.reductions import StorageWeakRef
from torch.nn.utils.stateless import _reparametrize_module
from torch.utils import _pytree as pytree

from model_ir.torch.capture_errors import capture_error
from model_ir.torch.checkpoint_rng import mark_replayed_draws, pairing_replayed_draws
from model_ir.torch.constant_decisions import constant_decisions
from model_ir.torch.cuda_autocast import cuda_autocast_policy
from model_ir.torch.cuda_kernels import emulate_cuda
from model_ir.torch.eager_strides import EagerStridesFakeMode
from model_ir.torch.errors import CaptureError, LiftedHyperParametersError, dropping_log_records, warn_user
from model_ir.torch.gradient_accumulation import (
    ACCUMULATE, in_place_sum_ordinals, mark_in_place_sums, marking_accumulations,
)
from model_ir.torch.decided_draws import decided_draws
from model_ir.torch.function_scope import hook_functions, scope_values
from model_ir.torch.functional_inplace import views_for_metadata_writes
from model_ir.torch.grad_scaler import (
    SCALER_TENSORS,
    SKIP_IF_INF,
    ScalerConstants,
    check_scaler,
    example_scaler_tensors,
    unscale_grads,
    update_scale,
)
from model_ir.torch.hyper_parameters import (
    example_input,
    hyper_parameters_bound,
    lifted_hyper_parameters,
    read_symbolic,
    tensor_hyper_parameters_as_floats,
)
from model_ir.torch.optimizer_values import changed_python_value, python_counter_error, python_values
from model_ir.torch.python_random import refusing_python_random
from model_ir.torch.python_releases import ReleaseRecorder
from model_ir.torch.specs import TensorSpec
from model_ir.torch.step_guards import ValuedReads, valued_reads

#: Kinds of step inputs, in the order they appear in the traced function's arguments.
INPUT_KINDS = ("parameter", "model_buffer", "optimizer_state", "hyper_parameter", "scaler_state", "input",
               "target")


@attrs.frozen
class InputSlot:
    """One tensor argument of the traced step and where its real tensor lives.

    ``kind`` is one of :data:`INPUT_KINDS`. ``name`` is the parameter or buffer name
    (``"0.weight"``), ``"<param name>/<state key>"`` for optimizer state
    (``"0.weight/exp_avg"``), ``"group<i>/<key>"`` for an optimizer hyper-parameter
    (``"group0/lr"``, ``"group0/betas.1"``; see :mod:`model_ir.torch.hyper_parameters`), or
    ``"scale"`` / ``"growth_tracker"`` for a ``GradScaler``'s tensors, or
    ``"inputs[i]"`` / ``"targets[i]"`` for the i-th tensor leaf of the example inputs /
    loss targets (flattened with ``torch.utils._pytree``).
    ``host``: a step emulated for CUDA (CPU stand-ins of every tensor) would keep this one
    in host memory, no device bytes (the lifted hyper-parameters; Adam's step counts
    unless ``capturable`` or ``fused``); a step traced on a GPU tells by the device.
    """

    kind: str
    name: str
    placeholder: str = ""
    host: bool = False


@attrs.frozen(eq=False)
class TracedStep:
    """The traced step: the FX graph module and the meaning of its arguments."""

    module: fx.GraphModule
    slots: tuple[InputSlot, ...]
    train: bool
    #: node names where the backward pass and the optimizer update start (None: absent)
    backward_start: str | None
    optimizer_start: str | None
    #: how to rebuild the model call from the flat batch leaves
    inputs_spec: Any = None
    targets_spec: Any = None
    #: parameter name -> the traced tensor backward stored in its ``.grad``
    grads: Mapping[str, torch.Tensor] = attrs.field(factory=dict)
    #: the non-tensor leaves of the inputs and targets (see :func:`constant_leaves`)
    inputs_constants: tuple = ()
    targets_constants: tuple = ()
    #: train mode with ``return_outputs``: the graph returns ``[loss, *model output tensors]``
    return_outputs: bool = False
    #: how to rebuild the model's output from its tensors (see :class:`OutputStructure`)
    outputs_structure: OutputStructure | None = None
    #: the device the step was traced for, and whether its CUDA kernels were emulated on the CPU
    device: str = "cpu"
    emulated: bool = False
    #: whether capture measured the CPU kernels' temporaries (:mod:`model_ir.torch.kernel_probes`):
    #: a model of real CPU tensors only, neither fake nor meta (whose calls would allocate
    #: activations the user never meant to: a model planned without its memory)
    measures_kernels: bool = False
    #: the optimizer hyper-parameters that are inputs of the step, in slot order
    hyper_parameters: tuple = ()
    #: ``return_grads``: the parameters whose gradients the step returns last, in that order
    returned_grads: tuple[str, ...] = ()
    #: the tensors ``before_step`` returned (e.g. the gradient norm ``clip_grad_norm_``
    #: gives): how many the step returns before the gradients, and their structure
    before_step_outputs: int = 0
    before_step_structure: OutputStructure | None = None
    #: ``(module name, attribute)`` of the plain Python values the traced forward changed
    #: (a call counter: eager changes them at every call, the step never)
    python_state: tuple[tuple[str, str], ...] = ()
    #: ``(module name, attribute)`` of the tensor attributes the traced forward replaced
    #: (pruning's ``weight``), put back after the trace
    tensor_state: tuple[tuple[str, str], ...] = ()
    #: the branches the update took on its step count or hyper-parameters (:mod:`model_ir.torch.step_guards`)
    guards: tuple = ()
    #: micro-batches per optimizer update (their batch slots are named ``micro<k>/...``)
    accumulation_steps: int = 1
    #: with a GradScaler: its constants, the node holding ``found_inf``, and the nodes of the
    #: optimizer update skipped when it is non-zero (see :mod:`model_ir.torch.grad_scaler`)
    scaler: ScalerConstants | None = None
    found_inf: str | None = None
    skipped_if_inf: frozenset[str] = frozenset()
    #: eval mode: storage -> the last node traced before eager PyTorch would free it
    #: (Python dropped its last tensor; see :mod:`model_ir.torch.python_releases`)
    released_after: Mapping[StorageWeakRef, str] = attrs.field(factory=dict)
    #: the ordinals of the gradient sums eager runs in place, and whether one of them was
    #: traced laid out otherwise than eager leaves it (see :mod:`model_ir.torch.eager_strides`)
    in_place_sums: frozenset[int] = frozenset()
    sums_laid_out_otherwise: bool = False


@attrs.frozen(eq=False)
class OutputStructure:
    """The structure of the model's output: ``spec`` is its ``torch.utils._pytree``
    spec and ``constants`` its non-tensor leaves (``(position, value)``), or ``spec``
    is None when the output is a container pytree does not know (then the output
    tensors are handed back as a flat tuple). ``index[j]`` is which of the step's
    returned tensors the ``j``-th tensor leaf is: a tensor the model returns several
    times is returned once by the step and is the same object in every place."""

    spec: Any
    constants: tuple = ()
    index: tuple[int, ...] = ()

    def rebuild(self, tensors):
        """The model's output with ``tensors`` (the step's returned output tensors) in
        place of its tensor leaves."""
        tensors = list(tensors)
        leaves_t = [tensors[i] for i in self.index] if self.index else tensors
        if self.spec is None:
            return tuple(leaves_t)
        consts = dict(self.constants)
        it = iter(leaves_t)
        leaves = [consts[i] if i in consts else next(it) for i in range(self.spec.num_leaves)]
        return pytree.tree_unflatten(leaves, self.spec)


def flatten_outputs(out) -> tuple[list[torch.Tensor], OutputStructure]:
    """The distinct tensors of a model output and how to rebuild the output from them.

    pytree's order is used when pytree sees every tensor of the output (tuples, lists,
    dicts, named tuples, registered classes); otherwise :func:`tensor_leaves`' order,
    and the output comes back as a flat tuple.
    """
    leaves, spec = pytree.tree_flatten(out)
    tensors = [x for x in leaves if isinstance(x, torch.Tensor)]
    every = tensor_leaves(out)
    if len(tensors) == len(every) and {id(t) for t in tensors} == {id(t) for t in every}:
        consts = tuple((i, x) for i, x in enumerate(leaves) if not isinstance(x, torch.Tensor))
        structure = (spec, consts)
    else:
        tensors, structure = every, (None, ())
    position: dict[int, int] = {}
    for t in tensors:
        position.setdefault(id(t), len(position))
    distinct = list({id(t): t for t in tensors}.values())
    return distinct, OutputStructure(*structure, index=tuple(position[id(t)] for t in tensors))


# -- example inputs ------------------------------------------------------------------


def split_example_inputs(example_inputs) -> tuple[tuple, dict]:
    """``example_inputs`` as positional and keyword arguments of ``model(...)``.

    A tensor or :class:`TensorSpec` is one positional argument, a tuple or list are the
    positional arguments, a dict the keyword arguments.
    """
    if isinstance(example_inputs, (torch.Tensor, TensorSpec)):
        return (example_inputs,), {}
    if isinstance(example_inputs, Mapping):
        return (), dict(example_inputs)
    if isinstance(example_inputs, (tuple, list)):
        return tuple(example_inputs), {}
    raise CaptureError(
        f"example_inputs must be a tensor, a TensorSpec, a tuple/list of positional arguments or a "
        f"dict of keyword arguments, got {type(example_inputs).__name__}"
    )


def _is_leaf_tensor(x) -> bool:
    return isinstance(x, (torch.Tensor, TensorSpec))


def flatten_batch(value) -> tuple[list, Any]:
    """Flatten inputs or targets; TensorSpecs count as tensor leaves."""
    return pytree.tree_flatten(value, is_leaf=lambda x: isinstance(x, TensorSpec))


def describe_structure(spec) -> str:
    """A flattened value's structure (a pytree ``TreeSpec``) as Python writes the value,
    ``*`` for each leaf: ``(*, [*, *])``, ``{'x': *}``."""
    if spec.is_leaf():
        return "*"
    kids = [describe_structure(c) for c in spec.children()]
    if spec.type is tuple:
        return "(" + ", ".join(kids) + ("," if len(kids) == 1 else "") + ")"
    if spec.type is list:
        return "[" + ", ".join(kids) + "]"
    if spec.type is dict:
        return "{" + ", ".join(f"{k!r}: {v}" for k, v in zip(spec.context, kids)) + "}"
    name = getattr(spec.context, "__name__", None) or getattr(spec.type, "__name__", str(spec.type))
    return f"{name}(" + ", ".join(kids) + ")"


def describe_call(spec, name: str = "step") -> str:
    """The call passing inputs flattened as ``spec`` (``(args, kwargs)``, see
    :func:`flatten_batch`), ``*`` for each tensor or value: ``step(*, mask=*)``."""
    args, kwargs = spec.children()
    parts = [describe_structure(a) for a in args.children()]
    parts += [f"{k}={describe_structure(v)}" for k, v in zip(kwargs.context, kwargs.children())]
    return f"{name}(" + ", ".join(parts) + ")"


def constant_leaves(leaves) -> tuple[tuple[int, Any], ...]:
    """``(position, value)`` of the non-tensor leaves of flattened inputs or targets
    (flags, scales, ...): the traced step holds them as constants."""
    return tuple((i, x) for i, x in enumerate(leaves) if not _is_leaf_tensor(x))


def changed_constant(leaves, constants, kind: str = "input") -> str | None:
    """What differs between ``leaves`` (of the step's inputs or targets: ``kind``) and
    the captured ``constants`` (None: nothing)."""
    for i, want in constants:
        got = leaves[i]
        if got is want:
            continue
        try:
            same = type(got) is type(want) and bool(got == want)
        except Exception:  # noqa: BLE001 - incomparable values are different
            same = False
        if not same:
            tip = ("; a number that changes from step to step (a mixup weight, a loss scale) is better passed as "
                   "a 0-dim tensor, e.g. torch.tensor(0.3): an input of the step, not a constant"
                   if isinstance(got, (int, float)) and isinstance(want, (int, float))
                   and not isinstance(got, bool) and not isinstance(want, bool) else "")
            return (f"{kind} leaf {i} (not a tensor: a constant of the captured step) is {got!r}, the step was "
                    f"captured with {want!r}{tip}")
    return None


def tensor_leaves(value) -> list[torch.Tensor]:
    """Every tensor inside nested tuples, lists, dicts and mapping-like model outputs."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, Mapping) or (hasattr(value, "keys") and hasattr(value, "values")):
        return [t for v in value.values() for t in tensor_leaves(v)]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in tensor_leaves(v)]
    return []


def _foreign_parameter_error(p: torch.Tensor, loss_fn) -> CaptureError:
    """The error for a tensor the optimizer holds that is not a parameter of the model,
    naming it where the loss function holds or reads it (a learnable temperature, the
    log-variances of uncertainty weighting, ArcFace's class centres)."""
    where = None
    if isinstance(loss_fn, torch.nn.Module):
        where = next((f"parameter {n!r} of the loss function ({type(loss_fn).__name__})"
                      for n, q in loss_fn.named_parameters() if q is p), None)
    for what, value in scope_values(loss_fn) if loss_fn is not None and where is None else ():
        if value is p:
            where = f"{what}, which the loss function reads"
        elif isinstance(value, torch.nn.Module):
            where = next((f"parameter {n!r} of {what}, which the loss function calls"
                          for n, q in value.named_parameters() if q is p), None)
        if where is not None:
            break
    if where is not None:
        return CaptureError(f"the optimizer holds {where}; capture takes the model's parameters only: put the loss "
                            "in the model (a module holding both whose forward returns the loss, optimized with "
                            "loss_fn=None)")
    return CaptureError(f"the optimizer holds a parameter of shape {tuple(p.shape)} that is not a parameter of the "
                        "model (a submodule replaced since the optimizer was made?); build the optimizer from "
                        "model.parameters()")


def default_loss(output) -> torch.Tensor:
    """The loss used when no ``loss_fn`` is given: ``output["loss"]`` when the model
    returns a mapping with a loss tensor (a Hugging Face model given ``labels``, read as
    its ``Trainer`` reads it), else the sum of every floating output."""
    if isinstance(output, Mapping) and isinstance(output.get("loss"), torch.Tensor):
        return output["loss"]
    leaves = [t for t in tensor_leaves(output) if t.is_floating_point() and t.requires_grad]
    if not leaves:
        raise CaptureError(
            "the model returned no floating-point tensor that requires grad, so the default loss "
            "(sum of outputs) is undefined; pass loss_fn=... or capture with train=False"
        )
    loss = leaves[0].sum()
    for t in leaves[1:]:
        loss = loss + t.sum()
    return loss


def loss_among_outputs(output) -> str | None:
    """``"output[i]"`` when the model returns a tuple or list of several floating
    tensors, one of them a single number (a loss the model computed, as Hugging Face
    models with ``return_dict=False`` return it first), which :func:`default_loss` would
    add to the others; else None."""
    if not isinstance(output, (tuple, list)):
        return None
    floating = [(i, t) for i, t in enumerate(output)
                if isinstance(t, torch.Tensor) and t.is_floating_point() and t.requires_grad]
    scalars = [i for i, t in floating if t.numel() == 1]
    return f"output[{scalars[0]}]" if len(floating) > 1 and len(scalars) == 1 else None


# -- fake copies ---------------------------------------------------------------------


def _fake(mode: EagerStridesFakeMode, t, requires_grad: bool = False, *, host: bool = False) -> torch.Tensor:
    """A fake tensor with ``t``'s shape, strides, dtype and storage size (no data);
    ``host``: a CPU stand-in whatever ``t``'s device (for :func:`emulate_cuda`)."""
    if isinstance(t, TensorSpec):
        with mode:
            f = torch.empty(t.shape, dtype=t.dtype, device="cpu" if host else t.device)
    elif t.device.type == "meta" or (host and t.device.type != "cpu"):
        # Meta models are sized for the host; capture them as CPU tensors.
        with mode:
            f = torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="cpu")
    else:
        f = mode.fake_of(t.detach())
    if requires_grad:
        f.requires_grad_(True)
    return f


def gradient_hooks(p: torch.Tensor) -> tuple:
    """The hooks ``p.register_hook`` put on ``p``'s gradient, in order."""
    return tuple((p._backward_hooks or {}).values())


def input_requires_grad_error(what: str) -> str:
    return (f"{what} requires grad: the step computes gradients for the model's parameters only, where eager's "
            "backward would also reach that tensor (and what made it); pass it detached (.detach()), or make "
            "what produces it part of the optimized model")


def post_accumulate_grad_hook_error(name: str) -> str:
    return (f"parameter {name!r} has a post-accumulate-grad hook (register_post_accumulate_grad_hook, e.g. an "
            "optimizer stepped in backward); its hook takes the real parameter, which the captured step does "
            "not run: remove the hook and pass the optimizer to the capture (a plan may update each parameter "
            "right after its gradient, as that hook does)")


def copy_gradient_hooks(named_params, fake_params: Mapping[str, torch.Tensor]) -> None:
    """Put each parameter's gradient hooks on its traced stand-in, so that backward
    traces them: they live on the tensor, which ``functional_call`` swaps out (module
    hooks stay on the module and need nothing). Their tensor code becomes ops of the
    step; Python side effects happen once, at capture. Post-accumulate-grad hooks are
    refused (see :func:`post_accumulate_grad_hook_error`)."""
    for name, p in named_params:
        if getattr(p, "_post_accumulate_grad_hooks", None):
            raise CaptureError(post_accumulate_grad_hook_error(name))
        for hook in gradient_hooks(p):
            fake_params[name].register_hook(hook)


def _quiet_meta_failures():
    """Fake tensors log a full traceback when a meta kernel fails (e.g. a shape mismatch)
    before raising; capture turns the exception into one :class:`CaptureError`, so that
    log is only noise."""
    return dropping_log_records("torch._subclasses.fake_tensor", "failed while attempting to run meta")


@contextlib.contextmanager
def optimizer_bound_to(optimizer: torch.optim.Optimizer, param_map: Mapping[int, torch.Tensor], state):
    """Temporarily point ``optimizer`` at other parameter tensors and another state.

    ``param_map`` maps ``id(real parameter)`` to its stand-in. The user's optimizer is
    restored on exit, whatever happens.
    """
    saved_params = [g["params"] for g in optimizer.param_groups]
    saved_state = optimizer.state
    try:
        for g in optimizer.param_groups:
            g["params"] = [param_map[id(p)] for p in g["params"]]
        optimizer.state = state
        yield
    finally:
        for g, ps in zip(optimizer.param_groups, saved_params):
            g["params"] = ps
        optimizer.state = saved_state


def _host_state_keys(optimizer: torch.optim.Optimizer) -> list[frozenset[str]]:
    """Per param group of ``optimizer``: the keys of the state it keeps in host memory
    for parameters on CUDA (Adam's ``step`` unless ``capturable`` or ``fused``, NAdam's
    ``mu_product``; none of ASGD's). Learned, without a GPU, by creating its state for a
    one-element fake CUDA parameter per group: what an update after that does not matter
    (ASGD's reads a value and fails)."""
    groups = optimizer.param_groups
    fresh = defaultdict(dict)
    with tensor_hyper_parameters_as_floats(optimizer), FakeTensorMode(allow_non_fake_inputs=True):
        fakes = {id(p): torch.empty(1, dtype=p.dtype, device="cuda") for g in groups for p in g["params"]}
        probes = [next((fakes[id(p)] for p in g["params"] if p.requires_grad), None) for g in groups]
        for p in probes:
            if p is not None:
                p.grad = torch.zeros_like(p)
        try:
            with optimizer_bound_to(optimizer, fakes, fresh), torch.no_grad():
                optimizer.step()
        except Exception:  # noqa: BLE001 - the state made before the update is what counts
            pass
    return [frozenset(k for k, v in fresh.get(p, {}).items() if isinstance(v, torch.Tensor) and v.device.type == "cpu")
            if p is not None else frozenset() for p in probes]


def _initial_fake_state(mode, optimizer, fake_params: Mapping[int, torch.Tensor], todo: set[int]):
    """The optimizer state a first ``step()`` creates for the parameters ``todo`` (ids
    of real parameters), as fake tensors.

    Runs ``optimizer.step()`` on the fake parameters, with fake zero gradients for
    ``todo`` only (others have no gradient and are skipped); the state tensors it
    creates (``exp_avg``, ``momentum_buffer``, ``step``, ...) give the shapes and dtypes
    of the persistent state of every later step.
    """
    fresh = defaultdict(dict)
    with mode:
        for pid in todo:
            fake_params[pid].grad = torch.zeros_like(fake_params[pid])
        try:
            with optimizer_bound_to(optimizer, fake_params, fresh), torch.no_grad():
                optimizer.step()
        finally:
            for p in fake_params.values():
                p.grad = None
        # Fake tensors made by torch.tensor(...) carry their value as a constant (Adam's
        # step counter would be baked into the graph as 1, 2, ...): keep only the metadata.
        return {
            p: {k: (torch.empty_strided(v.shape, v.stride(), dtype=v.dtype, device=v.device)
                    if isinstance(v, torch.Tensor) else v) for k, v in st.items()}
            for p, st in fresh.items()
        }


# -- the traced step -----------------------------------------------------------------


def trace_step(
    model: torch.nn.Module,
    example_inputs,
    *,
    loss_fn: Callable | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    train: bool = True,
    targets=(),
    before_step: Callable | None = None,
    return_outputs: bool = False,
    device: str | None = None,
    lift_hyper_parameters: bool = True,
    autocast: torch.dtype | None = None,
    return_grads: bool = False,
    accumulation_steps: int = 1,
    scaler: torch.amp.GradScaler | None = None,
    in_place_sums: frozenset[int] = frozenset(),
) -> TracedStep:
    """Trace one step of ``model`` on ``example_inputs`` under fake tensors.

    Train mode: zero grads (set to None), forward, ``loss = loss_fn(output, *targets)``
    (default: :func:`default_loss`), backward, ``optimizer.step()`` if an
    optimizer is given; ``before_step(params)`` (a dict of parameter name to tensor,
    ``.grad`` set) runs between backward and the update, e.g. to clip gradients.
    Gradients are dropped at the end of the step, so they are transient buffers. The
    traced function returns ``[loss]``, or with ``return_outputs`` ``[loss, *outputs]``
    (the model's output tensors, detached; see :func:`flatten_outputs`).
    Eval mode: the forward pass under ``torch.no_grad()``, returning the output tensors.
    ``device``: the device the step is traced for (``cpu`` or ``cuda``; default: the
    parameters' device, with meta counting as ``cpu``). For ``cuda`` when the model is not
    on a GPU, the step is traced on CPU stand-ins with CUDA's kernel choices
    (:func:`~model_ir.torch.cuda_kernels.emulate_cuda`).
    ``autocast``: a dtype (``torch.bfloat16``, ``torch.float16``) under which the forward
    pass and the loss run in ``torch.autocast`` for the traced device, as in the AMP
    recipe (backward and update outside it); the casts are ops of the graph.
    ``accumulation_steps=N`` (train mode): gradient accumulation, N micro-batches shaped
    like the example, each forward, loss and backward in turn (gradients add up in
    ``.grad`` as in eager), then one update; the step takes N copies of the batch
    arguments (slots ``micro<k>/inputs[i]``) and returns the N losses first.
    ``return_grads`` (train mode): the step also returns the parameters' gradients, as
    the optimizer saw them (after ``before_step``), after everything else.
    ``scaler`` (a ``torch.amp.GradScaler``, train mode with an optimizer): dynamic loss
    scaling as ``scaler.scale(loss).backward(); scaler.step(optimizer); scaler.update()``
    (see :mod:`model_ir.torch.grad_scaler`); gradients are unscaled before ``before_step``.
    ``lift_hyper_parameters``: the optimizer's numeric hyper-parameters (learning rate,
    momentum, betas, ...) are inputs of the step (:mod:`model_ir.torch.hyper_parameters`)
    instead of constants.
    The user's model, optimizer and tensors are left untouched.
    """
    _check_wrapper(model)
    args, kwargs = split_example_inputs(example_inputs)
    on_gpu = any(t.device.type == "cuda" for t in itertools.chain(model.parameters(), model.buffers()))
    if device is None:
        device = "cuda" if on_gpu else "cpu"
    if device not in ("cpu", "cuda"):
        raise CaptureError(f"capture device must be 'cpu' or 'cuda', got {device!r}")
    if device == "cpu" and on_gpu:
        raise CaptureError("the model is on a CUDA device; capture it for device 'cuda' or move it to the CPU")
    emulated = device == "cuda" and not on_gpu

    def kernels():
        return emulate_cuda(optimizer if train else None) if emulated else contextlib.nullcontext()

    @contextlib.contextmanager
    def mixed_precision():
        if autocast is None:
            yield
        elif emulated:  # CPU stand-ins: CPU autocast, with CUDA's policy
            with cuda_autocast_policy(), torch.autocast("cpu", dtype=autocast):
                yield
        else:
            with torch.autocast(device, dtype=autocast):
                yield

    if not isinstance(targets, (tuple, list)):
        targets = (targets,)
    # Plain tensor attributes of the model (not parameters or buffers) become constants.
    # Ops whose output shape depends on values (nonzero, boolean indexing) fail where
    # the user's code calls them, not later on the graph's unknown sizes.
    # Results get the strides eager's kernels give them (model_ir.torch.eager_strides).
    mode = EagerStridesFakeMode(shape_env=ShapeEnv(allow_dynamic_output_shape_ops=False), allow_non_fake_inputs=True)
    mode.in_place_sums = in_place_sums  # of an earlier trace (TracedStep.in_place_sums)
    mode.emulating_cuda = emulated
    # Optimizers read their step counter with .item(); an unbacked float keeps that
    # value symbolic, so the Python arithmetic on it becomes part of the graph.
    mode.allow_scalar_outputs = True

    named_params = list(model.named_parameters())
    named_buffers = [(n, b) for n, b in model.named_buffers() if b is not None]
    lazy = [n for n, t in [*named_params, *named_buffers] if torch.nn.parameter.is_lazy(t)]
    if lazy:
        raise CaptureError(f"the model has uninitialized parameters or buffers ({', '.join(lazy[:3])}: lazy modules "
                           "such as nn.LazyLinear): run one forward pass on an example batch first, which gives "
                           "them their shapes")
    # requires_grad as the real parameter's, in eval too (traced under no_grad): some
    # kernels choose by it, e.g. matmul folding a batched input into one mm.
    mode.measures_kernels = not emulated and all(
        type(t) in (torch.Tensor, torch.nn.Parameter, torch.nn.Buffer) and t.device.type == "cpu"
        for _, t in [*named_params, *named_buffers])
    fparams = {n: _fake(mode, p, p.requires_grad, host=emulated) for n, p in named_params}
    fbuffers = {n: _fake(mode, b, host=emulated) for n, b in named_buffers}
    if train:
        copy_gradient_hooks(named_params, fparams)
    by_id = {id(p): fparams[n] for n, p in named_params}
    name_of = {id(p): n for n, p in named_params}

    slots: list[InputSlot] = [InputSlot("parameter", n) for n in fparams]
    slots += [InputSlot("model_buffer", n) for n in fbuffers]
    flat: list[torch.Tensor] = list(fparams.values()) + list(fbuffers.values())

    state_layout: list[tuple[int, list[tuple[str, Any]]]] = []  # (param id, [(key, value|slot)])
    step_counts: dict[int, tuple[str, float]] = {}  # id(fake step tensor) -> (parameter, count at this step)
    fresh_state: set[int] = set()  # slot positions of state the optimizer has not created yet
    if optimizer is not None and train:
        closure = inspect.signature(optimizer.step).parameters.get("closure")
        if closure is not None and closure.default is inspect.Parameter.empty:
            raise CaptureError(f"{type(optimizer).__name__}.step() needs a closure that evaluates the loss again "
                               "(LBFGS: as many times as its line search decides); a step of one forward and one "
                               "backward pass is what capture takes: choose another optimizer")
        opt_params = [p for g in optimizer.param_groups for p in g["params"]]
        stray = next((p for p in opt_params if id(p) not in by_id), None)
        if stray is not None:
            raise _foreign_parameter_error(stray, loss_fn)
        fake_by_real = {id(p): by_id[id(p)] for p in opt_params}
        missing = [p for p in opt_params if p.requires_grad and not optimizer.state.get(p)]
        init_state = {}
        if missing:
            try:
                with kernels(), tensor_hyper_parameters_as_floats(optimizer):
                    init_state = _initial_fake_state(mode, optimizer, fake_by_real, {id(p) for p in missing})
            except CaptureError:
                raise
            except Exception as exc:  # ASGD, Adafactor branch on state values; LBFGS needs a closure
                raise CaptureError(f"{capture_error(exc, model)} (in {type(optimizer).__name__}.step(), run "
                                   "once on fake tensors to learn the shapes of its state)") from exc
        # Emulated: the state a CUDA run keeps on the host, learned (traced on a GPU: by device).
        host_keys = _host_state_keys(optimizer) if emulated else None
        group_of = {id(p): i for i, g in enumerate(optimizer.param_groups) for p in g["params"]}
        for p in opt_params:
            real_state = optimizer.state.get(p)
            entries = []
            source = real_state if real_state else init_state.get(by_id[id(p)], {})
            for key, value in source.items():
                if isinstance(value, torch.Tensor):
                    f = _fake(mode, value, host=emulated) if real_state else value
                    host = emulated and key in host_keys[group_of[id(p)]]
                    slots.append(InputSlot("optimizer_state", f"{name_of[id(p)]}/{key}", host=host))
                    flat.append(f)
                    if key == "step" and value.numel() == 1:  # read after its increment (step_guards)
                        step_counts[id(f)] = (name_of[id(p)], float(value) + 1 if real_state else 1.0)
                    if not real_state:
                        fresh_state.add(len(slots) - 1)
                    entries.append((key, f))
                else:
                    entries.append((key, value))
            state_layout.append((id(p), entries))
    else:
        fake_by_real = {}
    hyper = lifted_hyper_parameters(optimizer) if optimizer is not None and train and lift_hyper_parameters else ()
    for hp in hyper:
        example = example_input(hp, optimizer)  # a float's: a float64 CPU tensor
        slots.append(InputSlot("hyper_parameter", hp.name, host=emulated and example.device.type == "cpu"))
        flat.append(_fake(mode, example, host=emulated))
    scaler_constants = None
    if scaler is not None:
        check_scaler(scaler, optimizer, train)
    if scaler is not None and scaler.is_enabled():
        scaler_constants = ScalerConstants.of(scaler)
        for name, t in zip(SCALER_TENSORS, example_scaler_tensors(scaler, device)):
            slots.append(InputSlot("scaler_state", name))
            flat.append(_fake(mode, t, host=emulated))

    if isinstance(accumulation_steps, bool) or not isinstance(accumulation_steps, int) or accumulation_steps < 1:
        raise CaptureError(f"accumulation_steps must be an integer >= 1, got {accumulation_steps!r}")
    if accumulation_steps > 1 and (not train or return_outputs):
        raise CaptureError("gradient accumulation (accumulation_steps > 1) needs a training step without "
                           "return_outputs")
    batch_leaves, inputs_spec = flatten_batch((args, kwargs))
    target_leaves, targets_spec = flatten_batch(tuple(targets))
    if train:
        for kind, leaves in (("input", batch_leaves), ("target", target_leaves)):
            grad = [i for i, x in enumerate(leaves) if isinstance(x, torch.Tensor) and x.requires_grad]
            if grad:
                raise CaptureError(input_requires_grad_error(f"{kind} {grad[0]}"))
    for k in range(accumulation_steps):
        prefix = f"micro{k}/" if accumulation_steps > 1 else ""
        for i, leaf in enumerate(batch_leaves):
            if _is_leaf_tensor(leaf):
                slots.append(InputSlot("input", f"{prefix}inputs[{i}]"))
                flat.append(_fake(mode, leaf, host=emulated))
        for i, leaf in enumerate(target_leaves):
            if _is_leaf_tensor(leaf):
                slots.append(InputSlot("target", f"{prefix}targets[{i}]"))
                flat.append(_fake(mode, leaf, host=emulated))

    devices = {t.device.type for t in flat}
    if train and "cuda" in devices and not torch.cuda.is_available():
        raise CaptureError(
            "capturing a training step on CUDA tensors needs a machine with CUDA (the autograd engine "
            "initializes the device even for fake tensors); capture on a GPU machine, or build the model "
            "on 'meta' or 'cpu' to capture it here"
        )

    grads: dict[str, torch.Tensor] = {}
    returned_grads: list[str] = []
    reads = ValuedReads()  # the step counts and hyper-parameters a branch may be decided on
    found_inf_tensor: list[torch.Tensor] = []
    released: dict[StorageWeakRef, str] = {}
    structure: list[OutputStructure] = []
    loss_output: list[str | None] = []  # loss_among_outputs of the model's output, without loss_fn
    before_step_structure: list[tuple[int, OutputStructure]] = []
    # Set when the trace fails where the lifted hyper-parameters are read or used (the update).
    failed_with_lifted: list[bool] = []

    @contextlib.contextmanager
    def lifted_region():
        try:
            yield
        except Exception:
            if hyper:
                failed_with_lifted.append(True)
            raise

    def step(*tensors):
        it = iter(tensors)
        params = {n: next(it) for n in fparams}
        buffers = {n: next(it) for n in fbuffers}
        rebound: dict[str, torch.Tensor] = {}  # buffers the forward rebinds: the step's own, written at its end
        state = defaultdict(dict)
        for pid, entries in state_layout:
            state[fake_by_real[pid]] = {k: (next(it) if isinstance(v, torch.Tensor) else v) for k, v in entries}
        with lifted_region():
            hyper_values = read_symbolic(hyper, [next(it) for _ in hyper])
        for hp, value in zip(hyper, hyper_values):
            reads.value(value, ("hyper", hp.name), float(hp.read(optimizer)))
        scale, growth_tracker = (next(it), next(it)) if scaler_constants is not None else (None, None)

        def traced_model():
            # The model's attributes hold the traced parameters and buffers while the
            # loss, the backward (which reruns checkpointed forward code) and before_step
            # run: code there reads them (an L2 penalty over model.parameters(), a second
            # call of the model, clipping model.parameters()), and the real ones would be
            # constants of the graph, outside its gradients, dependencies and memory.
            return _reparametrize_module(model, {**params, **buffers}, tie_weights=True)

        losses = []
        for _ in range(accumulation_steps):
            leaves = [next(it) if _is_leaf_tensor(x) else x for x in batch_leaves]
            tleaves = [next(it) if _is_leaf_tensor(x) else x for x in target_leaves]
            call_args, call_kwargs = pytree.tree_unflatten(leaves, inputs_spec)
            tgts = pytree.tree_unflatten(tleaves, targets_spec)
            if not train:
                with torch.no_grad(), mixed_precision(), ReleaseRecorder() as recorder:
                    bound = {**params, **buffers}
                    out = torch.func.functional_call(model, bound, call_args, call_kwargs)
                    _rebind_buffers(bound, buffers, rebound)
                    _write_back_buffers(buffers, rebound)
                    del bound
                recorder.close()
                released.update(recorder.released)
                return tensor_leaves(out)
            with mixed_precision():
                bound = {**params, **buffers}
                out = torch.func.functional_call(model, bound, call_args, call_kwargs)
                _rebind_buffers(bound, buffers, rebound)
                del bound
                with traced_model():
                    loss = loss_fn(out, *tgts) if loss_fn is not None else default_loss(out)
            if loss_fn is None and not losses:
                loss_output.append(loss_among_outputs(out))
            if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                raise CaptureError("loss_fn must return a tensor with one element (the loss)")
            if not loss.requires_grad:
                raise CaptureError("the loss does not require grad: no parameter of the model influences it")
            root = loss * scale if scale is not None else loss
            with marking_accumulations(root, lambda now: setattr(mode, "summing", now)), traced_model():
                root.backward()
            losses.append(loss.detach())
        found_inf = None
        if scale is not None:
            with optimizer_bound_to(optimizer, fake_by_real, state):
                found_inf = unscale_grads(optimizer, scale)
        reported = []
        if before_step is not None:
            with traced_model():
                result = before_step(params)
            if result is not None and tensor_leaves(result):
                reported, reported_structure = flatten_outputs(result)
                before_step_structure.append((len(reported), reported_structure))
        grads.update({n: p.grad for n, p in params.items() if p.grad is not None})
        sparse = [n for n, g in grads.items() if g.layout != torch.strided]
        if sparse:
            raise CaptureError(f"parameter {sparse[0]!r} gets a {grads[sparse[0]].layout} gradient (e.g. "
                               "nn.Embedding(sparse=True)); capture handles dense tensors only: use sparse=False")
        if optimizer is not None:
            skippable = (torch.profiler.record_function(SKIP_IF_INF) if found_inf is not None
                         else contextlib.nullcontext())
            values = python_values(optimizer)
            with lifted_region(), optimizer_bound_to(optimizer, fake_by_real, state), \
                    hyper_parameters_bound(optimizer, hyper, hyper_values), skippable:
                optimizer.step()
            change = changed_python_value(optimizer, values)
            if change:
                raise CaptureError(python_counter_error(optimizer, change))
            if found_inf is not None:
                update_scale(scaler_constants, scale, growth_tracker, found_inf)
                found_inf_tensor.append(found_inf)
            for pid, entries in state_layout:
                now = state[fake_by_real[pid]]
                for k, v in entries:
                    if not isinstance(v, torch.Tensor) and now.get(k) != v:
                        change = f"state[{k!r}] of parameter {name_of[pid]!r} went from {v!r} to {now.get(k)!r}"
                        raise CaptureError(python_counter_error(optimizer, change))
                    if isinstance(v, torch.Tensor) and now.get(k) is not v:
                        raise CaptureError(
                            f"{type(optimizer).__name__} replaced its state tensor {k!r} instead of updating "
                            "it in place; such optimizers cannot be captured"
                        )
        _write_back_buffers(buffers, rebound)
        for p in params.values():
            p.grad = None
        returned_grads.extend(grads if return_grads else ())
        tail = [*(t.detach() for t in reported), *(grads[n] for n in returned_grads)]
        if not return_outputs:
            return [*losses, *tail]
        out_tensors, out_structure = flatten_outputs(out)
        structure.append(out_structure)
        return [*losses, *(t.detach() for t in out_tensors), *tail]

    # A training step keeps every module's mode as the user set it, as eager's
    # backward does (a frozen BatchNorm in eval, or a whole model trained in eval mode);
    # every module's flag is restored after.
    attributes = _module_attributes(model)
    real_grads = [(p, p.grad) for _, p in named_params]  # a held reference's gradient is traced into .grad
    if not train:
        model.eval()
    try:
        with refusing_python_random(type(model).__name__), kernels(), mode, _quiet_meta_failures(), \
                constant_decisions(), pairing_replayed_draws() as draws, valued_reads(reads, step_counts), \
                decided_draws():
            gm = make_fx(step, tracing_mode="real")(*flat)
    except Exception as exc:
        error = exc if isinstance(exc, CaptureError) else capture_error(exc, model)
        if failed_with_lifted:
            raise LiftedHyperParametersError(str(error)) from exc
        if error is exc:
            raise
        raise error from exc
    finally:
        mode.restore_real_writes()
        python_state, tensor_state = _restore_module_attributes(attributes)
        for p in fparams.values():
            p.grad = None
        for p, grad in real_grads:
            p.grad = grad
    held = _parameters_held_as_constants(gm, name_of) if train else []
    if held:
        raise CaptureError(f"the step reads parameter {held[0]!r} of the model through a reference held outside "
                           "it (a list made from model.parameters() before optimize(), say): the optimized step "
                           "would take it as a constant, without its gradient; read the parameters through the "
                           "model where the step runs (model.parameters(), model.weight)")
    if loss_output and loss_output[0]:
        found = loss_output[0]
        warn_user(f"the model returns several tensors and {found} is a single number, a loss it computed? Without "
                  "loss_fn the step's loss is the sum of every floating output; pass "
                  f"loss_fn=lambda out: {found.replace('output', 'out')} to train on that one")
    if python_state:
        warn_user(f"the model's forward changes Python attributes ({_attribute_names(model, python_state)}): an "
                  "optimized step runs the traced tensor operations only, so they keep the values they had before "
                  "the capture, where every eager call changes them; keep such state in a tensor (register_buffer) "
                  "for the step to update it")
    if tensor_state:
        warn_user(f"the model's forward sets tensor attributes of its modules "
                  f"({_attribute_names(model, tensor_state)}; pruning's masked weight is one): an optimized step "
                  "computes them inside its plan and leaves each attribute with the tensor it held before the "
                  "capture, where every eager call replaces it; compute them again to read them (pruning: "
                  "weight_orig * weight_mask)")
    kept = _traced_tensors_kept(model, [loss_fn, before_step, *hook_functions(model)])
    if kept:
        warn_user(f"the model's forward, its hooks or the loss keep tensors in Python ({', '.join(kept[:5])}"
                  f"{', ...' if len(kept) > 5 else ''}; activations a hook stores, say): they hold the capture's "
                  "fake tensors, and an optimized step runs no Python, so no step puts its tensors there; "
                  "return what you need from the model (return_outputs=True) or from before_step")

    guards = reads.guards()
    if any(g.specializes and any(kind == "hyper" for kind, _ in g.sources) for g in guards):
        # A value passed on as a number (a fused kernel's lr=): the step holds for that one value.
        raise LiftedHyperParametersError(f"{type(optimizer).__name__}'s update takes its hyper-parameters as numbers "
                                         "(a fused kernel's arguments)")
    views_for_metadata_writes(gm)  # never an arena slot reshaped in place
    mark_replayed_draws(gm, draws)  # checkpointed dropout: the backward's draws replay the forward's
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    slots = [attrs.evolve(s, placeholder=n.name) for s, n in zip(slots, placeholders)]
    slots = _drop_unused_fresh_state(gm, slots, fresh_state)
    skipped = _region_nodes(gm, SKIP_IF_INF)
    sums = _region_nodes(gm, ACCUMULATE)
    backward_start, optimizer_start = _strip_profiler_nodes(gm, train)
    _warn_values_read_into_python(gm, optimizer_start)
    if train:
        _warn_of_product_gradients(gm, backward_start)
    mark_in_place_sums(gm, sums)
    marked_sums, sums_elsewhere = in_place_sum_ordinals(gm, sums)
    found_inf = _node_of(gm, found_inf_tensor[0]) if found_inf_tensor else None
    return TracedStep(gm, tuple(slots), train, backward_start, optimizer_start, inputs_spec, targets_spec, grads,
                      constant_leaves(batch_leaves), constant_leaves(target_leaves),
                      return_outputs=bool(structure), outputs_structure=structure[0] if structure else None,
                      device=device, emulated=emulated, measures_kernels=mode.measures_kernels,
                      hyper_parameters=hyper,
                      returned_grads=tuple(returned_grads), accumulation_steps=accumulation_steps,
                      python_state=tuple(dict.fromkeys(python_state)),
                      tensor_state=tuple(dict.fromkeys(tensor_state)), guards=guards,
                      before_step_outputs=before_step_structure[0][0] if before_step_structure else 0,
                      before_step_structure=before_step_structure[0][1] if before_step_structure else None,
                      scaler=scaler_constants, found_inf=found_inf, skipped_if_inf=skipped,
                      released_after=released, in_place_sums=marked_sums, sums_laid_out_otherwise=sums_elsewhere)


def _parameters_held_as_constants(gm: fx.GraphModule, name_of: Mapping[int, str]) -> list[str]:
    """The model's trainable parameters that ``gm`` holds as constants: the traced step
    read the real tensor (a reference the loss or before_step kept), not the traced one."""
    constants = (getattr(gm, n.target, None) for n in gm.graph.nodes if n.op == "get_attr")
    return list(dict.fromkeys(name_of[id(t)] for t in constants
                              if isinstance(t, torch.Tensor) and id(t) in name_of and t.requires_grad))


def _drop_unused_fresh_state(gm: fx.GraphModule, slots: list[InputSlot], fresh: set[int]) -> list[InputSlot]:
    """``slots`` without the state the capture created for parameters the update never
    reads (no gradient reached them, so ``step()`` skipped them), their placeholders
    removed from ``gm``: eager PyTorch never creates that state, so neither do the
    step's inputs, its persistent memory or :func:`~model_ir.torch.init_optimizer_state`.
    State the optimizer already holds stays an input even when unused: it is memory."""
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    by_parameter: dict[str, list[int]] = defaultdict(list)
    for i in fresh:
        by_parameter[slots[i].name.rsplit("/", 1)[0]].append(i)
    unused = {i for ids in by_parameter.values() if not any(placeholders[i].users for i in ids) for i in ids}
    if not unused:
        return slots
    for i in unused:
        gm.graph.erase_node(placeholders[i])
    gm.recompile()
    return [s for i, s in enumerate(slots) if i not in unused]


def _check_wrapper(model: torch.nn.Module) -> None:
    """Refuse the wrappers whose work the captured step would not do."""
    if hasattr(model, "_orig_mod") and type(model).__name__ == "OptimizedModule":
        raise CaptureError("the model is wrapped by torch.compile, whose code cannot be traced again: pass the "
                           "module it compiles (model._orig_mod), whose step is then planned and run as is")
    scripted = next((name or "the model" for name, m in model.named_modules() if isinstance(m, torch.jit.ScriptModule)),
                    None)
    if scripted is not None:
        raise CaptureError(f"{scripted} is a TorchScript module (torch.jit.script or torch.jit.trace), whose compiled "
                           "code capture cannot trace: pass the Python module it was made from")
    wrapper = type(model).__name__
    if wrapper in ("DistributedDataParallel", "FullyShardedDataParallel", "DataParallel"):
        raise CaptureError(f"the model is wrapped by {wrapper}, whose work across devices (replicas, the "
                           "gradients' all-reduce in hooks on the real parameters) is outside what the capture "
                           "traces: the step would train one replica alone and the replicas would silently "
                           "diverge. Data-parallel training is not supported; optimize model.module for one process")


#: A module's registries, whose entries a forward may add to (``register_buffer`` on
#: first use): put back entry by entry.
_REGISTRIES = ("_parameters", "_buffers", "_modules")


def _rebind_buffers(bound: dict, buffers: dict, rebound: dict) -> None:
    """A forward that rebinds a buffer (``self.ema = 0.9 * self.ema + ...``) leaves the new
    tensor in ``bound`` (``functional_call`` writes it back there), where eager's module
    holds it from then on: ``buffers`` takes it, for what reads the buffer later in the
    step (the loss, the next micro-batch), and ``rebound`` (key -> the step's buffer) keeps
    the buffer the step copies it into at its end (:func:`_write_back_buffers`; not now:
    autograd may have saved the old value for the backward)."""
    for key, old in list(buffers.items()):
        new = bound.get(key, old)
        if new is old:
            continue
        if not isinstance(new, torch.Tensor) or new.shape != old.shape or new.dtype != old.dtype:
            raise CaptureError(f"the forward replaces buffer {key!r} by "
                               + (f"a tensor of shape {tuple(new.shape)} {new.dtype}" if isinstance(new, torch.Tensor)
                                  else f"a {type(new).__name__}")
                               + f" (it was {tuple(old.shape)} {old.dtype}): an optimized step updates buffers in "
                               "place; update it in place (self.buf.copy_(...)) or keep its shape and dtype")
        rebound.setdefault(key, old)
        buffers[key] = new


def _write_back_buffers(buffers: dict, rebound: dict) -> None:
    """Copy what the step's forward passes rebound each buffer of ``rebound`` to into it."""
    with torch.no_grad():
        for key, original in rebound.items():
            original.copy_(buffers[key].detach())


def _module_attributes(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module, dict, dict]]:
    """Each module's name, attributes and the entries of its registries and hook dicts,
    to put back after the trace (see :func:`_restore_module_attributes`)."""
    return [(name, m, dict(vars(m)), {key: dict(value) for key, value in vars(m).items()
                                      if key in _REGISTRIES or ("_hooks" in key and isinstance(value, dict))})
            for name, m in model.named_modules()]


def _attribute_names(model: torch.nn.Module, pairs: list[tuple[str, str]]) -> str:
    """``Class.attribute`` of the first three distinct ``(module name, attribute)`` pairs, for a warning."""
    modules = dict(model.named_modules())
    names = list(dict.fromkeys(f"{type(modules[m]).__name__}.{key}" for m, key in pairs))
    return ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")


def _restore_module_attributes(saved: list[tuple[str, torch.nn.Module, dict, dict]],
                               ) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Undo what the trace bound on the user's modules: the ``training`` flags,
    attributes a forward set, such as a cache of fake tensors (``self._cos = ...``) that
    would break the model's next eager call, and the hooks it registered (Hugging Face's
    output capturing installs its hooks at the first call, behind a flag put back here:
    kept, the next eager call installed them twice and its decoder got each hidden state
    twice). Other in-place changes to objects (a list a forward appends to) are not undone.

    Returns ``(module name, attribute)`` for each plain Python value (number, string,
    flag) the forward set or changed, ``training`` aside: state that eager changes at
    every call and an optimized step, which runs tensor operations only, never does. A
    flag the forward set where it registered hooks is their installation mark, put back
    with them: not such state. And, second, for each tensor attribute the forward
    replaced (pruning's ``weight``, recomputed by its pre-hook): a new attribute is a
    cache of the trace's, but one held before the capture is what a user reads."""
    changed, hooked, flags, tensors = [], False, [], []
    for name, m, before, registries in saved:
        for key, entries in registries.items():  # a buffer registered by the traced forward is a fake tensor
            registry = getattr(m, key)
            if registry.keys() != entries.keys() or any(registry[k] is not v for k, v in entries.items()):
                hooked = hooked or "_hooks" in key
                if key == "_buffers":  # a buffer the forward rebinds (self.ema = ...) or sets from None
                    tensors += [(name, k) for k, v in registry.items() if entries.get(k, _ABSENT) is not v]
                registry.clear()
                registry.update(entries)
        now = vars(m)
        for key in [k for k in now if k not in before]:
            if isinstance(now[key], _PLAIN):
                (flags if now[key] is True else changed).append((name, key))
            del now[key]
        for key, value in before.items():
            current = now.get(key, _ABSENT)
            if current is not value:
                if key != "training" and isinstance(current, _PLAIN) and not _equal_plain(current, value):
                    changed.append((name, key))
                if isinstance(value, torch.Tensor) and isinstance(current, torch.Tensor):
                    tensors.append((name, key))
                now[key] = value
    return (changed if hooked else changed + flags), tensors


_ABSENT = object()
_PLAIN = (bool, int, float, str)


def _equal_plain(a, b) -> bool:
    return type(a) is type(b) and a == b


def _traced_tensors_kept(model: torch.nn.Module, functions) -> list[str]:
    """Where a fake tensor of the trace was left behind: ``Module.attribute`` of each
    container attribute of the model's modules that holds one (appended or stored by the
    forward), and each variable, global or object attribute of ``functions`` (the loss,
    ``before_step``, the hooks) that is one or holds one (``features[name] = output``)."""
    found = []
    for m in model.modules():
        for key, value in vars(m).items():
            if isinstance(value, _CONTAINERS) and not key.startswith("_") and _holds_fake_tensor(value):
                found.append(f"{type(m).__name__}.{key}")
    for fn in {id(f): f for f in functions if f is not None}.values():  # hooks may be unhashable
        found += [where for where, value in scope_values(fn)
                  if isinstance(value, (torch.Tensor, *_CONTAINERS)) and _holds_fake_tensor(value)]
    return list(dict.fromkeys(found))


_CONTAINERS = (list, tuple, dict, set, collections.deque)


def _holds_fake_tensor(value, depth: int = 3) -> bool:
    """Whether ``value`` is a fake tensor or holds one, ``depth`` containers deep (a
    dict of lists of outputs), looking at the first thousand items of each."""
    from torch._subclasses.fake_tensor import FakeTensor

    if isinstance(value, FakeTensor):
        return True
    if depth == 0 or not isinstance(value, _CONTAINERS):
        return False
    items = value.values() if isinstance(value, dict) else value
    return any(_holds_fake_tensor(v, depth - 1) for v in itertools.islice(items, 1000))


_PRODUCTS = (torch.ops.aten.prod.default, torch.ops.aten.prod.dim_int)


def _warn_of_product_gradients(gm: fx.GraphModule, backward_start: str | None) -> None:
    """Warn when the backward differentiates a product (``torch.prod``): eager's formula
    depends on whether the input holds a zero (``grad * result / input`` when none), which
    a trace cannot ask, so the step always runs the zero-safe one (cumulative products):
    gradients that differ from eager's in the last bits (measured: 1e-13 on float64)."""
    nodes = list(gm.graph.nodes)
    start = next((i for i, n in enumerate(nodes) if n.name == backward_start), len(nodes))
    if any(n.target in _PRODUCTS for n in nodes[:start]) and any(
            n.target is torch.ops.aten.cumprod.default for n in nodes[start:]):
        warn_user("the step differentiates torch.prod: eager's backward divides the product by each factor when "
                  "none is zero, the optimized step always takes the zero-safe formula (a trace cannot look at "
                  "the values), so its gradients may differ from eager's in the last bits")


def _warn_values_read_into_python(gm: fx.GraphModule, optimizer_start: str | None) -> None:
    """Warn of tensor values the forward pass, the loss or ``before_step`` read into Python
    (``.item()``, ``float()``) that no traced op uses (logging, say): traced, they are
    symbols; an optimized step runs no Python, so such code never sees a step's value. (A
    value a traced op uses, ``x * t.item()``, is computed at every step.)"""
    reads = 0
    for node in gm.graph.nodes:
        if node.name == optimizer_start:
            break
        if (node.target is torch.ops.aten._local_scalar_dense.default and not node.users
                and node.args[0].op != "placeholder"):  # the optimizer's hyper-parameters are read unused too
            reads += 1
    if reads:
        warn_user(f"the model, the loss or before_step reads {reads} tensor value(s) into Python (.item(), float(), "
                  ".tolist()) that no tensor operation uses, e.g. to log them: the capture saw symbols, not "
                  "values, and an optimized step runs no Python, so that code sees no step's values; log the "
                  "loss the step returns (its outputs with return_outputs=True; a tensor before_step returns, "
                  "such as the gradient norm, is step.before_step_result) instead")


def _region_nodes(gm: fx.GraphModule, name: str) -> frozenset[str]:
    """The nodes traced inside ``torch.profiler.record_function(name)`` (call the
    function before the profiler nodes are stripped)."""
    inside: set[str] = set()
    enter = None
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        if _namespace(node.target) == "profiler":
            if enter is None and node.args and node.args[0] == name:
                enter = node
            elif enter is not None and node.args and node.args[0] is enter:
                enter = None
            continue
        if enter is not None:
            inside.add(node.name)
    return frozenset(inside)


def _node_of(gm: fx.GraphModule, tensor: torch.Tensor) -> str:
    """The name of the first node whose traced value lives in ``tensor``'s storage."""
    storage = StorageWeakRef(tensor.untyped_storage())
    found = [n.name for n in gm.graph.nodes if isinstance(v := n.meta.get("val"), torch.Tensor)
             and StorageWeakRef(v.untyped_storage()) == storage]
    if not found:
        raise CaptureError("internal error: the traced graph has no node for the GradScaler's found_inf")
    return found[0]


def _strip_profiler_nodes(gm: fx.GraphModule, train: bool) -> tuple[str | None, str | None]:
    """Remove ``profiler._record_function_*`` nodes; return where backward and optimizer start.

    The optimizer's ``Optimizer.step#...`` record-function marks its first node; the
    backward pass starts right after the node that computes the loss.
    """
    nodes = list(gm.graph.nodes)
    optimizer_start = None
    for i, node in enumerate(nodes):
        is_profiler = node.op == "call_function" and _namespace(node.target) == "profiler"
        if is_profiler and optimizer_start is None and node.args and str(node.args[0]).startswith("Optimizer.step"):
            later = [n for n in nodes[i + 1:] if not (n.op == "call_function" and _namespace(n.target) == "profiler")]
            optimizer_start = later[0].name if later and later[0].op != "output" else None
    for node in reversed(nodes):
        if node.op == "call_function" and _namespace(node.target) == "profiler":
            gm.graph.erase_node(node)
    gm.recompile()
    backward_start = None
    if train:
        out = next(n for n in gm.graph.nodes if n.op == "output")
        loss = out.args[0][0]
        while isinstance(loss, fx.Node) and loss.op == "call_function" and _is_view_like(loss.target):
            loss = loss.args[0]
        found = False
        for node in gm.graph.nodes:
            if found:
                backward_start = node.name if node.op != "output" else None
                break
            found = node is loss
    return backward_start, optimizer_start


def _namespace(target) -> str | None:
    return getattr(target, "namespace", None)


def _is_view_like(target) -> bool:
    schema = getattr(target, "_schema", None)
    if schema is None or not schema.returns:
        return False
    ret = schema.returns[0].alias_info
    return ret is not None and not ret.is_write
