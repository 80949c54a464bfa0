"""Turning tracing failures into :class:`CaptureError`s that name what failed."""

from __future__ import annotations

import os
import re
import traceback

import torch

from model_ir.torch.errors import CaptureError

_TORCH_DIR = os.path.dirname(torch.__file__)
_OWN_DIR = os.path.dirname(os.path.dirname(__file__))
#: torch code a failure is attributed to when no user frame is found
_TORCH_LIBRARY_DIRS = (os.path.join(_TORCH_DIR, "nn", ""), os.path.join(_TORCH_DIR, "optim", ""))
#: nn.Module's call machinery: in every module's traceback, says nothing of the failing one
_MODULE_CALL = os.path.join("nn", "modules", "module.py")


def _user_frame(exc: BaseException) -> str | None:
    """``file:line (function)`` of the innermost frame outside torch and model_ir; else
    that of the innermost torch module's or optimizer's code
    (``torch/nn/modules/batchnorm.py:...``, when a built-in module is what fails)."""
    found = in_modules = None
    for frame in traceback.extract_tb(exc.__traceback__):
        path = os.path.abspath(frame.filename)
        if path.startswith(_TORCH_LIBRARY_DIRS) and not path.endswith(_MODULE_CALL):
            in_modules = f"torch/{os.path.relpath(path, _TORCH_DIR)}:{frame.lineno} ({frame.name})"
        # Generated code (``<string>``, ``<eval_with_key>``) and library frames say nothing.
        if frame.filename.startswith("<") or path.startswith((_TORCH_DIR, _OWN_DIR)) or "/contextlib.py" in path:
            continue
        found = f"{frame.filename}:{frame.lineno} ({frame.name})"
    return found or in_modules


_PACKED_HINT = ("an RNN given a PackedSequence (pack_padded_sequence) reads its batch sizes, values of the lengths: "
                "run it on the padded batch instead (and mask the padded steps)")
#: torch source (relative to torch's directory) -> what to do when it reads a tensor's value
_HINTS = {
    os.path.join("distributions", ""): "torch.distributions checks its arguments' values: pass validate_args=False "
                                       "or call torch.distributions.Distribution.set_default_validate_args(False)",
    os.path.join("nn", "modules", "batchnorm.py"): "BatchNorm with momentum=None averages over num_batches_tracked, "
                                                  "a value: give it a momentum",
    os.path.join("optim", ""): "this optimizer's update branches on values of its state or parameters (ASGD's "
                               "averaging, Adafactor's parameter scale): choose one whose update does not (SGD, Adam, "
                               "AdamW, NAdam, RAdam, RMSprop, Adagrad, ...); or on a hyper-parameter given as a "
                               "tensor (SGD's momentum, weight_decay: `if momentum != 0`): pass that one as a float "
                               "(a tensor lr or betas is fine)",
    os.path.join("nn", "utils", "clip_grad.py"): "clip_grad_norm_(error_if_nonfinite=True) checks the norm's value: "
                                                 "leave it False and look at the norm the step keeps "
                                                 "(return it from before_step: step.before_step_result)",
    os.path.join("ao", "quantization", ""): "torch.ao.quantization's fake quantization branches on values of its "
                                            "buffers (observer_enabled, fake_quant_enabled) and of the ranges it "
                                            "observes: quantization-aware training is not supported",
    os.path.join("nn", "modules", "rnn.py"): _PACKED_HINT,
    os.path.join("nn", "utils", "rnn.py"): _PACKED_HINT,
}


#: (torch source, function) -> what to do when that function reads a tensor's value
_FUNCTION_HINTS = {
    (os.path.join("nn", "functional.py"), "gaussian_nll_loss"):
        "gaussian_nll_loss checks that var has no negative entry, a value: compute the loss by hand, "
        "0.5 * (var.clamp(min=eps).log() + (input - target) ** 2 / var.clamp(min=eps)) and its mean",
    (os.path.join("nn", "modules", "transformer.py"), "_detect_is_causal_mask"):
        "nn.TransformerEncoder and nn.TransformerDecoder compare a mask given without is_causal with a causal "
        "mask, values of an input: pass is_causal=True (tgt_is_causal=True) when the mask is causal, False when not",
    (os.path.join("nn", "functional.py"), "ctc_loss"):
        "ctc_loss sizes its alignment table by the longest target length, a value (of target_lengths, also when "
        "given as ints): capture cannot plan it, a CTC loss is not supported",
}

