"""Roofline math and the join of counts, timings and roofs into a :class:`RooflineReport`.

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

Bound rule (thresholds are parameters of :func:`bound` and :func:`analyse`):

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

Example::

    report = analyse(costs, op_timings, module_timings, modules, roofs, steps=5)
    print(report.table(top=10))
"""

from __future__ import annotations

import datetime as _dt
import math
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from torch_roofline._module_names import count_runs, module_ancestry, module_depth, op_runs
from torch_roofline._time_lost import _dominant, _time_lost_items
from torch_roofline.records import (BOUNDS, PHASES, BoundShare, DeviceInfo, ModuleInfo, ModuleRow, ModuleTiming, OpCost,
                                    OpRow, OpTiming, Roof, RoofRef, Totals, UncountedOp, check_memory_model, frozen_record)
from torch_roofline.report import RooflineReport

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
    "analyse",
    "op_runs",
]

DEFAULT_OVERHEAD_THRESHOLD_S = 10e-6
DEFAULT_OVERHEAD_RATIO = 2.0
RoofKey = Tuple[Optional[str], str]


# --------------------------------------------------------------------------------------------
# The math
# --------------------------------------------------------------------------------------------


def attainable(intensity: float, roof: Roof) -> float:
    """Attainable FLOP/s at ``intensity`` FLOP/B under ``roof``: min(peak, intensity x bandwidth).

    >>> attainable(10.0, Roof("fp32", "vector", 1e12, 1e11))  # min(1e12, 10 * 1e11)
    1000000000000.0
    """
    return roof.attainable(intensity)


def roofline_time(flops: float, bytes_: float, roof: Roof) -> float:
    """Seconds the roofs allow for ``flops`` FLOPs and ``bytes_`` bytes: max(F/peak, B/bw).

    >>> roofline_time(2e9, 1e6, Roof("fp32", "matrix", 1e12, 1e11))  # max(2 ms, 10 µs)
    0.002
    """
    return max(flops / roof.peak_flops_per_s, bytes_ / roof.bandwidth_bytes_per_s)


def efficiency(roofline_time_s: Optional[float], time_s: Optional[float]) -> Optional[float]:
    """``roofline_time_s / time_s`` (0-1 normally; > 1 means suspect); ``None`` when either is
    unknown or ``time_s`` is not positive."""
    if roofline_time_s is None or time_s is None or time_s <= 0:
        return None
    return roofline_time_s / time_s


def is_suspect(roofline_time_s: Optional[float], time_s: Optional[float]) -> bool:
    """True when the point lies above its roof: measured faster than the roofs allow.

    A zero measured time against a positive roofline time is suspect too.
    """
    if roofline_time_s is None or time_s is None:
        return False
    return roofline_time_s > time_s


def bound(
    flops: float,
    bytes_: float,
    ridge: Optional[float],
    *,
    roofline_time_s: Optional[float] = None,
    time_s: Optional[float] = None,
    calls: int = 1,
    overhead_threshold_s: float = DEFAULT_OVERHEAD_THRESHOLD_S,
    overhead_ratio: float = DEFAULT_OVERHEAD_RATIO,
) -> Optional[str]:
    """The bound class of an op or row by the rule in this module's docstring.

    Args:
        flops: FLOPs of the row; bytes_: its bytes (report memory model).
        ridge: ridge point of its roof in FLOP/B; ``None`` (no roof) gives ``None``.
        roofline_time_s: the row's roofline time in seconds (all calls).
        time_s: its measured time in seconds (all calls); ``None`` when predicted.
        calls: calls summed into the row (roofline time per call = roofline_time_s / calls).
        overhead_threshold_s, overhead_ratio: the overhead rule's thresholds.

    Returns:
        ``"compute"``, ``"memory"``, ``"overhead"`` or ``None``.

    >>> bound(1e3, 1e3, 10.0, roofline_time_s=1e-8, time_s=5e-6)  # tiny op, 500x its roof
    'overhead'
    """
    if ridge is None:
        return None
    if time_s is not None and roofline_time_s is not None and calls > 0:
        if roofline_time_s / calls < overhead_threshold_s and time_s > overhead_ratio * roofline_time_s:
            return "overhead"
    if bytes_ > 0:
        return "compute" if flops / bytes_ >= ridge else "memory"
    return "compute" if flops > 0 else None


