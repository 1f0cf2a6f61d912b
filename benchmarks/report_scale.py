"""Report generation time for a model with many modules.

The model is synthetic: an ``nn.Sequential`` of N/2 ``Linear(32, 32)`` + ``ReLU`` pairs, so N
leaf modules plus the root (N = 1,000 by default). It is counted once on CPU (batch 4,
forward), then the report stages are timed, round after round (best-of; median alongside):

* ``count()``: counting the forward again (not part of the report total);
* ``analyse (predicted)``: :func:`torch_roofline.report.build.analyse` with roofs only;
* ``analyse (timed)``: the same with synthetic timings, one :class:`OpTiming` per counted op
  call and one :class:`ModuleTiming` per module (what a profiled step feeds it);
* ``table()``: the people's table of the timed report (every module row);
* ``to_json()``: the JSON document (``docs/report-schema.md``) written to a temporary file;
* ``plot()``: the roofline chart saved as PNG (matplotlib; not part of the total).

Nothing is asserted. Run::

    python benchmarks/report_scale.py                 # 1,000 and 4,000 modules
    python benchmarks/report_scale.py --quick         # 1,000 modules, 2 rounds
    python benchmarks/report_scale.py --modules 10000
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from count_overhead import machine_lines  # noqa: E402

__all__ = ["main", "synthetic_timings"]

# Synthetic op time: 1 µs launch-like floor plus 1 ns per FLOP and per byte, so every op has
# a distinct, positive time (no zero divides) and the efficiencies vary across rows.
_FLOOR_S = 1e-6
_PER_UNIT_S = 1e-9


def _model(n_modules: int) -> nn.Sequential:
    layers: List[nn.Module] = []
    for _ in range(n_modules // 2):
        layers += [nn.Linear(32, 32), nn.ReLU()]
    return nn.Sequential(*layers)


def synthetic_timings(costs) -> Tuple[list, list]:
    """One OpTiming per counted op call and one ModuleTiming per (module, phase) of ``costs``.

    Times are made up (see ``_FLOOR_S``); a module's time is the sum of the ops in its scope,
    its self time the sum of the ops directly in it.
    """
    from torch_roofline.records import ModuleTiming, OpTiming

    ops, incl, self_ = [], defaultdict(float), defaultdict(float)
    for i, c in enumerate(costs.ops):
        t = _FLOOR_S + _PER_UNIT_S * (c.flops + c.bytes_read + c.bytes_written)
        ops.append(OpTiming(op=c.op, module=c.module, scope=c.scope, phase=c.phase, time_s=t, cpu_time_s=t, index=i))
        for name in set(c.scope) | {c.module}:
            incl[(name, c.phase)] += t
        self_[(c.module, c.phase)] += t
    mods = [
        ModuleTiming(name=name, phase=phase, calls=1, time_s=t, self_time_s=self_.get((name, phase), 0.0))
        for (name, phase), t in incl.items()
    ]
    return ops, mods


def _best_of(fns: Dict[str, Callable[[], object]], rounds: int) -> Dict[str, List[float]]:
    times: Dict[str, List[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return times


def bench_size(n_modules: int, rounds: int, device, tmp: str) -> List[str]:
    """Rows of the table for one model size."""
    from torch_roofline.report.build import analyse
    from torch_roofline.count import count
    from torch_roofline.devices.placement import device_info, device_roofs

    model = _model(n_modules)
    x = torch.randn(4, 32)
    costs = count(model, x)  # also the warm-up: the first count in a process pays imports
    roofs, info = device_roofs(device, costs.ops), device_info(device)
    op_t, mod_t = synthetic_timings(costs)
    n_rows = len(costs.modules)
    state: Dict[str, object] = {}

    def predicted() -> None:
        analyse(costs.ops, (), (), costs.modules, roofs, device=info, predicted=True)

    def timed() -> None:
        state["report"] = analyse(costs.ops, op_t, mod_t, costs.modules, roofs, device=info)

    def table() -> None:
        state["report"].table()

    def to_json() -> None:
        state["report"].to_json(os.path.join(tmp, "report.json"))

    def plot() -> None:
        import matplotlib.pyplot as plt

        fig = state["report"].plot(os.path.join(tmp, "roofline.png"))
        plt.close(fig)

    fns = {
        "count() (forward)": lambda: count(model, x),
        "analyse (predicted)": predicted,
        "analyse (timed)": timed,
        "table()": table,
        "to_json()": to_json,
        "plot()": plot,
    }
    times = _best_of(fns, rounds)
    best = {k: min(v) for k, v in times.items()}
    med = {k: statistics.median(v) for k, v in times.items()}
    size_kb = os.path.getsize(os.path.join(tmp, "report.json")) / 1e3
    lines = [
        f"\n{n_modules} leaf modules ({n_rows} with the root), {len(costs.ops)} op calls; "
        f"{rounds} rounds (best-of; median alongside)"
    ]
    lines.append(f"  {'stage':<22} {'best (ms)':>10} {'median':>10}")
    for k in fns:
        lines.append(f"  {k:<22} {best[k] * 1e3:10.1f} {med[k] * 1e3:10.1f}")
    total = best["analyse (timed)"] + best["table()"] + best["to_json()"]
    lines.append(f"  analyse + table + to_json: {total * 1e3:.0f} ms ({total / n_rows * 1e6:.0f} µs per module); JSON {size_kb:.0f} kB")
    return lines


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="1,000 modules, 2 rounds")
    p.add_argument("--modules", type=int, nargs="+", default=None, help="leaf module counts (default 1000 4000)")
    p.add_argument("--rounds", type=int, default=None, help="rounds (default 3, quick 2)")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rounds = args.rounds or (2 if args.quick else 3)
    sizes: Sequence[int] = args.modules or ([1000] if args.quick else [1000, 4000])

    import matplotlib

    matplotlib.use("Agg")
    from torch_roofline import devices

    device = devices.get("h100-sxm")  # a fixed catalog device: no measurement, same roofs everywhere
    print("report_scale: report generation for a synthetic many-module model")
    for line in machine_lines(torch.get_num_threads()):
        print("  " + line)
    print(f"  roofs: {device.name} ({device.source}); timings synthetic")
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            print("\n".join(bench_size(n, rounds, device, tmp)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
