"""``roof="auto"``: the roofs a report uses when the user names none.

* GPU: :func:`~torch_roofline.devices.detect` (the catalog row; an estimate for an unlisted GPU).
* CPU: MEASURED roofs by default (:func:`measured_cpu`: the time-boxed bench of
  :mod:`._cpu_bench`, about 10 s the first time, then cached per machine), because a CPU's
  datasheet peak depends on clocks and units that cloud VMs hide: on this project's 2-core
  AMD EPYC VM, ``/proc/cpuinfo`` shows a 2.445 GHz base clock and no SKU, and where issue 13
  was filed an estimate from it (157 GFLOP/s) lay far below the machine's own GEMMs (~430).
  Intel Advisor, the CPU roofline reference, measures its roofs on the machine too.
* CPU, measuring refused (``measure=False``, or ``TORCH_ROOFLINE_NO_BENCH=1`` in the
  environment): :func:`estimate_cpu`, cores x max clock x FLOP/cycle of the core's FMA
  units and matrix extensions (:mod:`._cpu`, :mod:`._uarch`), the bandwidth the platform's
  DRAM peak; every roof says ``estimated`` and how.

Every peak and the bandwidth carry their provenance (``Device.provenance``; ``Roof.how``):
``"measured (...)"`` or ``"estimated (...)"`` with the numbers and where they came from. A
measured CPU Device also lists the dtypes it did not measure (fp64, int8...), scaled from
the measured fp32 rate by the core's FLOP/cycle ratios, each marked ``estimated``.
"""

from __future__ import annotations

import os
import time
import warnings
from typing import Dict, Optional, Union

import torch

from torch_roofline.devices._cpu import CpuInfo, estimate_cpu_peaks, per_cycle_explained, read_cpu_info
from torch_roofline.devices._cpu_bench import MAX_MEASUREMENTS, is_busy, roofs_cache_path, run_roofs_bench
from torch_roofline.devices._detect import cpu_device_fields, detect
from torch_roofline.devices._device import Device
from torch_roofline.devices._lookup import UnknownDeviceError
from torch_roofline.devices._uarch import platform_bandwidth
from torch_roofline.devices.bench import BenchResult, BenchStats

__all__ = ["NO_BENCH_ENV", "auto", "estimate_cpu", "estimate_cpu_peaks", "measured_cpu", "measured_device",
           "measuring_refused"]

#: Environment variable that refuses measuring (CI, quick runs): ``TORCH_ROOFLINE_NO_BENCH=1``.
NO_BENCH_ENV = "TORCH_ROOFLINE_NO_BENCH"


def measuring_refused(measure: Optional[bool] = None) -> bool:
    """Whether roofs must not be measured: ``measure=False``, or ``measure=None`` and
    ``TORCH_ROOFLINE_NO_BENCH`` set to anything but ``""``/``0``/``false``/``no``."""
    if measure is not None:
        return not measure
    return os.environ.get(NO_BENCH_ENV, "").strip().lower() not in ("", "0", "false", "no")


