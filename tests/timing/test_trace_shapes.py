"""FLOPs and bytes from a trace's recorded shapes (issue 8, item 3): no model needed.

Fixtures (tests/data/README.md): a Conv2d(3, 8, 3) + ReLU + Flatten + Linear(1568, 10) net on
x of shape (4, 3, 16, 16), recorded on the CPU with ``record_shapes=True``: a forward, and a
forward + ``sum().backward()``.
"""

from _paths import TESTS_DIR
import gzip
import json
import os

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import torch_roofline
from torch_roofline.offline import from_trace
from torch_roofline.records import OpCost
from torch_roofline.timing import attribute, load_trace
from torch_roofline.timing.shapes import costs_from_shapes, has_recorded_shapes, per_step, shape_costs

DATA = os.path.join(TESTS_DIR, "data")
FORWARD = os.path.join(DATA, "convrelulinear_cpu_forward_shapes.kineto.json.gz")
TRAIN = os.path.join(DATA, "convrelulinear_cpu_train_shapes.kineto.json.gz")
NO_SHAPES = os.path.join(DATA, "alexnet_a100_forward.kineto.json.gz")

# Conv2d(3 -> 8, 3x3, no padding) on (4, 3, 16, 16): output (4, 8, 14, 14).
# FLOPs = 2 * N * Cout * Hout * Wout * Cin * kh * kw = 2 * 4 * 8 * 14 * 14 * 3 * 3 * 3 = 338688
CONV_FLOPS = 338_688
# Linear(1568 -> 10) on (4, 1568): 2 * B * in * out = 2 * 4 * 1568 * 10 = 125440
LINEAR_FLOPS = 125_440
# ReLU: 1 FLOP per element of (4, 8, 14, 14): 4 * 8 * 14 * 14 = 6272
RELU_FLOPS = 6_272


def _net():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 14 * 14, 10))
    return model, torch.randn(4, 3, 16, 16)


# CompositeImplicitAutograd ops (native_functions.yaml): a dispatch-mode counter sees the ops
# they call, so the rows are found inside them.
COMPOSITE = {"aten::conv2d", "aten::linear", "aten::flatten"}


def _raw_outer_ops(path):
    """Oracle straight from the JSON: the outermost aten:: cpu_op events, looking through the
    composites above -> [(name, seconds)]."""
    with gzip.open(path, "rt") as fh:
        events = [e for e in json.load(fh)["traceEvents"] if e.get("cat") == "cpu_op" and e.get("ph") == "X"]
    events.sort(key=lambda e: (e["ts"], -e["dur"]))
    outer, end = [], -1.0
    for e in events:
        if e["ts"] >= end and e["name"].startswith("aten::") and e["name"] not in COMPOSITE:
            outer.append((e["name"], e["dur"] * 1e-6))
            end = e["ts"] + e["dur"]
    return outer


def _op(report, op, phase="forward"):
    (row,) = [o for o in report.ops if o.op == op and o.phase == phase]
    return row


def _record(tmp_path, fn):
    fn()  # warm-up outside the trace
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as prof:
        fn()
    path = str(tmp_path / "trace.json")
    prof.export_chrome_trace(path)
    return path


def test_forward_flops_from_recorded_shapes():
    report = from_trace(FORWARD)  # no model
    # rows are what a dispatch-mode counter sees: conv2d -> convolution, linear -> t + addmm,
    # flatten -> view
    assert _op(report, "aten.convolution").flops == CONV_FLOPS
    assert _op(report, "aten.addmm").flops == LINEAR_FLOPS
    assert _op(report, "aten.relu").flops == RELU_FLOPS
    assert _op(report, "aten.view").flops == 0  # a view
    assert report.totals.flops == CONV_FLOPS + RELU_FLOPS + LINEAR_FLOPS
    assert any("FLOPs and bytes from the trace's recorded shapes" in n for n in report.notes)


def test_same_as_counting_the_model_and_flop_counter_mode():
    model, x = _net()
    counted = {o.op: o for o in torch_roofline.count(model, x).ops}
    with FlopCounterMode(display=False) as fcm:
        model(x)
    report = from_trace(FORWARD)
    # every row is one call count() saw, with the same name
    for name in ("aten.convolution", "aten.relu", "aten.t", "aten.addmm", "aten.view"):
        row = _op(report, name)
        assert (row.flops, row.bytes_read, row.bytes_written) == (
            counted[name].flops, counted[name].bytes_read, counted[name].bytes_written)
    # torch's FlopCounterMode counts the matrix ops only
    assert fcm.get_total_flops() == CONV_FLOPS + LINEAR_FLOPS
    # conv reads x (4*3*16*16) + weight (8*3*3*3) + bias (8) floats, writes (4*8*14*14) floats:
    # (3072 + 216 + 8) * 4 = 13184 bytes read, 6272 * 4 = 25088 bytes written
    assert (_op(report, "aten.convolution").bytes_read, _op(report, "aten.convolution").bytes_written) == (
        13_184, 25_088)


def test_op_times_are_the_traces():
    report = from_trace(FORWARD)
    raw = _raw_outer_ops(FORWARD)
    assert [n.replace("::", ".") for n, _ in raw] == ["aten.convolution", "aten.relu", "aten.view", "aten.t",
                                                      "aten.addmm"]
    for name, seconds in raw:
        assert _op(report, name.replace("::", ".")).time_s == pytest.approx(seconds, rel=1e-12)


