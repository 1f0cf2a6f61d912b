"""Which device is this? Catalog rows for known GPUs, first-principles estimates otherwise.

* CUDA / ROCm: the catalog row for ``torch.cuda.get_device_name()``, disambiguated by SM/CU
  count and memory. A device with fewer SMs than its row (a MIG slice, a cut-down module)
  gets the row's peaks scaled by the SM ratio, marked ``estimated``, with a warning.
* An unlisted GPU: SMs x clock x FLOP/clock/SM for its architecture (constants below, from
  shared/reference/devices.yaml ``per_clock_per_sm``) and bandwidth = memory clock x 2 (DDR)
  x bus width / 8; ``source="estimated"``, with a warning. No constants for the
  architecture -> :class:`UnknownDeviceError` (never a guess from another device).
* CPU: cores x clock x FLOP/cycle (:mod:`._cpu`) and a MEASURED copy/triad bandwidth
  (full STREAM run, cached per machine); ``source="estimated"``, the bandwidth's provenance says
  ``measured``.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Dict, Tuple, Union

import torch

from torch_roofline.devices._cpu import estimate_cpu_peaks, flops_per_cycle, read_cpu_info
from torch_roofline.devices._device import Device
from torch_roofline.devices._lookup import UnknownDeviceError, find_entry

__all__ = ["detect", "estimate_gpu", "PER_CLOCK_PER_SM"]

# Dense FLOP per clock per SM (NVIDIA, by compute capability) or per CU (AMD, by gfx arch),
# keyed "dtype:unit". "geforce" variants: fp32-accumulate tensor rates of consumer cards.
PER_CLOCK_PER_SM: Dict[str, Dict[str, float]] = {
    "6.1": {"fp64:vector": 8, "fp32:vector": 256, "int8:vector": 1024},
    "7.0": {"fp64:vector": 64, "fp32:vector": 128, "fp16:matrix": 1024},
    "7.5": {"fp64:vector": 4, "fp32:vector": 128, "fp16:matrix": 1024, "int8:matrix": 2048},
    "7.5-geforce": {"fp32:vector": 128, "fp16:matrix": 512, "int8:matrix": 2048},
    "8.0": {"fp64:vector": 64, "fp32:vector": 128, "fp64:matrix": 128, "tf32:matrix": 1024,
            "fp16:matrix": 2048, "bf16:matrix": 2048, "int8:matrix": 4096},
    "8.6": {"fp64:vector": 4, "fp32:vector": 256, "tf32:matrix": 512, "fp16:matrix": 1024,
            "bf16:matrix": 1024, "int8:matrix": 2048},
    "8.6-geforce": {"fp32:vector": 256, "tf32:matrix": 256, "fp16:matrix": 512,
                    "bf16:matrix": 512, "int8:matrix": 2048},
    "8.7": {"fp32:vector": 256, "fp16:matrix": 2048, "int8:matrix": 4096},
    "8.9": {"fp64:vector": 4, "fp32:vector": 256, "tf32:matrix": 512, "fp16:matrix": 1024,
            "bf16:matrix": 1024, "fp8:matrix": 2048, "int8:matrix": 2048},
    "8.9-geforce": {"fp64:vector": 4, "fp32:vector": 256, "tf32:matrix": 256, "fp16:matrix": 512,
                    "bf16:matrix": 512, "fp8:matrix": 1024, "int8:matrix": 2048},
    "9.0": {"fp64:vector": 128, "fp32:vector": 256, "fp64:matrix": 256, "tf32:matrix": 2048,
            "fp16:matrix": 4096, "bf16:matrix": 4096, "fp8:matrix": 8192, "int8:matrix": 8192},
    "10.0": {"fp64:vector": 128, "fp32:vector": 256, "tf32:matrix": 4096, "fp16:matrix": 8192,
             "bf16:matrix": 8192, "fp8:matrix": 16384, "int8:matrix": 16384},
    "12.0-geforce": {"fp32:vector": 256, "fp16:matrix": 512, "bf16:matrix": 512},
    "gfx908": {"fp64:vector": 64, "fp32:vector": 128, "fp32:matrix": 256, "fp16:matrix": 1024,
               "bf16:matrix": 512},
    "gfx90a": {"fp64:vector": 128, "fp32:vector": 128, "fp64:matrix": 256, "fp32:matrix": 256,
               "fp16:matrix": 1024, "bf16:matrix": 1024, "int8:matrix": 1024},
    "gfx942": {"fp64:vector": 128, "fp32:vector": 256, "fp64:matrix": 256, "fp32:matrix": 256,
               "tf32:matrix": 1024, "fp16:matrix": 2048, "bf16:matrix": 2048,
               "fp8:matrix": 4096, "int8:matrix": 4096},
}


def _arch_key(props) -> Tuple[str, str]:
    """(key into PER_CLOCK_PER_SM, the key tried) for a device's properties."""
    gcn = (getattr(props, "gcnArchName", "") or "").split(":")[0]
    if gcn:
        return gcn, gcn
    cc = f"{props.major}.{props.minor}"
    if "geforce" in props.name.lower() and f"{cc}-geforce" in PER_CLOCK_PER_SM:
        return f"{cc}-geforce", cc
    return cc, cc


