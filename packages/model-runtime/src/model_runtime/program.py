"""Generating the planned program: a new FX graph in the planned op order, compiled to
Python code.

Interpreting the captured graph node by node costs Python time on every operator of
every step; instead the planned step is built once as a new ``torch.fx.Graph`` whose
nodes are in the planned order and compiled by FX to straight-line Python. FX's code
generator already drops each value right after its last use (``x = None``), so a
buffer is freed exactly when the simulator frees it (the model-ir README, "Memory model"),
provided that:

- folded nodes (views, ``getitem``, scalar arithmetic) are emitted only when the
  first op that needs them in the planned order runs, never earlier;
- the elements of a multi-output op are unpacked right after it, so that an unused
  element dies at once and a used one lives until its own last use.

With ``slots`` (the arena executor), every fresh tensor an op returns is given a
preallocated tensor (a view of the arena at the buffer's planned offset): the op is
called through its ``out=`` overload or a slot write writing into it
(``model_runtime.lowering`` decides how). Where neither is possible, the op runs
normally (a *fallback*, recorded with its reason): its results live in PyTorch's
allocator until their last use when the plan left those buffers out of the arena, or
are copied into their slots at once when it placed them. Ops that allocate nothing
(views, in-place ops) run unchanged, on the arena views.
"""

from __future__ import annotations

import functools
import operator
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
import torch
from torch import fx

from model_ir.graph import Graph
from model_ir.plan import Schedule, order_indices
from model_ir.recompute import RERUN_WITHOUT_WRITES, RngReplays, instance_id
from model_ir.torch.gradient_accumulation import add_as_in_place
from model_ir.torch.rng_replay import draw_device, restore_rng, save_rng, swap_rng
from model_ir.torch.storage_graph import without_statistics
from model_ir.simulator import EAGER_IN_PLACE, validate_order
from model_runtime.errors import RuntimeLayerError
from model_runtime.lowering import GRAD_MODE_RESULTS, element_buffers, lower, result_elements, storage_bytes
from model_runtime.out_variants import named_arguments, out_call_arguments
from model_runtime.slot_writes import REWRITES, call_foreach_into, rewrite_scratch


@attrs.frozen
class Fallback:
    """An op that could not write into an arena slot: it ran as in eager PyTorch and
    its fresh results, ``bytes`` in all (each storage rounded up to the graph's
    granularity like the IR buffers), live outside the arena until their last use (the
    plan did not place them) or, when ``copied``, are copied into their arena slots
    right after the op and freed (a temporary, counted in the program's ``scratch``)."""

    op: str
    target: str
    reason: str
    bytes: int
    copied: bool = False


@attrs.frozen(eq=False)
class CompiledProgram:
    """A planned step compiled to Python: ``run(tensors)`` executes it.

    ``module`` is the generated ``fx.GraphModule`` (its source: ``module.code``).
    ``arena`` is the one tensor holding every transient buffer (None for ``reorder``).
    ``fallbacks`` lists the ops that allocated outside the arena; ``out_ops`` counts
    the ops that wrote into the arena through an out overload. ``scratch``: op id ->
    bytes of the temporaries its slot write allocates and frees within the op (a
    softmax's row maxima: small, like a library's workspace; rounded like buffers).
    """

    module: fx.GraphModule
    executor: str
    arena: torch.Tensor | None = None
    fallbacks: tuple[Fallback, ...] = ()
    out_ops: int = 0
    scratch: Mapping[str, int] = attrs.field(factory=dict)

    def run(self, tensors: Sequence[torch.Tensor]) -> list:
        """Run one step on the bound input tensors; returns the step outputs."""
        with torch.no_grad():
            return self.module(*tensors)

    @property
    def code(self) -> str:
        """The generated Python source."""
        return self.module.code


