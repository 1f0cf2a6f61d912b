"""CPU roofs for roof="auto": identification, the estimate, the measured default, provenance.

Oracles: LLVM's host detection (family/model -> core), vendors' per-cycle and total figures
(docs/cpu-roofs.md cites each), and hand arithmetic in comments. The measuring tests shrink
the kernels and budgets: the real run takes ~10 s and is checked by hand (docs/cpu-roofs.md).
"""

from _paths import REPO_ROOT
import argparse
import json
import re
import types
from pathlib import Path

import pytest

from torch_roofline import devices
from torch_roofline.devices import _auto, _cpu_bench, bench
from torch_roofline.devices._cpu import CpuInfo, lscpu_max_mhz, parse_cpuinfo, pick_clock
from torch_roofline.devices._uarch import identify, matrix_per_cycle, platform_bandwidth

ROOT = Path(REPO_ROOT)
AVX2 = {"avx", "avx2", "fma"}


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_ROOFLINE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv(_auto.NO_BENCH_ENV, raising=False)


def cpu(model="x", vendor="GenuineIntel", family=None, cores=2, clock=1e9, flags=(), **kw):
    return CpuInfo(model, vendor, family, cores, clock, "test", frozenset(flags), None, **kw)


# -- which core is it ------------------------------------------------------------------------
@pytest.mark.parametrize("vendor,family,model,flags,expected", [
    # LLVM Host.cpp: family 19h models 00h-0Fh Zen 3 (this project's VM: family 25 model 1)
    ("AuthenticAMD", 25, 0x01, AVX2, "znver3"),
    ("AuthenticAMD", 25, 0x11, AVX2 | {"avx512f"}, "znver4"),       # 10h-1Fh Genoa
    ("AuthenticAMD", 25, None, AVX2 | {"avx512f"}, "znver4"),        # no model: AVX-512 means Zen 4
    ("AuthenticAMD", 23, 0x31, AVX2, "znver2"),                      # 30h-3Fh Rome
    ("AuthenticAMD", 26, 0x44, AVX2 | {"avx512f"}, "znver5"),        # 40h-4Fh Granite Ridge
    ("AuthenticAMD", 26, 0x24, AVX2 | {"avx512f"}, "znver5-mobile"), # 20h-2Fh Strix
    ("GenuineIntel", 6, 0x8F, AVX2 | {"avx512f"}, "sapphirerapids"),
    ("GenuineIntel", 6, 0x55, AVX2 | {"avx512f", "avx512_vnni"}, "cascadelake"),
    ("GenuineIntel", 6, 0x55, AVX2 | {"avx512f"}, "skylake-avx512"),
    ("GenuineIntel", 6, 0xB7, AVX2, "raptorlake"),
])
def test_x86_cores_identified_as_llvm_does(vendor, family, model, flags, expected):
    assert identify(vendor, family, model, frozenset(flags)).id == expected


def test_arm_and_apple_cores_identified():
    assert identify("ARM", arm_implementer="0x41", arm_part="0xd40").id == "neoverse-v1"  # Graviton3
    assert identify("ARM", arm_implementer="0x41", arm_part="0xd4f").id == "neoverse-v2"  # Grace
    assert identify("Apple", arm_implementer="0x61", arm_part="0x022").id == "apple-m1"
    assert identify("", model_name="Apple M2 Pro").id == "apple-m2"                       # macOS brand string
    assert identify("GenuineIntel", 6, 0x01) is None                                      # not in the table


