"""Exception hierarchy shared by every layer.

Every error a user can cause is a :class:`ModelOptError`; the CLI prints its message
on one line and exits with :attr:`ModelOptError.exit_code` instead of a traceback.
"""

from __future__ import annotations


class ModelOptError(Exception):
    """Root of all errors raised by model-opt packages."""

    exit_code = 2


class GraphError(ModelOptError, ValueError):
    """A graph is malformed (unknown ids, bad sizes, ops out of program order, ...)."""


class FormatError(ModelOptError, ValueError):
    """A file could not be read: missing, not JSON/CSV, or a field has a bad value."""


class ScheduleError(ModelOptError, ValueError):
    """An operator order is not a valid topological order of the graph."""


class UsageError(ModelOptError, ValueError):
    """The ``model-opt`` command line could not be parsed (unknown option, missing or
    bad value): one line and exit status 2, as for every user mistake."""


class WrongTypeError(ModelOptError, TypeError):
    """An argument of a public function has the wrong type; the message names the
    argument (see :mod:`model_ir.arguments`)."""


class PluginError(ModelOptError, LookupError):
    """A provider (frontend, scheduler, solver, ...) is unknown or unavailable."""


class PluginFailedError(ModelOptError):
    """A third-party plugin raised an unexpected exception (a bug in the plugin, not a
    user mistake). Its own status, so that scripts can tell it from the statuses the
    commands give meanings to (``place``: 1 infeasible, 3 time limit)."""

    exit_code = 4
