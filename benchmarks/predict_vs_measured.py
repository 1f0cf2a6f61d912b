"""Is the prediction a bound? Large GEMMs and convolutions measured on this CPU vs predicted.

For each case the roofline time is predicted with :func:`torch_roofline.predict` on this
CPU's *measured* roofs (``devices.measure``: best-of GEMM rate, STREAM bandwidth), and the
op is timed with :class:`RooflineProfiler` (one warm-up step, then the median-free mean
of ``--steps`` profiled steps). A roofline time is a lower bound, so measured / predicted
should be >= 1; the distribution is printed (a ratio below 1 means the roof is too low,
e.g. data served from cache instead of DRAM, or noise on a shared machine).

Usage::

    python benchmarks/predict_vs_measured.py [--quick] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from torch_roofline import RooflineProfiler, devices, predict, schedule  # noqa: E402


class MatMul(nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a @ b


def cases(quick: bool):
    gemms = (512, 1024, 2048) if quick else (512, 1024, 1536, 2048, 3072)
    for n in gemms:
        yield f"gemm {n}^3", MatMul(), (torch.randn(n, n), torch.randn(n, n)), "aten.mm"
    convs = [(8, 64, 64, 56), (8, 128, 128, 28), (8, 256, 256, 14)] + ([] if quick else [(8, 512, 512, 7), (8, 3, 64, 112)])
    for b, cin, cout, hw in convs:
        conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False).eval()
        yield f"conv {cin}->{cout} {hw}x{hw} b{b}", conv, (torch.randn(b, cin, hw, hw),), "aten.convolution"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--steps", "--rounds", dest="steps", type=int, default=3,
                   help="profiled steps per case (--rounds: the same, for run_all's shared arguments)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = devices.measure(device="cpu", dtypes=("fp32",))  # the full sweep: quick mode is for tests, not roofs
    print(f"roofs: {dev.name}: fp32 {dev.peak_flops('fp32') / 1e9:.1f} GFLOP/s (measured matrix roof: best of the GEMM libraries and the conv probe), "
          f"{dev.memory_bandwidth / 1e9:.1f} GB/s (STREAM); torch {torch.__version__}, {torch.get_num_threads()} threads")
    ratios = []
    print(f"{'case':32s} {'measured ms':>12s} {'predicted ms':>13s} {'measured/predicted':>19s}")
    for label, model, inputs, op in cases(args.quick):
        predicted = predict(model, inputs, on=[dev])[dev.id]
        pred_s = sum(o.roofline_time_s for o in predicted.ops if o.op == op)
        prof = RooflineProfiler(model, roof=dev, schedule=schedule(wait=0, warmup=1, active=args.steps))
        with torch.no_grad(), prof:
            for _ in range(args.steps + 1):
                model(*inputs)
                prof.step()
        meas_s = sum(o.time_s for o in prof.report().ops if o.op == op)
        ratios.append(meas_s / pred_s)
        print(f"{label:32s} {meas_s * 1e3:12.3f} {pred_s * 1e3:13.3f} {meas_s / pred_s:19.2f}")
    print(f"\nmeasured/predicted: min {min(ratios):.2f}, median {statistics.median(ratios):.2f}, "
          f"max {max(ratios):.2f}; below 1 (bound violated): {sum(r < 1 for r in ratios)} of {len(ratios)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
