"""The Device record, the roof rules and the packaged catalog (datasheet oracles cited inline)."""

import re

import pytest
import torch

from torch_roofline import devices
from torch_roofline.devices import Device, UnsupportedDtypeError, catalog, get, load_file
from torch_roofline.devices._catalog import CatalogError, catalog_entries, catalog_sources
from torch_roofline.records import Roof


# -- the seed examples ------------------------------------------------------------------
def test_gtx_1080_ti_seed_roofs():
    d = get("gtx-1080-ti")
    # GTX 1080 Ti: 3584 cores x 2 x 1.582 GHz = 11.34 TFLOP/s fp32 (seed: 11.3), 484 GB/s
    assert d.peak_flops("fp32", "vector") == pytest.approx(11.3e12, rel=0.01)
    assert d.memory_bandwidth == pytest.approx(484e9)
    # ridge = 11.34e12 / 484e9 = 23.4 FLOP/B (seed: ~23.3)
    assert d.ridge("fp32", "vector") == pytest.approx(23.3, rel=0.01)


def test_gtx_1080_ti_gemm_runs_on_cuda_cores():
    roof = get("gtx-1080-ti").roof(torch.float32, "matrix", allow_tf32=True)
    # no tensor cores on Pascal: an fp32 GEMM is measured against the CUDA-core peak
    assert roof.unit == "vector"
    assert roof.peak_flops_per_s == pytest.approx(11.34e12)
    assert isinstance(roof, Roof) and roof.source == "datasheet"


def test_h100_sxm_dense_not_sparse():
    d = get("h100-sxm")
    # H100 SXM datasheet: bf16 1,979 TFLOP/s* and fp8 3,958* are 2:4 sparse; dense = half
    assert d.peak_flops("bf16") == pytest.approx(989e12, rel=1e-3)
    assert d.peak_flops(torch.float8_e4m3fn) == pytest.approx(1979e12, rel=1e-3)
    assert d.peak_flops("float8_e5m2") == d.peak_flops("fp8")


def test_fp8_on_v100_raises_a_clear_error():
    v100 = get("v100-sxm2-16gb")
    with pytest.raises(UnsupportedDtypeError, match=r"v100-sxm2-16gb.*fp8.*fp64, fp32, fp16"):
        v100.roof("fp8")
    with pytest.raises(ValueError):  # UnsupportedDtypeError is a ValueError
        v100.peak_flops(torch.float8_e4m3fn, "vector")
    assert not v100.has_peak("fp8")
    assert v100.has_peak("bf16")  # computed on CUDA cores in fp32, like PyTorch does


# -- the roof rules ------------------------------------------------------------------------
def test_tf32_follows_torch_settings():
    a100 = get("a100-sxm4-80gb")
    old = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest")
        if not torch.backends.cuda.matmul.allow_tf32:
            assert a100.roof("fp32").dtype == "fp32"
            # A100 datasheet: fp32 19.5 TFLOP/s; with no fp32 matrix unit: vector
            assert a100.roof("fp32").unit == "vector"
        torch.set_float32_matmul_precision("high")
        roof = a100.roof("float32")
        # A100 datasheet: TF32 tensor 156 TFLOP/s dense
        assert (roof.dtype, roof.unit, roof.peak_flops_per_s) == ("tf32", "matrix", 156e12)
    finally:
        torch.set_float32_matmul_precision(old)
    assert a100.roof("fp32", allow_tf32=False).peak_flops_per_s == 19.5e12
    # V100 has no TF32: allowing it changes nothing
    assert get("v100-sxm2-16gb").roof("fp32", allow_tf32=True).peak_flops_per_s == 15.7e12


def test_geforce_fp16_uses_fp32_accumulate_rate():
    # RTX 4090 (Ada whitepaper): fp16 tensor 165.2 dense with FP32 accumulate, 330.3 with FP16
    assert get("rtx-4090").peak_flops("fp16") == pytest.approx(165.2e12)
    # RTX 3090: 71 (FP32 accumulate), not 142
    assert get("rtx-3090").peak_flops("bf16") == pytest.approx(71e12)


