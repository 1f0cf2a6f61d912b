"""Collectives in a trace: NCCL's bus-bandwidth factors, bytes, time, phase, the roof.

Oracles: the factors of nccl-tests' doc/PERFORMANCE.md, hand-computed byte counts written
next to each assertion, and the device catalog's datasheet interconnect figures. The
traces are small hand-written Kineto event lists shaped like the ones torch.profiler
writes for gloo (a 2-process gloo run with record_shapes=True) and for NCCL on a GPU;
the real gloo path is covered end to end by tests/sinks/test_lightning_ddp.py.
"""

from __future__ import annotations

import pytest

from torch_roofline.timing.collectives import (
    Collective,
    bus_factor,
    collectives,
    interconnect_roof,
    summarize,
)
from torch_roofline.timing.trace import load_trace


def test_bus_factors_follow_nccl_tests():
    assert bus_factor("all_reduce", 2) == 1.0  # 2*(2-1)/2
    assert bus_factor("all_reduce", 8) == 1.75  # 2*7/8
    assert bus_factor("all_gather", 4) == 0.75  # (4-1)/4
    assert bus_factor("reduce_scatter", 4) == 0.75
    assert bus_factor("broadcast", 8) == 1.0
    assert bus_factor("barrier", 8) == 0.0
    assert bus_factor("all_reduce", 1) == 0.0  # one rank sends nothing
    assert bus_factor("frobnicate", 2) is None
    with pytest.raises(ValueError, match=r"group_size=0.*int >= 1"):
        bus_factor("all_reduce", 0)


def _ev(name, ts, dur, tid=1, cat="cpu_op", **args):
    return {"ph": "X", "cat": cat, "name": name, "ts": ts, "dur": dur, "pid": 7, "tid": tid, "args": args}


def _gloo_trace(world_size=2):
    events = [
        _ev("ProfilerStep#1", 0, 1000, cat="user_annotation"),
        _ev("roofline::phase::forward", 10, 600, cat="user_annotation"),
        _ev("aten::convolution", 20, 100),
        _ev("autograd::engine::evaluate_function: torch::autograd::AccumulateGrad", 300, 100),
        # DDP's reducer issues the bucket's all_reduce from the gradient hook ...
        _ev("c10d::allreduce_", 310, 20, **{"Input Dims": [[[260]]], "Input type": ["TensorList"]}),
        # ... and gloo runs it on its worker thread: 260 float32.
        _ev("gloo:all_reduce", 320, 500, tid=2, cat="user_annotation",
            **{"Input Dims": [[260]], "Input type": ["float"]}),
        _ev("Optimizer.step#SGD.step", 850, 100, cat="user_annotation"),
        _ev("c10d::_allgather_base_", 860, 10),
        _ev("gloo:all_gather", 862, 40, tid=2, cat="user_annotation",
            **{"Input Dims": [[100]], "Input type": ["c10::BFloat16"]}),
        _ev("gloo:barrier", 905, 5, tid=2, cat="user_annotation"),
    ]
    return {"traceEvents": events, "distributedInfo": {"backend": "gloo", "rank": 0, "world_size": world_size}}


def test_gloo_collectives_bytes_time_and_phase():
    calls = collectives(load_trace(_gloo_trace()))
    assert [(c.name, c.backend, c.phase) for c in calls] == [
        ("all_reduce", "gloo", "backward"), ("all_gather", "gloo", "optimizer"), ("barrier", "gloo", "optimizer")]
    reduce, gather, barrier = calls
    assert reduce.message_bytes == 1040 and reduce.bus_bytes == 1040.0  # 260*4; x 2*(2-1)/2
    assert reduce.time_s == pytest.approx(500e-6) and reduce.dtype == "float" and reduce.group_size == 2
    assert gather.message_bytes == 400 and gather.bus_bytes == 200.0  # S = 2 ranks x 100*2; x (2-1)/2
    assert barrier.message_bytes == 0 and barrier.bus_bytes == 0.0
    four = collectives(load_trace(_gloo_trace()), group_size=4)[0]
    assert four.bus_bytes == 1560.0  # 1040 x 2*3/4


def test_group_size_is_required_when_the_trace_lacks_it():
    trace = _gloo_trace()
    del trace["distributedInfo"]
    with pytest.raises(ValueError, match="group_size=<ranks"):
        collectives(load_trace(trace))
    assert collectives(load_trace({"traceEvents": [_ev("aten::mm", 0, 1)]})) == ()


def test_nccl_time_is_the_kernel_launched_in_the_range():
    events = [
        _ev("autograd::engine::evaluate_function: AddmmBackward0", 0, 400),
        _ev("c10d::allreduce_", 10, 30),
        _ev("nccl:all_reduce", 12, 20, cat="user_annotation",
            **{"Input Dims": [[1024]], "Input type": ["c10::Half"]}),
        _ev("cudaLaunchKernel", 14, 5, cat="cuda_runtime", correlation=9),
        {"ph": "X", "cat": "kernel", "name": "ncclDevKernel_AllReduce_Sum_f16_RING_LL", "ts": 50, "dur": 75,
         "pid": 0, "tid": 13, "args": {"correlation": 9, "device": 0, "stream": 13}},
    ]
    (call,) = collectives(load_trace({"traceEvents": events}), group_size=8)
    assert call.time_s == pytest.approx(75e-6)  # the kernel, not the 20 us host range
    assert call.message_bytes == 2048 and call.bus_bytes == 3584.0  # 1024*2; x 2*7/8
    assert call.phase == "backward"
    assert call.bus_bandwidth == pytest.approx(3584.0 / 75e-6)  # busbw: bus bytes over the kernel's time
    assert Collective("barrier", "gloo", "forward", 0.0, 0.0, 2, None, 0, 0.0).bus_bandwidth is None  # no time
    assert Collective("all_reduce", "gloo", "forward", 0.0, 1e-3, 2, None, None, None).bus_bandwidth is None