# -- FLOP per cycle --------------------------------------------------------------------------
def test_fma_units_times_vector_width():
    per_cycle = lambda info: devices._cpu.flops_per_cycle(info)["fp32:vector"]  # noqa: E731
    # Zen 4: 2 x 256-bit FMA (AVX-512 double-pumped) = 2 x 8 lanes x 2 = 32
    assert per_cycle(cpu(vendor="AuthenticAMD", family=25, model_number=0x11, flags=AVX2 | {"avx512f"})) == 32
    # Zen 5 desktop: 2 x 512-bit FMA = 2 x 16 x 2 = 64; Zen 5 mobile (256-bit datapath): 32
    assert per_cycle(cpu(vendor="AuthenticAMD", family=26, model_number=0x44, flags=AVX2 | {"avx512f"})) == 64
    assert per_cycle(cpu(vendor="AuthenticAMD", family=26, model_number=0x24, flags=AVX2 | {"avx512f"})) == 32
    # a hypervisor hiding AVX-512 hides it from MKL/oneDNN too: Zen 5 then runs AVX2, 32 ...
    assert per_cycle(cpu(vendor="AuthenticAMD", family=26, model_number=0x44, flags=AVX2)) == 32
    # ... unless torch's own CPUID probe finds AVX-512 anyway (then oneDNN uses it): 64
    assert per_cycle(cpu(vendor="AuthenticAMD", family=26, model_number=0x44, flags=AVX2,
                         torch_capability="AVX512")) == 64
    # Sapphire Rapids: 2 x 512-bit FMA = 64; Neoverse N1 2 x 128-bit = 16; V1 2 x 256-bit SVE = 32
    assert per_cycle(cpu(family=6, model_number=0x8F, flags=AVX2 | {"avx512f"})) == 64
    assert per_cycle(cpu(vendor="ARM", flags={"asimd"}, arm_implementer="0x41", arm_part="0xd0c")) == 16
    assert per_cycle(cpu(vendor="ARM", flags={"asimd", "sve"}, arm_implementer="0x41", arm_part="0xd40")) == 32


def test_matrix_extensions_from_flags():
    # AMX: 1024 bf16 / 2048 int8 operations per cycle per core (Intel)
    amx = matrix_per_cycle(frozenset({"amx_bf16", "amx_int8", "avx512_bf16"}), 64)
    assert amx["bf16:matrix"][0] == 1024 and amx["int8:matrix"][0] == 2048
    # AVX512_BF16 without AMX: VDPBF16PS, 2 bf16 products per fp32 lane: 2 x 64 = 128
    assert matrix_per_cycle(frozenset({"avx512_bf16"}), 64)["bf16:matrix"][0] == 128
    # VNNI: 4 int8 products per 32-bit lane: 4 x 32 = 128
    assert matrix_per_cycle(frozenset({"avx_vnni"}), 32)["int8:matrix"][0] == 128
    assert matrix_per_cycle(frozenset(AVX2), 32) == {}


# -- the clock -------------------------------------------------------------------------------
def test_clock_sources_in_order():
    family = (4.1e9, "AMD EPYC 72F3")
    assert pick_clock(cpufreq_khz=3.5e6, lscpu_mhz=3600, family=family, cpuinfo_mhz=2445)[0] == 3.5e9
    assert pick_clock(cpufreq_khz=None, lscpu_mhz=3600, family=family, cpuinfo_mhz=2445)[0] == 3.6e9
    clock, why = pick_clock(cpufreq_khz=None, lscpu_mhz=None, family=family, cpuinfo_mhz=2445)
    assert clock == 4.1e9 and "72F3" in why          # a VM's base clock loses to the family's boost
    assert pick_clock(cpufreq_khz=None, lscpu_mhz=None, family=None, cpuinfo_mhz=2445.4)[0] == 2445.4e6
    assert pick_clock(cpufreq_khz=None, lscpu_mhz=None, family=None, cpuinfo_mhz=None) == (0.0, "unknown")
    assert lscpu_max_mhz("Model name:   X\nCPU max MHz:  5083.3979\nCPU min MHz: 545\n") == 5083.3979
    assert lscpu_max_mhz("Model name: AMD EPYC\n") is None


def test_parse_cpuinfo_x86_and_arm():
    x86 = ("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 1\nmodel name\t: AMD EPYC\n"
           "cpu MHz\t\t: 2445.404\nphysical id\t: 0\ncore id\t\t: 0\nflags\t\t: fpu avx avx2 fma\n\n"
           "processor\t: 1\nphysical id\t: 0\ncore id\t\t: 1\ncpu MHz\t\t: 2445.404\n")
    facts = parse_cpuinfo(x86)
    assert (facts["vendor"], facts["family"], facts["model_number"], facts["cores"], facts["sockets"]) == (
        "AuthenticAMD", 25, 1, 2, 1)
    assert facts["cpuinfo_mhz"] == 2445.404 and "avx2" in facts["flags"]
    arm = ("processor\t: 0\nBogoMIPS\t: 2100.00\nFeatures\t: fp asimd sve bf16\nCPU implementer\t: 0x41\n"
           "CPU part\t: 0xd40\n\nprocessor\t: 1\nCPU part\t: 0xd40\n")
    facts = parse_cpuinfo(arm)
    assert (facts["vendor"], facts["arm_part"], facts["cores"], facts["cpuinfo_mhz"]) == ("ARM", "0xd40", 2, None)
    assert {"sve", "bf16"} <= facts["flags"]