# -- the estimate --------------------------------------------------------------------------
def estimate_cpu(info: Optional[CpuInfo] = None) -> Device:
    """Estimated roofs of this CPU (``source="estimated"``); nothing is measured.

    Peaks: :func:`._cpu.estimate_cpu_peaks`. Bandwidth: the platform's DRAM peak (channels x MT/s
    x 8 B per socket, :data:`._uarch.PLATFORM_BANDWIDTH`), an upper bound: a VM holding a
    few cores of a socket reaches far less, so memory-bound efficiencies read low.

    Raises:
        UnknownDeviceError: no clock, or no platform bandwidth for this CPU; the message
            says how to measure or give the roofs instead.
    """
    info = info or read_cpu_info()
    peaks = estimate_cpu_peaks(info)
    platform = platform_bandwidth(info.uarch, info.model)
    if platform is None:
        raise UnknownDeviceError(
            f"cannot estimate the memory bandwidth of {info.model!r} ({info.uarch.name if info.uarch else 'unlisted core'}): "
            f"its platform is not in the table. Let torch_roofline measure it (unset {NO_BENCH_ENV}, "
            f"or devices.auto(measure=True)), or give the roofs: Device(name=..., peak_flops="
            f"{{'fp32': {peaks['fp32:vector'][0]:.3g}}}, bandwidth=...)"
        )
    bandwidth, how = platform
    return Device(
        name=f"{info.model} ({info.cores} cores, estimated)",
        id="cpu",
        source="estimated",
        peaks={k: v for k, (v, _) in peaks.items()},
        memory_bandwidth=bandwidth * info.sockets,
        l2_bytes=info.llc_bytes,
        provenance={
            **{k: why for k, (_, why) in peaks.items()},
            "memory_bandwidth": (f"estimated ({info.sockets} socket(s) x the platform's DRAM peak, {how}; "
                                 f"a VM or a few cores reach less)"),
        },
        vendor=info.vendor,
        kind="cpu",
        arch=info.uarch.id if info.uarch else torch.backends.cpu.get_cpu_capability(),
        notes="Estimated, nothing measured: measuring was refused. Peaks assume every core at the max "
              "clock with every FMA unit busy; the bandwidth is the platform's peak.",
    )


# -- the measurement -------------------------------------------------------------------------
def _measured_how(stats: BenchStats, dtype: str, result: BenchResult, where: str) -> str:
    what = ("3x3 convolutions (they beat every GEMM)" if stats.size == 0
            else f"{stats.library} GEMMs n={stats.size}")
    when = time.strftime("%Y-%m-%d", time.localtime(result.created_s))
    return (f"measured ({dtype}: fastest of {stats.samples} {what}, on this machine {when}, "
            f"torch {result.torch_version}, {result.threads} threads; cached in {where})")


def measured_device(result: BenchResult, info: CpuInfo, where: str = "the bench cache") -> Device:
    """A ``source="measured"`` CPU Device from a roofs measurement.

    Matrix peaks: the fastest GEMM or convolution sample per measured dtype; the fp32 vector
    peak is the fp32 one (same FMA units). Dtypes the CPU has but the run did not measure
    (fp64, int8, ...) are the measured fp32 rate x their FLOP/cycle ratio to fp32 on this core
    (:func:`._cpu.per_cycle_explained`), provenance ``estimated (...)``.
    """
    peaks: Dict[str, float] = {}
    provenance: Dict[str, str] = {}
    for dtype in result.gemm:
        stats = result.matrix_peak(dtype)
        peaks[f"{dtype}:matrix"] = stats.max
        provenance[f"{dtype}:matrix"] = _measured_how(stats, dtype, result, where)
    fp32 = result.matrix_peak("fp32")
    peaks["fp32:vector"] = fp32.max
    provenance["fp32:vector"] = _measured_how(fp32, "fp32", result, where) + "; the same FMA units as fp32 GEMMs"
    per_cycle = per_cycle_explained(info)
    fp32_per_cycle = per_cycle["fp32:vector"][0]
    for key, (value, why) in per_cycle.items():
        if key in peaks:
            continue
        peaks[key] = fp32.max * value / fp32_per_cycle
        provenance[key] = (f"estimated (measured fp32 {fp32.max / 1e9:.1f} GFLOP/s x {value:g}/{fp32_per_cycle:g} "
                           f"FLOP/cycle of {key} vs fp32 on this core: {why})")
    provenance["memory_bandwidth"] = (f"measured (fastest STREAM copy/triad sample, {result.array_bytes / 1e6:.0f} MB "
                                      f"arrays, bytes = read + write; cached in {where})")
    busy = result.others_cpu_share
    busy_note = "" if busy is None else f"; other processes used {100 * busy:.0f}% of the CPU meanwhile"
    if result.measurements > 1:
        busy_note += f" (the quietest of {result.measurements} measurements, fastest samples of each kept)"
    return Device(
        name=f"{info.model} ({info.cores} cores, measured)",
        source="measured",
        peaks=peaks,
        **cpu_device_fields(info, result),
        provenance=provenance,
        arch=info.uarch.id if info.uarch else torch.backends.cpu.get_cpu_capability(),
        notes=(f"Measured on this machine ({result.mode_name} mode, {result.seconds or 0:.1f} s{busy_note}); "
               f"re-measure with devices.auto(refresh=True) or `torch-roofline devices --this --refresh`."),
    )


