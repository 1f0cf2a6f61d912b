"""CPU microarchitectures: what the estimator needs and the OS does not say.

Three tables, each row with its source (read from the packaged ``uarch.toml``: data, one entry
per core), and the pure functions that read them:

* :data:`UARCHES`: FP32 FLOP per cycle per core for each vector ISA level the core runs
  (FMA units x vector width x 2), e.g. AMD Zen 4 runs AVX-512 on 256-bit units (32, not 64);
* :data:`FAMILY_MAX_CLOCK_HZ`: the highest boost clock of a family, for machines whose OS
  hides the clock (cloud VMs: no cpufreq, ``/proc/cpuinfo`` shows the base or TSC clock);
* :data:`PLATFORM_BANDWIDTH`: the DRAM peak of a platform (channels x MT/s x 8 B per
  socket), the bandwidth of an estimate when measuring is refused.

Identification (:func:`identify`) follows LLVM's host detection
(``llvm/lib/TargetParser/Host.cpp``: x86 family/model -> ``znver4``, ``sapphirerapids``...;
Arm ``CPU implementer``/``CPU part`` -> ``neoverse-v1``, ``apple-m1``...), so the ids here are
LLVM's ``-mcpu`` names.

Matrix extensions (:func:`matrix_per_cycle`) come from the ISA flags, not the table: AMX
(1024 bf16 / 2048 int8 FLOP per cycle per core), AVX512_BF16 and Arm BF16 dot products
(2 bf16 products per fp32 lane: 2x the fp32 rate), VNNI / Arm dot products (4 int8 products
per 32-bit lane: 4x), AVX512_FP16 and Arm FP16 arithmetic (2x).

Honest limits: a roof must bound what runs, so where a part varies the table leans high
(hybrid CPUs: every core counted at the performance core's rate; Xeon Scalable 1st/2nd gen:
two AVX-512 FMA units unless the name says Silver or Bronze). Apple's matrix coprocessor
(AMX; SME on M4) is undocumented and not modelled: Accelerate's GEMMs can run above an
estimated Apple roof, which is one reason measured roofs are the default.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from typing import Any, Dict, FrozenSet, Mapping, Optional, Tuple

try:
    import tomllib
except ImportError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

__all__ = [
    "Uarch",
    "UARCHES",
    "FAMILY_MAX_CLOCK_HZ",
    "PLATFORM_BANDWIDTH",
    "APPLE_BANDWIDTH",
    "identify",
    "isa_level",
    "matrix_per_cycle",
    "segment",
    "family_max_clock",
    "platform_bandwidth",
]

_LLVM = "llvm/lib/TargetParser/Host.cpp"


@dataclass(frozen=True)
class Uarch:
    """One core microarchitecture.

    Attributes:
        id: LLVM's ``-mcpu`` name (``"znver4"``, ``"neoverse-v1"``, ``"apple-m1"``).
        name: human name.
        fp32_per_cycle: vector ISA level (``"avx512"``, ``"avx2"``, ``"avx"``, ``"sse"``,
            ``"sve"``, ``"neon"``) -> FP32 FLOP per cycle per core (2 per FMA lane).
        units: the FMA units in words (``"2 x 256-bit FMA; 512-bit ops double-pumped"``).
        source: where ``fp32_per_cycle`` comes from.
    """

    id: str
    name: str
    fp32_per_cycle: Mapping[str, float]
    units: str
    source: str


def _read_table() -> Dict[str, Any]:
    """The packaged ``uarch.toml`` (its header documents the fields)."""
    return tomllib.loads(resources.files("torch_roofline.devices").joinpath("uarch.toml").read_text("utf-8"))


def _ddr(channels: int, mts: int, what: str) -> Tuple[float, str]:
    """Peak DRAM B/s of ``channels`` x ``mts`` MT/s x 8 bytes, and how it was derived."""
    return channels * mts * 1e6 * 8, f"{what}: {channels} channels x DDR {mts} MT/s x 8 B"


def _segment_key(key: str) -> str:
    return "" if key == "any" else key


_TABLE = _read_table()
_SOURCES: Dict[str, str] = _TABLE.pop("sources")
_CORES: Dict[str, Dict[str, Any]] = _TABLE

UARCHES: Dict[str, Uarch] = {
    uid: Uarch(uid, e["name"], dict(e["fp32_per_cycle"]), e["units"], _SOURCES.get(e["source"], e["source"]))
    for uid, e in _CORES.items()
}

# (uarch id, segment) -> (Hz, source). The highest boost clock of the family: an upper bound
# for any part of it, used only when neither cpufreq nor lscpu gives this machine's own.
# Segment "" rows apply to any name (Arm and Apple parts).
FAMILY_MAX_CLOCK_HZ: Dict[Tuple[str, str], Tuple[float, str]] = {
    (uid, _segment_key(seg)): (float(c["hz"]), c["source"])
    for uid, e in _CORES.items() for seg, c in e.get("max_clock", {}).items()
}

# (uarch id, segment) -> (B/s per socket, how). The platform's peak, a bound on any machine
# built on it; a VM with a few cores of the socket reaches far less.
PLATFORM_BANDWIDTH: Dict[Tuple[str, str], Tuple[float, str]] = {
    (uid, _segment_key(seg)): _ddr(d["channels"], d["mts"], d["source"])
    for uid, e in _CORES.items() for seg, d in e.get("dram", {}).items()
}

_INTEL_MODELS: Dict[int, str] = {
    0x3C: "haswell", 0x3F: "haswell", 0x45: "haswell", 0x46: "haswell",
    0x3D: "broadwell", 0x47: "broadwell", 0x4F: "broadwell", 0x56: "broadwell",
    0x4E: "skylake", 0x5E: "skylake", 0x8E: "skylake", 0x9E: "skylake", 0xA5: "skylake", 0xA6: "skylake",
    0xA7: "rocketlake", 0x7D: "icelake-client", 0x7E: "icelake-client", 0x8C: "tigerlake", 0x8D: "tigerlake",
    0x97: "alderlake", 0x9A: "alderlake", 0xB7: "raptorlake", 0xBA: "raptorlake", 0xBF: "raptorlake",
    0xAA: "meteorlake", 0xAC: "meteorlake", 0xC5: "arrowlake", 0xB5: "arrowlake", 0xC6: "arrowlake-s",
    0xBD: "lunarlake", 0x6A: "icelake-server", 0x6C: "icelake-server", 0x8F: "sapphirerapids",
    0xCF: "emeraldrapids", 0xAD: "graniterapids", 0xAE: "graniterapids",
}
_ARM_PARTS: Dict[str, str] = {
    "0xd0c": "neoverse-n1", "0xd49": "neoverse-n2", "0xd8e": "neoverse-n3",
    "0xd40": "neoverse-v1", "0xd4f": "neoverse-v2", "0xd84": "neoverse-v3",
}
_APPLE_PARTS: Dict[str, str] = {
    **{p: "apple-m1" for p in ("0x020", "0x021", "0x022", "0x023", "0x024", "0x025", "0x028", "0x029")},
    **{p: "apple-m2" for p in ("0x030", "0x031", "0x032", "0x033", "0x034", "0x035", "0x038", "0x039")},
    "0x048": "apple-m3", "0x049": "apple-m3",
}


def _in(model: int, *ranges: Tuple[int, int]) -> bool:
    return any(lo <= model <= hi for lo, hi in ranges)


def _amd_id(family: int, model: Optional[int], flags: FrozenSet[str]) -> Optional[str]:
    """LLVM's AMD family/model ranges; with no model, the flags tell Zen 3 from Zen 4."""
    if family == 23:
        if model is None:
            return "znver2" if "clwb" in flags else "znver1"
        zen2 = _in(model, (0x30, 0x3F), (0x47, 0x47), (0x60, 0x7F), (0x84, 0x87), (0x90, 0xAF))
        return "znver2" if zen2 else "znver1"
    if family == 25:
        if model is None:
            return "znver4" if "avx512f" in flags else "znver3"
        zen4 = _in(model, (0x10, 0x1F), (0x60, 0x7F), (0xA0, 0xAF))
        return "znver4" if zen4 else "znver3"
    if family == 26:
        # Strix (20h-3Fh) and Krackan (60h-6Fh) are the mobile parts with 256-bit datapaths
        mobile = model is not None and _in(model, (0x20, 0x3F), (0x60, 0x6F))
        return "znver5-mobile" if mobile else "znver5"
    return None


