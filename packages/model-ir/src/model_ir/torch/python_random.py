"""Random numbers drawn in Python while tracing (``random.random()``, ``np.random.beta``).

A traced step replays torch's random draws at every call (dropout masks, ``randn_like``
noise: see :mod:`model_ir.torch.rng_replay`), but a number drawn by Python's ``random``
module or NumPy's global generator is drawn once, at capture, and the step would
repeat it forever: mixup's ``lam`` fixed, stochastic depth always taking the same
branch, where every eager step draws anew. Such a capture is refused, and the
generators are left as they were (capturing draws nothing from the user's streams).
"""

from __future__ import annotations

import contextlib
import random
import sys
from collections.abc import Iterator

from model_ir.torch.errors import CaptureError


def _numpy_random():
    numpy = sys.modules.get("numpy")  # a step that draws from NumPy imported it already
    return getattr(numpy, "random", None)


def _states() -> list:
    numpy_random = _numpy_random()
    return [random.getstate(), numpy_random.get_state() if numpy_random is not None else None]


def _same(a, b) -> bool:
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if hasattr(a, "shape"):  # NumPy's state array
        return hasattr(b, "shape") and a.shape == b.shape and bool((a == b).all())
    return a == b


@contextlib.contextmanager
def refusing_python_random(what: str) -> Iterator[None]:
    """Run the trace of ``what`` (a model's name); raise :class:`CaptureError` after it if
    it drew from ``random`` or NumPy's global generator. Both are restored either way."""
    before = _states()
    try:
        yield
        after = _states()
    finally:
        random.setstate(before[0])
        if before[1] is not None:
            _numpy_random().set_state(before[1])
    drew = [name for name, a, b in zip(("Python's random module", "numpy.random"), before, after)
            if a is not None and not _same(a, b)]
    if drew:
        raise CaptureError(f"cannot capture {what}: the model, the loss or before_step draws random numbers from "
                           f"{' and '.join(drew)}, which a captured step would draw once, at capture, and repeat "
                           "at every call (where eager draws anew: mixup's lam, stochastic depth's coin): draw "
                           "them with torch (torch.rand, torch.distributions, torch.bernoulli), whose draws the "
                           "step makes at every call, or in the training loop, passed in as a tensor input or "
                           "target")
