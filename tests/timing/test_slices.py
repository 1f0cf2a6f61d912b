"""One long step read in slices (timing/slices.slice_trace, attribution's SliceCarry, parts).

A part is at least one step; a step too big to hold at once (a 4 GB trace of 5 steps) is
read slice by slice, each slice attributed after the ones before it. The oracle, as for
parts, is the whole-file read of the same trace: every op row, module row and total must be
the same (to float rounding). The slices are forced tiny (a few KB of file each), so every
boundary falls somewhere: inside module ranges, inside autograd engine events, between a
forward and its backward, inside the optimizer; and on GPU traces between launches and the
kernels written after all host events.
"""

from __future__ import annotations

from _paths import REPO_ROOT, TESTS_DIR
import gzip
import json
import math
import os

import pytest
import torch
from torch import nn
from torch.profiler import schedule
from torch.utils.checkpoint import checkpoint

from test_parts import FLAT, PARTS_NOTE, _assert_same, _gpu_steps, _net
from torch_roofline import RooflineProfiler, offline, trace_file
from torch_roofline.timing import parts, segments, trace as trace_module
from torch_roofline.timing import slices as slices_module
from torch_roofline.timing.attribution import SliceCarry, attribute
from torch_roofline.timing.trace import load_trace

pytestmark = pytest.mark.filterwarnings("ignore:Profiler won't be using warmup")


@pytest.fixture
def slices(monkeypatch):
    """Every trace file read in parts of one step, a step of more than 8 KB in slices of about
    4 KB (pieces of 4 KB, the file's head too); returns a record of the slices read."""
    monkeypatch.setattr(segments, "PART_BYTES", 1)
    monkeypatch.setattr(segments, "BLOCK_BYTES", 4096)
    monkeypatch.setattr(trace_module, "_CHUNK", 16384)
    monkeypatch.setattr(parts, "SLICE_BYTES", 4096)
    monkeypatch.setattr(parts, "PART_WORKERS", 1)  # the slices are counted in this process
    monkeypatch.setattr(trace_file, "PARTS_MEMORY_BYTES", 0)  # a trace of one step is read in parts too
    seen = []
    real = parts.slice_trace

    def recording(*args, **kwargs):
        piece = real(*args, **kwargs)
        seen.append(piece)
        return piece

    monkeypatch.setattr(parts, "slice_trace", recording)
    return seen


def _both(monkeypatch, path, **kwargs):
    monkeypatch.setattr(trace_file, "PARTS_BYTES", 1 << 62)
    whole = offline.from_trace(path, **kwargs)
    monkeypatch.setattr(trace_file, "PARTS_BYTES", 0)
    return whole, offline.from_trace(path, **kwargs)


def _train_one_step(path, micro=3, use_checkpoint=False):
    """One ProfilerStep of ``micro`` forward/backward micro-batches and one optimizer step."""
    model = _net()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    prof = RooflineProfiler(model, roof=FLAT, schedule=schedule(wait=0, warmup=0, active=1, repeat=1),
                            export_trace=path, profile_memory=True)
    with prof:
        opt.zero_grad(set_to_none=True)
        for _ in range(micro):
            x = torch.randn(4, 3, 8, 8, requires_grad=use_checkpoint)
            out = checkpoint(model, x, use_reentrant=False) if use_checkpoint else model(x)
            nn.functional.cross_entropy(out, torch.randint(0, 10, (4,))).backward()
        opt.step()
        prof.step()
    return model


def test_a_training_step_read_in_slices_is_the_whole_read(tmp_path, monkeypatch, slices):
    path = str(tmp_path / "one.json")
    _train_one_step(path)
    whole, sliced = _both(monkeypatch, path, roof=FLAT)
    assert len(slices) >= 10, "the step was read in many slices"
    assert sum(len(s.trace.continued) for s in slices) > 0, "module ranges and engine events crossed the cuts"
    _assert_same(whole, sliced)
    # oracle for the calls: 3 micro-batches of the model (root range and every module), once the optimizer
    assert sliced.steps == 1
    assert sliced.module("", "forward").calls == 3 and sliced.module("3", "forward").calls == 3
    assert sliced.module("3", "backward").calls == 3 and sliced.module("", "optimizer").calls == 1
    # Linear(512, 10), batch 4: forward 2*4*512*10 FLOPs per micro-batch
    assert sliced.module("3", "forward").flops == 3 * 2 * 4 * 512 * 10


