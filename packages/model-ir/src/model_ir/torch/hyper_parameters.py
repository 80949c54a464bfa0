"""Optimizer hyper-parameters as inputs of the captured step.

Learning-rate schedulers change ``param_group["lr"]`` (and ``momentum`` or ``betas``)
between steps. A captured step that held them as constants would have to be captured
and planned again after every change; instead each numeric hyper-parameter the
optimizer's ``step()`` reads (the keys of ``optimizer.defaults``) becomes an input of
the step:

- a float is passed as a 0-dim float64 CPU tensor and read back with ``.item()`` while
  tracing, so the optimizer's arithmetic on it (``-lr``, ``lr / bias_correction``, ...)
  is recorded as symbolic scalar arithmetic and computed from the new value at every
  call, with the same float64 operations as eager;
- a 0-dim tensor (``Adam(params, lr=torch.tensor(0.01))``, which schedulers update in
  place) is passed as itself and handed to the optimizer as the tensor it is: Adam's
  ``lr / bias_correction`` is then float32 tensor arithmetic, as in eager, and where a
  number is expected (``alpha=-lr``) torch reads it with ``.item()``, which the trace
  records. (Read as a float, Adam's update differed from eager's in the last bit.)

The optimizer's code branches on some of them (``if weight_decay != 0``,
``if momentum > 0``); the trace asserts each float's sign (``torch._check``), which
decides such branches, and the step stays valid while no sign changes: a sign change
(e.g. weight decay turned on) needs a new capture. Booleans and other values
(``nesterov``, ``maximize``, ``foreach``) stay constants of the step.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence

import attrs
import torch

from model_ir.torch.errors import CaptureError


@attrs.frozen
class HyperParameter:
    """One lifted hyper-parameter: ``param_groups[group][key]`` (``[element]`` of a tuple
    such as ``betas``), a ``float`` or a ``tensor``; ``sign`` of the captured float."""

    group: int
    key: str
    element: int | None
    kind: str
    sign: int = 0

    @property
    def name(self) -> str:
        """``group0/lr``, ``group0/betas.1``: the name of its input slot."""
        return f"group{self.group}/{self.key}" + ("" if self.element is None else f".{self.element}")

    def read(self, optimizer: torch.optim.Optimizer):
        value = optimizer.param_groups[self.group][self.key]
        return value if self.element is None else value[self.element]

    def problem(self, value) -> str | None:
        """Why ``value`` cannot be passed to the captured step (None if it can)."""
        if self.kind == "tensor":
            if not isinstance(value, torch.Tensor) or value.dim() != 0:
                return f"{self.name} was a 0-dim tensor and is now {value!r}"
            value = value.item()
        elif not _is_float(value):
            return f"{self.name} was a float and is now {type(value).__name__} {value!r}"
        if _sign(value) != self.sign:
            return (f"{self.name} changed sign ({_SIGN[self.sign]} when captured, now {value!r}); the optimizer's "
                    "step branches on it")
        return None

    def as_input(self, value) -> torch.Tensor:
        """The tensor to pass for ``value`` (checked with :meth:`problem` first)."""
        if self.kind == "tensor":
            return value
        return torch.tensor(value, dtype=torch.float64)


_SIGN = {-1: "negative", 0: "zero", 1: "positive"}


def _is_float(value) -> bool:
    return isinstance(value, float) and math.isfinite(value)


def _is_scalar_tensor(value) -> bool:
    return isinstance(value, torch.Tensor) and value.dim() == 0 and not value.requires_grad


def _sign(value: float) -> int:
    value = float(value)  # NumPy's float64 (a float) compares to NumPy booleans, which do not subtract
    return (value > 0) - (value < 0)


def _check_not_narrow_numpy(key: str, value) -> None:
    """Refuse a NumPy float of another precision than Python's (``np.float32(0.01)``):
    eager's arithmetic on it is NumPy's, in that precision (Adam's ``lr / bias_correction``
    rounded to float32), which the captured step's float64 inputs would not reproduce
    bitwise. NumPy's float64 is a float: it is lifted as one."""
    if (type(value).__module__ == "numpy" and not isinstance(value, float)
            and getattr(getattr(value, "dtype", None), "kind", "") == "f"):
        raise CaptureError(f"the optimizer's {key!r} is a numpy.{type(value).__name__} ({value!r}): eager computes "
                           "with it in that precision, which the optimized step would not reproduce bitwise; "
                           f"give a Python float (float({key})) or a 0-dim tensor (torch.tensor({key}))")


