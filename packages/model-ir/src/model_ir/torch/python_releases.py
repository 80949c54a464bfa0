"""When eager PyTorch frees a storage: once Python drops the last tensor on it.

The captured graph frees a buffer after its last reader; the plan's executors do the
same. Eager PyTorch frees a storage only when no Python object refers to it, and a
forward method holds its local variables until it returns. Under ``no_grad`` (eval)
nothing else keeps activations alive, so that difference is eager's memory:
torchvision's ViT encoder block keeps its input, the attention's residual sum and
``ln_2``'s output in locals through its MLP, and the encoder and the model hold the
block stack's input and the class-token concatenation, so vit_b_16 in eval holds
four more hidden-state tensors at its peak than the graph's last uses say (18.5 MiB
each at batch 32; the H200 measured 622 MiB, the last-use simulation 547).

:class:`ReleaseRecorder` is a dispatch mode entered around the traced model call. It
watches every tensor an operator returns (the objects the model's code holds) and,
when the last one on a storage is garbage-collected, notes the FX node the tracer had
made last. The storage graph turns that into ``Buffer.meta["released_after"]`` (an op
id), which :func:`model_ir.simulate` honours with ``eager=True``.
"""

from __future__ import annotations

import weakref

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode


class ReleaseRecorder(TorchDispatchMode):
    """Records, per storage, how many FX nodes the tracer had made when Python dropped
    the last tensor on it (enter it inside ``make_fx``; :meth:`close` at the end of the
    traced function, then read :attr:`released`)."""

    def __init__(self):
        super().__init__()
        from torch.fx.experimental.proxy_tensor import get_proxy_mode

        proxy = get_proxy_mode()
        self._graph = None if proxy is None else proxy.tracer.graph
        self._holders: dict[StorageWeakRef, int] = {}  # live watched tensors per storage
        self._watched: set[int] = set()  # ids of the live watched tensor objects
        self._released_at: dict[StorageWeakRef, int] = {}
        #: storage -> name of the last FX node made before Python released it
        self.released: dict[StorageWeakRef, str] = {}
        self._open = self._graph is not None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if self._open:
            for t in pytree.tree_leaves(out):
                if isinstance(t, torch.Tensor) and id(t) not in self._watched:
                    self._watch(t)
        return out

    def _watch(self, t: torch.Tensor) -> None:
        key = StorageWeakRef(t.untyped_storage())
        self._watched.add(id(t))
        self._holders[key] = self._holders.get(key, 0) + 1
        weakref.finalize(t, self._drop, id(t), key).atexit = False  # nothing to record at exit

    def _drop(self, tid: int, key: StorageWeakRef) -> None:
        self._watched.discard(tid)
        self._holders[key] -= 1
        if self._open and self._holders[key] == 0:
            self._released_at[key] = len(self._graph.nodes)

    def close(self) -> None:
        """Stop recording (storages still held now live to the end) and name the nodes."""
        if not self._open:
            return
        self._open = False
        names = [n.name for n in self._graph.nodes]
        if not names:
            return
        self.released = {key: names[count - 1] for key, count in self._released_at.items() if count > 0}
        # Still held when the model call returned (a module caching a tensor, or the
        # output): eager keeps it through the step.
        self.released.update((key, names[-1]) for key, n in self._holders.items() if n > 0)