def test_costs_line_up_with_timing_rows():
    trace = load_trace(FORWARD)
    timing = attribute(trace)
    costs = costs_from_shapes(trace, timing)
    assert [(c.op, c.module, c.phase, c.index) for c in costs] == [
        (r.op, r.module, r.phase, r.index) for r in timing.ops]
    assert all(c.counted for c in costs)
    # conv and addmm are matrix work, relu vector
    assert {c.op: c.unit for c in costs} == {"aten.convolution": "matrix", "aten.relu": "vector",
                                             "aten.view": "vector", "aten.t": "vector", "aten.addmm": "matrix"}
    sc = shape_costs(trace, timing)
    assert sc.dispatched["aten.convolution"] == ("aten.convolution",)  # each row replays as itself
    assert sc.dispatched["aten.addmm"] == ("aten.addmm",)


def test_backward_ops_from_recorded_shapes():
    model, x = _net()
    counted = torch_roofline.count(model, x, backward=True)
    report = from_trace(TRAIN)
    # x needs no grad: convolution_backward computes the weight and bias grads only; the
    # weight grad is one conv's worth of MACs: 2 * 8 * 27 * (4 * 14 * 14) = 338688
    assert _op(report, "aten.convolution_backward", "backward").flops == CONV_FLOPS
    # two mm: grad_input 2*4*10*1568 and grad_weight 2*10*4*1568 = 2 * 125440
    assert _op(report, "aten.mm", "backward").flops == 2 * LINEAR_FLOPS
    for op in ("aten.mm", "aten.convolution_backward", "aten.threshold_backward"):
        assert _op(report, op, "backward").flops == sum(
            o.flops for o in counted.ops if o.op == op and o.phase == "backward")
    assert report.totals.flops == counted.total.flops


def test_scalars_lists_and_dtypes_are_rebuilt(tmp_path):
    x = torch.randn(2, 4, 6)
    h = torch.randn(3, 4).half()

    def step():
        torch.nn.functional.layer_norm(x, (6,), eps=1e-5)
        torch.add(x, x, alpha=2.5)
        torch.cat([x, x], 1)
        x.sum(dtype=torch.float64)
        h @ h.t()

    path = _record(tmp_path, step)
    counted = torch_roofline.count(step)
    report = from_trace(path)
    by_op = {}
    for o in counted.ops:
        by_op[o.op] = by_op.get(o.op, 0) + o.flops
    assert _op(report, "aten.native_layer_norm").flops == by_op["aten.native_layer_norm"]
    # x + 2.5 * x: a multiply and an add per output element, 2 * (2*4*6) = 96; with alpha lost
    # (default 1) it would be 48, so this checks the recorded scalar was read back
    assert _op(report, "aten.add").flops == 2 * 2 * 4 * 6
    assert _op(report, "aten.mm").flops == 2 * 3 * 4 * 3  # [3,4] @ [4,3] (matmul -> mm): 2*M*K*N
    assert _op(report, "aten.mm").dtype == "float16"
    assert _op(report, "aten.cat").bytes_written == 2 * 8 * 6 * 4  # (2, 8, 6) float32
    assert any("tensor lists" in n and "aten.cat" in n for n in report.notes)


def test_unrebuildable_ops_are_listed_not_zeroed(tmp_path):
    x = torch.randn(4, 5)

    def step():
        y = x.relu()
        y.nonzero()
        return x[x > 0]

    report = from_trace(_record(tmp_path, step))
    uncounted = {u.op for u in report.uncounted}
    assert {"aten.nonzero", "aten.index"} <= uncounted
    assert _op(report, "aten.nonzero").flops is None  # unknown, not 0
    assert _op(report, "aten.relu").flops == 20  # 4 * 5 elements
    assert any(n.startswith("aten.nonzero") and "meta" in n for n in report.notes)
    assert any(n.startswith("aten.index") and "'indices'" in n for n in report.notes)


def test_trace_without_shapes_falls_back():
    assert not has_recorded_shapes(load_trace(NO_SHAPES))
    report = from_trace(NO_SHAPES, steps=2)  # no model, no shapes, no counters
    assert any("timing only" in n for n in report.notes)
    assert not any("recorded shapes (record_shapes" in n for n in report.notes)
    assert report.totals.flops == 0 and report.uncounted


def _cost(op, index, flops):
    return OpCost(op, "", ("",), "forward", flops, 0, 2 * flops, flops, 0, 0, "float32", "vector", True, index)


def test_per_step():
    two_steps = [_cost("aten.relu", 0, 10), _cost("aten.relu", 1, 10)]
    kept, notes = per_step(two_steps, 2)
    assert kept == (two_steps[0],) and notes == ()
    uneven = [_cost("aten.relu", 0, 10), _cost("aten.relu", 1, 10), _cost("aten.relu", 2, 10)]
    kept, notes = per_step(uneven, 2)
    assert [c.flops for c in kept] == [5, 5, 5] and "averaged" in notes[0]
    with pytest.raises(ValueError, match="steps=0"):
        per_step(uneven, 0)