def test_summarize_per_step_and_against_the_roof():
    c = Collective("all_reduce", "nccl", "backward", 0.0, 2e-3, 2, "float", 1_000_000, 1_000_000.0)
    s = summarize([c, c], steps=2, step_time_s=0.01, interconnect_bandwidth=1e9, bandwidth_source="given")
    # per step: 1e6 bus bytes in 2 ms -> 0.5 GB/s; roof 1e6 / 1e9 = 1 ms -> efficiency 0.5; share 2/10
    assert (s.calls, s.bus_bytes, s.time_s) == (1.0, 1e6, 2e-3)
    assert s.bus_bandwidth == pytest.approx(5e8) and s.roofline_time_s == pytest.approx(1e-3)
    assert s.efficiency == pytest.approx(0.5) and s.step_time_share == pytest.approx(0.2)
    assert s.to_dict()["by_phase"] == {"backward": {"time_s": 2e-3, "bus_bytes": 1e6}}
    bare = summarize([c], steps=1)
    assert bare.roofline_time_s is None and bare.efficiency is None and "no interconnect roof" in bare.note
    unknown = Collective("all_reduce", "gloo", "backward", 0.0, 1e-3, 2, None, None, None)
    assert summarize([c, unknown], steps=1).bus_bytes is None  # never a silent zero
    with pytest.raises(ValueError, match=r"steps=0"):
        summarize([c], steps=0)


def test_interconnect_roof_from_the_catalog():
    from torch_roofline import devices

    # H100 SXM: NVLink 4, 900 GB/s aggregate bidirectional (catalog) -> 450 GB/s per direction
    assert interconnect_roof(devices.get("h100-sxm")) == pytest.approx(450e9)
    assert interconnect_roof(devices.get("i9-10980xe")) is None  # a CPU: no catalog link, no roof


def test_overlap_is_the_collective_time_during_which_compute_ran():
    # Hand-made: a gloo all_gather on the worker thread (tid 2) from 100 to 300 us while the
    # main thread (tid 1) runs aten::mm 150-250 (inner aten calls inside it count once) and
    # aten::add 280-400; a c10d:: op and the copies gloo runs inside its range are not compute.
    # Overlap = (250 - 150) + (300 - 280) = 120 us of the gather's 200 us.
    events = [
        _ev("c10d::_allgather_base_", 90, 5),
        _ev("gloo:all_gather", 100, 200, tid=2, cat="user_annotation",
            **{"Input Dims": [[100]], "Input type": ["float"]}),
        _ev("aten::copy_", 110, 50, tid=2),  # gloo's own copy: communication
        _ev("aten::mm", 150, 100),
        _ev("aten::resolve_conj", 160, 2),  # inside mm
        _ev("aten::add", 280, 120),
        _ev("gloo:barrier", 500, 10, tid=2, cat="user_annotation"),  # nothing runs beside it
    ]
    calls = collectives(load_trace({"traceEvents": events, "distributedInfo": {"rank": 0, "world_size": 2}}))
    gather, barrier = calls
    assert gather.overlap_s == pytest.approx(120e-6) and barrier.overlap_s == 0.0
    s = summarize(calls, steps=1)
    assert s.overlap_s == pytest.approx(120e-6) and s.overlap_share == pytest.approx(120 / 210)
    assert "57% of the collective time overlapped compute" in s.note  # 120 / 210
    assert s.to_dict()["overlap_s"] == pytest.approx(120e-6)


def test_fsdp_reduce_scatter_sends_the_gradient_shard():
    # FSDP on NCCL reduce-scatters each gradient: input = the unsharded gradient (S = U bytes),
    # each rank sends S x (n - 1)/n, which for n = 2 is U/2: the rank's shard. Linear(64, 64):
    # U = (64*64 + 64) x 4 = 16,640 bytes -> 8,320 per rank. (gloo has no reduce_scatter: FSDP
    # all-reduces there, tests/entry/test_fsdp.py.)
    events = [
        _ev("FSDP::post_backward_reduce (2)", 0, 100, cat="user_annotation"),
        _ev("c10d::_reduce_scatter_base_", 10, 5),
        _ev("nccl:_reduce_scatter_base", 12, 50, tid=2, cat="user_annotation",
            **{"Input Dims": [[4160]], "Input type": ["float"]}),
    ]
    (call,) = collectives(load_trace({"traceEvents": events, "distributedInfo": {"rank": 0, "world_size": 2}}))
    assert (call.name, call.phase, call.message_bytes, call.bus_bytes) == ("_reduce_scatter_base", "backward",
                                                                           16640, 8320.0)
