"""Replaying a planned step as a CUDA graph (``optimize(..., cuda_graph=True)``).

A plan is static: the same kernels on the same addresses at every step, which is what
``torch.cuda.CUDAGraph`` needs. Replaying the recorded step launches it with one call
instead of one Python call and kernel launch per op, which is what launch-bound steps
(batch-1 transformers) need. A graph records CUDA kernels only, so:

- values the step reads on the host while recording are frozen in the graph: the
  optimizer's hyper-parameters (read with ``.item()``) are, so the graph is recorded
  again when one changes (a scheduler changing ``lr`` every step records every step:
  no gain then);
- CPU tensors the step updates would not be updated by a replay (Adam's step counter
  unless ``capturable=True``): refused, as is a host sync while recording
  (``GradScaler``'s inf check) and the recomputation of random ops, whose generator
  state is saved and restored on the host;
- the graph reads its inputs at fixed addresses: each call copies the batch into the
  graph's own input tensors (one more copy of the batch on the device); parameters,
  model buffers and optimizer state are read where they live, and the graph is
  recorded again if one of them is replaced by another tensor;
- the outputs (the loss) are cloned after each replay, so that what a call returned
  is not overwritten by the next one.

The first call runs the step as usual on the recording stream (cuBLAS and cuDNN create
their handles and workspaces on first use, which cannot happen while recording); the
second records the step and replays it. What the step allocates outside the arena (the
fallbacks' results; everything transient with ``reorder``) lives in the graph's
private pool, which PyTorch's caching allocator reuses within the recording. Before the
first recording, the caching allocator's unused segments are released
(``torch.cuda.empty_cache()``), so the warm-up step's cached blocks do not stay
reserved beside the pool. Random ops (dropout) draw from the default generator as
eager's do: a replay advances its offset by the step's draws.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch

from model_ir.torch.rng_replay import save_rng
from model_runtime.errors import RuntimeLayerError


def device_blocker(device: torch.device) -> str | None:
    """Why no step on ``device`` can be replayed as a CUDA graph (None: it is CUDA)."""
    return None if device.type == "cuda" else f"CUDA graphs need a model on a CUDA device; this one is on {device}"


def graph_blockers(binder, program, device: torch.device) -> list[str]:
    """Why the step of ``binder``/``program`` cannot be replayed as a CUDA graph on ``device`` (empty: it can)."""
    if device_blocker(device):
        return [device_blocker(device)]
    step = binder.step
    out = []
    if step.scaler is not None:
        out.append("a GradScaler step checks its gradients for inf/NaN on the host (a sync cannot be recorded)")
    if any(n.op == "call_function" and n.target is save_rng for n in program.module.graph.nodes):
        out.append("the plan recomputes random ops, replaying their draws through the host's generator state")
    hyper = {pos for pos, _ in binder.hyper_slots}
    for pos, slot in enumerate(step.inputs):
        want = binder.expected[pos]
        if pos in hyper:
            if want.device.type != "cpu":
                out.append(f"hyper-parameter {slot.name!r} is a {want.device.type} tensor the step reads on the host")
        elif want.device.type != device.type:
            hint = " (Adam's step counter: pass capturable=True to keep it on the GPU)" \
                if slot.kind == "optimizer_state" else ""
            out.append(f"{slot.kind} {slot.name!r} is a {want.device.type} tensor, which a replay would not "
                       f"update or read again{hint}")
    return out


class CudaRecorder:
    """Records and replays on a side stream of its own (``torch.cuda.graph``'s recipe)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.stream = torch.cuda.Stream(device)
        self.pool = torch.cuda.graph_pool_handle()
        self.graph: torch.cuda.CUDAGraph | None = None

    @contextlib.contextmanager
    def _on_stream(self):
        current = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(current)
        with torch.cuda.stream(self.stream):
            yield
        current.wait_stream(self.stream)

    def warm_up(self, fn: Callable[[], list]) -> list:
        with self._on_stream():
            out = fn()
        torch.cuda.synchronize(self.device)
        torch.cuda.empty_cache()
        return out

    def record(self, fn: Callable[[], list], tensors: Sequence) -> list:
        """Record ``fn`` (the step on the graph's input ``tensors``); its outputs, filled by each replay."""
        self.graph = None  # the previous recording's memory goes back to the pool first
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool, stream=self.stream):
            out = fn()
        self.graph = graph
        return out

    def replay(self) -> None:
        self.graph.replay()


class GraphedRun:
    """``run(tensors)`` like :meth:`CompiledProgram.run`, replaying a recorded CUDA graph.

    ``binder`` says which inputs are the batch (copied), the hyper-parameters (their
    values key the recording) and the persistent tensors (their addresses key it);
    ``recorder`` records and replays (:class:`CudaRecorder`; tests pass a stand-in).
    """

    def __init__(self, program, binder, recorder):
        self.program = program
        self.recorder = recorder
        self.batch = sorted(pos for pos, *_ in binder.batch_slots)
        self.hyper = sorted(pos for pos, _ in binder.hyper_slots)
        skip = set(self.batch) | set(self.hyper)
        self.persistent = [pos for pos in range(len(binder.expected)) if pos not in skip]
        self.recordings = 0
        self._warm = False
        self._key = None
        self._static: list | None = None
        self._outputs: list = []

    def key(self, tensors: Sequence) -> tuple:
        """What the recorded graph depends on beyond the batch's values."""
        return (tuple(tensors[p].data_ptr() for p in self.persistent),
                tuple(float(tensors[p]) for p in self.hyper))

    def run(self, tensors: Sequence) -> list:
        key = self.key(tensors)
        if key != self._key:
            if not self._warm:
                self._warm = True
                return self.recorder.warm_up(lambda: self.program.run(tensors))
            self._record(tensors, key)
        static = self._static
        for pos in self.batch:
            if tensors[pos] is not static[pos]:
                static[pos].copy_(tensors[pos])
        self.recorder.replay()
        return [o.clone() if isinstance(o, torch.Tensor) else o for o in self._outputs]

    def _record(self, tensors: Sequence, key: tuple) -> None:
        if self._static is None:
            self._static = [None] * len(tensors)
            for pos in self.batch:
                t = tensors[pos]
                self._static[pos] = torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device=t.device)
        static = list(self._static)
        for pos in range(len(tensors)):
            if static[pos] is None:
                static[pos] = tensors[pos]
        self._outputs = []
        self._key = None
        try:
            self._outputs = list(self.recorder.record(lambda: self.program.run(static), static))
        except Exception as e:  # noqa: BLE001 - any failure while recording leaves no usable graph
            raise RuntimeLayerError(f"recording the step as a CUDA graph failed: {e}; "
                                    "optimize without cuda_graph=True") from e
        self._key = key
        self.recordings += 1
