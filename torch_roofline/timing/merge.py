"""Adding up the parts of a trace read a few steps at a time (:mod:`torch_roofline.timing.segments`).

Each part is attributed and counted like a whole trace; what a report needs of it is kept,
summed, and the rest dropped before the next part is read:

- :class:`TimingSum`: the parts' :class:`~torch_roofline.timing.attribution.TraceTiming`
  added up. Op calls of one (module, scope, phase, op) become one row whose ``calls``,
  times and kernels are the sums (the report groups them so anyway: see
  :func:`~torch_roofline.analysis.analyse_step`), module rows are summed per (module, phase),
  step times and steps added, the peak memory the largest part's. The device's busy time is
  the parts' busy times added (a part's kernels that still ran when the next part's began
  would count twice; the parts are cut between steps, where a training loop waits for its
  device).
- :class:`StepCosts`: :func:`~torch_roofline.timing.shapes.per_step` over the parts: for
  each (module, phase, op), the first step's calls when every step ran calls of the same
  FLOPs, MACs and bytes, else every call averaged over the steps. Only the first step's calls
  and the uneven ops' calls are kept, so memory grows with the distinct calls. When an op's
  calls first differ at step ``k``, the ``k`` steps before it (equal to the first in every
  sum) are taken as copies of the first step's calls: the sums are exact, the split between
  calls is the first step's.
- :class:`ShapeSum`: the parts' :class:`~torch_roofline.timing.shapes.ShapeCosts` notes,
  from their counts.
"""

from __future__ import annotations

import dataclasses
import math
import operator
from collections import Counter
from dataclasses import dataclass
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from torch_roofline._module_names import op_runs
from torch_roofline.records import ModuleTiming, OpCost
from torch_roofline.timing.attribution import DeviceActivity, TraceTiming, merged_spans
from torch_roofline.timing.compiled import CompiledCode, CompiledRegion
from torch_roofline.timing.shapes import ShapeCosts, ShapeTally, _scaled, _sums, reason_lines

__all__ = ["TimingSum", "PartCosts", "part_costs", "StepCosts", "ShapeSum", "add_compiled", "CallShare", "BusyUnion"]

_OpKey = Tuple[str, Tuple[str, ...], str, str, bool]
_CostKey = Tuple[str, str, str]
_ZERO = (0, 0, 0, 0, 0, 0, 0)


class TimingSum:
    """The :class:`TraceTiming` of parts of one trace, added up (module docstring)."""

    def __init__(self) -> None:
        self._ops: Dict[_OpKey, List] = {}  # key -> [first row, time, cpu time, device time, kernels, calls]
        self._modules: Dict[Tuple[str, str, Tuple[str, ...]], List] = {}  # -> [calls, time, self time]
        self.runs: Counter = Counter()
        self.step_time_s = 0.0
        self.steps = 0
        self.on_device = False
        self.device_name: Optional[str] = None
        self.device = None
        self.device_busy_s: Optional[float] = None
        self.peak_memory_bytes: Optional[int] = None
        self.unattributed: List[DeviceActivity] = []
        self.compile_time_s = 0.0

    def add(self, timing: TraceTiming, runs: bool = False,
            continues: Optional[Dict[Tuple[str, int], frozenset]] = None) -> None:
        """Add one part's timing (or one slice's of a long step). ``runs``: also count the
        module calls the op rows make (:func:`~torch_roofline._module_names.op_runs`), for a trace
        without module ranges; ``continues``: its ``prev`` for slices read in order (a run of
        ops across two slices is one call)."""
        ops = self._ops
        for t in timing.ops:
            key = (t.module, t.scope, t.phase, t.op, t.recompute)
            acc = ops.get(key)
            if acc is None:
                ops[key] = [t, t.time_s, t.cpu_time_s, t.device_time_s, t.kernels, t.calls]
            else:
                acc[1] += t.time_s
                acc[2] += t.cpu_time_s
                acc[3] += t.device_time_s
                acc[4] += t.kernels
                acc[5] += t.calls
        for m in timing.modules:
            acc = self._modules.setdefault((m.name, m.phase, m.scope), [0, 0.0, 0.0])
            acc[0] += m.calls
            acc[1] += m.time_s
            acc[2] += m.self_time_s
        if runs:
            self.runs.update(op_runs(timing.ops, continues))
        self.step_time_s += timing.step_time_s
        self.steps += timing.steps
        self.on_device = self.on_device or timing.on_device
        self.device_name = self.device_name or timing.device_name
        self.device = self.device or timing.device
        if timing.device_busy_s is not None:
            self.device_busy_s = (self.device_busy_s or 0.0) + timing.device_busy_s
        if timing.peak_memory_bytes is not None:
            self.peak_memory_bytes = max(self.peak_memory_bytes or 0, timing.peak_memory_bytes)
        self.unattributed.extend(timing.unattributed)
        self.compile_time_s += timing.compile_time_s

    def add_calls(self, calls: Mapping[Tuple[str, str], Tuple[Tuple[str, ...], int]]) -> None:
        """Add module calls counted apart from the timings added: ``(module, phase) -> (scope,
        calls)`` (a long step's, counted at its end:
        :meth:`~torch_roofline.timing.attribution.SliceCarry.calls`)."""
        for (name, phase), (scope, n) in calls.items():
            self._modules.setdefault((name, phase, tuple(scope)), [0, 0.0, 0.0])[0] += n

    def result(self) -> TraceTiming:
        """The summed timing: one op row per (module, scope, phase, op), one module row per
        (module, phase, scope); no per-event fields (``activities``, ``row_events``)."""
        ops = tuple(dataclasses.replace(first, time_s=time_s, cpu_time_s=cpu_s, device_time_s=device_s,
                                        kernels=kernels, calls=calls)
                    for first, time_s, cpu_s, device_s, kernels, calls in self._ops.values())
        modules = tuple(ModuleTiming(name, phase, calls, time_s, self_s, scope)
                        for (name, phase, scope), (calls, time_s, self_s) in self._modules.items())
        return TraceTiming(ops=ops, modules=modules, step_time_s=self.step_time_s, steps=max(self.steps, 1),
                           on_device=self.on_device, device_name=self.device_name, device=self.device,
                           activities=(), unattributed=tuple(self.unattributed), device_busy_s=self.device_busy_s,
                           peak_memory_bytes=self.peak_memory_bytes, compile_time_s=self.compile_time_s)


