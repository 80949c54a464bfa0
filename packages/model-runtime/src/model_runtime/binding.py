"""Binding the user's live objects to the captured step's inputs on every call.

The user's ``model`` and ``optimizer`` stay the source of truth: every call reads
the current parameter, buffer and optimizer-state tensors from them (cheap attribute
and dict lookups, no ``named_parameters()`` walk), so ``load_state_dict`` and friends
keep working. Anything the plan depends on is checked: input shapes, dtypes and
devices, the shapes of replaced persistent tensors, and the optimizer's
hyper-parameters, which the captured step holds as constants.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from model_ir.torch.tracing import flatten_batch
from model_runtime.errors import ReoptimizeError

_REOPTIMIZE = "call model_runtime.optimize again with an example of the new shape"


def _owner(model: torch.nn.Module, qualified: str) -> tuple[torch.nn.Module, str]:
    *path, attr = qualified.split(".")
    module = model
    for p in path:
        module = getattr(module, p)
    return module, attr


def _hyper_parameters(optimizer) -> list[dict]:
    if optimizer is None:
        return []
    return [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and bool(torch.equal(a, b))
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - incomparable values are different
        return a is b


class Binder:
    """Produces the flat tensor list of a captured step from ``(model, optimizer, batch)``."""

    def __init__(self, step, model: torch.nn.Module, optimizer, device: torch.device):
        self.step = step
        self.model = model
        self.optimizer = optimizer
        placeholders = [n for n in step.module.graph.nodes if n.op == "placeholder"]
        self.expected = [n.meta["val"] for n in placeholders]
        self.getters: list[Callable[[], torch.Tensor] | None] = []
        self.batch_slots: list[tuple[int, str, int]] = []  # (position, kind, leaf index)
        for pos, slot in enumerate(step.inputs):
            if slot.kind in ("parameter", "model_buffer"):
                owner, attr = _owner(model, slot.name)
                self.getters.append(lambda owner=owner, attr=attr: getattr(owner, attr))
            elif slot.kind == "optimizer_state":
                pname, key = slot.name.rsplit("/", 1)
                owner, attr = _owner(model, pname)
                state = optimizer.state
                self.getters.append(lambda owner=owner, attr=attr, key=key: state[getattr(owner, attr)][key])
            else:
                index = int(slot.name[slot.name.index("[") + 1:-1])
                self.getters.append(None)
                self.batch_slots.append((pos, slot.kind, index))
        self.hyper = _hyper_parameters(optimizer)
        self.persistent: list[Any] = [None] * len(self.getters)
        self.device = device

    def _check(self, pos: int, t, what: str) -> None:
        want = self.expected[pos]
        if not isinstance(t, torch.Tensor):
            raise ReoptimizeError(f"{what} must be a tensor, got {type(t).__name__}")
        if t.shape != want.shape or t.dtype != want.dtype or t.device != self.device:
            raise ReoptimizeError(
                f"{what} is {tuple(t.shape)} {t.dtype} on {t.device}; the step was optimized for "
                f"{tuple(want.shape)} {want.dtype} on {self.device}; {_REOPTIMIZE}"
            )

    def persistent_tensors(self) -> list:
        """Current parameters, model buffers and optimizer state, checked when replaced."""
        out = self.persistent
        for pos, get in enumerate(self.getters):
            if get is None:
                continue
            try:
                t = get()
            except (KeyError, AttributeError):
                slot = self.step.inputs[pos]
                raise ReoptimizeError(
                    f"cannot find the {slot.kind} {slot.name!r} the step was optimized with "
                    "(was the model or optimizer rebuilt?); call model_runtime.optimize again"
                ) from None
            if t is not out[pos]:
                slot = self.step.inputs[pos]
                self._check(pos, t, f"{slot.kind} {slot.name!r}")
                out[pos] = t
        return out

    def check_hyper_parameters(self) -> None:
        if self.optimizer is None:
            return
        now = _hyper_parameters(self.optimizer)
        for i, (old, new) in enumerate(zip(self.hyper, now)):
            for k in old.keys() | new.keys():
                if not _same(old.get(k), new.get(k)):
                    raise ReoptimizeError(
                        f"optimizer hyper-parameter {k!r} of param group {i} changed from {old.get(k)!r} to "
                        f"{new.get(k)!r}; the optimized step holds it as a constant; call "
                        "model_runtime.optimize again (e.g. after each learning-rate change)"
                    )

    def bind(self, args: Sequence, kwargs: dict, targets) -> list:
        """The step's input tensors for a call ``step(*args, targets=targets, **kwargs)``."""
        self.check_hyper_parameters()
        tensors = list(self.persistent_tensors())
        leaves, spec = flatten_batch((tuple(args), dict(kwargs)))
        if spec != self.step.inputs_spec:
            raise ReoptimizeError(
                f"the inputs are structured as {spec}, the step was optimized for {self.step.inputs_spec}; "
                "pass the same arguments as the example inputs"
            )
        targets = tuple(targets) if isinstance(targets, (tuple, list)) else (targets,)
        tleaves, tspec = flatten_batch(targets)
        if tspec != self.step.targets_spec:
            raise ReoptimizeError(
                f"the targets are structured as {tspec}, the step was optimized for {self.step.targets_spec}"
            )
        for pos, kind, index in self.batch_slots:
            t = (leaves if kind == "input" else tleaves)[index]
            self._check(pos, t, f"{kind} {index}")
            tensors[pos] = t
        return tensors
