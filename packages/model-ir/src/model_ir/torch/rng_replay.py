"""Replaying a random op's draws when it is recomputed (``model_ir.recompute.REPLAYS_RNG``).

Before the first run of such an op the executors keep the state of the generator it
draws from (:func:`save_rng`); a rerun runs from that state and puts the generator back
where it was (:func:`swap_rng`, then :func:`restore_rng`), as
``torch.utils.checkpoint`` does with ``preserve_rng_state``. The rerun makes the
first run's values and every later draw is eager's. The generator is the default one
of the device of the op's first tensor argument (CPU: the Mersenne twister's 5 KiB of
host memory; CUDA: the Philox seed and offset).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from model_ir.torch.errors import CaptureError


def _generator(device: torch.device) -> torch.Generator:
    if device.type == "cpu":
        return torch.default_generator
    if device.type == "cuda":
        return torch.cuda.default_generators[device.index if device.index is not None else torch.cuda.current_device()]
    raise CaptureError(f"cannot replay random numbers drawn on {device.type}: only cpu and cuda generators are known")


def draw_device(args: Iterable[Any]) -> torch.device:
    """The device of the first tensor among a random op's arguments (where it draws)."""
    for a in args:
        if isinstance(a, torch.Tensor):
            return a.device
    raise CaptureError("cannot replay a random op with no tensor argument (its device is unknown)")


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


def save_rng_for(*args: Any) -> tuple[torch.Generator, torch.Tensor]:
    """:func:`save_rng` for the device a random op with arguments ``args`` draws on."""
    return save_rng(draw_device(args))
