"""Hook specifications contributed by model-ir: frontends and CLI subcommands.

Every hook returns a list of *providers*: small objects with a ``name``. Other layers
add their own specifications through :func:`model_opt_add_hookspecs`.
"""

from __future__ import annotations

from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("model_opt")
hookimpl = pluggy.HookimplMarker("model_opt")


@hookspec
def model_opt_add_hookspecs(pluginmanager: pluggy.PluginManager) -> None:
    """Add a layer's hook specifications (called once, before any other hook)."""


@hookspec
def model_opt_frontends() -> list[Any]:
    """Frontends: providers with ``name`` and ``load(source, **options) -> Graph``."""


@hookspec
def model_opt_cli_commands() -> list[Any]:
    """CLI subcommands: providers with ``name``, ``help``, ``add_arguments(parser)``
    and ``run(args) -> int`` (the exit status)."""
