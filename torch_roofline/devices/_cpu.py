"""CPU roofs from first principles: cores x clock x FLOP/cycle/core.

* FLOP/cycle/core: the core's FMA units x vector width (:mod:`._uarch`, identified from the
  x86 family/model or the Arm part number), at the widest vector ISA the OS exposes (the
  flags: a hypervisor that hides AVX-512 hides it from MKL and oneDNN too); matrix and dot
  product extensions (AMX, AVX512_BF16, VNNI, Arm BF16/dot products) from the flags. An
  unlisted core falls back to rules on the flags alone.
* Clock: the highest the machine says it reaches, first found of: cpufreq
  ``cpuinfo_max_freq``, ``lscpu``'s "CPU max MHz", the family's highest boost clock
  (:data:`._uarch.FAMILY_MAX_CLOCK_HZ`: cloud VMs hide their own), ``/proc/cpuinfo``'s
  "cpu MHz" (under a hypervisor often the base or TSC clock, below the real boost).

Honest limits: peaks assume every core at that clock and every FMA unit busy; all-core
clocks under AVX-512 or AMX load are lower, so an estimate leans high, as a roof should.
Measured roofs (:func:`torch_roofline.devices.auto`) are the default for that reason.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
from dataclasses import dataclass
from typing import Dict, FrozenSet, Optional, Tuple

import torch

from torch_roofline.devices._lookup import UnknownDeviceError
from torch_roofline.devices._uarch import Uarch, family_max_clock, identify, isa_level, matrix_per_cycle

__all__ = ["CpuInfo", "cpu_peak_flops", "flops_per_cycle", "per_cycle_explained", "read_cpu_info",
           "parse_cpuinfo", "lscpu_max_mhz", "pick_clock", "estimate_cpu_peaks"]


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
        clock_hz: the clock used for the peaks, Hz (:func:`pick_clock`); 0.0 when unknown.
        clock_source: where ``clock_hz`` came from, in words.
        flags: ISA flags (``avx2``, ``fma``, ``avx512f``, ``amx_bf16``; Arm ``asimd``, ``bf16``...).
        llc_bytes: last-level cache size in bytes, ``None`` if unknown.
        model_number: x86 model number (``0x11``), ``None`` if unknown.
        sockets: physical packages.
        arm_implementer, arm_part: Arm ``CPU implementer`` / ``CPU part`` (``"0x41"``, ``"0xd40"``).
        torch_capability: ``torch.backends.cpu.get_cpu_capability()`` on this machine
            (``"AVX2"``, ``"AVX512"``...); ``""`` for facts of another machine.
    """

    model: str
    vendor: str
    family: Optional[int]
    cores: int
    clock_hz: float
    clock_source: str
    flags: FrozenSet[str]
    llc_bytes: Optional[int]
    model_number: Optional[int] = None
    sockets: int = 1
    arm_implementer: str = ""
    arm_part: str = ""
    torch_capability: str = ""

    @property
    def uarch(self) -> Optional[Uarch]:
        """The core microarchitecture (:func:`._uarch.identify`), ``None`` if not in the table."""
        return identify(self.vendor, self.family, self.model_number, self.flags,
                        arm_implementer=self.arm_implementer, arm_part=self.arm_part,
                        model_name=self.model)


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


def _int(text: Optional[str]) -> Optional[int]:
    """``"25"`` -> 25, ``"0x41"`` -> 65; ``None`` for anything else."""
    try:
        return int(text, 0) if text else None
    except ValueError:
        return None


def parse_cpuinfo(text: str) -> Dict[str, object]:
    """The facts of a ``/proc/cpuinfo`` text (x86 or Arm), as a dict of CpuInfo fields.

    Keys: ``model vendor family model_number cores sockets flags arm_implementer arm_part
    cpuinfo_mhz`` (the highest "cpu MHz" line, ``None`` when absent, as on Arm).
    """
    fields: Dict[str, str] = {}
    cores_seen = set()
    sockets = set()
    physical = "0"
    processors = 0
    mhz = []
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        fields.setdefault(key, value)
        if key == "processor":
            processors += 1
        elif key == "physical id":
            physical = value
            sockets.add(value)
        elif key == "core id":
            cores_seen.add((physical, value))
        elif key == "cpu MHz":
            try:
                mhz.append(float(value))
            except ValueError:
                pass
    arm_vendor = {"0x41": "ARM", "0x61": "Apple"}.get(fields.get("CPU implementer", "").lower(), "")
    return {
        "model": fields.get("model name", ""),
        "vendor": fields.get("vendor_id", arm_vendor),
        "family": _int(fields.get("cpu family")),
        "model_number": _int(fields.get("model")),
        "cores": len(cores_seen) or processors,
        "sockets": max(len(sockets), 1),
        "flags": frozenset(fields.get("flags", fields.get("Features", "")).split()),
        "arm_implementer": fields.get("CPU implementer", ""),
        "arm_part": fields.get("CPU part", ""),
        "cpuinfo_mhz": max(mhz) if mhz else None,
    }