def time_lost(time_s: Optional[float], roofline_time_s: Optional[float]) -> Optional[float]:
    """``time_s - roofline_time_s`` in seconds (negative for suspect rows); ``None`` if unknown."""
    if time_s is None or roofline_time_s is None:
        return None
    return time_s - roofline_time_s


def fusion_headroom(op_bytes: float, compulsory_bytes: float) -> Optional[float]:
    """Op traffic / compulsory traffic (>= 1 normally); ``None`` when compulsory is 0."""
    return op_bytes / compulsory_bytes if compulsory_bytes > 0 else None


# --------------------------------------------------------------------------------------------
# Accumulators (private, mutable while analysing; the report holds only frozen rows)
# --------------------------------------------------------------------------------------------


@dataclass
class _Acc:
    """Sums of counted op calls for one (module, phase), inclusive or self."""

    flops: int = 0
    macs: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    compulsory: int = 0
    op_bytes: int = 0
    eager: Optional[int] = 0  # eager bytes (None: a fused kernel's unknown)
    fused: int = 0  # fused kernel calls
    roofline: float = 0.0
    known: int = 0  # counted calls with a roofline time
    missing: int = 0  # counted calls without one (no roof)
    roof_time: Dict[int, float] = field(default_factory=dict)  # roof index (see _aggregate) -> seconds
    class_time: Dict[str, float] = field(default_factory=dict)
    class_roofline: Dict[str, float] = field(default_factory=dict)

    def merge(self, other: "_Acc") -> None:
        self.flops += other.flops
        self.macs += other.macs
        self.bytes_read += other.bytes_read
        self.bytes_written += other.bytes_written
        self.compulsory += other.compulsory
        self.op_bytes += other.op_bytes
        self.eager = None if self.eager is None or other.eager is None else self.eager + other.eager
        self.fused += other.fused
        self.roofline += other.roofline
        self.known += other.known
        self.missing += other.missing
        for mine, theirs in ((self.roof_time, other.roof_time), (self.class_time, other.class_time),
                             (self.class_roofline, other.class_roofline)):
            for k, v in theirs.items():
                mine[k] = mine.get(k, 0.0) + v

    @property
    def roofline_time_s(self) -> Optional[float]:
        return None if self.missing and not self.known else self.roofline


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


