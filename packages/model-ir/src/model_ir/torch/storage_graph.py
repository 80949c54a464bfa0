"""From a traced aten-level FX graph to the storage-level IR (the model-ir README, "IR").

Buffer identity comes from the traced (fake) tensors' storages, never from operator
names: every distinct storage is one :class:`~model_ir.graph.Buffer`, and the first
node whose output lives in a storage not seen before allocates it. The operator schema
is used only for what a node *writes* (``Tensor(a!)`` arguments). This handles views
with and without alias annotations alike (``view``, ``_unsafe_view``, list-returning
``split``/``unbind``/``chunk``), and in-place ops, which allocate nothing.

Nodes that allocate nothing, write nothing and read no tensor data (views, aliases,
``getitem``, shape queries, Python arithmetic on scalars) are *folded*: they are not
IR ops; the executor evaluates them when a consumer needs them. Every other node is one
IR op whose id is the FX node name.
"""

from __future__ import annotations

import bisect
import operator
from collections.abc import Mapping

import attrs
import torch
from torch import fx
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils import _pytree as pytree

from model_ir.graph import Buffer, Graph, Op
from model_ir.recompute import RANDOM, REPLAYS_DRAWS_OF, REPLAYS_RNG, RERUN_WITHOUT_WRITES
from model_ir.simulator import EAGER_IN_PLACE
from model_ir.workspaces import CPU_TEMPORARY
from model_ir.torch.checkpoint_rng import UNPAIRED_REPLAY
from model_ir.torch.cuda_kernels import HOST_RESULTS
from model_ir.torch.errors import CaptureError
from model_ir.torch.node_args import UNANNOTATED_WRITES, arg_values, written_nodes
from model_ir.torch.cpu_temporaries import kernel_temporaries, measured_calls
from model_ir.torch.kernel_probes import MEASURED_THREADS, measure_calls
from model_ir.torch.rng_replay import replayable
from model_ir.torch.tracing import TracedStep

#: Operators that read only tensor metadata (shapes, strides), never data.
_METADATA_OPS = {
    "aten::sym_size", "aten::sym_stride", "aten::sym_numel", "aten::sym_storage_offset",
    "aten::size", "aten::stride", "aten::numel", "aten::dim",
}

#: Kind of a produced buffer by the phase of its producer.
_PHASE_KIND = {"forward": "activation", "backward": "gradient", "optimizer": "optimizer_temp"}


@attrs.frozen(eq=False)
class StorageMap:
    """The IR graph of a traced step and how it maps back to the FX graph.

    ``op_nodes[op_id]`` lists the FX node the op runs first, then the folded nodes
    first needed by it. ``node_buffers[node]`` lists the buffers a node's value refers
    to (its storages). ``folded`` are the node names that are not IR ops.
    """

    graph: Graph
    op_nodes: Mapping[str, tuple[str, ...]]
    node_buffers: Mapping[str, tuple[str, ...]]
    folded: frozenset[str]
    output_buffers: tuple[str, ...]
    #: for nodes whose value is a tuple/list: the buffer of each element (None: not a tensor)
    element_buffers: Mapping[str, tuple[str | None, ...]] = attrs.field(factory=dict)


def _tensors(value) -> list[torch.Tensor]:
    return [t for t in pytree.tree_leaves(value) if isinstance(t, torch.Tensor)]