# -- the estimate ----------------------------------------------------------------------------
def _epyc_vm(clock=4.1e9):
    # this project's VM: 2 cores, family 25 model 1 (Zen 3 to LLVM), AVX2 only
    return cpu("AMD EPYC", "AuthenticAMD", 25, 2, clock, AVX2, model_number=1)


def test_estimate_cpu_is_labelled_and_explained():
    d = devices.estimate_cpu(_epyc_vm())
    # 2 cores x 4.1 GHz x 32 FLOP/cycle = 262.4 GFLOP/s; fp64 half
    assert d.peak_flops("fp32", "vector") == pytest.approx(262.4e9)
    assert d.peak_flops("fp64", "vector") == pytest.approx(131.2e9)
    # EPYC 7003 platform: 8 channels x 3200 MT/s x 8 B = 204.8 GB/s
    assert d.memory_bandwidth == pytest.approx(204.8e9)
    roof = d.roof("fp32", "matrix")
    assert (d.source, roof.source, roof.unit) == ("estimated", "estimated", "vector")   # no matrix unit
    assert roof.how.startswith("estimated (2 cores x 4.1 GHz") and "bandwidth: estimated" in roof.how
    assert "2 x 256-bit FMA" in roof.how


def test_estimate_refuses_to_guess():
    with pytest.raises(devices.UnknownDeviceError, match="no clock.*measure"):
        devices.estimate_cpu(_epyc_vm(clock=0.0))
    unknown = cpu("Some CPU", "GenuineIntel", 6, 4, 3e9, AVX2, model_number=0x01)
    with pytest.raises(devices.UnknownDeviceError, match="bandwidth of 'Some CPU'.*Device\\("):
        devices.estimate_cpu(unknown)
    assert platform_bandwidth(None, "Apple M9") is None


def test_apple_bandwidth_from_the_chip_name():
    # Apple tech specs: M2 100 GB/s, M1 Max 400 GB/s
    assert platform_bandwidth(identify("", model_name="Apple M2"), "Apple M2")[0] == 100e9
    assert platform_bandwidth(identify("", model_name="Apple M1 Max"), "Apple M1 Max")[0] == 400e9


# -- roof="auto" -----------------------------------------------------------------------------
@pytest.fixture
def small_bench(monkeypatch):
    """Tiny kernels and budgets (the real run takes ~10 s): GEMM n=64/128, one small conv, 1 MB arrays."""
    monkeypatch.setattr(_cpu_bench, "SIZES", (64, 128))
    monkeypatch.setattr(_cpu_bench, "KERNEL_BUDGET_S", 0.2)
    monkeypatch.setattr(_cpu_bench, "STREAM_BUDGET_S", 0.05)
    monkeypatch.setattr(bench, "_CONV_PROBES", {"cpu": ((1, 8, 8),), "cuda": ()})
    monkeypatch.setattr(bench, "_stream_elements", lambda device, llc, quick: 2**18)
    monkeypatch.setattr(_cpu_bench, "others_share", lambda *args: 0.0)   # a quiet machine (tests run on busy ones)
    calls = []
    real = _cpu_bench._kernels
    monkeypatch.setattr(_cpu_bench, "_kernels", lambda dtypes: calls.append(dtypes) or real(dtypes))
    return calls


def test_measuring_refused_by_argument_or_environment(monkeypatch):
    assert not _auto.measuring_refused(None)
    assert _auto.measuring_refused(False) and not _auto.measuring_refused(True)
    for value, refused in (("1", True), ("yes", True), ("0", False), ("", False), ("false", False)):
        monkeypatch.setenv("TORCH_ROOFLINE_NO_BENCH", value)
        assert _auto.measuring_refused(None) is refused
    monkeypatch.setenv("TORCH_ROOFLINE_NO_BENCH", "1")
    assert not _auto.measuring_refused(True)  # an explicit argument wins


