"""Frontends that turn a user object into a Graph. Torch capture lives in ``model_ir.torch``.

A frontend that reads files declares the file-name ``suffixes`` it reads; every
command that reads a graph file picks its frontend by them (``--frontend`` overrides).
"""

from __future__ import annotations

import os

from model_ir.errors import GraphError, PluginError
from model_ir.graph import Graph
from model_ir.json_format import load_graph
from model_ir.plugins import invalid_answer, plugin_manager, provider, providers

#: The frontend of a file whose suffix no frontend declares.
DEFAULT_FRONTEND = "json"


class JsonFrontend:
    """Loads a ``model-ir/1`` graph (or the graph of a ``model-plan/1`` plan) from a file."""

    name = "json"
    suffixes = (".json",)

    def load(self, source, **options) -> Graph:
        return load_graph(source)


def load(source, *, frontend: str = "json", **options) -> Graph:
    """Turn ``source`` into a Graph with the frontend called ``frontend``."""
    chosen = provider("model_opt_frontends", frontend, "frontend")
    graph = chosen.load(source, **options)
    if not isinstance(graph, Graph):
        error = GraphError(f"it returned a {type(graph).__name__}, not a model_ir.Graph")
        raise invalid_answer(chosen, f"frontend {frontend!r}", error)
    return graph


def _suffixes(name: str, frontend) -> tuple[str, ...]:
    try:
        declared = getattr(frontend, "suffixes", ())
        return (declared,) if isinstance(declared, str) else tuple(declared)
    except (Exception, SystemExit) as exc:  # one plugin's mistake must not stop every graph file being read
        plugin_manager().report(f"frontend {name}: its suffixes are not a string or a list of them "
                                f"({type(exc).__name__}: {exc}); ignored")
        return ()


def frontend_for(path: str | os.PathLike) -> str:
    """The name of the frontend that reads ``path``: the one declaring the longest
    suffix that ends the file name, else :data:`DEFAULT_FRONTEND`."""
    file_name = os.path.basename(os.fspath(path)).lower()
    matches: dict[str, int] = {}
    for name, frontend in providers("model_opt_frontends").items():
        lengths = [len(s) for s in _suffixes(name, frontend)
                   if isinstance(s, str) and s and file_name.endswith(s.lower())]
        if lengths:
            matches[name] = max(lengths)
    if not matches:
        return DEFAULT_FRONTEND
    best = max(matches.values())
    names = sorted(n for n, length in matches.items() if length == best)
    if len(names) > 1:
        raise PluginError(f"{path}: frontends {', '.join(names)} all read such files; choose one with --frontend")
    return names[0]


def load_file(path: str | os.PathLike, frontend: str | None = None, **options) -> Graph:
    """The graph in file ``path``, read by ``frontend`` (default: :func:`frontend_for`)."""
    return load(os.fspath(path), frontend=frontend or frontend_for(path), **options)


class TorchFrontend:
    """Captures an ``nn.Module`` training step (``model_ir.torch.capture``); needs ``model-ir[torch]``.

    ``load(model, example_inputs=..., loss_fn=None, optimizer=None, train=True,
    granularity=512)``. torch is imported only when a model is loaded.
    """

    name = "torch"

    def load(self, source, **options) -> Graph:
        try:
            from model_ir.torch import capture
        except ImportError as exc:  # pragma: no cover - depends on the installation
            from model_ir.errors import PluginError

            raise PluginError(f"the torch frontend needs PyTorch: pip install 'model-ir[torch]' ({exc})") from None
        if isinstance(source, (str, os.PathLike)):
            from model_ir.errors import PluginError

            raise PluginError("the torch frontend captures a torch.nn.Module from Python "
                              "(model_ir.frontends.load(model, frontend='torch', example_inputs=...)) and reads no "
                              f"file such as {os.fspath(source)!r}: capture a zoo model with model-opt capture "
                              "--model NAME, or give a model-ir/1 graph file")
        if "example_inputs" not in options:
            from model_ir.errors import PluginError

            raise PluginError("the torch frontend needs example_inputs=... (a tensor, tuple or dict of inputs)")
        example_inputs = options.pop("example_inputs")
        return capture(source, example_inputs, **options)
