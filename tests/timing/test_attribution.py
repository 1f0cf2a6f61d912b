"""Attribution of device activity and CPU time to ops, modules and phases.

Oracles: the raw JSON of the traces (read here with plain json, not our reader), and a
hand-built trace whose expected numbers are written next to it.
"""

from _paths import TESTS_DIR
import collections
import gzip
import json
import math
import os

import pytest

from torch_roofline.records import OUTSIDE
from torch_roofline.timing.attribution import attribute, dotted_op_name
from torch_roofline.timing.trace import load_trace

DATA = os.path.join(TESTS_DIR, "data")
A100 = os.path.join(DATA, "alexnet_a100_forward.kineto.json.gz")
TINY = os.path.join(DATA, "tinyconv_cpu_train.kineto.json.gz")
US = 1e-6
# CompositeImplicitAutograd ops of these traces (native_functions.yaml, torch 2.14): a
# dispatch-mode counter sees the ops they call, not them.
COMPOSITE = {"aten::conv2d", "aten::linear", "aten::max_pool2d", "aten::dropout", "aten::adaptive_avg_pool2d",
             "aten::flatten", "aten::to", "aten::square", "aten::_has_compatible_shallow_copy_type"}


def _raw_events(path):
    with gzip.open(path, "rt") as f:
        return json.load(f)["traceEvents"]


@pytest.fixture(scope="module")
def a100():
    return attribute(load_trace(A100))


@pytest.fixture(scope="module")
def tiny():
    return attribute(load_trace(TINY))


def test_dotted_op_name():
    assert dotted_op_name("aten::convolution") == "aten.convolution"
    assert dotted_op_name("aten::add.Tensor") == "aten.add"
    assert dotted_op_name("SumBackward0") == "SumBackward0"


# ----------------------------------------------------------------------------- A100 trace


