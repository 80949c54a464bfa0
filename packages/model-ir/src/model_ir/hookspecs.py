"""Hook specifications contributed by model-ir: frontends and CLI subcommands.

Every hook returns a list of *providers*: small objects with a ``name``. Other layers
add their own specifications through :func:`model_opt_add_hookspecs`. The
``Protocol`` classes say what a provider of each hook must offer (``docs/plugins.md``).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any, Protocol

import pluggy

if TYPE_CHECKING:
    from model_ir.graph import Graph

hookspec = pluggy.HookspecMarker("model_opt")
hookimpl = pluggy.HookimplMarker("model_opt")


class Frontend(Protocol):
    """Turns a user object into a Graph. On the command line ``source`` is a file path
    (str); a frontend that reads files may declare ``suffixes`` (e.g. ``(".onnx",)``),
    which select it for such files when no ``--frontend`` is given."""

    name: str

    def load(self, source: Any, **options: Any) -> Graph: ...


class CliCommand(Protocol):
    """A ``model-opt`` subcommand; ``run`` returns the exit status."""

    name: str
    help: str

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


@hookspec
def model_opt_add_hookspecs(pluginmanager: pluggy.PluginManager) -> None:
    """Add a layer's hook specifications (called once, right after the layer registers)."""


@hookspec
def model_opt_frontends() -> list[Frontend]:
    """Frontends: providers with ``name`` and ``load(source, **options) -> Graph``."""


@hookspec
def model_opt_cli_commands() -> list[CliCommand]:
    """CLI subcommands: providers with ``name``, ``help``, ``add_arguments(parser)``
    and ``run(args) -> int`` (the exit status)."""
