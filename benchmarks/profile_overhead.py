"""What RooflineProfiler costs the step it measures, and how well its module times add up (issue 4).

Two steps, each run plain and profiled, interleaved round after round:

* ``resnet50 forward``: torchvision resnet50, batch 8, CPU, eval, ``torch.no_grad()``;
* ``resnet18 train step``: resnet18, batch 8, forward + cross-entropy backward + SGD step.

A profiled round builds a one-shot :class:`~torch_roofline.profiler.RooflineProfiler`
(roofs resolved once beforehand, so no bandwidth measurement lands in a timed region) and
times three things apart:

* ``step in block``: the step itself, inside ``with prof:`` (profiler ranges and events on);
* ``whole block``: ``__enter__`` + step + ``__exit__`` (which exports and parses the trace);
* ``report()``: counting the step on fake tensors and the analysis, after the block.

Figures (best-of over the rounds, median alongside):

* ``step in block / plain step``: the profiler's overhead on the step (target <= 1.10);
* ``sum of module self times / plain step``: the report's per-module self times (all
  phases) summed, against the unprofiled step; the report covers the whole step when this
  is near 1 (target within +-5%).

Nothing is asserted. Run::

    python benchmarks/profile_overhead.py            # 7 rounds, about 2 minutes on 2 cores
    python benchmarks/profile_overhead.py --quick    # 2 rounds, smaller inputs (112x112)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from typing import Callable, Dict, List, Optional

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from count_overhead import machine_lines  # noqa: E402

__all__ = ["main"]

BATCH = 8


def _forward_step(size: int):
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet50().eval()
    x = torch.randn(BATCH, 3, size, size)

    def step() -> None:
        with torch.no_grad():
            model(x)

    return model, step, None


def _train_step(size: int):
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18().train()
    x = torch.randn(BATCH, 3, size, size)
    y = torch.randint(0, 1000, (BATCH,))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def loss_fn(out: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(out, y)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x)).backward()
        opt.step()

    return model, step, loss_fn


def bench_step(label: str, model, step: Callable[[], None], loss_fn, device, rounds: int) -> List[str]:
    """Rows of the table for one step: plain and profiled, interleaved."""
    from torch_roofline.profiler import RooflineProfiler

    t: Dict[str, List[float]] = {k: [] for k in ("plain", "step in block", "whole block", "report()", "self sum")}
    step()  # warm-up: allocator growth, oneDNN primitive creation
    for r in range(rounds + 1):
        t0 = time.perf_counter()
        step()
        plain = time.perf_counter() - t0

        prof = RooflineProfiler(model, roof=device, loss_fn=loss_fn)
        t0 = time.perf_counter()
        with prof:
            t1 = time.perf_counter()
            step()
            t2 = time.perf_counter()
        t3 = time.perf_counter()
        report = prof.report()
        t4 = time.perf_counter()
        if r == 0:
            continue  # the first profiled round warms the profiler itself up
        t["plain"].append(plain)
        t["step in block"].append(t2 - t1)
        t["whole block"].append(t3 - t0)
        t["report()"].append(t4 - t3)
        t["self sum"].append(sum(m.self_time_s or 0.0 for m in report.modules if m.phase == "all"))

    best = {k: min(v) for k, v in t.items()}
    med = {k: statistics.median(v) for k, v in t.items()}
    base = best["plain"]
    lines = [f"\n{label}: {rounds} rounds (best-of; median alongside)"]
    lines.append(f"  {'':<34} {'best (ms)':>10} {'median':>10} {'x plain':>8}")
    names = {
        "plain": "plain step",
        "step in block": "profiled step (inside `with`)",
        "whole block": "whole `with` block (+stop, export)",
        "self sum": "sum of module self times (report)",
        "report()": "report() (count + analyse)",
    }
    for k in ("plain", "step in block", "whole block", "self sum", "report()"):
        lines.append(f"  {names[k]:<34} {best[k] * 1e3:10.1f} {med[k] * 1e3:10.1f} {best[k] / base:8.3f}")
    lines.append(f"  overhead: profiled / plain = {best['step in block'] / base:.3f}  (target <= 1.10)")
    dev = best["self sum"] / base - 1
    lines.append(f"  coverage: self-time sum vs plain = {dev * 100:+.1f}%  (target within +-5%)")
    # Against the profiled step itself: how much of the timed step the attribution covers,
    # free of the plain-vs-profiled noise.
    cover = statistics.median(s / b for s, b in zip(t["self sum"], t["step in block"]))
    lines.append(f"  attribution: self-time sum / profiled step (median of rounds) = {cover:.3f}")
    return lines


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="2 rounds at 112x112 inputs (~1 minute)")
    p.add_argument("--rounds", type=int, default=None, help="rounds (default 7, quick 2)")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rounds = args.rounds or (2 if args.quick else 7)
    size = 112 if args.quick else 224

    from torch_roofline import devices

    device = devices.detect()  # resolved once: no bandwidth measurement inside a timed region
    print("profile_overhead: RooflineProfiler (one-shot) vs the unprofiled step")
    for line in machine_lines(torch.get_num_threads()):
        print("  " + line)
    print(f"  roofs: {device.name} ({device.source})")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for label, build in (
            (f"resnet50 forward, batch {BATCH}, {size}x{size}, eval, no_grad", _forward_step),
            (f"resnet18 train step (fwd + bwd + SGD), batch {BATCH}, {size}x{size}", _train_step),
        ):
            model, step, loss_fn = build(size)
            print("\n".join(bench_step(label, model, step, loss_fn, device, rounds)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