def _intel_id(family: int, model: Optional[int], flags: FrozenSet[str]) -> Optional[str]:
    if family != 6 or model is None:
        return None
    if model == 0x55:
        if "avx512_bf16" in flags:
            return "cooperlake"
        return "cascadelake" if "avx512_vnni" in flags else "skylake-avx512"
    return _INTEL_MODELS.get(model)


def identify(
    vendor: str,
    family: Optional[int] = None,
    model: Optional[int] = None,
    flags: FrozenSet[str] = frozenset(),
    *,
    arm_implementer: str = "",
    arm_part: str = "",
    model_name: str = "",
) -> Optional[Uarch]:
    """The core microarchitecture, or ``None`` when the table does not know it.

    Args:
        vendor: ``/proc/cpuinfo`` ``vendor_id`` (``"AuthenticAMD"``, ``"GenuineIntel"``).
        family, model: x86 CPU family and model numbers.
        flags: ISA flags (they tell Zen 3 from Zen 4 when a hypervisor hides the model).
        arm_implementer, arm_part: Arm ``CPU implementer`` / ``CPU part`` (``"0x41"``, ``"0xd40"``).
        model_name: the brand string (``"Apple M2 Pro"`` on macOS).

    >>> identify("AuthenticAMD", 25, 0x11).id      # Genoa
    'znver4'
    """
    uid: Optional[str] = None
    if vendor == "AuthenticAMD" and family is not None:
        uid = _amd_id(family, model, flags)
    elif vendor == "GenuineIntel" and family is not None:
        uid = _intel_id(family, model, flags)
    elif arm_implementer.lower() == "0x41":
        uid = _ARM_PARTS.get(arm_part.lower())
    elif arm_implementer.lower() == "0x61":
        uid = _APPLE_PARTS.get(arm_part.lower())
    if uid is None:
        match = re.search(r"\bapple (m[1-4])\b", model_name.lower())
        uid = f"apple-{match.group(1)}" if match else None
    return UARCHES.get(uid) if uid else None


