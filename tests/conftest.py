"""Fixtures and the ``needs`` marker shared by every package's tests."""

import importlib
import importlib.util
import sys
from pathlib import Path

import pytest

from model_ir.plugins import plugin_manager
from model_ir.testing.distributions import write_distribution

EXAMPLE_PLUGIN = Path(__file__).resolve().parents[1] / "examples" / "model-opt-example-plugin"


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "needs(*modules): skip unless each module is installed (another layer, an optional "
                   "backend): each package's tests pass with only that package's dependencies")


def pytest_collection_modifyitems(config, items):
    for item in items:
        missing = [name for mark in item.iter_markers("needs") for name in mark.args
                   if importlib.util.find_spec(name) is None]
        if missing:
            item.add_marker(pytest.mark.skip(reason=f"needs {', '.join(missing)}, not installed"))


@pytest.fixture
def install_plugin(tmp_path, monkeypatch):
    """``install_plugin(name, entry_points, modules=None)``: a fake installed
    distribution (see :mod:`model_ir.testing.distributions`); the plugin manager is
    rebuilt on next use, through the real entry-point loading, and again after the test."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))

    def install(name, entry_points, modules=None):
        write_distribution(site, name, entry_points, modules)
        importlib.invalidate_caches()
        plugin_manager.cache_clear()

    yield install
    plugin_manager.cache_clear()
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", None) or "").startswith(str(site)):
            del sys.modules[name]


@pytest.fixture
def example_plugin(install_plugin, monkeypatch):
    """examples/model-opt-example-plugin, registered through its entry point."""
    monkeypatch.syspath_prepend(str(EXAMPLE_PLUGIN / "src"))
    install_plugin("model-opt-example-plugin", {"example": "model_opt_example_plugin.plugin"})
    yield
    for name in [n for n in sys.modules if n.startswith("model_opt_example_plugin")]:
        del sys.modules[name]
