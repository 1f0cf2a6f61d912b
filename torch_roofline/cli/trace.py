"""``torch-roofline trace``: a roofline from a saved torch.profiler / Kineto trace, or from a job's
traces (one per rank: a folder, a glob pattern or several files)."""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from typing import Any

from torch_roofline.cli.args import add_model_arguments, check_out, non_negative_int, positive_int
from torch_roofline.records import MEMORY_MODELS

__all__ = ["add_parser"]


def add_parser(sub: "argparse._SubParsersAction") -> None:
    p = sub.add_parser("trace", help="roofline of a saved torch.profiler/Kineto trace (.json or .json.gz)",
                       description="Read a saved trace (CPU or GPU) and place its ops on the roofline. FLOPs and bytes "
                                   "come from --model (counted on the meta device), else from CUPTI counters in the trace.")
    p.add_argument("file", metavar="FILE", nargs="+",
                   help="a trace; or a job's traces, one per rank: a folder, a glob pattern (quoted) or several files")
    add_model_arguments(p, example_shape="8,3,224,224", optional=True)
    p.add_argument("--train", action="store_true", help="the traced step ran backward too")
    p.add_argument("--roof", default=None, help="roofs to use (default: the trace's GPU from the catalog)")
    p.add_argument("--steps", type=positive_int, default=None, help="model steps the trace holds (default: ProfilerStep count)")
    p.add_argument("--memory-model", choices=MEMORY_MODELS, default="op")
    p.add_argument("--depth", type=non_negative_int, default=2, help="table depth (default 2; 0: the model only)")
    p.add_argument("--level", choices=("module", "op"), default="module")
    p.add_argument("--out", default=None, metavar="DIR", help="write report.json and roofline.png here (a job: "
                   "ranks.json and report-rank<N>.json)")
    p.add_argument("--tensorboard", default=None, metavar="LOGDIR",
                   help="also write the report for TensorBoard's Roofline tab here (a job: one run per rank, "
                        "LOGDIR/rank<N>)")
    p.add_argument("--processes", type=positive_int, default=None,
                   help="a job: worker processes reading the traces (default: one per trace, at most the CPU count)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from torch_roofline.offline import compare_counters, from_trace
    from torch_roofline.timing.trace import load_trace

    check_out(args.out)
    check_out(args.tensorboard)
    first = args.file[0]
    if len(args.file) > 1 or os.path.isdir(first) or (glob.has_magic(first) and not os.path.exists(first)):
        return _run_job(args)
    if not args.model:  # from_trace reads the file (a progress line on a terminal for a big one)
        report = from_trace(first, roof=args.roof, memory_model=args.memory_model, steps=args.steps)
        print(report.table(depth=args.depth, level=args.level))
        return _write_outputs(args, report)
    trace = load_trace(first)  # before counting the model: FileNotFoundError, or a TraceError naming the event
    model = inputs = counted = None
    if args.model:
        from torch_roofline.cli.models import load_model, running
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
    return _write_outputs(args, report)


def _write_outputs(args: argparse.Namespace, report: Any) -> int:
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        report.to_json(os.path.join(args.out, "report.json"))
        report.plot(os.path.join(args.out, "roofline.png"))
        print(f"wrote {args.out}/report.json and roofline.png", file=sys.stderr)
    if args.tensorboard:
        report.to_tensorboard(args.tensorboard)
        print(f"wrote {args.tensorboard} (TensorBoard)", file=sys.stderr)
    return 0


def _run_job(args: argparse.Namespace) -> int:
    """A job's traces, one per rank (:func:`torch_roofline.traceset.from_traces`)."""
    from torch_roofline.traceset import from_traces

    if args.model or args.train or args.steps is not None:
        raise ValueError("trace: --model, --train and --steps read one trace; for a job's traces (a folder, a glob or "
                         "several files) each rank is counted from its own recorded shapes: drop them")
    job = from_traces(args.file if len(args.file) > 1 else args.file[0], roof=args.roof,
                      memory_model=args.memory_model, processes=args.processes)
    print(job.table())
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        from torch_roofline._io import atomic_write

        atomic_write(os.path.join(args.out, "ranks.json"), json.dumps(job.summary.to_dict(), indent=1,
                                                                      allow_nan=False), caller="trace --out")
        for rank, report in zip(job.summary.ranks, job.reports):
            report.to_json(os.path.join(args.out, f"report-rank{rank}.json"))
        print(f"wrote {args.out}/ranks.json and report-rank<N>.json", file=sys.stderr)
    if args.tensorboard:
        job.to_tensorboard(args.tensorboard)
        print(f"wrote {args.tensorboard}/rank<N> (TensorBoard runs)", file=sys.stderr)
    return 0
