"""model-runtime's hook implementations (thin adapters over the executor builders)."""

from __future__ import annotations

from model_ir.hookspecs import hookimpl


@hookimpl
def model_opt_add_hookspecs(pluginmanager) -> None:
    from model_runtime import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


@hookimpl
def model_opt_executors():
    from model_runtime.executors import builtin_executors

    return builtin_executors()


@hookimpl
def model_opt_cli_commands():
    from model_runtime.cli_run import RunCommand

    return [RunCommand()]
