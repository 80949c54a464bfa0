"""PyTorch capture frontend: a whole training step as a storage-level graph.

Importing this package imports torch; ``model_ir`` itself never does.

>>> graph = capture(model, torch.randn(8, 32), optimizer=torch.optim.Adam(model.parameters()))
"""

from model_ir.torch.capture import capture, capture_step
from model_ir.torch.errors import CaptureError, ExecutionError
from model_ir.torch.executor import execute
from model_ir.torch.specs import TensorSpec
from model_ir.torch.step import CapturedStep, init_optimizer_state
from model_ir.torch.tracing import InputSlot

__all__ = [
    "CaptureError", "CapturedStep", "ExecutionError", "InputSlot", "TensorSpec", "capture", "capture_step",
    "execute", "init_optimizer_state",
]
