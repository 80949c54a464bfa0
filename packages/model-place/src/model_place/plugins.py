"""model-place's hook implementations (thin adapters over the placer functions)."""

from __future__ import annotations

from model_ir.hookspecs import hookimpl


@hookimpl
def model_opt_add_hookspecs(pluginmanager) -> None:
    from model_place import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


@hookimpl
def model_opt_placers():
    from model_place.placers import builtin_placers

    return builtin_placers()


@hookimpl
def model_opt_cli_commands():
    from model_place.cli_place import PlaceCommand

    return [PlaceCommand()]
