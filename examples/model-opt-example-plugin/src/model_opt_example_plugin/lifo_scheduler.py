"""The ``example-lifo`` scheduler: run the op made ready last (a depth-first order)."""

from __future__ import annotations


def lifo_order(preds, succs) -> list[int]:
    """A topological order of ops ``0..n-1`` (``preds``/``succs``: index lists per op)."""
    waiting = [len(p) for p in preds]
    ready = [v for v in reversed(range(len(preds))) if not waiting[v]]
    order = []
    while ready:
        v = ready.pop()
        order.append(v)
        for s in sorted(succs[v], reverse=True):
            waiting[s] -= 1
            if not waiting[s]:
                ready.append(s)
    return order


class LifoScheduler:
    name = "example-lifo"
    help = "example plugin: depth first, the op made ready last runs next"

    def run(self, problem, control, solver=None) -> None:
        # model-opt validates the order, recomputes its peak and keeps the best offered.
        control.offer(lifo_order(problem.lv.preds, problem.lv.succs), self.name)
