"""The ``model-opt`` command. Subcommands come from the ``model_opt_cli_commands`` hook.

Exit statuses shared by every subcommand: 0 success, 2 a user mistake, 4 a
third-party plugin failed (:class:`~model_ir.errors.PluginFailedError`), 130
interrupted, 141 standard output was closed early (``model-opt ... | head``; quietly,
as a shell reports SIGPIPE). Subcommands give meanings to others (``place``: 1 and 3).
"""

from __future__ import annotations

import argparse
import os
import re
import sys

from model_ir.errors import ModelOptError, PluginFailedError, UsageError
from model_ir.plugins import plugin_manager, providers

#: The distributions of the layers, in dependency order (``--version``).
LAYERS = ("model-ir", "model-sched", "model-place", "model-runtime", "model-bench")


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's, except that a help text it cannot %-format (a plugin's "saves 30%", or a
    provider named ``top5%`` in a list of names) is shown as it is instead of failing."""

    def _expand_help(self, action):
        try:
            return super()._expand_help(action)
        except (TypeError, ValueError, KeyError):
            return action.help


class CommandParser(argparse.ArgumentParser):
    """argparse with the project's error convention: one line, no usage block.

    Values that look like negative numbers (``-1``, ``-2.5``, ``-1e3``, ``-inf``, ``nan``)
    are read as values, not options, so that ``--time-limit -inf`` reaches the flag's
    own check and gets a message about seconds.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(
            r"^-([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$|^-(inf|infinity|nan)$", re.IGNORECASE)

    def error(self, message: str):
        command = self.prog.removeprefix("model-opt").strip()
        where = f"{command}: " if command else ""
        raise UsageError(f"{where}{message} (see model-opt {command + ' ' if command else ''}--help)")


class SubcommandsAction(argparse._SubParsersAction):
    """Subcommands (``parser.add_subparsers(action=SubcommandsAction)``) that refuse the
    parent command's options given before them (``bench --out DIR suite``): argparse
    would let the subcommand's defaults replace them, or leave them unread, silently."""

    def __call__(self, parser, namespace, values, option_string=None):
        for action in parser._actions:
            if (action.option_strings and action.dest not in (argparse.SUPPRESS, self.dest)
                    and getattr(namespace, action.dest, action.default) != action.default):
                name = values[0]
                parser.error(f"{action.option_strings[0]} is given before {name!r}, where it does nothing: the "
                             f"options of {name!r} go after it")
        super().__call__(parser, namespace, values, option_string)


class VersionAction(argparse.Action):
    """``--version``: the version of each installed layer, one per line (looked up
    only when asked, to keep every other call fast)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print("\n".join(layer_versions()))
        parser.exit()


def layer_versions() -> list[str]:
    """``"NAME VERSION"`` for each installed layer distribution."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for name in LAYERS:
        try:
            out.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            continue
    return out


def _fails_with(error: ModelOptError):
    def run(args) -> int:
        raise error

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="model-opt",
        description="Memory-optimal training plans: operator order, tensor placement, proven bounds.",
    )
    parser.add_argument("--version", action=VersionAction, help="print the version of each installed layer")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")  # subparsers are CommandParsers too
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
    failed, 130 on Ctrl-C, 141 when standard output was closed early)."""
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help(sys.stderr)
            return 2
        status = args._run(args) or 0
        if not isinstance(status, int):  # a command plugin's run() gave something else than an exit status
            raise PluginFailedError(f"command {args.command}: run() returned {type(status).__name__} "
                                    f"{status!r}, not an exit status (int)")
        # Flush here so that a reader that went away (`| head`) is noticed inside the try.
        if sys.stdout is not None:
            sys.stdout.flush()
        return status
    except BrokenPipeError:
        # Not a user mistake: whoever read standard output stopped reading. Exit quietly
        # (Python's recipe, docs.python.org/3/library/signal.html#note-on-sigpipe): point
        # stdout at /dev/null so the flush at shutdown does not fail again.
        _silence_stdout()
        return 141
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


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (AttributeError, OSError, ValueError):
        pass  # no file descriptor behind sys.stdout (embedded, or captured in tests)


if __name__ == "__main__":
    sys.exit(main())
