"""Counting overhead over a plain forward, next to torch's FlopCounterMode and fvcore (issue 2).

For each model (torchvision resnet50 and mobilenet_v3_small, random weights, CPU, batch 8,
eval mode, ``torch.no_grad()``) four variants run interleaved, round after round, so that
the machine's noise hits them alike:

* ``forward``: the plain forward, the baseline;
* ``torch_roofline.count``: our dispatch-mode counter (FLOPs, MACs, bytes read and written,
  per module and op) around the same forward;
* ``FlopCounterMode``: ``torch.utils.flop_counter.FlopCounterMode(display=False)`` (FLOPs);
* ``fvcore``: ``fvcore.nn.FlopCountAnalysis(model, x).total()`` (MACs, via a JIT trace).

Every counter runs the real forward (no meta device), so "time / forward" is the counter's
cost as a multiple of the forward it counts. The figures are the best (minimum) over the
rounds, the median printed alongside: on a shared machine noise only adds time. The
ours/FlopCounterMode ratio is also given as the median of per-round ratios ("paired"): the
two calls of one round run moments apart, so slow drifts of the machine cancel out of it.
The order of the variants rotates from round to round.
``--threads`` defaults to 1: with 2 OpenMP threads on a 2-core machine that other jobs share,
one descheduled thread stalls the other and forward times swing by 10x. Nothing is asserted: the numbers are for people.

Run::

    python benchmarks/count_overhead.py            # 10 rounds, about 2 minutes on 2 cores
    python benchmarks/count_overhead.py --quick    # 3 rounds, about a minute
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import warnings
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

__all__ = ["main"]

BATCH = 8


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_lines(threads: int) -> List[str]:
    """The machine the figures were taken on: CPU model, torch version, threads."""
    return [
        f"cpu: {_cpu_model()} ({os.cpu_count()} logical cores)",
        f"python {platform.python_version()}, torch {torch.__version__}, torch threads: {threads}",
    ]


def _time_once(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def interleaved(variants: Dict[str, Callable[[], object]], rounds: int) -> Dict[str, List[float]]:
    """Seconds per call of every variant, one call of each per round (after one warm-up round).

    The order rotates from round to round, so no variant always runs first (or always right
    after a particular other one).
    """
    for fn in variants.values():
        fn()
    names = list(variants)
    times: Dict[str, List[float]] = {name: [] for name in variants}
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(_time_once(variants[name]))
    return times


def paired_ratio(a: Sequence[float], b: Sequence[float]) -> float:
    """Median over rounds of ``a[i] / b[i]``: each ratio compares two calls made moments
    apart, so slow drifts of a shared machine cancel out of it."""
    return statistics.median(x / y for x, y in zip(a, b))


def _variants(model: torch.nn.Module, x: torch.Tensor) -> Tuple[Dict[str, Callable[[], object]], Dict[str, str]]:
    from torch.utils.flop_counter import FlopCounterMode

    from torch_roofline.count import count

    counted: Dict[str, str] = {}

    def forward() -> object:
        with torch.no_grad():
            return model(x)

    def ours() -> object:
        with torch.no_grad():
            r = count(model, x)
        t = r.total
        counted["torch_roofline.count"] = (
            f"{t.flops / 1e9:.3f} GFLOP, {t.macs / 1e9:.3f} GMAC, {t.bytes / 1e6:.1f} MB (op model)"
        )
        return r

    def flop_counter() -> object:
        mode = FlopCounterMode(display=False)
        with torch.no_grad(), mode:
            model(x)
        counted["FlopCounterMode"] = f"{mode.get_total_flops() / 1e9:.3f} GFLOP"
        return mode

    variants = {"forward": forward, "torch_roofline.count": ours, "FlopCounterMode": flop_counter}
    try:
        from fvcore.nn import FlopCountAnalysis
    except ImportError:
        counted["fvcore"] = "not installed (pip install fvcore)"
        return variants, counted

    def fvcore() -> object:
        with torch.no_grad():
            a = FlopCountAnalysis(model, x)
            a.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            total = a.total()
        counted["fvcore"] = f"{total / 1e9:.3f} GMAC (fvcore calls MACs 'flops')"
        return total

    variants["fvcore"] = fvcore
    return variants, counted


def _fmt_ms(s: Optional[float]) -> str:
    return "-" if s is None else f"{s * 1e3:9.1f}"


def bench_model(name: str, rounds: int) -> List[str]:
    """Rows of the table for one torchvision model."""
    import torchvision

    torch.manual_seed(0)
    model = getattr(torchvision.models, name)().eval()
    x = torch.randn(BATCH, 3, 224, 224)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fvcore's JIT trace and torch.jit deprecation chatter
        variants, counted = _variants(model, x)
        times = interleaved(variants, rounds)
    # Best-of is the figure: on a shared machine noise only ever adds time.
    best = {k: min(v) for k, v in times.items()}
    med = {k: statistics.median(v) for k, v in times.items()}
    base = best["forward"]
    lines = [f"\n{name}, batch {BATCH}, CPU, {rounds} rounds (best-of; median alongside)"]
    lines.append(f"  {'variant':<22} {'best (ms)':>10} {'median':>10} {'x forward':>10}  counted")
    for k in variants:
        ratio = best[k] / base
        lines.append(
            f"  {k:<22} {_fmt_ms(best[k]):>10} {_fmt_ms(med[k]):>10} {ratio:10.2f}  {counted.get(k, '')}"
        )
    ours, fcm = best["torch_roofline.count"], best["FlopCounterMode"]
    # Overhead = counter time minus the forward it wraps; the ratio of overheads is the
    # sharper comparison when the forward dominates.
    over_ours, over_fcm = ours - base, fcm - base
    paired = paired_ratio(times["torch_roofline.count"], times["FlopCounterMode"])
    lines.append(
        f"  ours / FlopCounterMode (total time): best-of {ours / fcm:.2f}, paired median {paired:.2f}"
        "  (target <= 1.00, while also counting bytes)"
    )
    lines.append(
        f"  overhead over forward: ours {over_ours * 1e3:+.1f} ms, FlopCounterMode {over_fcm * 1e3:+.1f} ms"
        + (f", fvcore {(best['fvcore'] - base) * 1e3:+.1f} ms" if "fvcore" in best else "")
    )
    return lines


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="3 rounds (~1 minute)")
    p.add_argument("--rounds", type=int, default=None, help="rounds per variant (default 10, quick 3)")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    p.add_argument("--models", default="resnet50,mobilenet_v3_small",
                   help="comma-separated torchvision model names (default: resnet50,mobilenet_v3_small)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rounds = args.rounds or (3 if args.quick else 10)
    models = [m for m in args.models.split(",") if m]
    print("count_overhead: counting a forward vs the plain forward")
    for line in machine_lines(torch.get_num_threads()):
        print("  " + line)
    for name in models:
        print("\n".join(bench_model(name, rounds)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
