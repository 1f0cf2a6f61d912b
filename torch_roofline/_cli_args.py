"""Command-line arguments the subcommands share (torch-free, so ``--help`` stays fast)."""

from __future__ import annotations

import argparse

__all__ = ["add_model_arguments"]

_MODEL_HELP = "torchvision:NAME, package.module:factory, or a .py file defining model and inputs"


def add_model_arguments(p: argparse.ArgumentParser, *, example_shape: str, optional: bool = False) -> None:
    """Add MODEL (``--model`` when ``optional``) and the repeatable ``--input-shape SHAPE``.

    Args:
        p: the subcommand's parser.
        example_shape: the shape shown in the help, e.g. ``"1,3,224,224"``.
        optional: MODEL as an optional ``--model`` flag (default None) instead of a positional.
    """
    if optional:
        p.add_argument("--model", default=None, metavar="MODEL", help=_MODEL_HELP)
    else:
        p.add_argument("model", metavar="MODEL", help=_MODEL_HELP)
    p.add_argument("--input-shape", action="append", default=[], metavar="SHAPE",
                   help=f"input tensor shape, e.g. {example_shape} (repeat for several inputs)")
