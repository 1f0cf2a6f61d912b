"""The same model eager and under torch.compile, side by side: what fusion bought.

Profiles one training step of a small MLP block (Linear-GELU-Linear, residual, LayerNorm)
eager, then compiled (Inductor, CPU), prints both reports' per-phase time and traffic and the
compiled model's fused kernels (the module whose ops each fused, their bytes, FLOPs where torch
says which ops they fused, and the reason where not), and writes both as TensorBoard runs ``eager`` and ``compiled``: open
TensorBoard's Roofline tab, pick run ``compiled`` and tick "Compare with baseline" with run
``eager`` to see them on one roofline.

Run::

    python examples/compiled_vs_eager.py                 # batch 64, writes ./roofline_compiled
    python examples/compiled_vs_eager.py --batch 8 --logdir /tmp/tb
    tensorboard --logdir ./roofline_compiled

Random weights, generated data; the first compile takes ~10-30 s.
"""

from __future__ import annotations

import argparse
import os

import torch
from torch import nn

from torch_roofline import RooflineProfiler
from torch_roofline.timing.compiled import is_fused_kernel


class Block(nn.Module):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width)
        self.norm = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.fc2(self.act(self.fc1(x))))


def profile(model: nn.Module, x: torch.Tensor):
    """One training step (forward, backward) of ``model`` profiled, after two warm-up steps.
    The warm-up runs under the profiler too: a compiled model compiles at its first call, and
    compiled while the profiler records, its backward kernels are counted and each kernel is
    placed under the module whose ops it fused (docs/counting.md). The report is the last
    block's."""
    prof = RooflineProfiler(model)
    for _ in range(3):
        with prof:
            model(x).sum().backward()
    return prof.report()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--logdir", default="roofline_compiled")
    args = parser.parse_args()

    import torch._inductor.config as inductor_config

    # What the profiler needs from Inductor, set before the first compiled call: a profiler
    # event per fused kernel, and which ops each kernel fused.
    inductor_config.cpp.enable_kernel_profile = True
    inductor_config.trace.provenance_tracking_level = 1

    torch.manual_seed(0)
    eager = Block(args.width, 4 * args.width)
    compiled = torch.compile(Block(args.width, 4 * args.width))
    x = torch.randn(args.batch, args.width)
    reports = {"eager": profile(eager, x), "compiled": profile(compiled, x)}

    print(f"{'':10s} {'phase':9s} {'time (ms)':>10s} {'traffic (MB)':>13s} {'op rows':>8s}")
    for name, report in reports.items():
        for row in report.modules:
            if row.name == "" and row.phase in ("forward", "backward"):
                rows = sum(1 for o in report.ops if o.phase == row.phase)
                traffic = (row.bytes_read + row.bytes_written) / 1e6
                print(f"{name:10s} {row.phase:9s} {1e3 * (row.time_s or 0):10.3f} {traffic:13.3f} {rows:8d}")

    print("\nfused kernels of the compiled step (under the module whose ops each fused; (root): the Block's own):")
    for o in reports["compiled"].ops:
        if is_fused_kernel(o.op):
            flops = f"{o.flops:,} FLOPs" if o.flops is not None else "FLOPs unknown"
            print(f"  {o.phase:9s} {o.name or '(root)':7s} {o.op:60s} {1e6 * (o.time_s or 0):8.1f} µs  "
                  f"{(o.bytes_read + o.bytes_written) / 1e3:9.1f} kB  {flops}")
    for note in reports["compiled"].notes:
        if "torch.compile" in note:
            print(f"  note: {note}")

    try:
        for name, report in reports.items():
            report.to_tensorboard(os.path.join(args.logdir, name))
    except ImportError:
        print("\n(tensorboard is not installed: no runs written)")
    else:
        print(f"\nTensorBoard runs written: {args.logdir}/eager, {args.logdir}/compiled "
              f"(tensorboard --logdir {args.logdir}; Roofline tab, compare with baseline 'eager')")


if __name__ == "__main__":
    main()
