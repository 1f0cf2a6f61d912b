"""Roofline math and the join of counts + timings, against hand computations.

Roofs used throughout (chosen so the hand arithmetic stays exact):
  fp32 matrix: peak 1e12 FLOP/s, bandwidth 1e11 B/s -> ridge 10 FLOP/B
  fp32 vector: peak 2.5e11 FLOP/s, bandwidth 1e11 B/s -> ridge 2.5 FLOP/B
"""

from _paths import REPO_ROOT
import os
import subprocess
import sys

import pytest

from torch_roofline.analysis import (
    attainable,
    bound,
    efficiency,
    fusion_headroom,
    roofline_time,
    time_lost,
)
from torch_roofline.report.build import analyse
from torch_roofline.records import ModuleInfo, ModuleTiming, OpCost, OpTiming, Roof

MATRIX = Roof("fp32", "matrix", 1e12, 1e11, "measured")
VECTOR = Roof("fp32", "vector", 2.5e11, 1e11, "measured")
ROOFS = {("float32", "matrix"): MATRIX, ("float32", "vector"): VECTOR}

# GEMM 1024^3 fp32: 2*1024^3 = 2_147_483_648 FLOPs; reads A and B (2 * 1024*1024*4 =
# 8_388_608 B), writes C (4_194_304 B): 12_582_912 B in all.
GEMM_FLOPS = 2 * 1024**3
GEMM_READ = 2 * 1024 * 1024 * 4
GEMM_WRITE = 1024 * 1024 * 4


def cost(op, module, scope, flops, read, written, *, unit="vector", index=0, counted=True,
         phase="forward", dtype="float32", comp_read=None, comp_written=None):
    return OpCost(
        op=op, module=module, scope=scope, phase=phase, flops=flops,
        macs=flops // 2 if unit == "matrix" else 0, bytes_read=read, bytes_written=written,
        compulsory_bytes_read=read if comp_read is None else comp_read,
        compulsory_bytes_written=written if comp_written is None else comp_written,
        dtype=dtype, unit=unit, counted=counted, index=index,
    )


def timing(op, module, scope, time_s, phase="forward", index=0):
    return OpTiming(op=op, module=module, scope=scope, phase=phase, time_s=time_s,
                    cpu_time_s=time_s, index=index)


def gemm(module="fc", scope=("", "fc"), index=0):
    return cost("aten.mm", module, scope, GEMM_FLOPS, GEMM_READ, GEMM_WRITE, unit="matrix", index=index)


# ------------------------------------------------------------------------------ the math


def test_single_gemm_roofline_time_efficiency_and_bound():
    # F/peak = 2_147_483_648 / 1e12 = 2.147483648e-3 s; B/bw = 12_582_912 / 1e11 = 1.2582912e-4 s
    rt = roofline_time(GEMM_FLOPS, GEMM_READ + GEMM_WRITE, MATRIX)
    assert rt == pytest.approx(2.147483648e-3, rel=1e-12)
    # measured 4 ms -> efficiency 2.147483648e-3 / 4e-3 = 0.536870912
    assert efficiency(rt, 4e-3) == pytest.approx(0.536870912, rel=1e-12)
    assert time_lost(4e-3, rt) == pytest.approx(1.852516352e-3, rel=1e-9)
    # intensity 2_147_483_648 / 12_582_912 = 170.67 FLOP/B >= ridge 10 -> compute
    assert bound(GEMM_FLOPS, GEMM_READ + GEMM_WRITE, MATRIX.ridge, roofline_time_s=rt, time_s=4e-3) == "compute"
    assert attainable(170.0, MATRIX) == 1e12
    assert attainable(2.0, MATRIX) == 2e11  # 2 FLOP/B * 1e11 B/s

    report = analyse([gemm()], [timing("aten.mm", "fc", ("", "fc"), 4e-3)], (), [], ROOFS)
    (row,) = report.ops
    assert row.roofline_time_s == pytest.approx(2.147483648e-3, rel=1e-12)
    assert row.efficiency == pytest.approx(0.536870912, rel=1e-12)
    assert row.intensity == pytest.approx(2147483648 / 12582912)
    assert row.achieved_flops_per_s == pytest.approx(5.36870912e11)  # 2_147_483_648 / 4e-3
    assert row.attainable_flops_per_s == pytest.approx(1e12)
    assert row.bound == "compute" and not row.suspect
    assert (row.roof.dtype, row.roof.unit) == ("fp32", "matrix")
    assert row.fusion_headroom == pytest.approx(1.0)