_LAYERDROP = ("LayerDrop skips a layer when a random number falls below its rate, a branch on a value no captured "
              "step can take: set the rate to 0 (Hugging Face: config.layerdrop, encoder_layerdrop, "
              "decoder_layerdrop), as fine-tuning often does")
#: a call or name in the failing line outside torch (the user's code or a library's) -> what
#: to do (torch code that reads a value with no frame of its own: an operator's decomposition)
_CALL_HINTS = {
    "one_hot(": "one_hot without num_classes reads the largest label: pass num_classes=",
    # Hugging Face's LayerDrop: `if not skip_the_layer` (wav2vec2, HuBERT), `< self.layerdrop` (BART, Whisper)
    "skip_the_layer": _LAYERDROP,
    "layerdrop": _LAYERDROP,
    "bincount(": "bincount's length is the largest value plus one: count with one_hot(y, num_classes).sum(0) or "
                 "torch.zeros(num_classes).index_add_(0, y, torch.ones_like(y, dtype=torch.float))",
}


def _hint(exc: BaseException) -> str:
    """``"; <what to do>"`` when the value was read by torch code with a known workaround."""
    frames = traceback.extract_tb(exc.__traceback__)
    for frame in reversed(frames):
        path = os.path.relpath(os.path.abspath(frame.filename), _TORCH_DIR)
        hint = _FUNCTION_HINTS.get((path, frame.name))
        if hint:
            return f"; {hint}"
        for source, hint in _HINTS.items():
            if path.startswith(source):
                return f"; {hint}"
    for frame in reversed(frames):
        path = os.path.abspath(frame.filename)
        if not (frame.filename.startswith("<") or path.startswith((_TORCH_DIR, _OWN_DIR))):
            return next((f"; {hint}" for call, hint in _CALL_HINTS.items() if call in (frame.line or "")), "")
    return ""


def _operator(exc: BaseException) -> str | None:
    func = getattr(exc, "func", None)
    return str(func) if func is not None else None


def _operator_in_text(text: str) -> str | None:
    match = re.search(r"\b([A-Za-z_]\w*::\w+(?:\.\w+)?)", text) or re.search(r"\b(aten\.\w+(?:\.\w+)?)", text)
    return match.group(1) if match else None


def capture_error(exc: BaseException, model) -> CaptureError:
    """A :class:`CaptureError` for ``exc`` raised while tracing ``model``."""
    name = type(exc).__name__
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else name
    op = _operator(exc)
    where = _user_frame(exc)
    hint = ""
    if "DataDependent" in name or "GuardOnDataDependent" in name or "data-dependent" in text.lower():
        what = (
            f"data-dependent operation{' ' + op if op else ''}: the step's control flow (model, loss or "
            "optimizer) or output shapes depend on tensor values, which capture under fake tensors cannot know"
        )
        hint = _hint(exc)
    elif "DynamicOutputShape" in name:
        what = f"operator {op or '?'} has an output shape that depends on tensor values"
        hint = _hint(exc) or ("; a step's shapes must follow from its inputs' shapes: keep the full shape and "
                              "mask instead (torch.where(mask, x, 0), x * mask) where the code selects elements "
                              "(nonzero, x[mask], masked_select, unique)")
    elif "argument of type: <class 'torch._C.Generator'>" in text:
        what = ("a random op is given a torch.Generator of its own, which this torch's graph tracing cannot hold "
                f"as an argument (torch {torch.__version__.split('+')[0]}; torch 2.15 traces it): draw from the "
                "global generator (seeded with torch.manual_seed), or use a newer torch")
    elif "UnsupportedOperator" in name or "fake impl" in text.lower() or "NotImplemented" in name:
        op = op or _operator_in_text(text)
        what = (
            f"operator {op or '?'} cannot run under fake tensors (it has no fake/meta implementation; "
            f"register one with torch.library.register_fake){'' if op else ': ' + text}"
        )
    else:
        what = f"{name}{' in operator ' + op if op else ''}: {text}"
        hint = _hint(exc) if "FakeTensor" in text else ""
        if "dynamo-optimized" in text:
            hint = ("; a part of the step is compiled with torch.compile (a submodule or the loss): pass the "
                    "uncompiled one (a compiled module's _orig_mod, the function itself)")
    loc = f" at {where}" if where else ""
    return CaptureError(f"cannot capture {type(model).__name__}: {what}{loc}{hint}")
