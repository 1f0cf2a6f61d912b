"""The seed table, reproduced: VGG16 is compute-bound and MobileNet memory-bound on a GTX 1080 Ti.

Part 1, PREDICTED (no GPU needed): each model is built and counted on the meta device
(no weights allocated, no arithmetic), batch 1, forward, under the ``"compulsory"`` memory
model (every storage moved once per step: weights and the input read once, every output
feature map written once, 4 bytes per fp32 element), and placed on the GTX 1080 Ti's
datasheet roofs from the catalog (11.34 TFLOP/s fp32, 484 GB/s: ridge 23.4 FLOP/B).
The seed's hand figures for VGG16: ~15.5 GMACs, ~600 MB, ~25 MAC/B -> compute-bound.

Part 2, MEASURED on this machine: the same two models (random weights, CPU, batch 1, eval,
``torch.no_grad()``) timed with RooflineProfiler against this machine's roofs, and the
roofline charts saved to ``out/seed_*.png``.

MobileNet here is torchvision's ``mobilenet_v2`` (width 1.0, 224x224). Its BatchNorm layers
are not folded into the convolutions: each BN output is a tensor of its own (unfused), so
its bytes count; the ReLU6 after it runs in place and adds no new tensor.

Run::

    python examples/seed_vgg_mobilenet.py              # about a minute on 2 CPU cores
    python examples/seed_vgg_mobilenet.py --predicted  # part 1 only (seconds)
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional, Tuple

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from torch_roofline import devices  # noqa: E402
from torch_roofline.report.build import analyse  # noqa: E402
from torch_roofline.count import count  # noqa: E402
from torch_roofline.devices.placement import device_info, place  # noqa: E402
from torch_roofline.profiler import RooflineProfiler  # noqa: E402

OUT = "out"
MODELS: Tuple[Tuple[str, str], ...] = (("vgg16", "VGG16"), ("mobilenet_v2", "MobileNet (torchvision mobilenet_v2)"))
SEED_DEVICE = "gtx-1080-ti"


def _build(name: str, device: str) -> torch.nn.Module:
    import torchvision

    with torch.device(device):
        return getattr(torchvision.models, name)().eval()


def predicted_row(name: str, gpu) -> Tuple[List[str], object]:
    """One row of the seed table for torchvision model ``name``, predicted on ``gpu``."""
    model = _build(name, "meta")
    x = torch.randn(1, 3, 224, 224, device="meta")
    with torch.no_grad():
        costs = count(model, x, memory_model="compulsory")
    ops, roofs = place(costs.ops, gpu)
    report = analyse(
        ops, (), (), costs.modules, roofs,
        device=device_info(gpu), predicted=True, memory_model="compulsory",
    )
    t = report.totals
    roof = gpu.roof("float32", "vector")
    traffic = t.bytes_read + t.bytes_written
    flop_per_b = t.flops / traffic
    # The seed's whole-model placement: one point, min(peak, intensity x bandwidth).
    attainable = roof.attainable(flop_per_b)
    bound = "compute" if flop_per_b >= roof.ridge else "memory"
    row = [
        f"{t.macs / 1e9:.2f}",
        f"{traffic / 1e6:.0f}",
        f"{t.param_bytes / 1e6:.0f} + {t.bytes_written / 1e6:.0f}",
        f"{t.macs / traffic:.1f}",
        f"{flop_per_b:.1f}",
        f"{attainable / 1e12:.2f}",
        bound,
        f"{t.roofline_time_s * 1e3:.2f}",
    ]
    return row, report


def _print_table(header: List[str], rows: List[List[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print("  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(header, widths))))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))))


def part_predicted() -> None:
    gpu = devices.get(SEED_DEVICE)
    roof = gpu.roof("float32", "vector")
    print(f"PREDICTED on {gpu.name} ({gpu.source}): fp32 {roof.peak_flops_per_s / 1e12:.2f} TFLOP/s, "
          f"{roof.bandwidth_bytes_per_s / 1e9:.0f} GB/s, ridge {roof.ridge:.1f} FLOP/B "
          f"({roof.ridge / 2:.1f} MAC/B)")
    print("batch 1, 224x224, forward, fp32; memory model 'compulsory' (each storage moved once); counted on meta\n")
    header = ["model", "GMACs", "MB", "weights + outputs MB", "MAC/B", "FLOP/B", "attainable TFLOP/s", "bound",
              "roofline ms (op by op)"]
    rows = []
    for name, label in MODELS:
        row, _ = predicted_row(name, gpu)
        rows.append([label] + row)
    _print_table(header, rows)
    print("\n  MB = bytes read + written (weights and the input read once, every output written once, 4 B/element).")
    print("  attainable = min(peak, FLOP/B x bandwidth) for the model as one point (the seed's placement);")
    print("  'roofline ms (op by op)' sums each op's own roofline time, so it exceeds total FLOPs / peak.")
    print("  MobileNet: torchvision mobilenet_v2; BN outputs count as tensors of their own (unfused);")
    print("  VGG16 (torchvision vgg16) has no BN. ReLU/ReLU6 run in place in both (no new tensor).")


def part_measured(threads: Optional[int]) -> None:
    if threads:
        torch.set_num_threads(threads)
    os.makedirs(OUT, exist_ok=True)
    host = devices.detect()
    print(f"\nMEASURED on this machine: {host.name} ({host.source} roofs), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; batch 1, forward, eval, no_grad, random weights")
    header = ["model", "time ms", "GFLOP/s", "FLOP/B (op)", "FLOP/B (compulsory)", "eff. %", "bound", "plot"]
    rows = []
    for name, label in MODELS:
        torch.manual_seed(0)
        model = _build(name, "cpu")
        x = torch.randn(1, 3, 224, 224)
        with torch.no_grad():
            model(x)  # warm-up: allocator, oneDNN primitives
            with RooflineProfiler(model, roof=host) as prof:
                model(x)
        report = prof.report()
        root = report.module("")
        t = report.totals
        path = os.path.join(OUT, f"seed_{name}.png")
        fig = report.plot(path)
        _close(fig)
        rows.append([
            label,
            f"{t.time_s * 1e3:.1f}",
            f"{t.flops / t.time_s / 1e9:.1f}",
            f"{t.flops / (t.bytes_read + t.bytes_written):.1f}",
            f"{t.flops / t.compulsory_bytes:.1f}",
            "-" if root.efficiency is None else f"{root.efficiency * 100:.0f}",
            root.bound or "-",
            path,
        ])
    _print_table(header, rows)
    print("\n  bound: the report's class for the whole model (the bound holding most of its op time).")


def _close(fig) -> None:
    try:
        import matplotlib.pyplot as plt

        plt.close(fig)
    except Exception:  # matplotlib absent: plot() would have raised already
        pass


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--predicted", action="store_true", help="part 1 only: the predicted table")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads for part 2 (default: torch's)")
    args = p.parse_args(argv)
    part_predicted()
    if not args.predicted:
        part_measured(args.threads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