def test_memory_bound_elementwise_op():
    # relu over 1e6 fp32 elements: 1e6 FLOPs, 4e6 B read + 4e6 B written.
    # roofline = max(1e6 / 2.5e11 = 4e-6, 8e6 / 1e11 = 8e-5) = 8e-5 s (80 µs: above the
    # 10 µs overhead threshold); intensity 0.125 < ridge 2.5 -> memory.
    relu = cost("aten.relu", "act", ("", "act"), 10**6, 4 * 10**6, 4 * 10**6)
    report = analyse([relu], [timing("aten.relu", "act", ("", "act"), 1.6e-4)], (), [], ROOFS)
    (row,) = report.ops
    assert row.roofline_time_s == pytest.approx(8e-5)
    assert row.efficiency == pytest.approx(0.5)  # 8e-5 / 1.6e-4
    assert row.bound == "memory"
    assert row.achieved_bytes_per_s == pytest.approx(5e10)  # 8e6 B / 1.6e-4 s


def test_bound_rule_thresholds():
    # Overhead needs: measured, roofline time per call < 10 µs, measured > 2x roofline time.
    args = dict(flops=1000, bytes_=8000, ridge=2.5)  # intensity 0.125 -> memory otherwise
    assert bound(**args, roofline_time_s=9.9e-6, time_s=1e-4) == "overhead"
    assert bound(**args, roofline_time_s=1.01e-5, time_s=1e-4) == "memory"  # per call above 10 µs
    assert bound(**args, roofline_time_s=9.9e-6, time_s=1.9e-5) == "memory"  # 1.9e-5 < 2 * 9.9e-6
    assert bound(**args, roofline_time_s=9.9e-6, time_s=None) == "memory"  # predicted: never overhead
    # two calls: 1.8e-5 s in all is 9e-6 s per call -> overhead
    assert bound(**args, roofline_time_s=1.8e-5, time_s=1e-4, calls=2) == "overhead"
    # thresholds are parameters
    assert bound(**args, roofline_time_s=9.9e-6, time_s=1e-4, overhead_threshold_s=1e-6) == "memory"
    assert bound(**args, roofline_time_s=9.9e-6, time_s=2.5e-5, overhead_ratio=3.0) == "memory"
    # compute exactly at the ridge; no roof -> None; FLOPs without bytes -> compute
    assert bound(25, 10, 2.5) == "compute"  # 25 / 10 = 2.5 >= 2.5
    assert bound(24, 10, 2.5) == "memory"
    assert bound(24, 10, None) is None
    assert bound(24, 0, 2.5) == "compute"


def test_tiny_op_is_overhead_in_a_report():
    # 1000-element relu: 8000 B / 1e11 B/s = 8e-8 s roofline; measured 5 µs > 2 * 8e-8
    tiny = cost("aten.relu", "act", ("", "act"), 1000, 4000, 4000)
    report = analyse([tiny], [timing("aten.relu", "act", ("", "act"), 5e-6)], (), [], ROOFS)
    assert report.ops[0].bound == "overhead"
    assert report.ops[0].roofline_time_s == pytest.approx(8e-8)
    # measured 1.5e-7 s < 2 * 8e-8 s -> by ridge: memory
    report = analyse([tiny], [timing("aten.relu", "act", ("", "act"), 1.5e-7)], (), [], ROOFS)
    assert report.ops[0].bound == "memory"


def test_fusion_headroom_and_edge_values():
    assert fusion_headroom(3000, 1000) == 3.0
    assert fusion_headroom(3000, 0) is None
    assert efficiency(1e-3, 0.0) is None
    assert efficiency(None, 1.0) is None
    assert time_lost(None, 1.0) is None


# ------------------------------------------------------------------------------ modules


