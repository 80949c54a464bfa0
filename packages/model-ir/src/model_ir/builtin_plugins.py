"""model-ir's own hook implementations: the JSON frontend and the ``info`` command."""

from __future__ import annotations

from model_ir.cli_info import InfoCommand
from model_ir.frontends import JsonFrontend
from model_ir.hookspecs import hookimpl


@hookimpl
def model_opt_frontends():
    return [JsonFrontend()]


@hookimpl
def model_opt_cli_commands():
    return [InfoCommand()]
