"""``torch-roofline predict`` (roofline times on catalog devices) and ``diff`` (two reports)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

from torch_roofline.cli.args import add_model_arguments, check_out, non_negative_int
from torch_roofline.records import MEMORY_MODELS
from torch_roofline._module_names import parent_names
from torch_roofline._numbers import ms_text

__all__ = ["add_parser"]


def add_parser(sub: "argparse._SubParsersAction") -> None:
    p = sub.add_parser("predict", help="predict MODEL's roofline on devices you do not have",
                       description="Count MODEL on the meta device and place it on each device's roofs. "
                                   "Times are roofline times: lower bounds, not forecasts.")
    add_model_arguments(p, example_shape="1,3,224,224")
    p.add_argument("--on", action="append", default=[], metavar="DEVICE",
                   help="catalog device id or name (repeat), 'cpu', or a roofs file; see `torch-roofline devices`")
    p.add_argument("--dtype", default=None, help="what-if dtype: fp32, bf16, fp16, fp8 or int8")
    p.add_argument("--train", action="store_true", help="forward + backward")
    p.add_argument("--memory-model", choices=MEMORY_MODELS, default="op")
    p.add_argument("--depth", type=non_negative_int, default=1, help="table depth (default 1; 0: the model only)")
    p.add_argument("--out", default=None, metavar="DIR", help="write report-<device>.json files and roofline.png")
    p.set_defaults(func=run_predict)

    d = sub.add_parser("diff", help="compare two report.json files per module",
                       description="Compare two reports (two models, two devices, or before/after): time, efficiency, bound.")
    d.add_argument("a", metavar="A.json")
    d.add_argument("b", metavar="B.json")
    d.add_argument("--phase", default="all")
    d.add_argument("--depth", type=non_negative_int, default=None, help="table depth (default: all modules)")
    d.set_defaults(func=run_diff)



def run_predict(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from torch_roofline.cli.models import load_model, running
    from torch_roofline.predict import WHAT_IF_DTYPES, predict

    check_out(args.out)
    if not args.on:
        raise ValueError("predict: name at least one device with --on, e.g. --on h100-sxm (list: torch-roofline devices)")
    if args.dtype is not None and args.dtype not in WHAT_IF_DTYPES:
        raise ValueError(f"--dtype {args.dtype!r}: expected one of {sorted(WHAT_IF_DTYPES)}")
    build_dtype = args.dtype if args.dtype in ("fp32", "bf16", "fp16") else None
    spec = load_model(args.model, args.input_shape, dtype=build_dtype, device="meta", train=args.train)
    with running(spec):
        reports = predict(spec.model, spec.inputs, on=args.on, dtype=args.dtype, backward=args.train,
                          memory_model=args.memory_model, loss_fn=spec.loss_fn)
    ids = list(reports)
    first = reports[ids[0]]
    rows = []
    for m in first.modules:
        if m.phase != "all" or (args.depth is not None and m.depth > args.depth):
            continue
        row = [first.display_name(m.name) if m.name == "" else "  " * m.depth + first.display_name(m.name), m.type,
               f"{m.flops / 1e9:.3f}", f"{(m.bytes_read + m.bytes_written) / 1e6:.2f}",
               "-" if m.intensity is None else f"{m.intensity:.1f}"]
        for dev_id in ids:
            r = reports[dev_id].module(m.name, "all")
            row += [ms_text(r.roofline_time_s), r.bound or "-"]
        rows.append(row)
    headers = ["module", "type", "GFLOP", "MB", "FLOP/B"]
    for dev_id in ids:
        headers += [f"{dev_id} [ms]", "bound"]
    print(tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True))
    print("\nPredicted step (roofline time = lower bound):")
    for dev_id, rep in reports.items():
        t = rep.totals
        share = rep.totals.bound_time_share
        parents = parent_names(m.name for m in rep.modules)
        leaves = [m for m in rep.modules if m.phase == "all" and m.roofline_time_s and m.name and
                  m.name not in parents]
        top = sorted(leaves, key=lambda m: -(m.roofline_time_s or 0))[:3]
        mem = share.memory if share is not None and share.memory is not None else 0.0
        print(f"  {dev_id}: {ms_text(t.roofline_time_s)} ms; {mem * 100:.0f}% of it memory-bound; "
              f"bottlenecks: {', '.join(f'{m.name} ({m.bound})' for m in top) or '-'}")
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        for dev_id, rep in reports.items():
            rep.to_json(os.path.join(args.out, f"report-{dev_id}.json"))
        from torch_roofline.report.plot import plot_devices

        plot_devices(list(reports.values()), os.path.join(args.out, "roofline.png"))
        print(f"\nwrote {len(reports)} report(s) and roofline.png to {args.out}", file=sys.stderr)
    return 0


def run_diff(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    a, b = _read_report(args.a, "A.json"), _read_report(args.b, "B.json")

    def t(row) -> Optional[float]:
        return row.time_s if row.time_s is not None else row.roofline_time_s

    rows_a = {(m.name, m.phase): m for m in a.modules}
    rows_b = {(m.name, m.phase): m for m in b.modules}
    out: List[List[str]] = []
    for key in list(rows_a) + [k for k in rows_b if k not in rows_a]:
        if key[1] != args.phase:
            continue
        ra, rb = rows_a.get(key), rows_b.get(key)
        ref = ra or rb
        if args.depth is not None and ref.depth > args.depth:
            continue
        ta, tb = (t(ra) if ra else None), (t(rb) if rb else None)
        ratio = f"{tb / ta:.2f}x" if ta and tb else "-"
        ea = "-" if not ra or ra.efficiency is None else f"{ra.efficiency * 100:.1f}"
        eb = "-" if not rb or rb.efficiency is None else f"{rb.efficiency * 100:.1f}"
        ba, bb = (ra.bound if ra else None) or "-", (rb.bound if rb else None) or "-"
        out.append([key[0] or a.model, ref.type, ms_text(ta), ms_text(tb), ratio, ea, eb,
                    ba if ba == bb else f"{ba} -> {bb}"])
    print(f"A: {args.a} ({a.device.id}{', predicted' if a.predicted else ''})")
    print(f"B: {args.b} ({b.device.id}{', predicted' if b.predicted else ''})")
    print(tabulate(out, headers=["module", "type", "A [ms]", "B [ms]", "B/A", "A eff. %", "B eff. %", "bound"],
                   tablefmt="simple", disable_numparse=True))
    return 0


def _read_report(path: str, role: str):
    """A report.json named on the command line; a ValueError naming the argument otherwise."""
    from torch_roofline.report import RooflineReport

    try:
        return RooflineReport.from_json(path)
    except ValueError as exc:
        raise ValueError(f"{role} {path!r}: {exc}") from exc