def test_auto_refused_estimates_without_measuring(monkeypatch, small_bench):
    monkeypatch.setattr(_auto, "read_cpu_info", _epyc_vm)
    monkeypatch.setenv("TORCH_ROOFLINE_NO_BENCH", "1")
    d = devices.auto("cpu")
    assert d.source == "estimated" and not small_bench
    assert devices.auto("cpu", measure=False) == d


def test_auto_measures_once_then_uses_the_cache(capsys, small_bench):
    d = devices.auto("cpu")
    assert len(small_bench) == 1 and small_bench[0][0] == "fp32"
    fp32 = d.roof("fp32", "matrix")
    assert (d.source, fp32.source, fp32.unit) == ("measured", "measured", "matrix")
    assert fp32.how.startswith("measured (fp32: fastest of ") and "bandwidth: measured (fastest STREAM" in fp32.how
    assert d.peak_flops("fp32", "vector") == fp32.peak_flops_per_s   # the same FMA units
    # fp64 is not measured: the measured fp32 rate x 16/32 (or 32/64) FLOP/cycle, marked estimated
    fp64 = d.roof("fp64", "vector")
    assert fp64.peak_flops_per_s == pytest.approx(fp32.peak_flops_per_s / 2)
    assert fp64.source == "estimated" and fp64.how.startswith("estimated (measured fp32 ")
    err = capsys.readouterr().err
    assert "measuring this CPU's roofs" in err and "TORCH_ROOFLINE_NO_BENCH=1" in err and "roofs [" in err
    again = devices.auto("cpu")
    assert again == d and len(small_bench) == 1                      # the cache answered
    assert capsys.readouterr().err == ""                             # silently
    devices.auto("cpu", refresh=True)
    assert len(small_bench) == 2


def test_busy_measurement_is_repeated_and_merged(monkeypatch, small_bench):
    monkeypatch.setattr(_cpu_bench, "others_share", lambda *args: 0.5)   # a neighbour uses half the CPU
    monkeypatch.setattr(_cpu_bench, "_MEASURED_HERE", set())
    with pytest.warns(UserWarning, match="50% of the CPU.*measure again"):
        first = devices.auto("cpu", progress=False)
    devices.auto("cpu", progress=False)
    assert len(small_bench) == 1                                     # one measurement per process
    for n in (2, 3):
        _cpu_bench._MEASURED_HERE.clear()                            # as if a new process
        with pytest.warns(UserWarning):
            devices.auto("cpu", progress=False)
        assert _cpu_bench.load_roofs(devices._cpu.read_cpu_info()).measurements == n
    _cpu_bench._MEASURED_HERE.clear()
    devices.auto("cpu", progress=False)
    assert len(small_bench) == _cpu_bench.MAX_MEASUREMENTS == 3      # then the merged result stands
    assert "quietest of 3 measurements" in devices.auto("cpu").notes
    assert devices.auto("cpu").peak_flops("fp32") >= first.peak_flops("fp32")


def test_merge_keeps_the_fastest_sample_of_each_kernel():
    def result(gemm, copy, share):
        s = lambda v, n=512, lib="oneDNN": bench.BenchStats.of([v / 2, v], n, lib)  # noqa: E731
        return bench.BenchResult("cpu", "x", "2", 2, False, types.MappingProxyType({"fp32": s(gemm)}),
                                 s(copy, 10, ""), s(copy, 10, ""), 40, conv=types.MappingProxyType({"fp32": s(1.0, 0, "")}),
                                 mode="roofs", others_cpu_share=share, seconds=10.0)
    merged = _cpu_bench.merge_results(result(100.0, 7.0, 0.5), result(90.0, 9.0, 0.2))
    assert (merged.gemm["fp32"].max, merged.copy.max, merged.others_cpu_share) == (100.0, 9.0, 0.2)
    assert (merged.measurements, merged.seconds) == (2, 20.0)
    assert bench.BenchResult.from_dict(json.loads(json.dumps(merged.to_dict()))) == merged


