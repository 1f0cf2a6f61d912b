"""Big traces read a few steps at a time (timing/segments.py, timing/parts.py, timing/merge.py).

The oracle is the whole-file read of the same trace: reading in parts must give the same
report (every op row, module row and total, to float rounding; the same notes but the one
saying it read in parts). The parts are forced small (one step each, pieces of a few KB) so
every boundary case is crossed: a step split over pieces, device activity written after all
host events (Kineto's GPU layout), uneven steps, a worker process per part.
"""

from __future__ import annotations

from _paths import TESTS_DIR
import dataclasses
import gzip
import json
import math
import multiprocessing
import os

import pytest
import torch
from torch import nn
from torch.profiler import schedule

from torch_roofline import RooflineProfiler, offline, trace_file
from torch_roofline.devices import Device
from torch_roofline.timing import parts, segments
from torch_roofline.timing.merge import StepCosts, part_costs
from torch_roofline.timing.shapes import per_step
from torch_roofline.timing.trace import TraceError

pytestmark = pytest.mark.filterwarnings("ignore:Profiler won't be using warmup")
DATA = os.path.join(TESTS_DIR, "data")
FLAT = Device(name="parts-flat", peak_flops={"fp32": 1e12}, bandwidth=1e11)
PARTS_NOTE = "read a few steps at a time"


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 10))


def _record(path: str, batches=(4, 4, 4, 4, 4), train: bool = True, profile_memory: bool = True) -> nn.Module:
    """A RooflineProfiler trace of ``len(batches)`` ProfilerStep steps written to ``path``."""
    model = _net()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    prof = RooflineProfiler(model, roof=FLAT, schedule=schedule(wait=0, warmup=0, active=len(batches), repeat=1),
                            export_trace=path, profile_memory=profile_memory)
    with prof:
        for n in batches:
            x = torch.randn(n, 3, 8, 8)
            if train:
                opt.zero_grad(set_to_none=True)
                nn.functional.cross_entropy(model(x), torch.randint(0, 10, (n,))).backward()
                opt.step()
            else:
                with torch.no_grad():
                    model(x)
            prof.step()
    return model


@pytest.fixture
def small_parts(monkeypatch):
    """Every trace file read in parts of one step, from pieces of 4 KB, by 2 worker processes,
    a plain file scanned in two halves by two processes."""
    monkeypatch.setattr(segments, "PART_BYTES", 1)
    monkeypatch.setattr(segments, "BLOCK_BYTES", 4096)
    monkeypatch.setattr(parts, "PART_WORKERS", 2)
    monkeypatch.setattr(parts, "SPLIT_SCAN_BYTES", 0)


def _both(monkeypatch, path, **kwargs):
    monkeypatch.setattr(trace_file, "PARTS_BYTES", 1 << 62)
    whole = offline.from_trace(path, **kwargs)
    monkeypatch.setattr(trace_file, "PARTS_BYTES", 0)
    in_parts = offline.from_trace(path, **kwargs)
    assert not multiprocessing.active_children(), "the part readers are gone once the report is made"
    return whole, in_parts


