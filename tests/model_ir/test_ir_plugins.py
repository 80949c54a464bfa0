"""The plugin manager: built-ins come through entry points; a third party adds a provider."""

import pytest

from model_ir import Graph
from model_ir.errors import PluginError
from model_ir.frontends import load
from model_ir.hookspecs import hookimpl
from model_ir.plugins import plugin_manager, provider, providers



def test_json_frontend_is_registered_through_entry_point(diamond_file):
    assert "json" in providers("model_opt_frontends")
    assert "info" in providers("model_opt_cli_commands")
    assert load(diamond_file).name == "diamond"


def test_unknown_provider_lists_available():
    with pytest.raises(PluginError, match="unknown frontend 'onnx'; available: .*json"):
        provider("model_opt_frontends", "onnx", "frontend")


def test_unknown_hook_is_a_clear_error():
    with pytest.raises(PluginError, match="no plugin defines the hook 'model_opt_nope'"):
        providers("model_opt_nope")


class ThirdParty:
    class Frontend:
        name = "constant"

        def load(self, source, **options):
            return Graph([], [], name=f"const-{source}")

    @hookimpl
    def model_opt_frontends(self):
        return [self.Frontend()]


def test_third_party_plugin_adds_a_frontend():
    pm = plugin_manager()
    plugin = ThirdParty()
    pm.register(plugin)
    try:
        assert load("x", frontend="constant").name == "const-x"
    finally:
        pm.unregister(plugin)
    assert "constant" not in providers("model_opt_frontends")


def test_plugin_docs_list_every_hook_and_an_importable_protocol():
    """docs/plugins.md's table names every hook the (installed) layers specify, with its Protocol."""
    import importlib
    import importlib.util
    import re
    from pathlib import Path

    docs = (Path(__file__).resolve().parents[2] / "docs" / "plugins.md").read_text()
    rows = [(hook, protocol) for hook, layer, protocol
            in re.findall(r"^\| `(model_opt_\w+)[^`]*` \| ([\w-]+) \| (?:`([\w.]+)`)? *\|", docs, re.M)
            if importlib.util.find_spec(layer.replace("-", "_"))]
    pm = plugin_manager()
    specified = {name for name in vars(pm.hook) if getattr(pm.hook, name).has_spec()}
    assert {hook for hook, _ in rows} == specified
    for hook, protocol in rows:
        if protocol:
            module, _, name = protocol.rpartition(".")
            assert getattr(importlib.import_module(module), name)._is_protocol
