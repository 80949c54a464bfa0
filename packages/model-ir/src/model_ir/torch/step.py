"""A captured step: the IR graph together with the executable aten-level program."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs
import torch
from torch import fx

from model_ir.graph import Graph
from model_ir.plan import Schedule
from model_ir.torch.errors import ExecutionError
from model_ir.torch.grad_scaler import SCALER_TENSORS, scaler_tensors
from model_ir.torch.optimizer_values import kept_python_values, step_hooks_off
from model_ir.torch.plain_values import same_value
from model_ir.torch.step_guards import failed_guard
from model_ir.torch.tracing import (
    InputSlot, OutputStructure, changed_constant, describe_call, flatten_batch, split_example_inputs,
)


@attrs.frozen(eq=False)
class CapturedStep:
    """The IR :attr:`graph` of one step and the FX :attr:`module` that executes it.

    - ``module`` is an aten-level ``torch.fx.GraphModule`` that takes the tensors of
      :attr:`inputs` (in that order) and returns ``[loss]`` (train; ``[loss,
      *outputs]`` when captured with ``return_outputs``) or the model's output
      tensors (eval); it updates parameters, model buffers and optimizer state
      in place.
    - ``inputs[i]`` says what the i-th argument is (:class:`InputSlot`); its IR buffer
      id is ``"<kind>:<name>"`` (e.g. ``"parameter:fc.weight"``).
    - ``op_nodes[op_id]``: the FX node an IR op runs (first, its name is the op id),
      then the folded nodes (views, ``getitem``, scalar arithmetic) first needed by it.
    - ``node_buffers[node]``: the IR buffers a node's value lives in.
    - ``outputs``: the IR buffers of the outputs (the loss, and the model outputs'
      storages with ``return_outputs``); those not persistent are ``output=True``.
    """

    graph: Graph
    module: fx.GraphModule
    inputs: tuple[InputSlot, ...]
    op_nodes: Mapping[str, tuple[str, ...]]
    node_buffers: Mapping[str, tuple[str, ...]]
    folded: frozenset[str]
    element_buffers: Mapping[str, tuple[str | None, ...]]
    outputs: tuple[str, ...]
    train: bool
    inputs_spec: Any = None
    targets_spec: Any = None
    #: ``(leaf position, value)`` of the non-tensor leaves of the example inputs and
    #: targets: constants of the step, so a call must pass the same values
    inputs_constants: tuple = ()
    targets_constants: tuple = ()
    #: train mode: the module also returns the model's output tensors after the loss
    return_outputs: bool = False
    outputs_structure: OutputStructure | None = None
    #: the optimizer hyper-parameters passed as inputs (slots of kind ``hyper_parameter``)
    hyper_parameters: tuple = ()
    #: captured with ``return_grads``: the parameters whose gradients the module returns last
    returned_grads: tuple[str, ...] = ()
    #: train mode: the parameters the backward computes a gradient for (eager's ``.grad``)
    gradients: tuple[str, ...] = ()
    #: ``(module name, attribute)`` of the plain Python values the traced forward changed
    #: (a call counter), restored after the trace: no step changes them, every eager call does
    python_state: tuple[tuple[str, str], ...] = ()
    #: ``(module name, attribute)`` of the tensor attributes the traced forward replaced
    #: (pruning's ``weight``), restored after the trace: every eager call replaces them
    tensor_state: tuple[tuple[str, str], ...] = ()
    #: the branches the update took on its step count or hyper-parameters
    #: (:class:`~model_ir.torch.step_guards.Guard`): each call must take them too
    guards: tuple = ()
    #: how many tensors ``before_step`` returned: the module returns them just before the
    #: gradients (see :meth:`before_step_result`)
    before_step_outputs: int = 0
    before_step_structure: OutputStructure | None = None
    #: micro-batches per update (gradient accumulation); the module returns that many losses first
    accumulation_steps: int = 1
    #: captured with a ``GradScaler``: its constants, the FX node holding ``found_inf``,
    #: and the FX nodes skipped when it is non-zero (see :mod:`model_ir.torch.grad_scaler`)
    scaler: Any = None
    found_inf: str | None = None
    skipped_if_inf: frozenset[str] = frozenset()

    def stateful_parameters(self) -> tuple[str, ...]:
        """The parameters whose optimizer state tensors are inputs of the step, by name."""
        return tuple(dict.fromkeys(s.name.rsplit("/", 1)[0] for s in self.inputs if s.kind == "optimizer_state"))

    def hyper_parameter(self, name: str):
        """The :class:`~model_ir.torch.hyper_parameters.HyperParameter` of slot ``name``."""
        return next(hp for hp in self.hyper_parameters if hp.name == name)

    def model_outputs(self, tensors: Sequence[torch.Tensor]):
        """The model's output rebuilt from its tensors (``module``'s results after the
        loss in train mode with :attr:`return_outputs`): a tensor, tuple, list, dict...
        like the eager model's, or a flat tuple for containers pytree does not know."""
        if self.outputs_structure is None:
            return tuple(tensors)
        return self.outputs_structure.rebuild(tensors)

    def before_step_result(self, tensors: Sequence[torch.Tensor]):
        """What ``before_step`` returned (a tensor, tuple, dict...), rebuilt from its
        tensors (the module's :attr:`before_step_outputs` results before the gradients)."""
        if self.before_step_structure is None:
            return None
        return self.before_step_structure.rebuild(tensors)

    def bind(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None,
             inputs=None, targets=(), *, scaler=None) -> list[torch.Tensor]:
        """The real tensors to run the step on, in :attr:`inputs` order.

        ``inputs``/``targets`` are a batch structured like the example inputs and
        targets of the capture. An optimizer without state gets the state its first
        ``step()`` would create (see :func:`init_optimizer_state`). ``scaler``: the
        ``GradScaler`` of a step captured with one.
        """
        if (self.scaler is None) != (scaler is None or not scaler.is_enabled()):
            raise ExecutionError("the step was captured " + ("with" if self.scaler else "without")
                                 + " a GradScaler: pass the same scaler= as to the capture")
        if scaler is not None and self.scaler is not None and (changed := self.scaler.changed(scaler)):
            raise ExecutionError(f"{changed}; capture again")
        if self.accumulation_steps > 1:
            raise ExecutionError("a step with gradient accumulation is bound per micro-batch by model_runtime "
                                 "(OptimizedStep.accumulate)")
        params = dict(model.named_parameters())
        buffers = dict(model.named_buffers())
        if optimizer is not None and (stateful := self.stateful_parameters()):
            init_optimizer_state(optimizer, [params[n] for n in stateful if n in params])
        if optimizer is not None and self.guards:
            failed = failed_guard(self.guards, optimizer, hyper_parameter=self.hyper_parameter, parameter=params.get)
            if failed is not None:
                raise ExecutionError(f"{type(optimizer).__name__}'s update branches otherwise at this step "
                                     f"({failed.key} no longer holds); capture again")
        args, kwargs = split_example_inputs(inputs) if inputs is not None else ((), {})
        leaves, spec = flatten_batch((args, kwargs))
        if inputs is not None and spec != self.inputs_spec:
            raise ExecutionError(f"the inputs are passed as {describe_call(spec)}, the step was captured for "
                                 f"{describe_call(self.inputs_spec)} (* a tensor or value)")
        tleaves, tspec = flatten_batch(tuple(targets) if isinstance(targets, (tuple, list)) else (targets,))
        changed = ((inputs is not None and changed_constant(leaves, self.inputs_constants))
                   or (tspec == self.targets_spec and changed_constant(tleaves, self.targets_constants, "target")))
        if changed:
            raise ExecutionError(f"{changed}; capture again with this value")
        placeholders = [n for n in self.module.graph.nodes if n.op == "placeholder"]
        out: list[torch.Tensor] = []
        for slot, node in zip(self.inputs, placeholders):
            if slot.kind == "hyper_parameter":
                t = self._hyper_parameter(slot, optimizer)
            elif slot.kind == "scaler_state":
                t = scaler_tensors(scaler, node.meta["val"].device)[SCALER_TENSORS.index(slot.name)]
            else:
                t = self._lookup(slot, params, buffers, optimizer, leaves, tleaves)
            want = node.meta["val"]
            if not isinstance(t, torch.Tensor) or tuple(t.shape) != tuple(want.shape) or t.dtype != want.dtype:
                got = f"{tuple(t.shape)} {t.dtype}" if isinstance(t, torch.Tensor) else type(t).__name__
                raise ExecutionError(
                    f"{slot.kind} {slot.name!r}: captured as {tuple(want.shape)} {want.dtype}, got {got}; "
                    "capture again for this shape"
                )
            if any(n > 1 and a != b for n, a, b in zip(t.shape, t.stride(), want.stride())):
                raise ExecutionError(
                    f"{slot.kind} {slot.name!r}: captured with strides {tuple(want.stride())}, got {t.stride()}; "
                    "pass a tensor laid out like the example (e.g. .contiguous()) or capture again"
                )
            out.append(t)
        return out

    def _hyper_parameter(self, slot, optimizer) -> torch.Tensor:
        hp = self.hyper_parameter(slot.name)
        try:
            value = hp.read(optimizer)
        except (KeyError, IndexError, TypeError, AttributeError):
            raise ExecutionError(f"the optimizer has no hyper-parameter {slot.name!r} any more") from None
        problem = hp.problem(value)
        if problem:
            raise ExecutionError(f"{problem}; capture again")
        return hp.as_input(value)

    @staticmethod
    def _lookup(slot, params, buffers, optimizer, leaves, tleaves):
        try:
            if slot.kind == "parameter":
                return params[slot.name]
            if slot.kind == "model_buffer":
                return buffers[slot.name]
            if slot.kind == "optimizer_state":
                pname, key = slot.name.rsplit("/", 1)
                return optimizer.state[params[pname]][key]
            index = int(slot.name[slot.name.index("[") + 1:-1])
            return (leaves if slot.kind == "input" else tleaves)[index]
        except (KeyError, IndexError, AttributeError, TypeError):
            raise ExecutionError(f"cannot find the {slot.kind} {slot.name!r} of the captured step") from None

    def run(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None, inputs=None,
            targets=(), *, order: Sequence[str] | Schedule | None = None,
            on_op: Callable[[int, str], None] | None = None, scaler=None) -> list:
        """Run one step for real in ``order`` (IR op ids; default program order).

        Updates ``model``'s parameters and buffers and ``optimizer``'s state in place
        and returns ``[loss]`` (train; ``[loss, *outputs]`` with :attr:`return_outputs`)
        or the model outputs (eval).
        """
        from model_ir.torch.executor import execute

        return execute(self, self.bind(model, optimizer, inputs, targets, scaler=scaler), order, on_op=on_op)


