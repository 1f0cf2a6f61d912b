"""CPU peak formula, measured roofs on this machine, and the measurement cache."""

import argparse
import json

import pytest

from torch_roofline import devices
from torch_roofline.devices import bench, cpu_peak_flops
from torch_roofline.devices._cpu import CpuInfo, flops_per_cycle


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_ROOFLINE_CACHE_DIR", str(tmp_path / "cache"))


def test_cpu_formula_reproduces_the_seed_arithmetic():
    # i9-10980XE (seed): 16 cores x 4.5 GHz x 64 FP32 FLOP/cycle (2 AVX-512 FMA units:
    # 2 units x 16 lanes x 2 FLOP) = 4.608e12 FLOP/s
    assert cpu_peak_flops(16, 4.5e9, 64) == pytest.approx(4.608e12)
    with pytest.raises(ValueError, match="positive"):
        cpu_peak_flops(0, 4.5e9, 64)


def test_flops_per_cycle_from_isa_flags():
    def info(*flags, vendor="GenuineIntel", family=6):
        return CpuInfo("x", vendor, family, 1, 1e9, "test", frozenset(flags), None)

    # AVX2 + FMA: 2 units x 8 fp32 lanes x 2 FLOP = 32; fp64 half of it
    assert flops_per_cycle(info("avx", "avx2", "fma"))["fp32:vector"] == 32
    assert flops_per_cycle(info("avx", "avx2", "fma"))["fp64:vector"] == 16
    # AVX-512 (two 512-bit FMA units) = 64; Zen 4 (AMD family 25) runs them on 256-bit units = 32
    assert flops_per_cycle(info("avx2", "fma", "avx512f"))["fp32:vector"] == 64
    assert flops_per_cycle(info("avx2", "fma", "avx512f", vendor="AuthenticAMD", family=25))["fp32:vector"] == 32
    # AMX (Sapphire Rapids): 1024 bf16 / 2048 int8 operations per cycle per core
    amx = flops_per_cycle(info("avx512f", "amx_tile", "amx_bf16", "amx_int8"))
    assert amx["bf16:matrix"] == 1024 and amx["int8:matrix"] == 2048
    assert "bf16:matrix" not in flops_per_cycle(info("avx2", "fma"))


def test_quick_measure_is_below_the_computed_peak():
    import torch

    measured = devices.measure("cpu", ("fp32",), quick=True, progress=False)
    computed = devices.detect("cpu")
    assert measured.source == "measured" and computed.source == "estimated"
    assert measured.peak_flops("fp32", "matrix") > 0 and measured.memory_bandwidth > 0
    # a measured GEMM rate above the roof means the roof (or the timing) is wrong.
    # NB: the GEMM itself, not the convolution probe: in a VM that reports its base clock,
    # oneDNN's convolutions can run at the boost clock, above the computed peak.
    gemm = max(bench._time_gemm("fp32", 1024, 3, torch.device("cpu")))
    assert 0 < gemm < computed.peak_flops("fp32", "matrix")
    assert computed.provenance["memory_bandwidth"].startswith("measured")


def test_cache_is_reused_and_refresh_redoes(monkeypatch):
    calls = []
    real = bench._time_gemm

    def counting(*args):
        calls.append(args[:2])
        return real(*args)

    monkeypatch.setattr(bench, "_time_gemm", counting)
    first = bench.run_bench("cpu", ("fp32",), quick=True, progress=False)
    assert calls and first.copy.max > 0 and first.triad.max > 0
    n = len(calls)
    second = bench.run_bench("cpu", ("float32",), quick=True, progress=False)
    assert len(calls) == n and second == first           # served from the cache
    bench.run_bench("cpu", ("fp32",), quick=True, refresh=True, progress=False)
    assert len(calls) == 2 * n                           # measured again


def test_bench_result_stats_and_stream_bytes(monkeypatch):
    # triad a = b + 3*c moves 3 arrays of float32 per element: 12 bytes, copy 8 bytes
    times = iter([0.5, 0.25] * 100)
    monkeypatch.setattr(bench, "_time_call", lambda fn, device: next(times))
    copies, triads = bench._time_stream(1000, 2, bench.torch.device("cpu"))
    assert copies == [8000 / 0.5, 8000 / 0.25]   # 2 x 4 B x 1000 elements / s
    assert triads == [12000 / 0.5, 12000 / 0.25]
    stats = bench.BenchStats.of([1.0, 3.0, 2.0], 7)
    assert (stats.min, stats.median, stats.max, stats.samples) == (1.0, 2.0, 3.0, 3)


def test_samples_run_for_repeats_and_at_least_min_seconds(monkeypatch):
    monkeypatch.setattr(bench, "_time_call", lambda fn, device: 0.25)
    cpu = bench.torch.device("cpu")
    assert bench._rates(None, 5.0, cpu, 3, 0.0) == [20.0] * 3            # 5 FLOPs / 0.25 s, repeats only
    assert len(bench._rates(None, 5.0, cpu, 3, 1.5)) == 6                # 6 x 0.25 s >= 1.5 s
    assert len(bench._rates(None, 5.0, cpu, 3, 1e9)) == bench._MAX_SAMPLES  # capped


def test_sweep_keeps_the_size_with_the_fastest_sample(monkeypatch):
    # A roof lies above every kernel: the size whose best sample is fastest wins, even when
    # another size has the better median (n=256: median 10, best 11; n=128: median 9, best 12).
    samples = {128: [9.0, 9.0, 12.0], 256: [10.0, 10.0, 11.0]}
    monkeypatch.setattr(bench, "_time_gemm", lambda dtype, n, *args: list(samples[n]))
    stats = bench._sweep_library("fp32", "torch.mm", (128, 256), 3, 0.0, bench.torch.device("cpu"),
                                 bench._Progress(2, False))
    assert (stats.size, stats.max, stats.samples) == (128, 12.0, 6)      # winner timed again


def test_bench_shows_progress_on_stderr(capsys):
    import torch

    bench.run_bench("cpu", ("fp32",), quick=True, refresh=True, progress=True)
    err = capsys.readouterr().err
    # quick mode: 2 sizes per GEMM library, the conv probe, STREAM
    total = 2 * len(bench.gemm_libraries("fp32", torch.device("cpu"))) + 2
    assert f"{total}/{total} stream copy/triad" in err and "bench [" + "#" * 30 + "]" in err
    assert err.endswith("\n")


def test_cli_bench_json(capsys):
    from torch_roofline.cli.devices import run_bench_cmd

    args = argparse.Namespace(device="cpu", dtype=["fp32"], json=True, refresh=False, quick=True)
    assert run_bench_cmd(args) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["gemm_flops_per_s"]["fp32"]["max"] > 0 and data["copy_bytes_per_s"]["median"] > 0


def test_gemm_sweep_times_every_library_and_keeps_the_best():
    import torch

    result = bench.run_bench("cpu", ("fp32",), quick=True, progress=False)
    libs = result.gemm_by_library["fp32"]
    expected = {"torch.mm", "oneDNN"} if torch.backends.mkldnn.is_available() else {"torch.mm"}
    assert set(libs) == expected
    assert all(s.library == name and s.samples == 2 * 3 for name, s in libs.items())  # winner re-timed
    assert result.gemm["fp32"] == max(libs.values(), key=lambda s: s.max)
    assert bench.BenchResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result
    dev = bench.result_to_device(result)
    assert result.matrix_peak("fp32").library in dev.provenance["fp32:matrix"] or result.matrix_peak("fp32").size == 0