def isa_level(flags: FrozenSet[str], uarch: Optional[Uarch] = None, capability: str = "") -> str:
    """The widest vector ISA the OS lets programs use, as a key of ``fp32_per_cycle``.

    The flags and torch's own CPUID probe decide, not the core: a hypervisor that hides
    ``avx512f`` usually hides it from oneDNN and MKL too, so their kernels run AVX2 there.
    ``capability``: ``torch.backends.cpu.get_cpu_capability()`` of this machine (``"AVX512"``
    counts even when ``/proc/cpuinfo`` lacks the flag), ``""`` for facts of another machine.
    """
    if "avx512f" in flags or capability == "AVX512":
        level = "avx512"
    elif "avx2" in flags and "fma" in flags:
        level = "avx2"
    elif "avx" in flags:
        level = "avx"
    elif "sve" in flags:
        level = "sve"
    elif "asimd" in flags or (uarch is not None and "neon" in uarch.fp32_per_cycle):
        level = "neon"
    else:
        level = "sse"
    if uarch is not None and level not in uarch.fp32_per_cycle:
        # e.g. "sve" on a core listed with NEON only: its widest listed level
        return max(uarch.fp32_per_cycle, key=uarch.fp32_per_cycle.get)
    return level


def matrix_per_cycle(flags: FrozenSet[str], fp32_per_cycle: float) -> Dict[str, Tuple[float, str]]:
    """``"dtype:unit"`` -> (FLOP or int8 OP per cycle per core, why) from matrix/dot ISA flags.

    Linux flag names: x86 ``amx_bf16 amx_int8 amx_fp16 avx512_bf16 avx512_fp16 avx512_vnni
    avx_vnni``; Arm ``bf16 i8mm asimddp asimdhp``. ``fp32_per_cycle`` is the core's fp32
    vector rate at its ISA level (dot-product extensions run on the same units).
    """
    out: Dict[str, Tuple[float, str]] = {}
    if "avx512_vnni" in flags or "avx_vnni" in flags or "asimddp" in flags or "i8mm" in flags:
        out["int8:matrix"] = (4 * fp32_per_cycle, "4 int8 products per 32-bit lane (VNNI / SDOT)")
    if "avx512_bf16" in flags or "bf16" in flags:
        out["bf16:matrix"] = (2 * fp32_per_cycle, "2 bf16 products per fp32 lane (VDPBF16PS / BFDOT)")
    if "avx512_fp16" in flags or "asimdhp" in flags:
        why = "fp16 lanes: twice the fp32 lanes (AVX512-FP16 / FP16 FMLA)"
        out["fp16:matrix"] = out["fp16:vector"] = (2 * fp32_per_cycle, why)
    amx = "Intel AMX: 1024 bf16/fp16 or 2048 int8 operations per cycle per core"
    if "amx_bf16" in flags:
        out["bf16:matrix"] = (1024.0, amx)
    if "amx_fp16" in flags:
        out["fp16:matrix"] = (1024.0, amx)
    if "amx_int8" in flags:
        out["int8:matrix"] = (2048.0, amx)
    return out