def estimate_gpu(props) -> Device:
    """Estimated roofs of a GPU from its ``torch.cuda.get_device_properties()``.

    peak = SMs (CUs) x clock x FLOP/clock/SM; bandwidth = memory clock x 2 x bus width / 8.

    Raises:
        UnknownDeviceError: no per-clock constants for the architecture, or no clocks.
    """
    key, tried = _arch_key(props)
    per_clock = PER_CLOCK_PER_SM.get(key)
    clock_hz = float(getattr(props, "clock_rate", 0) or 0) * 1e3
    mem_clock_hz = float(getattr(props, "memory_clock_rate", 0) or 0) * 1e3
    bus_bits = int(getattr(props, "memory_bus_width", 0) or 0)
    if per_clock is None or not clock_hz or not mem_clock_hz or not bus_bits:
        raise UnknownDeviceError(
            f"device {props.name!r} (arch {tried}) is not in the catalog and its roofs cannot "
            f"be estimated ({'no per-clock constants for this architecture' if per_clock is None else 'torch reports no clocks'}). "
            f"Give its roofs: Device(name=..., peak_flops={{...}}, bandwidth=...), "
            f"load_file('roofs.toml'), or measure('cuda')"
        )
    units = props.multi_processor_count
    bandwidth = mem_clock_hz * 2 * bus_bits / 8
    how = f"estimated ({units} SMs x {clock_hz / 1e9:.3f} GHz x FLOP/clk/SM of arch {key})"
    peaks = {k: units * clock_hz * v for k, v in per_clock.items()}
    return Device(
        name=props.name,
        source="estimated",
        peaks=peaks,
        memory_bandwidth=bandwidth,
        memory_bytes=props.total_memory,
        l2_bytes=getattr(props, "L2_cache_size", None) or None,
        provenance={**{k: how for k in peaks},
                    "memory_bandwidth": f"estimated ({mem_clock_hz / 1e9:.3f} GHz x 2 x {bus_bits} bit / 8)"},
        vendor="amd" if key.startswith("gfx") else "nvidia",
        kind="gpu",
        arch=key,
        notes="Estimated from torch's device properties: boost clock, no power or thermal limits.",
    )


def _scaled(device: Device, units: int, row_units: int) -> Device:
    """A catalog device scaled to ``units`` of its ``row_units`` SMs (MIG slice, cut-down part)."""
    ratio = units / row_units
    how = f"estimated ({device.id} scaled by {units}/{row_units} SMs)"
    return Device(
        name=f"{device.name} ({units} of {row_units} SMs)",
        id=f"{device.id}-{units}sm",
        source="estimated",
        peaks={k: v * ratio for k, v in device.peaks.items()},
        memory_bandwidth=device.memory_bandwidth,
        memory_bytes=device.memory_bytes,
        l2_bytes=device.l2_bytes,
        interconnect_bandwidth=device.interconnect_bandwidth,
        provenance={**dict(device.provenance), **{k: how for k in device.peaks}},
        vendor=device.vendor, kind=device.kind, arch=device.arch,
        notes=device.notes + " Peaks scaled by SM count; the bandwidth is the full device's.",
    )


def _detect_gpu(index: int) -> Device:
    props = torch.cuda.get_device_properties(index)
    units = props.multi_processor_count
    try:
        entry = find_entry(props.name, units=units, memory_bytes=props.total_memory)
    except UnknownDeviceError:
        device = estimate_gpu(props)
        warnings.warn(
            f"{props.name!r} is not in the torch_roofline catalog: its roofs are ESTIMATED from "
            f"SM count x clock ({device.peak_flops('fp32', 'vector') / 1e12:.1f} TFLOP/s fp32, "
            f"{device.memory_bandwidth / 1e9:.0f} GB/s). Measure them with measure('cuda') or give "
            f"datasheet values with Device(...)/load_file().",
            stacklevel=3,
        )
        return device
    if entry.units and units < entry.units:
        warnings.warn(
            f"{props.name!r} has {units} SMs/CUs, its catalog row {entry.device.id!r} has "
            f"{entry.units}: peaks scaled to {units}/{entry.units} and marked estimated",
            stacklevel=3,
        )
        return _scaled(entry.device, units, entry.units)
    return entry.device