def test_no_op_call_is_split_and_each_event_time_is_counted_once(tmp_path, monkeypatch, slices):
    path = str(tmp_path / "one.json")
    _train_one_step(path, micro=2)
    monkeypatch.setattr(trace_file, "PARTS_BYTES", 0)
    offline.from_trace(path, roof=FLAT)
    whole = {e.index: e for e in load_trace(path).events if e.kind not in ("kernel", "gpu_memcpy", "gpu_memset")}
    assert len(slices) >= 5
    ends = [s.end_s for s in slices]
    assert ends[-1] is None and all(a < b for a, b in zip(ends, ends[1:-1]))
    held = {}
    for piece in slices:
        lo = -math.inf if piece.start_s is None else piece.start_s
        hi = math.inf if piece.end_s is None else piece.end_s
        for e in piece.trace.events:
            assert lo - 1e-9 <= e.start_s and e.end_s <= hi + 1e-9, "a slice's events end at its end"
            held[e.index] = held.get(e.index, 0.0) + e.dur_s
            if e.index not in piece.trace.continued and e.kind == "cpu_op" and whole[e.index].dur_s != e.dur_s:
                assert slices_module._passable(e), f"an op call was cut: {e.name}"
    step = next(e for e in whole.values() if e.name.startswith("ProfilerStep#"))
    inside = [e for e in whole.values() if step.start_s - 1e-9 <= e.start_s <= step.end_s + 1e-9]
    assert {e.index for e in inside} == set(held), "every host event of the step is in a slice"
    for e in inside:  # time conserved: the pieces of an event that crossed cuts add up to it
        assert held[e.index] == pytest.approx(e.dur_s, rel=1e-9, abs=1e-12), e.name


def test_activation_checkpointing_in_slices(tmp_path, monkeypatch, slices):
    path = str(tmp_path / "ckpt.json")
    _train_one_step(path, micro=2, use_checkpoint=True)
    whole, sliced = _both(monkeypatch, path, roof=FLAT)
    assert len(slices) >= 5
    _assert_same(whole, sliced)
    assert any(r.recompute_calls for r in sliced.ops), "the recomputed forward is seen in slices too"


def test_a_model_joined_to_a_step_read_in_slices(tmp_path, monkeypatch, slices):
    path = str(tmp_path / "fwd.json")
    torch.manual_seed(0)
    model = nn.Sequential(*[m for _ in range(16) for m in (nn.Linear(32, 32), nn.ReLU())])
    prof = RooflineProfiler(model, roof=FLAT, schedule=schedule(wait=0, warmup=0, active=1, repeat=1),
                            export_trace=path)
    with prof, torch.no_grad():
        model(torch.randn(4, 32))
        prof.step()
    whole, sliced = _both(monkeypatch, path, model=model, inputs=torch.randn(4, 32), roof=FLAT)
    assert len(slices) >= 2
    _assert_same(whole, sliced)


def test_a_plain_torch_profiler_step_in_slices_counts_module_runs_once(tmp_path, monkeypatch, slices):
    """No module ranges: module calls are runs of ops, and a run across a cut is one call."""
    model = _net()
    path = str(tmp_path / "plain.json")
    with torch.profiler.profile(schedule=schedule(wait=0, warmup=0, active=1, repeat=1), record_shapes=True) as prof:
        with torch.no_grad():
            for _ in range(8):
                model(torch.randn(4, 3, 8, 8))
        prof.step()
    prof.export_chrome_trace(path)
    whole, sliced = _both(monkeypatch, path, roof=FLAT)
    assert len(slices) >= 3
    _assert_same(whole, sliced)


