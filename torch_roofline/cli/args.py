"""Command-line arguments the subcommands share (torch-free, so ``--help`` stays fast).

Numbers are checked by their ``type=`` at argument parsing, so ``--depth -1`` or ``--top 0``
fail before any model is built or profiled; ``--out`` is checked by :func:`check_out` first
thing in a subcommand's ``run``.
"""

from __future__ import annotations

import argparse
from typing import Callable, Optional

__all__ = ["add_model_arguments", "add_step_arguments", "non_negative_int", "positive_int", "check_out"]

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


def add_step_arguments(p: argparse.ArgumentParser, *, train: str, devices: str) -> None:
    """Add what every subcommand that runs MODEL's step takes: ``--train`` (help ``train``),
    ``--dtype`` and ``--device`` (help ``devices``)."""
    p.add_argument("--train", action="store_true", help=train)
    p.add_argument("--dtype", default=None, help="fp32 (default), bf16 or fp16")
    p.add_argument("--device", default="cpu", help=devices)


def _int_at_least(lowest: int, example: int) -> Callable[[str], int]:
    """An argparse ``type=``: an int >= ``lowest``; the error shows an example."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < lowest:
            raise argparse.ArgumentTypeError(f"expected an integer >= {lowest}, e.g. {example}; got {text!r}")
        return value

    parse.__name__ = f"int >= {lowest}"
    return parse


non_negative_int = _int_at_least(0, 2)
"""argparse ``type=`` for ``--depth``: 0 (the root only) or more."""

positive_int = _int_at_least(1, 25)
"""argparse ``type=`` for ``--top`` and ``--steps``: 1 or more."""


def check_out(out: Optional[str]) -> None:
    """Fail now, before any work, when ``--out DIR`` cannot hold the outputs (a file, a
    read-only or missing disk). Nothing is created; the directory is made when written."""
    if out is None:
        return
    from torch_roofline._io import check_writable_dir

    check_writable_dir(out, what=f"--out {out}")
