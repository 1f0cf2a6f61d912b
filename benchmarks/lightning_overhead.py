"""Overhead of the Roofline callback: ``fit`` wall time with and without it, side by side.

The model is what a user would train on CIFAR-10 on a laptop CPU: a 4-conv network
(conv3x3 32 - BN - ReLU, conv3x3 32 - BN - ReLU, maxpool, conv3x3 64 - BN - ReLU,
conv3x3 64 - BN - ReLU, maxpool, global average pool, linear 64 -> 10; 66k parameters),
batch 64 of 3x32x32 random images, SGD with momentum, 200 optimizer steps, one torch
thread. The callback runs with its default schedule (wait 2, warmup 1, active 2, once),
a catalog roof (no bandwidth benchmark inside the timed fit) and no logger, so it writes
report.json and roofline.png.

Each fit runs in a fresh process (imports and one 5-step plain fit untimed), so the
profiled fit pays what it costs a user once per process: matplotlib's first figure,
torch_roofline's imports, the fake-tensor machinery. The runs alternate (without, with,
without, with, ...) so that drift on a shared machine hits both alike; the ratio of the
medians is printed (target <= 1.02). The
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
import subprocess
import sys
import tempfile
import time
import warnings
from typing import Optional

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


_HOOKS = ("setup", "on_train_batch_start", "on_train_batch_end", "on_train_end", "teardown")


def _timed(callback: Roofline, spent: list) -> Roofline:
    """Accumulate the seconds the training thread spends inside the callback's hooks."""
    for name in _HOOKS:
        hook = getattr(callback, name)

        def timed(*args, _hook=hook, **kwargs):
            start = time.perf_counter()
            try:
                return _hook(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - start

        setattr(callback, name, timed)
    return callback


def fit_seconds(steps: int, callback: bool, batch: int, root: str, spent: Optional[list] = None) -> float:
    """Wall time of one ``trainer.fit`` (seconds), data and model built outside the clock.

    ``spent``: a one-element list that receives the seconds spent inside the callback's hooks.
    """
    torch.manual_seed(0)
    ds = torch.utils.data.TensorDataset(torch.randn(20 * batch, 3, 32, 32), torch.randint(0, 10, (20 * batch,)))
    trainer = L.Trainer(
        max_steps=steps, accelerator="cpu", devices=1, logger=False, default_root_dir=root,
        callbacks=[_timed(Roofline(roof=ROOF), spent if spent is not None else [0.0])] if callback else [],
        enable_progress_bar=False,
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


def _one(kind: str, args: argparse.Namespace) -> str:
    """A fresh process's fit: the imports and one short plain fit untimed, then the timed fit."""
    with tempfile.TemporaryDirectory() as root:
        fit_seconds(5, False, args.batch, root)  # imports, thread pools, allocator: paid by both kinds
        if args.profile:
            print(_profile(args.steps, args.batch, root))
            return ""
        spent = [0.0]
        return f"{fit_seconds(args.steps, kind == 'with', args.batch, root, spent)} {spent[0]}"


def _spawn(kind: str, args: argparse.Namespace) -> tuple:
    command = [sys.executable, os.path.abspath(__file__), "--one", kind, "--steps", str(args.steps),
               "--batch", str(args.batch), "--threads", str(args.threads)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MPLBACKEND": "Agg"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    fit_s, hooks_s = done.stdout.strip().splitlines()[-1].split()
    return float(fit_s), float(hooks_s)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: steadier on shared machines)")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of one profiled fit instead")
    parser.add_argument("--one", choices=("plain", "with"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    if args.one or args.profile:
        print(_one(args.one or "with", args))
        return 0
    plain, profiled, hooks = [], [], []
    for _ in range(args.repeats):  # alternate, each fit in a fresh process
        plain.append(_spawn("plain", args)[0])
        fit_s, hooks_s = _spawn("with", args)
        profiled.append(fit_s)
        hooks.append(hooks_s)
    a, b = statistics.median(plain), statistics.median(profiled)
    print(f"fit, {args.steps} steps, Cifar4Conv (4 conv + BN, 66k params), batch {args.batch} of 3x32x32, "
          f"CPU, {args.threads} torch thread(s); each fit in a fresh process; median of {args.repeats} "
          "alternating repeats")
    print(f"  without Roofline: {a:.3f} s   {['%.3f' % t for t in plain]}")
    print(f"  with Roofline:    {b:.3f} s   {['%.3f' % t for t in profiled]}")
    print(f"  ratio: {b / a:.4f}  (target <= 1.02; extra {b - a:+.3f} s per fit, "
          f"{100 * (b - a) / a:+.2f}%)")
    h = statistics.median(hooks)
    print(f"  training thread inside the callback's hooks: {h:.3f} s = {100 * h / a:.2f}% of the plain fit "
          f"{['%.3f' % t for t in hooks]}  (excludes the profiler's cost inside the 3 profiled steps and the "
          "background writer's competition for the CPU; both are in the ratio above)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
