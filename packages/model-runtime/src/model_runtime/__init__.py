"""model_runtime: run an optimized plan in PyTorch, with the planned order and the
planned addresses.

>>> step = model_runtime.optimize(model, torch.randn(32, 784), optimizer=opt, loss_fn=loss_fn, targets=(y,))
>>> loss = step(x, targets=(y,))   # one training step, model and opt updated in place
>>> print(step.report())

Names are imported lazily: the plugin manager imports this package for every
``model-opt`` command, which must not pay for importing torch.
"""

from __future__ import annotations

from model_ir.lazy_exports import lazy_getattr

__version__ = "0.1.0"

_EXPORTS = {
    "DEFAULT_TIME_LIMIT": "model_runtime.planning",
    "CompiledProgram": "model_runtime.program",
    "Fallback": "model_runtime.program",
    "MemoryWarning": "model_runtime.optimized_step",
    "OptimizedStep": "model_runtime.optimized_step",
    "BudgetError": "model_runtime.errors",
    "ReoptimizeError": "model_runtime.errors",
    "RuntimeLayerError": "model_runtime.errors",
    "arena_lifetimes": "model_runtime.planning",
    "build_arena": "model_runtime.executors",
    "build_program": "model_runtime.program",
    "build_reorder": "model_runtime.executors",
    "builtin_executors": "model_runtime.executors",
    "device_alignment": "model_runtime.planning",
    "make_plan": "model_runtime.planning",
    "model_device": "model_runtime.optimized_step",
    "optimize": "model_runtime.optimized_step",
    "transient_buffers": "model_runtime.executors",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_getattr(__name__, _EXPORTS)
