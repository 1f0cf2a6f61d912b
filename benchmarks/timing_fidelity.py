"""Does profiling change the step it measures? (issue 12, timing fidelity at small batch)

Three steps on the CPU, each timed plain and under :class:`~torch_roofline.RooflineProfiler`,
interleaved round after round so both see the same machine:

* ``resnet18 train b8``: resnet18, batch 8 (224x224), forward + cross-entropy + SGD step;
* ``efficientnet_b0 fwd b1``: batch 1, eval, ``torch.no_grad()``;
* ``mobilenet_v3_small fwd b1``: batch 1, eval, ``torch.no_grad()``.

Per round: a few plain steps, then a profiler window (``schedule(wait=0, warmup=1, active=k)``)
over the same number of steps, then a bare ``torch.profiler.profile`` window with the same
options (shapes and memory recorded) and no module ranges, to separate torch.profiler's own
cost from ours. Figures, each the median over rounds of the per-round ratio to that round's
plain median:

* ``report step / plain``: the report's measured step time (``totals.time_s``, the
  ``ProfilerStep`` spans) over the plain step: the acceptance figure (target 0.95-1.05);
* ``in-block step / plain``: the steps' wall time inside the block;
* ``torch.profiler alone / plain`` (``kineto/plain``): the same with kineto only (no ranges, no
  counting);
* ``bare/plain``: a bare ``torch.profiler.profile`` recording neither shapes nor memory: the
  least any per-op profiler built on torch.profiler costs on this step;
* ``outside ops``: the report's time outside every op, as a share of its step time, and of
  the plain step.

Nothing is asserted. Run::

    python benchmarks/timing_fidelity.py             # 9 rounds, a few minutes on 2 cores
    python benchmarks/timing_fidelity.py --quick     # 3 rounds
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
import warnings
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from count_overhead import machine_lines  # noqa: E402

__all__ = ["main"]


def _steps() -> Dict[str, Tuple[Callable[[], None], torch.nn.Module]]:
    import torchvision

    torch.manual_seed(0)
    r18 = torchvision.models.resnet18()
    opt = torch.optim.SGD(r18.parameters(), lr=1e-3)
    x8, y8 = torch.randn(8, 3, 224, 224), torch.randint(0, 1000, (8,))

    def train() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(r18(x8), y8).backward()
        opt.step()

    out = {"resnet18 train b8": (train, r18)}
    for name in ("efficientnet_b0", "mobilenet_v3_small"):
        model = getattr(torchvision.models, name)().eval()
        x1 = torch.randn(1, 3, 224, 224)

        def forward(model: torch.nn.Module = model, x1: torch.Tensor = x1) -> None:
            with torch.no_grad():
                model(x1)

        out[f"{name} fwd b1"] = (forward, model)
    return out


def _plain(step: Callable[[], None], n: int) -> List[float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return times


def _profiled(step: Callable[[], None], model: torch.nn.Module, n: int, device: object
              ) -> Tuple[List[float], float, float]:
    from torch_roofline import RooflineProfiler, schedule

    prof = RooflineProfiler(model, roof=device, schedule=schedule(wait=0, warmup=1, active=n))
    times = []
    with prof:
        for i in range(n + 1):
            t0 = time.perf_counter()
            step()
            if i:
                times.append(time.perf_counter() - t0)
            prof.step()
    t = prof.report().totals
    outside = (t.time_s - t.op_time_s) if t.time_s is not None and t.op_time_s is not None else float("nan")
    del prof  # its trace and rows: ~100,000 objects that would slow the next measurement's garbage collections
    return times, t.time_s, outside


def _kineto(step: Callable[[], None], n: int, record: bool = True) -> List[float]:
    from torch_roofline.timing.quiet import quiet_native_stderr

    times = []
    with quiet_native_stderr(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                                        record_shapes=record, profile_memory=record):
        for _ in range(n):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
    return times


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--steps", type=int, default=4, help="steps per window (default 4)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--quick", action="store_true", help="3 rounds")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rounds = 3 if args.quick else args.rounds
    warnings.simplefilter("ignore")
    from torch_roofline.devices import Device

    device = Device(name="fidelity-flat", peak_flops={"fp32": 1e12}, bandwidth=1e11)  # roofs do not matter here
    print("\n".join(machine_lines(torch.get_num_threads())))
    print(f"rounds {rounds}, {args.steps} steps per window, threads {torch.get_num_threads()}")
    header = (f"{'step':28s} {'plain (ms)':>10s} {'report/plain':>13s} {'in-block/plain':>15s} "
              f"{'kineto/plain':>13s} {'bare/plain':>11s} {'outside ops':>12s}")
    print(header)
    for name, (step, model) in _steps().items():
        for _ in range(3):
            step()  # warm-up: allocator, oneDNN plans
        ratios: Dict[str, List[float]] = {"report": [], "block": [], "kineto": [], "bare": [], "outside": []}
        plains = []
        for _ in range(rounds):
            gc.collect()
            plain = statistics.median(_plain(step, args.steps))
            gc.collect()
            times, report_step, outside = _profiled(step, model, args.steps, device)
            gc.collect()
            kineto = statistics.median(_kineto(step, args.steps))
            gc.collect()
            bare = statistics.median(_kineto(step, args.steps, record=False))
            gc.collect()
            plain = statistics.median([plain] + _plain(step, args.steps))
            plains.append(plain)
            ratios["report"].append(report_step / plain)
            ratios["block"].append(statistics.median(times) / plain)
            ratios["kineto"].append(kineto / plain)
            ratios["bare"].append(bare / plain)
            ratios["outside"].append(outside / report_step)
        med = {k: statistics.median(v) for k, v in ratios.items()}
        print(f"{name:28s} {statistics.median(plains) * 1e3:10.2f} {med['report']:13.3f} {med['block']:15.3f} "
              f"{med['kineto']:13.3f} {med['bare']:11.3f} {med['outside'] * 100:11.1f}%", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