def lscpu_max_mhz(text: str) -> Optional[float]:
    """The "CPU max MHz" of an ``lscpu`` output (``LC_ALL=C``), ``None`` when absent."""
    match = re.search(r"^\s*CPU max MHz:\s*([0-9.]+)", text, re.MULTILINE)
    return float(match.group(1)) if match and float(match.group(1)) > 0 else None


def _lscpu() -> str:
    try:
        proc = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5,
                              env={**os.environ, "LC_ALL": "C"})
    except (OSError, subprocess.SubprocessError):
        return ""
    return proc.stdout if proc.returncode == 0 else ""


def pick_clock(
    *,
    cpufreq_khz: Optional[float],
    lscpu_mhz: Optional[float],
    family: Optional[Tuple[float, str]],
    cpuinfo_mhz: Optional[float],
) -> Tuple[float, str]:
    """(Hz, where from) of the highest clock the machine reaches; ``(0.0, "unknown")`` if none.

    The order: cpufreq max, lscpu max, the family's highest boost, /proc/cpuinfo MHz (see the
    module docstring). A pure function of what was read.

    >>> pick_clock(cpufreq_khz=None, lscpu_mhz=None, family=None, cpuinfo_mhz=2445.4)[0]
    2445400000.0
    """
    if cpufreq_khz:
        return cpufreq_khz * 1e3, "cpufreq cpuinfo_max_freq (max boost; all-core clocks under vector load are lower)"
    if lscpu_mhz:
        return lscpu_mhz * 1e6, "lscpu 'CPU max MHz' (max boost; all-core clocks under vector load are lower)"
    if family:
        return family[0], f"the family's highest boost clock, the OS shows none of its own: {family[1]}"
    if cpuinfo_mhz:
        return cpuinfo_mhz * 1e6, ("/proc/cpuinfo 'cpu MHz' (no cpufreq, no family clock: under a hypervisor "
                                   "often the base clock; boost may be higher)")
    return 0.0, "unknown"


