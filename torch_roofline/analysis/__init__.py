"""Roofline math and the join of counts, timings and roofs into an :class:`~torch_roofline.records.Analysis`
(the content of a :class:`~torch_roofline.report.RooflineReport`, which the report layer wraps).

Pure functions, no torch import: the inputs are the frozen records of ``records.py``.
"Where the time goes" (the report's time-lost items) is built in ``_time_lost.py``.

Conventions (units SI: FLOPs, bytes, seconds, FLOP/s, B/s):

* **Roofline time** of an op call: ``max(F / peak, B / bandwidth)`` against the roof of its
  own (dtype, unit), with ``B`` the bytes under the report's memory model. A row's roofline
  time is the sum over its calls; a module's is the sum over its ops, each against its own
  roof. A call with no FLOPs and no bytes has roofline time 0 (views); a call whose
  (dtype, unit) has no roof gets none: its row's roofline time, efficiency and bound are
  ``None`` and the report says so in a note (never another roof's numbers).
* **Attainable** FLOP/s: ``min(peak, intensity x bandwidth)`` for one roof; a row reports
  ``flops / roofline_time_s``, which is the same for one roof and one intensity and stays
  right when a module mixes roofs.
* **Efficiency** = ``roofline_time_s / time_s`` (= achieved / attainable for one roof), 0-1.
  Above 1 the point lies above its roof: the value is kept and the row flagged ``suspect``
  (wrong roof, sparse peak or a measurement error), never clipped or hidden.
* **Time lost** = ``time_s - roofline_time_s``; **fusion headroom** = op bytes / compulsory
  bytes (how much traffic a perfectly fused module would save).

Bound rule (thresholds are parameters of :func:`bound` and :func:`analyse_step`):

1. ``overhead`` when the row was measured, its roofline time per call is below
   ``overhead_threshold_s`` (default 10 µs) **and** its measured time exceeds
   ``overhead_ratio`` (default 2) times its roofline time: launch and framework cost, not
   the roofs, explain its time.
2. otherwise ``compute`` when its intensity (FLOP/B) >= the ridge of its roof, else
   ``memory``. An op with FLOPs but no bytes is ``compute``; with neither it has no bound
   unless rule 1 applies.
3. Modules: the bound class holding the largest share of the module's measured op time
   (roofline time when predicted or when none of its ops was timed); ties go compute,
   memory, overhead in that order.

Aggregation: inclusive module sums add every counted op call whose ``scope`` holds the
module (O(calls x depth)); self sums add the calls whose ``module`` is the module. Module
and total FLOPs and bytes cover counted ops only (they are what roofline times are computed
from); uncounted ops keep their bytes in their op rows and are listed with their time, and
``coverage`` = measured time of counted ops / measured time of all ops says how much that
leaves. Time outside every op (Python between ops, module and hook overhead, the user's loop
between steps) is not an op without a formula, so it is not in coverage's denominator: it
is ``time_s - op_time_s``, reported as such.

Example (:func:`torch_roofline.report.build.analyse` takes the same as loose arguments and
returns a report)::

    found = analyse_step(StepRecords(costs, op_timings, module_timings, modules, steps=5), roofs)
    print(found.totals.efficiency)
"""

from __future__ import annotations

import datetime as _dt
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from typing import Any, Dict, List, Mapping, Optional, Tuple

from torch_roofline._module_names import module_ancestry, module_depth, op_runs
from torch_roofline.analysis.time_lost import dominant, time_lost_items
from torch_roofline.records import Analysis, DeviceInfo, OpCost, OpRow, OpTiming, Roof, RoofRef, StepRecords, check_memory_model, frozen_record
from torch_roofline.analysis._modules import _Acc, _module_calls, _module_rows, _module_times
from torch_roofline.analysis._summary import (_complete_device, _device_from_roofs, _imported_torch_version, _notes,
                                              _totals, _uncounted)
from torch_roofline.analysis.roofline import (DEFAULT_OVERHEAD_RATIO, DEFAULT_OVERHEAD_THRESHOLD_S, RoofKey, attainable,
                                              bound, efficiency, fusion_headroom, is_suspect, roofline_time, time_lost)

__all__ = [
    "DEFAULT_OVERHEAD_THRESHOLD_S",
    "DEFAULT_OVERHEAD_RATIO",
    "attainable",
    "roofline_time",
    "efficiency",
    "is_suspect",
    "bound",
    "time_lost",
    "fusion_headroom",
    "analyse_step",
    "AnalysisOptions",
    "Analysis",
    "StepRecords",
    "op_runs",
]


# --------------------------------------------------------------------------------------------
# Accumulators (private, mutable while analysing; the report holds only frozen rows)
# --------------------------------------------------------------------------------------------