class _Builder:
    def __init__(self, step, order: Sequence[int], slots: Mapping[str, torch.Tensor] | None,
                 device_type: str, on_op: Callable | None, warm: tuple[int, str] | None = None,
                 holds: Mapping[str, Sequence[str]] | None = None, eager_sums: bool = False):
        self.step = step
        self.graph_ir: Graph = step.graph
        self.order = order
        self.slots = slots
        self.device_type = device_type
        self.on_op = on_op
        self.src = step.module
        self.nodes = {n.name: n for n in self.src.graph.nodes}
        self.g = fx.Graph()
        self.env: dict[str, fx.Node] = {}
        self.root: dict[str, Any] = {}
        self.fallbacks: list[Fallback] = []
        self.out_ops = 0
        self.scratch: dict[str, int] = {}
        self.output_buffers = {b.id for b in self.graph_ir.buffers if b.output}
        self.granularity = int(self.graph_ir.meta.get("granularity", 1))
        # GradScaler: the optimizer update's ops run only when every gradient was finite.
        self.skippable = getattr(step, "skipped_if_inf", frozenset())
        self.finite: fx.Node | None = None
        self.skip_roots: set[fx.Node] = set()
        # Recomputation: which instance of each buffer the latest run of its producer made.
        self.runs: dict[str, int] = {}
        self.instance: dict[str, str] = {}
        # Random ops that replay draws (model_ir.torch.rng_replay, model_ir.torch.checkpoint_rng).
        self.replays = RngReplays(self.graph_ir, self.order)
        self.rng_states: dict[str, fx.Node] = {}
        self.warm = warm  # build_program's warm_block
        self.holds = holds or {}  # build_program's holds
        self.eager_sums = eager_sums  # build_program's eager_sums
        self.made: dict[str, fx.Node] = {}  # buffer -> the generated value of the result on it

    # -- values ---------------------------------------------------------------------

    def lookup(self, node: fx.Node) -> fx.Node:
        return self.need(node)

    def need(self, node: fx.Node) -> fx.Node:
        """The new node for ``node``, emitting it (and its folded inputs) on first use."""
        got = self.env.get(node.name)
        if got is not None:
            return got
        if node.op == "get_attr":
            self.root[node.target] = getattr(self.src, node.target)
            new = self.g.node_copy(node, self.lookup)
        elif node.name in self.step.folded:
            for inp in node.all_input_nodes:
                self.need(inp)
            new = self.g.node_copy(node, self.lookup)
            if self.slots is not None and node.target in _ABSOLUTE_OFFSET:
                self.rebase(node, new)
        else:
            raise RuntimeLayerError(
                f"internal error: node {node.name!r} is needed before the op that computes it ran"
            )
        self.env[node.name] = new
        return new

    def rebase(self, node: fx.Node, new: fx.Node) -> None:
        """An ``as_strided`` with an explicit storage offset counts it from the start of its
        input's storage, which in the arena is the arena's, not the buffer's: it is
        shifted by where the input's buffer begins (found at run time from the input's
        offset there against its offset in the traced step)."""
        named = named_arguments(node.target, new.args, new.kwargs)  # the new graph's nodes
        if named.get("storage_offset") is None:
            return  # None: the input's own offset, already right
        traced = named_arguments(node.target, node.args, node.kwargs)["self"].meta["val"].storage_offset()
        new.target = _as_strided_rebased
        new.args = (node.target, named["self"], named["size"], named["stride"], named["storage_offset"], traced)
        new.kwargs = {}

    def attr(self, name: str, value) -> fx.Node:
        self.root[name] = value
        return self.g.get_attr(name)

    # -- ops ------------------------------------------------------------------------

    def emit_op(self, t: int, op_index: int) -> None:
        op = self.graph_ir.ops[op_index]
        node = self.nodes[op.id]
        if self.runs.get(op.id):
            self.forget_folded(node)  # a recomputation: later uses read the new results
        self.runs[op.id] = self.runs.get(op.id, 0) + 1
        for b in op.outputs:
            self.instance[b] = instance_id(b, self.runs[op.id])
        inputs = [self.need(n) for n in node.all_input_nodes]
        fresh = [b for b in op.outputs if b not in self.output_buffers]
        skippable = op.id in self.skippable
        if skippable and self.finite is None:
            found_inf = self.need(self.nodes[self.step.found_inf])
            self.finite = self.g.call_function(_all_finite, (found_inf,))
        mark = next(iter(reversed(self.g.nodes))) if skippable else None  # torch 2.11: not an iterator
        source = node
        if self.runs[op.id] > 1 and op.meta.get(RERUN_WITHOUT_WRITES):
            source = _rerun_node(node)  # batch norm again: the running statistics are not updated twice
        if op.id in self.replays.saved and self.runs[op.id] == 1:
            self.rng_states[op.id] = self.g.call_function(save_rng, (draw_device(node),))
        replay = self.replays.source(op, self.runs[op.id])
        if replay:
            now = self.g.call_function(swap_rng, (self.rng_states[replay],))
        if self.slots is None or not fresh:
            value = self.copy_call(source)
            if op.meta.get(EAGER_IN_PLACE):
                # Autograd's sum, into the first gradient, or out of place laid out as it.
                value.target = torch.ops.aten.add_.Tensor if self.eager_sums else add_as_in_place
        else:
            value = self.emit_into_slots(op, source)
        if replay:
            self.g.call_function(restore_rng, (self.rng_states[replay], now))
        if source is not node:
            source.args, source.kwargs = (), {}  # unregister it from the source graph's users
        if skippable:
            n = mark.next
            while n.op != "root":
                self.skip_roots.add(n)
                n = n.next
        self.env[node.name] = value
        value.meta.setdefault("ir_op", op.id)  # which IR op a generated node runs (tests, debugging)
        # Unpack multi-output results at once (see the module docstring).
        for user in node.users:
            if user.target is operator.getitem and user.name in self.step.folded:
                self.need(user)
        if self.on_op is not None:
            # The hook holds the op's results while it runs.
            self.g.call_function(self.on_op, (t, op.id, inputs, value))
        if self.holds:
            self.hold(op, node, value)

    def copy_call(self, node: fx.Node) -> fx.Node:
        """``node`` emitted as it is; in a training step, an op of :data:`GRAD_MODE_RESULTS`
        under grad mode (an eval step's runs under ``no_grad`` as eager's: oneDNN's
        inference kernels round otherwise)."""
        value = self.g.node_copy(node, self.lookup)
        if (self.step.train and isinstance(value.target, torch._ops.OpOverload)
                and value.target._schema.name in GRAD_MODE_RESULTS):
            value.target = _with_grad(value.target)
        return value

    def hold(self, op, node: fx.Node, value: fx.Node) -> None:
        """Note which value holds each result of ``op``, and keep those ``holds`` names
        for ``op`` alive until it has run (a use in a call that does nothing)."""
        bufs = element_buffers(self.step, node)
        if len(bufs) == 1:
            self.made.setdefault(bufs[0], value)
        else:
            for user in node.users:
                if user.target is operator.getitem and user.name in self.env and user.args[1] < len(bufs):
                    self.made.setdefault(bufs[user.args[1]], self.env[user.name])
        held = [self.made[b] for b in self.holds.get(op.id, ()) if b in self.made]
        if held:
            self.g.call_function(_hold, tuple(held))

    def forget_folded(self, node: fx.Node) -> None:
        """Drop the folded values (views, ``getitem``) computed from ``node``'s earlier
        results: they are emitted again from the recomputed ones when next needed."""
        stack = list(node.users)
        while stack:
            user = stack.pop()
            if user.name in self.step.folded and self.env.pop(user.name, None) is not None:
                stack += list(user.users)

    def slot(self, node: fx.Node, k: int, buffer: str, *, raw: bool = False) -> fx.Node:
        """The arena slot of ``node``'s ``k``-th result (``buffer``), viewed as that result
        (``raw``: the slot's bytes, a 1-D ``uint8`` tensor)."""
        instance = self.instance.get(buffer, buffer)
        name = f"_slot_{node.name}_{k}" + ("" if instance == buffer else f"_run{self.runs[node.name]}")
        while name in self.root:  # never another slot's name (op names end in digits too)
            name += "_"
        if raw:
            return self.attr(name, self.slots[instance])
        val = node.meta["val"]
        return self.attr(name, _view_in(self.slots[instance], val if result_elements(val) is None else val[k]))

    def emit_into_slots(self, op, node: fx.Node) -> fx.Node:
        how = lower(self.step, op, node, self.device_type, self.output_buffers)
        target = node.target
        if how.kind == "fallback":
            # Run as eager does. The fresh results stay in PyTorch's allocator until their
            # last use where the plan kept them out of the arena (lowering.fallback_buffers),
            # else they are copied into their slots at once.
            val = node.meta.get("val")
            elems = result_elements(val)
            tensors = [val] if elems is None else elems
            bufs = element_buffers(self.step, node)
            fresh = [isinstance(v, torch.Tensor) and b in op.outputs and b not in self.output_buffers
                     for v, b in zip(tensors, bufs)]
            nbytes = sum(-(-storage_bytes(v) // self.granularity) * self.granularity
                         for v, f in zip(tensors, fresh) if f)
            copied = any(fresh) and all(self.instance.get(b, b) in self.slots for b, f in zip(bufs, fresh) if f)
            self.fallbacks.append(Fallback(op.id, str(target), how.reason, nbytes, copied))
            value = self.copy_call(node)
            if not copied:
                return value
            self.scratch[op.id] = nbytes
            regions = [self.slot(node, k, b, raw=True) if f else None for k, (b, f) in enumerate(zip(bufs, fresh))]
            return self.g.call_function(_copied_into, (value, regions, op.id))
        bufs = element_buffers(self.step, node)
        captured = named_arguments(target, node.args, node.kwargs)  # nodes with their traced values
        named = {k: fx.node.map_arg(v, self.lookup) for k, v in captured.items()}
        self.out_ops += 1
        if how.kind == "rewrite":
            scratch = rewrite_scratch(target, node.meta["val"], captured)
            if scratch:
                self.scratch[op.id] = sum(-(-n // self.granularity) * self.granularity for n in scratch)
            return REWRITES[target](self.g, named, self.slot(node, 0, bufs[0]))
        slot_nodes = [self.slot(node, k, b) for k, b in enumerate(bufs)]
        if how.kind == "foreach":
            return call_foreach_into(self.g, how.twin, named, slot_nodes)
        variant = how.variant
        args, kwargs = out_call_arguments(variant, named, slot_nodes)
        call = self.g.call_function(variant.overload, args, kwargs)
        if variant.returns_nothing:
            return self.g.call_function(list, (slot_nodes,)) if result_elements(node.meta.get("val")) is not None \
                else slot_nodes[0]
        return call

    def make_skippable(self) -> None:
        """Guard the skippable ops, and whatever uses their results, by the finite flag."""
        skipped: set[fx.Node] = set()
        for node in self.g.nodes:
            if node.op == "output":
                if any(n in skipped for n in node.all_input_nodes):
                    raise RuntimeLayerError("internal error: a step output depends on the skippable optimizer update")
            elif node.op == "call_function" and (node in self.skip_roots
                                                 or any(n in skipped for n in node.all_input_nodes)):
                skipped.add(node)
                node.args = (self.finite, *node.args)
                node.target = _if_finite(node.target)

    def build(self) -> fx.GraphModule:
        for node in self.src.graph.nodes:
            if node.op == "placeholder":
                self.env[node.name] = self.g.node_copy(node)
        if self.warm:
            self.g.call_function(_allocate_and_free, self.warm)
        for t, i in enumerate(self.order):
            self.emit_op(t, i)
        out = next(n for n in self.src.graph.nodes if n.op == "output")
        self.g.output(fx.node.map_arg(out.args[0], self.lookup))
        if self.skip_roots:
            self.make_skippable()
        self.g.lint()
        module = fx.GraphModule(self.root, self.g, class_name="PlannedStep")
        # FX registers tensor attributes as buffers, read through nn.Module.__getattr__
        # (a Python call per slot per step); plain instance attributes are a dict lookup.
        for name in [n for n in module._buffers if n.startswith("_slot_")]:
            value = module._buffers.pop(name)
            object.__setattr__(module, name, value)
        return module


def _rerun_node(node: fx.Node) -> fx.Node:
    """A stand-in for ``node`` (same name, target and values) called without its running
    statistics; a node of a scratch graph, to be emitted once."""
    args, kwargs = without_statistics(node)
    sub = fx.Graph().create_node(node.op, node.target, args, kwargs, name=node.name)
    sub.meta = dict(node.meta)
    return sub


#: Views whose storage offset is absolute in their input's storage (see ``_Builder.rebase``).
_ABSOLUTE_OFFSET = frozenset({torch.ops.aten.as_strided.default, torch.ops.aten.as_strided_.default})


def _as_strided_rebased(op, x: torch.Tensor, size, stride, storage_offset, traced_offset: int) -> torch.Tensor:
    """``op(x, size, stride, storage_offset)`` with the offset counted, as in the traced
    step, from where ``x``'s buffer begins: ``x.storage_offset() - traced_offset``
    elements into ``x``'s storage (the arena)."""
    return op(x, size, stride, storage_offset + x.storage_offset() - traced_offset)


def _all_finite(found_inf: torch.Tensor) -> bool:
    """GradScaler's test (one device sync, as eager's ``found_inf.item()``)."""
    return not found_inf.item()


@functools.cache
def _if_finite(fn: Callable) -> Callable:
    """``fn`` run only when its first argument is true (else None: a skipped optimizer update)."""
    def if_finite(finite: bool, *args, **kwargs):
        return fn(*args, **kwargs) if finite else None

    # FX names the generated code's globals after the target.
    if_finite.__name__ = if_finite.__qualname__ = "if_finite_" + re.sub(r"\W", "_", getattr(fn, "__name__", "op"))
    return if_finite


@functools.cache
def _with_grad(fn: Callable) -> Callable:
    """``fn`` run with grad enabled on detached tensors, as eager's forward pass runs it:
    its results are those of grad mode, and no autograd graph is recorded."""
    def detached(a):
        if isinstance(a, torch.Tensor):
            return a.detach()
        return type(a)(detached(x) for x in a) if isinstance(a, (list, tuple)) else a

    def with_grad(*args, **kwargs):
        with torch.enable_grad():
            return fn(*detached(args), **{k: detached(v) for k, v in kwargs.items()})

    with_grad.__name__ = with_grad.__qualname__ = "with_grad_" + re.sub(r"\W", "_", getattr(fn, "__name__", "op"))
    return with_grad


def _hold(*values) -> None:
    """Nothing: a use that keeps ``values`` alive until this point of the program."""


def _allocate_and_free(nbytes: int, device: str) -> None:
    """Allocate ``nbytes`` on ``device`` and free them (see ``build_program``'s
    ``warm_block``); without the memory for it, the step runs on without."""
    try:
        torch.empty(nbytes, dtype=torch.uint8, device=device)
    except RuntimeError:  # torch.OutOfMemoryError
        pass


def _copied_into(result, regions: Sequence[torch.Tensor | None], op_id: str):
    """A fallback's ``result`` (a tensor, or a tuple or list of them and None) with each
    element that has a region (1-D ``uint8`` arena slot) replaced by the same view of
    that region, after copying the bytes of its storage it spans there. (A reduced loss
    keeps the storage its kernel resized for the unreduced one: 4 of its bytes are the
    result.) A result that spans more than its slot (a kernel that allocates more than
    the capture said) stays where it is, with a warning: right values, more memory than
    planned."""
    def into(t, region):
        if region is None:
            return t
        nbytes = _spanned_bytes(t)
        if nbytes > region.numel():
            warnings.warn(f"op {op_id} returned a result of {nbytes} bytes, more than the {region.numel()} bytes "
                          "its capture showed: it stays outside the arena, which the plan's figures do not count",
                          RuntimeWarning, stacklevel=2)
            return t
        raw = torch.empty(0, dtype=torch.uint8, device=t.device).set_(t.untyped_storage())
        region[:nbytes].copy_(raw[:nbytes])
        return _view_in(region, t)

    if isinstance(result, torch.Tensor):
        return into(result, regions[0])
    return type(result)(into(t, r) for t, r in zip(result, regions, strict=True))


def _spanned_bytes(t: torch.Tensor) -> int:
    """Bytes of ``t``'s storage from its start to the end of ``t``'s last element."""
    if t.numel() == 0:
        return t.storage_offset() * t.element_size()
    last = t.storage_offset() + sum((n - 1) * abs(s) for n, s in zip(t.shape, t.stride()))
    return (last + 1) * t.element_size()


def _view_in(region: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """A tensor with ``fake``'s dtype, shape and strides whose storage is the bytes of
    ``region`` (a 1-D ``uint8`` view of the arena at the buffer's offset)."""
    itemsize = fake.element_size()
    base = region.storage_offset()
    if base % itemsize:
        raise RuntimeLayerError(f"internal error: offset {base} bytes is not aligned for {fake.dtype}")
    nbytes = storage_bytes(fake)
    typed = region[:nbytes].view(fake.dtype) if nbytes else region[:0].view(fake.dtype)
    return typed.as_strided(tuple(fake.shape), tuple(fake.stride()), base // itemsize + fake.storage_offset())


def build_program(step, order: Sequence[str] | Schedule | None = None, *, executor: str = "reorder",
                  slots: Mapping[str, torch.Tensor] | None = None, arena: torch.Tensor | None = None,
                  device_type: str = "cpu", on_op: Callable[[int, str, list, Any], None] | None = None,
                  warm_block: tuple[int, str] | None = None,
                  holds: Mapping[str, Sequence[str]] | None = None, eager_sums: bool = False) -> CompiledProgram:
    """Compile ``step`` (a :class:`~model_ir.torch.CapturedStep`) for ``order`` (IR op ids;
    program order by default; validated).

    ``slots`` maps each transient buffer id to the 1-D ``uint8`` region of ``arena``
    it lives in (arena executor). ``on_op(t, op_id, inputs, value)`` is called after
    the ``t``-th op, while its inputs and results are still referenced (measurements).
    ``warm_block`` (bytes, device): the step starts by allocating and freeing a block
    that large on that device, so that PyTorch's caching allocator keeps one segment
    that large for what the step allocates there (``beside_arena.caching_reserve``).
    ``holds`` (op id -> buffer ids): results kept alive until that op has run even when
    no later op reads them, as eager PyTorch keeps what Python still refers to
    (``Buffer.meta["released_after"]``, see :func:`eager_holds`). ``eager_sums``: the
    gradient sums eager runs in place (``Op.meta[EAGER_IN_PLACE]``) run in place, into
    their first input (program order only: it is the input's last use there).
    """
    graph = step.graph
    idx = list(range(len(graph.ops))) if order is None else order_indices(graph, order)
    validate_order(graph, idx)
    b = _Builder(step, idx, slots, device_type, on_op, warm_block, holds, eager_sums)
    module = b.build()
    return CompiledProgram(module, executor, arena, tuple(b.fallbacks), b.out_ops, b.scratch)


def eager_holds(graph: Graph) -> dict[str, list[str]]:
    """Op id -> the buffers eager PyTorch keeps until that op has run because Python
    still refers to them (``meta["released_after"]``, recorded by the capture in eval:
    a forward method's locals), for :func:`build_program`'s ``holds``."""
    holds: dict[str, list[str]] = {}
    for buf in graph.buffers:
        op = buf.meta.get("released_after")
        if op is not None and op in graph.op_index:
            holds.setdefault(op, []).append(buf.id)
    return holds
