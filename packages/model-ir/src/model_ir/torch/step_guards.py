"""Branches of the optimizer's update on its step count or hyper-parameters, decided at
capture as eager decides them, and checked at every call.

RAdam rectifies its update only once ``rho_t > 5`` (from the 6th step with the default
betas); a custom update may branch on ``lr > threshold``. (Branches on other values,
such as ASGD's ``mu`` state or Adafactor's parameter norms, stay refused.) The step count and the lifted hyper-parameters are
symbols of the trace (``.item()`` of an input), so such a branch cannot be traced as
it stands. While tracing, :func:`valued_reads` gives each of those symbols the value it
has for the captured step (torch's ``ShapeEnv.set_real_tensor_prop_unbacked_vals``,
the mechanism of ``propagate_real_tensors``): the branch is taken as eager takes it now,
and the shape environment records its condition as a runtime assertion. Those
conditions are the step's :class:`Guard`\\ s: every call evaluates them with the
current step counts and hyper-parameters (Python float arithmetic, as eager's), and a
call where one fails needs a new plan (RAdam: one plan for its first 5 steps, one for
the rest).

A step count is read as its value at the captured update: the optimizer increments
``state["step"]`` and then reads it, so a parameter whose state holds ``k`` steps is
read as ``k + 1`` (1 for state not created yet).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Mapping

import attrs
import torch

from model_ir.torch.errors import dropping_log_records

#: The message prefix of the runtime assertions a valued symbol's branch leaves.
_DECIDED = "propagate_real_tensors"


@attrs.frozen(eq=False)
class Guard:
    """A condition the captured update assumed: ``expr`` (sympy) over symbols that stand
    for a parameter's step count (``("step", parameter name)``) or a lifted
    hyper-parameter (``("hyper", slot name)``): ``sources``, one per symbol in the order
    of their names. ``key`` names the condition whatever parameter's step count it
    reads: RAdam puts the same one on every parameter."""

    expr: object
    sources: tuple[tuple[str, str], ...]
    key: str

    @classmethod
    def of(cls, expr, sources: Mapping[str, tuple[str, str]]) -> Guard:
        import sympy

        symbols = tuple(sorted(s.name for s in expr.free_symbols))
        found = tuple(sources[n] for n in symbols)
        steps = [src for src in found if src[0] == "step"]
        named = {sympy.Symbol(n): sympy.Symbol("step" if src[0] == "step" and len(steps) == 1 else ":".join(src))
                 for n, src in zip(symbols, found)}
        return cls(expr, found, str(expr.xreplace(named)))

    @property
    def specializes(self) -> bool:
        """Whether the condition pins a value (``lr == 0.01``: a fused kernel took it
        as a number), rather than deciding a branch."""
        import sympy

        return isinstance(self.expr, sympy.Eq)

    def holds(self, values: tuple[float, ...]) -> bool:
        """Whether the condition holds with ``values`` (one per source, in order)."""
        from torch.utils._sympy.interp import sympy_interp
        from torch.utils._sympy.reference import PythonReferenceAnalysis

        env = {s: float(v) for s, v in zip(sorted(self.expr.free_symbols, key=lambda s: s.name), values)}
        return bool(sympy_interp(PythonReferenceAnalysis, env, self.expr))


def failed_guard(guards, optimizer, *, hyper_parameter, parameter) -> Guard | None:
    """The first of ``guards`` that does not hold for ``optimizer``'s next update, or
    None. ``hyper_parameter(name)``: the step's ``HyperParameter`` of that slot;
    ``parameter(name)``: the model's parameter. Each distinct condition is evaluated
    once per distinct values (RAdam's, once for all parameters)."""
    def value_of(source) -> float:
        kind, name = source
        if kind == "hyper":
            return float(hyper_parameter(name).read(optimizer))
        state = optimizer.state.get(parameter(name), {})
        return float(state["step"]) + 1 if "step" in state else 1.0

    known: dict = {}
    seen: dict = {}
    for guard in guards:
        for src in guard.sources:
            if src not in known:
                known[src] = value_of(src)
        values = tuple(known[src] for src in guard.sources)
        ok = seen.get((guard.key, values))
        if ok is None:
            ok = seen[(guard.key, values)] = guard.holds(values)
        if not ok:
            return guard
    return None


class ValuedReads:
    """The symbols given values while tracing, by source (see :func:`valued_reads`)."""

    def __init__(self):
        self.sources: dict[str, tuple[str, str]] = {}
        self.shape_env = None

    def value(self, symbolic, source: tuple[str, str], value: float) -> None:
        """Give ``symbolic`` (a SymFloat/SymInt read from an input) the ``value`` it has
        at the captured step."""
        node = getattr(symbolic, "node", None)
        expr = getattr(node, "expr", None)
        if expr is None or not getattr(expr, "is_symbol", False):
            return
        self.shape_env = node.shape_env
        self.shape_env.set_real_tensor_prop_unbacked_vals(expr, value)
        self.sources[expr.name] = source

    def guards(self) -> tuple[Guard, ...]:
        """The conditions the trace decided with the valued symbols (its shape
        environment's runtime assertions)."""
        if self.shape_env is None:
            return ()
        out = []
        for asserts in self.shape_env.deferred_runtime_asserts.values():
            for ra in asserts:
                names = {s.name for s in ra.expr.free_symbols}
                if ra.msg.startswith(_DECIDED) and names and names <= self.sources.keys():
                    out.append(Guard.of(ra.expr, self.sources))
        return tuple(out)


@contextlib.contextmanager
def valued_reads(reads: ValuedReads, step_counts: Mapping[int, tuple[str, float]]) -> Iterator[None]:
    """While tracing: each read of a step count (``torch.optim``'s ``_get_value`` of a
    tensor in ``step_counts``, ``id(fake state tensor) -> (parameter name, value)``)
    gets its value (:meth:`ValuedReads.value`)."""
    from torch.optim import optimizer as optimizer_module

    original = optimizer_module._get_value

    def get_value(x):
        value = original(x)
        if isinstance(x, torch.Tensor) and id(x) in step_counts:
            name, count = step_counts[id(x)]
            reads.value(value, ("step", name), count)
        return value

    # Each optimizer module imports the function by name.
    modules = [m for name, m in list(sys.modules.items())
               if name.startswith("torch.optim") and getattr(m, "_get_value", None) is original]
    for m in modules:
        m._get_value = get_value
    try:
        # torch logs each decision as a warning (it is meant for debugging export)
        with dropping_log_records("torch.fx.experimental.symbolic_shapes", _DECIDED):
            yield
    finally:
        for m in modules:
            m._get_value = original