def test_a_gpu_step_in_slices_finds_every_kernel(tmp_path, monkeypatch, slices):
    path = str(tmp_path / "gpu.json")
    busy = _gpu_steps(path, 1)
    whole, sliced = _both(monkeypatch, path)
    assert len(slices) >= 3
    _assert_same(whole, sliced)
    assert sliced.totals.time_s == pytest.approx(busy, rel=1e-9)


def test_a_gzip_step_in_slices(tmp_path, monkeypatch, slices):
    plain = str(tmp_path / "one.json")
    _train_one_step(plain, micro=2)
    path = str(tmp_path / "one.json.gz")
    with open(plain, "rb") as f, gzip.open(path, "wb") as g:
        g.write(f.read())
    whole, sliced = _both(monkeypatch, path, roof=FLAT)
    assert len(slices) >= 5 and any(n.startswith(PARTS_NOTE) for n in sliced.notes)
    _assert_same(whole, sliced)


def test_slice_end_moves_off_an_op_call():
    """A proposed cut inside an op call moves to the call's start; one inside the slice's first
    call moves past its end; a module range may be cut."""
    from torch_roofline.timing.trace import TraceEvent

    def ev(i, name, start, dur, kind="cpu_op"):
        return TraceEvent(kind=kind, name=name, start_s=start, dur_s=dur, pid=1, tid=1, index=i)

    rng = ev(0, "roofline::layer", 0.0, 10.0)
    mm = ev(1, "aten::mm", 1.0, 3.0)
    add = ev(2, "aten::add", 5.0, 1.0)
    assert slices_module._settle_end([rng, mm], 4.5) == (4.5, [rng, mm], None)  # only the range is open: cut it
    assert slices_module._settle_end([rng, mm, add], 5.5) == (5.0, [rng, mm], None)  # inside aten::add: before it
    assert slices_module._settle_end([rng, mm], 2.0) == (1.0, [rng], None)  # inside aten::mm: back to its start
    end, kept, further = slices_module._settle_end([mm], 2.0)  # aten::mm began the slice: read on past it
    assert (end, kept) == (2.0, [mm]) and further == pytest.approx(4.0, abs=1e-8) and further > 4.0


def test_slice_carry_hands_forward_ops_to_backward_in_a_later_slice(tmp_path):
    """The backward of a module in a later slice than its forward still belongs to it: the
    carry holds the forward ops by sequence number."""
    path = str(tmp_path / "one.json")
    _train_one_step(path, micro=1)
    trace = load_trace(path)
    backward = min(e.start_s for e in trace.events if e.name.startswith("autograd::engine::evaluate_function:"))
    first = dataclasses_replace_events(trace, [e for e in trace.events if e.start_s < backward and e.end_s <= backward])
    second_events = [e for e in trace.events if e.start_s >= backward]
    second = dataclasses_replace_events(trace, second_events)
    carry = SliceCarry()
    attribute(first, carry=carry, outside=True)
    timing = attribute(second, carry=carry, outside=True)
    alone = attribute(second, outside=True)
    assert carry.forward, "the first slice's forward ops are carried"
    modules = {r.module for r in timing.ops if r.phase == "backward"}
    assert "3" in modules and "0" in modules  # Linear and Conv2d backward, by their forward ops
    assert {r.module for r in alone.ops if r.phase == "backward"} == {""}  # without the carry: the root


def dataclasses_replace_events(trace, events):
    import dataclasses

    return dataclasses.replace(trace, events=tuple(events))


def test_big_trace_writer_packs_copies_into_one_step(tmp_path):
    """benchmarks/big_trace.py --per-step: one ProfilerStep marker spans the copies it holds."""
    import sys

    sys.path.insert(0, os.path.join(REPO_ROOT, "benchmarks"))
    from big_trace import write_trace

    step = str(tmp_path / "step.json")
    model = _net()
    with RooflineProfiler(model, roof=FLAT, export_trace=step), torch.no_grad():
        model(torch.randn(4, 3, 8, 8))
    out = str(tmp_path / "big.json")
    steps, _ = write_trace(step, out, 5 * os.path.getsize(step), per_step=3)
    with open(out) as f:
        events = [e for e in json.load(f)["traceEvents"] if e.get("ph") == "X"]
    markers = [e for e in events if e["name"].startswith("ProfilerStep#")]
    ops = [e for e in events if e["name"] == "aten::linear"]
    assert steps == len(markers) >= 2 and len(ops) > 3
    for k, m in enumerate(markers):  # each holds 3 copies' forwards (the last as many as were written)
        held = [e for e in ops if m["ts"] <= e["ts"] <= m["ts"] + m["dur"]]
        assert len(held) == min(3, len(ops) - 3 * k)


