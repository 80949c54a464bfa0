"""Replaying a random op's draws when it is recomputed (``model_ir.recompute.REPLAYS_RNG``).

Before the first run of such an op the executors keep the state of the generator it
draws from (:func:`save_rng`); a rerun runs from that state and puts the generator back
where it was (:func:`swap_rng`, then :func:`restore_rng`), as
``torch.utils.checkpoint`` does with ``preserve_rng_state``. The rerun makes the
first run's values and every later draw is eager's. The generator is the default one
of the device of the op's result (CPU: the Mersenne twister's 5 KiB of host memory;
CUDA: the Philox seed and offset); capture marks an op replayable only when that device
is the CPU or a CUDA device and no generator is passed (:func:`replayable`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.utils._pytree as pytree
from torch import fx

from model_ir.torch.errors import ExecutionError


def _generator(device: torch.device) -> torch.Generator:
    if device.type == "cpu":
        return torch.default_generator
    if device.type == "cuda":
        return torch.cuda.default_generators[device.index if device.index is not None else torch.cuda.current_device()]
    raise ExecutionError(f"cannot replay random numbers drawn on {device.type}: only cpu and cuda generators are known")


def draw_device(node: fx.Node) -> torch.device | None:
    """The device of a random op's (traced) result: where it draws."""
    for v in pytree.tree_leaves(node.meta.get("val")):
        if isinstance(v, torch.Tensor):
            return v.device
    return None


def replayable(node: fx.Node, generator=None) -> bool:
    """Whether the executors can replay ``node``'s draws: from the default generator
    (``generator``, the op's generator argument, is None) of a CPU or CUDA device."""
    device = draw_device(node)
    return generator is None and device is not None and device.type in ("cpu", "cuda")


def save_rng(device: torch.device) -> tuple[torch.Generator, torch.Tensor]:
    """The generator of ``device`` and its current state."""
    gen = _generator(device)
    return gen, gen.get_state()


def swap_rng(saved: tuple[torch.Generator, torch.Tensor]) -> torch.Tensor:
    """Set the generator back to ``saved``; returns the state it had."""
    gen, state = saved
    now = gen.get_state()
    gen.set_state(state)
    return now


def restore_rng(saved: tuple[torch.Generator, torch.Tensor], now: torch.Tensor) -> None:
    """Put the generator of ``saved`` back to ``now`` (what :func:`swap_rng` returned)."""
    saved[0].set_state(now)


@contextlib.contextmanager
def replaying(saved: tuple[torch.Generator, torch.Tensor]) -> Iterator[None]:
    """Run the body from the generator state ``saved``, then put the generator back."""
    now = swap_rng(saved)
    try:
        yield
    finally:
        restore_rng(saved, now)