def init_optimizer_state(optimizer: torch.optim.Optimizer, params: Iterable[torch.Tensor] | None = None) -> None:
    """Create the state ``optimizer.step()`` creates lazily, without changing any parameter.

    ``params``: the parameters to create state for (default: all of the optimizer's;
    a captured step names those its update reads, see
    :meth:`CapturedStep.stateful_parameters`: eager creates none for a parameter that
    never gets a gradient). For each with a ``requires_grad`` and no state yet: a
    ``step()`` with a zero gradient for that parameter alone and no weight decay
    (coupled decay would turn the zero gradient into ``wd * param``), then the parameter
    is restored and the state's scalars (step counters, NAdam's ``mu_product``) put back
    to the values the step created them with. For SGD (momentum buffer), Adam, AdamW,
    NAdam, RMSprop, Adagrad, Adamax, Adadelta and Rprop this gives exactly their initial
    state, so the captured steady-state step equals eager's first step (tests compare
    three steps bitwise). A state tensor of more than one element that a zero gradient changes
    would not be restored. Parameters that already have state are not touched.

    Memory: torch's own optimizers take that step on a small stand-in of each
    parameter (its rank, each dimension 2) and get the parameter's state tensors filled with the stand-in's constant
    values (:func:`_init_from_stand_in`), so planning allocates the state and nothing
    more (it used to take four times the largest parameter with Adam: its zero gradient,
    saved copy and the update's temporaries). Other optimizers: one parameter at a time,
    smallest first, so the only temporaries are one parameter's zero gradient, saved copy
    and update. When the smallest parameter of a param group gets no state tensor (plain
    SGD) the group is left at that, so an optimizer without state costs no memory here
    (planning must not allocate what the step does not keep).

    Raises :class:`ExecutionError` for SGD with momentum and ``dampening`` when a
    parameter has no momentum buffer yet: eager's first step copies the gradient
    undampened, which no steady-state step reproduces.
    """
    wanted = None if params is None else {id(p) for p in params}
    params = [p for g in optimizer.param_groups for p in g["params"]]  # all: their grads are saved below
    todo = [p for p in params if p.requires_grad and not optimizer.state.get(p)
            and (wanted is None or id(p) in wanted)]
    if not todo:
        return
    todo_ids = {id(p) for p in todo}
    for g in optimizer.param_groups:
        if (isinstance(optimizer, torch.optim.SGD) and g.get("momentum") and g.get("dampening")
                and any(id(p) in todo_ids for p in g["params"])):
            raise ExecutionError(
                f"SGD with momentum and dampening={g['dampening']} has no momentum buffers yet; its first "
                "step differs from every later one (the gradient is copied undampened), so the captured "
                "step would not match eager: run one eager step first, then optimize"
            )
    saved_grads = {id(p): p.grad for p in params}
    saved_decay = [g.get("weight_decay") for g in optimizer.param_groups]
    # A counter the real step() bumps is put back (capture refuses such updates); the
    # step hooks (an EMA of the weights) must not see these state-making steps.
    with kept_python_values(optimizer), step_hooks_off(optimizer):
        try:
            for p in params:
                p.grad = None
            for g, wd in zip(optimizer.param_groups, saved_decay):
                if wd is not None:
                    g["weight_decay"] = 0
            for g in optimizer.param_groups:
                group_todo = sorted((p for p in g["params"] if id(p) in todo_ids), key=torch.Tensor.numel)
                for i, p in enumerate(group_todo):
                    _init_one(optimizer, p)
                    if i == 0 and not any(isinstance(v, torch.Tensor) for v in optimizer.state.get(p, {}).values()):
                        break  # this group's optimizer keeps no state tensor: nothing to create
        finally:
            for g, wd in zip(optimizer.param_groups, saved_decay):
                if wd is not None:
                    g["weight_decay"] = wd
            for p in params:
                p.grad = saved_grads[id(p)]


