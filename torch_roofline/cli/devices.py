"""``torch-roofline devices`` and ``torch-roofline bench``, plus :func:`resolve` for --device flags."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import List, Sequence

from torch_roofline.devices import DTYPES, Device, auto, catalog, detect, get, load_file, measure
from torch_roofline.devices.bench import run_bench

__all__ = ["add_parser", "resolve", "devices_table", "provenance_lines", "run_devices", "run_bench_cmd"]


def resolve(spec: str) -> Device:
    """A Device from a command-line spec.

    ``"auto"``: :func:`auto` (measured CPU roofs, cached; the catalog row of a GPU);
    ``"detect"``: :func:`detect`; ``"measured"``: :func:`measure` on CUDA if available else
    CPU (cached); a path ending in .toml/.yaml/.yml: the file's single device (or
    ``path:id`` to pick one of several); anything else: :func:`get`.
    """
    if spec == "auto":
        return auto()
    if spec == "detect":
        return detect()
    if spec == "measured":
        import torch

        return measure("cuda" if torch.cuda.is_available() else "cpu", progress=True)
    path, _, pick = spec.partition(":") if not os.path.exists(spec) else (spec, "", "")
    if path.endswith((".toml", ".yaml", ".yml")):
        found = load_file(path)
        if pick:
            for device in found:
                if device.id == pick or device.name == pick:
                    return device
            raise ValueError(f"{path} has no device {pick!r}; it has {[d.id for d in found]}")
        if len(found) != 1:
            raise ValueError(f"{path} holds {len(found)} devices; pick one with {path}:<id> ({[d.id for d in found]})")
        return found[0]
    return get(spec)


def _row(device: Device) -> dict:
    """One device as a JSON-ready dict (SI units)."""
    return {
        "id": device.id,
        "name": device.name,
        "source": device.source,
        "memory_bandwidth_bytes_per_s": device.memory_bandwidth,
        "memory_bytes": device.memory_bytes,
        "l2_bytes": device.l2_bytes,
        "interconnect_bandwidth_bytes_per_s": device.interconnect_bandwidth,
        "roofs": [
            {"dtype": r.dtype, "unit": r.unit, "peak_flops_per_s": r.peak_flops_per_s,
             "ridge_flops_per_byte": r.ridge, "source": r.source, "how": r.how}
            for r in device.roofs()
        ],
        "provenance": dict(device.provenance),
    }


def devices_table(devices: Sequence[Device]) -> str:
    """A text table: id, name, GB/s, then per dtype 'TFLOP/s (ridge FLOP/B)' of the matrix roof
    (the vector roof where the device has no matrix unit for it; '~' marks estimates)."""
    from tabulate import tabulate

    headers = ["id", "name", "GB/s"] + [f"{d} TFLOP/s (ridge)" for d in DTYPES]
    rows: List[list] = []
    for device in devices:
        row = [device.id, device.name, f"{device.memory_bandwidth / 1e9:,.0f}"]
        listed = set(device.dtypes())
        for dtype in DTYPES:
            if dtype not in listed:
                row.append("-")
                continue
            roof = device.roof(dtype, "matrix", allow_tf32=False)
            mark = "~" if roof.source == "estimated" else ""
            unit = "" if roof.unit == "matrix" else " v"
            row.append(f"{mark}{roof.peak_flops_per_s / 1e12:,.1f}{unit} ({roof.ridge:,.0f})")
        rows.append(row)
    return tabulate(rows, headers=headers, disable_numparse=True)


def provenance_lines(device: Device) -> List[str]:
    """One line per roof: ``dtype unit  peak  source: how``, then the bandwidth's provenance."""
    lines = []
    for roof in device.roofs():
        peak = device.provenance.get(f"{roof.dtype}:{roof.unit}") or roof.source
        lines.append(f"  {roof.dtype:<5} {roof.unit:<7} {roof.peak_flops_per_s / 1e9:10,.1f} GFLOP/s  "
                     f"{roof.source}: {peak}")
    bandwidth = device.provenance.get("memory_bandwidth") or device.source
    lines.append(f"  bandwidth     {device.memory_bandwidth / 1e9:10,.1f} GB/s     {bandwidth}")
    return lines


