"""The ``--frontend`` option of every command that reads a graph file.

Without it a command reads a file with the frontend declaring the file's suffix
(:func:`model_ir.frontends.frontend_for`), so a third-party frontend works from the
command line with no change to the commands.
"""

from __future__ import annotations

import argparse

from model_ir.plugins import providers


def add_frontend_argument(parser: argparse.ArgumentParser, what: str = "the graph file") -> None:
    """Add ``--frontend NAME`` (default None: chosen by the file's suffix)."""
    names = ", ".join(sorted(providers("model_opt_frontends")))
    parser.add_argument("--frontend", metavar="NAME", default=None,
                        help=f"how to read {what}: {names} (default: the frontend declaring the file's "
                             "suffix, json otherwise)")
