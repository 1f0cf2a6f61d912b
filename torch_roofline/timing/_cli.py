"""``torch-roofline trace``: a roofline from a saved torch.profiler / Kineto trace."""

from __future__ import annotations

import argparse
import os
import sys

from torch_roofline._cli_args import add_model_arguments, check_out, non_negative_int, positive_int
from torch_roofline.records import MEMORY_MODELS

__all__ = ["add_parser"]


def add_parser(sub: "argparse._SubParsersAction") -> None:
    p = sub.add_parser("trace", help="roofline of a saved torch.profiler/Kineto trace (.json or .json.gz)",
                       description="Read a saved trace (CPU or GPU) and place its ops on the roofline. FLOPs and bytes "
                                   "come from --model (counted on the meta device), else from CUPTI counters in the trace.")
    p.add_argument("file", metavar="FILE")
    add_model_arguments(p, example_shape="8,3,224,224", optional=True)
    p.add_argument("--train", action="store_true", help="the traced step ran backward too")
    p.add_argument("--roof", default=None, help="roofs to use (default: the trace's GPU from the catalog)")
    p.add_argument("--steps", type=positive_int, default=None, help="model steps the trace holds (default: ProfilerStep count)")
    p.add_argument("--memory-model", choices=MEMORY_MODELS, default="op")
    p.add_argument("--depth", type=non_negative_int, default=2, help="table depth (default 2; 0: the model only)")
    p.add_argument("--level", choices=("module", "op"), default="module")
    p.add_argument("--out", default=None, metavar="DIR", help="write report.json and roofline.png here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from torch_roofline.offline import compare_counters, from_trace
    from torch_roofline.timing.trace import load_trace

    check_out(args.out)
    trace = load_trace(args.file)  # FileNotFoundError, or a TraceError naming the event and field
    model = inputs = counted = None
    if args.model:
        from torch_roofline._models import load_model, running
        from torch_roofline.count.replay import count_without_compute

        spec = load_model(args.model, args.input_shape, device="meta", train=args.train)
        model, inputs = spec.model, spec.inputs
        with running(spec):
            counted = count_without_compute(model, inputs, backward=args.train, memory_model=args.memory_model)
    report = from_trace(trace, model, inputs, roof=args.roof, backward=args.train,
                        memory_model=args.memory_model, steps=args.steps, counted=counted)
    print(report.table(depth=args.depth, level=args.level))
    if counted is not None and any(e.kind == "cuda_profiler_range" for e in trace.events):
        from tabulate import tabulate

        rows = [[r.module or report.model, r.phase, r.op, r.kernels, f"{r.analytic_flops / 1e9:.3f}",
                 f"{r.counter_flops / 1e9:.3f}", "-" if r.ratio is None else f"{r.ratio:.3f}"]
                for r in compare_counters(trace, counted, steps=args.steps or 1)]
        print("\nAnalytic vs hardware-counter FLOPs (SASS FP instructions; tensor-core work is invisible to them):")
        print(tabulate(rows, headers=["module", "phase", "op", "kernels", "analytic GFLOP", "counter GFLOP",
                                      "counter/analytic"], tablefmt="simple", disable_numparse=True))
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        report.to_json(os.path.join(args.out, "report.json"))
        report.plot(os.path.join(args.out, "roofline.png"))
        print(f"wrote {args.out}/report.json and roofline.png", file=sys.stderr)
    return 0
