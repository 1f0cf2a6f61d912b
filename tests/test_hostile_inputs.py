"""Hostile inputs (issue 14): a clear error or a right answer, never a wrong number, a
traceback or a half-written file.

One section per kind of input: trace files, files we write, the CLI, the TensorBoard
plugin and writer, deep models, and property-based sweeps (hypothesis) over trace fields,
module names and shapes.
"""

from __future__ import annotations

import errno
import gzip
import json
import os

import pytest

from torch_roofline.timing import TraceError, load_trace

DATA = os.path.join(os.path.dirname(__file__), "data")
TINY = os.path.join(DATA, "tinyconv_cpu_train.kineto.json.gz")


def _op(**fields):
    """One kept duration event (an aten op), overridden by ``fields``."""
    event = {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "ts": 10.0, "dur": 2.0, "pid": 1, "tid": 1,
             "args": {"External id": 3}}
    event.update(fields)
    return event


def _trace(*events):
    return {"traceEvents": [_op(ts=1.0, dur=1.0), *events]}


# ================================================================================ trace files


@pytest.mark.parametrize("event, field, match", [
    (_op(ts=None), "ts", r"event 1 field 'ts': expected a number of microseconds.*got null"),
    (_op(ts="12.5"), "ts", r"event 1 field 'ts': .*got a JSON string \('12.5'\)"),
    (_op(ts=float("nan")), "ts", r"event 1 field 'ts': expected a finite number"),
    (_op(ts=float("inf")), "ts", r"field 'ts': expected a finite number"),
    (_op(ts=True), "ts", r"field 'ts': .*got a JSON boolean"),
    ({k: v for k, v in _op().items() if k != "ts"}, "ts", r"field 'ts': .*got no 'ts'"),
    (_op(dur=float("nan")), "dur", r"event 1 field 'dur': expected a finite, non-negative number.*got nan \(NaN\)"),
    (_op(dur=-3.0), "dur", r"field 'dur': .*got -3.0 \(a negative duration\)"),
    (_op(dur=float("inf")), "dur", r"field 'dur': .*beyond any clock"),
    (_op(dur="2"), "dur", r"field 'dur': .*got a JSON string"),
    (_op(dur=None), "dur", r"field 'dur': .*got null"),
    (_op(args=[1, 2]), "args", r"event 1 field 'args': expected a JSON object.*got a JSON array \(\[1, 2\]\)"),
    (_op(args="x"), "args", r"field 'args': .*got a JSON string"),
    (_op(pid=[1]), "pid", r"field 'pid': expected a number or a string"),
    (_op(tid={"a": 1}), "tid", r"field 'tid': .*got a JSON object"),
    ({"ph": "i", "name": "[memory]", "ts": "late", "args": {}}, "ts", r"event 1 field 'ts'"),
    ({"ph": "i", "name": "[memory]", "ts": 3, "args": [0]}, "args", r"event 1 field 'args'"),
    ({"ph": "s", "cat": "fwdbwd", "id": 1, "ts": None}, "ts", r"event 1 field 'ts'"),
])
def test_bad_event_fields_raise_trace_error_naming_event_and_field(event, field, match):
    with pytest.raises(TraceError, match=match) as info:
        load_trace(_trace(event))
    err = info.value
    assert (err.source, err.index, err.field) == ("<dict>", 1, field)
    assert err.expected and err.got and isinstance(err, ValueError)


@pytest.mark.parametrize("event", [3, "aten::mm", None, [1, 2], True])
def test_events_that_are_not_objects_are_refused(event):
    with pytest.raises(TraceError, match=r"event 1: expected a JSON object, .*got"):
        load_trace(_trace(event))


@pytest.mark.parametrize("document, match", [
    ({"events": []}, r"field 'traceEvents': .*got an object with keys \['events'\] and no 'traceEvents'"),
    ({"traceEvents": {"0": {}}}, r"'traceEvents' holding a JSON object"),
    ({"traceEvents": [], "deviceProperties": 5}, r"field 'deviceProperties': expected a JSON array"),
    ({"traceEvents": [], "deviceProperties": [1]}, r"field 'deviceProperties\[0\]': expected a JSON object"),
])
def test_bad_documents_raise_trace_error(document, match):
    with pytest.raises(TraceError, match=match):
        load_trace(document)


