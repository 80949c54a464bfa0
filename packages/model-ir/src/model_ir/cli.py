"""The ``model-opt`` command. Subcommands come from the ``model_opt_cli_commands`` hook.

Exit statuses shared by every subcommand: 0 success, 2 a user mistake, 4 a
third-party plugin failed (:class:`~model_ir.errors.PluginFailedError`), 130
interrupted. Subcommands give meanings to others (``place``: 1 and 3).
"""

from __future__ import annotations

import argparse
import sys

from model_ir.errors import ModelOptError
from model_ir.plugins import plugin_manager, providers


def _fails_with(error: ModelOptError):
    def run(args) -> int:
        raise error

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="model-opt",
        description="Memory-optimal training plans: operator order, tensor placement, proven bounds.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, cmd in sorted(providers("model_opt_cli_commands").items()):
        help = getattr(cmd, "help", None)
        p = sub.add_parser(name, help=help, description=help)
        try:
            cmd.add_arguments(p)
        except ModelOptError as e:
            # One broken command must not take `--help` and every other command down.
            plugin_manager().report(f"command {name}: {e}")
            p.set_defaults(_run=_fails_with(e))
            continue
        p.set_defaults(_run=cmd.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (2 for a user mistake, 4 when a plugin
    failed, 130 on Ctrl-C)."""
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help(sys.stderr)
            return 2
        return int(args._run(args) or 0)
    except ModelOptError as e:
        print(f"model-opt: error: {e}", file=sys.stderr)
        return e.exit_code
    except OSError as e:
        # A file the user named could not be read or written: one line, not a traceback.
        where = f"{e.filename}: " if e.filename else ""
        print(f"model-opt: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("model-opt: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
