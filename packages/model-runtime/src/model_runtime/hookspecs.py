"""Hook specifications added by model-runtime."""

from __future__ import annotations

from typing import Any

from model_ir.hookspecs import hookspec


@hookspec
def model_opt_executors() -> list[Any]:
    """Executors: providers with ``name``, ``help``, ``needs_placement`` (bool) and
    ``build(captured, plan, *, device, on_op=None) -> CompiledProgram`` (see
    :mod:`model_runtime.program`), which turns a captured step and its plan into a
    callable program; ``on_op(t, op_id, inputs, results)``, when given, is called
    after each op (measurements). Optional: ``unplaced(captured, device) ->
    frozenset`` of transient buffer ids the executor leaves to PyTorch's allocator
    (the plan then does not place them, and reports their memory)."""
