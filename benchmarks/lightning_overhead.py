"""Overhead of the Roofline callback: ``fit`` wall time with and without it, side by side.

The model is what a user would train on CIFAR-10 on a laptop CPU: a 4-conv network
(conv3x3 32 - BN - ReLU, conv3x3 32 - BN - ReLU, maxpool, conv3x3 64 - BN - ReLU,
conv3x3 64 - BN - ReLU, maxpool, global average pool, linear 64 -> 10; 66k parameters),
batch 64 of 3x32x32 random images, SGD with momentum, 200 optimizer steps, one torch
thread. The callback runs with its default schedule (wait 2, warmup 1, active 2, once),
a catalog roof (no bandwidth benchmark inside the timed fit) and no logger, so it writes
report.json and roofline.png.

The runs alternate (without, with, without, with, ...) after one untimed warm-up fit of
each kind, so drift on a shared machine hits both alike and neither pays the process's
first-import costs alone; the ratio of the medians is printed (target <= 1.02). The
callback's cost is a fixed amount per profiling window (profiler start-up and trace
export, the replay on fake tensors, the analysis, the files), so the ratio shrinks as
training gets longer. ``--profile`` prints where one profiled fit spends its time
(cProfile, cumulative).

Usage::

    python benchmarks/lightning_overhead.py [--steps 200] [--repeats 3] [--batch 64]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import logging
import os
import pstats
import statistics
import sys
import tempfile
import time
import warnings

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import lightning.pytorch as L  # noqa: E402

from torch_roofline.lightning import Roofline  # noqa: E402

ROOF = "i9-10980xe"  # a catalog CPU: the report's roofs without a bandwidth benchmark


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


class Cifar4Conv(L.LightningModule):
    """CIFAR-style 4-conv net: 32x32 -> 16x16 -> 8x8 -> global pool -> 10 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            _block(3, 32), _block(32, 32), nn.MaxPool2d(2),
            _block(32, 64), _block(64, 64), nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


def fit_seconds(steps: int, callback: bool, batch: int, root: str) -> float:
    """Wall time of one ``trainer.fit`` (seconds), data and model built outside the clock."""
    torch.manual_seed(0)
    ds = torch.utils.data.TensorDataset(torch.randn(20 * batch, 3, 32, 32), torch.randint(0, 10, (20 * batch,)))
    trainer = L.Trainer(
        max_steps=steps, accelerator="cpu", devices=1, logger=False, default_root_dir=root,
        callbacks=[Roofline(roof=ROOF)] if callback else [], enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False,
    )
    loader = torch.utils.data.DataLoader(ds, batch_size=batch)
    model = Cifar4Conv()
    start = time.perf_counter()
    trainer.fit(model, loader)
    return time.perf_counter() - start


def _profile(steps: int, batch: int, root: str) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    fit_seconds(steps, True, batch, root)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(r"torch_roofline|matplotlib|savefig", 40)
    return out.getvalue()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: steadier on shared machines)")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of one profiled fit instead")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as root:
        fit_seconds(5, False, args.batch, root)  # imports, thread pools, allocator: for both kinds
        if args.profile:
            print(_profile(args.steps, args.batch, root))
            return 0
        plain, profiled = [], []
        for _ in range(args.repeats):
            plain.append(fit_seconds(args.steps, False, args.batch, root))
            profiled.append(fit_seconds(args.steps, True, args.batch, root))
    a, b = statistics.median(plain), statistics.median(profiled)
    print(f"fit, {args.steps} steps, Cifar4Conv (4 conv + BN, 66k params), batch {args.batch} of 3x32x32, "
          f"CPU, {args.threads} torch thread(s), median of {args.repeats} alternating repeats")
    print(f"  without Roofline: {a:.3f} s   {['%.3f' % t for t in plain]}")
    print(f"  with Roofline:    {b:.3f} s   {['%.3f' % t for t in profiled]}")
    print(f"  ratio: {b / a:.4f}  (target <= 1.02; extra {b - a:+.3f} s per fit, "
          f"{100 * (b - a) / a:+.2f}%)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
