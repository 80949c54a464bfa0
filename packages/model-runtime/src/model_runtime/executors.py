"""The built-in executors, ``reorder`` and ``arena``: providers of the
``model_opt_executors`` hook that compile a captured step and its plan to a program.
"""

from __future__ import annotations

import torch

from model_ir.plan import Plan, order_indices
from model_ir.plugins import provider
from model_ir.recompute import extra_instances
from model_ir.simulator import without_held_gradients
from model_runtime.errors import RuntimeLayerError
from model_runtime.lowering import arena_temporaries, fallback_buffers
from model_runtime.program import CompiledProgram, build_program, eager_holds


#: ``optimize(executor=...)``'s default: the arena, reorder or program executor,
#: whichever the plan's figures say holds least (model_runtime.beside_arena.least_memory_executor).
AUTO_EXECUTOR = "auto"


def executor_named(name: str):
    """The ``model_opt_executors`` provider called ``name``; a plugin's named ``auto`` is
    reported and ignored (``auto`` is optimize()'s choice among the others)."""
    return provider("model_opt_executors", name, "executor", reserved=(AUTO_EXECUTOR,))


def transient_buffers(graph) -> list:
    """Buffers the arena holds: neither persistent (parameters, state, inputs) nor
    step outputs (returned to the caller, so they must outlive the step)."""
    return [b for b in graph.buffers if not b.persistent and not b.output]


def build_reorder(step, plan: Plan, *, device: torch.device, on_op=None) -> CompiledProgram:
    """The planned order with PyTorch's own allocator; each buffer is freed after its
    last use in that order; on CUDA the step starts with the first block the plan's
    figures choose for it (``reorder_warm_block_bytes``)."""
    return build_program(step, plan.schedule, executor="reorder", device_type=device.type, on_op=on_op,
                         warm_block=_warm_block(plan, device, "reorder_warm_block_bytes"))


def build_program_order(step, plan: Plan, *, device: torch.device, on_op=None) -> CompiledProgram:
    """Eager PyTorch's order and frees with PyTorch's allocator, whatever the plan's
    order: program order, each buffer freed after its last use or, when Python held it
    longer in eager (eval: a forward method's locals), when eager frees it; on CUDA the
    step starts with the first block the plan's figures choose for it
    (``program_warm_block_bytes``); gradients summed in place where eager sums them so,
    and freed after their last reader (it sets no ``.grad``, which eager holds)."""
    graph = step.graph
    return build_program(step, [op.id for op in graph.ops], executor="program", device_type=device.type,
                         on_op=on_op, warm_block=_warm_block(plan, device, "program_warm_block_bytes"),
                         holds=eager_holds(without_held_gradients(graph)), eager_sums=True)


def _warm_block(plan: Plan, device: torch.device, figure: str = "warm_block_bytes") -> tuple[int, str] | None:
    """The first block a CUDA step starts with (the plan's ``figure``, see
    :func:`model_runtime.beside_arena.caching_reserve`), on ``device``."""
    nbytes = plan.figures.get(figure, 0)
    return (nbytes, str(device)) if device.type == "cuda" and nbytes else None


def build_arena(step, plan: Plan, *, device: torch.device, on_op=None,
                arena: torch.Tensor | None = None) -> CompiledProgram:
    """The planned order with every transient buffer at its planned offset in one arena
    of ``plan.placement.arena_bytes`` bytes allocated once on ``device``.

    ``arena``: another program's arena (1-D ``uint8`` on ``device``) to run in instead,
    grown in place to this plan's size if smaller (the views other programs hold into it
    follow its storage): programs that never run at once (the plans of one step, for
    train and eval or another batch shape) then hold one arena, the largest, as eager's
    caching allocator reuses one pool for all of them."""
    placement = plan.placement
    if placement is None:
        raise RuntimeLayerError("the arena executor needs a plan with a placement (offsets per buffer)")
    try:
        arena = _shared_arena(arena, placement.arena_bytes) if arena is not None else torch.empty(
            placement.arena_bytes, dtype=torch.uint8, device=device)
    except (RuntimeError, MemoryError) as e:  # torch.OutOfMemoryError is a RuntimeError
        raise RuntimeLayerError(f"cannot allocate the arena of {placement.arena_bytes} bytes on {device}: "
                                f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    slots = {}
    # The fallbacks' results stay outside the arena unless the plan placed them (copied in).
    unplaced = fallback_buffers(step, device.type) - set(placement.offsets)
    # A recomputed buffer has a slot per instance (b, b@2, ...), each placed on its own.
    again = extra_instances(plan.graph, order_indices(plan.graph, plan.schedule))
    for buf in transient_buffers(plan.graph):
        if buf.id in unplaced:
            continue
        for slot in (buf.id, *again.get(buf.id, ())):
            try:
                offset = placement.offsets[slot]
            except KeyError:
                raise RuntimeLayerError(f"the placement gives no offset to buffer {slot!r}") from None
            if offset < 0 or offset + buf.size > placement.arena_bytes:
                raise RuntimeLayerError(
                    f"buffer {slot!r} at offset {offset} ({buf.size} bytes) does not fit the arena "
                    f"of {placement.arena_bytes} bytes"
                )
            slots[slot] = arena[offset:offset + buf.size]
    return build_program(step, plan.schedule, executor="arena", slots=slots, arena=arena,
                         device_type=device.type, on_op=on_op,
                         warm_block=_warm_block(plan, device))


def _shared_arena(arena: torch.Tensor, nbytes: int) -> torch.Tensor:
    """``arena`` grown in place to at least ``nbytes`` (its storage resized: every view
    of it stays valid, on the new memory; the contents are transient, not kept)."""
    if arena.numel() < nbytes:
        storage = arena.untyped_storage()
        storage.resize_(nbytes)
        arena.set_(storage, 0, (nbytes,), (1,))
    return arena


class ReorderExecutor:
    name = "reorder"
    help = "planned op order, PyTorch's allocator, each buffer freed after its last use"
    needs_placement = False

    def build(self, step, plan, *, device, on_op=None) -> CompiledProgram:
        return build_reorder(step, plan, device=device, on_op=on_op)


class ProgramOrderExecutor:
    name = "program"
    help = "eager's order and frees, PyTorch's allocator (what auto runs where no plan holds less)"
    needs_placement = False

    def build(self, step, plan, *, device, on_op=None) -> CompiledProgram:
        return build_program_order(step, plan, device=device, on_op=on_op)


class ArenaExecutor:
    name = "arena"
    help = "planned op order and addresses: one arena, ops write into their slot through out= overloads"
    needs_placement = True
    copies_unplaced = True  # a fallback's results the plan places are copied into their slots
    shares_arena = True  # build(arena=...): the plans of one step run in one arena

    def build(self, step, plan, *, device, on_op=None, arena=None) -> CompiledProgram:
        return build_arena(step, plan, device=device, on_op=on_op, arena=arena)

    def unplaced(self, step, device) -> frozenset:
        """Transient buffers PyTorch's allocator makes for this executor: its fallbacks'
        results (left there, or copied into the arena when the plan places them)."""
        return fallback_buffers(step, torch.device(device).type)

    def temporaries(self, step, device) -> dict[str, int]:
        """Op id -> bytes its rewrite (or its kernel, on arguments in the arena's one
        storage) takes for a moment, for the ops that allocate otherwise than capture
        measured (the plan counts these instead)."""
        return arena_temporaries(step, torch.device(device).type)


def builtin_executors() -> list:
    """The executors model-runtime registers through its own plugin."""
    return [ReorderExecutor(), ArenaExecutor(), ProgramOrderExecutor()]