def analyse(
    costs: Sequence[OpCost],
    op_timings: Sequence[OpTiming] = (),
    module_timings: Sequence[ModuleTiming] = (),
    modules: Sequence[ModuleInfo] = (),
    roofs: Optional[Mapping[RoofKey, Roof]] = None,
    *,
    device: Optional[DeviceInfo] = None,
    steps: int = 1,
    memory_model: str = "op",
    step_time_s: Optional[float] = None,
    peak_memory_bytes: Optional[int] = None,
    activation_bytes: Optional[Mapping[str, int]] = None,
    module_calls: Optional[Mapping[Tuple[str, str], int]] = None,
    predicted: Optional[bool] = None,
    model: Optional[str] = None,
    torch_version: Optional[str] = None,
    overhead_threshold_s: float = DEFAULT_OVERHEAD_THRESHOLD_S,
    overhead_ratio: float = DEFAULT_OVERHEAD_RATIO,
    time_lost_top: int = 10,
) -> RooflineReport:
    """Join one step's counts with the measured times and place everything on the roofline.

    Args:
        costs: every aten op call of ONE step (:class:`OpCost`).
        op_timings: measured op calls summed over ``steps`` steps (empty when predicting).
        module_timings: measured module ranges, per (name, phase), summed over ``steps``.
            When empty but ``op_timings`` are given, module times are the sums of their ops.
        modules: every module, ``named_modules()`` order, root ``""`` first.
        roofs: ``(OpCost.dtype, OpCost.unit) -> Roof``; a missing key means no roof.
        device: the device section of the report; built from ``roofs`` when ``None``. Roofs
            in ``roofs`` that ``device.roofs`` lacks (a fallback roof) are added to it, so the
            report lists every roof it used with its numbers.
        steps: profiled steps the timings are summed over (times are divided by it).
        memory_model: ``"op"`` or ``"compulsory"``: the bytes used for roofline times and
            reported as ``bytes_read`` / ``bytes_written``.
        step_time_s: measured wall time of the ``steps`` profiled steps in seconds, summed
            like the timings (``TraceTiming.step_time_s``) and divided by ``steps`` here;
            default: the root module's time summed over phases (or the sum of op times when
            there are no module timings).
        peak_memory_bytes: the step's peak memory footprint in bytes, if known.
        activation_bytes: module name -> bytes of the outputs it keeps, if known.
        module_calls: (name, phase) -> calls per step; default: module timings' calls /
            ``steps``, else runs of consecutive op calls inside the module (a module called
            twice back to back, with no op in between, then counts once).
        predicted: default: True when there are no timings at all.
        model: class name of the root module; default: ``modules``' root type.
        torch_version: recorded in the report; default: the imported torch's, if any.
        overhead_threshold_s, overhead_ratio: the overhead rule (module docstring).
        time_lost_top: how many "where the time goes" items to keep.

    Returns:
        The :class:`RooflineReport`.

    Raises:
        ValueError: no op counted or timed, a bad ``steps`` / ``memory_model``, or a roof with
            a non-positive peak or bandwidth.
    """
    roofs = dict(roofs or {})
    _validate(costs, op_timings, module_timings, roofs, steps, memory_model, overhead_threshold_s, overhead_ratio)
    measured = bool(op_timings or module_timings)
    if predicted is None:
        predicted = not measured
    if predicted:
        op_timings, module_timings, step_time_s = (), (), None
    info = {m.name: m for m in modules}
    notes: List[str] = []

    groups = _group(costs, op_timings, steps)
    facts = {key: [_call_facts(c, roofs, memory_model) for c in g.calls] for key, g in groups.items()}
    ops = [
        _op_row(key, g, facts[key], info, steps, overhead_threshold_s, overhead_ratio, predicted)
        for key, g in groups.items()
    ]
    op_by_key = {(r.name, r.phase, r.op): r for r in ops}

    ref_list: List[RoofRef] = []
    inclusive, self_ = _aggregate(groups, facts, op_by_key, ref_list)
    times = _module_times(module_timings, op_timings, steps, predicted)
    calls = _module_calls(costs, op_timings, module_timings, module_calls, steps)
    rows = _module_rows(modules, inclusive, self_, times, calls, activation_bytes or {}, predicted, ref_list)

    totals = _totals(ops, rows, info, costs, memory_model, step_time_s, steps, peak_memory_bytes, predicted)
    roof_of = {RoofRef.of(r): r for r in roofs.values()}
    items = _time_lost_items(rows, ops, roof_of, time_lost_top, device_kind=device.kind if device is not None else None)
    notes += _notes(costs, ops, roofs, predicted, measured)

    return RooflineReport(
        model=model or (info[""].type if "" in info else "model"),
        predicted=predicted,
        memory_model=memory_model,
        steps=steps,
        device=_complete_device(device, roofs) if device is not None else _device_from_roofs(roofs),
        totals=totals,
        modules=tuple(rows),
        ops=tuple(ops),
        uncounted=_uncounted(ops),
        time_lost=items,
        notes=tuple(notes),
        created=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        torch_version=torch_version if torch_version is not None else _imported_torch_version(),
    )


def _validate(costs, op_timings, module_timings, roofs, steps, memory_model, threshold, ratio) -> None:
    if not costs and not op_timings:
        raise ValueError(
            "analyse: no op was counted or timed (costs and op_timings are both empty); did the "
            "model run inside the profiler, on inputs that reach it?"
        )
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"analyse: steps must be an int >= 1 (the profiled steps), got {steps!r}")
    check_memory_model(memory_model, "analyse")
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
    if memory_model == "compulsory":
        br, bw = c.compulsory_bytes_read, c.compulsory_bytes_written
    else:
        br, bw = c.bytes_read, c.bytes_written
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