def measured_cpu(*, refresh: bool = False, progress: bool = True, info: Optional[CpuInfo] = None) -> Device:
    """This CPU's measured roofs: cached, or measured now (about 10 s, progress on stderr).

    A measurement during which other processes used more than 15 % of the CPU
    (:data:`._cpu_bench.BUSY_SHARE`) may be low: it warns, and the next processes measure
    again (one measurement per process, up to 3 in all) keeping the fastest samples of every
    run; the Device's notes say how busy the machine was in any case.
    """
    info = info or read_cpu_info()
    start = time.time()
    result = run_roofs_bench(info, refresh=refresh, progress=progress)
    if is_busy(result) and result.created_s >= start:  # measured by this call
        left = MAX_MEASUREMENTS - result.measurements
        warnings.warn(
            f"the CPU roofs were measured while other processes used {100 * result.others_cpu_share:.0f}% of "
            f"the CPU: they may be low (ops would then show above their roof). "
            + (f"The next {left} run(s) measure again and keep the fastest samples; " if left > 0 else "")
            + "re-measure on a quiet machine with devices.auto(refresh=True)", stacklevel=3)
    return measured_device(result, info, os.path.dirname(roofs_cache_path(info)))


# -- roof="auto" ---------------------------------------------------------------------------------
def _torch_device(torch_device: Union[None, str, int, torch.device]) -> torch.device:
    if torch_device is None:
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    if isinstance(torch_device, int):
        return torch.device("cuda", torch_device)
    return torch.device(torch_device)


def auto(
    torch_device: Union[None, str, int, torch.device] = None,
    *,
    measure: Optional[bool] = None,
    progress: bool = True,
    refresh: bool = False,
) -> Device:
    """The roofs ``roof="auto"`` uses for ``torch_device``.

    Args:
        torch_device: ``"cpu"``, ``"cuda:1"``, a ``torch.device``, a CUDA index, or ``None``
            (the current CUDA device, else the CPU).
        measure: CPU only. ``None`` (default): measure unless ``TORCH_ROOFLINE_NO_BENCH`` is
            set; ``True``: measure (a cached measurement counts); ``False``: never measure,
            return the estimate.
        progress: say on stderr that a first measurement runs, with a progress bar.
        refresh: CPU only: measure again instead of reusing the cache.

    Returns:
        GPU: :func:`detect`'s Device (catalog row, or an estimate with a warning). CPU: a
        ``"measured"`` Device (:func:`measured_cpu`), or with measuring refused an
        ``"estimated"`` one (:func:`estimate_cpu`). Every roof's ``how`` says which and how.

    Raises:
        UnknownDeviceError: an unlisted GPU without estimable roofs; a CPU whose roofs
            cannot be estimated while measuring is refused.
        ValueError: a device type without roofs (``"mps"``, ``"meta"``).

    Example::

        >>> from torch_roofline import devices
        >>> cpu = devices.auto("cpu")                    # ~10 s the first time, then cached
        >>> cpu.roof("fp32").source, cpu.roof("fp32").how
        ('measured', 'measured (fp32: fastest of 412 oneDNN GEMMs n=512, on this machine ...)')
        >>> devices.auto("cpu", measure=False).source    # TORCH_ROOFLINE_NO_BENCH=1 does the same
        'estimated'
    """
    dev = _torch_device(torch_device)
    if dev.type != "cpu":
        return detect(dev)
    if measuring_refused(measure):
        return estimate_cpu()
    try:
        return measured_cpu(refresh=refresh, progress=progress)
    except (RuntimeError, MemoryError) as exc:  # a failed measurement must not fail the user's run
        device = estimate_cpu()
        warnings.warn(f"measuring the CPU roofs failed ({type(exc).__name__}: {exc}); using estimates: "
                      f"{device.provenance['fp32:vector']}", stacklevel=2)
        return device
