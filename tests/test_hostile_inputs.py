"""Hostile inputs (issue 14): a clear error or a right answer, never a wrong number, a
traceback or a half-written file.

One section per kind of input: trace files, files we write, the CLI, the TensorBoard
plugin and writer, deep models, and property-based sweeps (hypothesis) over trace fields,
module names and shapes.
"""

from __future__ import annotations

import errno
import re
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
    from torch_roofline.report.build import analyse
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


# ================================================================================ the CLI

TINY_MODEL = """
import torch
model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU())
inputs = torch.randn(2, 8)
"""


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "tiny.py"
    path.write_text(TINY_MODEL)
    return str(path)


@pytest.fixture
def read_only_dir(tmp_path, monkeypatch):
    """A directory nobody can create files in (as root, where chmod does not stop writes,
    creating files there fails as on a read-only file system)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    if os.access(folder, os.W_OK):
        import torch_roofline._io as io_module

        real = io_module.os.open

        def refuse(path, *args, **kwargs):
            if os.path.dirname(os.path.abspath(path)).startswith(str(folder)):
                raise OSError(errno.EROFS, "Read-only file system", path)
            return real(path, *args, **kwargs)

        monkeypatch.setattr(io_module.os, "open", refuse)
    yield folder
    folder.chmod(0o755)


def _cli_error(argv, capsys, *, code=1):
    """Run the CLI in-process; the error is one line on stderr, no traceback."""
    from torch_roofline.cli import main

    try:
        rc = main(argv)
    except SystemExit as exit_:  # argparse errors
        rc = exit_.code
    err = capsys.readouterr().err
    assert rc == code, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.strip() and not line.startswith("[torch-roofline]")]
    assert len(errors) == 1 and errors[0].startswith(f"torch-roofline {argv[0]}: error: "), err
    return errors[0]


def _bad_files(tmp_path):
    (tmp_path / "trunc.json.gz").write_bytes(_gz_bytes()[:3000])
    (tmp_path / "nan.json").write_text(json.dumps({"traceEvents": [_op(dur=-1.0)]}))
    (tmp_path / "list.json").write_text(json.dumps({"traceEvents": [_op(args=[1])]}))
    (tmp_path / "syntax.py").write_text("import torch\nmodel = torch.nn.Linear(4, 4\n")
    (tmp_path / "not_a_report.json").write_text('{"schema": "something/else"}')
    (tmp_path / "a_file").write_text("x")


# (argv with {tmp} and {model} placeholders, exit code, what the one line must say)
CLI_CASES = [
    # MODEL specs
    (["count", "os:path", "--input-shape", "2,8"], 1, r"MODEL 'os:path': 'path' is a module, not a model class"),
    (["count", "torch.nn:Linear", "--input-shape", "2,8"], 1,
     r"Linear\(\) needs arguments \(in_features, out_features\).*write a .py file"),
    (["count", "{tmp}/syntax.py"], 1, r"MODEL '.*syntax.py': syntax error at line 2"),
    (["count", "{tmp}/missing.py"], 1, r"MODEL '.*missing.py': no such file"),
    (["count", "nosuchpkg.mod:factory", "--input-shape", "2,8"], 1, r"cannot import 'factory'"),
    (["count", "resnet18", "--input-shape", "2,8"], 1, r"expected 'torchvision:NAME'"),
    (["predict", "torch.nn:Linear", "--input-shape", "2,8", "--on", "h100-sxm"], 1, r"needs arguments"),
    (["profile", "os:path", "--input-shape", "2,8"], 1, r"is a module"),
    # shapes and devices
    (["count", "{model}", "--input-shape", "2,3"], 1,
     r"MODEL '.*tiny.py' failed on inputs of shape \(2, 3\): .*fix: pass --input-shape"),
    (["count", "{model}", "--input-shape", "2,x"], 1, r"--input-shape '2,x': expected comma-separated integers"),
    (["count", "{model}", "--input-shape", "0,8"], 1, r"expected positive sizes"),
    (["count", "{model}", "--input-shape", "100000,100000,100000"], 1, r"cannot make a torch.float32 tensor"),
    (["count", "{model}", "--device", "tpu9"], 1, r"--device 'tpu9': expected cpu, cuda, cuda:N or meta"),
    (["count", "{model}", "--dtype", "fp7"], 1, r"--dtype 'fp7': expected one of"),
    (["profile", "{model}", "--roof", "no-such-gpu", "--steps", "1"], 1, r"unknown device 'no-such-gpu'"),
    (["predict", "{model}", "--on", "h100-sxn"], 1, r"unknown device 'h100-sxn': closest catalog devices: h100-sxm"),
    (["predict", "{model}"], 1, r"name at least one device with --on"),
    (["trace", "{tmp}/list.json", "--roof", "no-such-gpu"], 1, r"field 'args'"),
    (["bench", "--device", "foo"], 1, r"run_bench\(device='foo'\): expected 'cpu', 'cuda' or 'cuda:N'"),
    # numbers: refused at argument parsing (exit 2), before any work
    (["count", "{model}", "--depth", "-1"], 2, r"argument --depth: expected an integer >= 0, e.g. 2; got '-1'"),
    (["profile", "{model}", "--top", "0"], 2, r"argument --top: expected an integer >= 1, e.g. 25; got '0'"),
    (["profile", "{model}", "--steps", "0"], 2, r"argument --steps: expected an integer >= 1"),
    (["profile", "{model}", "--depth", "two"], 2, r"argument --depth: expected an integer >= 0.*got 'two'"),
    (["predict", "{model}", "--on", "h100-sxm", "--depth", "-3"], 2, r"argument --depth"),
    (["diff", "a.json", "b.json", "--depth", "-1"], 2, r"argument --depth"),
    (["trace", "t.json", "--steps", "-2"], 2, r"argument --steps"),
    (["count", "{model}", "--memory-model", "x"], 2, r"invalid choice: 'x'.*see 'torch-roofline count --help'"),
    (["devices", "--bogus"], 2, r"unrecognized arguments: --bogus"),
    # outputs: refused before any work
    (["profile", "{model}", "--out", "{tmp}/a_file"], 1, r"--out .*a_file: '.*a_file' is a file; expected a directory"),
    (["profile", "{model}", "--out", "{tmp}/a_file/sub"], 1, r"lies under the file"),
    (["predict", "{model}", "--on", "h100-sxm", "--out", "{tmp}/a_file"], 1, r"is a file"),
    (["trace", "{tmp}/nan.json", "--out", "{tmp}/a_file"], 1, r"is a file"),
    # trace files (TraceError) and report files
    (["trace", "{tmp}/trunc.json.gz"], 1, r"load_trace\('.*trunc.json.gz'\): expected a complete gzip stream"),
    (["trace", "{tmp}/nan.json"], 1, r"event 0 field 'dur': .*negative duration"),
    # a folder is a job's traces, one per rank (issue 16): the first bad one is named
    (["trace", "{tmp}"], 1, r"load_trace\('.*\.json(\.gz)?'\): (event \d+ field|expected)"),
    (["trace", "{tmp}/*.nothing"], 1, r"no trace file \(.json or .json.gz\) found there"),
    (["trace", "{tmp}/missing.json"], 1, r"no such file"),
    (["diff", "{tmp}/not_a_report.json", "{tmp}/not_a_report.json"], 1, r"A.json '.*not_a_report.json': .*schema"),
    (["diff", "{tmp}/nan.json", "{tmp}/missing.json"], 1, r"A.json .*schema None"),
    (["diff", "{tmp}", "{tmp}"], 1, r"is a directory; pass the report.json in it"),
    (["diff", "{tmp}/trunc.json.gz", "{tmp}/trunc.json.gz"], 1, r"not UTF-8 text|not valid JSON"),
]


@pytest.mark.parametrize("argv, code, match", CLI_CASES, ids=[" ".join(c[0][:2]) + f" #{i}" for i, c in enumerate(CLI_CASES)])
def test_cli_user_errors_are_one_line_without_traceback(argv, code, match, tmp_path, model_file, capsys):
    import re

    _bad_files(tmp_path)
    argv = [a.format(tmp=tmp_path, model=model_file) for a in argv]
    line = _cli_error(argv, capsys, code=code)
    assert re.search(match, line), line


def test_every_subcommand_is_covered():
    from torch_roofline.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(sub.choices) == {argv[0] for argv, _, _ in CLI_CASES}


def test_cli_read_only_out_is_refused_before_any_work(read_only_dir, model_file, capsys):
    line = _cli_error(["profile", model_file, "--out", str(read_only_dir / "run1")], capsys)
    assert re.search(r"--out .*run1: cannot create files in '.*ro' \(.*\); expected a writable directory", line)
    assert capsys.readouterr().err == ""  # no progress line: nothing ran


def test_cli_full_disk_while_writing_outputs_is_one_line(tmp_path, model_file, full_disk, capsys):
    line = _cli_error(["predict", model_file, "--on", "h100-sxm", "--out", str(tmp_path / "o")], capsys)
    assert re.search(r"could not write '.*report-h100-sxm.json' \(No space left on device\); nothing was written", line)
    assert os.listdir(tmp_path / "o") == []


def test_cli_debug_shows_the_traceback(model_file):
    from torch_roofline.cli import main

    with pytest.raises(ValueError, match="failed on inputs of shape"):
        main(["count", model_file, "--input-shape", "2,3", "--debug"])
    with pytest.raises(ValueError, match="is a module"):
        main(["--debug", "count", "os:path", "--input-shape", "2,3"])


def _run_cli(*argv, timeout=180):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "torch_roofline", *argv], capture_output=True, text=True,
                          timeout=timeout, cwd=os.path.dirname(DATA) + "/..")


def test_cli_subprocess_errors_are_one_line(tmp_path, model_file):
    _bad_files(tmp_path)
    for argv, code, match in [
        (["trace", str(tmp_path / "trunc.json.gz")], 1, "truncated or corrupt gzip"),
        (["profile", model_file, "--depth", "-1"], 2, "argument --depth"),
    ]:
        proc = _run_cli(*argv)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == code and len(lines) == 1 and match in lines[0], proc.stderr
        assert lines[0].startswith(f"torch-roofline {argv[0]}: error: ")
    proc = _run_cli("--debug", "trace", str(tmp_path / "nan.json"))
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "TraceError" in proc.stderr


# ================================================================================ TensorBoard


@pytest.fixture(scope="module")
def tb_client(tmp_path_factory):
    """The Roofline tab over a log directory holding one good report and hostile payloads."""
    pytest.importorskip("tensorboard")
    pytest.importorskip("werkzeug")
    from _tensorboard_helpers import _write_raw, make_client

    from torch_roofline.tensorboard import write_report

    root = str(tmp_path_factory.mktemp("tb_hostile"))
    write_report(os.path.join(root, "demo"), _small_report(), step=0, plot=False)
    _write_raw(os.path.join(root, "deep"), b"[" * 100_000 + b"]" * 100_000, step=0)
    _write_raw(os.path.join(root, "deep_nan"), b"[NaN, " + b"[" * 100_000 + b"]" * 100_000 + b"]", step=0)
    _write_raw(os.path.join(root, "big_step"), b"{}", step=2**63 - 1)
    return make_client(root)


PREFIX = "/data/plugin/roofline"


@pytest.mark.parametrize("step", ["9" * 5000, "1" + "0" * 19, str(2**63), "-5", "1e3", "0x10", "\u0661", "", " "])
def test_tab_answers_400_to_steps_it_cannot_hold(tb_client, step):
    from urllib.parse import quote

    response = tb_client.get(f"{PREFIX}/report?run=demo&tag=roofline&step={quote(step)}")
    assert response.status_code == 400, response.get_data(as_text=True)[:300]
    assert "is not a non-negative integer up to 9223372036854775807" in json.loads(response.get_data())["error"]


def test_tab_serves_the_largest_step(tb_client):
    assert tb_client.get(f"{PREFIX}/report?run=big_step&tag=roofline&step={2**63 - 1}").status_code == 200
    assert tb_client.get(f"{PREFIX}/report?run=demo&tag=roofline&step=0000").status_code == 200


@pytest.mark.parametrize("run", ["deep", "deep_nan"])
def test_tab_answers_422_not_500_to_a_deeply_nested_payload(tb_client, run):
    # The request is well formed; the stored payload is what cannot be read (as for other
    # unreadable payloads: 422, see plugin.py's route list).
    response = tb_client.get(f"{PREFIX}/report?run={run}&tag=roofline&step=0")
    assert response.status_code == 422
    assert "nested too deeply" in json.loads(response.get_data())["error"]


@pytest.mark.parametrize("step", [-1, 2**63, True, 1.5, "3", None])
def test_writer_refuses_steps_the_tab_cannot_serve(tmp_path, step):
    pytest.importorskip("tensorboard")
    from torch_roofline.tensorboard import TensorBoardSink, write_report
    from torch_roofline.report.tensorboard import write_image

    report = _small_report()
    expected = r"step=.*expected an integer from 0 to 9223372036854775807 .*e.g. step=trainer.global_step"
    with pytest.raises(ValueError, match="write_report: " + expected):
        write_report(str(tmp_path / "a"), report, step=step)
    with pytest.raises(ValueError, match="RooflineReport.to_tensorboard|write_report: " + expected):
        report.to_tensorboard(str(tmp_path / "a"), step=step)
    with pytest.raises(ValueError, match="write_image: " + expected):
        write_image(str(tmp_path / "a"), "chart", b"", step)
    with TensorBoardSink(str(tmp_path / "b")) as sink, pytest.raises(ValueError, match="TensorBoardSink.write: "):
        sink.write(report, step=step)
    assert not os.path.exists(tmp_path / "a")  # refused before an event file was created


def test_writer_and_tab_agree_on_the_step_range(tmp_path):
    pytest.importorskip("tensorboard")
    import numpy as np

    from torch_roofline.tensorboard import write_report
    from torch_roofline.report.tensorboard_metadata import MAX_STEP
    from torch_roofline.tensorboard.plugin import _parse_step

    write_report(str(tmp_path), _small_report(), step=np.int64(MAX_STEP), plot=False)  # numpy ints are steps
    assert _parse_step(str(MAX_STEP)) == MAX_STEP and _parse_step(str(MAX_STEP + 1)) is None
    assert _parse_step("-1") is None and _parse_step("0") == 0


# ================================================================================ deep models

DEEP_SCRIPT = r"""
import json, sys, torch
from torch import nn
sys.path.insert(0, {root!r})
import torch_roofline as tr
from torch_roofline.count.replay import count_without_compute