def _close(a, b) -> bool:
    if dataclasses.is_dataclass(a) and dataclasses.is_dataclass(b):
        return all(_close(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-15) or (math.isnan(a) and math.isnan(b))
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    return a == b


def _assert_same(whole, in_parts) -> None:
    assert any(n.startswith(PARTS_NOTE) for n in in_parts.notes), "the trace was read in parts"
    assert not any(n.startswith(PARTS_NOTE) for n in whole.notes)
    assert [n for n in in_parts.notes if not n.startswith(PARTS_NOTE)] == list(whole.notes)
    assert in_parts.steps == whole.steps
    for name in ("ops", "modules"):
        rows_w = {(r.name, r.phase, getattr(r, "op", None)): r for r in getattr(whole, name)}
        rows_p = {(r.name, r.phase, getattr(r, "op", None)): r for r in getattr(in_parts, name)}
        assert rows_w.keys() == rows_p.keys()
        for key, row in rows_w.items():
            assert _close(row, rows_p[key]), (name, key, row, rows_p[key])
    assert _close(whole.totals, in_parts.totals)


def test_training_trace_read_in_parts_is_the_whole_read(tmp_path, monkeypatch, small_parts):
    path = str(tmp_path / "train.pt.trace.json.gz")
    _record(path)
    whole, in_parts = _both(monkeypatch, path, roof=FLAT)
    _assert_same(whole, in_parts)
    assert whole.steps == 5 and whole.totals.flops > 0 and whole.totals.peak_memory_bytes
    assert any(r.phase == "backward" for r in in_parts.ops) and any(r.phase == "optimizer" for r in in_parts.ops)
    assert "(, " not in in_parts.table()  # a trace's modules have no type: "(backward)", not "(, backward)"


def test_steps_that_differ_are_averaged_alike(tmp_path, monkeypatch, small_parts):
    # batches 4, 4, 8, 4, 2: the Linear's work differs from step to step (first at step 2)
    path = str(tmp_path / "uneven.json")
    _record(path, batches=(4, 4, 8, 4, 2), train=False)
    whole, in_parts = _both(monkeypatch, path, roof=FLAT)
    _assert_same(whole, in_parts)
    assert any("averaged over the steps" in n for n in in_parts.notes)
    # oracle: Linear(512, 10) forward, 2 * n * 512 * 10 FLOPs per step, averaged over 5 steps
    assert in_parts.module("3", "forward").flops == round(sum(2 * n * 512 * 10 for n in (4, 4, 8, 4, 2)) / 5)


def test_a_model_joined_to_a_trace_read_in_parts(tmp_path, monkeypatch, small_parts):
    path = str(tmp_path / "fwd.json")
    model = _record(path, train=False)
    whole, in_parts = _both(monkeypatch, path, model=model, inputs=torch.randn(4, 3, 8, 8), roof=FLAT)
    _assert_same(whole, in_parts)


def test_a_plain_torch_profiler_trace_read_in_parts(tmp_path, monkeypatch, small_parts):
    """No module ranges, no memory events: torch.profiler's own schedule and export."""
    model = _net()
    path = str(tmp_path / "plain.json")
    with torch.profiler.profile(schedule=schedule(wait=0, warmup=0, active=4, repeat=1), record_shapes=True) as prof:
        for _ in range(4):
            with torch.no_grad():
                model(torch.randn(4, 3, 8, 8))
            prof.step()
    prof.export_chrome_trace(path)
    whole, in_parts = _both(monkeypatch, path, roof=FLAT)
    _assert_same(whole, in_parts)
    assert whole.steps == 4


def _gpu_steps(path: str, steps: int) -> float:
    """A GPU trace of ``steps`` copies of the A100 alexnet fixture, each a ProfilerStep, laid
    out as Kineto writes GPU traces: every step's host ops first, then the runtime calls,
    kernels and flows of every step. Ids are made unique per copy. Returns the fixture's
    kernel + memcpy + memset time in seconds (one copy)."""
    with gzip.open(os.path.join(DATA, "alexnet_a100_forward.kineto.json.gz")) as f:
        doc = json.load(f)
    events = [e for e in doc.pop("traceEvents") if e.get("ph") != "M" and isinstance(e.get("ts"), (int, float))]
    host = [e for e in events if e.get("cat") in ("cpu_op", "user_annotation")]
    t0 = min(e["ts"] for e in events)
    span = max(e["ts"] + e.get("dur", 0) for e in events) - t0
    first, rest = [], []
    for k in range(steps):
        shift = k * (span + 1000.0)
        marker = {"ph": "X", "cat": "user_annotation", "name": f"ProfilerStep#{k}", "pid": host[0]["pid"],
                  "tid": host[0]["tid"], "ts": t0 + shift - 1, "dur": span + 2}
        first.append(marker)
        for e in events:
            c = dict(e, ts=e["ts"] + shift)
            if isinstance(e.get("args"), dict):
                c["args"] = dict(e["args"])
                for key in ("correlation", "External id"):
                    if isinstance(c["args"].get(key), int):
                        c["args"][key] += k * 100_000
            if e.get("ph") in ("s", "f") and isinstance(e.get("id"), int):
                c["id"] = e["id"] + k * 100_000
            (first if e.get("cat") in ("cpu_op", "user_annotation") else rest).append(c)
    doc["traceEvents"] = first + rest
    with open(path, "w") as f:
        json.dump(doc, f)
    busy, end = 0.0, -math.inf  # the union of the device intervals of one copy
    for lo, hi in sorted((e["ts"], e["ts"] + e["dur"]) for e in events
                         if e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")):
        busy += max(0.0, hi - max(lo, end))
        end = max(end, hi)
    return busy * 1e-6


def test_gpu_trace_device_activity_after_all_host_events(tmp_path, monkeypatch, small_parts):
    path = str(tmp_path / "gpu.json")
    busy = _gpu_steps(path, 4)
    whole, in_parts = _both(monkeypatch, path)
    _assert_same(whole, in_parts)
    # oracle: every step's kernels were found (by correlation id, far from their launches in
    # the file): the step time, the device's busy time, is one copy's
    assert in_parts.totals.time_s == pytest.approx(busy, rel=1e-9)
    assert whole.device.name.startswith("NVIDIA A100")


def test_a_bad_event_in_a_part_read_by_a_worker_names_it(tmp_path, monkeypatch, small_parts):
    path = str(tmp_path / "bad.json")
    _record(path, train=False, profile_memory=False)
    with open(path) as f:
        doc = json.load(f)
    ops = [e for e in doc["traceEvents"] if e.get("cat") == "cpu_op" and e.get("name") == "aten::linear"]
    ops[-1]["dur"] = "soon"  # in the last step: read by a worker
    with open(path, "w") as f:
        json.dump(doc, f)
    monkeypatch.setattr(trace_file, "PARTS_BYTES", 0)
    with pytest.raises(TraceError, match="dur"):
        offline.from_trace(path, roof=FLAT)
    assert not multiprocessing.active_children()


def test_scan_keeps_no_event(tmp_path, monkeypatch):
    """The scan keeps per piece a few numbers, never the events (memory by pieces, not events)."""
    monkeypatch.setattr(segments, "BLOCK_BYTES", 4096)
    path = str(tmp_path / "t.json")
    _record(path, train=False)
    scan = segments.scan_trace(path)
    assert scan is not None and len(scan.markers) == 5
    assert sum(b.count for b in scan.blocks) == scan.events
    assert all(b.packed is None for b in scan.blocks)  # a plain file is read again from disk
    assert sum(b.size for b in scan.blocks) <= scan.bytes <= os.path.getsize(path)
    part, spans = segments.part_trace(scan, scan.markers[2:3])
    assert len(spans) == 1 and len(part.memory) <= 2  # the peak of each device type only
    assert all(spans[0][0] - 1e-6 <= e.start_s <= spans[0][1] + 1e-6 for e in part.events)


def test_step_costs_match_per_step():
    """StepCosts over parts = per_step over the whole (even and uneven ops)."""
    from torch_roofline.records import OpCost

    def cost(op, flops, index, step):
        return OpCost(op=op, module="m", scope=("", "m"), phase="forward", flops=flops, macs=flops // 2,
                      bytes_read=4 * flops, bytes_written=flops, compulsory_bytes_read=0, compulsory_bytes_written=0,
                      dtype="float32", unit="vector", counted=True, index=index)

    rows = []  # (cost, step): aten.a even (10 per step), aten.b uneven from step 3, aten.c only in step 4
    for step in range(6):
        rows.append((cost("aten.a", 10, 3 * step, step), step))
        rows.append((cost("aten.b", 20 if step < 3 else 30, 3 * step + 1, step), step))
        if step == 4:
            rows.append((cost("aten.c", 7, 3 * step + 2, step), step))
    want, want_notes = per_step([c for c, _ in rows], 6, [s for _, s in rows])
    merged = StepCosts()
    for lo, hi in ((0, 2), (2, 5), (5, 6)):  # three parts; each numbers its calls from 0
        part = [(dataclasses.replace(c, index=c.index - 3 * lo), s - lo) for c, s in rows if lo <= s < hi]
        merged.add(part_costs([c for c, _ in part], [s for _, s in part], hi - lo))
    got, notes = merged.result()
    assert notes == want_notes
    key = lambda c: (c.op, c.flops, c.bytes_read)  # noqa: E731
    assert sorted(map(key, got)) == sorted(map(key, want))


def test_scan_in_a_child_process_while_this_one_prepares(tmp_path):
    path = str(tmp_path / "t.json")
    _record(path, train=False)
    ran = []
    scan = parts.scan_while(path, lambda: ran.append(True))
    assert ran == [True] and scan == segments.scan_trace(path)
    with pytest.raises(IsADirectoryError):  # the child's error, raised here
        parts.scan_while(str(tmp_path), lambda: None)
    assert not multiprocessing.active_children()


def test_a_scan_split_in_two_halves_is_the_whole_scan(tmp_path, monkeypatch):
    monkeypatch.setattr(segments, "BLOCK_BYTES", 4096)
    monkeypatch.setattr(parts, "SPLIT_SCAN_BYTES", 0)
    path = str(tmp_path / "t.json")
    _record(path)
    size = os.path.getsize(path)
    cut = parts.split_point(path, size // 2)
    with open(path, "rb") as f:
        raw = f.read()
    assert cut is not None and raw[:cut].rstrip().endswith(b"},") and raw[cut:].lstrip().startswith(b"{")
    one, two = segments.scan_trace(path), parts.scan_while(path, lambda: None)
    assert (two.events, two.markers, two.origin_us, dict(two.header)) == (one.events, one.markers, one.origin_us,
                                                                         dict(one.header))
    assert [b.first for b in two.blocks] == sorted(b.first for b in two.blocks)
    assert sum(b.count for b in two.blocks) == one.events
    with gzip.open(tmp_path / "t.json.gz", "wb") as f:
        f.write(raw)
    assert parts.split_point(str(tmp_path / "t.json.gz"), 100) is None  # no way into a gzip stream's middle


def test_plan_parts_gives_each_worker_a_share_and_keeps_every_step_in_order():
    markers = tuple(segments.StepMarker(i, float(i * 100), 90.0) for i in range(7))

    def plan(total_bytes, part_bytes, at_least):
        scan = segments.TraceScan("t.json", {}, (), markers, 0.0, 0, total_bytes)
        return segments.plan_parts(scan, part_bytes, at_least)

    # 7 steps of 1 MB in parts of ~32 MB: one part, unless two workers share them (4 + 3 steps)
    assert [len(p) for p in plan(7 << 20, 32 << 20, 1)] == [7]
    assert [len(p) for p in plan(7 << 20, 32 << 20, 2)] == [4, 3]
    # parts of ~2 MB: 4 parts (2 steps, the last 1); more workers than steps: a step each
    assert [len(p) for p in plan(7 << 20, 2 << 20, 2)] == [2, 2, 2, 1]
    assert [len(p) for p in plan(7 << 20, 32 << 20, 16)] == [1] * 7
    for at_least in (1, 2, 3, 16):
        assert tuple(m for p in plan(7 << 20, 3 << 20, at_least) for m in p) == markers
    assert segments.plan_parts(segments.TraceScan("t.json", {}, (), (), 0.0, 0, 0), at_least=2) == ()


def test_fewer_workers_where_free_memory_holds_fewer_parts(monkeypatch):
    # 4 steps of 50 MB of file each; a part's records take ~10 bytes per byte of file (500 MB a step)
    markers = tuple(segments.StepMarker(i, float(i * 100), 90.0) for i in range(4))
    scan = segments.TraceScan("t.json", {}, (), markers, 0.0, 0, 200_000_000)
    plan = segments.plan_parts(scan, at_least=4)
    assert [len(p) for p in plan] == [1, 1, 1, 1]
    for free, fit in ((64e9, 4), (1.2e9, 2), (0.3e9, 1)):
        monkeypatch.setattr(parts, "_memory_available", lambda free=free: int(free))
        assert parts._workers_that_fit(scan, plan, slice_bytes=32 << 20) == fit
    # steps of 100 MB are read in slices of ~32 MB (at most ~64 MB of file, ~640 MB of records, each)
    long_steps = dataclasses.replace(scan, bytes=400_000_000)
    for free, fit in ((64e9, 4), (2.5e9, 3), (0.5e9, 1)):
        monkeypatch.setattr(parts, "_memory_available", lambda free=free: int(free))
        assert parts._workers_that_fit(long_steps, plan, slice_bytes=32 << 20) == fit
    monkeypatch.setattr(parts, "_memory_available", lambda: None)  # unknown: as many as parts
    assert parts._workers_that_fit(scan, plan) == 4