def lifted_hyper_parameters(optimizer: torch.optim.Optimizer) -> tuple[HyperParameter, ...]:
    """The hyper-parameters of ``optimizer`` that become step inputs, in group and key order."""
    out = []
    for i, group in enumerate(optimizer.param_groups):
        for key in optimizer.defaults:
            value = group.get(key)
            for v in value if isinstance(value, tuple) else (value,):
                _check_not_narrow_numpy(key, v)
            if _is_scalar_tensor(value):
                out.append(HyperParameter(i, key, None, "tensor", _sign(value.item())))
            elif _is_float(value):
                out.append(HyperParameter(i, key, None, "float", _sign(value)))
            elif isinstance(value, tuple) and value and all(_is_float(v) or _is_scalar_tensor(v) for v in value):
                # Adam(betas=(torch.tensor(0.9), torch.tensor(0.999))): each element lifted as what it is
                out += [HyperParameter(i, key, k, "tensor", _sign(v.item())) if isinstance(v, torch.Tensor)
                        else HyperParameter(i, key, k, "float", _sign(v)) for k, v in enumerate(value)]
    return tuple(out)


def example_input(hp: HyperParameter, optimizer: torch.optim.Optimizer) -> torch.Tensor:
    """A real example of ``hp``'s input (its current value)."""
    return hp.as_input(hp.read(optimizer))


def read_symbolic(hps: Sequence[HyperParameter], tensors: Sequence[torch.Tensor]) -> list:
    """While tracing: the hyper-parameters' values read from ``tensors`` (the step's inputs)
    as symbolic floats, each with its captured sign asserted, read once at the start of
    the step; 0-dim tensor hyper-parameters stay the tensors (see the module docstring)."""
    return [t if hp.kind == "tensor" else _symbolic(t, hp.sign) for hp, t in zip(hps, tensors)]


@contextlib.contextmanager
def hyper_parameters_bound(optimizer: torch.optim.Optimizer, hps: Sequence[HyperParameter],
                           values: Sequence) -> Iterator[None]:
    """``optimizer``'s hyper-parameters ``hps`` set to ``values`` (see :func:`read_symbolic`);
    restored on exit."""
    groups = optimizer.param_groups
    saved = [{hp.key: groups[hp.group][hp.key] for hp in hps if hp.group == i} for i in range(len(groups))]
    try:
        for hp, value in zip(hps, values):
            group = groups[hp.group]
            if hp.element is None:
                group[hp.key] = value
            else:
                items = list(group[hp.key])
                items[hp.element] = value
                group[hp.key] = tuple(items)
        yield
    finally:
        for group, values in zip(groups, saved):
            group.update(values)


def _symbolic(t: torch.Tensor, sign: int):
    x = t.item()
    if sign > 0:
        torch._check(x > 0)
    elif sign < 0:
        torch._check(x < 0)
    else:
        torch._check(x == 0)
    return x


@contextlib.contextmanager
def tensor_hyper_parameters_as_floats(optimizer: torch.optim.Optimizer) -> Iterator[None]:
    """0-dim tensor hyper-parameters replaced by their float values (restored on exit), for
    steps run on fake tensors outside the trace (creating the optimizer's state), where an
    implicit tensor-to-number conversion would leave an unbound symbol behind."""
    saved = []
    for group in optimizer.param_groups:
        for key in optimizer.defaults:
            value = group.get(key)
            for v in value if isinstance(value, tuple) else (value,):
                _check_not_narrow_numpy(key, v)
            if isinstance(value, torch.Tensor) and value.dim() == 0:
                saved.append((group, key, value))
                group[key] = value.item()
            elif isinstance(value, tuple) and any(_is_scalar_tensor(v) for v in value):
                saved.append((group, key, value))
                group[key] = tuple(v.item() if _is_scalar_tensor(v) else v for v in value)
    try:
        yield
    finally:
        for group, key, value in saved:
            group[key] = value
