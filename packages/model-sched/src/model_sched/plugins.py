"""model-sched's hook implementations, registered through the ``model_opt`` entry point."""

from __future__ import annotations

from model_ir.hookspecs import hookimpl


@hookimpl
def model_opt_add_hookspecs(pluginmanager) -> None:
    from model_sched import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


@hookimpl
def model_opt_schedulers():
    from model_sched.schedulers import BUILTIN_SCHEDULERS

    return list(BUILTIN_SCHEDULERS)


@hookimpl
def model_opt_solvers():
    from model_sched.solvers import CpSatBackend, GurobiBackend, HighsBackend

    return [HighsBackend(), CpSatBackend(), GurobiBackend()]


@hookimpl
def model_opt_cli_commands():
    from model_sched.cli_schedule import ScheduleCommand

    return [ScheduleCommand()]
