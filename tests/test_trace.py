"""Reading Chrome/Kineto traces: kinds, units, header, memory events, errors."""

import collections
import gzip
import json
import os

import pytest

from torch_roofline.timing.trace import load_trace

DATA = os.path.join(os.path.dirname(__file__), "data")
A100 = os.path.join(DATA, "alexnet_a100_forward.kineto.json.gz")
COUNTERS = os.path.join(DATA, "alexnet_a100_forward_cupti_counters.kineto.json.gz")
TINY = os.path.join(DATA, "tinyconv_cpu_train.kineto.json.gz")


def _raw(path):
    with gzip.open(path, "rt") as f:
        return json.load(f)


def test_a100_device_from_header():
    device = load_trace(A100).device()
    assert device.name == "NVIDIA A100-PG509-200"
    assert device.num_sms == 108  # A100 datasheet: 108 SMs
    # "40 GB" A100: 42297524224 B = 39.4 GiB usable, 42.3 GB.
    assert 40e9 < device.total_memory_bytes < 45e9
    assert device.compute_capability == (8, 0)


def test_a100_kinds_counted_like_the_raw_file():
    trace = load_trace(A100)
    raw = collections.Counter(
        e.get("cat") for e in _raw(A100)["traceEvents"] if e.get("ph") == "X"
    )
    kinds = collections.Counter(e.kind for e in trace.events)
    for cat in ("cpu_op", "cuda_runtime", "kernel", "gpu_memcpy", "gpu_memset", "user_annotation"):
        assert kinds[cat] == raw[cat], cat
    assert kinds["kernel"] == 79 and kinds["gpu_memcpy"] == 16 and kinds["gpu_memset"] == 3
    assert trace.has_device_activity
    assert {e.stream for e in trace.of_kind("kernel")} == {7, 20}


def test_times_are_seconds_from_origin():
    trace = load_trace(A100)
    raw = [e for e in _raw(A100)["traceEvents"] if e.get("cat") == "kernel"]
    first = min(raw, key=lambda e: e["ts"])
    kernel = min(trace.of_kind("kernel"), key=lambda e: e.start_s)
    assert kernel.name == first["name"]
    assert kernel.dur_s == first["dur"] * 1e-6
    assert kernel.start_s == pytest.approx((first["ts"] - trace.origin_us) * 1e-6, abs=1e-9)
    assert min(e.start_s for e in trace.events) == 0.0
    # A memcpy keeps its bytes and correlation: 92928 B, correlation 14 in the raw file.
    memcpy = next(e for e in trace.of_kind("gpu_memcpy") if e.correlation == 14)
    assert memcpy.bytes == 92928


def test_counter_ranges_kept_with_args():
    ranges = load_trace(COUNTERS).of_kind("cuda_profiler_range")
    assert len(ranges) == 77
    assert "smsp__sass_thread_inst_executed_op_ffma_pred_on.sum" in ranges[0].args


def test_plain_json_and_dict_read_like_gzip(tmp_path):
    data = _raw(TINY)
    plain = tmp_path / "trace.json"
    plain.write_text(json.dumps(data))
    from_gz, from_json, from_dict = load_trace(TINY), load_trace(plain), load_trace(data)
    assert from_gz.events == from_json.events == from_dict.events
    assert from_dict.source == "<dict>" and from_json.source == str(plain)


def test_cpu_trace_memory_flows_and_sequence_numbers():
    trace = load_trace(TINY)
    assert trace.devices == () and trace.device() is None and not trace.has_device_activity
    raw_memory = [e for e in _raw(TINY)["traceEvents"] if e.get("name") == "[memory]"]
    assert len(trace.memory) == len(raw_memory) > 0
    assert max(m.total_allocated_bytes for m in trace.memory) == max(
        e["args"]["Total Allocated"] for e in raw_memory
    )
    assert {f.category for f in trace.flows} == {"fwdbwd"}
    assert any(e.seq is not None for e in trace.of_kind("cpu_op"))


def test_old_category_spellings_are_mapped():
    trace = load_trace({"traceEvents": [
        {"ph": "X", "cat": "Kernel", "name": "k", "ts": 10, "dur": 2, "pid": 0, "tid": 7},
        {"ph": "X", "cat": "Operator", "name": "aten::mm", "ts": 5, "dur": 9, "pid": 1, "tid": 1},
        {"ph": "X", "cat": "python_function", "name": "f", "ts": 1, "dur": 1, "pid": 1, "tid": 1},
    ]})
    assert [e.kind for e in trace.events] == ["kernel", "cpu_op"]  # python_function dropped
    assert trace.origin_us == 5.0


def test_errors_name_the_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_trace(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_trace(bad)
    with pytest.raises(ValueError, match="traceEvents"):
        load_trace({"events": []})
