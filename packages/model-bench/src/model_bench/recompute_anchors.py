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
storage once) and FLOPs from :class:`torch.utils.flop_counter.FlopCounterMode`, which
counts matrix multiplications, convolutions and attention (2 FLOPs per multiply-add)
and nothing for pointwise ops and reductions. The project's recomputation planner
will be compared with these records.

The functions leave the model as they found it: parameters' ``.grad``, buffers
(batch-norm statistics), the RNG state and the functorch config are restored, and
dynamo is reset after a compile.
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


@attrs.frozen
class AnchorPoint:
    """One policy's cost on one training step.

    ``saved_activation_bytes``: bytes of the distinct storages kept from the forward
    pass for the backward pass (parameters and the step's inputs excluded).
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

    def to_dict(self) -> dict[str, Any]:
        """The fields and the two derived ratios, JSON-ready."""
        return {**attrs.asdict(self), "recompute_overhead": self.recompute_overhead,
                "saved_fraction": self.saved_fraction}


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
    """Restore the parameters' gradients, the buffers and the RNG state on exit."""
    import torch

    grads = [(p, p.grad) for p in model.parameters()]
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    with torch.random.fork_rng(devices=[]):
        try:
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


# --- eager: no recomputation, checkpoint on every block -------------------------------


@attrs.frozen
class _EagerStep:
    saved_bytes: int
    forward_flops: int
    backward_flops: int


def _eager_step(model, inputs: tuple, loss_fn: Callable, targets, blocks: Sequence | None) -> _EagerStep:
    """Run forward and backward once on real tensors, counting saved bytes and FLOPs.

    With ``blocks``, each block's forward runs under non-reentrant checkpointing; the
    tensors a checkpoint keeps to rerun its block (its inputs) count as saved, and
    tensors saved inside a checkpointed block (which the checkpoint drops) do not.
    """
    import torch
    from torch.utils._pytree import tree_flatten
    from torch.utils.checkpoint import checkpoint
    from torch.utils.flop_counter import FlopCounterMode

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
        with FlopCounterMode(display=False) as fw_count:
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                loss = _step_fn(model, loss_fn)(*inputs, targets)
        saved_bytes = sum(saved.values())
        alive.clear()
        with FlopCounterMode(display=False) as bw_count:
            loss.backward()
        del loss
    finally:
        for block, forward in originals:
            if forward is None:
                del block.forward
            else:
                block.forward = forward
    return _EagerStep(saved_bytes, fw_count.get_total_flops(), bw_count.get_total_flops())


def no_recompute(model, inputs: tuple, loss_fn: Callable, targets) -> AnchorPoint:
    """Eager PyTorch's training step, every activation kept (measured on real tensors).

    ``loss_fn(model(*inputs), targets)`` is the scalar loss. Saved bytes are the
    distinct storages autograd saves in the forward pass (a
    ``torch.autograd.graph.saved_tensors_hooks`` pack hook), parameters, buffers and
    ``inputs``/``targets`` excluded.
    """
    with _model_state_kept(model):
        step = _eager_step(model, tuple(inputs), loss_fn, targets, None)
    return AnchorPoint(NO_RECOMPUTE, None, step.saved_bytes, step.forward_flops, step.backward_flops, 0,
                       no_recompute_saved_bytes=step.saved_bytes)


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
                       recomputed, no_recompute_saved_bytes=baseline.saved_activation_bytes)


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
    from torch.utils.flop_counter import FlopCounterMode

    args = []
    for node in graph_module.graph.find_nodes(op="placeholder"):
        if "val" not in node.meta:
            raise BenchError(f"graph input {node.name!r} has no recorded value; cannot count its FLOPs")
        args.append(node.meta["val"])
    fake_mode = detect_fake_mode([a for a in args if isinstance(a, torch.Tensor)]) or FakeTensorMode()
    with fake_mode, FlopCounterMode(display=False) as count:
        graph_module(*args)
    return count.get_total_flops()


def _recording_backend(partitions: list[tuple[_Partition, _Partition]]):
    """``aot_eager_decomp_partition`` with the partitions recorded.

    The joint graph is partitioned twice: by the min-cut partitioner (what
    torch.compile runs) and, on a copy, by ``default_partition``, which keeps every
    activation the forward pass computes and recomputes nothing.
    """
    from torch._dynamo.backends.common import aot_autograd
    from torch._functorch.aot_autograd import make_boxed_func
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

    def nop(graph_module, example_inputs):
        return make_boxed_func(graph_module.forward)

    return aot_autograd(fw_compiler=nop, bw_compiler=nop, decompositions=select_decomp_table,
                        partition_fn=partition)


def torch_compile_budget(model, inputs: tuple, loss_fn: Callable, targets, budget: float, *,
                         fullgraph: bool = True) -> AnchorPoint:
    """What torch.compile's activation memory budget ``budget`` (0..1) keeps and recomputes.

    Compiles ``loss_fn(model(*inputs), targets)`` with the backend
    ``aot_eager_decomp_partition`` uses (inductor's decompositions, the min-cut
    partitioner, no code generation) under
    ``torch._functorch.config.activation_memory_budget = budget`` and runs its forward
    pass once on ``inputs`` (compilation happens at the first call). 1.0 is
    torch.compile's default choice, 0.0 recomputes everything it may.

    Saved bytes: the partitioned forward graphs' outputs beyond the user outputs
    (fake ``meta['val']``, each storage once, graph inputs excluded). FLOPs: the
    recorded forward and backward graphs run on their fake example values under
    ``FlopCounterMode``. Recomputed FLOPs: backward FLOPs of the min-cut partition
    minus those of ``default_partition`` on the same joint graph.

    ``fullgraph``: ask dynamo for one graph; a model with a graph break is then
    compiled in pieces (each piece partitioned on its own, figures summed) and the
    point says ``fullgraph=False``.
    """
    import torch
    import torch._dynamo

    if not 0.0 <= budget <= 1.0:
        raise BenchError(f"activation memory budget must be in [0, 1], got {budget!r}")
    partitions: list[tuple[_Partition, _Partition]] = []
    step = _step_fn(model, loss_fn)

    def compile_and_run(full: bool) -> None:
        partitions.clear()
        torch._dynamo.reset()
        compiled = torch.compile(step, backend=_recording_backend(partitions), fullgraph=full, dynamic=False)
        with torch._functorch.config.patch(activation_memory_budget=float(budget), unlift_effect_tokens=True):
            loss = compiled(*inputs, targets)
        del loss  # the partitions are recorded at compile time; the backward pass is not needed

    with _model_state_kept(model):
        try:
            try:
                compile_and_run(fullgraph)
                whole = fullgraph
            except torch._dynamo.exc.Unsupported:
                if not fullgraph:
                    raise
                compile_and_run(False)
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
        graphs=len(partitions), fullgraph=whole,
    )
