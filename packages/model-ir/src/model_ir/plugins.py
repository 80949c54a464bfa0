"""The one plugin manager (project ``model_opt``) and provider lookup by name.

Built-in implementations are registered through the ``model_opt`` entry-point group,
exactly as a third-party package would register its own.
"""

from __future__ import annotations

import functools
from typing import Any

import pluggy

from model_ir import hookspecs
from model_ir.errors import PluginError

PROJECT = "model_opt"


@functools.cache
def plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, with every installed plugin loaded."""
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.load_setuptools_entrypoints(PROJECT)
    pm.hook.model_opt_add_hookspecs(pluginmanager=pm)
    return pm


def providers(hook: str) -> dict[str, Any]:
    """All providers returned by ``hook``, by name (later registrations win)."""
    pm = plugin_manager()
    caller = getattr(pm.hook, hook, None)
    if caller is None:
        raise PluginError(f"no plugin defines the hook {hook!r}; is the layer that owns it installed?")
    found: dict[str, Any] = {}
    for result in reversed(caller()):
        for p in result or ():
            found[p.name] = p
    return found


def provider(hook: str, name: str, what: str) -> Any:
    """The provider called ``name`` of ``hook``; ``what`` names the family in errors."""
    found = providers(hook)
    try:
        return found[name]
    except KeyError:
        raise PluginError(f"unknown {what} {name!r}; available: {', '.join(sorted(found)) or 'none'}") from None