def test_fast_dtypes_only_where_the_cpu_has_them():
    assert _cpu_bench.fast_dtypes(AVX2) == ("fp32",)
    assert _cpu_bench.fast_dtypes({"avx512f", "avx512_bf16", "amx_bf16", "amx_fp16"}) == ("fp32", "bf16", "fp16")
    assert _cpu_bench.fast_dtypes({"asimd", "bf16"}) == ("fp32", "bf16")      # Arm BF16


def test_auto_on_other_devices():
    with pytest.raises(ValueError, match="meta"):
        devices.auto("meta")
    assert "auto" in devices.__all__ and "estimate_cpu" in devices.__all__


def test_a_failed_measurement_falls_back_to_the_estimate(monkeypatch):
    monkeypatch.setattr(_auto, "read_cpu_info", _epyc_vm)

    def broken(*args, **kwargs):
        raise RuntimeError("no oneDNN here")

    monkeypatch.setattr(_auto, "run_roofs_bench", broken)
    with pytest.warns(UserWarning, match="measuring the CPU roofs failed.*using estimates"):
        assert devices.auto("cpu").source == "estimated"


# -- provenance in the CLI and the report ----------------------------------------------------
def test_cli_devices_this_shows_how(monkeypatch, capsys, small_bench):
    from torch_roofline.cli.devices import run_devices

    assert run_devices(argparse.Namespace(json=False, this=True, no_bench=False, refresh=False)) == 0
    out = capsys.readouterr().out
    assert "measured (fp32: fastest of" in out and "bandwidth" in out and re.search(r"fp64 +vector .* estimated", out)
    assert run_devices(argparse.Namespace(json=True, this=True, no_bench=False, refresh=False)) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert {r["source"] for r in row["roofs"]} == {"measured", "estimated"} and all(r["how"] for r in row["roofs"])
    monkeypatch.setattr(_auto, "read_cpu_info", _epyc_vm)
    assert run_devices(argparse.Namespace(json=False, this=True, no_bench=True, refresh=False)) == 0
    assert "estimated (2 cores x 4.1 GHz" in capsys.readouterr().out and len(small_bench) == 1


def test_report_device_section_carries_how():
    from torch_roofline.report.build import analyse
    from torch_roofline.records import OpCost, OpTiming, Roof
    from torch_roofline.report import DeviceInfo, RooflineReport

    d = devices.estimate_cpu(_epyc_vm())
    roof = d.roof("fp32", "vector")
    info = DeviceInfo(d.id, d.name, d.source, d.memory_bandwidth, tuple(d.roofs()), kind="cpu")
    op = OpCost("aten.relu", "", ("",), "forward", 10**6, 0, 4 * 10**6, 4 * 10**6, 4 * 10**6, 4 * 10**6,
                "float32", "vector", True, 0)
    report = analyse([op], [OpTiming("aten.relu", "", ("",), "forward", 1e-3, 1e-3)],
                     roofs={("float32", "vector"): roof}, device=info)
    (used,) = [r for r in report.to_dict()["device"]["roofs"] if r["used"]]
    assert used["how"] == roof.how and used["how"].startswith("estimated (2 cores")
    back = RooflineReport.from_dict(json.loads(report.to_json()))
    assert [r.how for r in back.device.roofs] == [r.how for r in d.roofs()]
    assert Roof("fp32", "vector", 1.0, 1.0, "measured", how="a") == Roof("fp32", "vector", 1.0, 1.0, "measured")


