"""``torch-roofline count``: FLOPs, MACs, parameters and bytes per module."""

from __future__ import annotations

import argparse
import sys

from torch_roofline.cli.args import add_model_arguments, add_step_arguments, non_negative_int
from torch_roofline.records import MEMORY_MODELS

__all__ = ["add_parser"]


def add_parser(sub: "argparse._SubParsersAction") -> None:
    p = sub.add_parser("count", help="count FLOPs, MACs, parameters and bytes per module",
                       description="Count one step of MODEL: FLOPs (2 per MAC), MACs, parameters and bytes per module.")
    add_model_arguments(p, example_shape="1,3,224,224")
    add_step_arguments(p, train="count forward + backward + one AdamW step",
                       devices="cpu (default) or meta (no weights allocated)")
    p.add_argument("--memory-model", choices=MEMORY_MODELS, default="op",
                   help="op: every op reads inputs and writes outputs (default); compulsory: each storage once")
    p.add_argument("--backend", choices=("dispatch", "fvcore"), default="dispatch")
    p.add_argument("--depth", type=non_negative_int, default=None, help="table depth (default: all modules)")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from torch_roofline.cli.models import load_model, running
    from torch_roofline.count import count

    spec = load_model(args.model, args.input_shape, dtype=args.dtype, device=args.device, train=args.train)
    optimizer = torch.optim.AdamW(spec.model.parameters()) if args.train else None
    with running(spec):
        result = count(spec.model, spec.inputs, backward=args.train, loss_fn=spec.loss_fn if args.train else None,
                       optimizer=optimizer, memory_model=args.memory_model, backend=args.backend)
    if args.json:
        sys.stdout.write(result.to_json() + "\n")
    else:
        print(result.table(depth=args.depth))
    return 0
