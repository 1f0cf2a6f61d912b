"""What counting what ran costs after the block, at scale (issue 12, point 6).

The step: a 4,001-module model (``nn.Sequential`` of 2,000 x ``Linear(64, 64)`` + ``ReLU``),
one training step (forward, ``.sum().backward()``, SGD), batch 8, one CPU thread.

Side by side in one run:

* ``torch.profiler`` with the same options (``record_shapes``, ``profile_memory``): the time
  to leave its block plus its ``export_chrome_trace`` (what it takes to hand over a trace);
* ``RooflineProfiler``: the time to leave its block (kineto's stop, the export, reading the
  trace back); target <= 2 x the line above;
* ``report()``: attribution, counting each distinct call signature once, the analysis;
  target <= 2 s;
* ``from_trace`` of the trace saved with recorded shapes (no model): target <= 3 s for ~50 MB.

Times are wall seconds, best of ``--rounds`` (CPU seconds alongside: on a shared machine
the process's own CPU time is the steadier figure). Nothing is asserted. Run::

    python benchmarks/count_what_ran.py            # 3 rounds
    python benchmarks/count_what_ran.py --quick    # 1 round, 500 layer pairs
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from typing import Callable, List, Optional, Tuple

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from count_overhead import machine_lines  # noqa: E402

__all__ = ["main"]


def _timed(fn: Callable[[], object]) -> Tuple[float, float, object]:
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - w, time.process_time() - c, out


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--pairs", type=int, default=2000, help="Linear+ReLU pairs (default 2000: 4,001 modules)")
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    rounds, pairs = (1, 500) if args.quick else (args.rounds, args.pairs)
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    from torch_roofline.devices import Device

    flat = Device(name="scale-flat", peak_flops={"fp32": 1e12}, bandwidth=1e11)
    layers: List[nn.Module] = []
    for _ in range(pairs):
        layers += [nn.Linear(64, 64), nn.ReLU()]
    model = nn.Sequential(*layers)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x = torch.randn(8, 64)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        model(x).sum().backward()
        opt.step()

    print("\n".join(machine_lines(torch.get_num_threads())))
    print(f"{len(list(model.modules())):,} modules, one training step, batch 8, 1 thread, best of {rounds}")
    step()
    plain = min(_timed(step)[0] for _ in range(3))
    with tempfile.TemporaryDirectory(prefix="roofline-scale-") as folder:
        return _measure(model, opt, x, flat, rounds, plain, os.path.join(folder, "step.json"))


def _measure(model, opt, x, flat, rounds: int, plain: float, trace_path: str) -> int:
    """Time the profiler, the report and from_trace on ``model``; the traces go to ``trace_path``'s folder."""
    from torch_roofline import RooflineProfiler, from_trace
    from torch_roofline.timing.quiet import quiet_native_stderr

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        model(x).sum().backward()
        opt.step()

    best = {}
    for r in range(rounds):
        prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True,
                                      profile_memory=True)
        with quiet_native_stderr():
            prof.__enter__()
            step()
            w1, c1, _ = _timed(lambda: prof.__exit__(None, None, None))
            w2, c2, _ = _timed(lambda: prof.export_chrome_trace(trace_path))
        ours = RooflineProfiler(model, roof=flat)
        ours.__enter__()
        step()
        w3, c3, _ = _timed(lambda: ours.__exit__(None, None, None))
        w4, c4, report = _timed(ours.report)
        if r == 0:
            ours_path = trace_path.replace(".json", "-ours.json")
            with RooflineProfiler(model, roof=flat, export_trace=ours_path):
                step()
        w5, c5, _ = _timed(lambda: from_trace(ours_path, roof=flat))
        for key, value in (("kineto", (w1 + w2, c1 + c2)), ("ours_exit", (w3, c3)), ("report", (w4, c4)),
                           ("from_trace", (w5, c5))):
            best[key] = min(best.get(key, value), value)
    size_mb = os.path.getsize(ours_path) / 1e6
    print(f"plain step                              {plain:8.3f} s")
    print(f"torch.profiler: leave block + export    {best['kineto'][0]:8.3f} s   (CPU {best['kineto'][1]:.3f} s)")
    print(f"RooflineProfiler: leave block           {best['ours_exit'][0]:8.3f} s   (CPU {best['ours_exit'][1]:.3f} s)"
          f"   ratio {best['ours_exit'][0] / best['kineto'][0]:.2f} (target <= 2)")
    print(f"report()                                {best['report'][0]:8.3f} s   (CPU {best['report'][1]:.3f} s)"
          f"   (target <= 2 s)")
    print(f"from_trace, {size_mb:5.1f} MB with shapes        {best['from_trace'][0]:8.3f} s   "
          f"(CPU {best['from_trace'][1]:.3f} s)   (target <= 3 s for 50 MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