def three_module_model():
    """Net (root) -> block (Sequential) -> block.fc (Linear); block and root also run ops.

    fc:    mm   2e9 FLOPs, 1e6 B read + 1e6 B written (matrix): max(2e-3, 2e-5) = 2e-3 s
    block: add  1e6 FLOPs, 8e6 B (vector):  max(4e-6, 8e-5) = 8e-5 s
    root:  relu 1e6 FLOPs, 8e6 B (vector):  8e-5 s
    """
    costs = [
        cost("aten.relu", "", ("",), 10**6, 4 * 10**6, 4 * 10**6, index=0),
        cost("aten.mm", "block.fc", ("", "block", "block.fc"), 2 * 10**9, 10**6, 10**6, unit="matrix", index=1),
        cost("aten.add", "block", ("", "block"), 10**6, 4 * 10**6, 4 * 10**6, index=2),
    ]
    timings = [
        timing("aten.relu", "", ("",), 1.6e-4),
        timing("aten.mm", "block.fc", ("", "block", "block.fc"), 2.4e-3),
        timing("aten.add", "block", ("", "block"), 1.6e-4),
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


def test_inclusive_and_self_aggregation_on_a_three_module_tree():
    report = analyse(*three_module_model(), ROOFS)
    fc, block, root = report.module("block.fc"), report.module("block"), report.module("")
    # inclusive FLOPs: fc 2e9; block 2e9 + 1e6; root 2e9 + 2e6
    assert (fc.flops, block.flops, root.flops) == (2 * 10**9, 2_001_000_000, 2_002_000_000)
    assert block.bytes_read == 10**6 + 4 * 10**6 and root.bytes_written == 10**6 + 8 * 10**6
    # inclusive roofline: fc 2e-3; block 2e-3 + 8e-5 = 2.08e-3; root 2.16e-3
    assert fc.roofline_time_s == pytest.approx(2e-3)
    assert block.roofline_time_s == pytest.approx(2.08e-3)
    assert root.roofline_time_s == pytest.approx(2.16e-3)
    # self: block's own add only (8e-5 s); block's self time 0.5 ms -> self lost 4.2e-4 s
    assert block.self_roofline_time_s == pytest.approx(8e-5)
    assert block.self_time_lost_s == pytest.approx(4.2e-4)
    # times from the module ranges; efficiency 2.08e-3 / 3e-3
    assert (block.time_s, block.self_time_s) == (3e-3, 0.5e-3)
    assert block.efficiency == pytest.approx(2.08e-3 / 3e-3)
    assert block.time_lost_s == pytest.approx(3e-3 - 2.08e-3)
    assert block.attainable_flops_per_s == pytest.approx(2_001_000_000 / 2.08e-3)
    # roof holding most roofline time: matrix (2e-3 vs 8e-5); bound: most measured op time
    # is the compute-bound mm (2.4 ms vs 0.16 ms)
    assert (block.roof.unit, block.bound) == ("matrix", "compute")
    assert report.module("block", "forward").flops == block.flops
    assert [r.depth for r in (root, block, fc)] == [0, 1, 2]
    assert root.params == 1_000_100 and root.type == "Net"
    # totals: step time = root's 4 ms; op time 2.4e-3 + 1.6e-4 + 1.6e-4 = 2.72e-3, all of it
    # in counted ops -> coverage 1; the other 1.28 ms of the step lies outside every op
    t = report.totals
    assert t.time_s == 4e-3
    assert t.op_time_s == pytest.approx(2.72e-3)
    assert t.coverage == pytest.approx(1.0)
    assert t.roofline_time_s == pytest.approx(2.16e-3)
    assert t.flops == 2_002_000_000 and t.params == 1_000_100
    assert t.bound_time_share.compute == pytest.approx(2.4e-3 / 2.72e-3)
    assert t.bound_time_share.memory == pytest.approx(0.32e-3 / 2.72e-3)
    assert t.bound_time_share.overhead == 0.0
    assert report.model == "Net" and not report.predicted


def test_phase_all_sums_phases():
    costs = [
        cost("aten.mm", "fc", ("", "fc"), 2 * 10**9, 10**6, 10**6, unit="matrix"),
        cost("aten.mm", "fc", ("", "fc"), 4 * 10**9, 10**6, 10**6, unit="matrix", phase="backward"),
    ]
    mts = [ModuleTiming("fc", "forward", 1, 3e-3, 3e-3), ModuleTiming("fc", "backward", 1, 5e-3, 5e-3),
           ModuleTiming("", "forward", 1, 3e-3, 0.0), ModuleTiming("", "backward", 1, 5e-3, 0.0)]
    report = analyse(costs, [], mts, [ModuleInfo("", "Net", 0, 0), ModuleInfo("fc", "Linear", 0, 0)], ROOFS)
    fc = report.module("fc")
    assert fc.flops == 6 * 10**9 and fc.time_s == pytest.approx(8e-3)
    assert fc.roofline_time_s == pytest.approx(6e-3)  # 2e-3 + 4e-3
    assert fc.calls == 1  # one forward call and its backward, not two calls
    assert report.totals.time_s == pytest.approx(8e-3)  # root over both phases


def test_module_called_twice_has_calls_two():
    # act runs, then fc, then act again: two runs of ops inside act.
    costs = [
        cost("aten.relu", "act", ("", "act"), 10, 40, 40, index=0),
        gemm(index=1),
        cost("aten.relu", "act", ("", "act"), 10, 40, 40, index=2),
    ]
    modules = [ModuleInfo("", "Net", 0, 0), ModuleInfo("fc", "Linear", 0, 0), ModuleInfo("act", "ReLU", 0, 0)]
    predicted = analyse(costs, modules=modules, roofs=ROOFS)
    assert predicted.module("act").calls == 2
    assert predicted.module("fc").calls == 1 and predicted.module("").calls == 1
    op = next(r for r in predicted.ops if r.op == "aten.relu")
    assert op.calls == 2 and op.flops == 20
    # with module ranges over 2 profiled steps: 4 ranges / 2 steps = 2 calls per step
    mts = [ModuleTiming("act", "forward", 4, 2e-5, 2e-5), ModuleTiming("", "forward", 2, 1e-2, 0.0)]
    measured = analyse(costs, [], mts, modules, ROOFS, steps=2)
    assert measured.module("act").calls == 2
    assert measured.module("act").time_s == pytest.approx(1e-5)  # 2e-5 s over 2 steps


def test_timings_are_divided_by_steps():
    t = [timing("aten.mm", "fc", ("", "fc"), 4e-3), timing("aten.mm", "fc", ("", "fc"), 4e-3),
         timing("aten.mm", "fc", ("", "fc"), 4e-3)]
    report = analyse([gemm()], t, (), [], ROOFS, steps=3)
    assert report.ops[0].time_s == pytest.approx(4e-3)
    assert report.ops[0].calls == 1
    assert report.steps == 3
    # no module timings: module times are the sums of their ops
    assert report.module("fc").time_s == pytest.approx(4e-3)
    assert report.totals.time_s == pytest.approx(4e-3)


# ------------------------------------------------------------------------------ coverage & flags


def test_coverage_counts_uncounted_ops_in_the_denominator():
    costs = [gemm(), cost("aten.foo", "fc", ("", "fc"), 0, 400, 400, counted=False, index=1)]
    timings = [
        timing("aten.mm", "fc", ("", "fc"), 4e-3),
        timing("aten.foo", "fc", ("", "fc"), 1e-3),
        timing("aten.bar", "", ("",), 2e-3),  # timed, never counted
    ]
    mts = [ModuleTiming("", "forward", 1, 1e-2, 6e-3), ModuleTiming("fc", "forward", 1, 5e-3, 5e-3)]
    report = analyse(costs, timings, mts, [], ROOFS)
    # counted op time 4e-3 of 7e-3 s measured in ops (4e-3 + 1e-3 + 2e-3) -> coverage 4/7
    assert report.totals.coverage == pytest.approx(4 / 7)
    assert report.totals.op_time_s == pytest.approx(7e-3)
    by_op = {u.op: u for u in report.uncounted}
    assert set(by_op) == {"aten.foo", "aten.bar"}
    assert by_op["aten.foo"].time_s == pytest.approx(1e-3) and by_op["aten.foo"].calls == 1
    assert by_op["aten.bar"].time_s == pytest.approx(2e-3)
    foo = next(r for r in report.ops if r.op == "aten.foo")
    assert foo.flops is None and not foo.counted and foo.bound is None and foo.efficiency is None
    assert foo.bytes_read == 400  # traffic still known
    # module sums cover counted ops only
    assert report.module("fc").flops == GEMM_FLOPS
    assert report.module("fc").bytes_read == GEMM_READ
    # step time from a caller overrides the root's range (coverage is about op time: unchanged)
    over = analyse(costs, timings, mts, [], ROOFS, step_time_s=8e-3).totals
    assert over.time_s == pytest.approx(8e-3) and over.coverage == pytest.approx(4 / 7)
    # ... and, like every measured input, it is summed over the profiled steps:
    # 2 steps of 8e-3 s -> 8e-3 s per step; op times summed over 2 steps -> the same per step
    mts2 = [ModuleTiming(m.name, m.phase, 2, 2 * m.time_s, 2 * m.self_time_s) for m in mts]
    two = analyse(costs, timings * 2, mts2, [], ROOFS, steps=2, step_time_s=1.6e-2)
    assert two.totals.time_s == pytest.approx(8e-3) and two.totals.coverage == pytest.approx(4 / 7)
    assert two.totals.op_time_s == pytest.approx(7e-3)


def test_point_above_its_roof_is_flagged_suspect_not_clipped():
    # roofline 2.147483648e-3 s but measured 1e-3 s: efficiency 2.147..., suspect
    report = analyse([gemm()], [timing("aten.mm", "fc", ("", "fc"), 1e-3)], (), [], ROOFS)
    row = report.ops[0]
    assert row.efficiency == pytest.approx(2.147483648)
    assert row.suspect
    assert row.time_lost_s == pytest.approx(1e-3 - 2.147483648e-3)
    assert report.module("fc").suspect
    assert any("suspect" in n for n in report.notes)
    assert "!" in report.table(level="op")


def test_suspect_note_names_the_causes_that_fit():
    # A compute-bound GEMM above a measured roof (2.147x): the roof may have been measured on a
    # busy machine; cache residency is no cause for a compute-bound op.
    (note,) = [n for n in analyse([gemm()], [timing("aten.mm", "fc", ("", "fc"), 1e-3)], (), [], ROOFS).notes
               if "above their roof" in n]
    assert "measure it again" in note and "torch-roofline bench --refresh" in note and "cache" not in note
    # A memory-bound relu above a datasheet bandwidth (8e6 B in 4e-5 s = 2x 1e11 B/s): cache, not re-measuring.
    datasheet = {k: Roof(r.dtype, r.unit, r.peak_flops_per_s, r.bandwidth_bytes_per_s, "datasheet")
                 for k, r in ROOFS.items()}
    relu = cost("aten.relu", "act", ("", "act"), 10**6, 4 * 10**6, 4 * 10**6)
    (note,) = [n for n in analyse([relu], [timing("aten.relu", "act", ("", "act"), 4e-5)], (), [], datasheet).notes
               if "above their roof" in n]
    assert "stayed in cache" in note and "measure it again" not in note


def test_missing_roof_gives_none_and_a_note_never_another_roof():
    f64 = cost("aten.mm", "fc", ("", "fc"), GEMM_FLOPS, GEMM_READ, GEMM_WRITE, unit="matrix", dtype="float64")
    report = analyse([f64], [timing("aten.mm", "fc", ("", "fc"), 4e-3)], (), [], ROOFS)
    row = report.ops[0]
    assert row.roofline_time_s is None and row.efficiency is None and row.bound is None
    assert row.roof is None and row.dtype == "float64" and row.time_s == 4e-3
    assert report.module("fc").roofline_time_s is None
    assert any("float64" in n and "no roof" in n for n in report.notes)


def test_zero_work_op_needs_no_roof():
    view = cost("aten.view", "fc", ("", "fc"), 0, 0, 0, dtype=None)
    report = analyse([gemm(), view], [timing("aten.mm", "fc", ("", "fc"), 4e-3),
                                      timing("aten.view", "fc", ("", "fc"), 2e-6)], (), [], ROOFS)
    row = next(r for r in report.ops if r.op == "aten.view")
    assert row.roofline_time_s == 0.0 and row.efficiency == 0.0 and row.bound == "overhead"
    assert not any("no roof" in n for n in report.notes)


def test_compulsory_memory_model_uses_compulsory_bytes():
    # op traffic 8e6 B, compulsory 2e6 B: roofline 8e-5 s (op) vs 2e-5 s (compulsory)
    c = cost("aten.add", "a", ("", "a"), 10**5, 4 * 10**6, 4 * 10**6, comp_read=10**6, comp_written=10**6)
    op = analyse([c], roofs=ROOFS)
    comp = analyse([c], roofs=ROOFS, memory_model="compulsory")
    assert op.ops[0].roofline_time_s == pytest.approx(8e-5)
    assert comp.ops[0].roofline_time_s == pytest.approx(2e-5)
    assert comp.ops[0].bytes_read == 10**6 and comp.memory_model == "compulsory"
    assert op.ops[0].fusion_headroom == pytest.approx(4.0)  # 8e6 / 2e6, whatever the model
    assert comp.totals.compulsory_bytes == 2 * 10**6


def test_predicted_report():
    relu = cost("aten.relu", "act", ("", "act"), 1000, 4000, 4000, index=1)
    report = analyse([gemm(), relu], roofs=ROOFS, modules=[ModuleInfo("", "Net", 0, 0)])
    assert report.predicted
    assert report.totals.time_s is None and report.totals.coverage is None
    assert report.totals.roofline_time_s == pytest.approx(2.147483648e-3 + 8e-8)
    by_op = {r.op: r for r in report.ops}
    assert by_op["aten.mm"].bound == "compute"
    assert by_op["aten.relu"].bound == "memory"  # tiny, but never overhead without a measurement
    assert by_op["aten.mm"].time_s is None and by_op["aten.mm"].efficiency is None
    assert report.time_lost == ()
    # share of roofline time by bound
    assert report.totals.bound_time_share.memory == pytest.approx(8e-8 / (2.147483648e-3 + 8e-8))


# ------------------------------------------------------------------------------ where the time goes


def test_where_the_time_goes_reasons_and_hints():
    costs, timings, mts, modules = [], [], [], [ModuleInfo("", "Net", 0, 0)]
    # "small": 14 tiny relus (1000 elements: 8e-8 s roofline each) of 6 µs each -> overhead
    for i in range(14):
        costs.append(cost("aten.relu", "small", ("", "small"), 1000, 4000, 4000, index=i))
        timings.append(timing("aten.relu", "small", ("", "small"), 6e-6))
    # "bn": memory-bound, 8e6 B in 1.6e-4 s = 5e10 B/s = 50% of 1e11 B/s
    costs.append(cost("aten.batch_norm", "bn", ("", "bn"), 10**6, 4 * 10**6, 4 * 10**6, index=20))
    timings.append(timing("aten.batch_norm", "bn", ("", "bn"), 1.6e-4))
    # "fc": compute-bound; 2_147_483_648 FLOPs in 8.589934592e-3 s = 2.5e11 FLOP/s = 25% of peak
    costs.append(gemm(index=30))
    timings.append(timing("aten.mm", "fc", ("", "fc"), 8.589934592e-3))
    # "act2": memory-bound elementwise chain; op bytes 8e6, compulsory 2e6 -> headroom 4
    costs.append(cost("aten.mul", "act2", ("", "act2"), 10**6, 4 * 10**6, 4 * 10**6, index=40,
                      comp_read=10**6, comp_written=10**6))
    timings.append(timing("aten.mul", "act2", ("", "act2"), 1.6e-4))
    mts = [
        ModuleTiming("", "forward", 1, 1e-2, 0.0),
        ModuleTiming("small", "forward", 1, 14 * 6e-6, 14 * 6e-6),
        ModuleTiming("bn", "forward", 1, 1.6e-4, 1.6e-4),
        ModuleTiming("fc", "forward", 1, 8.589934592e-3, 8.589934592e-3),
        ModuleTiming("act2", "forward", 1, 1.6e-4, 1.6e-4),
    ]
    modules += [ModuleInfo("small", "ReLU", 0, 0), ModuleInfo("bn", "BatchNorm2d", 0, 0),
                ModuleInfo("fc", "Linear", 0, 0), ModuleInfo("act2", "Mul", 0, 0)]
    report = analyse(costs, timings, mts, modules, ROOFS)
    items = {i.name: i for i in report.time_lost}
    # ranked by self time lost, the root (self time 0) never repeats its children
    assert "" not in items
    assert report.time_lost[0].name == "fc"
    lost = [i.time_lost_s for i in report.time_lost]
    assert lost == sorted(lost, reverse=True)
    assert items["fc"].reason.startswith("compute-bound at 25% of peak")
    assert "multiples of 8" in items["fc"].hint
    assert items["bn"].reason.startswith("memory-bound at 50% of bandwidth")
    assert "Conv->BN->ReLU" in items["bn"].hint
    assert items["act2"].bound == "memory" and "fuse elementwise" in items["act2"].hint
    assert items["small"].bound == "overhead"
    assert items["small"].reason == "overhead-bound: 14 small ops of ~6 µs each"
    assert "larger batches" in items["small"].hint
    # 14 * (6e-6 - 8e-8) = 8.288e-5 s lost
    assert items["small"].time_lost_s == pytest.approx(8.288e-5)
    assert len(analyse(costs, timings, mts, modules, ROOFS, time_lost_top=2).time_lost) == 2


# ------------------------------------------------------------------------------ inputs, scale, purity


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="no op was counted or timed"):
        analyse([], roofs=ROOFS)
    with pytest.raises(ValueError, match="memory_model must be one of"):
        analyse([gemm()], roofs=ROOFS, memory_model="bytes")
    with pytest.raises(ValueError, match="steps must be an int >= 1"):
        analyse([gemm()], roofs=ROOFS, steps=0)
    with pytest.raises(ValueError, match="finite positive peak and bandwidth"):
        analyse([gemm()], roofs={("float32", "matrix"): Roof("fp32", "matrix", 1e12, 0.0)})