def _gz_bytes() -> bytes:
    with open(TINY, "rb") as f:
        return f.read()


@pytest.mark.parametrize("name, content, match", [
    ("truncated.json.gz", lambda: _gz_bytes()[:4000], r"expected a complete gzip stream.*truncated or corrupt"),
    ("garbage.json.gz", lambda: b"\x1f\x8b" + os.urandom(64), r"truncated or corrupt gzip"),
    ("latin1.json", lambda: '{"traceEvents": [{"name": "caf\u00e9"}]}'.encode("latin-1"), r"not valid JSON"),
    ("utf16.json", lambda: '{"traceEvents": []}'.encode("utf-16"), r"not valid JSON"),
    ("empty.json", lambda: b"", r"not valid JSON"),
    ("string.json", lambda: b'"traceEvents"', r"expected a JSON object with a 'traceEvents' list.*got a JSON string"),
    ("half.json", lambda: json.dumps(_trace()).encode()[:-7], r"not valid JSON"),
    ("nan.json", lambda: b'{"traceEvents": [{"ph": "X", "cat": "cpu_op", "ts": 1, "dur": NaN}]}', r"not valid JSON|'dur'"),
    ("deep.json", lambda: b"[" * 100_000 + b"]" * 100_000, r"not valid JSON"),
])
def test_bad_files_raise_trace_error_naming_the_file(tmp_path, name, content, match):
    path = tmp_path / name
    path.write_bytes(content())
    with pytest.raises(TraceError, match=match) as info:
        load_trace(path)
    assert info.value.source == str(path) and str(path) in str(info.value)


def test_a_directory_names_a_trace_inside_it(tmp_path):
    (tmp_path / "host_1.pt.trace.json").write_text(json.dumps(_trace()))
    with pytest.raises(TraceError, match=r"expected a trace file .*got a directory; pass one of the trace files "
                                         r"in it, e.g. .*host_1.pt.trace.json"):
        load_trace(tmp_path)


def test_a_missing_file_is_still_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_trace(tmp_path / "missing.json.gz")


def test_good_edge_values_are_read_as_written():
    trace = load_trace({"traceEvents": [
        _op(ts=5, dur=0),  # integer microseconds, a zero duration
        _op(ts=7.5, args=None, pid="Spans", tid="stream 7"),  # null args: none; string ids as written
        {k: v for k, v in _op(ts=6).items() if k != "dur"},  # no dur: an instant on the op's clock
        {"ph": "X", "cat": "python_function", "ts": "ignored", "dur": -1},  # dropped kinds are not read
    ]})
    assert [e.start_s for e in trace.events] == pytest.approx([0.0, 2.5e-6, 1e-6], abs=1e-15)
    assert [e.dur_s for e in trace.events] == [0.0, 2e-6, 0.0]
    assert trace.events[1].args == {} and (trace.events[1].pid, trace.events[1].tid) == ("Spans", "stream 7")


def test_trace_error_survives_pickling():
    import pickle

    with pytest.raises(TraceError) as info:
        load_trace(_trace(_op(dur=-1)))
    again = pickle.loads(pickle.dumps(info.value))
    assert str(again) == str(info.value) and (again.index, again.field) == (1, "dur")


def test_a_real_gzip_trace_still_reads(tmp_path):
    with gzip.open(TINY, "rt") as f:
        events = json.load(f)["traceEvents"]
    assert len(load_trace(TINY).events) == sum(
        1 for e in events if e.get("ph") == "X" and e.get("cat") in ("cpu_op", "user_annotation"))


# ================================================================================ files we write


def _small_report():
    """A two-module measured report (hand-made rows: the numbers do not matter here)."""
    from torch_roofline.analysis import analyse
    from torch_roofline.records import ModuleInfo, OpCost, OpTiming, Roof

    roofs = {("float32", "matrix"): Roof("fp32", "matrix", 1e12, 1e11, "measured")}
    scope = ("", "fc")
    cost = OpCost("aten.mm", "fc", scope, "forward", 2 * 10**6, 10**6, 4000, 4000, 4000, 4000, "float32", "matrix",
                  True, 0)
    timing = OpTiming("aten.mm", "fc", scope, "forward", 1e-5, 1e-5)
    modules = [ModuleInfo("", "Net", 10, 40), ModuleInfo("fc", "Linear", 10, 40)]
    return analyse([cost], [timing], (), modules, roofs)


