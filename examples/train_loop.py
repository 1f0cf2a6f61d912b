"""A plain PyTorch training loop under RooflineProfiler, in the stepped form.

A small convnet trains on random data with SGD. The profiler follows a torch.profiler
schedule: step 0 is skipped (``wait=1``: first-call costs), step 1 runs the profiler
without keeping it (``warmup=1``), steps 2 and 3 are recorded (``active=2``) and averaged.
Call ``prof.step()`` once at the end of every iteration; the loop may run longer than the
schedule (later steps are not recorded).

Prints the report table and writes ``out/report.json`` and ``out/roofline.png``.

Run::

    python examples/train_loop.py          # CPU here; CUDA if available
"""

from __future__ import annotations

import os
import sys

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from torch_roofline.profiler import RooflineProfiler, schedule  # noqa: E402

OUT = "out"
STEPS = 6
BATCH = 16


class SmallNet(nn.Module):
    """Three conv blocks and a linear head, for 3x32x32 images and 10 classes."""

    def __init__(self) -> None:
        super().__init__()

        def block(c_in: int, c_out: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2)
            )

        self.features = nn.Sequential(block(3, 32), block(32, 64), block(64, 128))
        self.head = nn.Linear(128 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


def main() -> int:
    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = SmallNet().to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    # The loss the step really uses, so the counted backward matches the timed one.
    labels = {}

    def loss_fn(logits: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, labels["y"])

    with RooflineProfiler(model, schedule=schedule(wait=1, warmup=1, active=2), loss_fn=loss_fn) as prof:
        for step in range(STEPS):
            x = torch.randn(BATCH, 3, 32, 32, device=device)
            labels["y"] = torch.randint(0, 10, (BATCH,), device=device)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x))
            loss.backward()
            opt.step()
            prof.step()
            print(f"step {step}: loss {loss.item():.3f}")

    report = prof.report()
    print()
    print(report.table(sort="tree"))
    os.makedirs(OUT, exist_ok=True)
    report.to_json(os.path.join(OUT, "report.json"))
    report.plot(os.path.join(OUT, "roofline.png"))
    print(f"\nwrote {OUT}/report.json and {OUT}/roofline.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
