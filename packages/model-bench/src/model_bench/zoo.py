"""The model zoo: benchmark models, found through the ``model_opt_models`` hook.

A model provider has a ``name``, a ``description`` and one method,
``build(mode, batch_size, *, optimizer="sgd", device="meta") -> ModelCase``. Every
built-in model is built from code or a config with random weights; nothing is
downloaded. Models are built on the ``meta`` device by default: capture works on
fake tensors, so building a model costs no real memory even for OPT-66B.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs

from model_bench.errors import BenchError
from model_bench.optimizers import check_optimizer, make_optimizer
from model_ir.plugins import invalid_answer, provider, providers

MODES = ("train", "eval")
HOOK = "model_opt_models"


@attrs.frozen(eq=False)
class ModelCase:
    """A model ready to capture: the module, one batch, the loss and the optimizer.

    ``inputs`` are the positional arguments of ``model``; ``loss_fn(output, target)``
    returns the scalar loss (train mode only; ``None`` in eval mode, where the step is
    a forward pass without gradients). ``optimizer`` is built over
    ``model.parameters()`` in train mode.
    """

    name: str
    mode: str
    batch_size: int
    model: Any
    inputs: tuple
    target: Any = None
    loss_fn: Callable | None = None
    optimizer: Any = None
    optimizer_name: str | None = None
    meta: Mapping[str, Any] = attrs.field(factory=dict)

    @property
    def train(self) -> bool:
        return self.mode == "train"

    @property
    def parameter_count(self) -> int:
        """Number of parameters (elements, not bytes)."""
        return sum(p.numel() for p in self.model.parameters())

    @property
    def parameter_bytes(self) -> int:
        """Bytes of parameter storage (unrounded)."""
        return sum(p.numel() * p.element_size() for p in self.model.parameters())

    def loss(self, output):
        """The scalar loss of ``output`` against this case's target."""
        return self.loss_fn(output, self.target)


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise BenchError(f"unknown mode {mode!r}; available: {', '.join(MODES)}")
    return mode


#: No tensor dimension is larger (PyTorch's sizes are 64-bit integers).
MAX_BATCH_SIZE = 2**63 - 1


def check_batch_size(batch_size: Any) -> int:
    """``batch_size`` if it is a positive integer PyTorch can size a tensor with; a larger
    one that overflows a model's tensor sizes is refused when the batch is built."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise BenchError(f"batch size must be a positive integer, got {batch_size!r}")
    if batch_size > MAX_BATCH_SIZE:
        raise BenchError(f"batch size {batch_size} is too large: tensor sizes are 64-bit integers "
                         f"(at most {MAX_BATCH_SIZE})")
    return batch_size


def model_providers() -> dict[str, Any]:
    """Every registered model provider, by name."""
    return providers(HOOK)


def model_names(*, suite_only: bool = False) -> list[str]:
    """Names of the registered models (only those in the default suite if ``suite_only``)."""
    found = model_providers()
    return sorted(n for n, p in found.items() if not suite_only or getattr(p, "suite", True))


def get_model(name: str):
    """The provider called ``name``; the error lists the available models."""
    return provider(HOOK, name, "model")


def build_case(name: str, mode: str = "train", batch_size: int = 1, *, optimizer: str = "sgd",
               device: str = "meta") -> ModelCase:
    """Build zoo model ``name`` for ``mode`` at ``batch_size`` (checked, with clear errors)."""
    check_mode(mode)
    check_batch_size(batch_size)
    check_optimizer(optimizer)
    factory = get_model(name)
    case = factory.build(mode, batch_size, optimizer=optimizer, device=device)
    if not isinstance(case, ModelCase):
        error = BenchError(f"build() returned a {type(case).__name__}, not a model_bench.zoo.ModelCase")
        raise invalid_answer(factory, f"model {name!r}", error)
    return case


class ZooModel:
    """Base of the built-in providers: a module, a batch and a loss.

    Subclasses define :meth:`make_model`, :meth:`make_batch` (returns ``(inputs,
    target)``) and :meth:`loss_fn`. ``large`` models are never built on the CPU
    (their weights would not fit a workstation's memory). ``suite`` says
    whether ``bench suite`` runs the model by default.
    """

    name: str = ""
    description: str = ""
    large: bool = False
    suite: bool = True

    def warm_up(self) -> None:
        """Import what :meth:`make_model` needs (timed apart: imports are not the model's cost)."""

    def make_model(self):
        raise NotImplementedError

    def make_batch(self, batch_size: int) -> tuple[tuple, Any]:
        raise NotImplementedError

    @staticmethod
    def loss_fn(output, target):
        import torch.nn.functional as F

        return F.cross_entropy(output, target)

    def build(self, mode: str, batch_size: int, *, optimizer: str = "sgd", device: str = "meta") -> ModelCase:
        import torch

        check_mode(mode)
        check_batch_size(batch_size)
        check_optimizer(optimizer)
        if self.large and torch.device(device).type == "cpu":
            raise BenchError(f"model {self.name!r} is not built on the CPU (its weights are too large); "
                             "use the meta device (capture) or a GPU")
        torch.manual_seed(0)
        with torch.device(device):
            model = self.make_model()
            inputs, target = self._batch(batch_size, device)
        train = mode == "train"
        model.train(train)
        return ModelCase(
            name=self.name, mode=mode, batch_size=batch_size, model=model, inputs=tuple(inputs),
            target=target if train else None, loss_fn=self.loss_fn if train else None,
            optimizer=make_optimizer(optimizer, model.parameters()) if train else None,
            optimizer_name=optimizer if train else None,
            meta={"description": self.description},
        )

    def _batch(self, batch_size: int, device: str):
        """:meth:`make_batch`, with a batch too large for 64-bit sizes or for the
        device's memory refused in one line that names the batch size."""
        from model_ir.torch.errors import out_of_memory, size_overflow

        try:
            return self.make_batch(batch_size)
        except (RuntimeError, TypeError, OverflowError, MemoryError) as e:
            if size_overflow(e):
                raise BenchError(f"batch size {batch_size} is too large for {self.name}: "
                                 "its batch's tensor sizes overflow 64-bit integers") from None
            if out_of_memory(e):
                raise BenchError(f"batch size {batch_size} does not fit in {device} memory: "
                                 f"building {self.name}'s batch ran out of memory") from None
            raise
