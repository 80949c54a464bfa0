"""Comparisons of a uniform draw with a bound it never crosses, decided at capture.

Hugging Face's LayerDrop (BART, Whisper, wav2vec2, ... in transformers 5.0 to at least
5.6) draws ``torch.rand([])`` for every layer in training and skips the layer when the
draw is below the rate, also when the rate is 0: a branch on a random value, which a
trace cannot take. A draw of ``torch.rand`` lies in [0, 1), so ``draw < 0`` is False at
every call (and ``draw < 1`` True). While tracing, :func:`decided_draws` answers such a
comparison with a constant, as eager's comes out at every call; the draw stays in the
step, so the generator advances as eager's does. A comparison the bounds do not decide
(a rate of 0.1) runs as it stands, and capture refuses its branch.
"""

from __future__ import annotations

import contextlib
import operator
import weakref
from collections.abc import Iterator

import torch
from torch.overrides import TorchFunctionMode

#: uniform draws in [0, 1)
_DRAWS = frozenset({torch.rand, torch.rand_like})
#: torch function -> the comparison it makes
_COMPARISONS = {getattr(owner, name): compare
                for names, compare in ((("lt", "__lt__"), operator.lt), (("le", "__le__"), operator.le),
                                       (("gt", "__gt__"), operator.gt), (("ge", "__ge__"), operator.ge))
                for name in names for owner in (torch.Tensor, torch) if hasattr(owner, name)}


def decided(compare, bound: float) -> bool | None:
    """What ``compare(draw, bound)`` gives for every draw in [0, 1), or None when it depends on the draw."""
    if bound >= 1:
        return compare in (operator.lt, operator.le)
    if bound < 0 or (bound == 0 and compare in (operator.lt, operator.ge)):
        return compare in (operator.gt, operator.ge)
    return None


class _DecidedDraws(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.draws: dict[int, weakref.ref] = {}

    def _is_draw(self, value) -> bool:
        ref = self.draws.get(id(value))
        return ref is not None and ref() is value

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        compare = _COMPARISONS.get(func)
        if compare is not None and len(args) == 2 and not kwargs and isinstance(args[1], (int, float)) \
                and not isinstance(args[1], bool) and self._is_draw(args[0]):
            answer = decided(compare, float(args[1]))
            if answer is not None:
                return torch.tensor(answer, device=args[0].device).expand(args[0].shape)
        out = func(*args, **kwargs)
        if func in _DRAWS and isinstance(out, torch.Tensor) and out.is_floating_point():
            self.draws[id(out)] = weakref.ref(out)
        return out


@contextlib.contextmanager
def decided_draws() -> Iterator[None]:
    """While tracing, comparisons of a ``torch.rand`` draw with a number it never crosses
    give a constant boolean tensor (of the draw's shape) instead of a traced comparison."""
    with _DecidedDraws():
        yield