def test_analysis_does_not_import_torch():
    # Load the package's modules without running torch_roofline/__init__.py (which may
    # import the profiler), then check that analysis.py and what it imports left torch out.
    root = REPO_ROOT
    code = (
        "import sys, types\n"
        f"pkg = types.ModuleType('torch_roofline'); pkg.__path__ = [{os.path.join(root, 'torch_roofline')!r}]\n"
        "sys.modules['torch_roofline'] = pkg\n"
        "import torch_roofline.analysis, torch_roofline.report\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def synthetic_large_model(n_stages=10, blocks=10, leaves=9, ops_per_leaf=5):
    """1 + 10 + 100 + 900 = 1011 modules, 4500 op calls, all timed."""
    modules = [ModuleInfo("", "Big", 10**6, 4 * 10**6)]
    costs, timings, mts = [], [], []
    index = 0
    for s in range(n_stages):
        stage = f"s{s}"
        modules.append(ModuleInfo(stage, "Sequential", 1000, 4000))
        for b in range(blocks):
            block = f"{stage}.b{b}"
            modules.append(ModuleInfo(block, "Block", 100, 400))
            for leaf in range(leaves):
                name = f"{block}.l{leaf}"
                modules.append(ModuleInfo(name, "Linear" if leaf % 3 == 0 else "ReLU", 10, 40))
                scope = ("", stage, block, name)
                for k in range(ops_per_leaf):
                    unit = "matrix" if leaf % 3 == 0 and k == 0 else "vector"
                    costs.append(cost(f"aten.op{k}", name, scope, 10**6, 10**5, 10**5, unit=unit, index=index))
                    timings.append(timing(f"aten.op{k}", name, scope, 2e-5))
                    index += 1
                mts.append(ModuleTiming(name, "forward", 1, 1e-4, 1e-4))
            mts.append(ModuleTiming(block, "forward", 1, 9.2e-4, 2e-5))
        mts.append(ModuleTiming(stage, "forward", 1, 9.3e-3, 1e-4))
    mts.append(ModuleTiming("", "forward", 1, 9.4e-2, 1e-3))
    return costs, timings, mts, modules


def test_report_for_a_thousand_module_model_builds():
    costs, timings, mts, modules = synthetic_large_model()
    assert len(modules) == 1011 and len(costs) == 4500
    report = analyse(costs, timings, mts, modules, ROOFS)
    assert sum(1 for r in report.modules if r.phase == "all") == 1011
    assert report.module("").flops == 4500 * 10**6
    assert report.module("s3.b4").flops == 9 * 5 * 10**6
    assert report.totals.coverage == pytest.approx(1.0)  # every timed op is counted
    assert report.totals.op_time_s == pytest.approx(4500 * 2e-5)
    assert len(report.table(top=20).splitlines()) > 20
    assert report.to_json()


def test_hint_near_peak_and_suspect_reason():
    # 2_147_483_648 FLOPs in 2.5e-3 s = 8.59e11 FLOP/s: 86% of the 1e12 fp32 matrix peak
    near = analyse([gemm()], [timing("aten.mm", "fc", ("", "fc"), 2.5e-3)], (), [], ROOFS)
    (item,) = [i for i in near.time_lost if i.name == "fc"]
    assert item.reason.startswith("compute-bound at 86% of peak")
    assert "lower precision" in item.hint
    # 8e6 B of relu in 4e-5 s = 2e11 B/s: 200% of 1e11 B/s, and the reason says so
    relu = cost("aten.relu", "act", ("", "act"), 10**6, 4 * 10**6, 4 * 10**6)
    mts = [ModuleTiming("act", "forward", 1, 1e-4, 1e-4)]
    fast = analyse([relu], [timing("aten.relu", "act", ("", "act"), 4e-5)], mts, [], ROOFS)
    (item,) = fast.time_lost
    assert item.reason == "memory-bound at 200% of bandwidth (100 GB/s): above the roof, suspect"


def test_slow_fp32_matmul_on_a_cpu_gets_the_blas_hint():
    from torch_roofline.report import DeviceInfo

    # "fc": one GEMM at 25% of the matrix peak (as in the test above), compute-bound
    costs = [gemm(index=0)]
    timings = [timing("aten.mm", "fc", ("", "fc"), 8.589934592e-3)]
    modules = [ModuleInfo("", "Net", 0, 0), ModuleInfo("fc", "Linear", 0, 0)]
    roofs = tuple(ROOFS.values())

    def hint(kind):
        dev = DeviceInfo("dev", "Test", "measured", 1e11, roofs, kind=kind)
        report = analyse(costs, timings, (), modules, ROOFS, device=dev)
        (item,) = [i for i in report.time_lost if i.name == "fc"]
        assert item.reason.startswith("compute-bound at 25% of peak")
        return item.hint, report

    cpu_hint, report = hint("cpu")
    assert "BLAS" in cpu_hint and "torch.utils.mkldnn.to_mkldnn" in cpu_hint
    assert report.device.kind == "cpu"
    assert type(report).from_json(report.to_json()).device.kind == "cpu"  # the JSON keeps it
    gpu_hint, _ = hint("gpu")
    assert "multiples of 8" in gpu_hint and "BLAS" not in gpu_hint


def test_zero_duration_event_gives_none_never_inf_or_nan():
    # A profiler event of 0 s (clock granularity): no achieved rate, no efficiency, and the
    # JSON carries null, not Infinity/NaN. It cannot have beaten its roof (roofline time
    # 2.147483648e-3 s), so it is flagged suspect, with time lost 0 - 2.147483648e-3 s.
    import json

    report = analyse([gemm()], [timing("aten.mm", "fc", ("", "fc"), 0.0)], (), [], ROOFS)
    row = report.ops[0]
    assert row.time_s == 0.0
    assert row.achieved_flops_per_s is None and row.efficiency is None
    assert row.suspect and row.time_lost_s == pytest.approx(-2.147483648e-3)
    text = report.to_json()
    assert "Infinity" not in text and "NaN" not in text
    assert json.loads(text)["ops"][0]["efficiency"] is None
