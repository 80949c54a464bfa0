"""The plain Python values of an optimizer that a captured step cannot change.

A captured step runs tensor operations only. An update that counts in Python (a
param-group entry ``group["k"] += 1``, an attribute ``self.k += 1``, an ``int``
``state["step"]``) would run with the values it had when traced, at every call: a
silently different training. Capture refuses such optimizers, naming the value, and
leaves the optimizer's values as the user had them (capture runs ``step()`` on fake
tensors, and :func:`~model_ir.torch.step.init_optimizer_state` runs it once for real).
torch's optimizers keep their counters in tensors (``state["step"]``).
"""

from __future__ import annotations

import contextlib

import torch

from model_ir.torch.plain_values import is_plain

#: flags torch sets on an optimizer at its first step (the learning-rate scheduler's
#: "step() was called" mark, a one-time warning, fused SGD's one-time device and dtype
#: check): not part of the update
_TORCH_FLAGS = frozenset({"_opt_called", "_warned_capturable_if_run_uncaptured",
                          "_need_device_dtype_check_for_fused"})


def python_values(optimizer: torch.optim.Optimizer) -> dict[str, object]:
    """The optimizer's plain values (numbers, strings, flags, tuples of them) by where
    they live: ``param_groups[i]['key']`` and its attributes ``.key``."""
    values = {f"param_groups[{i}][{k!r}]": v for i, g in enumerate(optimizer.param_groups)
              for k, v in g.items() if k != "params" and is_plain(v)}
    values.update({f".{k}": v for k, v in vars(optimizer).items() if k not in _TORCH_FLAGS and is_plain(v)})
    return values


def restore_python_values(optimizer: torch.optim.Optimizer, values: dict[str, object]) -> None:
    """Put back the values :func:`python_values` read (an entry or attribute the step
    added is removed)."""
    for i, g in enumerate(optimizer.param_groups):
        for k in [k for k, v in g.items() if k != "params" and is_plain(v)]:
            key = f"param_groups[{i}][{k!r}]"
            if key in values:
                g[k] = values[key]
            else:
                del g[k]
    for k in [k for k, v in vars(optimizer).items() if k not in _TORCH_FLAGS and is_plain(v)]:
        if f".{k}" in values:
            setattr(optimizer, k, values[f".{k}"])
        else:
            delattr(optimizer, k)


def changed_python_value(optimizer: torch.optim.Optimizer, before: dict[str, object]) -> str | None:
    """``"<where> went from <a> to <b>"`` for the first value that differs from
    ``before``, or None."""
    now = python_values(optimizer)
    for key in dict.fromkeys([*before, *now]):
        a, b = before.get(key, "(absent)"), now.get(key, "(absent)")
        if a is not b and (a != b or type(a) is not type(b)):
            return f"{key} went from {a!r} to {b!r}"
    return None


@contextlib.contextmanager
def kept_python_values(optimizer: torch.optim.Optimizer | None):
    """Run the body (which may call ``optimizer.step()``), then put the optimizer's
    plain values back as they were, whatever happens."""
    values = python_values(optimizer) if optimizer is not None else None
    try:
        yield
    finally:
        if values is not None:
            restore_python_values(optimizer, values)


#: Where torch keeps the hooks ``Optimizer.step`` runs: ``torch.optim.optimizer``'s
#: (``register_optimizer_step_pre_hook``, ...) and each optimizer's own.
_GLOBAL_HOOKS = ("_global_optimizer_pre_hooks", "_global_optimizer_post_hooks")
_OWN_HOOKS = ("_optimizer_step_pre_hooks", "_optimizer_step_post_hooks")


@contextlib.contextmanager
def step_hooks_off(optimizer: torch.optim.Optimizer | None):
    """Run the body with ``optimizer``'s step hooks, and the global ones, out of the way
    (put back whatever happens): capture calls ``step()`` on fake tensors, where a hook
    would run its Python work (an EMA update of the real model) once per call."""
    registries = _hook_registries(optimizer)
    saved = [dict(r) for r in registries]
    for r in registries:
        r.clear()
    try:
        yield
    finally:
        for r, entries in zip(registries, saved):
            r.clear()
            r.update(entries)


def pre_hook_count(optimizer: torch.optim.Optimizer | None) -> int:
    """How many step pre-hooks would run before ``optimizer.step()``'s update (its own and the global ones)."""
    pre, _, own_pre, _ = _hook_registries(optimizer)
    return len(pre) + len(own_pre)


def post_hooks(optimizer: torch.optim.Optimizer) -> list:
    """The step post-hooks ``optimizer.step()`` calls after its update, in its order: its own, then the global ones."""
    _, post, _, own_post = _hook_registries(optimizer)
    return [*own_post.values(), *post.values()]


def run_post_hooks(optimizer: torch.optim.Optimizer) -> None:
    """Call ``optimizer``'s step post-hooks as ``Optimizer.step`` does after an update
    (``hook(optimizer, (optimizer,), {})``): an optimized step updates without ``step()``."""
    for hook in post_hooks(optimizer):
        hook(optimizer, (optimizer,), {})


def _hook_registries(optimizer: torch.optim.Optimizer | None) -> list[dict]:
    """The dicts of step hooks ``optimizer.step()`` runs: the global pre- and post-hooks,
    then its own (empty without an optimizer)."""
    import torch.optim.optimizer as module

    return [*(getattr(module, name, {}) for name in _GLOBAL_HOOKS),
            *(getattr(optimizer, name, {}) for name in _OWN_HOOKS)]


def python_counter_error(optimizer: torch.optim.Optimizer, change: str) -> str:
    """The capture error for an update that changed a plain Python value."""
    return (f"{type(optimizer).__name__}.step() changes a Python value ({change}): a captured step runs tensor "
            "operations only and would use the value it had when captured at every call; keep such counters "
            "in tensors, as torch's optimizers keep state['step'] (torch.tensor(0.0), updated in place)")