def test_vector_half_precision_uses_fp32_opmath_rate():
    h100 = get("h100-sxm")
    roof = h100.roof("bf16", "vector")
    # PyTorch's elementwise bf16 kernels compute in fp32: H100 SXM fp32 vector = 66.9 TFLOP/s
    assert (roof.dtype, roof.unit, roof.peak_flops_per_s) == ("bf16", "vector", 66.9e12)


def test_dtype_names():
    for name in ("float32", "fp32", "torch.float32", torch.float32, "float"):
        assert devices.dtype_key(name) == "fp32"
    assert devices.dtype_key(torch.uint8) == "int8"
    assert devices.dtype_key("float64") == "fp64"
    assert devices.dtype_key(torch.half) == "fp16"
    with pytest.raises(UnsupportedDtypeError, match="int64.*fp64"):
        devices.dtype_key(torch.int64)
    with pytest.raises(ValueError, match="unit='scalar'"):
        get("t4").roof("fp32", "scalar")


def test_roofs_lists_every_pair():
    roofs = get("a100-sxm4-80gb").roofs()
    # A100 datasheet: vector fp64 9.7, fp32 19.5; matrix fp64 19.5, tf32 156, fp16/bf16 312, int8 624
    assert {(r.dtype, r.unit) for r in roofs} == {
        ("fp64", "vector"), ("fp32", "vector"), ("fp64", "matrix"), ("tf32", "matrix"),
        ("fp16", "matrix"), ("bf16", "matrix"), ("int8", "matrix")}
    assert all(r.bandwidth_bytes_per_s == 2039e9 for r in roofs)


def test_estimated_numbers_are_marked():
    # V100S bandwidth is not in any source consulted: every roof of it says so
    assert get("v100s-pcie").roof("fp16").source == "estimated"
    nvl = get("h100-nvl")
    assert nvl.roof("bf16").source == "datasheet"   # 835 read
    assert nvl.roof("fp8").source == "estimated"    # ratio estimate


# -- user devices --------------------------------------------------------------------------
def test_user_device():
    d = Device(name="my-gpu", peak_flops={"fp32": 1e13, "bf16": 1e14, "bf16:vector": 2e13},
               bandwidth=1e12)
    assert d.source == "user" and d.id == "my-gpu"
    assert d.peak_flops("fp32", "vector") == 1e13 == d.peak_flops("fp32", "matrix")
    assert d.peak_flops("bf16") == 1e14 and d.peak_flops("bf16", "vector") == 2e13
    assert d.ridge("bf16") == 100.0  # 1e14 / 1e12
    assert d.roof("bf16").source == "user"
    with pytest.raises(ValueError, match="bandwidth"):
        Device(name="x", peak_flops={"fp32": 1e12})
    with pytest.raises(ValueError, match="positive"):
        Device(name="x", peak_flops={"fp32": 0}, bandwidth=1e9)
    assert d == Device(name="my-gpu", peak_flops={"fp32": 1e13, "bf16": 1e14, "bf16:vector": 2e13},
                       bandwidth=1e12)
    hash(d)


def test_load_file_toml(tmp_path):
    path = tmp_path / "roofs.toml"
    path.write_text('[[device]]\nname = "lab-gpu"\nmemory_bandwidth_gbs = 1000\n'
                    'vector = { fp32 = 20 }\nmatrix = { bf16 = 200 }\n')
    (d,) = load_file(path)
    # 200 TFLOP/s / 1000 GB/s = 200 FLOP/B
    assert d.source == "user" and d.ridge("bf16") == pytest.approx(200.0)
    assert d.roof("fp32", "matrix").unit == "vector"
    bad = tmp_path / "bad.toml"
    bad.write_text('[[device]]\nname = "x"\nmemory_bandwidth_gbs = 1\nvector = { fp33 = 1 }\n')
    with pytest.raises(CatalogError, match="fp33"):
        load_file(bad)
    with pytest.raises(FileNotFoundError):
        load_file(tmp_path / "missing.toml")


def test_load_file_yaml(tmp_path):
    pytest.importorskip("yaml")
    path = tmp_path / "roofs.yaml"
    path.write_text("device:\n  - name: y-gpu\n    memory_bandwidth_gbs: 500\n    vector: {fp32: 10}\n")
    assert load_file(path)[0].peak_flops("fp32") == 10e12