def segment(model_name: str) -> str:
    """``"server"`` (EPYC, Xeon), ``"client"`` (Ryzen, Core, Threadripper counts as client) or ``""``."""
    name = model_name.lower()
    if "epyc" in name or "xeon" in name:
        return "server"
    if "ryzen" in name or "core" in name or "threadripper" in name:
        return "client"
    return ""




def family_max_clock(uarch: Optional[Uarch], model_name: str) -> Optional[Tuple[float, str]]:
    """(Hz, source) of the family's highest boost clock, or ``None`` when the table lacks it."""
    if uarch is None:
        return None
    uid = "znver5" if uarch.id == "znver5-mobile" else uarch.id
    return FAMILY_MAX_CLOCK_HZ.get((uid, segment(model_name))) or FAMILY_MAX_CLOCK_HZ.get((uid, ""))


# Apple SoCs: unified memory bandwidth as Apple's tech specs state it (M1: LPDDR4X-4266 x
# 128 bit / 8 = 68.25 GB/s, derived; Apple did not state it).
APPLE_BANDWIDTH: Dict[str, float] = {
    "m1": 68.25e9, "m1 pro": 200e9, "m1 max": 400e9, "m1 ultra": 800e9,
    "m2": 100e9, "m2 pro": 200e9, "m2 max": 400e9, "m2 ultra": 800e9,
    "m3": 100e9, "m3 pro": 150e9, "m3 max": 400e9,
    "m4": 120e9, "m4 pro": 273e9, "m4 max": 546e9,
}


def platform_bandwidth(uarch: Optional[Uarch], model_name: str) -> Optional[Tuple[float, str]]:
    """(B/s per socket, how) of the platform's DRAM peak, or ``None`` when unknown."""
    name = model_name.lower()
    apple = re.search(r"\bapple (m[1-4](?: (?:pro|max|ultra))?)\b", name)
    if apple:
        chip = apple.group(1)
        if chip in APPLE_BANDWIDTH:
            return APPLE_BANDWIDTH[chip], f"Apple {chip.upper()} unified memory (apple.com tech specs)"
        return None
    if uarch is None:
        return None
    uid = "znver5" if uarch.id == "znver5-mobile" else uarch.id
    return PLATFORM_BANDWIDTH.get((uid, segment(model_name))) or PLATFORM_BANDWIDTH.get((uid, ""))
