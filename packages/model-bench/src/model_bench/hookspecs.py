"""Hook specifications contributed by model-bench: the model zoo, and the ``Protocol``
of a model factory (``docs/plugins.md``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from model_ir.hookspecs import hookspec

if TYPE_CHECKING:
    from model_bench.zoo import ModelCase


class ModelFactory(Protocol):
    """A benchmark model: ``build`` returns the module, one batch, the loss and the
    optimizer for ``mode`` (``train`` or ``eval``) and ``batch_size``, on ``device``
    (``meta`` for capture without memory). Optional: ``suite = False`` keeps it out
    of the default ``bench suite``."""

    name: str
    description: str

    def build(self, mode: str, batch_size: int, *, optimizer: str = "sgd", device: str = "meta") -> ModelCase: ...


@hookspec
def model_opt_models() -> list[ModelFactory]:
    """Benchmark models: providers with ``name``, ``description`` and
    ``build(mode, batch_size, *, optimizer="sgd", device="meta") -> ModelCase``
    (see :class:`model_bench.zoo.ModelCase`)."""