def chain(n, device="cpu"):
    with torch.device(device):
        m = nn.Linear(4, 4)
        for _ in range(n):
            m = nn.Sequential(m)
    return m

def runs(n):
    try:
        chain(n)(torch.randn(2, 4))
        return True
    except RecursionError:
        return False

lo, hi = 1, 1000  # the deepest chain the plain forward runs, from this stack
while lo < hi:
    mid = (lo + hi + 1) // 2
    lo, hi = (mid, hi) if runs(mid) else (lo, mid - 1)
x = torch.randn(2, 4)
limit = sys.getrecursionlimit()

def say(key, value):
    print(json.dumps({{key: value}}), flush=True)

say("depth", lo)
say("count", tr.count(chain(lo), x).total.flops)
say("count_backward", tr.count(chain(lo), x, backward=True).total.flops)
say("replay", count_without_compute(chain(lo), x, backward=True).total.flops)
report = tr.predict(chain(lo, "meta"), torch.empty(2, 4, device="meta"), on="h100-sxm")["h100-sxm"]
say("predict", report.totals.flops)
say("limit_restored", sys.getrecursionlimit() == limit)
model = chain(lo)
with tr.RooflineProfiler(model, roof="gtx-1080-ti") as prof:
    model(x)
report = prof.report()
say("profiler", [report.totals.flops, len(report.modules)])
"""


@pytest.fixture(scope="module")
def deep_run():
    """One subprocess (a RecursionError inside torch's C++ dispatch aborts the process)
    counting, replaying, predicting and profiling the deepest chain the plain forward runs."""
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-c", DEEP_SCRIPT.format(root=root)], capture_output=True, text=True,
                          timeout=300)
    results = {}
    for line in proc.stdout.splitlines():
        results.update(json.loads(line))
    results["returncode"], results["stderr"] = proc.returncode, proc.stderr[-3000:]
    return results


def test_count_handles_any_depth_the_plain_forward_handles(deep_run):
    # Linear(4, 4) on (2, 4): 2 * 2 * 4 * 4 = 64 FLOPs forward; backward adds the grad of the
    # input (64) and of the weight (64) ... measured against the shallow model below.
    import torch

    from torch_roofline import count

    shallow = torch.nn.Sequential(torch.nn.Linear(4, 4))
    forward = count(shallow, torch.randn(2, 4)).total.flops
    both = count(shallow, torch.randn(2, 4), backward=True).total.flops
    assert deep_run["depth"] >= 150, deep_run
    assert (deep_run.get("count"), deep_run.get("count_backward")) == (forward, both), deep_run
    assert deep_run.get("replay") == both and deep_run.get("predict") == forward, deep_run
    assert deep_run.get("limit_restored") is True


def test_profiler_handles_any_depth_the_plain_forward_handles(deep_run):
    assert deep_run.get("profiler") is not None, deep_run["stderr"]
    assert deep_run["profiler"][0] == 64 and deep_run["profiler"][1] >= deep_run["depth"]


def _deep_names(depth: int):
    return [""] + [".".join(["0"] * i) for i in range(1, depth + 1)]


def test_reports_of_deep_models_build_print_and_serialise():
    """1,500 levels, past the default recursion limit: no step recurses per level."""
    from torch_roofline.report.build import analyse
    from torch_roofline.records import ModuleInfo, OpCost, OpTiming, Roof
    from torch_roofline.report import RooflineReport

    names = _deep_names(1500)
    leaf, scope = names[-1], tuple(names)
    roofs = {("float32", "matrix"): Roof("fp32", "matrix", 1e12, 1e11, "measured")}
    report = analyse(
        [OpCost("aten.mm", leaf, scope, "forward", 64, 32, 64, 32, 64, 32, "float32", "matrix", True, 0)],
        [OpTiming("aten.mm", leaf, scope, "forward", 1e-6, 1e-6)], (),
        [ModuleInfo(n, "Linear" if n == leaf else "Sequential", 20, 80) for n in names], roofs)
    assert sum(r.phase == "all" for r in report.modules) == 1501 and report.module(leaf).flops == 64
    assert leaf in report.table(sort="tree", top=None) and "Sequential" in str(report)
    again = RooflineReport.from_json(report.to_json())
    assert again.modules == report.modules and len(report.to_csv().splitlines()) == 1 + len(report.modules)
    report.plot()  # draws the leaves: one point


def test_named_modules_matches_torch_without_recursion():
    import torch
    from torch import nn

    from torch_roofline._depth import named_modules

    shared = nn.Linear(3, 3)
    odd = nn.ModuleDict({"a": shared, "b\n\"c": nn.Sequential(shared, nn.ReLU()), "Ωx": nn.Identity()})
    odd.register_module("none", None)
    models = [odd, nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2), 2, enable_nested_tensor=False), nn.Sequential()]
    torchvision = pytest.importorskip("torchvision")
    models.append(torchvision.models.resnet18())
    for model in models:
        assert [(n, id(m)) for n, m in named_modules(model)] == [(n, id(m)) for n, m in model.named_modules()]
    deep = nn.Linear(2, 2)
    for _ in range(5000):  # far deeper than torch's recursive generator goes
        deep = nn.Sequential(deep)
    names = [n for n, _ in named_modules(deep)]
    assert len(names) == 5001 and names[-1] == ".".join(["0"] * 5000)
    assert torch is not None


@pytest.mark.parametrize("shared", [False, True])
def test_module_infos_of_a_deep_tree_without_recursion(shared):
    from torch import nn

    from torch_roofline._depth import named_modules
    from torch_roofline.count.mode import module_infos

    leaf = nn.Linear(2, 2)  # 6 parameters
    deep = leaf
    for _ in range(3000):
        deep = nn.Sequential(deep, leaf) if shared else nn.Sequential(deep)
    infos = module_infos(deep, named=named_modules(deep))
    assert len(infos) == 3001  # 3,000 Sequentials and the Linear, listed once however shared
    assert infos[0].params == 6 and infos[0].param_bytes == 24  # a shared parameter counted once


# ================================================================================ the profiler and the callback
# Issue 14 items 1-7, 11 and 14: silently wrong numbers and misleading errors of the live path.


def _flat():
    from torch_roofline.devices import Device

    return Device(name="hostile-flat", peak_flops={"fp32": 1e11}, bandwidth=1e10)


def _mlp():
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))


def _lit_mlp(L):
    """A LightningModule class around `_mlp()`: loss = the output's sum, SGD (lr 0.1)."""
    import torch

    class Lit(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = _mlp()

        def training_step(self, batch, batch_idx):
            return self.net(batch[0]).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    return Lit


def test_1_a_second_block_reports_its_own_steps():
    import torch

    from torch_roofline import RooflineProfiler

    model, prof = _mlp(), RooflineProfiler(_mlp(), roof=_flat())
    prof = RooflineProfiler(model, roof=_flat())
    with torch.no_grad():
        with prof:
            model(torch.randn(2, 16))
        small = prof.report().module("0", "forward").flops
        with prof:
            model(torch.randn(64, 16))
        large = prof.report().module("0", "forward").flops
    assert (small, large) == (2 * 2 * 16 * 32, 2 * 64 * 16 * 32)  # Linear(16, 32): 2 * batch * 16 * 32


def test_2_a_window_cut_short_averages_the_steps_that_ran_and_says_so():
    import torch

    from torch_roofline import RooflineProfiler, schedule

    model = _mlp()
    prof = RooflineProfiler(model, roof=_flat(), schedule=schedule(wait=0, warmup=1, active=4))
    with torch.no_grad(), prof:
        for _ in range(3):  # warm-up + 2 of the 4 active steps
            model(torch.randn(8, 16))
            prof.step()
    report = prof.report()
    assert report.steps == 2
    assert report.module("0", "forward").flops == 2 * 8 * 16 * 32  # per step, not halved
    assert any("cut short: 2 of its 4 active steps" in n for n in report.notes)


def test_2_a_window_that_never_started_is_a_clear_error():
    import torch

    from torch_roofline import RooflineProfiler, schedule

    model = _mlp()
    prof = RooflineProfiler(model, roof=_flat(), schedule=schedule(wait=1, warmup=1, active=2))
    with torch.no_grad(), prof:
        for _ in range(2):
            model(torch.randn(8, 16))
            prof.step()
    with pytest.raises(RuntimeError, match=r"2 step\(s\) ran.*records from step 3 on"):
        prof.report()


def test_3_a_batch_that_changes_size_in_a_wait_step_is_counted_as_recorded():
    import torch

    from torch_roofline import RooflineProfiler, schedule

    model = _mlp()
    prof = RooflineProfiler(model, roof=_flat(), schedule=schedule(wait=1, warmup=0, active=1))
    with torch.no_grad(), prof:
        for batch in (2, 64):  # the wait step runs batch 2, the recorded one batch 64
            model(torch.randn(batch, 16))
            prof.step()
    assert prof.report().module("0", "forward").flops == 2 * 64 * 16 * 32


def test_4_a_forward_only_step_has_no_backward_phase():
    import torch

    from torch_roofline import RooflineProfiler

    model = _mlp()
    with torch.no_grad(), RooflineProfiler(model, roof=_flat()) as prof:
        model(torch.randn(4, 16))
    assert {m.phase for m in prof.report().modules} <= {"forward", "all"}


def test_4_a_cold_torch_compile_call_has_no_backward_and_leaves_compilation_out():
    import torch

    from torch_roofline import RooflineProfiler

    model = _mlp()
    compiled = torch.compile(model)
    x = torch.randn(4, 16)
    with torch.no_grad(), RooflineProfiler(compiled, roof=_flat()) as prof:
        compiled(x)  # the first call compiles
    report = prof.report()
    assert {m.phase for m in report.modules} <= {"forward", "all"}
    assert any("torch.compile compiling" in n for n in report.notes)
    # the compiled graph's matmuls, once (compile-time tracing ran them too, and is left out):
    # Linear(16, 32) and Linear(32, 4) on 4 rows: 2*4*16*32 + 2*4*32*4 = 4096 + 1024
    assert sum(o.flops for o in report.ops if o.op in ("aten.addmm", "aten.mm") and o.flops) == 4096 + 1024


@pytest.mark.parametrize("files_too", [False, True])
def test_13_a_full_disk_under_a_tensorboard_logger_warns_and_fit_ends(tmp_path, monkeypatch, files_too, request):
    L = pytest.importorskip("lightning.pytorch")
    pytest.importorskip("tensorboard")
    import torch
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    from torch_roofline.lightning import Roofline

    real_add = EventFileWriter.add_event

    def add_event(self, event):  # our event file's disk is full; the logger's own file is not
        if str(getattr(self, "_file_name", "")).endswith(".roofline"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_add(self, event)

    monkeypatch.setattr(EventFileWriter, "add_event", add_event)
    if files_too:  # report.json and the chart cannot be written either
        request.getfixturevalue("full_disk")

    Lit = _lit_mlp(L)
    data = torch.utils.data.TensorDataset(torch.randn(48, 16))
    logger = L.loggers.TensorBoardLogger(str(tmp_path / "tb"))
    trainer = L.Trainer(max_steps=5, callbacks=[Roofline(roof=_flat(), plot=False)], logger=logger,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=str(tmp_path))
    with pytest.warns(UserWarning, match="writing the report failed.*No space left on device"):
        trainer.fit(Lit(), torch.utils.data.DataLoader(data, batch_size=8))  # ends: no exception
    assert not list((tmp_path / "tb").rglob("report.json"))  # nothing half-written either


def test_5_a_trace_joined_with_the_wrong_model_is_refused(tmp_path):
    import torch
    from torch import nn

    from torch_roofline import RooflineProfiler, from_trace

    model = _mlp()
    path = str(tmp_path / "mlp.json")
    with torch.no_grad(), RooflineProfiler(model, roof=_flat(), export_trace=path):
        model(torch.randn(4, 16))
    other = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8 * 6 * 6, 4))
    with pytest.raises(ValueError, match=r"do not match the model's count.*recorded with another model"):
        from_trace(path, other, torch.randn(4, 3, 8, 8), roof=_flat())
    assert from_trace(path, model, torch.randn(4, 16), roof=_flat()).totals.flops > 0  # the right one joins


def test_7_any_module_name_keeps_its_time_and_shows_as_written():
    import torch
    from torch import nn

    from torch_roofline import RooflineProfiler

    names = ["naïve", "two words", 'quote"d', "back\\slash", "tab\tbed", "new\nline", "Ωmega"]
    model = nn.ModuleDict({n: nn.Linear(4, 4) for n in names})
    with torch.no_grad(), RooflineProfiler(model, roof=_flat()) as prof:
        for layer in model.values():
            layer(torch.randn(2, 4))
    report = prof.report()
    for name in names:
        row = report.module(name, "forward")
        assert row.calls == 1 and row.time_s and row.time_s > 0 and row.flops == 2 * 2 * 4 * 4, name
    assert not any(m.name in ("unknown", "") and m.phase == "forward" and m.flops for m in report.modules
                   if m.name not in names and m.name != "")


def test_11_two_roofline_callbacks_are_refused_at_setup_naming_them(tmp_path):
    L = pytest.importorskip("lightning.pytorch")
    import torch

    from torch_roofline.lightning import Roofline

    Lit = _lit_mlp(L)
    data = torch.utils.data.TensorDataset(torch.randn(32, 16))
    trainer = L.Trainer(max_steps=3, callbacks=[Roofline(roof=_flat()), Roofline(roof=_flat(), tag="second")],
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=str(tmp_path))
    with pytest.raises(ValueError, match=r"2 Roofline callbacks.*tag='roofline'.*tag='second'.*Keep one"):
        trainer.fit(Lit(), torch.utils.data.DataLoader(data, batch_size=8))


def test_14_cuda_without_a_gpu_is_refused_at_construction():
    import torch

    from torch_roofline import RooflineProfiler

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ValueError, match=r"device='cuda'.*no CUDA GPU.*from_trace"):
        RooflineProfiler(_mlp(), device="cuda")


