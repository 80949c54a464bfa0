"""Errors of the runtime layer, rooted in :class:`model_ir.errors.ModelOptError`."""

from __future__ import annotations

from model_ir.errors import ModelOptError


class RuntimeLayerError(ModelOptError, RuntimeError):
    """An optimized step could not be built or run."""


class ReoptimizeError(RuntimeLayerError, ValueError):
    """The step is called with something the plan was not made for (another input
    shape or dtype, a replaced parameter of another shape, changed optimizer
    hyper-parameters): the message says what changed; call ``optimize`` again."""


class BudgetError(RuntimeLayerError):
    """No plan found keeps the step's peak under the memory budget asked for; the
    message gives the best peak found and the lower bound of any plan. The CLI exits
    with :func:`model_ir.cli_values.budget_status`: 1 when no plan fits (``proven``:
    below the lower bound), else 3."""

    exit_code = 3

    def __init__(self, message: str, *, proven: bool = False):
        super().__init__(message)
        if proven:
            self.exit_code = 1
