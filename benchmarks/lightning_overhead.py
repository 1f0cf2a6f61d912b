"""Overhead of the Roofline callback: ``fit`` wall time with and without it, side by side.

200 optimizer steps of a small convnet on the CPU, default schedule (wait 2, warmup 1,
active 2, once). The runs alternate (without, with, without, with, ...) so that drift on a
shared machine hits both alike; the ratio of the medians is printed (target <= 1.02).
The callback's cost is a fixed amount per fit (profiler start-up, the report: replay on
fake tensors, roofs, files), so the ratio shrinks as training gets longer.

Usage::

    python benchmarks/lightning_overhead.py [--steps 200] [--repeats 3] [--roof auto]
"""

from __future__ import annotations

import argparse
import os
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


class SmallConvNet(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(32 * 8 * 8, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


def fit_seconds(steps: int, callback: bool, roof: str, root: str) -> float:
    torch.manual_seed(0)
    ds = torch.utils.data.TensorDataset(torch.randn(512, 3, 32, 32), torch.randint(0, 10, (512,)))
    trainer = L.Trainer(
        max_steps=steps, accelerator="cpu", devices=1, logger=False, default_root_dir=root,
        callbacks=[Roofline(roof=roof)] if callback else [], enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False,
    )
    loader = torch.utils.data.DataLoader(ds, batch_size=32)
    start = time.perf_counter()
    trainer.fit(SmallConvNet(), loader)
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--roof", default="auto", help="roofs for the report ('auto' measures CPU bandwidth once)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: steadier on shared machines)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    import logging

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("torch_roofline").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as root:
        fit_seconds(5, True, args.roof, root)  # import, thread-pool and roof-cache warm-up for both
        plain, profiled = [], []
        for _ in range(args.repeats):
            plain.append(fit_seconds(args.steps, False, args.roof, root))
            profiled.append(fit_seconds(args.steps, True, args.roof, root))
    a, b = statistics.median(plain), statistics.median(profiled)
    print(f"fit, {args.steps} steps, small convnet, CPU, median of {args.repeats}")
    print(f"  without Roofline: {a:.3f} s   {['%.3f' % t for t in plain]}")
    print(f"  with Roofline:    {b:.3f} s   {['%.3f' % t for t in profiled]}")
    print(f"  ratio: {b / a:.3f}  (target <= 1.02; extra {b - a:+.3f} s per fit)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