def test_14_a_generator_forward_names_the_likely_cause():
    import torch
    from torch import nn

    from torch_roofline import RooflineProfiler

    class Lazy(nn.Module):
        def forward(self, x):
            yield x * 2  # nothing runs until iterated

    model, x = Lazy(), torch.randn(2)
    with RooflineProfiler(model, roof=_flat()) as prof:
        model(x)
    with pytest.raises(RuntimeError, match="no op ran.*generator"):
        prof.report()


# ================================================================================ property sweeps

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

SWEEP = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=6))
_JSONISH = st.recursive(_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)), max_leaves=5)


def _mostly(good):
    """Usually a plausible value, sometimes any JSON-like value (the corruption)."""
    return st.one_of(good, good, good, _JSONISH)


_ARG_KEYS = ["External id", "correlation", "device", "stream", "bytes", "Sequence number", "Fwd thread id",
             "Bytes", "Total Allocated", "Total Reserved", "Device Type", "Device Id", "Input Dims"]
_EVENT = st.fixed_dictionaries({}, optional={
    "ph": _mostly(st.sampled_from(["X", "i", "s", "f", "M"])),
    "cat": _mostly(st.sampled_from(["cpu_op", "kernel", "user_annotation", "Operator", "cuda_runtime",
                                    "gpu_memcpy", "ac2g", "fwdbwd", "python_function"])),
    "name": _mostly(st.sampled_from(["aten::mm", "[memory]", "roofline::fc", "ProfilerStep#1"])),
    "ts": _mostly(st.one_of(st.floats(-1e6, 1e12), st.integers(-10**6, 10**12))),
    "dur": _mostly(st.one_of(st.floats(0, 1e6), st.integers(0, 10**6))),
    "args": _mostly(st.dictionaries(st.sampled_from(_ARG_KEYS), _mostly(st.integers(-5, 10**6)), max_size=4)),
    "pid": _mostly(st.integers(0, 9)),
    "tid": _mostly(st.one_of(st.integers(0, 9), st.text(max_size=3))),
    "id": _mostly(st.integers(0, 9)),
})
_DOCUMENT = st.one_of(
    st.fixed_dictionaries({"traceEvents": st.lists(_mostly(_EVENT), max_size=8)},
                          optional={"deviceProperties": _mostly(st.lists(st.dictionaries(
                              st.sampled_from(["id", "name", "computeMajor", "numSms"]), _SCALARS), max_size=2)),
                              "baseTimeNanoseconds": _SCALARS}),
    st.lists(_mostly(_EVENT), max_size=8),  # the bare list of events
    _JSONISH.filter(lambda doc: not isinstance(doc, str)),  # a str would be a path
)