@dataclass
class _Group:
    """Calls and timings of one (module, phase, op)."""

    calls: List[OpCost] = field(default_factory=list)
    time_sum_s: float = 0.0
    timed_events: int = 0


@dataclass
class _CallFacts:
    roofline: Optional[float]
    roof: Optional[Roof]
    bytes_read: int
    bytes_written: int


# --------------------------------------------------------------------------------------------
# analyse
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AnalysisOptions:
    """How a step is placed on the roofline: the choices, not the data.

    Attributes:
        memory_model: ``"op"`` or ``"compulsory"``: the bytes used for roofline times and
            reported as ``bytes_read`` / ``bytes_written``.
        overhead_threshold_s, overhead_ratio: the overhead rule (module docstring), seconds
            per call and a ratio.
        time_lost_top: how many "where the time goes" items to keep.
    """

    memory_model: str = "op"
    overhead_threshold_s: float = DEFAULT_OVERHEAD_THRESHOLD_S
    overhead_ratio: float = DEFAULT_OVERHEAD_RATIO
    time_lost_top: int = 10


def analyse_step(step: StepRecords, roofs: Optional[Mapping[RoofKey, Roof]] = None, *,
                 device: Optional[DeviceInfo] = None, options: AnalysisOptions = AnalysisOptions()) -> Analysis:
    """Join one step's counts with its measured times and place everything on the roofline.

    Args:
        step: the step's costs and timings (:class:`~torch_roofline.records.StepRecords`).
        roofs: ``(OpCost.dtype, OpCost.unit) -> Roof``; a missing key means no roof.
        device: the device section of the report; built from ``roofs`` when ``None``. Roofs
            in ``roofs`` that ``device.roofs`` lacks (a fallback roof) are added to it, so the
            report lists every roof it used with its numbers.
        options: the memory model, the overhead rule and the time-lost list's length.

    Returns:
        The :class:`~torch_roofline.records.Analysis` (:func:`torch_roofline.report.build.analyse`
        returns it as a :class:`~torch_roofline.report.RooflineReport`).

    Raises:
        ValueError: no op counted or timed, a bad ``steps`` / ``memory_model``, or a roof with
            a non-positive peak or bandwidth.
    """
    roofs = dict(roofs or {})
    _validate(step, roofs, options)
    measured = step.measured
    predicted = not measured if step.predicted is None else step.predicted
    if predicted:
        step = replace(step, op_timings=(), module_timings=(), step_time_s=None)
    info = {m.name: m for m in step.modules}

    groups = _group(step.costs, step.op_timings, step.steps)
    facts = {key: [_call_facts(c, roofs, options.memory_model) for c in g.calls] for key, g in groups.items()}
    ops = [_op_row(key, g, facts[key], info, step.steps, options, predicted) for key, g in groups.items()]
    op_by_key = {(r.name, r.phase, r.op): r for r in ops}

    ref_list: List[RoofRef] = []
    inclusive, self_ = _aggregate(groups, facts, op_by_key, ref_list)
    times = _module_times(step, predicted)
    rows = _module_rows(step, inclusive, self_, times, _module_calls(step), predicted, ref_list)

    totals = _totals(ops, rows, info, step, options.memory_model, predicted)
    roof_of = {RoofRef.of(r): r for r in roofs.values()}
    items = time_lost_items(rows, ops, roof_of, options.time_lost_top,
                             device_kind=device.kind if device is not None else None)
    return Analysis(
        model=step.model or (info[""].type if "" in info else "model"),
        predicted=predicted,
        memory_model=options.memory_model,
        steps=step.steps,
        device=_complete_device(device, roofs) if device is not None else _device_from_roofs(roofs),
        totals=totals,
        modules=tuple(rows),
        ops=tuple(ops),
        uncounted=_uncounted(ops),
        time_lost=items,
        notes=tuple(_notes(step.costs, ops, roofs, predicted, measured)),
        created=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        torch_version=step.torch_version if step.torch_version is not None else _imported_torch_version(),
    )


def _validate(step: StepRecords, roofs: Mapping[RoofKey, Roof], options: AnalysisOptions) -> None:
    if not step.costs and not step.op_timings:
        raise ValueError(
            "analyse: no op was counted or timed (costs and op_timings are both empty); did the "
            "model run inside the profiler, on inputs that reach it?"
        )
    steps, threshold, ratio = step.steps, options.overhead_threshold_s, options.overhead_ratio
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"analyse: steps must be an int >= 1 (the profiled steps), got {steps!r}")
    check_memory_model(options.memory_model, "analyse")
    if not (threshold >= 0 and ratio >= 1):
        raise ValueError(
            f"analyse: overhead_threshold_s must be >= 0 and overhead_ratio >= 1, got "
            f"{threshold!r} and {ratio!r} (defaults: {DEFAULT_OVERHEAD_THRESHOLD_S}, {DEFAULT_OVERHEAD_RATIO})"
        )
    for key, roof in roofs.items():
        ok = all(
            isinstance(v, (int, float)) and math.isfinite(v) and v > 0
            for v in (roof.peak_flops_per_s, roof.bandwidth_bytes_per_s)
        )
        if not ok:
            raise ValueError(
                f"analyse: the roof for {key!r} needs a finite positive peak and bandwidth, got "
                f"peak_flops_per_s={roof.peak_flops_per_s!r}, bandwidth_bytes_per_s="
                f"{roof.bandwidth_bytes_per_s!r}; fix the device entry or leave the key out (no roof)"
            )


