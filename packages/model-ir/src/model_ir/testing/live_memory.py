"""Measuring the live storage bytes of a captured step while it really runs (needs torch).

This is the ground truth the simulator is checked against (the model-ir README,
"Memory model"). A :class:`StorageTracker` (a ``TorchDispatchMode``) sees every tensor
every aten operator returns and keeps a *weak* reference to its storage, so a storage counts
as live exactly as long as PyTorch keeps it allocated. :func:`measure_live_bytes` runs
a :class:`~model_ir.torch.CapturedStep` in a given order and records, after each IR op
ran and before the executor drops the buffers that op used for the last time, the total
bytes of live storages: the step's input tensors (parameters, model buffers, optimizer
state, batch) plus every storage an operator created that is still alive.

That is precisely the quantity ``simulate(graph, order).timeline[t]`` models (the op's
inputs and outputs alive while it runs, everything freed after its last use), so for a
graph captured with ``granularity=1`` the two must be equal op by op. Not counted on
either side: temporaries a kernel allocates and frees internally, and allocator
rounding (both sides round each storage up to the same ``granularity``).

Those temporaries are measured with torch.profiler's memory events:
:func:`exact_peak_allocated_during` follows every allocation and free, and
:func:`peak_allocated_during` the per-operator totals, which net out what a kernel
frees in its own frame.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

from model_ir.torch.kernel_probes import cpu_memory_profile, raw_memory_events, running_peak


class StorageTracker(TorchDispatchMode):
    """Tracks every storage created by an aten op (and any registered tensor) by weak reference."""

    def __init__(self, granularity: int = 1):
        super().__init__()
        self.granularity = granularity
        self._live: dict[int, tuple[StorageWeakRef, int]] = {}

    def track(self, t: torch.Tensor) -> None:
        """Count ``t``'s storage while it is alive (bytes rounded up to ``granularity``)."""
        storage = t.untyped_storage()
        ref = StorageWeakRef(storage)
        key = ref.cdata
        old = self._live.get(key)
        # A freed storage's address can be reused: replace an expired entry.
        if old is None or old[0].expired():
            nbytes = storage.nbytes()
            self._live[key] = (ref, -(-nbytes // self.granularity) * self.granularity)

    def live_bytes(self) -> int:
        """Bytes of tracked storages still allocated."""
        dead = [k for k, (ref, _) in self._live.items() if ref.expired()]
        for k in dead:
            del self._live[k]
        return sum(size for _, size in self._live.values())

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.track(t)
        return out


def measure_live_bytes(step, tensors: Sequence[torch.Tensor], order=None, *, granularity: int = 1) -> list[int]:
    """Run ``step`` on ``tensors`` in ``order`` and return the live bytes after each op.

    ``tensors`` are the bound step inputs (:meth:`CapturedStep.bind`); the caller keeps
    them alive, as a training loop does. Entry ``t`` is the live storage bytes right
    after the ``t``-th op of ``order`` ran, before the buffers it used last are freed;
    compare it with ``simulate(step.graph, order).timeline[t]`` for a graph captured
    with the same ``granularity``.
    """
    from model_ir.torch.executor import execute

    tracker = StorageTracker(granularity)
    for t in tensors:
        tracker.track(t)
    for node in step.module.graph.nodes:
        if node.op == "get_attr":
            value = getattr(step.module, node.target)
            if isinstance(value, torch.Tensor):
                tracker.track(value)
    measured: list[int] = []
    with tracker:
        execute(step, tensors, order, on_op=lambda t, op_id: measured.append(tracker.live_bytes()))
    return measured


class _EagerTracker(StorageTracker):
    """A :class:`StorageTracker` that records the live bytes after every aten op, and
    lets the autograd engine sum gradients in place as it does without a tracker.

    With any dispatch mode active the engine treats every tensor as a subclass and sums
    the gradients reaching one tensor into a new one; without, into the first gradient,
    in place, when it holds the only reference to it (torch/csrc/autograd/input_buffer.cpp,
    :mod:`model_ir.torch.gradient_accumulation`). Inside :meth:`summing` (the engine's
    sums, see :func:`~model_ir.torch.gradient_accumulation.engine_sums`), an
    ``add(old, new)`` whose ``old`` is no view, is dense, is referenced no more than
    ``new`` (moved into the sum) and shares its storage with no other tensor runs as
    ``old.add_(new)``, as eager's engine would run it."""

    def __init__(self, granularity: int = 1):
        super().__init__(granularity)
        self.after_each: list[int] = []
        self.sums = False

    @contextlib.contextmanager
    def summing(self):
        """Inside, a tensor's ``backward()`` marks the engine's sums for this tracker."""
        from model_ir.torch.gradient_accumulation import engine_sums

        backward = torch.Tensor.backward

        def marked(tensor, *args, **kwargs):
            with engine_sums(tensor, lambda: setattr(self, "sums", True), lambda: setattr(self, "sums", False)):
                return backward(tensor, *args, **kwargs)

        torch.Tensor.backward = marked
        try:
            yield
        finally:
            torch.Tensor.backward = backward

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if self.sums and func is torch.ops.aten.add.Tensor and not kwargs and _sums_in_place(*args):
            out = args[0].add_(args[1])
            self.after_each.append(self.live_bytes())
            return out
        out = super().__torch_dispatch__(func, types, args, kwargs)
        self.after_each.append(self.live_bytes())
        return out


def _sums_in_place(old, new, *rest) -> bool:
    """Would eager's engine sum ``new`` into ``old`` in place (see :class:`_EagerTracker`)?
    Inside a dispatch mode a tensor alone in its storage counts 2 references to it (its
    own, the ``untyped_storage()`` asked for)."""
    from model_ir.torch.gradient_accumulation import dense

    return (not rest and isinstance(old, torch.Tensor) and isinstance(new, torch.Tensor) and not old._is_view()
            and old.shape == new.shape and old.dtype == new.dtype and dense(old)
            and old._use_count() <= new._use_count()
            and torch._C._storage_Use_Count(old.untyped_storage()._cdata) == 2)


def measure_eager_live_bytes(model, optimizer, inputs, *, loss_fn=None, targets=(), granularity: int = 1) -> list[int]:
    """Live storage bytes after every aten op of one plain eager training step.

    The step is ``zero_grad(set_to_none=True)``, forward, loss (``loss_fn(output,
    *targets)``, default: :func:`model_ir.torch.tracing.default_loss`), backward,
    ``optimizer.step()``, ``zero_grad``, on the real tensors (the optimizer's state is created first with
    :func:`~model_ir.torch.init_optimizer_state`). Counted: parameters, buffers,
    optimizer state, the batch and every storage created during the step while alive.
    Its maximum is the eager peak a ``keep_grads=True`` capture's program order models.
    """
    from model_ir.testing.torch_models import eager_step

    return _measure_step(model, [] if optimizer is None else [optimizer], inputs, targets, granularity,
                         lambda: eager_step(model, optimizer, inputs, loss_fn, targets))


def measure_optimizer_in_backward_live_bytes(model, make_optimizer, inputs, *, loss_fn=None, targets=(),
                                             granularity: int = 1) -> list[int]:
    """Live storage bytes after every aten op of one eager step with the optimizer fused
    into backward, PyTorch's recipe: ``make_optimizer([p])`` builds one optimizer per
    parameter, and a ``register_post_accumulate_grad_hook`` steps it and drops the
    gradient as soon as backward has accumulated it. Counted as in
    :func:`measure_eager_live_bytes`; its maximum is the peak that the
    ``optimizer-in-backward`` order of a capture with one whole-model optimizer models.
    """
    from model_ir.testing.torch_models import eager_step

    optimizers = {p: make_optimizer([p]) for p in model.parameters()}

    def update(p):
        optimizers[p].step()
        p.grad = None

    handles = [p.register_post_accumulate_grad_hook(update) for p in optimizers]
    try:
        return _measure_step(model, list(optimizers.values()), inputs, targets, granularity,
                             lambda: eager_step(model, None, inputs, loss_fn, targets))
    finally:
        for h in handles:
            h.remove()


def measure_eager_forward_live_bytes(model, inputs, *, granularity: int = 1) -> list[int]:
    """Live storage bytes after every aten op of the model's eager forward under
    ``no_grad`` (an eval step, in the model's current mode), the output kept to the end.
    Eager frees a tensor only when Python drops it, so locals a forward method keeps
    count until it returns: the maximum is the peak ``simulate(graph, eager=True)`` gives
    an eval capture (:mod:`model_ir.torch.python_releases`)."""
    from model_ir.testing.torch_models import call_model

    def run():
        with torch.no_grad():
            return call_model(model, inputs)

    return _measure_step(model, [], inputs, (), granularity, run)


def _measure_step(model, optimizers, inputs, targets, granularity, run) -> list[int]:
    from model_ir.torch import init_optimizer_state
    from model_ir.torch.tracing import flatten_batch

    for opt in optimizers:
        init_optimizer_state(opt)
    tracker = _EagerTracker(granularity)
    persistent = [*model.parameters(), *model.buffers(), *flatten_batch(inputs)[0], *flatten_batch(tuple(targets))[0]]
    for opt in optimizers:
        persistent += [v for st in opt.state.values() for v in st.values()]
    for t in persistent:
        if isinstance(t, torch.Tensor):
            tracker.track(t)
    with tracker.summing(), tracker:
        run()
    return tracker.after_each


def peak_allocated_during(fn):
    """``(peak, result)``: the peak of new CPU bytes while ``fn()`` runs, by torch.profiler
    memory events, and what ``fn`` returned.

    The profiler charges the bytes allocated and freed while an operator runs to that
    operator (and its children), and reports the frees between operators as ``[memory]``
    events. So each top-level operator counts as everything it and its children allocate
    (the positive part of each one's own memory) when it starts, and as what it freed
    inside (its net memory minus that) when it ends: a temporary freed within the op
    counts at its peak, and is not carried past it. (Summing only the ``aten::empty``
    events and the ``[memory]`` frees carries every such temporary to the end: 60 MiB
    too many on resnet18's CPU step at batch 8, one per batch norm backward.) The
    running sum, in time order, is the memory ``fn`` holds beyond what existed before.
    Fake and meta tensors allocate nothing and do not count.

    Within an operator this sees only each event's net bytes: a buffer a kernel
    allocates and frees in its own frame (oneDNN's blocked-layout copies of a
    convolution's operands and results, MKL's FFT intermediates) nets out, and
    temporaries a child op frees before the next is allocated count together.
    :func:`exact_peak_allocated_during` follows every allocation instead.
    """
    prof, result = _profiled(fn)
    changes = []
    for e in prof.events():
        if e.cpu_parent is not None:
            continue
        if e.name == "[memory]":
            changes.append((e.time_range.start, e.cpu_memory_usage))
            continue
        allocated = _allocated_within(e)
        changes.append((e.time_range.start, allocated))
        changes.append((e.time_range.end, e.cpu_memory_usage - allocated))
    return running_peak(changes)[0], result


def exact_peak_allocated_during(fn):
    """``(peak, result)`` as :func:`peak_allocated_during`, from every allocation and free
    of the CPU allocator in time order (the profiler's raw ``[memory]`` instant events),
    inside operators too: the exact peak of new CPU bytes, what a kernel takes and frees
    within its call included."""
    prof, result = _profiled(fn)
    return running_peak(raw_memory_events(prof))[0], result


def _profiled(fn):
    """``(profile, result)``: ``fn()`` run under torch.profiler with CPU memory events."""
    with cpu_memory_profile() as prof:
        result = fn()
    return prof, result


def _allocated_within(event) -> int:
    """Bytes ``event`` and its descendants allocate (each one's own allocations net of its
    own frees, where positive)."""
    return max(event.self_cpu_memory_usage, 0) + sum(_allocated_within(c) for c in event.cpu_children)