def _check_trace(trace) -> None:
    import math

    from torch_roofline.timing.trace import Trace

    assert isinstance(trace, Trace)
    for event in trace.events:
        assert math.isfinite(event.start_s) and math.isfinite(event.dur_s) and event.dur_s >= 0.0
        assert isinstance(event.args, collections_abc.Mapping)
        hash((event.pid, event.tid))  # grouped by thread downstream
    assert all(math.isfinite(m.time_s) for m in trace.memory)
    assert all(math.isfinite(f.time_s) for f in trace.flows)


import collections.abc as collections_abc  # noqa: E402


@SWEEP
@given(_DOCUMENT)
def test_sweep_random_trace_documents_give_a_trace_or_a_trace_error(document):
    try:
        trace = load_trace(document)
    except TraceError as err:
        assert str(err).startswith("load_trace('<dict>'): ") and err.expected and err.got
    else:
        _check_trace(trace)


@SWEEP
@given(st.lists(_EVENT, min_size=1, max_size=6), st.data())
def test_sweep_corrupted_trace_files_give_a_trace_or_a_trace_error(events, data):
    import tempfile

    raw = json.dumps({"traceEvents": events}).encode()
    if data.draw(st.booleans(), label="gzip"):
        raw = gzip.compress(raw)
    action = data.draw(st.sampled_from(["keep", "truncate", "flip", "insert"]), label="corruption")
    if action == "truncate":
        raw = raw[: data.draw(st.integers(0, len(raw)), label="cut at")]
    elif action in ("flip", "insert") and raw:
        at = data.draw(st.integers(0, len(raw) - 1), label="at")
        byte = bytes([data.draw(st.integers(0, 255), label="byte")])
        raw = raw[:at] + byte + raw[at + (action == "flip"):]
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "trace.json")
        with open(path, "wb") as f:
            f.write(raw)
        try:
            trace = load_trace(path)
        except TraceError as err:
            assert err.source == path and path in str(err)
        else:
            _check_trace(trace)