def _group(costs, op_timings, steps) -> Dict[Tuple[str, str, str], _Group]:
    groups: Dict[Tuple[str, str, str], _Group] = {}
    for c in costs:
        groups.setdefault((c.module, c.phase, c.op), _Group()).calls.append(c)
    for t in op_timings:
        g = groups.setdefault(_join_key(groups, t), _Group())
        g.time_sum_s += t.time_s
        g.timed_events += t.calls
    return groups


def _join_key(groups: Mapping[Tuple[str, str, str], _Group], t: OpTiming) -> Tuple[str, str, str]:
    """The group a timed op joins: its own (module, phase, op), or, when only the counted
    step ran the op's in-place / out-of-place twin there (``add_`` vs ``add``), that twin.

    NB: autograd accumulates a gradient in place when it holds the only reference and out of
    place otherwise, so a replay on fake tensors (which the fake mode also references) can run
    ``add`` where the real backward ran ``add_``; the work and traffic are the same.
    """
    key = (t.module, t.phase, t.op)
    if key in groups and groups[key].calls:
        return key
    twin = t.op[:-1] if t.op.endswith("_") else t.op + "_"
    alt = (t.module, t.phase, twin)
    return alt if alt in groups and groups[alt].calls else key


def _call_facts(c: OpCost, roofs: Mapping[RoofKey, Roof], memory_model: str) -> _CallFacts:
    br, bw = c.bytes_under(memory_model)
    roof = roofs.get((c.dtype, c.unit))
    if not c.counted:
        rt = None
    elif c.flops == 0 and br + bw == 0:
        rt = 0.0
    elif roof is not None:
        rt = max(c.flops / roof.peak_flops_per_s, (br + bw) / roof.bandwidth_bytes_per_s)  # roofline_time()
    else:
        rt = None
    return _CallFacts(rt, roof, br, bw)


def _op_row(key, g: _Group, facts: List[_CallFacts], info, steps: int, options: AnalysisOptions,
            predicted: bool) -> OpRow:
    name, phase, op = key
    mod = info.get(name)
    calls = g.calls
    # one pass over the calls (the hot path of a report: one call per op call of the step)
    counted = bool(calls)
    flops = macs = comp = op_bytes = recompute = 0
    eager: Optional[int] = None
    for c in calls:
        counted = counted and c.counted
        flops += c.flops
        macs += c.macs
        comp += c.compulsory_bytes_read + c.compulsory_bytes_written
        op_bytes += c.bytes_read + c.bytes_written
        recompute += c.recompute
    if calls and calls[0].fused:
        eager = None if any(c.eager_bytes is None for c in calls) else sum(c.eager_bytes for c in calls)
    br = bw = 0
    rt: Optional[float] = 0.0
    roof_time: Dict[int, float] = {}  # id(roof) -> seconds (an int key hashes in C)
    roof_by_id: Dict[int, Roof] = {}
    for f in facts:
        br += f.bytes_read
        bw += f.bytes_written
        if f.roofline is None:
            rt = None
        elif rt is not None:
            rt += f.roofline
        if f.roof is not None:
            rid = id(f.roof)
            roof_by_id[rid] = f.roof
            roof_time[rid] = roof_time.get(rid, 0.0) + (f.roofline or 0.0)
    if not counted:
        flops = macs = None
        rt = None
    n_calls = len(calls) if calls else round(g.timed_events / steps)
    nbytes = br + bw
    time_s = None if predicted or not g.timed_events else g.time_sum_s / steps
    best = (dominant(roof_time) if len(roof_time) > 1 else next(iter(roof_time), None)) if rt is not None else None
    roof = roof_by_id[best] if best is not None else None
    dtypes = {c.dtype for c in calls}
    dtype = (next(iter(dtypes)) if len(dtypes) == 1 else dominant(Counter(c.dtype for c in calls))) if calls else None

    has_time = time_s is not None and time_s > 0
    return frozen_record(OpRow, {  # every field; the frozen __init__ is a hot-path cost
        "name": name,
        "op": op,
        "type": mod.type if mod else "",
        "phase": phase,
        "depth": module_depth(name),
        "calls": n_calls,
        "flops": flops,
        "macs": macs,
        "params": 0,
        "param_bytes": 0,
        "bytes_read": br,
        "bytes_written": bw,
        "compulsory_bytes": comp,
        "intensity": flops / nbytes if flops is not None and nbytes else None,
        "time_s": time_s,
        "achieved_flops_per_s": flops / time_s if has_time and flops is not None else None,
        "achieved_bytes_per_s": nbytes / time_s if has_time else None,
        "attainable_flops_per_s": flops / rt if rt and flops is not None else None,
        "roof": RoofRef.of(roof) if roof is not None else None,
        "dtype": dtype,
        "efficiency": efficiency(rt, time_s),
        "suspect": is_suspect(rt, time_s),
        "bound": (
            # a call with no work needs no roof: only the overhead rule can classify it
            bound(flops or 0, nbytes, roof.ridge if roof is not None else math.inf,
                  roofline_time_s=rt, time_s=time_s, calls=n_calls,
                  overhead_threshold_s=options.overhead_threshold_s,
                  overhead_ratio=options.overhead_ratio)
            if rt is not None and (roof is not None or rt == 0)
            else None
        ),
        "roofline_time_s": rt,
        "time_lost_s": time_lost(time_s, rt),
        "fusion_headroom": fusion_headroom(op_bytes, comp) if counted else None,
        "counted": counted,
        "recompute_calls": recompute,
        "eager_bytes": eager,
    })


