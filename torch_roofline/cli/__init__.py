"""The ``torch-roofline`` command.

Each subcommand is a module of this package (``count``, ``profile``, ``predict`` with ``diff``,
``trace``, ``devices`` with ``bench``); each exposes ``add_parser(subparsers)`` (registers
its arguments, each with a ``func`` to run). The argument helpers they share are in
:mod:`~torch_roofline.cli.args`, the MODEL argument's loader in :mod:`~torch_roofline.cli.models`.
This module only assembles them. The stages (count, timing, devices, analysis, report) never
import the command line.

User errors (a bad argument, a model that cannot be built or run on the given shapes, an
unreadable trace, an unknown device, an output that cannot be written) print one line,
``torch-roofline <command>: error: ...``, naming the input and the fix, and exit non-zero
(2 for arguments, 1 for the rest); ``--debug`` shows the Python traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any, Dict, NoReturn, Optional, Sequence

from torch_roofline._version import __version__

__all__ = ["main", "build_parser", "USER_ERRORS"]

# (subcommand, module defining add_parser/run); order is the order in --help.
_SUBCOMMANDS = (
    ("count", "torch_roofline.cli.count"),
    ("profile", "torch_roofline.cli.profile"),
    ("predict", "torch_roofline.cli.predict"),
    ("diff", "torch_roofline.cli.predict"),
    ("trace", "torch_roofline.cli.trace"),
    ("devices", "torch_roofline.cli.devices"),
    ("bench", "torch_roofline.cli.devices"),
)

#: What a user's input can cause: our own checks raise ValueError (TraceError included),
#: KeyError (unknown device) or OSError (files); torch raises RuntimeError for a model that
#: cannot run on the given shapes or device. Anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, KeyError, OSError, RuntimeError)

_DEBUG_HELP = "show the Python traceback of an error instead of one line"


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line naming the fix (no usage block).

    ``commands``: subcommand name -> its parser (on the top-level parser only), so an
    unknown argument is reported by the subcommand it was given to.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands: Dict[str, argparse.ArgumentParser] = {}

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}; see '{self.prog} --help'\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every available subcommand registered."""
    parser = _Parser(
        prog="torch-roofline",
        description="Roofline analysis of PyTorch models, module by module.",
    )
    parser.add_argument("--version", action="version", version=f"torch-roofline {__version__}")
    parser.add_argument("--debug", action="store_true", help=_DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    seen = set()
    for name, module_name in _SUBCOMMANDS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:  # a stage not built into this install
            if exc.name and exc.name.startswith("torch_roofline"):
                continue
            raise
        if module_name in seen:
            continue
        seen.add(module_name)
        module.add_parser(sub)
    for subparser in sub.choices.values():  # `torch-roofline count ... --debug` works too
        subparser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=_DEBUG_HELP)
    parser.commands = dict(sub.choices)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``torch-roofline`` console script; returns the exit status."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(list(argv) if argv is not None else None)
    if unknown:
        parser.commands.get(args.command, parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as exc:
        if args.debug:
            raise
        print(f"torch-roofline {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 1


def _one_line(exc: BaseException) -> str:
    """The exception's message on one line: a KeyError's without its quotes, an OSError's
    without its ``[Errno N]`` prefix (the file it names first)."""
    message: object = exc
    if isinstance(exc, KeyError) and exc.args:
        message = exc.args[0]
    elif isinstance(exc, OSError) and exc.strerror:
        message = f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    text = " ".join(part.strip() for part in str(message).splitlines() if part.strip())
    return text or type(exc).__name__


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
