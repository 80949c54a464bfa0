"""The hook implementations model-opt finds through the ``model_opt`` entry point.

Thin adapters: the frontend and the scheduler live in their own modules, and this
module imports nothing heavy (it is imported by every ``model-opt`` call).
"""

from model_ir.hookspecs import hookimpl


@hookimpl
def model_opt_frontends():
    from model_opt_example_plugin.chain_format import ChainFrontend

    return [ChainFrontend()]


@hookimpl
def model_opt_schedulers():
    from model_opt_example_plugin.lifo_scheduler import LifoScheduler

    return [LifoScheduler()]
