"""The optimizers a benchmark step can use, built by name.

The default is MODeL's benchmark setup, plain ``SGD(lr=0.1)``, so figures compare
with the paper. ``foreach=False`` everywhere: the multi-tensor (foreach) kernels
update every parameter in one operator, which would weld all weight updates
together and hide the reordering freedom an eager per-parameter update has.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from model_bench.errors import BenchError

OPTIMIZERS: dict[str, str] = {
    "sgd": "torch.optim.SGD(lr=0.1) (MODeL's setup; no optimizer state)",
    "sgd-momentum": "torch.optim.SGD(lr=0.1, momentum=0.9) (one momentum buffer per parameter)",
    "adam": "torch.optim.Adam(lr=1e-3) (two state buffers per parameter)",
    "adamw": "torch.optim.AdamW(lr=1e-3, weight_decay=0.01) (two state buffers per parameter)",
}


def _factories() -> dict[str, Callable]:
    import torch

    return {
        "sgd": lambda ps: torch.optim.SGD(ps, lr=0.1, foreach=False),
        "sgd-momentum": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, foreach=False),
        "adam": lambda ps: torch.optim.Adam(ps, lr=1e-3, foreach=False),
        "adamw": lambda ps: torch.optim.AdamW(ps, lr=1e-3, weight_decay=0.01, foreach=False),
    }


def check_optimizer(name: str) -> str:
    """Return ``name`` if it is a known optimizer, else raise a :class:`BenchError` listing them."""
    if name not in OPTIMIZERS:
        raise BenchError(f"unknown optimizer {name!r}; available: {', '.join(OPTIMIZERS)}")
    return name


def make_optimizer(name: str, parameters: Iterable):
    """A ``torch.optim`` optimizer called ``name`` over ``parameters``."""
    return _factories()[check_optimizer(name)](list(parameters))


def optimizer_for_mode(optimizer: str | None, mode: str) -> str:
    """The optimizer a command runs (``sgd`` when none is named); one named for an eval
    step, which has none, is refused rather than ignored."""
    if optimizer is not None and mode == "eval":
        raise BenchError(f"--optimizer {optimizer}: an eval step runs no optimizer (forward pass only); "
                         "drop --optimizer, or use --mode train")
    return "sgd" if optimizer is None else optimizer