def test_a100_every_device_activity_is_attributed_or_reported(a100):
    raw = [e for e in _raw_events(A100) if e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")]
    assert len(a100.activities) == len(raw) == 79 + 16 + 3
    attributed = [a for a in a100.activities if a.op_index is not None]
    assert len(attributed) + len(a100.unattributed) == len(raw)
    assert all(a.reason for a in a100.unattributed)
    assert sum(op.kernels for op in a100.ops) + sum(
        1 for a in a100.unattributed if a.kind == "kernel") == 79


def test_a100_op_device_time_is_exact_sum_of_its_kernels(a100):
    # Oracle straight from the raw JSON: op rows are aten cpu_ops not inside another aten
    # cpu_op of the same thread; an activity belongs to the row containing its launch.
    # Rows are the calls a dispatch-mode counter sees: the outermost aten ops once the
    # CompositeImplicitAutograd wrappers (native_functions.yaml: no dispatch section of their
    # own) that call other ops are looked through.
    events = _raw_events(A100)
    aten = [e for e in events if e.get("cat") == "cpu_op" and e["name"].startswith("aten::")]

    def inside(a, b):  # a inside b
        return a is not b and a["tid"] == b["tid"] and b["ts"] <= a["ts"] and \
            a["ts"] + a["dur"] <= b["ts"] + b["dur"]

    def passed_through(e):
        return e["name"] in COMPOSITE and any(inside(o, e) for o in aten)

    rows = sorted((e for e in aten if not passed_through(e)
                   and not any(inside(e, o) and not passed_through(o) for o in aten)),
                  key=lambda e: e["ts"])
    launch_ts = {e["args"]["correlation"]: (e["tid"], e["ts"]) for e in events
                 if e.get("cat") == "cuda_runtime"}
    durations = collections.defaultdict(list)
    for act in events:
        if act.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset"):
            tid, ts = launch_ts[act["args"]["correlation"]]
            for i, row in enumerate(rows):
                if row["tid"] == tid and row["ts"] <= ts <= row["ts"] + row["dur"]:
                    durations[i].append(act["dur"] * US)
    assert [op.op for op in a100.ops] == [dotted_op_name(r["name"]) for r in rows]
    for i, op in enumerate(a100.ops):
        assert op.device_time_s == math.fsum(durations[i])  # exact, not approx
        assert op.cpu_time_s == rows[i]["dur"] * US
        assert op.time_s == (op.device_time_s if durations[i] else op.cpu_time_s)


def test_a100_hand_picked_conv_kernels(a100):
    # From the raw file:
    #   cudnn_ampere_scudnn_128x64_relu_xregs_large_nn_v1  ts 1695835583881608  dur 1035 us
    #     correlation 5112, launched inside aten::conv2d > ... > aten::cudnn_convolution
    #   sm80_xmma_fprop_implicit_gemm_indexed_tf32f32_tf32f32_f32_nhwckrsc_nchw  ts
    #     1695835585758920  dur 261 us, correlation 5254, same stack.
    by_corr = {a.correlation: a for a in a100.activities}
    for corr, prefix, dur_us in ((5112, "cudnn_ampere_scudnn_128x64_relu", 1035),
                                 (5254, "sm80_xmma_fprop_implicit_gemm", 261)):
        kernel = by_corr[corr]
        assert kernel.name.startswith(prefix) and kernel.dur_s == dur_us * US
        assert kernel.op == "aten.convolution"  # the row under the composite aten::conv2d
        assert kernel.cpu_op == "aten::cudnn_convolution"
        assert a100.ops[kernel.op_index].op == "aten.convolution"
        assert kernel.module == "" and kernel.phase == "forward"  # no module ranges in it


def test_a100_second_stream_is_attributed(a100):
    # Memset (Device) on stream 20, correlation 1473, 4 us, launched inside cudnn_convolution.
    memset = next(a for a in a100.activities if a.correlation == 1473)
    assert memset.stream == 20 and memset.kind == "gpu_memset"
    assert memset.bytes == 20736 and memset.op == "aten.convolution"


def test_a100_op_names_pick_outermost_matching_op():
    timing = attribute(load_trace(A100), op_names={"aten.convolution", "aten.addmm"})
    assert collections.Counter(op.op for op in timing.ops) == {"aten.convolution": 10,
                                                               "aten.addmm": 6}
    conv = next(a for a in timing.activities if a.correlation == 5112)
    assert conv.op == "aten.convolution" and conv.cpu_op == "aten::cudnn_convolution"
    # ReLU kernels are not inside a counted op: reported, with the op that launched them.
    relu = [a for a in timing.unattributed if a.cpu_op == "aten::clamp_min_"]
    assert len(relu) == 14 and "aten::clamp_min_" in relu[0].reason
    # Nested matches are not rows of their own.
    nested = attribute(load_trace(A100), op_names={"aten.conv2d", "aten.cudnn_convolution"})
    assert {op.op for op in nested.ops} == {"aten.conv2d"}


def test_a100_header_and_totals(a100):
    assert a100.on_device and a100.device_name == "NVIDIA A100-PG509-200"
    assert a100.device.num_sms == 108
    assert a100.steps == 1 and a100.peak_memory_bytes is None
    assert 0 < a100.device_busy_s <= a100.step_time_s
    assert math.isclose(sum(m.self_time_s for m in a100.modules), a100.step_time_s)


def test_bad_op_names():
    trace = load_trace(TINY)
    with pytest.raises(ValueError, match="dotted aten names"):
        attribute(trace, op_names={"aten::convolution"})
    with pytest.raises(TypeError, match="single string"):
        attribute(trace, op_names="aten.convolution")


# ----------------------------------------------------------------------------- hand-built GPU trace

def _x(cat, name, ts, dur, tid, pid=1, **args):
    return {"ph": "X", "cat": cat, "name": name, "ts": ts, "dur": dur, "pid": pid, "tid": tid,
            "args": args}


def _kernel(name, ts, dur, corr, stream=7):
    return _x("kernel", name, ts, dur, stream, pid=0, correlation=corr, stream=stream, device=0)


def _launch(ts, corr, tid):
    return _x("cuda_runtime", "cudaLaunchKernel", ts, 2, tid, correlation=corr)


HAND_BUILT = {"traceEvents": [
    # main thread 1: forward of `fc` and a loss op at the root, then the optimizer
    _x("user_annotation", "roofline::", 0, 100, 1),
    _x("user_annotation", "roofline::fc", 10, 30, 1),
    _x("cpu_op", "aten::linear", 12, 20, 1, **{"Sequence number": 7}),
    _x("cpu_op", "aten::addmm", 14, 15, 1, **{"Sequence number": 7}),
    _launch(16, 1, 1),
    _x("cpu_op", "aten::sum", 50, 10, 1, **{"Sequence number": 8}),
    _launch(52, 2, 1),
    _x("cpu_op", "aten::empty", 70, 1, 1),
    _x("user_annotation", "Optimizer.step#SGD.step", 150, 20, 1),
    _x("cpu_op", "aten::add_", 152, 5, 1),
    _launch(153, 5, 1),
    # autograd thread 2: the backward of addmm (sequence number 7), kernels on two streams
    _x("cpu_op", "autograd::engine::evaluate_function: AddmmBackward0", 110, 30, 2,
       **{"Sequence number": 7, "Fwd thread id": 1}),
    _x("cpu_op", "AddmmBackward0", 111, 28, 2, **{"Sequence number": 7}),
    _x("cpu_op", "aten::mm", 112, 10, 2),
    _launch(113, 3, 2),
    _x("cpu_op", "aten::mm", 125, 10, 2),
    _launch(126, 4, 2),
    # device
    _kernel("gemm_fwd", 20, 8, 1),
    _kernel("reduce", 55, 3, 2),
    _kernel("gemm_dgrad", 115, 6, 3),
    _kernel("gemm_wgrad", 128, 4, 4, stream=13),
    _kernel("sgd_update", 155, 2, 5),
    _kernel("orphan", 160, 1, 99),  # no launch with correlation 99
], "deviceProperties": [{"id": 0, "name": "Hand GPU", "numSms": 2, "totalGlobalMem": 1000}]}


def test_hand_built_backward_thread_and_streams():
    timing = attribute(load_trace(HAND_BUILT))
    rows = [(o.op, o.module, o.phase, round(o.time_s / US, 6), o.kernels) for o in timing.ops]
    assert rows == [
        ("aten.addmm", "fc", "forward", 8.0, 1),    # gemm_fwd 8 us (linear: a composite over addmm)
        ("aten.sum", "", "forward", 3.0, 1),        # reduce 3 us, outside fc -> root
        ("aten.empty", "", "forward", 1.0, 0),      # no kernel -> its CPU time, 1 us
        ("aten.mm", "fc", "backward", 6.0, 1),      # seq 7 -> forward addmm in fc
        ("aten.mm", "fc", "backward", 4.0, 1),      # stream 13
        ("aten.add_", "", "optimizer", 2.0, 1),
    ]
    assert [a.name for a in timing.unattributed] == ["orphan"]
    assert "correlation id 99" in timing.unattributed[0].reason
    mods = {(m.name, m.phase): (m.calls, round(m.time_s / US, 6), round(m.self_time_s / US, 6))
            for m in timing.modules}
    # step: main thread spans 0..170 us. Root forward self = 170 - (8 + 10 + 0 + 2) = 150 us
    # (idle, host gaps, the reduce kernel and the orphan), inclusive 150 + 8 = 158 us.
    assert timing.step_time_s == pytest.approx(170 * US)
    assert mods == {
        ("", "forward"): (1, 158.0, 150.0),
        ("fc", "forward"): (1, 8.0, 8.0),
        ("", "backward"): (1, 10.0, 0.0),
        ("fc", "backward"): (1, 10.0, 10.0),
        ("", "optimizer"): (1, 2.0, 2.0),
    }
    assert timing.device_name == "Hand GPU"
    assert timing.device_busy_s == pytest.approx((8 + 3 + 6 + 4 + 2 + 1) * US)


# ----------------------------------------------------------------------------- CPU training trace


def test_cpu_forward_ops_land_on_their_modules(tiny):
    fwd = {(o.op, o.module) for o in tiny.ops if o.phase == "forward"}
    # rows are the calls under the composites: conv2d -> convolution, linear -> t + addmm,
    # max_pool2d -> max_pool2d_with_indices, flatten -> view, square -> pow
    assert ("aten.convolution", "conv1") in fwd and ("aten.convolution", "block.0") in fwd
    assert ("aten.addmm", "fc") in fwd and ("aten.max_pool2d_with_indices", "pool") in fwd
    # flatten runs in TinyConv.forward itself (the root); the loss outside every range: its own row.
    assert ("aten.view", "") in fwd
    assert ("aten.pow", OUTSIDE) in fwd and ("aten.mean", OUTSIDE) in fwd
    block0 = next(o for o in tiny.ops if o.op == "aten.convolution" and o.module == "block.0")
    assert block0.scope == ("", "block", "block.0")


def test_cpu_backward_ops_follow_sequence_numbers(tiny):
    bwd = collections.defaultdict(set)
    for o in tiny.ops:
        if o.phase == "backward":
            bwd[o.op].add(o.module)
    assert bwd["aten.convolution_backward"] == {"conv1", "block.0"}
    assert bwd["aten.threshold_backward"] == {"relu", "block.1"}
    assert bwd["aten.max_pool2d_with_indices_backward"] == {"pool"}
    assert bwd["aten.mm"] == {"fc"}

    # Raw-JSON oracle for conv1: its forward convolution's sequence number names the
    # engine event whose convolution_backward must be attributed to conv1.
    events = _raw_events(TINY)
    conv1 = next(e for e in events if e.get("name") == "roofline::conv1")
    fwd_seq = next(e["args"]["Sequence number"] for e in events
                   if e.get("name") == "aten::convolution"
                   and conv1["ts"] <= e["ts"] <= conv1["ts"] + conv1["dur"])
    engine = next(e for e in events if e.get("cat") == "cpu_op"
                  and e["name"].startswith("autograd::engine::evaluate_function: Convolution")
                  and e["args"].get("Sequence number") == fwd_seq)
    origin = min(e["ts"] for e in events if e.get("ph") == "X" and "ts" in e
                 and e.get("cat") in ("cpu_op", "user_annotation"))
    ours = next(o for o in tiny.ops if o.op == "aten.convolution_backward" and o.module == "conv1")
    assert engine["ts"] <= origin + ours.start_s / US <= engine["ts"] + engine["dur"]
    # Backward module time on the CPU = the engine event's duration.
    assert tiny.module("conv1", "backward").time_s == engine["dur"] * US


def test_cpu_optimizer_ops_and_phase(tiny):
    opt = [o for o in tiny.ops if o.phase == "optimizer"]
    # SGD without momentum: one add_ per parameter (conv1 w/b, block.0 w/b, fc w/b).
    assert [o.op for o in opt] == ["aten.add_"] * 6
    assert all(o.module == "" for o in opt)
    row = tiny.module("", "optimizer")
    events = _raw_events(TINY)
    markers = [e for e in events if e.get("name", "").startswith(("Optimizer.step#",
                                                                  "Optimizer.zero_grad#"))]
    assert row.time_s == pytest.approx(sum(e["dur"] for e in markers) * US, rel=1e-12)


def test_cpu_module_times_account_for_the_step(tiny):
    events = _raw_events(TINY)
    conv1 = [e for e in events if e.get("name") == "roofline::conv1"]
    assert tiny.module("conv1").calls == len(conv1) == 1
    assert tiny.module("conv1").time_s == conv1[0]["dur"] * US
    block = tiny.module("block")
    assert block.self_time_s == pytest.approx(
        block.time_s - tiny.module("block.0").time_s - tiny.module("block.1").time_s)
    total_self = sum(m.self_time_s for m in tiny.modules)
    assert abs(total_self - tiny.step_time_s) <= 0.03 * tiny.step_time_s
    assert all(m.self_time_s >= 0 for m in tiny.modules)
    assert {m.phase for m in tiny.modules} == {"forward", "backward", "optimizer"}
    assert not tiny.on_device and tiny.device_name is None and tiny.unattributed == ()
    # Peak from the [memory] events' "Total Allocated" (CPU, device type 0).
    assert tiny.peak_memory_bytes == max(e["args"]["Total Allocated"] for e in events
                                         if e.get("name") == "[memory]")


def test_cpu_op_names_rows():
    timing = attribute(load_trace(TINY), op_names={
        "aten.convolution", "aten.addmm", "aten.convolution_backward"})
    counts = collections.Counter((o.op, o.phase) for o in timing.ops)
    assert counts == {("aten.convolution", "forward"): 2, ("aten.addmm", "forward"): 1,
                      ("aten.convolution_backward", "backward"): 2}
    assert [o.index for o in timing.ops if o.phase == "forward"] == [0, 1, 2]
