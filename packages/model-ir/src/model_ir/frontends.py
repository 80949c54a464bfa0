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
        if "example_inputs" not in options:
            from model_ir.errors import PluginError

            raise PluginError("the torch frontend needs example_inputs=... (a tensor, tuple or dict of inputs)")
        example_inputs = options.pop("example_inputs")
        return capture(source, example_inputs, **options)