def _forbidden_key(key: str) -> bool:
    """Keys torch itself refuses for a ModuleDict: empty, dotted, or an existing attribute."""
    import torch

    return not key or "." in key or hasattr(torch.nn.ModuleDict(), key)


_KEYS = st.text(min_size=1, max_size=12).filter(lambda k: not _forbidden_key(k))


class _Blocks:
    """A model whose ModuleDict keys are ``keys``; each block is a Linear(2, 2)."""

    @staticmethod
    def build(keys, device="cpu"):
        import torch
        from torch import nn

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.blocks = nn.ModuleDict({k: nn.Linear(2, 2) for k in keys})

            def forward(self, x):
                for block in self.blocks.values():
                    x = block(x)
                return x

        with torch.device(device):
            return Net()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_KEYS, min_size=1, max_size=3, unique=True))
def test_sweep_module_names_are_kept_and_shown_as_written(keys):
    import csv
    import io

    import torch

    from torch_roofline import count, predict
    from torch_roofline._module_names import shown_name
    from torch_roofline.report import RooflineReport

    names = ["", "blocks"] + [f"blocks.{k}" for k in keys]
    result = count(_Blocks.build(keys), torch.randn(3, 2))
    assert [m["name"] for m in json.loads(result.to_json())["modules"]] == names  # exactly as written
    assert result.by_module()[f"blocks.{keys[0]}"].flops == 2 * 3 * 2 * 2  # 2*3*2*2 = 24: the key kept its work
    rows = result.table().split("\ntotal:")[0].splitlines()
    assert len(rows) == 2 + len(names)  # header, rule, one line per module: no name breaks a row
    for key in keys:
        assert any(row.lstrip().startswith(shown_name(key) + " ") for row in rows), (key, rows)

    report = predict(_Blocks.build(keys, "meta"), torch.empty(3, 2, device="meta"), on="h100-sxm")["h100-sxm"]
    again = RooflineReport.from_json(report.to_json())
    assert [r.name for r in again.modules] == [r.name for r in report.modules]
    assert {r.name for r in report.modules} == set(names)
    csv_names = [row["name"] for row in csv.DictReader(io.StringIO(report.to_csv()))]
    assert csv_names == [r.name for r in report.modules]
    table = report.table(sort="tree", extras=False).splitlines()
    assert len(table) == 2 + sum(r.phase == "all" for r in report.modules)
    for name in names[2:]:
        assert any(line.startswith(report.display_name(name) + " ") for line in table), (name, table)