class _FullDisk:
    """A file object that writes ``budget`` bytes, then fails like a full disk (ENOSPC)."""

    def __init__(self, handle, budget: int = 64) -> None:
        self._handle, self._budget = handle, budget

    def write(self, data):
        room = max(self._budget, 0)
        self._budget -= len(data)
        if self._budget < 0:
            self._handle.write(data[:room])
            self._handle.flush()  # the partial bytes really reach the temporary file
            raise OSError(errno.ENOSPC, "No space left on device")
        return self._handle.write(data)

    def __getattr__(self, name):
        return getattr(self._handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._handle.close()


@pytest.fixture
def full_disk(monkeypatch):
    """Every file opened through torch_roofline._io fails after 64 bytes with ENOSPC."""
    import torch_roofline._io as io_module

    real = io_module.os.fdopen
    monkeypatch.setattr(io_module.os, "fdopen", lambda *a, **k: _FullDisk(real(*a, **k)))


FULL = r"could not write '.*{name}' \(No space left on device\); nothing was written .*free disk space"


@pytest.mark.parametrize("name, write", [
    ("report.json", lambda report, path: report.to_json(path)),
    ("report.csv", lambda report, path: report.to_csv(path)),
    ("roofline.png", lambda report, path: report.plot(path)),
    ("roofline.svg", lambda report, path: report.plot(path)),
])
def test_a_full_disk_leaves_no_partial_report_file(tmp_path, full_disk, name, write):
    report = _small_report()
    with pytest.raises(OSError, match=FULL.format(name=name)) as info:
        write(report, tmp_path / name)
    assert info.value.errno == errno.ENOSPC
    assert os.listdir(tmp_path) == []  # neither the file nor the temporary file


def test_a_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    report = _small_report()
    path = tmp_path / "report.json"
    report.to_json(path)
    before = path.read_bytes()
    import torch_roofline._io as io_module

    real = io_module.os.fdopen
    monkeypatch.setattr(io_module.os, "fdopen", lambda *a, **k: _FullDisk(real(*a, **k)))
    with pytest.raises(OSError, match="an earlier file of that name is unchanged"):
        report.to_json(path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["report.json"]


def test_count_json_and_bench_cache_are_atomic(tmp_path, full_disk):
    import torch

    from torch_roofline import count
    from torch_roofline.devices import bench

    result = count(torch.nn.Linear(4, 4), torch.randn(2, 4))
    with pytest.raises(OSError, match=FULL.format(name="count.json")):
        result.to_json(str(tmp_path / "count.json"))
    cached = bench.BenchResult.from_dict({
        "device": "cpu", "device_name": "test", "torch_version": torch.__version__, "threads": 1, "quick": True,
        "gemm_flops_per_s": {}, "copy_bytes_per_s": None, "triad_bytes_per_s": None, "array_bytes": 0,
        "created_s": 0.0})
    with pytest.warns(RuntimeWarning, match=r"run_bench: the measurement was not cached .*No space left.*"
                                            r"TORCH_ROOFLINE_CACHE_DIR"):
        bench._save_cache(str(tmp_path / "cache" / "bench.json"), cached)
    assert os.listdir(tmp_path) == ["cache"] and os.listdir(tmp_path / "cache") == []


def test_writes_land_with_the_usual_permissions(tmp_path):
    report = _small_report()
    report.to_json(tmp_path / "a.json")
    with open(tmp_path / "b.json", "w") as f:
        f.write("{}")
    assert os.stat(tmp_path / "a.json").st_mode == os.stat(tmp_path / "b.json").st_mode  # umask, not 0600


def test_writing_to_a_directory_or_a_missing_folder_names_the_path(tmp_path):
    report = _small_report()
    (tmp_path / "taken").mkdir()
    with pytest.raises(IsADirectoryError, match=r"RooflineReport.to_json: could not write .*taken.*pass a file name"):
        report.to_json(tmp_path / "taken")
    with pytest.raises(FileNotFoundError, match=r"could not write .*nowhere.*create the directory first"):
        report.to_csv(tmp_path / "nowhere" / "r.csv")
    assert sorted(os.listdir(tmp_path)) == ["taken"] and os.listdir(tmp_path / "taken") == []