@dataclass(frozen=True)
class PartCosts:
    """One part's op costs, as :class:`StepCosts` needs them (:func:`part_costs`).

    Attributes:
        steps: steps in the part.
        sums: ``(module, phase, op)`` -> per step, the calls' (count, FLOPs, MACs, bytes read,
            bytes written, compulsory read, compulsory written).
        first: ``(module, phase, op)`` -> its calls in the part's first step.
        chunks: ``(module, phase, op)`` -> its calls step by step, for the ops whose steps
            differ within the part (the others' steps are all like the first).
        last_index: the largest call index in the part (-1: no call).
    """

    steps: int
    sums: Mapping[_CostKey, Tuple[Tuple[int, ...], ...]]
    first: Mapping[_CostKey, List[OpCost]]
    chunks: Mapping[_CostKey, List[List[OpCost]]]
    last_index: int


class BusyUnion:
    """The device's busy time (seconds) over the slices of one step: the union of their device
    intervals, as a whole read takes it. A slice's kernels may still run, on another stream,
    while the next slice's run, so the slices' own unions do not add up. Intervals are added
    slice by slice; :meth:`settle` totals those that end before a time no later slice's
    activity can start before (it is launched after the slice's end), so only the intervals
    still running at a cut are held."""

    #: Slack (seconds) for host and device clocks: intervals are settled this long before a cut.
    SKEW_S = 1e-3

    def __init__(self) -> None:
        self.total_s = 0.0
        self._open: List[Tuple[float, float]] = []

    def add(self, intervals: Iterable[Tuple[float, float]]) -> None:
        """Add (start, end) intervals in seconds."""
        self._open.extend(intervals)

    def settle(self, cut_s: float) -> None:
        """Total the merged intervals ending before ``cut_s`` less :data:`SKEW_S`; keep the rest."""
        keep: List[Tuple[float, float]] = []
        for lo, hi in merged_spans(self._open):
            if hi <= cut_s - self.SKEW_S:
                self.total_s += hi - lo
            else:
                keep.append((lo, hi))
        self._open = keep

    def result(self) -> float:
        """The union's length in seconds."""
        return self.total_s + sum(hi - lo for lo, hi in merged_spans(self._open))


#: An op call's fields but its index: calls equal in all of them are the same call, repeated.
_CALL_FIELDS = operator.attrgetter(*(f.name for f in dataclasses.fields(OpCost) if f.name != "index"))


class CallShare:
    """Identical op calls as one record: :meth:`shared` gives back, for a call equal in every
    field but its index to one seen before, that earlier record (whose index is the earlier
    call's), so a step's repeated calls (the same layer's op in every micro-batch or layer)
    take a reference each, not a record: memory grows with the distinct calls. Sums,
    counts and the report's rows are those of the calls given (nothing reads a call's
    index after the costs are summed per step but their order)."""

    def __init__(self) -> None:
        self._seen: Dict[tuple, OpCost] = {}

    def shared(self, costs: Iterable[OpCost]) -> List[OpCost]:
        """``costs``, each a record seen before where one is equal to it."""
        seen = self._seen
        out = []
        for c in costs:
            key = _CALL_FIELDS(c)
            known = seen.get(key)
            if known is None:
                seen[key] = known = c
            out.append(known)
        return out


