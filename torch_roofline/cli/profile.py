"""``torch-roofline profile``: measure a model on this machine and place it on the roofline."""

from __future__ import annotations

import argparse
import os
import sys
import time

from torch_roofline.cli.args import add_model_arguments, add_step_arguments, check_out, non_negative_int, positive_int
from torch_roofline.records import MEMORY_MODELS

__all__ = ["add_parser"]


def add_parser(sub: "argparse._SubParsersAction") -> None:
    p = sub.add_parser("profile", help="measure MODEL and place each module on the roofline",
                       description="Run MODEL under the roofline profiler and print the per-module roofline table.")
    add_model_arguments(p, example_shape="8,3,224,224")
    add_step_arguments(p, train="profile forward + backward + one SGD step", devices="cpu (default) or cuda")
    p.add_argument("--roof", default="auto",
                   help="auto (default), datasheet, measured, a catalog device name, or a roofs .toml/.yaml file")
    p.add_argument("--memory-model", choices=MEMORY_MODELS, default="op")
    p.add_argument("--steps", type=positive_int, default=2, help="profiled steps, averaged (default 2, after 1 warm-up step)")
    p.add_argument("--depth", type=non_negative_int, default=2, help="table depth (default 2; 0: the model only)")
    p.add_argument("--top", type=positive_int, default=25, help="table rows (default 25, by time)")
    p.add_argument("--out", default=None, metavar="DIR", help="write report.json, report.csv and roofline.png here")
    p.set_defaults(func=run)


def _say(msg: str) -> None:
    print(f"[torch-roofline] {msg}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    import torch

    from torch_roofline.cli.models import load_model, running
    from torch_roofline.count import run_step
    from torch_roofline.devices.placement import resolve_device
    from torch_roofline.profiler import RooflineProfiler, schedule

    check_out(args.out)  # then MODEL and its arguments, then --roof: all before the first step runs
    spec = load_model(args.model, args.input_shape, dtype=args.dtype, device=args.device, train=args.train)
    device = resolve_device(args.roof, torch.device(args.device))
    model = spec.model
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3) if args.train else None

    def one_step() -> None:
        if args.train:
            optimizer.zero_grad(set_to_none=True)
            run_step(model, spec.inputs, backward=True, loss_fn=spec.loss_fn, optimizer=optimizer)
        else:
            with torch.no_grad():
                run_step(model, spec.inputs)

    _say(f"{spec.label}: warm-up step")
    with running(spec):  # the first call: a model that cannot run on these shapes fails here
        one_step()
    prof = RooflineProfiler(model, device=args.device, roof=device, memory_model=args.memory_model,
                            schedule=schedule(wait=0, warmup=1, active=args.steps))
    t0 = time.perf_counter()
    with prof:
        for i in range(args.steps + 1):
            _say(f"step {i + 1}/{args.steps + 1} ({'warm-up' if i == 0 else 'profiled'})")
            one_step()
            prof.step()
    _say(f"profiled in {time.perf_counter() - t0:.1f} s; counting the recorded calls and analysing")
    report = prof.report()
    print(report.table(depth=args.depth, top=args.top))
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        report.to_json(os.path.join(args.out, "report.json"))
        report.to_csv(os.path.join(args.out, "report.csv"))
        report.plot(os.path.join(args.out, "roofline.png"))
        _say(f"wrote {args.out}/report.json, report.csv, roofline.png")
    return 0