def test_long_steps_in_slices_by_two_worker_processes(tmp_path, monkeypatch, slices):
    """Two long steps, each read in slices by its own worker process; the note says so."""
    monkeypatch.setattr(parts, "PART_WORKERS", 2)
    model = _net()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    path = str(tmp_path / "two.json")
    prof = RooflineProfiler(model, roof=FLAT, schedule=schedule(wait=0, warmup=0, active=2, repeat=1),
                            export_trace=path)
    with prof:
        for _ in range(2):
            opt.zero_grad(set_to_none=True)
            for _ in range(3):
                nn.functional.cross_entropy(model(torch.randn(4, 3, 8, 8)), torch.randint(0, 10, (4,))).backward()
            opt.step()
            prof.step()
    whole, sliced = _both(monkeypatch, path, roof=FLAT)
    _assert_same(whole, sliced)
    note = next(n for n in sliced.notes if n.startswith(PARTS_NOTE))
    assert "2 long step(s) read in " in note, note
    assert sliced.steps == 2 and sliced.module("3", "forward").calls == 3  # per step


def test_a_long_step_keeps_one_record_per_distinct_call(tmp_path, monkeypatch, slices):
    """Memory inside a step grows with its distinct calls: 6 identical micro-batches keep the
    records of one (the others are references to them), and the counts are all 6's."""
    from torch_roofline.timing.shapes import replay_cache

    path = str(tmp_path / "six.json")
    _train_one_step(path, micro=6)
    scan = segments.scan_trace(path)
    (part,) = parts.read_parts(scan, segments.plan_parts(scan), op_names=None, cache=replay_cache(), workers=1)
    assert part.slices >= 10
    calls = [c for key, first in part.costs.first.items() if key[1] == "forward" for c in first]
    model_calls = [c for c in calls if c.module not in ("", "(outside modules)")]
    assert len(model_calls) % 6 == 0 and model_calls
    assert len({id(c) for c in model_calls}) == len(model_calls) // 6  # one record per distinct call
    # Linear(512, 10) forward: 2 * 4 * 512 * 10 FLOPs per micro-batch, six times
    assert sum(c.flops for c in model_calls if c.module == "3") == 6 * 2 * 4 * 512 * 10


def test_call_share_gives_back_the_first_equal_call():
    import dataclasses

    from torch_roofline.records import OpCost
    from torch_roofline.timing.merge import CallShare

    a = OpCost(op="aten.mm", module="m", scope=("", "m"), phase="forward", flops=8, macs=4, bytes_read=48,
               bytes_written=16, compulsory_bytes_read=48, compulsory_bytes_written=16, dtype="float32",
               unit="matrix", counted=True, index=0)
    again = dataclasses.replace(a, index=7)
    other = dataclasses.replace(a, index=8, flops=16)
    share = CallShare()
    got = share.shared([a, again, other]) + share.shared([dataclasses.replace(a, index=9)])
    assert got[0] is a and got[1] is a and got[3] is a and got[2] is other
    assert sum(c.flops for c in got) == 8 + 8 + 16 + 8


@pytest.mark.parametrize("fixture", ["ddp_cpu_train_rank0", "fsdp1_cpu_train_rank0", "fsdp2_cpu_train_rank1",
                                     "alexnet_a100_forward"])