def _op_row(key, g: _Group, facts: List[_CallFacts], info, steps, threshold, ratio, predicted) -> OpRow:
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
    best = (_dominant(roof_time) if len(roof_time) > 1 else next(iter(roof_time), None)) if rt is not None else None
    roof = roof_by_id[best] if best is not None else None
    dtypes = {c.dtype for c in calls}
    dtype = (next(iter(dtypes)) if len(dtypes) == 1 else _dominant(Counter(c.dtype for c in calls))) if calls else None

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
                  overhead_threshold_s=threshold, overhead_ratio=ratio)
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


@dataclass
class _Time:
    time_s: float = 0.0
    self_time_s: float = 0.0


def _module_times(module_timings, op_timings, steps, predicted) -> Dict[Tuple[str, str], _Time]:
    """Per-step inclusive and self time per (module, phase): module ranges, else op sums."""
    times: Dict[Tuple[str, str], _Time] = defaultdict(_Time)
    if predicted:
        return times
    if module_timings:
        for t in module_timings:
            acc = times[(t.name, t.phase)]
            acc.time_s += t.time_s / steps
            acc.self_time_s += t.self_time_s / steps
        return times
    for t in op_timings:
        for m in module_ancestry(tuple(t.scope), t.module):
            times[(m, t.phase)].time_s += t.time_s / steps
        times[(t.module, t.phase)].self_time_s += t.time_s / steps
    return times


def _module_calls(costs, op_timings, module_timings, module_calls, steps) -> Mapping[Tuple[str, str], int]:
    if module_calls is not None:
        return dict(module_calls)
    if module_timings:
        sums: Counter = Counter()
        for t in module_timings:
            sums[(t.name, t.phase)] += t.calls
        return {k: round(v / steps) for k, v in sums.items()}
    if costs:
        return count_runs((c.phase, c.index, module_ancestry(c.scope, c.module), 0) for c in costs)
    runs = op_runs(op_timings)
    return {k: round(v / steps) for k, v in runs.items()}


def _module_rows(modules, inclusive, self_, times, calls, activation, predicted, ref_list) -> List[ModuleRow]:
    names = [m.name for m in modules]
    known = set(names)
    for key in list(inclusive) + list(times) + list(calls):
        if key[0] not in known:  # ranges the model list lacks (e.g. unattributed work)
            known.add(key[0])
            names.append(key[0])
    info = {m.name: m for m in modules}
    rows: List[ModuleRow] = []
    for name in names:
        per_phase = []
        for phase in PHASES:
            key = (name, phase)
            if key in inclusive or key in times or calls.get(key):
                per_phase.append(phase)
        all_inc, all_self = _Acc(), _Acc()
        all_time: Optional[_Time] = None
        for phase in per_phase:
            key = (name, phase)
            inc, slf = inclusive.get(key, _Acc()), self_.get(key, _Acc())
            t = times.get(key)
            rows.append(_module_row(name, phase, info.get(name), inc, slf, t, calls.get(key, 0),
                                    activation.get(name), predicted, ref_list))
            all_inc.merge(inc)
            all_self.merge(slf)
            if t is not None:
                all_time = all_time or _Time()
                all_time.time_s += t.time_s
                all_time.self_time_s += t.self_time_s
        all_calls = max((calls.get((name, p), 0) for p in per_phase), default=0)
        rows.append(_module_row(name, "all", info.get(name), all_inc, all_self, all_time, all_calls,
                                activation.get(name), predicted, ref_list))
    return rows


