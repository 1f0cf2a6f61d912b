"""CPU microarchitectures: what the estimator needs and the OS does not say.

Three tables, each row with its source, and the pure functions that read them:

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
from typing import Dict, FrozenSet, Mapping, Optional, Tuple

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

_INTEL_OPT = "Intel 64 and IA-32 Architectures Optimization Reference Manual"
_AMD_SOG = "AMD Software Optimization Guide for the family (17h / 19h / 1Ah)"
_ARM_SOG = "Arm Neoverse Software Optimization Guide of the core"
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


def _u(id: str, name: str, units: str, source: str, **per_cycle: float) -> Tuple[str, Uarch]:
    return id, Uarch(id, name, dict(per_cycle), units, source)


# fp32 FLOP/cycle/core = FMA units x fp32 lanes x 2. "avx"/"sse" (no FMA): one add + one
# multiply pipe, 8 / 4 lanes each.
UARCHES: Dict[str, Uarch] = dict([
    # -- Intel Core (client) and Xeon --------------------------------------------------------
    _u("haswell", "Intel Haswell", "2 x 256-bit FMA", _INTEL_OPT, avx2=32, avx=16, sse=8),
    _u("broadwell", "Intel Broadwell", "2 x 256-bit FMA", _INTEL_OPT, avx2=32, avx=16, sse=8),
    _u("skylake", "Intel Skylake client (Kaby/Coffee/Comet Lake)", "2 x 256-bit FMA", _INTEL_OPT,
       avx2=32, avx=16, sse=8),
    _u("skylake-avx512", "Intel Skylake-SP/X", "2 x 512-bit FMA (Silver, Bronze: 1)", _INTEL_OPT,
       avx512=64, avx2=32, avx=16, sse=8),
    _u("cascadelake", "Intel Cascade Lake", "2 x 512-bit FMA (Silver, Bronze: 1)", _INTEL_OPT,
       avx512=64, avx2=32, avx=16, sse=8),
    _u("cooperlake", "Intel Cooper Lake", "2 x 512-bit FMA", _INTEL_OPT, avx512=64, avx2=32, avx=16, sse=8),
    _u("icelake-server", "Intel Ice Lake-SP", "2 x 512-bit FMA", _INTEL_OPT, avx512=64, avx2=32, avx=16, sse=8),
    _u("sapphirerapids", "Intel Sapphire Rapids", "2 x 512-bit FMA + AMX", _INTEL_OPT,
       avx512=64, avx2=32, avx=16, sse=8),
    _u("emeraldrapids", "Intel Emerald Rapids", "2 x 512-bit FMA + AMX", _INTEL_OPT,
       avx512=64, avx2=32, avx=16, sse=8),
    _u("graniterapids", "Intel Granite Rapids", "2 x 512-bit FMA + AMX", _INTEL_OPT,
       avx512=64, avx2=32, avx=16, sse=8),
    _u("icelake-client", "Intel Ice Lake client", "1 x 512-bit FMA (ports 0+1) or 2 x 256-bit",
       _INTEL_OPT, avx512=32, avx2=32, avx=16, sse=8),
    _u("tigerlake", "Intel Tiger Lake", "1 x 512-bit FMA (ports 0+1) or 2 x 256-bit", _INTEL_OPT,
       avx512=32, avx2=32, avx=16, sse=8),
    _u("rocketlake", "Intel Rocket Lake", "1 x 512-bit FMA (ports 0+1) or 2 x 256-bit", _INTEL_OPT,
       avx512=32, avx2=32, avx=16, sse=8),
    _u("alderlake", "Intel Alder Lake (hybrid)", "P-core 2 x 256-bit FMA; E-cores counted alike",
       _INTEL_OPT, avx2=32, avx=16, sse=8),
    _u("raptorlake", "Intel Raptor Lake (hybrid)", "P-core 2 x 256-bit FMA; E-cores counted alike",
       _INTEL_OPT, avx2=32, avx=16, sse=8),
    _u("meteorlake", "Intel Meteor Lake (hybrid)", "P-core 2 x 256-bit FMA; E-cores counted alike",
       _INTEL_OPT, avx2=32, avx=16, sse=8),
    _u("arrowlake", "Intel Arrow Lake (hybrid)", "P-core 2 x 256-bit FMA; E-cores counted alike",
       _INTEL_OPT, avx2=32, avx=16, sse=8),
    _u("arrowlake-s", "Intel Arrow Lake-S (hybrid)", "P-core 2 x 256-bit FMA; E-cores counted alike",
       _INTEL_OPT, avx2=32, avx=16, sse=8),
    _u("lunarlake", "Intel Lunar Lake (hybrid)", "P-core 2 x 256-bit FMA; E-cores counted alike",
       _INTEL_OPT, avx2=32, avx=16, sse=8),
    # -- AMD Zen (EPYC, Ryzen, Threadripper) ------------------------------------------------
    _u("znver1", "AMD Zen / Zen+", "2 x 128-bit FMA; 256-bit ops split", _AMD_SOG, avx2=16, avx=16, sse=8),
    _u("znver2", "AMD Zen 2", "2 x 256-bit FMA", _AMD_SOG + "; Microway 'Rome': 16 FP64 FLOP/cycle",
       avx2=32, avx=16, sse=8),
    _u("znver3", "AMD Zen 3", "2 x 256-bit FMA", _AMD_SOG, avx2=32, avx=16, sse=8),
    _u("znver4", "AMD Zen 4", "2 x 256-bit FMA; 512-bit ops double-pumped", _AMD_SOG,
       avx512=32, avx2=32, avx=16, sse=8),
    _u("znver5", "AMD Zen 5", "2 x 512-bit FMA (full 512-bit datapath)", _AMD_SOG,
       avx512=64, avx2=32, avx=16, sse=8),
    _u("znver5-mobile", "AMD Zen 5 mobile", "2 x 256-bit FMA; 512-bit ops double-pumped", _AMD_SOG,
       avx512=32, avx2=32, avx=16, sse=8),
    # -- Arm Neoverse (Graviton, Grace, Altra, Cobalt) --------------------------------------
    _u("neoverse-n1", "Arm Neoverse N1 (Graviton2, Altra)", "2 x 128-bit FMA", _ARM_SOG, neon=16),
    _u("neoverse-n2", "Arm Neoverse N2 (Cobalt 100)", "2 x 128-bit FMA (SVE2 128-bit)", _ARM_SOG,
       sve=16, neon=16),
    _u("neoverse-n3", "Arm Neoverse N3", "2 x 128-bit FMA (SVE2 128-bit)", _ARM_SOG, sve=16, neon=16),
    _u("neoverse-v1", "Arm Neoverse V1 (Graviton3)", "2 x 256-bit SVE FMA (4 x 128-bit NEON)", _ARM_SOG,
       sve=32, neon=32),
    _u("neoverse-v2", "Arm Neoverse V2 (Graviton4, Grace)", "4 x 128-bit FMA (SVE2 128-bit)", _ARM_SOG,
       sve=32, neon=32),
    _u("neoverse-v3", "Arm Neoverse V3", "4 x 128-bit FMA (SVE2 128-bit)", _ARM_SOG, sve=32, neon=32),
    # -- Apple M (P-cores; E-cores counted alike) -------------------------------------------
    _u("apple-m1", "Apple M1 (Firestorm)", "P-core 4 x 128-bit FMA; E-cores counted alike",
       "read-thirdparty: Dougall Johnson, Firestorm instruction tables (Apple publishes none)", neon=32),
    _u("apple-m2", "Apple M2 (Avalanche)", "P-core 4 x 128-bit FMA; E-cores counted alike",
       "read-thirdparty: Dougall Johnson's Firestorm tables, same FP back end (Apple publishes none)", neon=32),
    _u("apple-m3", "Apple M3", "P-core 4 x 128-bit FMA; E-cores counted alike",
       "read-thirdparty (Apple publishes none)", neon=32),
    _u("apple-m4", "Apple M4", "P-core 4 x 128-bit FMA; E-cores counted alike",
       "read-thirdparty (Apple publishes none)", neon=32),
])

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


# (uarch id, segment) -> (Hz, source). The highest boost clock of the family: an upper bound
# for any part of it, used only when neither cpufreq nor lscpu gives this machine's own.
# Segment "" rows apply to any name (Arm and Apple parts).
FAMILY_MAX_CLOCK_HZ: Dict[Tuple[str, str], Tuple[float, str]] = {
    ("znver2", "server"): (3.4e9, "AMD EPYC 7002 boost clocks up to 3.4 GHz (Microway, 'Detailed Specifications of the AMD EPYC Rome CPUs')"),
    ("znver3", "server"): (4.1e9, "AMD EPYC 72F3, the fastest EPYC 7003: max boost 4.1 GHz (amd.com product page)"),
    ("znver4", "server"): (4.4e9, "AMD EPYC 9174F, the fastest EPYC 9004: max boost 4.4 GHz (amd.com product page)"),
    ("znver5", "server"): (5.0e9, "AMD EPYC 9175F, the fastest EPYC 9005: max boost 5.0 GHz (amd.com product page)"),
    ("znver2", "client"): (4.7e9, "AMD Ryzen 9 3950X max boost 4.7 GHz (amd.com product page)"),
    ("znver3", "client"): (4.9e9, "AMD Ryzen 9 5950X max boost 4.9 GHz (amd.com product page)"),
    ("znver4", "client"): (5.7e9, "AMD Ryzen 9 7950X max boost 5.7 GHz (amd.com product page)"),
    ("znver5", "client"): (5.7e9, "AMD Ryzen 9 9950X max boost 5.7 GHz (amd.com product page)"),
    ("neoverse-n1", ""): (3.3e9, "Ampere Altra Q80-33, the fastest N1 part: 3.3 GHz (amperecomputing.com)"),
    ("neoverse-v1", ""): (2.6e9, "AWS Graviton3: 2.6 GHz (en.wikichip.org/wiki/AWS_Graviton3)"),
    ("apple-m1", ""): (3.2e9, "Apple M1 P-cluster max 3.2 GHz (Wikipedia 'Apple M1')"),
    ("apple-m2", ""): (3.49e9, "Apple M2 P-cores 3.49 GHz (MacRumors forum spec list)"),
}


def family_max_clock(uarch: Optional[Uarch], model_name: str) -> Optional[Tuple[float, str]]:
    """(Hz, source) of the family's highest boost clock, or ``None`` when the table lacks it."""
    if uarch is None:
        return None
    uid = "znver5" if uarch.id == "znver5-mobile" else uarch.id
    return FAMILY_MAX_CLOCK_HZ.get((uid, segment(model_name))) or FAMILY_MAX_CLOCK_HZ.get((uid, ""))


