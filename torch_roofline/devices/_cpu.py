"""CPU roofs from first principles: cores x clock x FLOP/cycle/core from the ISA.

Honest limits: the clock is the highest one Linux tells us (``cpufreq`` max if present,
else ``/proc/cpuinfo`` "cpu MHz", which under a hypervisor is often the base or TSC clock
and can sit below the real boost clock); the number of FMA units per core cannot be read
from flags, so AVX-512 parts are assumed to have two 512-bit FMA units (an upper bound:
some Xeon Silver/Bronze and client parts have one) except AMD Zen 4, which runs 512-bit
FMAs on 256-bit units. A roof must bound what is achievable, so every guess leans high,
and the resulting Device says ``source="estimated"``.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from typing import Dict, FrozenSet, Optional

import torch

__all__ = ["CpuInfo", "cpu_peak_flops", "flops_per_cycle", "read_cpu_info"]


def cpu_peak_flops(cores: int, clock_hz: float, flops_per_cycle: float) -> float:
    """Peak FLOP/s = cores x clock (Hz) x FLOP per cycle per core.

    >>> cpu_peak_flops(16, 4.5e9, 64)   # the seed's i9-10980XE arithmetic
    4608000000000.0
    """
    if cores <= 0 or clock_hz <= 0 or flops_per_cycle <= 0:
        raise ValueError(
            f"cpu_peak_flops(cores={cores}, clock_hz={clock_hz}, flops_per_cycle={flops_per_cycle}): "
            f"expected three positive numbers, e.g. (16, 4.5e9, 64)"
        )
    return float(cores) * float(clock_hz) * float(flops_per_cycle)


@dataclass(frozen=True)
class CpuInfo:
    """What the OS tells about this CPU.

    Attributes:
        model: model name (``"AMD EPYC"``; hypervisors often hide the SKU).
        vendor: ``"GenuineIntel"``, ``"AuthenticAMD"``, ... or ``platform.machine()``.
        family: x86 CPU family number (AMD 25 = Zen 3/4, 26 = Zen 5), ``None`` if unknown.
        cores: physical cores (sockets x cores per socket).
        clock_hz: the clock used for the peak, Hz.
        clock_source: where ``clock_hz`` came from, in words.
        flags: ISA flags (``avx2``, ``fma``, ``avx512f``, ``amx_bf16``, ...).
        llc_bytes: last-level cache size in bytes, ``None`` if unknown.
    """

    model: str
    vendor: str
    family: Optional[int]
    cores: int
    clock_hz: float
    clock_source: str
    flags: FrozenSet[str]
    llc_bytes: Optional[int]


def _read(path: str) -> Optional[str]:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError:
        return None


def _llc_bytes() -> Optional[int]:
    best = None
    base = "/sys/devices/system/cpu/cpu0/cache"
    for index in sorted(os.listdir(base)) if os.path.isdir(base) else ():
        level, size = _read(f"{base}/{index}/level"), _read(f"{base}/{index}/size")
        if not level or not size:
            continue
        size = size.strip().upper()
        scale = {"K": 1024, "M": 1024**2, "G": 1024**3}.get(size[-1:], 1)
        try:
            value = int(size.rstrip("KMG")) * scale
        except ValueError:
            continue
        if best is None or int(level) >= best[0]:
            best = (int(level), value)
    return None if best is None else best[1]


def read_cpu_info() -> CpuInfo:
    """Parse ``/proc/cpuinfo`` and ``/sys`` (Linux); elsewhere fall back to os/torch facts."""
    text = _read("/proc/cpuinfo") or ""
    fields: Dict[str, str] = {}
    cores_seen = set()
    physical = core = None
    mhz = []
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        fields.setdefault(key, value)
        if key == "physical id":
            physical = value
        elif key == "core id":
            core = value
            cores_seen.add((physical, core))
        elif key == "cpu MHz":
            mhz.append(float(value))
    flags = frozenset(fields.get("flags", fields.get("Features", "")).split())
    cores = len(cores_seen) or os.cpu_count() or 1
    max_khz = _read("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
    if max_khz:
        clock_hz, source = float(max_khz) * 1e3, "cpufreq cpuinfo_max_freq (max boost; all-core clocks under vector load are lower)"
    elif mhz:
        clock_hz, source = max(mhz) * 1e6, "/proc/cpuinfo 'cpu MHz' (no cpufreq: often the base clock under a hypervisor; boost may be higher)"
    else:
        clock_hz, source = 2.5e9, "unknown: 2.5 GHz assumed"
    family = fields.get("cpu family")
    return CpuInfo(
        model=fields.get("model name", platform.processor() or platform.machine()),
        vendor=fields.get("vendor_id", platform.machine()),
        family=int(family) if family and family.isdigit() else None,
        cores=cores,
        clock_hz=clock_hz,
        clock_source=source,
        flags=flags,
        llc_bytes=_llc_bytes(),
    )


def flops_per_cycle(info: CpuInfo) -> Dict[str, float]:
    """FLOP (or int8 OP) per cycle per core, keyed ``"dtype:unit"``, from the ISA flags.

    fp32 vector: SSE 8, AVX 16, AVX2+FMA 32 (two 256-bit FMA units), AVX-512 64 (two
    512-bit units; 32 on AMD Zen 4). fp64 is half of fp32. Matrix work runs on the same
    FMA units unless: AVX512_BF16 (bf16 dot products, 2x fp32), AVX512_FP16 (2x), VNNI
    (int8 dot products, 4x fp32), or AMX (1024 bf16 / 2048 int8 per cycle per core).
    Without flags (non-Linux), torch's cpu capability (AVX2/AVX512) decides.
    """
    flags = info.flags
    capability = torch.backends.cpu.get_cpu_capability()
    if "avx512f" in flags or (not flags and capability == "AVX512"):
        zen4 = info.vendor == "AuthenticAMD" and info.family == 25
        fp32 = 32.0 if zen4 else 64.0
    elif ("avx2" in flags and "fma" in flags) or (not flags and capability == "AVX2"):
        fp32 = 32.0
    elif "avx" in flags:
        fp32 = 16.0
    elif "asimd" in flags or platform.machine() in ("aarch64", "arm64"):
        fp32 = 16.0  # two 128-bit NEON FMA pipes; SVE parts may have more
    else:
        fp32 = 8.0
    out = {"fp64:vector": fp32 / 2, "fp32:vector": fp32}
    if "avx512_bf16" in flags:
        out["bf16:matrix"] = 2 * fp32
    if "avx512_fp16" in flags:
        out["fp16:matrix"] = out["fp16:vector"] = 2 * fp32
    if "avx512_vnni" in flags or "avx_vnni" in flags:
        out["int8:matrix"] = 4 * fp32
    if "amx_bf16" in flags:
        out["bf16:matrix"] = 1024.0
    if "amx_int8" in flags:
        out["int8:matrix"] = 2048.0
    if "amx_fp16" in flags:
        out["fp16:matrix"] = 1024.0
    return out
