"""Measuring what an executor really allocates, with the live-storage harness of
:mod:`model_ir.testing.live_memory`.

:func:`measure` compiles the step's plan again with the same executor plus a hook
after every op (the hook is the only difference from the program ``step`` runs) and
runs it once under a :class:`~model_ir.testing.live_memory.StorageTracker`. It
reports, op by op, the bytes of live storages right after the op (before the buffers
it used last are dropped: the quantity the simulator's timeline models) and the
storages each op created outside the step's inputs and the arena.

Running it performs one real step: the model and optimizer are updated.
"""

from __future__ import annotations

import attrs
import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils import _pytree as pytree

from model_ir.testing.live_memory import StorageTracker
from model_runtime.executors import executor_named
from model_runtime.lowering import storage_bytes


@attrs.frozen
class Measurement:
    """``timeline[t]``: live storage bytes after the ``t``-th op of the planned order.
    ``created[op_id]``: bytes of storages that op created outside the inputs and the
    arena (each rounded up to the granularity). ``arena_bytes``: the arena's size."""

    order: tuple[str, ...]
    timeline: tuple[int, ...]
    created: dict[str, int]
    arena_bytes: int | None
    outputs: list

    @property
    def peak_bytes(self) -> int:
        return max(self.timeline, default=0)


class _CreationTracker(StorageTracker):
    """Also records every storage an op returns that was not tracked before."""

    def __init__(self, granularity: int):
        super().__init__(granularity)
        self.known: set[int] = set()
        self.new: list[int] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor):
                key = StorageWeakRef(t.untyped_storage()).cdata
                fresh = key not in self._live or self._live[key][0].expired()
                self.track(t)
                if fresh and key not in self.known:
                    self.new.append(self._live[key][1])
        return out


def measure(step, *args, targets=(), **kwargs) -> Measurement:
    """Run one step of ``step`` (an :class:`~model_runtime.OptimizedStep`) on a batch and
    measure it (see the module docstring); sizes are rounded like the plan's buffers."""
    granularity = step.plan.graph.meta.get("granularity", 1)
    tensors = step.bind(*args, targets=targets, **kwargs)
    tracker = _CreationTracker(granularity)
    timeline: list[int] = []
    created: dict[str, int] = {}

    def on_op(t, op_id, inputs, value):
        timeline.append(tracker.live_bytes())
        created[op_id] = sum(tracker.new)
        tracker.new.clear()

    executor = executor_named(step.executor)
    program = executor.build(step.captured, step.plan, device=step.device, on_op=on_op)
    for t in tensors:
        tracker.track(t)
    for node in step.captured.module.graph.nodes:
        if node.op == "get_attr":
            value = getattr(step.captured.module, node.target)
            if isinstance(value, torch.Tensor):
                tracker.track(value)
    arena = program.arena
    if arena is not None:
        tracker.track(arena)
    tracker.known = {StorageWeakRef(x.untyped_storage()).cdata for x in tensors}
    if arena is not None:
        tracker.known.add(StorageWeakRef(arena.untyped_storage()).cdata)
    tracker.new.clear()
    with tracker:
        outputs = program.run(tensors)
    return Measurement(
        order=tuple(step.plan.schedule.order), timeline=tuple(timeline), created=created,
        arena_bytes=None if arena is None else arena.untyped_storage().nbytes(), outputs=outputs,
    )


def _describe(t) -> dict:
    return {"shape": list(t.shape), "stride": list(t.stride()), "dtype": str(t.dtype), "device": str(t.device),
            "storage_bytes": storage_bytes(t)}


def kernel_mismatches(step, *args, targets=(), **kwargs) -> list[dict]:
    """Ops whose real results differ from what the capture recorded (shape, strides,
    dtype, device or storage size), found by running one step of ``step`` with the
    ``reorder`` executor (the model and optimizer are updated).

    The capture runs fake tensors through meta kernels; on a GPU the real kernels
    (cuDNN, fused attention) may return other metadata, and then the plan's buffer
    sizes are not what the step allocates. Each entry: ``op``, ``target``, ``index``
    (result element), ``captured`` and ``real`` (see :func:`_describe`).
    """
    nodes = {n.name: n for n in step.captured.module.graph.nodes}
    found: list[dict] = []

    def on_op(t, op_id, inputs, value):
        node = nodes[op_id]
        fakes = node.meta.get("val")
        fakes = list(fakes) if isinstance(fakes, (tuple, list)) else [fakes]
        reals = list(value) if isinstance(value, (tuple, list)) else [value]
        for k, (f, r) in enumerate(zip(fakes, reals)):
            if not isinstance(f, torch.Tensor) or not isinstance(r, torch.Tensor):
                if isinstance(f, torch.Tensor) != isinstance(r, torch.Tensor):
                    found.append({"op": op_id, "target": str(node.target), "index": k,
                                  "captured": type(f).__name__, "real": type(r).__name__})
                continue
            want, got = _describe(f), _describe(r)
            if want != got:
                found.append({"op": op_id, "target": str(node.target), "index": k, "captured": want, "real": got})

    tensors = step.bind(*args, targets=targets, **kwargs)
    executor = executor_named("reorder")
    program = executor.build(step.captured, step.plan, device=step.device, on_op=on_op)
    program.run(tensors)
    return found
