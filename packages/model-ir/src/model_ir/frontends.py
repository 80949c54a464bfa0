"""Frontends that turn a user object into a Graph. Torch capture lives in ``model_ir.torch``."""

from __future__ import annotations

from model_ir.graph import Graph
from model_ir.json_format import load_graph
from model_ir.plugins import provider


class JsonFrontend:
    """Loads a ``model-ir/1`` graph (or the graph of a ``model-plan/1`` plan) from a file."""

    name = "json"

    def load(self, source, **options) -> Graph:
        return load_graph(source)


def load(source, *, frontend: str = "json", **options) -> Graph:
    """Turn ``source`` into a Graph with the frontend called ``frontend``."""
    return provider("model_opt_frontends", frontend, "frontend").load(source, **options)