def seed_values(optimizer: torch.optim.Optimizer) -> list[dict[str, Any]]:
    """Each param group's hyper-parameters (the keys of the optimizer's ``defaults``;
    tensors copied): what the state :func:`init_optimizer_state` creates may start from
    (Rprop's step sizes are ``lr``, ASGD's ``eta`` too)."""
    return [{k: v.detach().clone() if isinstance(v, torch.Tensor) else v for k, v in g.items()
             if k in optimizer.defaults} for g in optimizer.param_groups]


def _same_values(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> bool:
    return len(a) == len(b) and all(x.keys() == y.keys() and all(same_value(x[k], y[k]) for k in x)
                                    for x, y in zip(a, b))


def reseed_optimizer_state(optimizer: torch.optim.Optimizer, params: Sequence[torch.Tensor],
                           seeded_with: list[dict[str, Any]]) -> list[torch.Tensor]:
    """Create again the state of ``params`` that :func:`init_optimizer_state` created
    when the hyper-parameters were ``seeded_with`` (:func:`seed_values` then), if they
    changed since and no step ran from that state (its ``step`` counter still 0): eager's
    first ``step()`` creates it with the values of that moment (a ``LambdaLR`` made after
    ``init_optimizer_state`` scales ``lr`` at once, which Rprop's step sizes start from).
    Returns the parameters whose state was made again."""
    if _same_values(seed_values(optimizer), seeded_with):
        return []
    untouched = [p for p in params if "step" in optimizer.state.get(p, {})
                 and float(optimizer.state[p]["step"]) == 0]
    for p in untouched:
        del optimizer.state[p]
    init_optimizer_state(optimizer, untouched)
    return untouched


def _init_one(optimizer: torch.optim.Optimizer, p: torch.Tensor) -> None:
    """``p``'s initial state: from a stand-in (:func:`_init_from_stand_in`) where it can
    be, else by :func:`_step_one`."""
    if not _init_from_stand_in(optimizer, p):
        _step_one(optimizer, p)


def _init_from_stand_in(optimizer: torch.optim.Optimizer, p: torch.Tensor) -> bool:
    """For torch's own optimizers: :func:`_step_one` on a stand-in of ``p`` (``p``'s
    dtype, device and number of dimensions, each of size 2, distinct values; in ``p``'s
    place in its param group), then each state tensor of the stand-in's shape made for
    ``p`` in ``p``'s layout (as ``zeros_like(p, memory_format=torch.preserve_format)``)
    and filled with its value, scalars as made. False, and nothing kept, when some state
    tensor is of another shape (Adafactor's factored moments) or not one value throughout
    (it depends on the parameter's values)."""
    size = 2 ** p.dim()
    if not type(optimizer).__module__.startswith("torch.optim") or not p.is_floating_point() or p.numel() <= size:
        return False
    group = next(g for g in optimizer.param_groups if any(q is p for q in g["params"]))
    i = next(k for k, q in enumerate(group["params"]) if q is p)
    stand_in = torch.nn.Parameter(torch.arange(1, size + 1, dtype=p.dtype, device=p.device).reshape((2,) * p.dim()))
    group["params"][i] = stand_in
    try:
        _step_one(optimizer, stand_in)
    finally:
        group["params"][i] = p
    if stand_in not in optimizer.state:  # no state (plain SGD), as for p
        return True
    made = optimizer.state.pop(stand_in)
    state = {}
    for key, value in made.items():
        if isinstance(value, torch.Tensor) and value.dim():
            first = value.flatten()[0]
            if value.shape != stand_in.shape or not bool((value == first).all()):
                return False
            value = torch.empty_like(p, dtype=value.dtype, memory_format=torch.preserve_format).fill_(first)
        state[key] = value
    optimizer.state[p] = state
    return True


def _step_one(optimizer: torch.optim.Optimizer, p: torch.Tensor) -> None:
    """One ``step()`` with a zero gradient for ``p`` only; ``p`` restored, and the state's
    scalars (counters, NAdam's ``mu_product``, ...) put back to the values the step
    created them with: a zero gradient leaves moment buffers at their start, not
    products of per-step factors."""
    saved = p.detach().clone()
    created: dict[str, Any] = {}

    class Recording(dict):
        """A parameter's state dict that keeps the first value of each scalar entry."""

        def __setitem__(self, key, value):
            if key not in self and not (isinstance(value, torch.Tensor) and value.dim()):
                created[key] = value.clone() if isinstance(value, torch.Tensor) else value
            super().__setitem__(key, value)

    states = optimizer.state
    recording = defaultdict(Recording, states)  # other parameters' state dicts, as they are
    recording.pop(p, None)  # an empty dict made by an earlier read: p's state starts recorded
    p.grad = torch.zeros_like(p)
    try:
        optimizer.state = recording
        optimizer.step()
    finally:
        optimizer.state = states
        p.grad = None
        with torch.no_grad():
            p.copy_(saved)
        if p in recording:
            states[p] = dict(recording[p])
        state = states.get(p, {})
        for key, value in created.items():
            now = state.get(key)
            if isinstance(value, torch.Tensor) and isinstance(now, torch.Tensor) and now.shape == value.shape:
                now.copy_(value)
            elif key in state:
                state[key] = value
        if "step" in state and "step" not in created:
            if isinstance(state["step"], torch.Tensor):
                state["step"].zero_()
            else:
                state["step"] = 0