def _ddr(channels: int, mts: int, what: str) -> Tuple[float, str]:
    """Peak DRAM B/s of ``channels`` x ``mts`` MT/s x 8 bytes, and how it was derived."""
    return channels * mts * 1e6 * 8, f"{what}: {channels} channels x DDR {mts} MT/s x 8 B"


# (uarch id, segment) -> (B/s per socket, how). The platform's peak, a bound on any machine
# built on it; a VM with a few cores of the socket reaches far less.
PLATFORM_BANDWIDTH: Dict[Tuple[str, str], Tuple[float, str]] = {
    ("znver2", "server"): _ddr(8, 3200, "AMD EPYC 7002 (amd.com)"),
    ("znver3", "server"): _ddr(8, 3200, "AMD EPYC 7003 (amd.com)"),
    ("znver4", "server"): _ddr(12, 4800, "AMD EPYC 9004 (hpctech.co.jp EPYC 9004 table; amd.com)"),
    ("znver5", "server"): _ddr(12, 6400, "AMD EPYC 9005 (amd.com)"),
    ("znver2", "client"): _ddr(2, 3200, "AMD Ryzen 3000 (amd.com)"),
    ("znver3", "client"): _ddr(2, 3200, "AMD Ryzen 5000 (amd.com)"),
    ("znver4", "client"): _ddr(2, 5200, "AMD Ryzen 7000 (amd.com)"),
    ("znver5", "client"): _ddr(2, 5600, "AMD Ryzen 9000 (amd.com)"),
    ("skylake-avx512", "server"): _ddr(6, 2666, "Intel Xeon Scalable 1st gen (ark.intel.com)"),
    ("cascadelake", "server"): _ddr(6, 2933, "Intel Xeon Scalable 2nd gen (ark.intel.com)"),
    ("cascadelake", "client"): _ddr(4, 2933, "Intel Core X 10000 series (ark.intel.com)"),
    ("icelake-server", "server"): _ddr(8, 3200, "Intel Xeon Scalable 3rd gen (ark.intel.com)"),
    ("sapphirerapids", "server"): _ddr(8, 4800, "Intel Xeon Scalable 4th gen (ark.intel.com)"),
    ("emeraldrapids", "server"): _ddr(8, 5600, "Intel Xeon Scalable 5th gen (ark.intel.com)"),
    ("graniterapids", "server"): _ddr(12, 8800, "Intel Xeon 6900P with MRDIMM (ark.intel.com)"),
    ("skylake", "client"): _ddr(2, 2933, "Intel Core 10th gen (ark.intel.com)"),
    ("rocketlake", "client"): _ddr(2, 3200, "Intel Core 11th gen (ark.intel.com)"),
    ("alderlake", "client"): _ddr(2, 4800, "Intel Core 12th gen (ark.intel.com)"),
    ("raptorlake", "client"): _ddr(2, 5600, "Intel Core 13th/14th gen (ark.intel.com)"),
    ("neoverse-n1", ""): _ddr(8, 3200, "AWS Graviton2 / Ampere Altra"),
    ("neoverse-v1", ""): _ddr(8, 4800, "AWS Graviton3 (en.wikichip.org/wiki/AWS_Graviton3)"),
    ("neoverse-v2", ""): _ddr(12, 5600, "AWS Graviton4 (Grace: 500 GB/s LPDDR5X per CPU)"),
}
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
