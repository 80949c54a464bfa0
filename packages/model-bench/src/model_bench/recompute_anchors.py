"""The recomputation anchors users have today, measured on one training step (issue 13).

Three policies trade activation memory for recomputed FLOPs:

- ``no-recompute``: eager PyTorch, every activation autograd saves is kept;
- ``checkpoint-every-block``: ``torch.utils.checkpoint`` (non-reentrant) on every
  block of the model (the common manual policy);
- ``torch.compile``: AOTAutograd's min-cut partitioner under
  ``torch._functorch.config.activation_memory_budget`` (a knapsack over what to
  recompute), without code generation, as the ``aot_eager_decomp_partition`` backend runs it.

Each measurement is an :class:`AnchorPoint`: bytes of saved activations (tensors kept
from the forward pass for the backward pass, parameters and inputs excluded, each
storage once), the measured peak of the step's live storage bytes (everything alive
counted: parameters, buffers, inputs, targets, activations, gradients; see
:data:`PEAK_GRANULARITY`) and FLOPs from :class:`torch.utils.flop_counter.FlopCounterMode`,
which counts matrix multiplications, convolutions and attention (2 FLOPs per
multiply-add) and nothing for pointwise ops and reductions. The project's
recomputation planner, judged on a step's peak, is compared with these records.

The functions leave the model as they found it: parameters' ``.grad``, buffers
(batch-norm statistics), the RNG state and the functorch config are restored, and
dynamo is reset after a compile. Each step starts with every ``.grad`` ``None`` (as
after ``zero_grad(set_to_none=True)``).
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import attrs

from model_bench.errors import BenchError

NO_RECOMPUTE = "no-recompute"
CHECKPOINT_EVERY_BLOCK = "checkpoint-every-block"
TORCH_COMPILE = "torch.compile"
METHODS = (NO_RECOMPUTE, CHECKPOINT_EVERY_BLOCK, TORCH_COMPILE)

#: Storage sizes are rounded up to this many bytes when the peak is measured: the CPU
#: allocator's alignment, the granularity the project's captures use on the CPU, so a
#: peak here compares with ``simulate(capture_step(..., granularity=64).graph)``.
PEAK_GRANULARITY = 64


@attrs.frozen
class AnchorPoint:
    """One policy's cost on one training step.

    ``saved_activation_bytes``: bytes of the distinct storages kept from the forward
    pass for the backward pass (parameters and the step's inputs excluded).
    ``peak_bytes``: the peak of live storage bytes measured while one real step
    (forward, loss, backward into ``.grad``, no optimizer) runs on the CPU: parameters,
    buffers, inputs, targets and every storage an aten op made while it is alive, each
    storage once, rounded up to :data:`PEAK_GRANULARITY` bytes. ``no_recompute_peak_bytes``:
    the peak of the :func:`no_recompute` step of the same model and batch (eager for
    every method, so ``peak_cut_bytes`` of different methods compare with each other).
    ``forward_flops`` / ``backward_flops``: FLOPs of the forward pass (model and loss)
    and of the backward pass, recomputation included. ``recomputed_flops``: FLOPs run
    again because activations were not kept. ``no_recompute_saved_bytes``: the saved
    bytes of the same step without recomputation, measured the same way (eager hooks
    for the eager policies, the default partition of the same joint graph for
    torch.compile), so that ``saved_fraction`` compares like with like. ``graphs``:
    how many graphs torch.compile partitioned, ``fullgraph``: whether it compiled the
    step as one graph (0 and ``None`` for the eager policies).
    """

    method: str
    budget: float | None
    saved_activation_bytes: int
    forward_flops: int
    backward_flops: int
    recomputed_flops: int
    no_recompute_saved_bytes: int
    peak_bytes: int
    no_recompute_peak_bytes: int
    graphs: int = 0
    fullgraph: bool | None = None

    @property
    def recompute_overhead(self) -> float:
        """Recomputed FLOPs as a fraction of the forward pass's FLOPs (0.0 when nothing is recomputed)."""
        return self.recomputed_flops / self.forward_flops if self.forward_flops else 0.0

    @property
    def saved_fraction(self) -> float:
        """Saved activation bytes as a fraction of the same step's without recomputation."""
        if not self.no_recompute_saved_bytes:
            return 0.0 if not self.saved_activation_bytes else float("inf")
        return self.saved_activation_bytes / self.no_recompute_saved_bytes

    @property
    def peak_cut_bytes(self) -> int:
        """How much lower the step's peak is than without recomputation (negative: higher)."""
        return self.no_recompute_peak_bytes - self.peak_bytes

    @property
    def peak_fraction(self) -> float:
        """The step's peak as a fraction of the same step's peak without recomputation."""
        if not self.no_recompute_peak_bytes:
            return 0.0 if not self.peak_bytes else float("inf")
        return self.peak_bytes / self.no_recompute_peak_bytes

    def to_dict(self) -> dict[str, Any]:
        """The fields and the derived figures, JSON-ready."""
        return {**attrs.asdict(self), "recompute_overhead": self.recompute_overhead,
                "saved_fraction": self.saved_fraction, "peak_cut_bytes": self.peak_cut_bytes,
                "peak_fraction": self.peak_fraction}


# --- blocks ----------------------------------------------------------------------------

# Containers (dotted attribute paths) whose children are the blocks to checkpoint.
_BLOCK_CONTAINERS: dict[str, tuple[str, ...]] = {
    "vit_b_16": ("encoder.layers",),
    "resnet18": ("layer1", "layer2", "layer3", "layer4"),
    "resnet50": ("layer1", "layer2", "layer3", "layer4"),
    "bert-base": ("model.bert.encoder.layer",),
    "bert-tiny": ("model.bert.encoder.layer",),
    "gpt2": ("model.transformer.h",),
    "gpt2-tiny": ("model.transformer.h",),
    "opt-125m": ("model.model.decoder.layers",),
    "opt-350m": ("model.model.decoder.layers",),
    "opt-tiny": ("model.model.decoder.layers",),
    "transformer": ("encoder.layers", "decoder.layers"),
    "transformer-small": ("encoder.layers", "decoder.layers"),
}


def block_models() -> list[str]:
    """Zoo models :func:`blocks_of` knows the blocks of."""
    return sorted(_BLOCK_CONTAINERS)


def blocks_of(model_name: str, model) -> list:
    """The blocks of zoo model ``model_name`` to checkpoint, in forward order.

    Transformer layers for the transformers (vit_b_16's encoder layers, BERT's encoder
    layers, GPT-2's ``transformer.h``, ...), the residual blocks (bottlenecks) of
    ``layer1``..``layer4`` for the ResNets.
    """
    paths = _BLOCK_CONTAINERS.get(model_name)
    if paths is None:
        raise BenchError(f"no blocks known for model {model_name!r}; known: {', '.join(block_models())}")
    blocks = []
    for path in paths:
        try:
            container = functools.reduce(getattr, path.split("."), model)
        except AttributeError:
            raise BenchError(f"model {model_name!r} has no {path!r}: not the zoo's {model_name}?") from None
        blocks.extend(container.children())
    return blocks


# --- shared helpers -------------------------------------------------------------------


@contextmanager
def _model_state_kept(model) -> Iterator[None]:
    """Set the parameters' gradients to ``None``; restore them, the buffers and the RNG state on exit."""
    import torch

    grads = [(p, p.grad) for p in model.parameters()]
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    with torch.random.fork_rng(devices=[]):
        try:
            for p, _ in grads:
                p.grad = None
            yield
        finally:
            with torch.no_grad():
                for b, saved in buffers:
                    b.copy_(saved)
            for p, g in grads:
                p.grad = g


def _step_fn(model, loss_fn: Callable) -> Callable:
    def step(*args):
        *inputs, targets = args
        return loss_fn(model(*inputs), targets)

    return step


def _storage_key(t) -> Any:
    from torch.multiprocessing.reductions import StorageWeakRef

    return StorageWeakRef(t.untyped_storage())


@functools.cache
def _peak_tracker_class() -> type:
    from model_ir.testing.live_memory import StorageTracker

    class PeakTracker(StorageTracker):
        """A :class:`~model_ir.testing.live_memory.StorageTracker` that keeps the highest
        live bytes seen after any aten op (``peak``).

        ``ignore_compile_internals``: torch.compile neither traces nor compiles under a
        dispatch mode that does not say so (dynamo skips the frame: "non-infra torch
        dispatch mode present") and would run the step eagerly; with it, dynamo turns
        the mode off while it compiles and back on while the compiled graphs run, and
        the ``aot_eager`` graphs call aten ops one by one, so every storage they make is
        seen. (Code generated by inductor would hide its temporaries; none runs here.)
        """

        def __init__(self, granularity: int):
            super().__init__(granularity)
            self.peak = 0
            self.ops = 0

        @classmethod
        def ignore_compile_internals(cls) -> bool:
            return True

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = super().__torch_dispatch__(func, types, args, kwargs)
            self.ops += 1
            self.peak = max(self.peak, self.live_bytes())
            return out

    return PeakTracker


@contextmanager
def _peak_measured(model, inputs: tuple, targets) -> Iterator[Any]:
    """Measure the peak live storage bytes of the code run in the block (``tracker.peak``).

    Counted from the start: the model's parameters and buffers, ``inputs`` and
    ``targets``; then every storage an aten op returns, while it is allocated (weak
    references), each storage once, sizes rounded up to :data:`PEAK_GRANULARITY`.
    Not counted: temporaries a kernel allocates and frees inside one op.
    """
    import torch
    from torch.utils._pytree import tree_flatten

    tracker = _peak_tracker_class()(PEAK_GRANULARITY)
    for t in (*model.parameters(), *model.buffers(), *tree_flatten((inputs, targets))[0]):
        if isinstance(t, torch.Tensor):
            tracker.track(t)
    tracker.peak = tracker.live_bytes()
    with tracker:
        yield tracker


# --- eager: no recomputation, checkpoint on every block -------------------------------


class _NoModuleTracking:
    """Stands in for :class:`FlopCounterMode`'s ``ModuleTracker``: every FLOP counts as "Global" only."""

    parents = frozenset({"Global"})

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None


def _total_flop_counter():
    """A :class:`torch.utils.flop_counter.FlopCounterMode` that counts the total only.

    Its ``ModuleTracker`` (per-module counts, not used here) hooks every module's
    forward pass and registers gradient hooks on the tensors; under checkpointing the
    hooks on the tensors a block's recomputation makes keep the recomputed autograd
    graphs alive through the backward pass, which would raise the measured peak
    (transformer-small b2: +56%). ``get_total_flops()`` is the same either way.
    """
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _NoModuleTracking()
    return counter


@attrs.frozen
class _EagerStep:
    saved_bytes: int
    forward_flops: int
    backward_flops: int
    peak_bytes: int


def _eager_step(model, inputs: tuple, loss_fn: Callable, targets, blocks: Sequence | None) -> _EagerStep:
    """Run forward and backward once on real tensors, counting saved bytes and FLOPs and
    measuring the peak live bytes (:func:`_peak_measured`; the gradients accumulate into
    ``.grad``, which the caller has set to ``None``).

    With ``blocks``, each block's forward runs under non-reentrant checkpointing; the
    tensors a checkpoint keeps to rerun its block (its inputs) count as saved, and
    tensors saved inside a checkpointed block (which the checkpoint drops) do not.
    """
    import torch
    from torch.utils._pytree import tree_flatten
    from torch.utils.checkpoint import checkpoint

    excluded = {_storage_key(t) for t in (*model.parameters(), *model.buffers())}
    excluded |= {_storage_key(t) for t in tree_flatten((inputs, targets))[0] if isinstance(t, torch.Tensor)}
    saved: dict[Any, int] = {}
    alive: list = []  # keeps every saved storage alive, so no key is reused during the forward pass

    def keep(t) -> None:
        key = _storage_key(t)
        if key not in excluded and key not in saved:
            saved[key] = t.untyped_storage().nbytes()
            alive.append(t)

    def pack(t):
        keep(t)
        return t

    originals = []
    if blocks:
        for block in blocks:
            originals.append((block, block.__dict__.get("forward")))

            def checkpointed(*args, _forward=block.forward, **kwargs):
                for t in tree_flatten((args, kwargs))[0]:
                    if isinstance(t, torch.Tensor):
                        keep(t)  # the checkpoint holds its inputs until the backward pass
                return checkpoint(_forward, *args, use_reentrant=False, **kwargs)

            block.forward = checkpointed
    try:
        # ``alive`` and the pack hook hold only what autograd holds anyway (the hook
        # returns the tensor itself): the peak is the plain step's.
        with _peak_measured(model, inputs, targets) as tracker:
            with _total_flop_counter() as fw_count:
                with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                    loss = _step_fn(model, loss_fn)(*inputs, targets)
            saved_bytes = sum(saved.values())
            alive.clear()
            with _total_flop_counter() as bw_count:
                loss.backward()
            del loss
    finally:
        for block, forward in originals:
            if forward is None:
                del block.forward
            else:
                block.forward = forward
    return _EagerStep(saved_bytes, fw_count.get_total_flops(), bw_count.get_total_flops(), tracker.peak)


def no_recompute(model, inputs: tuple, loss_fn: Callable, targets) -> AnchorPoint:
    """Eager PyTorch's training step, every activation kept (measured on real tensors).

    ``loss_fn(model(*inputs), targets)`` is the scalar loss. Saved bytes are the
    distinct storages autograd saves in the forward pass (a
    ``torch.autograd.graph.saved_tensors_hooks`` pack hook), parameters, buffers and
    ``inputs``/``targets`` excluded. The peak is measured in the same run.

    The peak equals the simulated peak of the same step captured with
    ``capture_step(..., granularity=64, keep_grads=True)`` (no optimizer) up to what
    eager holds longer than the capture: the backward pass's seed (``ones_like(loss)``,
    held by ``torch.autograd.backward`` to its end: one granule) and, when an autograd
    node computes several gradients, its saved tensors past their last reader (eager
    releases them when the whole node has run, the capture right after the last op
    reading them).
    """
    with _model_state_kept(model):
        step = _eager_step(model, tuple(inputs), loss_fn, targets, None)
    return AnchorPoint(NO_RECOMPUTE, None, step.saved_bytes, step.forward_flops, step.backward_flops, 0,
                       no_recompute_saved_bytes=step.saved_bytes, peak_bytes=step.peak_bytes,
                       no_recompute_peak_bytes=step.peak_bytes)


def checkpoint_every_block(model, inputs: tuple, loss_fn: Callable, targets, blocks: Sequence, *,
                           baseline: AnchorPoint | None = None) -> AnchorPoint:
    """``torch.utils.checkpoint.checkpoint(block, ..., use_reentrant=False)`` on every block.

    Measured on real tensors like :func:`no_recompute` (the blocks' ``forward`` is
    wrapped for the call and restored after). Saved bytes: what autograd saves outside
    the blocks plus each checkpoint's inputs. Recomputed FLOPs: forward + backward
    FLOPs with checkpointing minus without. PyTorch's early stop (on by default) ends a
    block's recomputation once the tensors its backward needs are made again, so the
    ops after a block's last saved tensor are not rerun (a ViT block's second MLP
    matmul, for one): the overhead can be below one forward pass of the blocks.
    ``baseline`` is the step without checkpointing (:func:`no_recompute` of the same
    model and batch), measured here if not given.
    """
    blocks = list(blocks)
    if not blocks:
        raise BenchError("checkpoint_every_block needs at least one block (see blocks_of)")
    if baseline is None:
        baseline = no_recompute(model, inputs, loss_fn, targets)
    elif baseline.method != NO_RECOMPUTE:
        raise BenchError(f"baseline must be a {NO_RECOMPUTE!r} point, got {baseline.method!r}")
    with _model_state_kept(model):
        step = _eager_step(model, tuple(inputs), loss_fn, targets, blocks)
    total = step.forward_flops + step.backward_flops
    recomputed = total - baseline.forward_flops - baseline.backward_flops
    return AnchorPoint(CHECKPOINT_EVERY_BLOCK, None, step.saved_bytes, step.forward_flops, step.backward_flops,
                       recomputed, no_recompute_saved_bytes=baseline.saved_activation_bytes,
                       peak_bytes=step.peak_bytes, no_recompute_peak_bytes=baseline.peak_bytes)


# --- torch.compile's activation memory budget ----------------------------------------


@attrs.frozen
class _Partition:
    forward: Any  # fx.GraphModule
    backward: Any
    num_fwd_outputs: int


def _saved_bytes(forward_graph, num_fwd_outputs: int) -> int:
    """Bytes of the distinct storages a partitioned forward graph saves for the backward pass.

    The saved values are its outputs after the first ``num_fwd_outputs`` (user outputs
    and mutated inputs); those sharing a storage with a graph input (parameters,
    inputs, views of them) are not activations. Sizes come from the nodes' fake
    ``meta['val']``.
    """
    import torch

    placeholders = forward_graph.graph.find_nodes(op="placeholder")
    excluded = {_storage_key(n.meta["val"]) for n in placeholders if isinstance(n.meta.get("val"), torch.Tensor)}
    (output,) = forward_graph.graph.find_nodes(op="output")
    saved: dict[Any, int] = {}
    for node in output.args[0][num_fwd_outputs:]:
        val = node.meta.get("val") if isinstance(node, torch.fx.Node) else None
        if not isinstance(val, torch.Tensor):
            continue  # symbolic sizes, RNG seeds as ints, None
        key = _storage_key(val)
        if key not in excluded:
            saved.setdefault(key, val.untyped_storage().nbytes())
    return sum(saved.values())


def _graph_flops(graph_module) -> int:
    """FLOPs of one run of a recorded FX graph, run on the fake tensors that traced it.

    The placeholders' ``meta['val']`` (fake tensors of the FakeTensorMode AOTAutograd
    traced with) are the inputs and the graph runs under that mode, so only shapes are
    computed.
    """
    import torch
    from torch._guards import detect_fake_mode
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.graph import _BoxedCodeGen
    from torch.utils.flop_counter import FlopCounterMode

    args = []
    for node in graph_module.graph.find_nodes(op="placeholder"):
        if "val" not in node.meta:
            raise BenchError(f"graph input {node.name!r} has no recorded value; cannot count its FLOPs")
        args.append(node.meta["val"])
    fake_mode = detect_fake_mode([a for a in args if isinstance(a, torch.Tensor)]) or FakeTensorMode()
    boxed = isinstance(graph_module.graph._codegen, _BoxedCodeGen)  # compiled by boxed_nop: one list argument
    with fake_mode, FlopCounterMode(display=False) as count:
        graph_module(list(args)) if boxed else graph_module(*args)
    return count.get_total_flops()


def _recording_backend(partitions: list[tuple[_Partition, _Partition]], runs: dict[str, int]):
    """``aot_eager_decomp_partition`` with the partitions recorded.

    The joint graph is partitioned twice: by the min-cut partitioner (what
    torch.compile runs) and, on a copy, by ``default_partition``, which keeps every
    activation the forward pass computes and recomputes nothing. The graphs run as
    that backend runs them (``boxed_nop``: each graph drops its arguments and each
    value after its last use); ``runs`` counts the runs of forward and backward graphs.
    """
    from torch._dynamo.backends.common import aot_autograd
    from torch._dynamo.backends.debugging import boxed_nop
    from torch._functorch.partitioners import default_partition, min_cut_rematerialization_partition
    from torch._inductor.compile_fx import select_decomp_table

    def partition(joint_module, joint_inputs, *, num_fwd_outputs, **kwargs):
        plain = default_partition(copy.deepcopy(joint_module), joint_inputs, num_fwd_outputs=num_fwd_outputs,
                                  **{k: v for k, v in kwargs.items() if k == "static_lifetime_input_indices"})
        chosen = min_cut_rematerialization_partition(joint_module, joint_inputs, compiler="inductor",
                                                     num_fwd_outputs=num_fwd_outputs, **kwargs)
        # Subgraphs of higher-order ops are partitioned with no joint inputs; they are
        # parts of a top-level graph, counted there.
        if list(joint_inputs):
            partitions.append((_Partition(*chosen, num_fwd_outputs), _Partition(*plain, num_fwd_outputs)))
        return chosen

    def counted(kind: str):
        def compiler(graph_module, example_inputs):
            run = boxed_nop(graph_module, example_inputs)

            def counted_run(args):
                runs[kind] = runs.get(kind, 0) + 1
                return run(args)

            counted_run._boxed_call = True
            return counted_run

        return compiler

    return aot_autograd(fw_compiler=counted("forward"), bw_compiler=counted("backward"),
                        decompositions=select_decomp_table, partition_fn=partition)


def torch_compile_budget(model, inputs: tuple, loss_fn: Callable, targets, budget: float, *,
                         fullgraph: bool = True, baseline: AnchorPoint | None = None) -> AnchorPoint:
    """What torch.compile's activation memory budget ``budget`` (0..1) keeps and recomputes.

    Compiles ``loss_fn(model(*inputs), targets)`` with the backend
    ``aot_eager_decomp_partition`` uses (inductor's decompositions, the min-cut
    partitioner, no code generation) under
    ``torch._functorch.config.activation_memory_budget = budget`` and runs its forward
    pass once on ``inputs`` (compilation happens at the first call), then one full step
    for the peak. 1.0 is torch.compile's default choice, 0.0 recomputes everything it may.

    Saved bytes: the partitioned forward graphs' outputs beyond the user outputs
    (fake ``meta['val']``, each storage once, graph inputs excluded). FLOPs: the
    recorded forward and backward graphs run on their fake example values under
    ``FlopCounterMode``. Recomputed FLOPs: backward FLOPs of the min-cut partition
    minus those of ``default_partition`` on the same joint graph.

    Peak: after the compiling call, one full step of the compiled function (forward,
    loss, ``loss.backward()`` into ``.grad``) runs under the storage tracker (see
    :func:`no_recompute`); the compiled forward and backward graphs run op by op
    (``aot_eager``), so the tracker sees every storage they make, and the step is
    checked to have run the compiled graphs without compiling again.
    ``no_recompute_peak_bytes`` is ``baseline``'s peak (:func:`no_recompute` of the
    same model and batch, measured here if not given), eager like the other methods'.

    ``fullgraph``: ask dynamo for one graph; a model with a graph break is then
    compiled in pieces (each piece partitioned on its own, figures summed) and the
    point says ``fullgraph=False``.
    """
    import torch
    import torch._dynamo

    if not 0.0 <= budget <= 1.0:
        raise BenchError(f"activation memory budget must be in [0, 1], got {budget!r}")
    if baseline is None:
        baseline = no_recompute(model, inputs, loss_fn, targets)
    elif baseline.method != NO_RECOMPUTE:
        raise BenchError(f"baseline must be a {NO_RECOMPUTE!r} point, got {baseline.method!r}")
    partitions: list[tuple[_Partition, _Partition]] = []
    runs: dict[str, int] = {}
    step = _step_fn(model, loss_fn)

    def compile_and_run(full: bool) -> int:
        partitions.clear()
        torch._dynamo.reset()
        compiled = torch.compile(step, backend=_recording_backend(partitions, runs), fullgraph=full, dynamic=False)
        with torch._functorch.config.patch(activation_memory_budget=float(budget), unlift_effect_tokens=True):
            loss = compiled(*inputs, targets)  # compiles
            del loss
            graphs = len(partitions)
            runs.clear()
            with _peak_measured(model, inputs, targets) as tracker:
                loss = compiled(*inputs, targets)
                loss.backward()
                del loss
        if len(partitions) != graphs or runs != {"forward": graphs, "backward": graphs}:
            raise BenchError(f"the measured step did not run the {graphs} compiled graph(s) once each "
                             f"(graphs partitioned again: {len(partitions) - graphs}, runs: {runs})")
        for p in model.parameters():
            p.grad = None
        return tracker.peak

    with _model_state_kept(model):
        try:
            try:
                peak = compile_and_run(fullgraph)
                whole = fullgraph
            except torch._dynamo.exc.Unsupported:
                if not fullgraph:
                    raise
                peak = compile_and_run(False)
                whole = False
        finally:
            torch._dynamo.reset()
    if not partitions:
        raise BenchError("torch.compile partitioned no graph: does the step compute a loss that needs gradients?")
    chosen_fw = sum(_graph_flops(c.forward) for c, _ in partitions)
    chosen_bw = sum(_graph_flops(c.backward) for c, _ in partitions)
    plain_bw = sum(_graph_flops(p.backward) for _, p in partitions)
    return AnchorPoint(
        TORCH_COMPILE, float(budget),
        saved_activation_bytes=sum(_saved_bytes(c.forward, c.num_fwd_outputs) for c, _ in partitions),
        forward_flops=chosen_fw, backward_flops=chosen_bw, recomputed_flops=chosen_bw - plain_bw,
        no_recompute_saved_bytes=sum(_saved_bytes(p.forward, p.num_fwd_outputs) for _, p in partitions),
        peak_bytes=peak, no_recompute_peak_bytes=baseline.peak_bytes,
        graphs=len(partitions), fullgraph=whole,
    )
