"""Gradients summed in place, as eager's autograd engine sums them.

Where a tensor feeds several ops, backward sums the gradients that reach it
(``accumulate`` in torch/csrc/autograd/input_buffer.cpp): into the gradient that came
first, in place (``old.add_(new)``), when the engine holds the only reference to it and
it is dense (a view is not alone: its base shares the storage); into a new tensor
otherwise. Traced on fake tensors the engine always takes the second way (a fake tensor
is "subclass-like"), so a traced step would allocate a gradient's bytes at every such
sum that eager does not (resnet18 in training: 8 sums, all in place in eager on CPU;
the allocator trace of its step on an H200 has none of them either, see model-bench's
``traces_vs_simulation.py``).

:func:`marking_accumulations` marks the engine's sums while tracing: between one
node's post-hooks and the next node's pre-hooks the engine runs nothing but them.
:func:`mark_in_place_sums` then marks those eager runs in place: the simulation of eager
(``simulate(..., eager=True)``) and the runtime's ``program`` executor (eager's order
and frees) sum into the first gradient; a plan is free to sum out of place.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Callable

import torch
from torch import fx
from torch.multiprocessing.reductions import StorageWeakRef

from model_ir.simulator import EAGER_IN_PLACE
from model_ir.torch.functional_inplace import _is_view, _storage

#: The profiler region that marks the autograd engine's gradient sums while tracing.
ACCUMULATE = "model_opt.accumulate_gradients"


@contextlib.contextmanager
def engine_sums(root: torch.Tensor, start: Callable[[], None], stop: Callable[[], None]):
    """Inside, ``root.backward()`` calls ``start()`` when the autograd engine begins to
    pass a node's gradients on (summing them into what reached the next nodes before)
    and ``stop()`` when the next node runs: between the two, it runs nothing but sums.
    ``stop()`` is called once more on the way out."""
    handles, seen, stack = [], set(), [root.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        handles.append(fn.register_prehook(lambda *_: stop()))
        handles.append(fn.register_hook(lambda *_: start()))
        stack.extend(f for f, _ in fn.next_functions)
    try:
        yield
    finally:
        stop()
        for h in handles:
            h.remove()


@contextlib.contextmanager
def marking_accumulations(root: torch.Tensor, summing: Callable[[bool], None] = lambda now: None):
    """Inside, a ``root.backward()`` traces each of the engine's gradient sums inside a
    ``torch.profiler.record_function(ACCUMULATE)`` region (:func:`engine_sums`), and
    calls ``summing(True)`` when a region opens, ``summing(False)`` when it closes."""
    opened: list = []

    def start():
        if not opened:
            opened.append(torch.ops.profiler._record_function_enter_new(ACCUMULATE, None))
            summing(True)

    def stop():
        if opened:
            summing(False)
            torch.ops.profiler._record_function_exit._RecordFunction(opened.pop())

    with engine_sums(root, start, stop):
        yield


def dense(t: torch.Tensor) -> bool:
    """``Tensor.is_non_overlapping_and_dense``, which fake tensors lack: the elements
    fill a block of memory, each once, whatever the order of the dimensions."""
    expected = 1
    for stride, size in sorted((int(s), int(n)) for n, s in zip(t.shape, t.stride()) if n != 1):
        if stride != expected:
            return False
        expected *= size
    return True


def mark_in_place_sums(gm: fx.GraphModule, sums: frozenset[str]) -> int:
    """Mark the gradient sums of ``sums`` (node names of ``aten.add.Tensor(old, new)``,
    see :func:`marking_accumulations`) that eager's engine runs in place, holding the
    only reference to ``old``'s storage: ``old`` is no view (a view keeps its base alive),
    no graph input, dense, of the result's shape and dtype, and no node after the sum
    reads its storage. A marked node has ``meta[EAGER_IN_PLACE] = True``; it stays out of
    place in the graph, which a plan may run either way (out of place it frees ``old``
    where it likes), and eager is simulated writing into ``old``
    (:data:`model_ir.simulator.EAGER_IN_PLACE`). Returns how many were marked."""
    nodes = list(gm.graph.nodes)
    position = {n: i for i, n in enumerate(nodes)}
    inputs = {_storage(n) for n in nodes if n.op == "placeholder"}
    readers: dict[StorageWeakRef, list[int]] = defaultdict(list)  # storage -> positions of its readers
    for n in nodes:
        for arg in n.all_input_nodes:
            readers[_storage(arg)].append(position[n])  # a multi-output op is read through its getitems
    marked = 0
    for n in nodes:
        if n.name not in sums or n.target is not torch.ops.aten.add.Tensor or len(n.args) != 2 or n.kwargs:
            continue
        old, result = n.args[0], n.meta.get("val")
        if not isinstance(old, fx.Node) or _is_view(old):
            continue  # a view keeps its base alive: the storage has another reference
        first = old.meta.get("val")
        if not (isinstance(first, torch.Tensor) and isinstance(result, torch.Tensor)):
            continue
        if first.shape != result.shape or first.dtype != result.dtype or not dense(first):
            continue
        storage = StorageWeakRef(first.untyped_storage())
        if storage in inputs or any(p > position[n] for p in readers[storage]):
            continue
        added = n.args[1]
        if isinstance(added, fx.Node) and _storage(added) == storage:
            continue  # ``new`` is a view of ``old`` (``h + h.T``): it holds the storage, eager sums out of place
        n.meta[EAGER_IN_PLACE] = True
        marked += 1
    return marked


def in_place_sum_ordinals(gm: fx.GraphModule, sums: frozenset[str]) -> tuple[frozenset[int], bool]:
    """The ordinals, in trace order among the sums of ``sums``, of those eager runs in
    place (marked by :func:`mark_in_place_sums`), and whether one of them was traced laid
    out otherwise than its first gradient, as eager's ``old.add_(new)`` leaves it."""
    adds = [n for n in gm.graph.nodes if n.name in sums and n.target is torch.ops.aten.add.Tensor]
    marked = {k: n for k, n in enumerate(adds) if n.meta.get(EAGER_IN_PLACE)}
    elsewhere = any(n.meta["val"].stride() != n.args[0].meta["val"].stride() for n in marked.values())
    return frozenset(marked), elsewhere


def add_as_in_place(old: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """``old + new`` in a new tensor laid out as ``old``, as eager's in-place sum
    ``old.add_(new)`` leaves it (an out-of-place ``add`` may choose other strides)."""
    out = torch.empty_strided(old.shape, old.stride(), dtype=old.dtype, device=old.device)
    return torch.add(old, new, out=out)
