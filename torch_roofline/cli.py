"""The ``torch-roofline`` command.

Each subcommand lives next to the stage it drives and exposes two functions:
``add_parser(subparsers)`` (registers its arguments) and ``run(args) -> int``.
This module only assembles them, so stages stay independent.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional, Sequence

from torch_roofline._version import __version__

__all__ = ["main", "build_parser"]

# (subcommand, module defining add_parser/run); order is the order in --help.
_SUBCOMMANDS = (
    ("count", "torch_roofline.count._cli"),
    ("profile", "torch_roofline._cli_profile"),
    ("predict", "torch_roofline._cli_predict"),
    ("diff", "torch_roofline._cli_predict"),
    ("trace", "torch_roofline.timing._cli"),
    ("devices", "torch_roofline.devices._cli"),
    ("bench", "torch_roofline.devices._cli"),
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every available subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="torch-roofline",
        description="Roofline analysis of PyTorch models, module by module.",
    )
    parser.add_argument("--version", action="version", version=f"torch-roofline {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
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
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``torch-roofline`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, KeyError, FileNotFoundError, RuntimeError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"torch-roofline {args.command}: error: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