def cpu_device_fields(info: Any, result: Any) -> Dict[str, Any]:
    """The :class:`Device` fields every CPU device shares, estimated or measured: its id and
    kind, vendor, last-level cache (``info``: a ``CpuInfo``) and the STREAM bandwidth of the
    bench ``result`` (B/s)."""
    from torch_roofline.devices.bench import stream_bandwidth  # bench imports this module

    return {"id": "cpu", "kind": "cpu", "vendor": info.vendor, "l2_bytes": info.llc_bytes,
            "memory_bandwidth": stream_bandwidth(result)}


def _detect_cpu() -> Device:
    """This CPU: peaks from cores x clock x FLOP/cycle, bandwidth measured (full bench, cached).

    The full measurement (about half a minute on 2 cores, once per machine and torch version)
    is used, not the quick one: quick STREAM arrays and repeats under-measure the bandwidth
    (38 vs 66 GB/s on the project's test machine), which would flag ordinary ops as above the
    roof.

    The reported clock is often the base clock (a VM shows nothing else), while the cores
    run at their boost clock; a roof must lie above every kernel, so when the fp32
    probes (GEMM sizes and a convolution) run faster than the computed fp32 peak, every
    computed peak is scaled by that ratio (the effective clock) and the provenance says so.
    """
    from torch_roofline.devices.bench import run_bench

    info = read_cpu_info()
    result = run_bench("cpu", ("fp32",), quick=False, progress=False)
    if not info.clock_hz > 0 and "fp32" in result.gemm:  # the OS shows no clock: the kernels' own
        fp32_per_cycle = flops_per_cycle(info)["fp32:vector"]
        info = dataclasses.replace(
            info, clock_hz=result.matrix_peak("fp32").max / (info.cores * fp32_per_cycle),
            clock_source="no clock known: the effective clock of the fastest measured fp32 kernel")
    estimated = estimate_cpu_peaks(info)
    peaks = {k: v for k, (v, _) in estimated.items()}
    scaled = ""
    scale = 1.0
    probe = result.matrix_peak("fp32").max if "fp32" in result.gemm else 0.0
    if probe > peaks.get("fp32:vector", float("inf")):
        scale = probe / peaks["fp32:vector"]
        peaks = {k: v * scale for k, v in peaks.items()}
        scaled = (f", scaled x{scale:.2f}: a measured fp32 kernel ran at {probe / 1e9:.1f} GFLOP/s, above the "
                  f"clock's peak (effective clock {info.clock_hz * scale / 1e9:.2f} GHz)")
    return Device(
        name=f"{info.model} ({info.cores} cores)",
        source="estimated",
        peaks=peaks,
        **cpu_device_fields(info, result),
        provenance={
            **{k: f"{how[:-1]}{scaled})" for k, (_, how) in estimated.items()},
            "memory_bandwidth": f"measured (STREAM copy/triad, {result.array_bytes / 1e6:.0f} MB arrays, cached)",
        },
        arch=torch.backends.cpu.get_cpu_capability(),
        notes=(f"Peaks estimated; clock from {info.clock_source}"
               + (f" (scaled x{scale:.2f} to a faster measured kernel)" if scale > 1 else "")
               + ". Bandwidth measured on this machine."),
    )


def detect(torch_device: Union[None, str, int, torch.device] = None) -> Device:
    """The Device for ``torch_device`` (default: the current CUDA device, else the CPU).

    Args:
        torch_device: ``"cuda:1"``, ``torch.device("cpu")``, a CUDA index, or ``None``.

    Returns:
        A catalog Device (``source="datasheet"``) for a listed GPU; otherwise an
        ``"estimated"`` one (with a warning for GPUs). CPU bandwidth is measured (cached).

    Raises:
        UnknownDeviceError: an unlisted GPU whose roofs cannot be estimated.
        ValueError: a device type without roofs (``"mps"``, ``"meta"``...).
    """
    if torch_device is None:
        dev = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    elif isinstance(torch_device, int):
        dev = torch.device("cuda", torch_device)
    else:
        dev = torch.device(torch_device)
    if dev.type == "cuda":
        return _detect_gpu(dev.index if dev.index is not None else torch.cuda.current_device())
    if dev.type == "cpu":
        return _detect_cpu()
    raise ValueError(
        f"detect({torch_device!r}): no roofs for device type {dev.type!r}; expected 'cpu' or "
        f"'cuda'. Pick a catalog row with get('apple-m1') or give Device(...) roofs"
    )