def read_cpu_info() -> CpuInfo:
    """Parse ``/proc/cpuinfo``, ``/sys`` and ``lscpu`` (Linux); elsewhere fall back to os/torch facts."""
    facts = parse_cpuinfo(_read("/proc/cpuinfo") or "")
    model = str(facts["model"]) or _brand_string() or platform.processor() or platform.machine()
    vendor = str(facts["vendor"]) or platform.machine()
    cores = int(facts["cores"]) or os.cpu_count() or 1
    max_khz = _read("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
    info = CpuInfo(
        model=model, vendor=vendor, family=facts["family"], cores=cores, clock_hz=0.0,
        clock_source="unknown", flags=facts["flags"], llc_bytes=_llc_bytes(),
        model_number=facts["model_number"], sockets=int(facts["sockets"]),
        arm_implementer=str(facts["arm_implementer"]), arm_part=str(facts["arm_part"]),
        torch_capability=torch.backends.cpu.get_cpu_capability(),
    )
    clock_hz, source = pick_clock(
        cpufreq_khz=_float(max_khz),
        lscpu_mhz=None if max_khz else lscpu_max_mhz(_lscpu()),
        family=family_max_clock(info.uarch, model),
        cpuinfo_mhz=facts["cpuinfo_mhz"],
    )
    return CpuInfo(**{**info.__dict__, "clock_hz": clock_hz, "clock_source": source})


def _float(text: Optional[str]) -> Optional[float]:
    try:
        return float(text) if text else None
    except ValueError:
        return None


def _brand_string() -> str:
    """macOS: ``sysctl machdep.cpu.brand_string`` (``"Apple M2 Pro"``); ``""`` elsewhere."""
    if platform.system() != "Darwin":
        return ""
    try:
        out = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip()


def _fallback_fp32(info: CpuInfo) -> Tuple[float, str]:
    """FP32 FLOP/cycle/core from the flags alone (a core the table does not list)."""
    flags = info.flags
    capability = torch.backends.cpu.get_cpu_capability()
    if "avx512f" in flags or (not flags and capability == "AVX512"):
        zen4 = info.vendor == "AuthenticAMD" and info.family == 25
        return (32.0, "AVX-512 on Zen 4's 256-bit units") if zen4 else (64.0, "AVX-512, 2 FMA units assumed")
    if ("avx2" in flags and "fma" in flags) or (not flags and capability == "AVX2"):
        return 32.0, "AVX2, 2 x 256-bit FMA units assumed"
    if "avx" in flags:
        return 16.0, "AVX without FMA"
    if "asimd" in flags or platform.machine() in ("aarch64", "arm64"):
        return 16.0, "NEON, 2 x 128-bit FMA pipes assumed (SVE parts may have more)"
    return 8.0, "SSE"


def per_cycle_explained(info: CpuInfo) -> Dict[str, Tuple[float, str]]:
    """``"dtype:unit"`` -> (FLOP or int8 OP per cycle per core, why) for ``info``'s cores.

    fp32 vector: the core's FMA units at the widest ISA level the flags allow (fallback: the
    flags alone); fp64 half of it; matrix/dot extensions from the flags
    (:func:`._uarch.matrix_per_cycle`).
    """
    uarch = info.uarch
    if uarch is not None:
        level = isa_level(info.flags, uarch, info.torch_capability)
        fp32 = uarch.fp32_per_cycle[level]
        why = f"{uarch.name}, {level.upper()}: {uarch.units} [{uarch.source}]"
    else:
        fp32, why = _fallback_fp32(info)
        why = f"unlisted core, from the ISA flags: {why}"
    out = {"fp64:vector": (fp32 / 2, f"half of fp32 ({why})"), "fp32:vector": (fp32, why)}
    out.update(matrix_per_cycle(info.flags, fp32))
    return out


def flops_per_cycle(info: CpuInfo) -> Dict[str, float]:
    """FLOP (or int8 OP) per cycle per core, keyed ``"dtype:unit"`` (:func:`per_cycle_explained`).

    fp32 vector: SSE 8, AVX 16, AVX2+FMA 32 (two 256-bit FMA units), AVX-512 64 (two
    512-bit units; 32 on AMD Zen 4 and on client cores with one); fp64 half of fp32.
    Matrix work runs on the same FMA units unless: AVX512_BF16 / Arm BF16 (2x fp32),
    AVX512_FP16 (2x), VNNI (int8, 4x), or AMX (1024 bf16 / 2048 int8 per cycle per core).
    Without flags (non-Linux), torch's cpu capability (AVX2/AVX512) decides.
    """
    return {k: v for k, (v, _) in per_cycle_explained(info).items()}


def estimate_cpu_peaks(info: CpuInfo) -> Dict[str, Tuple[float, str]]:
    """``"dtype:unit"`` -> (peak FLOP/s, how) = cores x clock x FLOP/cycle/core.

    A pure function of ``info`` (the docs' CPU table feeds it published facts).

    Raises:
        UnknownDeviceError: ``info`` has no clock (the OS shows none and the family table
            lacks the core).

    >>> from torch_roofline.devices._cpu import CpuInfo
    >>> zen4 = CpuInfo("AMD EPYC 9654", "AuthenticAMD", 25, 96, 3.7e9, "amd.com", frozenset(
    ...     {"avx2", "fma", "avx512f", "avx512_bf16"}), None, model_number=0x11)
    >>> estimate_cpu_peaks(zen4)["fp32:vector"][0] / 1e12   # 96 x 3.7 GHz x 32
    11.3664
    """
    if not info.clock_hz > 0:
        raise UnknownDeviceError(
            f"cannot estimate the roofs of {info.model!r}: the OS reports no clock and the family "
            f"table has none for it. Let torch_roofline measure them (unset TORCH_ROOFLINE_NO_BENCH, or "
            f"devices.auto(measure=True)), or give them: Device(name=..., peak_flops={{'fp32': ...}}, "
            f"bandwidth=...)"
        )
    ghz = info.clock_hz / 1e9
    return {
        key: (cpu_peak_flops(info.cores, info.clock_hz, per_cycle),
              f"estimated ({info.cores} cores x {ghz:.3g} GHz [{info.clock_source}] x {per_cycle:g} "
              f"FLOP/cycle [{why}])")
        for key, (per_cycle, why) in per_cycle_explained(info).items()
    }
