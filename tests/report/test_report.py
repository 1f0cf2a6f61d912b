"""RooflineReport: JSON contract, round trip, CSV/DataFrame columns, the table for people."""

from _paths import REPO_ROOT
import csv
import dataclasses
import io
import json
import os
import re
import sys
import types

import pytest

from torch_roofline.report.build import analyse
from torch_roofline.records import ModuleInfo, ModuleTiming, OpCost, OpTiming, Roof
from torch_roofline.report import SCHEMA, DeviceInfo, RooflineReport

MATRIX = Roof("fp32", "matrix", 1e12, 1e11, "measured")
VECTOR = Roof("fp32", "vector", 2.5e11, 1e11, "measured")
SPARE = Roof("bf16", "matrix", 4e12, 1e11, "datasheet")  # on the device, never used
ROOFS = {("float32", "matrix"): MATRIX, ("float32", "vector"): VECTOR}
DEVICE = DeviceInfo("test-dev", "Test Device", "measured", 1e11, (MATRIX, VECTOR, SPARE))
ROOT = REPO_ROOT


def cost(op, module, scope, flops, nbytes, unit="vector", index=0, counted=True):
    return OpCost(op, module, scope, "forward", flops, flops // 2 if unit == "matrix" else 0,
                  nbytes // 2, nbytes // 2, nbytes // 2, nbytes // 2, "float32", unit, counted, index)


def timing(op, module, scope, time_s):
    return OpTiming(op, module, scope, "forward", time_s, time_s)


def model_inputs():
    """Net -> block -> block.fc, plus an uncounted op in block (see test_analysis for the math)."""
    costs = [
        cost("aten.relu", "", ("",), 10**6, 8 * 10**6, index=0),
        cost("aten.mm", "block.fc", ("", "block", "block.fc"), 2 * 10**9, 2 * 10**6, "matrix", 1),
        cost("aten.add", "block", ("", "block"), 10**6, 8 * 10**6, index=2),
        cost("aten.foo", "block", ("", "block"), 0, 800, index=3, counted=False),
    ]
    timings = [
        timing("aten.relu", "", ("",), 1.6e-4),
        timing("aten.mm", "block.fc", ("", "block", "block.fc"), 2.4e-3),
        timing("aten.add", "block", ("", "block"), 1.6e-4),
        timing("aten.foo", "block", ("", "block"), 1e-4),
    ]
    module_timings = [
        ModuleTiming("", "forward", 1, 4e-3, 1e-3),
        ModuleTiming("block", "forward", 1, 3e-3, 0.5e-3),
        ModuleTiming("block.fc", "forward", 1, 2.5e-3, 2.5e-3),
    ]
    modules = [
        ModuleInfo("", "Net", 1_000_100, 4_000_400),
        ModuleInfo("block", "Sequential", 1_000_100, 4_000_400),
        ModuleInfo("block.fc", "Linear", 1_000_100, 4_000_400),
    ]
    return costs, timings, module_timings, modules


@pytest.fixture
def measured():
    return analyse(*model_inputs(), ROOFS, device=DEVICE, peak_memory_bytes=123_456_789,
                   activation_bytes={"block.fc": 4096}, torch_version="2.14.1")


@pytest.fixture
def predicted():
    costs, _, _, modules = model_inputs()
    return analyse(costs, modules=modules, roofs=ROOFS, device=DEVICE)


# ------------------------------------------------------------------------------ JSON contract

# The keys the issue and docs/report-schema.md promise (written out here, not read from code).
TOP_KEYS = {"schema", "predicted", "model", "memory_model", "steps", "created", "torch_version",
            "device", "totals", "modules", "ops", "uncounted", "time_lost"}
DEVICE_KEYS = {"id", "name", "source", "memory_bandwidth", "roofs"}
ROOF_KEYS = {"dtype", "unit", "peak_flops_per_s", "bandwidth_bytes_per_s", "ridge", "source", "used"}
TOTAL_KEYS = {"time_s", "roofline_time_s", "time_lost_s", "efficiency", "coverage", "flops", "macs",
              "params", "param_bytes", "bytes_read", "bytes_written", "compulsory_bytes",
              "peak_memory_bytes", "bound_time_share", "op_time_s"}
ROW_KEYS = {"name", "type", "phase", "depth", "calls", "flops", "macs", "params", "param_bytes",
            "bytes_read", "bytes_written", "compulsory_bytes", "intensity", "time_s",
            "achieved_flops_per_s", "achieved_bytes_per_s", "attainable_flops_per_s", "roof",
            "efficiency", "suspect", "bound", "roofline_time_s", "time_lost_s", "fusion_headroom"}
MODULE_KEYS = ROW_KEYS | {"self_time_s", "activation_bytes"}
OP_KEYS = ROW_KEYS | {"op", "counted"}


def test_schema_keys_present(measured):
    d = json.loads(measured.to_json())
    assert d["schema"] == SCHEMA == "torch_roofline.report/1"
    assert TOP_KEYS <= set(d)
    assert DEVICE_KEYS <= set(d["device"])
    assert all(ROOF_KEYS <= set(r) for r in d["device"]["roofs"])
    assert TOTAL_KEYS <= set(d["totals"])
    assert set(d["totals"]["bound_time_share"]) == {"compute", "memory", "overhead"}
    assert d["modules"] and all(MODULE_KEYS <= set(r) for r in d["modules"])
    assert d["ops"] and all(OP_KEYS <= set(r) for r in d["ops"])
    assert all({"op", "calls", "time_s"} <= set(u) for u in d["uncounted"])
    assert d["time_lost"] and all(
        {"name", "type", "phase", "time_lost_s", "bound", "reason", "hint"} <= set(i) for i in d["time_lost"])
    # used roofs are marked; the spare bf16 roof is listed but unused
    used = {(r["dtype"], r["unit"]): r["used"] for r in d["device"]["roofs"]}
    assert used == {("fp32", "matrix"): True, ("fp32", "vector"): True, ("bf16", "matrix"): False}
    assert d["device"]["roofs"][0]["ridge"] == 10.0  # 1e12 / 1e11
    assert d["totals"]["peak_memory_bytes"] == 123_456_789
    assert d["totals"]["params"] == 1_000_100


def test_every_documented_row_key_is_written(measured):
    # Ties code and docs: each backticked key of the row table in docs/report-schema.md.
    with open(os.path.join(ROOT, "docs", "report-schema.md"), encoding="utf-8") as f:
        doc = f.read()
    table = doc[doc.index("A row (module or op)"):]
    keys = set()
    for line in table.splitlines():
        if line.startswith("| `"):
            keys.update(re.findall(r"`([a-z_]+)`", line.split("|")[1]))
    assert {"name", "op", "efficiency", "suspect", "counted", "activation_bytes"} <= keys
    d = measured.to_dict()
    written = set(d["modules"][0]) | set(d["ops"][0])
    assert keys <= written


def test_json_is_sorted_and_null_for_unknowns(measured):
    text = measured.to_json()
    assert "NaN" not in text and "Infinity" not in text
    d = json.loads(text)
    assert list(d) == sorted(d)
    foo = next(r for r in d["ops"] if r["op"] == "aten.foo")
    assert foo["flops"] is None and foo["efficiency"] is None and foo["counted"] is False


def test_nan_and_inf_become_null():
    report = analyse(*model_inputs(), ROOFS, device=DEVICE)
    bad_op = dataclasses.replace(report.ops[0], efficiency=float("nan"), intensity=float("inf"))
    bad_totals = dataclasses.replace(report.totals, coverage=float("-inf"))
    bad = dataclasses.replace(report, ops=(bad_op,) + report.ops[1:], totals=bad_totals)

    def reject(name):
        raise AssertionError(f"JSON holds {name}")

    d = json.loads(bad.to_json(), parse_constant=reject)
    assert d["ops"][0]["efficiency"] is None and d["ops"][0]["intensity"] is None
    assert d["totals"]["coverage"] is None
    rec = bad.records("op")[0]
    assert rec["efficiency"] is None and rec["intensity"] is None


def test_json_round_trip_is_exact(measured, predicted, tmp_path):
    for report in (measured, predicted):
        path = tmp_path / "report.json"
        text = report.to_json(path)
        again = RooflineReport.from_json(path)
        assert again == report
        assert RooflineReport.from_json(text) == report
        assert again.to_json() == text
    assert RooflineReport.from_json(str(tmp_path / "report.json")).predicted


def test_from_json_errors(tmp_path):
    with pytest.raises(ValueError, match="schema 'torch_roofline.report/9' is not"):
        RooflineReport.from_json(json.dumps({"schema": "torch_roofline.report/9"}))
    with pytest.raises(FileNotFoundError, match="no file"):
        RooflineReport.from_json(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="not valid JSON"):
        RooflineReport.from_json("{not json")


# ------------------------------------------------------------------------------ CSV / DataFrame


def test_to_csv_columns_carry_units(measured, tmp_path):
    path = tmp_path / "modules.csv"
    text = measured.to_csv(path)
    assert path.read_bytes().decode("utf-8") == text  # rows end in CRLF (RFC 4180), as returned
    assert text.endswith("\r\n") and "\n" not in text.replace("\r\n", "")
    rows = list(csv.DictReader(io.StringIO(text)))
    header = list(rows[0])
    for col in ("name", "type", "phase", "calls", "flops", "macs", "bytes_read", "bytes_written",
                "intensity", "time_s", "self_time_s", "achieved_flops_per_s",
                "attainable_flops_per_s", "efficiency", "bound", "roofline_time_s", "time_lost_s",
                "roof_dtype", "roof_unit"):
        assert col in header
    fc = next(r for r in rows if r["name"] == "block.fc" and r["phase"] == "all")
    assert float(fc["time_s"]) == 2.5e-3
    assert int(fc["flops"]) == 2 * 10**9
    assert fc["roof_unit"] == "matrix" and fc["activation_bytes"] == "4096"
    ops = list(csv.DictReader(io.StringIO(measured.to_csv(level="op"))))
    foo = next(r for r in ops if r["op"] == "aten.foo")
    assert foo["flops"] == "" and foo["counted"] == "False"  # unknown is an empty cell, not 0


def test_to_dataframe(measured):
    df = measured.to_dataframe()
    assert list(df.columns) == list(csv.DictReader(io.StringIO(measured.to_csv())).fieldnames)
    fc = df[(df["name"] == "block.fc") & (df["phase"] == "all")].iloc[0]
    assert fc["roofline_time_s"] == pytest.approx(2e-3)  # 2e9 FLOPs / 1e12 FLOP/s
    ops = measured.to_dataframe("op")
    assert {"op", "counted", "time_s"} <= set(ops.columns) and len(ops) == 4
    assert len(measured.to_dataframe("uncounted")) == 1
    with pytest.raises(ValueError, match="level 'layer' is not one of"):
        measured.to_dataframe("layer")


def test_to_dataframe_without_pandas_says_how_to_install(measured, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match=re.escape("pip install torch_roofline[pandas]")):
        measured.to_dataframe()


# ------------------------------------------------------------------------------ table


def test_table_units_names_and_sections(measured):
    text = measured.table()
    header = text.splitlines()[0]
    for col in ("time (ms)", "self (ms)", "roofline (ms)", "lost (ms)", "GFLOP", "traffic (MB)",
                "FLOP/B", "achieved (GFLOP/s)", "eff. (%)", "bound"):
        assert col in header
    assert re.search(r"^Net\s+Net\s", text, re.M)  # the root shows as the model class name
    assert "Where the time goes" in text and "hint:" in text
    assert "Uncounted ops" in text and "aten.foo" in text
    # block.fc: 2.5 ms measured, 2 ms roofline, efficiency 80.0 %
    fc_line = next(line for line in text.splitlines() if line.startswith("block.fc"))
    assert "2.50" in fc_line and "80.0" in fc_line
    assert "Where the time goes" not in measured.table(extras=False)


def test_table_filters_and_sorts(measured):
    body = lambda t: [l for l in t.split("\n\n")[0].splitlines()[2:]]  # noqa: E731
    assert len(body(measured.table(top=1, extras=False))) == 1
    assert body(measured.table(top=1, extras=False))[0].startswith("Net")  # longest time
    names = [l.split()[0] for l in body(measured.table(depth=1, extras=False))]
    assert names == ["Net", "block"]
    assert [l.split()[0] for l in body(measured.table(sort="tree", extras=False))] == ["Net", "block", "block.fc"]
    ops = measured.table(level="op", sort="time", extras=False)
    assert body(ops)[0].startswith("block.fc") and "aten.mm" in body(ops)[0]
    assert "forward" in measured.table(phase=None, extras=False)
    with pytest.raises(ValueError, match="sort 'speed' is not one of"):
        measured.table(sort="speed")
    with pytest.raises(ValueError, match="phase 'fwd' is not one of"):
        measured.table(phase="fwd")


def test_predicted_table_and_str(predicted, measured):
    text = predicted.table(extras=False)
    assert "roofline (ms)" in text and "attainable (" in text
    assert "eff." not in text and "time (" not in text
    assert "predicted" in str(predicted)
    s = str(measured)
    assert s.startswith("Roofline report: Net on Test Device")
    assert "coverage" in s and "Where the time goes" in s


def test_module_lookup(measured):
    assert measured.module("block").type == "Sequential"
    with pytest.raises(KeyError, match="no row for module 'nope'"):
        measured.module("nope")


# ------------------------------------------------------------------------------ sinks


def test_to_tensorboard_delegates(measured, monkeypatch):
    calls = []
    fake = types.ModuleType("torch_roofline.report.tensorboard")
    fake.write_report = lambda w, r, **kw: calls.append((w, r, kw)) or "written"
    monkeypatch.setitem(sys.modules, "torch_roofline.report.tensorboard", fake)
    assert measured.to_tensorboard("runs/x", step=3, top_n=5) == "written"
    assert calls == [("runs/x", measured, {"step": 3, "tag": "roofline", "top_n": 5})]
