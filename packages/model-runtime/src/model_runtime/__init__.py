"""model_runtime: run an optimized plan in PyTorch, with the planned order and the
planned addresses.

>>> step = model_runtime.optimize(model, torch.randn(32, 784), optimizer=opt, loss_fn=loss_fn, targets=(y,))
>>> loss = step(x, targets=(y,))   # one training step, model and opt updated in place
>>> print(step.report())
"""

from model_runtime.errors import ReoptimizeError, RuntimeLayerError
from model_runtime.executors import build_arena, build_reorder, builtin_executors, transient_buffers
from model_runtime.optimize import OptimizedStep, model_device, optimize
from model_runtime.planning import DEFAULT_TIME_LIMIT, arena_lifetimes, device_alignment, make_plan
from model_runtime.program import CompiledProgram, Fallback, build_program

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_TIME_LIMIT", "CompiledProgram", "Fallback", "OptimizedStep", "ReoptimizeError", "RuntimeLayerError",
    "arena_lifetimes", "build_arena", "build_program", "build_reorder", "builtin_executors", "device_alignment",
    "make_plan", "model_device", "optimize", "transient_buffers",
]
