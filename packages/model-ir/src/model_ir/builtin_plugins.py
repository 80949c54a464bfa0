"""model-ir's own hook implementations: the JSON and torch frontends and the ``info`` command."""

from __future__ import annotations

from model_ir.cli_info import InfoCommand
from model_ir.frontends import JsonFrontend, TorchFrontend
from model_ir.hookspecs import hookimpl


@hookimpl
def model_opt_frontends():
    return [JsonFrontend(), TorchFrontend()]


@hookimpl
def model_opt_cli_commands():
    return [InfoCommand()]