def part_costs(costs: Sequence[OpCost], step_of: Sequence[int], steps: int) -> PartCosts:
    """A part's costs (``costs[i]`` ran in the part's step ``step_of[i]``, 0-based, of
    ``steps``) summed per step, the first step's calls kept."""
    by_key: Dict[_CostKey, List[List[OpCost]]] = {}
    for c, k in zip(costs, step_of):
        chunks = by_key.get((c.module, c.phase, c.op))
        if chunks is None:
            chunks = by_key[(c.module, c.phase, c.op)] = [[] for _ in range(steps)]
        chunks[min(max(k, 0), steps - 1)].append(c)
    sums = {key: tuple(_sums(ch) for ch in chunks) for key, chunks in by_key.items()}
    uneven = {key: chunks for key, chunks in by_key.items() if any(x != sums[key][0] for x in sums[key][1:])}
    return PartCosts(steps, sums, {key: chunks[0] for key, chunks in by_key.items()}, uneven,
                     max((c.index for c in costs), default=-1))


class StepCosts:
    """:func:`~torch_roofline.timing.shapes.per_step` over the parts of a trace (module
    docstring): add each part's :class:`PartCosts` in time order, then take :meth:`result`."""

    def __init__(self) -> None:
        self.steps = 0
        self._first: Dict[_CostKey, List[OpCost]] = {}
        self._ref: Dict[_CostKey, Tuple[int, ...]] = {}
        self._uneven: Dict[_CostKey, List[OpCost]] = {}
        self._index_offset = 0

    def add(self, part: PartCosts) -> None:
        """Add the next part's costs."""
        if part.steps < 1:
            return
        offset = self._index_offset
        empty = (_ZERO,) * part.steps
        for key in list(self._ref) + [k for k in part.sums if k not in self._ref]:
            sums = part.sums.get(key, empty)
            chunks = part.chunks.get(key)
            for j, step_sums in enumerate(sums):
                step = self.steps + j
                calls = chunks[j] if chunks is not None else part.first.get(key, [])
                if step == 0:
                    self._first[key], self._ref[key] = calls, step_sums
                    continue
                if key not in self._ref:  # first seen after the first step: absent from it
                    self._first[key], self._ref[key] = [], _ZERO
                uneven = self._uneven.get(key)
                if uneven is not None:
                    uneven.extend(_shifted(calls, offset))
                elif step_sums != self._ref[key]:
                    self._uneven[key] = self._first[key] * step + _shifted(calls, offset)
        self.steps += part.steps
        self._index_offset = offset + 1 + part.last_index

    def result(self) -> Tuple[Tuple[OpCost, ...], Tuple[str, ...]]:
        """``(costs of one average step, notes)``, as :func:`per_step` returns them."""
        steps = max(self.steps, 1)
        if steps == 1:
            return tuple(c for calls in self._first.values() for c in calls), ()
        keep: List[OpCost] = []
        uneven: List[str] = []
        for key, first in self._first.items():
            calls = self._uneven.get(key)
            if calls is None:
                keep += first
            else:
                uneven.append(key[2])
                keep += [_scaled(c, steps) for c in calls]
        keep.sort(key=lambda c: (c.phase, c.index))
        notes = (f"ops whose calls differ between the {steps} profiled steps ({', '.join(sorted(set(uneven)))}): "
                 "their counts are averaged over the steps",) if uneven else ()
        return tuple(keep), notes


def _shifted(calls: List[OpCost], offset: int) -> List[OpCost]:
    """The calls with their indices moved past the earlier parts' (the parts number from 0)."""
    return [dataclasses.replace(c, index=c.index + offset) for c in calls] if offset else calls


class ShapeSum:
    """The notes of the parts' :class:`ShapeCosts`, from their counts."""

    def __init__(self) -> None:
        self.reasons: Counter = Counter()
        self.tally = ShapeTally()

    def add(self, shaped: ShapeCosts) -> None:
        """Add one part's counts."""
        self.reasons.update(shaped.reasons)
        self.tally = self.tally + shaped.tally

    def merge(self, other: "ShapeSum") -> None:
        """Add another sum's counts (a part read in another process)."""
        self.reasons.update(other.reasons)
        self.tally = self.tally + other.tally

    def summary(self) -> Tuple[str, ...]:
        """As :meth:`ShapeCosts.summary` of the whole trace."""
        return self.tally.notes() + reason_lines(self.reasons)


def add_compiled(a: Optional[CompiledCode], b: CompiledCode) -> CompiledCode:
    """Two parts' :class:`CompiledCode` as one: frames' calls and times added, versions and
    recompiled ids in order of first appearance, a frame's module kept when both agree."""
    if a is None:
        return b
    regions: Dict[str, CompiledRegion] = {r.frame: r for r in a.regions}
    for r in b.regions:
        known = regions.get(r.frame)
        if known is None:
            regions[r.frame] = r
            continue
        regions[r.frame] = CompiledRegion(
            r.frame, tuple(dict.fromkeys(known.versions + r.versions)), known.calls + r.calls,
            math.fsum((known.time_s, r.time_s)), known.module if known.module == r.module else None)
    return CompiledCode(tuple(regions.values()), a.region_calls + b.region_calls, a.kernel_calls + b.kernel_calls,
                        tuple(dict.fromkeys(a.recompiled + b.recompiled)), a.on_device or b.on_device)