def _round(nbytes: int, granularity: int) -> int:
    return -(-nbytes // granularity) * granularity


def _writes_only_statistics(node: fx.Node) -> bool:
    """A batch norm in training mode: it writes its running statistics, which its
    outputs do not depend on (see :func:`without_statistics`)."""
    schema = getattr(node.target, "_schema", None)
    extra = UNANNOTATED_WRITES.get(getattr(schema, "name", None))
    if extra is None:
        return False
    values = {i: v for i, _, v in arg_values(node, schema)}
    return bool(values.get(extra[1]))


def without_statistics(node: fx.Node) -> tuple[tuple, dict]:
    """``node``'s arguments with the running statistics left out (None): the rerun of a
    training-mode batch norm gives the same outputs and leaves the statistics alone."""
    positions, _ = UNANNOTATED_WRITES[node.target._schema.name]
    args = list(node.args)
    kwargs = dict(node.kwargs)
    names = [a.name for a in node.target._schema.arguments]
    for p in positions:
        if p < len(args):
            args[p] = None
        else:
            kwargs[names[p]] = None
    return tuple(args), kwargs


def _returns_tensors(target) -> bool:
    schema = getattr(target, "_schema", None)
    return schema is not None and any("Tensor" in str(r.type) for r in schema.returns)


def _is_rng(target) -> bool:
    return torch.Tag.nondeterministic_seeded in getattr(target, "tags", ())


def _draws_random(node: fx.Node) -> bool:
    """Whether running ``node`` again would give other values: a seeded op, unless its
    only randomness is a dropout probability of 0 (attention without dropout)."""
    if not _is_rng(node.target):
        return False
    schema = node.target._schema
    values = {arg.name: value for _, arg, value in arg_values(node, schema)}
    has_p = any(arg.name == "dropout_p" for arg in schema.arguments)
    return not (has_p and values.get("dropout_p", 0.0) == 0.0)


#: Arguments by which a backward kernel replays its forward's random numbers (fused attention).
_REPLAY_ARGUMENTS = frozenset({"philox_seed", "philox_offset", "rng_state"})


def _check_replayed_draws(node: fx.Node) -> None:
    """Refuse a node that eager draws again from a restored generator state (a
    checkpointed region's recomputation) unlike the draw it repeats: capture pairs the
    others (:mod:`model_ir.torch.checkpoint_rng`); every other draw runs in eager's order."""
    first = node.meta.get(UNPAIRED_REPLAY)
    if first is not None and _draws_random(node) and not any(
            a.name in _REPLAY_ARGUMENTS for a in node.target._schema.arguments):
        raise CaptureError(
            f"{node.target} (node {node.name}) draws random numbers from a restored generator state (eager "
            f"repeats node {first}'s draws there: torch.utils.checkpoint's recomputation, or a set_rng_state), "
            "but unlike that draw (another operator, shape or probability), which no executor reproduces. Make "
            "the recomputation draw as the forward does, or disable that checkpointing and plan with "
            "optimize(memory_budget=...), whose recomputation replays draws"
        )


#: Results whose meta kernel says 0 bytes in training while the real kernel allocates
#: them, sized by its library when it runs: oneDNN's LSTM workspace (CPU; capture asks
#: oneDNN, model_ir.torch.eager_strides), cuDNN's RNN reserve (CUDA, "TODO: Query
#: cudnnGetRNNTrainingReserveSize" in torch's meta kernel).
UNSIZED_RESULTS = {"aten::mkldnn_rnn_layer": 3, "aten::_cudnn_rnn": 3}


def unsized_results(module: fx.GraphModule) -> list[str]:
    """The operators of :data:`UNSIZED_RESULTS` that ``module`` calls in training, sorted."""
    names = set()
    for node in module.graph.nodes:
        name = getattr(getattr(node.target, "_schema", None), "name", None)
        if node.op != "call_function" or name not in UNSIZED_RESULTS:
            continue
        train = {arg.name: value for _, arg, value in arg_values(node, node.target._schema)}.get("train")
        val = node.meta.get("val")
        result = val[UNSIZED_RESULTS[name]] if isinstance(val, (tuple, list)) else None
        if train and isinstance(result, torch.Tensor) and result.numel() == 0:
            names.add(name)
    return sorted(names)


def _random_meta(node: fx.Node, writes: bool) -> dict:
    """Op meta of a random op: it draws (``RANDOM``); a functional one the executors can
    replay when recomputed also gets ``REPLAYS_RNG`` (:mod:`model_ir.torch.rng_replay`)."""
    if not _draws_random(node):
        return {}
    if REPLAYS_DRAWS_OF in node.meta:  # checkpointed dropout (model_ir.torch.checkpoint_rng): runs once
        return {RANDOM: True, REPLAYS_DRAWS_OF: node.meta[REPLAYS_DRAWS_OF]}
    values = {arg.name: value for _, arg, value in arg_values(node, node.target._schema)}
    return {RANDOM: True, **({} if writes or not replayable(node, values.get("generator")) else {REPLAYS_RNG: True})}


#: Reductions whose CUDA kernel (TensorIterator's ``gpu_reduce_kernel``) may take a
#: staging buffer from the caching allocator: their input layout goes into the op's
#: ``meta["reduction"]`` for :func:`model_ir.workspaces.reduction_workspace_parts`.
_REDUCTIONS = {"aten::sum", "aten::mean"}


def _reduction_meta(node: fx.Node) -> dict:
    """``{"reduction": {...}}`` for a sum or mean over a floating tensor: the input's
    shape, strides (elements) and dtype, and the reduced dims (None: all)."""
    schema = getattr(node.target, "_schema", None)
    if getattr(schema, "name", None) not in _REDUCTIONS:
        return {}
    values = {arg.name: value for _, arg, value in arg_values(node, schema)}
    x = values.get("self")
    x = x.meta.get("val") if isinstance(x, fx.Node) else None
    if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point:
        return {}
    dims = values.get("dim")
    return {"reduction": {"shape": [int(n) for n in x.shape], "strides": [int(n) for n in x.stride()],
                          "dims": None if dims is None else [int(d) for d in dims],
                          "dtype": str(x.dtype).removeprefix("torch.")}}


def check_granularity(granularity) -> None:
    """Raise :class:`CaptureError` unless ``granularity`` is an integer number of bytes >= 1."""
    if isinstance(granularity, bool) or not isinstance(granularity, int) or granularity < 1:
        raise CaptureError(f"granularity must be an integer number of bytes >= 1, got {granularity!r}")


def _host_tensor(traced: TracedStep, t: torch.Tensor) -> bool:
    """Whether ``t``, of a step traced on a CUDA device, lies in host memory (a CPU
    scalar among CUDA tensors). An emulated trace's tensors are all CPU stand-ins: its
    host tensors are the inputs it marks (``InputSlot.host``) and :data:`HOST_RESULTS`."""
    return traced.device == "cuda" and not traced.emulated and t.device.type == "cpu"


def build_storage_map(traced: TracedStep, *, granularity: int = 512, name: str = "step",
                      keep_grads: bool = False, meta: Mapping | None = None) -> StorageMap:
    """The storage-level :class:`Graph` of ``traced``; buffer sizes are storage bytes
    rounded up to ``granularity``.

    The buffers backward stored in the parameters' ``.grad`` get ``meta["grad_of"]``
    (the parameter name); with ``keep_grads`` they are outputs, alive to the end of
    the step as eager's ``.grad`` is, instead of freed after their last reader.
    """
    check_granularity(granularity)
    gm = traced.module
    if traced.measures_kernels:
        measure_calls(measured_calls(gm.graph.nodes))  # capture measured most already, on the model's weights
    slot_of = {s.placeholder: s for s in traced.slots}
    storage_buffer: dict[StorageWeakRef, str] = {}
    nodes_by_name = {n.name: n for n in gm.graph.nodes}
    buffers: dict[str, dict] = {}
    node_buffers: dict[str, tuple[str, ...]] = {}
    ops: list[Op] = []
    op_nodes: dict[str, list[str]] = {}
    folded: set[str] = set()
    element_buffers: dict[str, tuple[str | None, ...]] = {}
    scalar_src: dict[str, frozenset[str]] = {}  # node -> IR ops whose scalar results it uses
    last_rng: str | None = None
    phase = "forward"

    def new_buffer(bid: str, t: torch.Tensor, *, host: bool = False, **fields) -> str:
        nbytes = 0 if host else t.untyped_storage().nbytes()
        if not isinstance(nbytes, int):
            node = fields["meta"]["node"]
            raise CaptureError(
                f"operator {nodes_by_name[node].target} (node {node}) produces a tensor whose size depends on "
                "tensor values (data-dependent shape); capture needs shapes known from the inputs' shapes"
            )
        ref = StorageWeakRef(t.untyped_storage())
        storage_buffer[ref] = bid
        buffers[bid] = dict(
            id=bid, size=_round(nbytes, granularity), dtype=str(t.dtype).removeprefix("torch."),
            shape=tuple(int(d) for d in t.shape), **fields,
        )
        return bid

    def buffer_of(t: torch.Tensor) -> str | None:
        return storage_buffer.get(StorageWeakRef(t.untyped_storage()))

    for node in gm.graph.nodes:
        if node.name == traced.backward_start:
            phase = "backward"
        if node.name == traced.optimizer_start:
            phase = "optimizer"
        if node.op == "call_function":
            _check_replayed_draws(node)
        if node.op == "placeholder":
            t = node.meta["val"]
            slot = slot_of[node.name]
            host = slot.host or _host_tensor(traced, t)
            bid = buffer_of(t) or new_buffer(
                f"{slot.kind}:{slot.name}", t, host=host, kind=slot.kind, persistent=True,
                meta={"node": node.name, **({"host": True} if host else {})},
            )
            node_buffers[node.name] = (bid,)
            continue
        if node.op == "get_attr":
            t = getattr(gm, node.target)
            if isinstance(t, torch.Tensor):
                host = _host_tensor(traced, t)
                bid = buffer_of(t) or new_buffer(
                    f"constant:{node.target}", t, host=host, kind="constant", persistent=True,
                    meta={"node": node.name, **({"host": True} if host else {})},
                )
                node_buffers[node.name] = (bid,)
            folded.add(node.name)
            continue
        if node.op == "output":
            continue
        val = node.meta.get("val")
        if val is None and _returns_tensors(node.target):
            raise CaptureError(f"operator {node.target} (node {node.name}) returned a tensor the tracer did not record")
        outs = _tensors(val)
        fresh, seen = [], set()
        for k, t in enumerate(outs):  # new storages, each once (an op may return views of its own output)
            ref = StorageWeakRef(t.untyped_storage())
            if buffer_of(t) is None and ref not in seen:
                seen.add(ref)
                fresh.append((k, t))
        written = written_nodes(node)
        target = node.target
        schema_name = getattr(getattr(target, "_schema", None), "name", None)
        is_aten_op = isinstance(target, torch._ops.OpOverload)
        fold = (
            target is operator.getitem
            or not is_aten_op
            or schema_name in _METADATA_OPS
            or (not fresh and not written and not _is_rng(target) and val is not None and len(outs) == len(pytree.tree_leaves(val)))
        )
        deps = frozenset().union(*(scalar_src.get(n.name, frozenset()) for n in node.all_input_nodes))
        if fold:
            folded.add(node.name)
            scalar_src[node.name] = deps
            node_buffers[node.name] = tuple(dict.fromkeys(b for t in outs if (b := buffer_of(t))))
            if isinstance(val, (tuple, list)):
                element_buffers[node.name] = tuple(buffer_of(v) if isinstance(v, torch.Tensor) else None for v in val)
            continue
        # An IR op.
        written_ids = list(dict.fromkeys(
            b for n in written for t in _tensors(n.meta.get("val")) if (b := buffer_of(t)) is not None
        ))
        read_ids = [
            b for n in node.all_input_nodes for b in node_buffers.get(n.name, ())
            if b not in written_ids
        ]
        skippable = node.name in traced.skipped_if_inf
        if skippable:
            # The executors read found_inf before the first skippable op: a read of each,
            # so every one runs after the last unscale wrote it and it stays alive till then.
            read_ids += node_buffers[traced.found_inf]
        out_ids = []
        on_host = {StorageWeakRef(val[i].untyped_storage()) for i in HOST_RESULTS.get(schema_name, ())
                   if traced.device == "cuda" and isinstance(val[i], torch.Tensor)}
        for k, t in fresh:
            bid = node.name if len(fresh) == 1 else f"{node.name}.{k}"
            # 0 device bytes, kept as a buffer for the ops that read it
            host = StorageWeakRef(t.untyped_storage()) in on_host or _host_tensor(traced, t)
            out_ids.append(new_buffer(bid, t, host=host, kind=_PHASE_KIND[phase], persistent=False,
                                      meta={"node": node.name, **({"host": True} if host else {})}))
        after = set(deps)
        if _is_rng(target):
            if last_rng is not None:
                after.add(last_rng)
            last_rng = node.name
        if val is None or any(not isinstance(v, torch.Tensor) for v in pytree.tree_leaves(val)):
            # A scalar result (e.g. ``.item()``) feeds later ops through folded arithmetic.
            scalar_src[node.name] = frozenset({node.name})
        node_buffers[node.name] = tuple(dict.fromkeys(b for t in outs if (b := buffer_of(t))))
        if isinstance(val, (tuple, list)):
            element_buffers[node.name] = tuple(buffer_of(v) if isinstance(v, torch.Tensor) else None for v in val)
        ops.append(Op(
            id=node.name,
            inputs=tuple(dict.fromkeys(read_ids)),
            outputs=tuple(out_ids),
            mutates=tuple(written_ids),
            after=tuple(sorted(after)),
            target=str(target),
            meta={"node": node.name, "phase": phase, **({"skipped_if_inf": True} if skippable else {}),
                  **({RERUN_WITHOUT_WRITES: True} if _writes_only_statistics(node) else {}),
                  **_random_meta(node, bool(written_ids)), **_reduction_meta(node),
                  **({CPU_TEMPORARY: temporary} if traced.device == "cpu"
                     and (temporary := kernel_temporaries(node)) is not None else {}),
                  **({EAGER_IN_PLACE: node_buffers[node.args[0].name][0]} if node.meta.get(EAGER_IN_PLACE) else {})},
        ))
        op_nodes[node.name] = [node.name]

    output_node = next(n for n in gm.graph.nodes if n.op == "output")
    output_buffers = tuple(dict.fromkeys(
        b for n in output_node.all_input_nodes for b in node_buffers.get(n.name, ())
    ))
    for b in output_buffers:
        if not buffers[b]["persistent"]:
            buffers[b]["output"] = True
            buffers[b]["kind"] = "output"

    for pname, g in traced.grads.items():
        bid = buffer_of(g)
        if bid is not None and not buffers[bid]["persistent"]:
            buffers[bid]["meta"] = {**buffers[bid]["meta"], "grad_of": pname}
            if keep_grads and not buffers[bid].get("output"):
                buffers[bid].update(output=True, kind="gradient")

    for bid, op_id in _python_releases(gm, traced.released_after, storage_buffer, ops).items():
        if not buffers[bid]["persistent"] and not buffers[bid].get("output"):
            buffers[bid]["meta"] = {**buffers[bid]["meta"], "released_after": op_id}
    # Eager's training loop holds each gradient in ``.grad`` until ``zero_grad()``, after the
    # step: its optimizer's temporaries come on top of every gradient (Adam's: an MLP's
    # eager step measured 1.5x the peak of gradients freed after their last reader).
    for b in buffers.values():
        if ops and "grad_of" in b["meta"] and not b.get("output") and "released_after" not in b["meta"]:
            b["meta"] = {**b["meta"], "released_after": ops[-1].id}

    _attribute_folded(gm, folded, op_nodes)
    ops = [attrs.evolve(op, meta={**op.meta, "folded": list(op_nodes[op.id][1:])}) if len(op_nodes[op.id]) > 1 else op
           for op in ops]
    graph = Graph(
        buffers=tuple(Buffer(**b) for b in buffers.values()),
        ops=tuple(ops),
        name=name,
        meta={"frontend": "torch", "granularity": granularity, "train": traced.train, "keep_grads": keep_grads,
              **({MEASURED_THREADS: torch.get_num_threads()} if traced.measures_kernels else {}), **(meta or {})},
    )
    return StorageMap(
        graph=graph,
        op_nodes={k: tuple(v) for k, v in op_nodes.items()},
        node_buffers=node_buffers,
        folded=frozenset(folded),
        output_buffers=output_buffers,
        element_buffers=element_buffers,
    )


def _python_releases(gm: fx.GraphModule, released: Mapping[StorageWeakRef, str],
                     storage_buffer: Mapping[StorageWeakRef, str], ops: list[Op]) -> dict[str, str]:
    """Buffer id -> the IR op after which eager PyTorch frees it (the last op traced
    before Python dropped its last tensor), for the buffers whose last use comes earlier
    (see :mod:`model_ir.torch.python_releases`)."""
    if not released:
        return {}
    position = {n.name: i for i, n in enumerate(gm.graph.nodes)}
    op_position = [position[op.id] for op in ops]  # ascending: ops are made in node order
    last_use: dict[str, int] = {}
    for k, op in enumerate(ops):
        for b in (*op.uses, *op.outputs):
            last_use[b] = k
    found = {}
    for storage, name in released.items():
        bid = storage_buffer.get(storage)
        if bid is None or name not in position:
            continue
        k = bisect.bisect_right(op_position, position[name]) - 1
        if k > last_use.get(bid, k):
            found[bid] = ops[k].id
    return found


def _attribute_folded(gm: fx.GraphModule, folded: set[str], op_nodes: dict[str, list[str]]) -> None:
    """Attribute each folded node to the first IR op (program order) that needs it."""
    nodes = {n.name: n for n in gm.graph.nodes}
    done: set[str] = set()
    position = {n: i for i, n in enumerate(nodes)}
    for op_id, names in op_nodes.items():
        stack = [n for n in nodes[op_id].all_input_nodes if n.name in folded]
        found: list[str] = []
        while stack:
            n = stack.pop()
            if n.name in done or n.op != "call_function":
                continue
            done.add(n.name)
            found.append(n.name)
            stack += [m for m in n.all_input_nodes if m.name in folded]
        names += sorted(found, key=position.__getitem__)

