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


def _onednn_linear(n: int):
    """``Linear(n, n)`` through oneDNN (``torch.utils.mkldnn``), the GEMM library that reaches
    the measured roof on this project's CPU, and its prediction twin (the same GEMM as a plain
    ``nn.Linear``: oneDNN's op has no meta kernel to predict it from)."""
    import warnings

    from torch.utils import mkldnn as mkldnn_utils

    linear = nn.Linear(n, n, bias=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit deprecation inside torch.utils.mkldnn
        return mkldnn_utils.to_mkldnn(linear), linear


def cases(quick: bool):
    """(label, timed model, its inputs, timed op, predicted model, its inputs, predicted op)."""
    gemms = (512, 1024, 2048) if quick else (512, 1024, 1536, 2048, 3072)
    for n in gemms:
        a, b = torch.randn(n, n), torch.randn(n, n)
        yield f"gemm {n}^3", MatMul(), (a, b), "aten.mm", MatMul(), (a, b), "aten.mm"
    onednn, twin = _onednn_linear(2048)
    x = torch.randn(2048, 2048)
    yield "gemm 2048^3 (oneDNN linear)", onednn, (x.to_mkldnn(),), "aten.mkldnn_linear", twin, (x,), "aten.mm"
    convs = [(8, 64, 64, 56), (8, 128, 128, 28), (8, 256, 256, 14)] + ([] if quick else [(8, 512, 512, 7), (8, 3, 64, 112)])
    for b, cin, cout, hw in convs:
        conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False).eval()
        x = torch.randn(b, cin, hw, hw)
        yield f"conv {cin}->{cout} {hw}x{hw} b{b}", conv, (x,), "aten.convolution", conv, (x,), "aten.convolution"


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
    print(f"{'case':32s} {'measured ms':>12s} {'predicted ms':>13s} {'measured/predicted':>19s} {'efficiency':>11s}")
    for label, model, inputs, op, twin, twin_inputs, twin_op in cases(args.quick):
        predicted = predict(twin, twin_inputs, on=[dev])[dev.id]
        pred_s = sum(o.roofline_time_s for o in predicted.ops if o.op == twin_op)
        prof = RooflineProfiler(model, roof=dev, schedule=schedule(wait=0, warmup=1, active=args.steps))
        with torch.no_grad(), prof:
            for _ in range(args.steps + 1):
                model(*inputs)
                prof.step()
        meas_s = sum(o.time_s for o in prof.report().ops if o.op == op)
        ratios.append(meas_s / pred_s)
        print(f"{label:32s} {meas_s * 1e3:12.3f} {pred_s * 1e3:13.3f} {meas_s / pred_s:19.2f} "
              f"{pred_s / meas_s:10.0%}")
    print(f"\nmeasured/predicted: min {min(ratios):.2f}, median {statistics.median(ratios):.2f}, "
          f"max {max(ratios):.2f}; below 1 (bound violated): {sum(r < 1 for r in ratios)} of {len(ratios)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
