"""Deciding, during a trace, what eager PyTorch decides on values no input changes.

Some library code branches on tensor values (:data:`MASKING_CHECKS`). Hugging Face
transformers builds an attention mask only when it must: with real tensors it checks
whether the position ids are packed sequences and whether the padding mask pads
anything, and when neither, passes no mask and ``is_causal=True`` to scaled-dot-product
attention. On fake tensors
it cannot look (``is_tracing`` is true for them), so it always builds the mask: a
captured GPT-2 step held a ``(batch, 1, seq, seq)`` mask and its float copy in
every layer, and ran attention with a bias, where the eager step holds none (the H200
traces of GPT-2 at batch 32: 12 x 40 MiB in the simulation that the GPU never
allocated).

:func:`constant_decisions` wraps those checks for the duration of a trace: when every
tensor a check reads was computed from constants alone (no input of the step among its
ancestors in the graph being traced: GPT-2's ``arange`` position ids), the ancestors
are evaluated on real tensors and the check runs on them, as in eager. A check that reads an input (a user's attention mask) keeps
the traced answer, which holds for every batch: the graph never specialises on the
example batch's values. Neither does a tensor drawn at random, or one that an op off
its chain writes in place (a copy into a view of it, maybe from an input).
"""

from __future__ import annotations

import contextlib
import functools
import sys

import torch
from torch.fx.experimental.proxy_tensor import get_proxy_mode, get_proxy_slot
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import _disable_current_modes

#: Elements a folded tensor (and every tensor it is computed from) may have: the checks
#: read position ids and padding masks, never activations.
MAX_FOLDED_NUMEL = 1 << 20

#: module -> its functions that branch on tensor values: transformers' mask checks, and
#: torch's ``nn.TransformerEncoder`` / ``Decoder`` comparing a mask given without
#: ``is_causal`` to a causal one (a mask the model builds from ``torch.ones(...).triu()``)
MASKING_CHECKS = {
    "transformers.masking_utils": ("find_packed_sequence_indices", "_ignore_causal_mask_sdpa",
                                   "_ignore_bidirectional_mask_sdpa"),
    "torch.nn.modules.transformer": ("_detect_is_causal_mask",),
}


def fold(t: torch.Tensor) -> torch.Tensor | None:
    """The real value of ``t``, a tensor of the graph being traced, when it is computed
    from constants alone (and small); None otherwise, or outside a trace."""
    mode = get_proxy_mode()
    if mode is None:
        return None
    slot = get_proxy_slot(t, mode.tracer, None, lambda p: p)
    if slot is None:
        return None
    target = slot.proxy.node
    nodes, seen, stack = [], set(), [target]
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        val = node.meta.get("val")
        if node.op != "call_function" or (isinstance(val, torch.Tensor) and val.numel() > MAX_FOLDED_NUMEL):
            return None  # an input of the step (placeholder), a constant attribute, or too large
        if torch.Tag.nondeterministic_seeded in getattr(node.target, "tags", ()):
            return None  # a random draw: evaluating it would decide on one draw and advance the RNG
        nodes.append(node)
        stack.extend(node.all_input_nodes)
    storages = {_storage(n.meta.get("val")) for n in nodes} - {None}
    if any(node not in seen and storages.intersection(_written(node)) for node in target.graph.nodes):
        return None  # written by an op off the chain (a copy into a view of it): maybe from an input
    position = {node: i for i, node in enumerate(target.graph.nodes)}
    env: dict = {}
    try:
        with _disable_current_modes():
            for node in sorted(nodes, key=position.__getitem__):
                args, kwargs = torch.fx.node.map_arg((node.args, node.kwargs), env.__getitem__)
                env[node] = node.target(*args, **kwargs)
    except Exception:  # a kernel this machine cannot run (a CUDA tensor without a GPU): keep the trace
        return None
    value = env[target]
    return value if isinstance(value, torch.Tensor) else None


def _storage(val):
    return StorageWeakRef(val.untyped_storage()) if isinstance(val, torch.Tensor) else None


def _written(node) -> set:
    """The storages an in-place or out= op of the traced graph writes."""
    schema = getattr(node.target, "_schema", None)
    if node.op != "call_function" or schema is None or not schema.is_mutable:
        return set()
    out = set()
    for i, arg in enumerate(schema.arguments):
        if arg.alias_info is not None and arg.alias_info.is_write:
            value = node.args[i] if i < len(node.args) else node.kwargs.get(arg.name)
            if isinstance(value, torch.fx.Node) and (ref := _storage(value.meta.get("val"))) is not None:
                out.add(ref)
    return out


def decided_on_constants(check):
    """``check`` run on real tensors when every tensor argument folds (:func:`fold`) and
    it answers None or a bool; otherwise the traced call."""

    @functools.wraps(check)
    def wrapper(*args, **kwargs):
        leaves, spec = pytree.tree_flatten((args, kwargs))
        if get_proxy_mode() is None or not any(isinstance(x, torch.Tensor) for x in leaves):
            return check(*args, **kwargs)
        real = [fold(x) if isinstance(x, torch.Tensor) else x for x in leaves]
        if any(r is None for r, x in zip(real, leaves) if isinstance(x, torch.Tensor)):
            return check(*args, **kwargs)
        real_args, real_kwargs = pytree.tree_unflatten(real, spec)
        with _disable_current_modes():
            answer = check(*real_args, **real_kwargs)
        if answer is None or isinstance(answer, bool):
            return answer
        return check(*args, **kwargs)  # a tensor: computed in the graph

    return wrapper


@contextlib.contextmanager
def constant_decisions():
    """For the duration of a trace, the mask checks of :data:`MASKING_CHECKS` decide as
    eager does on tensors computed from constants. Nothing is patched in a module not
    imported (older transformers decide without looking at fake tensors' kind)."""
    originals = [(module, name, getattr(module, name)) for module_name, names in MASKING_CHECKS.items()
                 if (module := sys.modules.get(module_name)) is not None for name in names if hasattr(module, name)]
    for module, name, check in originals:
        setattr(module, name, decided_on_constants(check))
    try:
        yield
    finally:
        for module, name, check in originals:
            setattr(module, name, check)