# -- the catalog itself --------------------------------------------------------------------
def test_catalog_size_and_ids():
    ids = [d.id for d in catalog()]
    assert len(ids) >= 30 and len(set(ids)) == len(ids)
    for must in ("v100-sxm2-16gb", "t4", "a10", "a10g", "a100-sxm4-80gb", "l4", "l40s", "h100-sxm",
                 "h100-pcie", "h100-nvl", "h200", "b200", "gtx-1080-ti", "rtx-5090",
                 "jetson-agx-orin", "mi100", "mi300x"):
        assert must in ids


def test_every_number_has_a_cited_provenance():
    sources = catalog_sources()
    for entry in catalog_entries():
        d = entry.device
        fields = [*d.peaks, "memory_bandwidth"]
        fields += [f for f in ("memory_bytes", "l2_bytes", "interconnect_bandwidth") if getattr(d, f)]
        for field in fields:
            text = d.provenance[field]
            assert re.match(r"(read|read-thirdparty|derived|estimated)\b", text), (d.id, field)
            for key in re.findall(r"\[([a-z0-9, -]+)\]", text):
                for k in key.split(","):
                    assert k.strip() in sources, (d.id, field, k)


def test_cli_devices_table_and_json(capsys):
    from torch_roofline.cli.devices import resolve, run_devices
    import argparse
    import json

    assert run_devices(argparse.Namespace(json=False)) == 0
    table = capsys.readouterr().out
    assert "h100-sxm" in table and "gtx-1080-ti" in table
    assert run_devices(argparse.Namespace(json=True)) == 0
    rows = json.loads(capsys.readouterr().out)
    h100 = next(r for r in rows if r["id"] == "h100-sxm")
    bf16 = next(r for r in h100["roofs"] if (r["dtype"], r["unit"]) == ("bf16", "matrix"))
    # 989.4e12 / 3.35e12 = 295.3 FLOP/B
    assert bf16["ridge_flops_per_byte"] == pytest.approx(295.3, rel=1e-3)
    assert resolve("L40S").id == "l40s"


# -- detection of GPUs (properties faked: there is no GPU here) -----------------------------
def _props(name, sms, clock_khz=1_800_000, mem_khz=8_001_000, bus=384, major=8, minor=6,
           total=48 * 2**30):
    import types

    return types.SimpleNamespace(name=name, multi_processor_count=sms, clock_rate=clock_khz,
                                 memory_clock_rate=mem_khz, memory_bus_width=bus, major=major,
                                 minor=minor, total_memory=total, gcnArchName="", L2_cache_size=0)


def test_unlisted_gpu_is_estimated_from_its_properties(monkeypatch):
    from torch_roofline.devices import _detect

    props = _props("NVIDIA RTX A6000", 84)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: props)
    with pytest.warns(UserWarning, match="ESTIMATED"):
        d = _detect._detect_gpu(0)
    # RTX A6000 datasheet: 38.7 TFLOP/s fp32 = 84 SMs x 1.8 GHz x 256; 768 GB/s =
    # 8.001 GHz x 2 (DDR) x 384 bit / 8
    assert d.source == "estimated" and d.roof("fp32", "vector").source == "estimated"
    assert d.peak_flops("fp32", "vector") == pytest.approx(38.7e12, rel=1e-3)
    assert d.memory_bandwidth == pytest.approx(768e9, rel=1e-3)
    unknown = _props("NVIDIA Future GPU", 100, major=13, minor=0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: unknown)
    with pytest.raises(devices.UnknownDeviceError, match="Future GPU"):
        _detect._detect_gpu(0)


def test_listed_gpu_detected_and_mig_slice_scaled(monkeypatch):
    from torch_roofline.devices import _detect

    full = _props("NVIDIA A100-SXM4-40GB", 108, total=40 * 2**30)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: full)
    assert _detect._detect_gpu(0) == get("a100-sxm4-40gb")
    mig = _props("NVIDIA A100-SXM4-40GB MIG 1g.5gb", 14, total=5 * 2**30)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: mig)
    with pytest.warns(UserWarning, match="14 SMs"):
        d = _detect._detect_gpu(0)
    # 312 TFLOP/s x 14/108 SMs = 40.4 TFLOP/s bf16
    assert d.peak_flops("bf16") == pytest.approx(312e12 * 14 / 108)
    assert d.source == "estimated"
