"""Hook specifications added by model-runtime, and the ``Protocol`` of an executor
(``docs/plugins.md``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from model_ir.hookspecs import hookspec

if TYPE_CHECKING:
    from model_ir import Plan
    from model_runtime.program import CompiledProgram


class Executor(Protocol):
    """A way to run a plan: ``build`` turns a captured step and its plan into a callable
    program; ``on_op(t, op_id, inputs, results)``, when given, is called after each op
    (measurements). ``needs_placement``: whether the plan must place buffers. Optional:
    ``unplaced(captured, device) -> frozenset`` of transient buffer ids PyTorch's
    allocator makes for the executor (the plan then does not place them), and
    ``copies_unplaced = True`` when ``build`` copies those the plan does place into
    their slots (the plan may then place some; see ``make_plan``'s
    ``fallback_results``)."""

    name: str
    help: str
    needs_placement: bool

    def build(self, captured: Any, plan: Plan, *, device: Any, on_op: Any = None) -> CompiledProgram: ...


@hookspec
def model_opt_executors() -> list[Executor]:
    """Executors: providers with ``name``, ``help``, ``needs_placement`` (bool) and
    ``build(captured, plan, *, device, on_op=None) -> CompiledProgram`` (see
    :mod:`model_runtime.program`), which turns a captured step and its plan into a
    callable program; ``on_op(t, op_id, inputs, results)``, when given, is called
    after each op (measurements). Optional: ``unplaced(captured, device) ->
    frozenset`` of transient buffer ids PyTorch's allocator makes for the executor
    (the plan then does not place them, and reports their memory), and
    ``copies_unplaced = True`` when ``build`` copies those the plan places into
    their slots (the plan may then place some)."""