def _aggregate(groups, facts, op_by_key, ref_list: List[RoofRef]):
    """Inclusive (via scope) and self (via module) sums per (module, phase).

    Each op row's calls are summed once per distinct scope (a row's calls share one almost
    always), and that sum is added to every module of the scope: O(calls + rows x depth).
    """
    inclusive: Dict[Tuple[str, str], _Acc] = defaultdict(_Acc)
    self_: Dict[Tuple[str, str], _Acc] = defaultdict(_Acc)
    chains: Dict[Tuple[Tuple[str, ...], str, str], _Acc] = {}  # (scope, module, phase): the calls with it
    refs: Dict[int, int] = {}  # id(roof) -> index in ref_list: accumulators key roofs by a small int
    for key, g in groups.items():
        row = op_by_key[key]
        if not row.counted:
            continue
        share_s = row.time_s / len(g.calls) if row.time_s is not None else None
        for c, f in zip(g.calls, facts[key]):
            ref = None
            if f.roof is not None:
                ref = refs.get(id(f.roof))
                if ref is None:
                    ref = refs[id(f.roof)] = len(ref_list)
                    ref_list.append(RoofRef.of(f.roof))
            where = (c.scope, c.module, c.phase)
            acc = chains.get(where)
            if acc is None:
                acc = chains[where] = _Acc()
            _add_call(acc, c, f, ref, row.bound, share_s)
    # each distinct call stack's sum goes to every module on it: O(calls + stacks x depth)
    for (scope, module, phase), acc in chains.items():
        for m in module_ancestry(scope, module):
            inclusive[(m, phase)].merge(acc)
        self_[(module, phase)].merge(acc)
    return inclusive, self_


def _add_call(acc: _Acc, c: OpCost, f: _CallFacts, ref, cls, share_s) -> None:
    acc.flops += c.flops
    acc.macs += c.macs
    acc.bytes_read += f.bytes_read
    acc.bytes_written += f.bytes_written
    acc.compulsory += c.compulsory_bytes_read + c.compulsory_bytes_written
    acc.op_bytes += c.bytes_read + c.bytes_written
    if c.fused:
        acc.fused += 1
        acc.eager = None if acc.eager is None or c.eager_bytes is None else acc.eager + c.eager_bytes
    elif acc.eager is not None:
        acc.eager += c.bytes_read + c.bytes_written
    if f.roofline is None:
        acc.missing += 1
        return
    acc.known += 1
    acc.roofline += f.roofline
    if ref is not None:
        acc.roof_time[ref] = acc.roof_time.get(ref, 0.0) + f.roofline
    if cls is not None:
        acc.class_roofline[cls] = acc.class_roofline.get(cls, 0.0) + f.roofline
        if share_s is not None:
            acc.class_time[cls] = acc.class_time.get(cls, 0.0) + share_s


_MOVED = {"analyse": "torch_roofline.analyse (torch_roofline.report.build.analyse)",
          "analyse_on": "torch_roofline.report.build.analyse_on"}


def __getattr__(name: str) -> Any:
    """Say where the report-returning functions went (they return a report, built after this stage)."""
    if name in _MOVED:
        raise AttributeError(f"torch_roofline.analysis.{name} moved to {_MOVED[name]}: it returns a RooflineReport, "
                             "built after the analysis; this stage's own function is analyse_step(StepRecords, roofs)")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
