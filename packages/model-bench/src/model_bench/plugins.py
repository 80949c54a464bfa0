"""model-bench's hook implementations: its hook specs, the built-in zoo and CLI commands.

Thin adapters only; importing this module imports neither torch nor transformers
(``model-opt info`` stays fast).
"""

from __future__ import annotations

from model_ir.hookspecs import hookimpl


@hookimpl
def model_opt_add_hookspecs(pluginmanager):
    from model_bench import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


@hookimpl
def model_opt_models():
    from model_bench.zoo_text import TEXT_MODELS
    from model_bench.zoo_tiny import TINY_MODELS
    from model_bench.zoo_vision import VISION_MODELS

    return [*VISION_MODELS, *TEXT_MODELS, *TINY_MODELS]


@hookimpl
def model_opt_cli_commands():
    from model_bench.cli_bench import BenchCommand
    from model_bench.cli_capture import CaptureCommand

    return [BenchCommand(), CaptureCommand()]