def test_chart_draws_names_literally(tmp_path):
    """A ``$`` in a name is text, not matplotlib math (``$\\frac$`` would fail to draw)."""
    import torch

    from torch_roofline import predict

    keys = ["$\\frac$", "a$b$c", "new\nline"]
    report = predict(_Blocks.build(keys, "meta"), torch.empty(3, 2, device="meta"), on="h100-sxm")["h100-sxm"]
    figure = report.plot(tmp_path / "chart.png", top_n=5)
    labels = {t.get_text() for t in figure.axes[0].texts}
    assert "blocks.$\\frac$".replace("$", r"\$") in labels and (tmp_path / "chart.png").stat().st_size > 0


_DTYPES = ["float32", "float64", "float16", "bfloat16", "int64", "int32", "bool", "complex64"]
_OPS = {
    "add": lambda a, b: a + b,
    "mul": lambda a, b: a * b,
    "matmul": lambda a, b: a @ b,
    "relu": lambda a, b: a.relu(),
    "sum": lambda a, b: a.sum(-1),
    "softmax": lambda a, b: a.softmax(-1),
    "mean": lambda a, b: a.mean(),
    "cat": lambda a, b: __import__("torch").cat([a, b], -1),
    "where": lambda a, b: __import__("torch").where(a > 0, a, b),
}
_SHAPES = st.lists(st.integers(0, 4), max_size=3).map(tuple)


