"""Hook specifications contributed by model-bench: the model zoo."""

from __future__ import annotations

from typing import Any

from model_ir.hookspecs import hookspec


@hookspec
def model_opt_models() -> list[Any]:
    """Benchmark models: providers with ``name``, ``description`` and
    ``build(mode, batch_size, *, optimizer="sgd", device="meta") -> ModelCase``
    (see :class:`model_bench.zoo.ModelCase`)."""