# -- the docs' table: six CPUs, estimate vs published figure ---------------------------------
# Facts are the vendors' (docs/cpu-roofs.md cites each); "published" is the figure compared:
# a vendor total where one exists, else the vendor's per-cycle statement x cores x clock.
TABLE = {
    # Intel ARK: 56 cores, max turbo 3.8 GHz, 2 AVX-512 FMA units, AMX.
    # 56 x 3.8e9 x 64 = 13.619e12 FP32; AMX 1024 bf16 op/cycle/core: 56 x 3.8e9 x 1024 = 217.9e12
    "Intel Xeon Platinum 8480+": (
        cpu("Intel(R) Xeon(R) Platinum 8480+", "GenuineIntel", 6, 56, 3.8e9,
            AVX2 | {"avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8", "amx_tile"}, model_number=0x8F),
        13.619e12, 217.9e12),
    # 18 cores x 3.8 GHz all-core turbo x 64 (2 AVX-512 FMA units) = 4.3776e12; no bf16 unit:
    # bf16 work runs on the fp32 units (the catalog row i9-10980xe holds the same 4.3776)
    "Intel Core i9-10980XE": (
        cpu("Intel(R) Core(TM) i9-10980XE CPU @ 3.00GHz", "GenuineIntel", 6, 18, 3.8e9,
            AVX2 | {"avx512f", "avx512_vnni"}, model_number=0x55),
        4.3776e12, 4.3776e12),
    # 96 cores x 3.7 GHz x 32 (Zen 4: AVX-512 on 256-bit units) = 11.366e12; AVX512_BF16 2x
    "AMD EPYC 9654": (
        cpu("AMD EPYC 9654 96-Core Processor", "AuthenticAMD", 25, 96, 3.7e9,
            AVX2 | {"avx512f", "avx512_bf16", "avx512_vnni"}, model_number=0x11),
        11.366e12, 22.733e12),
    # 16 cores x 5.7 GHz x 64 (Zen 5: full 512-bit datapath) = 5.837e12; AVX512_BF16 2x
    "AMD Ryzen 9 9950X": (
        cpu("AMD Ryzen 9 9950X 16-Core Processor", "AuthenticAMD", 26, 16, 5.7e9,
            AVX2 | {"avx512f", "avx512_bf16", "avx512_vnni"}, model_number=0x44),
        5.837e12, 11.674e12),
    # NVIDIA: Grace CPU Superchip FP64 peak 7.1 TFLOPS, 144 Neoverse V2 cores, 4 x 128-bit SVE2;
    # fp32 lanes are twice fp64 lanes: 14.2e12 (bf16: no published figure, 2x fp32 model)
    "NVIDIA Grace CPU Superchip": (
        cpu("NVIDIA Grace CPU Superchip", "ARM", None, 144, 3.1e9,
            {"asimd", "sve", "sve2", "bf16", "i8mm", "asimddp"}, arm_implementer="0x41", arm_part="0xd4f"),
        14.2e12, None),
    # Apple publishes no CPU FLOP/s: 8 cores x 3.49 GHz x 32 (P-core 4 x 128-bit FMA) = 893.4e9,
    # an upper bound (the 4 E-cores are slower); compared with that hand computation
    "Apple M2": (
        cpu("Apple M2", "Apple", None, 8, 3.49e9, {"asimd", "bf16", "i8mm", "asimddp"},
            arm_implementer="0x61", arm_part="0x032"),
        893.4e9, None),
}


@pytest.mark.parametrize("name", list(TABLE))
def test_estimator_reproduces_the_published_figures(name):
    info, fp32, bf16 = TABLE[name]
    d = devices.estimate_cpu(info)
    assert d.peak_flops("fp32", "vector") == pytest.approx(fp32, rel=0.05)
    if bf16 is not None:
        assert d.peak_flops("bf16", "matrix") == pytest.approx(bf16, rel=0.05)
    if name == "NVIDIA Grace CPU Superchip":
        assert d.peak_flops("fp64", "vector") == pytest.approx(7.1e12, rel=0.05)   # the vendor's own total


def test_docs_table_matches_the_estimator():
    text = (ROOT / "docs" / "cpu-roofs.md").read_text()
    rows = {m.group(1).strip(): (float(m.group(2)), float(m.group(3))) for m in re.finditer(
        r"^\| \*\*(.+?)\*\* \|.*?\| est\. ([0-9.]+) \| est\. ([0-9.]+) \|", text, re.MULTILINE)}
    assert set(rows) == set(TABLE)
    for name, (fp32_t, bf16_t) in rows.items():
        d = devices.estimate_cpu(TABLE[name][0])
        assert d.peak_flops("fp32", "vector") / 1e12 == pytest.approx(fp32_t, abs=0.006)
        assert d.peak_flops("bf16", "matrix") / 1e12 == pytest.approx(bf16_t, abs=0.06)
