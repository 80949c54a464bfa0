"""Binding the user's live objects to the captured step's inputs on every call.

The user's ``model`` and ``optimizer`` stay the source of truth: every call reads
the current parameter, buffer and optimizer-state tensors from them (cheap attribute
and dict lookups, no ``named_parameters()`` walk), so ``load_state_dict`` and friends
keep working. Anything the plan depends on is checked: input shapes, dtypes and
devices, the shapes of replaced persistent tensors, and the optimizer's
hyper-parameters: the numeric ones (learning rate, momentum, betas, ...) are read
from ``optimizer.param_groups`` at every call and passed to the step (only a change of
sign needs a new plan, see :mod:`model_ir.torch.hyper_parameters`); the others
(``nesterov``, ``maximize``, ...) are constants of the step and must not change.
So are, in train mode, which parameters require grad (only those get gradients and
updates), the hooks on their gradients (``register_hook``: traced into the step) and
which tensor the optimizer holds at each place of its param groups (the update is
captured place by place): a parameter frozen, unfrozen or replaced by one the optimizer
does not hold would otherwise be updated where eager PyTorch would not.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import torch

from model_ir.torch.grad_scaler import SCALER_TENSORS, scaler_tensors
from model_ir.torch.plain_values import same_value
from model_ir.torch.step_guards import failed_guard
from model_ir.torch.tracing import (
    changed_constant,
    describe_call,
    describe_structure,
    flatten_batch,
    gradient_hooks,
    input_requires_grad_error,
    post_accumulate_grad_hook_error,
)
from model_runtime.errors import ReoptimizeError, RuntimeLayerError
from model_runtime.module_state import ModuleState, graph_constants


def _owner(model: torch.nn.Module, qualified: str) -> tuple[torch.nn.Module, str]:
    *path, attr = qualified.split(".")
    module = model
    for p in path:
        module = getattr(module, p)
    return module, attr


_MISSING = object()


def _layout(t) -> tuple | None:
    """What a captured step assumes of a persistent tensor besides its identity."""
    return (t.dtype, t.device, t.shape, t.stride()) if isinstance(t, torch.Tensor) else None


class Binder:
    """Produces the flat tensor list of a captured step from ``(model, optimizer, batch)``."""

    def __init__(self, step, model: torch.nn.Module, optimizer, device: torch.device, scaler=None, functions=()):
        self.step = step
        self.model = model
        self.optimizer = optimizer
        self.scaler = scaler
        placeholders = [n for n in step.module.graph.nodes if n.op == "placeholder"]
        self.expected = [n.meta["val"] for n in placeholders]
        self.module_refs: list[tuple[int, torch.nn.Module, str]] = []  # (position, owner, attribute)
        self.state_refs: list[tuple[int, int, str]] = []  # (position, position of its parameter, key)
        self.batch_slots: list[tuple[int, str, int, int]] = []  # (position, kind, leaf index, micro-batch)
        self.hyper_slots: list[tuple[int, Any]] = []  # (position, HyperParameter)
        self.hyper_inputs: dict[int, torch.Tensor] = {}  # position -> the float's tensor, kept across calls
        self.scaler_slots: list[tuple[int, int]] = []  # (position, index in SCALER_TENSORS)
        position_of = {s.name: i for i, s in enumerate(step.inputs) if s.kind == "parameter"}
        for pos, slot in enumerate(step.inputs):
            if slot.kind in ("parameter", "model_buffer"):
                owner, attr = _owner(model, slot.name)
                self.module_refs.append((pos, owner, attr))
            elif slot.kind == "optimizer_state":
                pname, key = slot.name.rsplit("/", 1)
                self.state_refs.append((pos, position_of[pname], key))
            elif slot.kind == "hyper_parameter":
                self.hyper_slots.append((pos, step.hyper_parameter(slot.name)))
            elif slot.kind == "scaler_state":
                self.scaler_slots.append((pos, SCALER_TENSORS.index(slot.name)))
            else:
                micro, _, leaf = slot.name.rpartition("/")  # "micro<k>/inputs[i]" with accumulation
                index = int(leaf[leaf.index("[") + 1:-1])
                self.batch_slots.append((pos, slot.kind, index, int(micro[5:]) if micro else 0))
        groups = optimizer.param_groups if optimizer is not None else []
        # What optimizer.step() reads is in optimizer.defaults; other keys of a param group
        # (a scheduler's initial_lr, max_lr, ...) are none of the step's business.
        lifted = {(hp.group, hp.key) for _, hp in self.hyper_slots}
        self.hyper = [[(k, g[k]) for k in optimizer.defaults if k in g and (i, k) not in lifted]
                      for i, g in enumerate(groups)]
        self.persistent: list[Any] = [None] * len(step.inputs)
        self._layout: list[Any] = [None] * len(step.inputs)
        self.device = device
        params = [(pos, step.inputs[pos].name, getattr(owner, attr)) for pos, owner, attr in self.module_refs
                  if step.inputs[pos].kind == "parameter"]
        # Read now, as the step was just captured with them (see check_parameters).
        self.grad_flags = ([(pos, name, t.requires_grad, gradient_hooks(t)) for pos, name, t in params]
                           if step.train else [])
        place = {id(p): (i, j) for i, g in enumerate(groups) for j, p in enumerate(g["params"])}
        self.optimized = [(pos, name, *place[id(t)]) for pos, name, t in params if id(t) in place]
        self.group_sizes = [len(g["params"]) for g in groups]
        self.parameter_refs = {step.inputs[pos].name: (owner, attr) for pos, owner, attr in self.module_refs}
        # Read now, as the step was just captured with them: a training step keeps each
        # module's own mode (a frozen BatchNorm in eval, a whole model trained in eval).
        self.module_state = ModuleState(model, modes=step.train, volatile=step.python_state + step.tensor_state,
                                        functions=functions,
                                        constants=graph_constants(step.module))

    def check_guards(self) -> None:
        """A call where the optimizer's update would branch otherwise than at capture (on
        its step count or a hyper-parameter, :mod:`model_ir.torch.step_guards`: RAdam's
        rectification from its 6th step) asks for a new plan."""
        guards = self.step.guards
        if not guards:
            return
        refs = self.parameter_refs
        failed = failed_guard(guards, self.optimizer, hyper_parameter=self.step.hyper_parameter,
                              parameter=lambda name: getattr(*refs[name]))
        if failed is not None:
            raise ReoptimizeError(f"{type(self.optimizer).__name__}'s update branches otherwise at this step "
                                  f"(on its step count or hyper-parameters: {failed.key} no longer holds)")

    def check_modules(self) -> None:
        """A call after a change to a submodule's mode, plain attributes or hooks
        (:mod:`model_runtime.module_state`) asks for a new plan."""
        changed = self.module_state.changed()
        if changed:
            raise ReoptimizeError(changed)

    def _check(self, pos: int, t, what: str, *, exact_strides: bool = False) -> None:
        """Raise :class:`ReoptimizeError` unless ``t`` is laid out as the step's slot ``pos``
        was captured: strides compared where a dimension has more than one element, or all
        of them (``exact_strides``: a persistent tensor, whose captured views and kernels
        took them all; a 1x1 convolution's weight made channels-last differs only there)."""
        want = self.expected[pos]
        if not isinstance(t, torch.Tensor):
            raise ReoptimizeError(f"{what} must be a tensor, got {type(t).__name__}")
        # The device captured for this very tensor, not the model's: e.g. Adam keeps its
        # step counters on the CPU for CUDA parameters.
        if t.shape != want.shape or t.dtype != want.dtype or t.device != want.device:
            raise ReoptimizeError(
                f"{what} is {tuple(t.shape)} {t.dtype} on {t.device}; the step was optimized for "
                f"{tuple(want.shape)} {want.dtype} on {want.device}"
            )
        # The captured ops (views above all) assume the example's memory layout.
        if any((exact_strides or n > 1) and a != b for n, a, b in zip(t.shape, t.stride(), want.stride())):
            raise ReoptimizeError(
                f"{what} has strides {t.stride()}, the step was optimized for {tuple(want.stride())} "
                "(another memory layout, e.g. a transposed or sliced tensor); pass a tensor laid out like "
                "the example (e.g. .contiguous()) to reuse the plan made for it"
            )

    def persistent_tensors(self) -> list:
        """Current parameters, model buffers and optimizer state, checked when replaced."""
        old = self.persistent
        new = list(old)
        try:
            for pos, owner, attr in self.module_refs:
                new[pos] = getattr(owner, attr)
            self.check_parameters(new)
            if self.state_refs:
                # Looked up every call: load_state_dict replaces the optimizer's state dict.
                state = self.optimizer.state
                for pos, ppos, key in self.state_refs:
                    new[pos] = state[new[ppos]][key]
            if self.scaler_slots:
                changed = self.step.scaler.changed(self.scaler)
                if changed:
                    raise ReoptimizeError(changed)
                # As the scaler's first scale() would (load_state_dict may also replace them).
                scaler_state = scaler_tensors(self.scaler, self.expected[self.scaler_slots[0][0]].device)
                for pos, k in self.scaler_slots:
                    new[pos] = scaler_state[k]
        except (KeyError, AttributeError):
            raise ReoptimizeError(
                "cannot find a parameter, buffer or optimizer state tensor the step was optimized with "
                "(was the model or optimizer rebuilt? then call model_runtime.optimize with the new ones)"
            ) from None
        # Checked even when it is the same object: Module._apply (model.double(), .half(),
        # .to(memory_format=torch.channels_last), .to(device)) and `p.data = ...` keep the
        # Parameter and swap its dtype, device, shape or strides underneath.
        layout = list(map(_layout, new))
        if layout != self._layout or any(map(operator.is_not, new, old)):
            for pos, (t, before) in enumerate(zip(new, old)):
                if t is not before or layout[pos] != self._layout[pos]:
                    slot = self.step.inputs[pos]
                    self._check(pos, t, f"{slot.kind} {slot.name!r}", exact_strides=True)
            self.persistent = new
            self._layout = layout
        return new

    def check_parameters(self, tensors: list) -> None:
        """Raise unless the optimizer holds the parameters ``tensors`` as when the step was
        planned (:class:`RuntimeLayerError` if it holds a tensor the model no longer has:
        no plan can be made then; else :class:`ReoptimizeError`) and they require grad as then."""
        groups = self.optimizer.param_groups if self.optimizer is not None else []
        if (list(map(len, (g["params"] for g in groups))) != self.group_sizes
                or any(groups[i]["params"][j] is not tensors[pos] for pos, _, i, j in self.optimized)):
            raise self._moved_parameter(tensors, groups)
        for pos, name, planned, hooks in self.grad_flags:
            t = tensors[pos]
            if t.requires_grad != planned:
                now = "requires grad" if not planned else "no longer requires grad"
                raise ReoptimizeError(f"parameter {name!r} {now}; the step was planned with requires_grad={planned}")
            if gradient_hooks(t) != hooks:
                raise ReoptimizeError(f"parameter {name!r}: its gradient hooks (register_hook) changed since the "
                                      "step was planned; they are ops of the step")
            if getattr(t, "_post_accumulate_grad_hooks", None):
                raise RuntimeLayerError(post_accumulate_grad_hook_error(name))

    def _moved_parameter(self, tensors: list, groups: list) -> RuntimeLayerError:
        """The error saying how the optimizer's parameters differ from those planned with."""
        planned_as = {(i, j): name for _, name, i, j in self.optimized}
        model_params = {id(tensors[pos]) for pos, *_ in self.grad_flags}
        for i, g in enumerate(groups):
            for j, p in enumerate(g["params"]):
                if id(p) in model_params:
                    continue
                # capture_step refuses such an optimizer, and eager would update a tensor the model does not use
                was = planned_as.get((i, j))
                return RuntimeLayerError(
                    f"the optimizer holds a tensor of shape {tuple(p.shape)} (param_groups[{i}]['params'][{j}]) "
                    "that is not a parameter of the model"
                    + (f" (was parameter {was!r} replaced by a new one?)" if was else "")
                    + "; eager PyTorch would not update the model's new parameter, and no plan can be made while the "
                    "optimizer holds a tensor the model does not: put the model's parameters in the optimizer "
                    "(or build a new one), then call model_runtime.optimize again")
        return ReoptimizeError("the optimizer's parameters changed since the step was planned (added, removed, "
                               "moved between param groups or replaced by other parameters of the model)")

    def check_hyper_parameters(self) -> None:
        """Raise :class:`ReoptimizeError` if a constant hyper-parameter changed, a group was
        added or removed, or a lifted one changed type or sign."""
        groups = self.optimizer.param_groups if self.optimizer is not None else []
        if len(groups) != len(self.hyper):
            raise ReoptimizeError(f"the optimizer's param groups changed ({len(self.hyper)} when planned, now "
                                  f"{len(groups)})")
        for i, (g, items) in enumerate(zip(groups, self.hyper)):
            for k, v in items:
                now = g.get(k, _MISSING)
                if now is not v and not same_value(now, v):
                    raise ReoptimizeError(
                        f"optimizer hyper-parameter {k!r} of param group {i} changed from {v!r} to "
                        f"{now!r}; the optimized step holds it as a constant"
                    )

    def hyper_parameter_tensors(self, tensors: list) -> None:
        """Put the current value of every lifted hyper-parameter into ``tensors``: a float
        into one tensor kept from call to call, filled in place, so that it is persistent as
        the plan counts it (not 8 bytes allocated per call beside the arena)."""
        for pos, hp in self.hyper_slots:
            value = hp.read(self.optimizer)
            problem = hp.problem(value)
            if problem:
                raise ReoptimizeError(problem)
            if hp.kind == "tensor":
                tensors[pos] = value
            elif (held := self.hyper_inputs.get(pos)) is None:
                tensors[pos] = self.hyper_inputs[pos] = hp.as_input(value)
            else:
                tensors[pos] = held.fill_(value)

    def bind(self, args: Sequence, kwargs: dict, targets) -> list:
        """The step's input tensors for a call ``step(*args, targets=targets, **kwargs)``."""
        return self.bind_micro_batches([(args, kwargs, targets)])

    def bind_micro_batches(self, batches: Sequence[tuple[Sequence, dict, Any]]) -> list:
        """The step's input tensors for ``(args, kwargs, targets)`` of each micro-batch
        (one, or the step's ``accumulation_steps``)."""
        steps = getattr(self.step, "accumulation_steps", 1)
        if len(batches) != steps:
            raise ReoptimizeError(f"the step was optimized for {steps} micro-batch(es) per update, got {len(batches)}")
        self.check_modules()
        self.check_hyper_parameters()
        self.check_guards()
        tensors = list(self.persistent_tensors())
        self.hyper_parameter_tensors(tensors)
        flat = [self._flat_batch(args, kwargs, targets) for args, kwargs, targets in batches]
        for pos, kind, index, micro in self.batch_slots:
            leaves, tleaves = flat[micro]
            t = (leaves if kind == "input" else tleaves)[index]
            what = f"{kind} {index}" + (f" of micro-batch {micro}" if steps > 1 else "")
            self._check(pos, t, what)
            if t.requires_grad and self.step.train:
                raise RuntimeLayerError(input_requires_grad_error(what))
            tensors[pos] = t
        return tensors

    def _flat_batch(self, args: Sequence, kwargs: dict, targets) -> tuple[list, list]:
        leaves, spec = flatten_batch((tuple(args), dict(kwargs)))
        if spec != self.step.inputs_spec:
            raise ReoptimizeError(
                f"the call is {describe_call(spec)}, the step was optimized for {describe_call(self.step.inputs_spec)} "
                "(* a tensor or value); pass the same arguments as the example inputs"
            )
        targets = tuple(targets) if isinstance(targets, (tuple, list)) else (targets,)
        tleaves, tspec = flatten_batch(targets)
        if tspec != self.step.targets_spec:
            raise ReoptimizeError(
                f"the targets are {describe_structure(tspec)}, the step was optimized for "
                f"{describe_structure(self.step.targets_spec)} (* a tensor or value)"
            )
        changed = (changed_constant(leaves, self.step.inputs_constants)
                   or changed_constant(tleaves, self.step.targets_constants, "target"))
        if changed:
            raise ReoptimizeError(changed)
        return leaves, tleaves