def _module_row(
    name, phase, mod, inc: _Acc, slf: _Acc, t: Optional[_Time], calls, activation, predicted,
    ref_list: Sequence[RoofRef] = (),
) -> ModuleRow:
    rt = inc.roofline_time_s
    self_rt = slf.roofline_time_s
    time_s = None if predicted or t is None else t.time_s
    self_time_s = None if predicted or t is None else t.self_time_s
    nbytes = inc.bytes_read + inc.bytes_written
    has_time = time_s is not None and time_s > 0
    measured_share = inc.class_time if any(v > 0 for v in inc.class_time.values()) else None
    share = measured_share if measured_share is not None and not predicted else inc.class_roofline
    cls = _dominant(share, BOUNDS) if any(v > 0 for v in share.values()) else None
    return frozen_record(ModuleRow, {  # every field; the frozen __init__ is a hot-path cost
        "name": name,
        "type": mod.type if mod else "",
        "phase": phase,
        "depth": module_depth(name),
        "calls": calls,
        "flops": inc.flops,
        "macs": inc.macs,
        "params": mod.params if mod else 0,
        "param_bytes": mod.param_bytes if mod else 0,
        "bytes_read": inc.bytes_read,
        "bytes_written": inc.bytes_written,
        "compulsory_bytes": inc.compulsory,
        "intensity": inc.flops / nbytes if nbytes else None,
        "time_s": time_s,
        "self_time_s": self_time_s,
        "achieved_flops_per_s": inc.flops / time_s if has_time else None,
        "achieved_bytes_per_s": nbytes / time_s if has_time else None,
        "attainable_flops_per_s": inc.flops / rt if rt else None,
        "roof": ref_list[_dominant(inc.roof_time)] if inc.roof_time else None,
        "efficiency": efficiency(rt, time_s),
        "suspect": is_suspect(rt, time_s),
        "bound": cls,
        "roofline_time_s": rt,
        "time_lost_s": time_lost(time_s, rt),
        "self_roofline_time_s": self_rt,
        "self_time_lost_s": time_lost(self_time_s, self_rt),
        "fusion_headroom": fusion_headroom(inc.op_bytes, inc.compulsory),
        "activation_bytes": activation,
        "eager_bytes": inc.eager if inc.fused else None,
    })


def _totals(ops, rows, info, costs, memory_model, step_time_s, steps, peak_memory_bytes, predicted) -> Totals:
    counted_costs = [c for c in costs if c.counted]
    compulsory = memory_model == "compulsory"
    known_rt = [r.roofline_time_s for r in ops if r.roofline_time_s is not None]
    rt = sum(known_rt) if known_rt or not ops else None
    if predicted:
        time_s = None
    elif step_time_s is not None:
        time_s = step_time_s / steps
    else:
        root = next((r for r in rows if r.name == "" and r.phase == "all"), None)
        time_s = root.time_s if root is not None and root.time_s is not None else None
        if time_s is None:
            timed = [r.time_s for r in ops if r.time_s is not None]
            time_s = sum(timed) if timed else None
    counted_time = sum(r.time_s for r in ops if r.counted and r.time_s is not None)
    op_time = sum(r.time_s for r in ops if r.time_s is not None) if not predicted else None
    root_info = info.get("")
    return Totals(
        time_s=time_s,
        roofline_time_s=rt,
        time_lost_s=time_lost(time_s, rt),
        efficiency=efficiency(rt, time_s),
        coverage=counted_time / op_time if op_time else None,
        flops=sum(c.flops for c in counted_costs),
        macs=sum(c.macs for c in counted_costs),
        params=root_info.params if root_info else 0,
        param_bytes=root_info.param_bytes if root_info else 0,
        bytes_read=sum(c.compulsory_bytes_read if compulsory else c.bytes_read for c in counted_costs),
        bytes_written=sum(c.compulsory_bytes_written if compulsory else c.bytes_written for c in counted_costs),
        compulsory_bytes=sum(c.compulsory_bytes_read + c.compulsory_bytes_written for c in counted_costs),
        peak_memory_bytes=peak_memory_bytes,
        bound_time_share=_bound_share(ops, predicted),
        op_time_s=op_time,
        eager_bytes=_eager_total(counted_costs),
    )


def _eager_total(costs: Sequence[OpCost]) -> Optional[int]:
    """Eager bytes of the step's counted calls (a fused kernel's its ops' eager traffic, any
    other op's its op bytes); ``None`` without fused kernels or when one's is unknown."""
    if not any(c.fused for c in costs):
        return None
    total = 0
    for c in costs:
        if c.fused and c.eager_bytes is None:
            return None
        total += c.eager_bytes if c.fused else c.bytes_read + c.bytes_written
    return total


