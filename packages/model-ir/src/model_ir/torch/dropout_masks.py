"""Dropout's random draw kept as a boolean mask, so its float noise can be recomputed.

Off the GPU, ``F.dropout(x, p)`` draws ``noise = empty_like(x).bernoulli_(1 - p)``,
scales it in place (``noise.div_(1 - p)``) and returns ``x * noise``; backward multiplies
the gradient by ``noise``. The noise comes from the random generator, so it cannot be
made again (:mod:`model_ir.recompute`): a plan under a memory budget keeps a float per
element of every dropout from the forward pass to the backward pass.

Planning under a budget therefore rewrites the scaling into ``mask = noise != 0`` (one
byte per element, what the plan keeps) and ``noise' = mask.to(dtype).div(1 - p)`` (no
random numbers: recomputable from the mask). The drawn noise is freed after the mask is
taken. torch.compile's decompositions draw a boolean mask likewise. The values are
bitwise eager's: the same 0.0s and 1.0s divided by the same scalar by the same kernel.
Where the noise is contiguous, the draw itself becomes the functional
``bernoulli.p(z, 1 - p)`` (ATen's ``empty_like(z, contiguous).bernoulli_(1 - p)``) of
``z``, a zero-stride view of a scalar with ``x``'s shape and dtype, which replays its
random numbers when recomputed (:mod:`model_ir.torch.rng_replay`) without needing
``x``, so a plan may keep neither the noise nor the mask, as checkpointing does and
as torch.compile recomputes its seeded masks.

CUDA's fused ``native_dropout`` already returns a boolean mask for backward, and
replays its draws when recomputed.
"""

from __future__ import annotations

import contextlib

import torch
from torch import fx

from model_ir.torch.checkpoint_rng import replayed_draws
from model_ir.torch.functional_inplace import retrace

aten = torch.ops.aten


def _only_user(node: fx.Node) -> fx.Node | None:
    users = list(node.users)
    return users[0] if len(users) == 1 else None


def keep_dropout_masks(gm: fx.GraphModule, backward_start: str | None) -> int:
    """Rewrite the forward pass's dropout noise into a boolean mask and a recomputable
    scaling (see the module docstring); returns how many draws were rewritten."""
    rewritten = 0
    replayed = replayed_draws(gm.graph.nodes)  # a checkpointed region's backward replays them: kept
    for draw in list(gm.graph.nodes):
        if draw.name == backward_start:
            break
        if (draw.target is not aten.bernoulli_.float or not isinstance(draw.args[0], fx.Node)
                or draw.name in replayed):
            continue
        # The pattern: a buffer read only by the draw, the draw read only by the scaling.
        buffer, scale = draw.args[0], _only_user(draw)
        if (_only_user(buffer) is not draw or scale is None or scale.target is not aten.div_.Scalar
                or scale.args[0] is not draw or not scale.meta["val"].is_floating_point()):
            continue
        graph = gm.graph
        source = buffer.args[0] if buffer.args else None
        val = buffer.meta["val"]
        if (buffer.target is aten.empty_like.default and isinstance(source, fx.Node) and len(buffer.args) == 1
                and all(k == "memory_format" and v is torch.preserve_format for k, v in buffer.kwargs.items())
                # bernoulli.p's result has the row-major strides (is_contiguous() would also
                # accept other strides on dimensions of size 1).
                and val.stride() == torch.empty(val.shape, device="meta").stride()):
            # A functional draw: recomputable, replaying the same numbers. (The trace leaves
            # p out when it is bernoulli_'s default, 0.5.)
            p = draw.args[1] if len(draw.args) > 1 else draw.kwargs.get("p", 0.5)
            kwargs = {k: v for k, v in draw.kwargs.items() if k != "p"}
            # bernoulli.p reads only its argument's shape and dtype: give it a zero-stride
            # view of a scalar, so a rerun does not need x (the same draws, tested).
            with graph.inserting_after(draw):
                zero = graph.call_function(aten.scalar_tensor.default, (0,),
                                           {"dtype": val.dtype, "device": val.device})
            with graph.inserting_after(zero):
                shaped = graph.call_function(aten.expand.default, (zero, list(val.shape)))
            with graph.inserting_after(shaped):
                fresh = graph.call_function(aten.bernoulli.p, (shaped, p), kwargs)
            for new in (zero, shaped, fresh):
                new.meta = {k: v for k, v in draw.meta.items() if k != "val"}
                retrace(new, (getattr(val, "fake_mode", None) or contextlib.nullcontext()) if new is zero else None)
            draw.replace_all_uses_with(fresh)
            graph.erase_node(draw)
            graph.erase_node(buffer)
            draw = fresh
        with graph.inserting_after(draw):
            mask = graph.call_function(aten.ne.Scalar, (draw, 0))
        with graph.inserting_after(mask):
            ones = graph.call_function(aten._to_copy.default, (mask,), {"dtype": scale.meta["val"].dtype})
        with graph.inserting_after(ones):
            noise = graph.call_function(aten.div.Scalar, (ones, *scale.args[1:]), dict(scale.kwargs))
        for new in (mask, ones, noise):
            new.meta = {k: v for k, v in draw.meta.items() if k != "val"}
            retrace(new)
        scale.replace_all_uses_with(noise)
        graph.erase_node(scale)
        rewritten += 1
    if rewritten:
        gm.graph.lint()
        gm.recompile()
    return rewritten
