"""Reading Chrome/Kineto traces: kinds, units, header, memory events, errors."""

from _paths import TESTS_DIR
import collections
import gzip
import json
import os

import pytest

from torch_roofline.timing.trace import load_trace

DATA = os.path.join(TESTS_DIR, "data")
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


# ----------------------------------------------------------------------------- big files, read in chunks


def _read_both(path, monkeypatch, chunk=4096):
    """(streamed, whole) reads of ``path``: the chunked reader with tiny chunks (many cuts,
    some inside nested objects), and the whole-document parse."""
    from torch_roofline.timing import trace as T

    monkeypatch.setattr(T, "_STREAM_BYTES", 0)
    monkeypatch.setattr(T, "_CHUNK", chunk)
    streamed = T.load_trace(path)
    monkeypatch.setattr(T, "_STREAM_BYTES", 1 << 60)
    return streamed, T.load_trace(path)


@pytest.mark.parametrize("name", ["tinyconv_cpu_train.kineto.json.gz", "alexnet_a100_forward.kineto.json.gz",
                                  "fsdp2_cpu_train_rank0.kineto.json.gz"])
@pytest.mark.parametrize("layout", ["as recorded", "compact", "json.dump", "args first"])
def test_a_big_file_read_in_chunks_gives_the_same_trace(name, layout, tmp_path, monkeypatch):
    import gzip as gz

    path = os.path.join(DATA, name)
    if layout != "as recorded":  # the same document written by other writers: one line, or ", " separated
        with gz.open(path, "rt") as f:
            doc = json.load(f)
        path = str(tmp_path / "t.json")
        if layout == "args first":  # "}," inside every event: cuts there do not parse, earlier ones do
            doc["traceEvents"] = [dict(args=e["args"], **{k: v for k, v in e.items() if k != "args"})
                                  if isinstance(e, dict) and "args" in e else e for e in doc["traceEvents"]]
        with open(path, "w") as f:
            if layout == "compact":
                f.write(json.dumps(doc, separators=(",", ":")))
            else:
                json.dump(doc, f)
    streamed, whole = _read_both(path, monkeypatch)
    assert streamed.events == whole.events and len(whole.events) > 100
    assert streamed.memory == whole.memory and streamed.flows == whole.flows
    assert streamed.origin_us == whole.origin_us and streamed.devices == whole.devices
    assert dict(streamed.metadata) == dict(whole.metadata)


def test_a_damaged_big_file_gets_the_whole_file_error(tmp_path, monkeypatch):
    from torch_roofline.timing import trace as T
    from torch_roofline.timing.trace import TraceError

    with open(os.path.join(DATA, "tinyconv_cpu_train.kineto.json.gz"), "rb") as f:
        raw = f.read()
    cut = tmp_path / "cut.json.gz"
    cut.write_bytes(raw[: len(raw) // 2])  # truncated gzip
    monkeypatch.setattr(T, "_STREAM_BYTES", 0)
    monkeypatch.setattr(T, "_CHUNK", 4096)
    with pytest.raises(TraceError, match="expected a complete gzip stream"):
        T.load_trace(cut)
    import gzip as gz

    text = gz.decompress(raw).decode()
    bad = tmp_path / "bad.json"
    bad.write_text(text.replace('"dur": ', '"dur": -', 1))  # the first duration negative
    whole_error = None
    monkeypatch.setattr(T, "_STREAM_BYTES", 1 << 60)
    with pytest.raises(TraceError) as whole_error:
        T.load_trace(bad)
    monkeypatch.setattr(T, "_STREAM_BYTES", 0)
    with pytest.raises(TraceError) as streamed_error:
        T.load_trace(bad)
    assert str(streamed_error.value) == str(whole_error.value) and "field 'dur'" in str(whole_error.value)
    half = tmp_path / "half.json"
    half.write_text(text[: len(text) // 2])  # cut mid-document: not JSON
    with pytest.raises(TraceError, match="bytes that are not valid JSON"):
        T.load_trace(half)


def test_repeated_calls_share_their_recorded_shapes(tmp_path, monkeypatch):
    # Chunked reading shares each distinct recorded call's shapes between its repeats.
    from torch_roofline.timing import trace as T

    ev = {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "pid": 1, "tid": 1, "dur": 1.0,
          "args": {"Input Dims": [[8, 64], [64, 64]], "Input type": ["float", "float"], "External id": 0}}
    events = [dict(ev, ts=float(i), args=dict(ev["args"], **{"External id": i})) for i in range(50)]
    path = tmp_path / "mm.json"
    path.write_text(json.dumps({"traceEvents": events}))
    monkeypatch.setattr(T, "_STREAM_BYTES", 0)
    monkeypatch.setattr(T, "_CHUNK", 512)
    trace = T.load_trace(path)
    dims = {id(e.args["Input Dims"]) for e in trace.events}
    assert len(trace.events) == 50 and len(dims) == 1
    assert [e.external_id for e in trace.events] == list(range(50))  # per-event fields stay per event