def _bound_share(ops: Sequence[OpRow], predicted: bool) -> BoundShare:
    weights = dict.fromkeys(BOUNDS, 0.0)
    for r in ops:
        w = r.roofline_time_s if predicted else r.time_s
        if r.bound is not None and w is not None:
            weights[r.bound] += w
    total = sum(weights.values())
    if total <= 0:
        return BoundShare()
    return BoundShare(**{k: v / total for k, v in weights.items()})


def _uncounted(ops: Sequence[OpRow]) -> Tuple[UncountedOp, ...]:
    calls: Counter = Counter()
    times: Dict[str, Optional[float]] = {}
    for r in ops:
        if r.counted:
            continue
        calls[r.op] += r.calls
        if r.time_s is not None:
            times[r.op] = (times.get(r.op) or 0.0) + r.time_s
        else:
            times.setdefault(r.op, None)
    items = [UncountedOp(op, calls[op], times[op]) for op in calls]
    items.sort(key=lambda u: (-(u.time_s or 0.0), -u.calls, u.op))
    return tuple(items)


# --------------------------------------------------------------------------------------------
# Notes and the device section
# --------------------------------------------------------------------------------------------


def _notes(costs, ops, roofs, predicted, measured) -> List[str]:
    notes = []
    missing: Counter = Counter()
    for c in costs:
        if c.counted and (c.dtype, c.unit) not in roofs and (c.flops or c.bytes_read or c.bytes_written):
            missing[(c.dtype, c.unit)] += 1
    for (dtype, unit), n in sorted(missing.items(), key=lambda kv: str(kv[0])):
        notes.append(
            f"no roof for dtype {dtype!r} on the {unit} unit: {n} op call(s) have no roofline time, "
            f"efficiency or bound (the device has no such roof; module sums leave them out)"
        )
    if measured and not predicted:
        # rows with no work (views, detach: 0 FLOPs, 0 bytes) have nothing to time: not worth a note
        untimed = [r for r in ops if r.counted and r.time_s is None and (r.flops or r.bytes_read or r.bytes_written)]
        if untimed:
            ex = ", ".join(f"{r.op} in {r.name or 'the root'!r}" for r in untimed[:3])
            notes.append(
                f"{len(untimed)} counted op row(s) have no measured time (not found in the "
                f"timings), e.g. {ex}"
            )
        suspect = [r for r in ops if r.suspect]
        if suspect:
            notes.append(_suspect_note(suspect))
    return notes


def _suspect_note(suspect: Sequence[OpRow]) -> str:
    """Why op rows can lie above their roof, with the causes that fit these rows only."""
    causes = ["check the roof (dtype, unit, measured vs datasheet) or the timing"]
    if any(r.bound == "memory" for r in suspect):
        causes.append("a memory-bound op whose data stayed in cache can beat the DRAM bandwidth roof")
    if any(r.roof is not None and r.roof.source == "measured" for r in suspect):
        causes.append(
            "a measured roof taken while the machine was busy is too low: measure it again "
            "(`torch-roofline bench --refresh`, `devices.measure(refresh=True)`)"
        )
    return (
        f"{len(suspect)} op row(s) lie above their roof (efficiency > 100%, flagged suspect): "
        + "; ".join(causes)
    )


def _complete_device(device: DeviceInfo, roofs: Mapping[RoofKey, Roof]) -> DeviceInfo:
    extra = tuple(r for r in dict.fromkeys(roofs.values()) if r not in device.roofs)
    return replace(device, roofs=tuple(device.roofs) + extra) if extra else device


def _device_from_roofs(roofs: Mapping[RoofKey, Roof]) -> DeviceInfo:
    unique = tuple(dict.fromkeys(roofs.values()))
    sources = {r.source for r in unique}
    bandwidths = {r.bandwidth_bytes_per_s for r in unique}
    return DeviceInfo(
        id="unknown",
        name="unknown device",
        source=sources.pop() if len(sources) == 1 else "mixed",
        memory_bandwidth=bandwidths.pop() if len(bandwidths) == 1 else None,
        roofs=unique,
    )


def _imported_torch_version() -> Optional[str]:
    torch = sys.modules.get("torch")
    return getattr(torch, "__version__", None) if torch is not None else None