def run_devices(args: argparse.Namespace) -> int:
    """``torch-roofline devices [--json] [--this [--no-bench] [--refresh]]``."""
    if getattr(args, "this", False):
        measure = False if getattr(args, "no_bench", False) else None
        devices = [auto(measure=measure, refresh=getattr(args, "refresh", False), progress=not args.json)]
    else:
        devices = catalog()
    if args.json:
        json.dump([_row(d) for d in devices], sys.stdout, indent=1, sort_keys=True)
        sys.stdout.write("\n")
        return 0
    print(devices_table(devices))
    print("\nv = vector units (no matrix unit for the dtype); ~ = estimated; dense peaks, "
          "decimal units (1 TB/s = 1e12 B/s)")
    if getattr(args, "this", False):
        print(f"\n{devices[0].name}: {devices[0].notes}")
        print("\n".join(provenance_lines(devices[0])))
    return 0


def run_bench_cmd(args: argparse.Namespace) -> int:
    """``torch-roofline bench [--device cpu|cuda] [--dtype ...] [--json] [--refresh] [--quick]``."""
    dtypes = args.dtype or ["fp32"]
    result = run_bench(args.device, dtypes, quick=args.quick, refresh=args.refresh,
                       progress=not args.json)
    if args.json:
        json.dump(result.to_dict(), sys.stdout, indent=1, sort_keys=True)
        sys.stdout.write("\n")
        return 0
    print(f"{result.device_name}  (torch {result.torch_version}, {'quick' if result.quick else 'full'} run)")
    for key, s in result.gemm.items():
        libs = result.gemm_by_library.get(key) or {s.library or "GEMM": s}
        for library, ls in libs.items():
            print(f"  GEMM {key:<5} {library:<9} n={ls.size:<5} TFLOP/s  min {ls.min / 1e12:8.3f}  "
                  f"median {ls.median / 1e12:8.3f}  max {ls.max / 1e12:8.3f}")
    for key, s in result.conv.items():
        print(f"  conv {key:<5} {'3x3':<9} {'':<7} TFLOP/s  min {s.min / 1e12:8.3f}  median {s.median / 1e12:8.3f}  max {s.max / 1e12:8.3f}")
    for key in result.gemm:
        print(f"  matrix roof {key}: {result.matrix_peak(key).max / 1e12:.3f} TFLOP/s (best of the GEMMs and the conv probe)")
    for label, s in (("copy", result.copy), ("triad", result.triad)):
        if s is not None:
            print(f"  {label:<10} {result.array_bytes / 1e6:5.0f} MB  GB/s  min {s.min / 1e9:8.1f}  median {s.median / 1e9:8.1f}  max {s.max / 1e9:8.1f}")
    return 0


def add_parser(subparsers) -> None:
    """Register ``devices`` and ``bench`` on the torch-roofline command."""
    p = subparsers.add_parser("devices", help="list the catalog's roofs (id, bandwidth, peaks, ridge points)")
    p.add_argument("--json", action="store_true", help="print JSON (SI units) instead of a table")
    p.add_argument("--this", action="store_true",
                   help="this machine's roofs as roof='auto' resolves them, with how each was obtained "
                        "(a CPU is measured once, about 10 s, then cached)")
    p.add_argument("--no-bench", action="store_true",
                   help="with --this: never measure, show the estimate (as TORCH_ROOFLINE_NO_BENCH=1 does)")
    p.add_argument("--refresh", action="store_true", help="with --this: measure again instead of reusing the cache")
    p.set_defaults(func=run_devices)

    b = subparsers.add_parser("bench", help="measure GEMM FLOP/s and STREAM bandwidth on this machine (cached)")
    b.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    b.add_argument("--dtype", action="append", metavar="DTYPE",
                   help=f"GEMM dtype, repeatable ({', '.join(DTYPES)}); default fp32")
    b.add_argument("--json", action="store_true", help="print the raw measurement as JSON")
    b.add_argument("--refresh", action="store_true", help="measure again instead of reusing the cache")
    b.add_argument("--quick", action="store_true", help="a few seconds, fewer samples (rougher roofs)")
    b.set_defaults(func=run_bench_cmd)