@SWEEP
@given(st.sampled_from(sorted(_OPS)), _SHAPES, _SHAPES, st.sampled_from(_DTYPES), st.sampled_from(_DTYPES),
       st.booleans())
def test_sweep_count_of_small_ops_matches_the_plain_step(op, shape_a, shape_b, dtype_a, dtype_b, backward):
    """Whatever torch does with the step (forward, and backward of the default loss), count()
    does the same: a result when it runs, the same exception when it fails (torch's, unchanged,
    or our own clear ValueError for a step whose loss has no grad)."""
    import torch
    from torch import nn

    from torch_roofline import count
    from torch_roofline.count import run_step

    def inputs():
        def make(shape, dtype):
            t = torch.ones(shape, dtype=getattr(torch, dtype))
            return t.requires_grad_() if backward and (t.is_floating_point() or t.is_complex()) else t

        return make(shape_a, dtype_a), make(shape_b, dtype_b)

    class Op(nn.Module):
        def forward(self, a, b):
            return _OPS[op](a, b)

    failures = (RuntimeError, TypeError, ValueError, IndexError)
    try:
        run_step(Op(), inputs(), backward=backward)  # the plain step: no counter
        plain_error = None
    except failures as err:
        plain_error = err
    try:
        result = count(Op(), inputs(), backward=backward)
    except failures as err:
        assert plain_error is not None, f"count() failed where the plain step runs: {err!r}"
        assert type(err) is type(plain_error), (err, plain_error)
        if isinstance(err, ValueError) and "backward=True" in str(err):
            assert "pass loss_fn=" in str(err)  # ours: names the fix
        return
    assert plain_error is None, f"count() ran what the plain step refuses: {plain_error!r}"
    total = result.total
    assert total.flops >= 0 and total.bytes_read >= 0 and total.bytes_written >= 0
    assert len(result.table().splitlines()) >= 3 and json.loads(result.to_json())["total"]["flops"] == total.flops


@SWEEP
@given(st.one_of(_JSONISH, st.just("cuda")), st.sampled_from(["memory_model", "backend", "inputs"]))
def test_sweep_count_arguments_fail_with_our_clear_errors(value, argument):
    import torch

    from torch_roofline import count

    kwargs = {"memory_model": "op", "backend": "dispatch"}
    inputs = torch.randn(2, 2)
    if argument == "inputs":
        inputs = value
    else:
        kwargs[argument] = value
    try:
        count(torch.nn.Linear(2, 2), inputs, **kwargs)
    except (ValueError, TypeError) as err:
        text = str(err)
        assert ("count(" in text or "inputs" in text or "forward()" in text or "linear()" in text), text
    except RuntimeError as err:  # torch itself: e.g. a (2, 2) weight against an empty tuple
        assert argument == "inputs", err