def test_recorded_fixtures_as_one_step_in_slices(tmp_path, monkeypatch, slices, fixture):
    """Recorded traces of other engines (DDP, FSDP1, FSDP2 on 2 gloo ranks; an A100 forward),
    wrapped in one ProfilerStep marker: the slices' report is the whole read's."""
    data = os.path.join(TESTS_DIR, "data", f"{fixture}.kineto.json.gz")
    with gzip.open(data) as f:
        doc = json.load(f)
    host = [e for e in doc["traceEvents"] if isinstance(e, dict) and e.get("ph") == "X"
            and e.get("cat") in ("cpu_op", "user_annotation")]
    t0, t1 = min(e["ts"] for e in host), max(e["ts"] + e.get("dur", 0) for e in host)
    doc["traceEvents"].insert(0, {"ph": "X", "cat": "user_annotation", "name": "ProfilerStep#0",
                                  "pid": host[0]["pid"], "tid": host[0]["tid"], "ts": t0 - 1, "dur": t1 - t0 + 2})
    path = str(tmp_path / f"{fixture}.json")
    with open(path, "w") as f:
        json.dump(doc, f)
    whole, sliced = _both(monkeypatch, path, roof="i9-10980xe")
    assert len(slices) >= 5
    _assert_same(whole, sliced)


def test_forward_and_backward_run_by_the_optimizer_closure_in_slices(tmp_path, monkeypatch, slices):
    """Lightning's automatic optimisation runs training_step and backward inside
    ``optimizer.step(closure)``: the work inside the optimizer mark is forward/backward, in
    slices as in a whole read."""
    model = _net()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    path = str(tmp_path / "closure.json")
    prof = RooflineProfiler(model, roof=FLAT, schedule=schedule(wait=0, warmup=0, active=1, repeat=1),
                            export_trace=path)

    def closure():
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(torch.randn(4, 3, 8, 8)), torch.randint(0, 10, (4,)))
        loss.backward()
        return loss

    with prof:
        for _ in range(3):
            opt.step(closure)
        prof.step()
    whole, sliced = _both(monkeypatch, path, roof=FLAT)
    assert len(slices) >= 5
    _assert_same(whole, sliced)
    assert sliced.module("3", "forward").calls == 3 and sliced.module("3", "backward").calls == 3


def test_gpu_step_with_a_long_kernel_on_another_stream_counts_busy_time_once(tmp_path, monkeypatch, slices):
    """A kernel launched before a cut that still runs, on another stream, while the next slice's
    kernels run: the device's busy time is the union over the whole step, not per slice."""
    path = str(tmp_path / "gpu.json")
    _gpu_steps(path, 1)
    with open(path) as f:
        doc = json.load(f)
    kernels = sorted((e for e in doc["traceEvents"] if e.get("cat") == "kernel"), key=lambda e: e["ts"])
    first, last = kernels[0], kernels[-1]
    first["dur"] = last["ts"] + last["dur"] - first["ts"] + 50.0  # runs past every other kernel
    first["args"]["stream"] = first["tid"] = 99
    with open(path, "w") as f:
        json.dump(doc, f)
    whole, sliced = _both(monkeypatch, path)
    assert len(slices) >= 3
    _assert_same(whole, sliced)
    # oracle: the device is busy from the first kernel's start to its end, once
    assert sliced.totals.time_s == pytest.approx(first["dur"] * 1e-6 + _device_before(doc, first), rel=1e-6)


def _device_before(doc, first):
    """Device busy time before ``first`` starts (memcpys/memsets), in seconds."""
    busy, end = 0.0, -math.inf
    for lo, hi in sorted((e["ts"], e["ts"] + e["dur"]) for e in doc["traceEvents"]
                         if e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset") and e["ts"] < first["ts"]):
        busy += max(0.0, min(hi, first["ts"]) - max(lo, end))
        end = max(end, hi)
    return busy * 1e-6


def test_busy_union_settles_what_no_later_slice_can_overlap():
    from torch_roofline.timing.merge import BusyUnion

    u = BusyUnion()
    u.add([(0.0, 1.0), (0.5, 2.0), (5.0, 9.0)])  # a slice ending at 3 s: (5, 9) still runs on another stream
    u.settle(3.0)
    assert u.total_s == pytest.approx(2.0)  # (0, 2) settled; (5, 9) held
    u.add([(6.0, 7.0), (10.0, 11.0)])  # the next slice's kernels overlap the held one
    assert u.result() == pytest.approx(2.0 + 4.0 + 1.0)
