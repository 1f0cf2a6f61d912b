"""Module rows of the analysis: each module's measured times per phase, its calls, and its
inclusive and self sums placed on the roofline (:func:`~torch_roofline.analysis.analyse_step`).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from torch_roofline._module_names import count_runs, module_ancestry, module_depth, op_runs
from torch_roofline.analysis.time_lost import dominant
from torch_roofline.records import BOUNDS, PHASES, ModuleRow, RoofRef, StepRecords, frozen_record
from torch_roofline.analysis.roofline import efficiency, fusion_headroom, is_suspect, time_lost


# Accumulators (private, mutable while analysing; the report holds only frozen rows).
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
class _Time:
    time_s: float = 0.0
    self_time_s: float = 0.0


def _module_times(step: StepRecords, predicted: bool) -> Dict[Tuple[str, str], _Time]:
    """Per-step inclusive and self time per (module, phase): module ranges, else op sums."""
    times: Dict[Tuple[str, str], _Time] = defaultdict(_Time)
    if predicted:
        return times
    module_timings, op_timings, steps = step.module_timings, step.op_timings, step.steps
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


def _module_calls(step: StepRecords) -> Mapping[Tuple[str, str], int]:
    """Calls per step of each (module, phase) (see :class:`~torch_roofline.records.StepRecords`)."""
    costs, op_timings, module_timings, steps = step.costs, step.op_timings, step.module_timings, step.steps
    if step.module_calls is not None:
        return dict(step.module_calls)
    if module_timings:
        sums: Counter = Counter()
        for t in module_timings:
            sums[(t.name, t.phase)] += t.calls
        return {k: round(v / steps) for k, v in sums.items()}
    if costs:
        return count_runs((c.phase, c.index, module_ancestry(c.scope, c.module), 0) for c in costs)
    runs = op_runs(op_timings)
    return {k: round(v / steps) for k, v in runs.items()}


def _module_rows(step: StepRecords, inclusive, self_, times, calls, predicted: bool, ref_list) -> List[ModuleRow]:
    modules, activation = step.modules, step.activation_bytes or {}
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
    cls = dominant(share, BOUNDS) if any(v > 0 for v in share.values()) else None
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
        "roof": ref_list[dominant(inc.roof_time)] if inc.roof_time else None,
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
