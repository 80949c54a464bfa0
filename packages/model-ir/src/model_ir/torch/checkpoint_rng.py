"""Dropout in a checkpointed region, replayed as eager replays it.

``torch.utils.checkpoint`` (and Hugging Face's ``gradient_checkpointing_enable()``)
keeps the random generator's state when a region starts and, when backward recomputes
the region, restores it inside ``torch.random.fork_rng``: the recomputed dropout draws
the forward's random numbers and the generator ends where it was. Under capture those
``get_rng_state``/``set_rng_state`` calls act on the real generator, outside the traced
step, whose backward would draw new numbers.

While tracing, :func:`pairing_replayed_draws` follows each generator's *position*: the
number of seeded ops traced on it so far. ``torch.get_rng_state()`` (CPU) and
``torch.cuda.get_rng_state()`` tag the state they return with the position;
``set_rng_state`` of a tagged state moves the position back (or on) to the tag, and of
any other state (a user's own seeding) to a position no op took yet. A seeded op traced
at a position an earlier op took replays that op's draws: when both are the same
operator on the same arguments (shapes, dtypes, probability), the later node's
``meta[REPLAYS_DRAWS_OF]`` names the earlier one, and the executors run it from the
generator state kept from before the earlier op, then put the generator back
(:mod:`model_ir.torch.rng_replay`). Any other replay stays unpaired and capture refuses
it. Draws at new positions, anywhere in the step (the forward of every micro-batch, a
custom backward), need nothing: the executors draw them from the generator in eager's
order, as eager does.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Iterable, Iterator

import torch
from torch import fx
from torch.fx.experimental.proxy_tensor import get_proxy_mode

from model_ir.recompute import REPLAYS_DRAWS_OF
from model_ir.torch.rng_replay import draw_device


def _seeded(node: fx.Node) -> bool:
    return node.op == "call_function" and torch.Tag.nondeterministic_seeded in getattr(node.target, "tags", ())


class _Positions:
    """Generator positions of the seeded nodes traced so far, and the replays they imply."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.cursor: dict[str, int] = defaultdict(int)  # generator (device type) -> position
        self.end: dict[str, int] = defaultdict(int)  # generator -> the first position no node took
        self.taken: dict[tuple[str, int], str] = {}  # (generator, position) -> the first node there
        self.tags: dict[int, tuple[torch.Tensor, str, int]] = {}  # id(state) -> (state, generator, position)
        self.replays: dict[str, str] = {}  # node -> the earlier node at its position

    def catch_up(self, nodes: Iterable[fx.Node]) -> None:
        """Give the seeded nodes traced since the last call their positions."""
        for node in nodes:
            if node.name in self.seen or not _seeded(node):
                continue
            self.seen.add(node.name)
            device = draw_device(node)
            generator = device.type if device is not None else "cpu"
            position = self.cursor[generator]
            self.cursor[generator] = position + 1
            first = self.taken.setdefault((generator, position), node.name)
            if first != node.name:
                self.replays[node.name] = first
            self.end[generator] = max(self.end[generator], position + 1)

    def traced_nodes(self) -> Iterable[fx.Node]:
        mode = get_proxy_mode()
        return mode.tracer.graph.nodes if mode is not None else ()

    def tag(self, generator: str, state) -> None:
        self.catch_up(self.traced_nodes())
        # The state is kept with its tag, so that its id is not reused while tracing.
        self.tags[id(state)] = (state, generator, self.cursor[generator])

    def move(self, generator: str, state) -> None:
        self.catch_up(self.traced_nodes())
        tagged = self.tags.get(id(state))
        known = tagged is not None and tagged[0] is state and tagged[1] == generator
        self.cursor[generator] = tagged[2] if known else self.end[generator]


@contextlib.contextmanager
def pairing_replayed_draws() -> Iterator[_Positions]:
    """Follow the generators' positions while tracing (see the module docstring); after
    the trace, :func:`mark_replayed_draws` marks the graph's replaying nodes."""
    positions = _Positions()
    patched = []
    for module, generator in ((torch, "cpu"), (torch.cuda, "cuda")):
        get, set_ = module.get_rng_state, module.set_rng_state

        def get_state(*args, _get=get, _generator=generator, **kwargs):
            state = _get(*args, **kwargs)
            positions.tag(_generator, state)
            return state

        def set_state(state, *args, _set=set_, _generator=generator, **kwargs):
            positions.move(_generator, state)
            return _set(state, *args, **kwargs)

        patched.append((module, get, set_))
        module.get_rng_state, module.set_rng_state = get_state, set_state
    try:
        yield positions
    finally:
        for module, get, set_ in patched:
            module.get_rng_state, module.set_rng_state = get, set_


def _signature(node: fx.Node):
    """What a replay must share with the draw it replays: operator, constant arguments,
    and the traced shapes and dtypes of its tensor arguments and results."""
    def describe(a):
        if isinstance(a, fx.Node):
            v = a.meta.get("val")
            return ("tensor", tuple(v.shape), v.dtype) if isinstance(v, torch.Tensor) else ("node",)
        return a

    val = node.meta.get("val")
    results = [(tuple(v.shape), v.dtype) for v in (val if isinstance(val, (tuple, list)) else [val])
               if isinstance(v, torch.Tensor)]
    return (node.target, fx.node.map_aggregate(node.args, describe), fx.node.map_aggregate(node.kwargs, describe),
            results)


def replayed_draws(nodes: Iterable[fx.Node]) -> set[str]:
    """The names of the nodes whose draws a later node replays: graph rewrites keep them
    as traced, so that the name in ``meta[REPLAYS_DRAWS_OF]`` stays theirs."""
    return {n.meta[REPLAYS_DRAWS_OF] for n in nodes if REPLAYS_DRAWS_OF in n.meta}


#: Node ``meta`` key of a seeded node traced at a position an earlier node took but
#: unlike it (another operator, shape or probability): the earlier node's name. Eager
#: would draw it from the restored generator state, which no executor reproduces.
UNPAIRED_REPLAY = "unpaired_replay_of"


def mark_replayed_draws(gm: fx.GraphModule, positions: _Positions) -> int:
    """Set ``meta[REPLAYS_DRAWS_OF]`` on the nodes of ``gm`` that replay an earlier
    node's draws with the same signature, ``meta[UNPAIRED_REPLAY]`` on the other nodes at
    a position taken before; returns how many were paired."""
    positions.catch_up(gm.graph.nodes)
    nodes = {n.name: n for n in gm.graph.nodes}
    marked = 0
    for name, first in positions.replays.items():
        node, original = nodes.get(name), nodes.get(first)
        if node is None:
            continue
        if original is None or _signature(node) != _signature(original):
            node.meta[UNPAIRED_REPLAY] = first
            continue
        node.meta[REPLAYS_DRAWS_OF] = first
        marked += 1
    return marked
