"""``torch.amp.GradScaler`` inside a captured step (dynamic loss scaling for fp16).

The eager recipe is ``scaler.scale(loss).backward(); scaler.step(optimizer);
scaler.update()``. The captured step runs the same aten ops in the same order:

- the loss is multiplied by the scale before backward (the loss the step returns is
  the unscaled one, as in eager);
- the gradients are unscaled and checked for inf/NaN by
  ``_amp_foreach_non_finite_check_and_unscale_``, grouped by device and dtype in the
  optimizer's parameter order as ``GradScaler._unscale_grads_`` does, before
  ``before_step`` (gradient clipping sees unscaled gradients, as after
  ``scaler.unscale_(optimizer)``);
- ``optimizer.step()`` runs in a region marked :data:`SKIP_IF_INF`: the ops traced in
  it are skipped when a gradient was not finite. Eager decides that with one
  ``found_inf.item()``; so do the executors, once, before the first skippable op;
- ``_amp_update_scale_`` updates the scale and the growth tracker in place.

The scale and growth tracker are persistent inputs of the step (slots of kind
``scaler_state``); the growth and backoff factors and the growth interval are
constants of the step, checked at every call.
"""

from __future__ import annotations

from collections import defaultdict

import attrs
import torch

from model_ir.torch.errors import CaptureError

#: The record-function name around the optimizer update a non-finite gradient skips.
SKIP_IF_INF = "model_opt.skip_if_inf"

#: Slot names of the scaler's tensors (kind ``scaler_state``), in slot order.
SCALER_TENSORS = ("scale", "growth_tracker")


@attrs.frozen
class ScalerConstants:
    """The numbers of a ``GradScaler`` the captured step holds as constants."""

    growth_factor: float
    backoff_factor: float
    growth_interval: int

    @classmethod
    def of(cls, scaler) -> ScalerConstants:
        return cls(float(scaler._growth_factor), float(scaler._backoff_factor), int(scaler._growth_interval))

    def changed(self, scaler) -> str | None:
        """What differs in ``scaler`` from these constants (None: nothing)."""
        if not scaler.is_enabled():
            return "the GradScaler was disabled"
        now = ScalerConstants.of(scaler)
        for field in attrs.fields(ScalerConstants):
            a, b = getattr(self, field.name), getattr(now, field.name)
            if a != b:
                return f"the GradScaler's {field.name} changed from {a!r} to {b!r}, a constant of the step"
        return None


def check_scaler(scaler, optimizer, train: bool) -> None:
    """Raise :class:`CaptureError` unless ``scaler`` can be captured with this step."""
    if not isinstance(scaler, torch.amp.GradScaler):
        raise CaptureError(f"scaler must be a torch.amp.GradScaler, got {type(scaler).__name__}")
    if not train or optimizer is None:
        raise CaptureError("a GradScaler needs a training step with an optimizer")
    if getattr(optimizer, "_step_supports_amp_scaling", False):
        raise CaptureError(f"{type(optimizer).__name__} unscales inside its fused step (fused=True); "
                           "capture it with a GradScaler is not supported: use the foreach or for-loop optimizer")


def scaler_tensors(scaler, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The scaler's scale and growth tracker, created as its first ``scale()`` would."""
    if scaler._scale is None:
        scaler._lazy_init_scale_growth_tracker(torch.device(device))
    return scaler._scale, scaler._growth_tracker


def example_scaler_tensors(scaler, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Tensors shaped like the scaler's, without creating its state (capture only)."""
    if scaler._scale is not None:
        return scaler._scale, scaler._growth_tracker
    return (torch.empty((), dtype=torch.float32, device=device),
            torch.empty((), dtype=torch.int32, device=device))


def unscale_grads(optimizer, scale: torch.Tensor) -> torch.Tensor:
    """``GradScaler.unscale_``: divide every gradient by ``scale`` in place; returns
    ``found_inf`` (1.0 when a gradient was not finite)."""
    inv_scale = scale.double().reciprocal().float()
    found_inf = torch.full((), 0.0, dtype=torch.float32, device=scale.device)
    grouped: dict = defaultdict(lambda: defaultdict(list))
    for group in optimizer.param_groups:
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.dtype == torch.float16:
                raise CaptureError("GradScaler cannot unscale fp16 gradients (fp16 parameters); keep the "
                                   "parameters in fp32 and use autocast")
            if p.grad.is_sparse:
                raise CaptureError("sparse gradients cannot be captured with a GradScaler")
            grouped[p.grad.device][p.grad.dtype].append(p.grad)
    with torch.no_grad():
        for per_dtype in grouped.values():
            for grads in per_dtype.values():
                torch._amp_foreach_non_finite_check_and_unscale_(grads, found_inf, inv_scale)
    return found_inf


def update_scale(constants: ScalerConstants, scale: torch.Tensor, growth_tracker: torch.Tensor,
                 found_inf: torch.Tensor) -> None:
    """``GradScaler.update()`` for one optimizer on one device."""
    torch._amp_update_scale_(scale, growth_tracker, found_inf, constants.growth_factor,
                             constants.backoff_factor, constants.growth_interval)
