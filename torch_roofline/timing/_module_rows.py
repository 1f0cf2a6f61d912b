"""Module rows of a trace's attribution: each module's inclusive and self time per phase, its
calls, and the root rows that make the self times sum to the step (CPU traces from the host
timeline, GPU traces from the device activity under each range).
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from typing import Dict, List, Mapping, Optional, Sequence, Set, Tuple

from torch_roofline.records import OUTSIDE, ModuleTiming, OpTiming
from torch_roofline.timing.ranges import parse_range_name
from torch_roofline.timing.timeline import (_LAUNCH_KINDS, _NOT_FORWARD, _OUTSIDE_SCOPE, _ROOT_SCOPE, DeviceActivity,
                                            HostTimeline, SliceCarry, _Node, _phase_markers, _rooted, _union_length)

#: The attribution's logger (these rows are part of its work).
_log = logging.getLogger("torch_roofline.timing.attribution")


# --------------------------------------------------------------------------- module rows


class _Acc:
    """Per (module, phase) accumulator."""

    __slots__ = ("time", "self_time", "calls", "scope", "range_ids")

    def __init__(self, scope: Tuple[str, ...]) -> None:
        self.time: List[float] = []
        self.self_time: List[float] = []
        self.calls = 0
        self.scope = scope
        self.range_ids: Set[int] = set()


def _scope_of(fqn: str, scope: Tuple[str, ...]) -> Tuple[str, ...]:
    return scope[: scope.index(fqn) + 1] if fqn in scope else _ROOT_SCOPE


def _forward_ranges(timeline: HostTimeline) -> List[_Node]:
    return [n for n in timeline.order
            if n.ranges and n.ranges[-1] == n.event.index and n.mark not in _NOT_FORWARD]


def _finish(accs: Mapping[Tuple[str, str], _Acc], root_rows: Mapping[str, Tuple[float, float, int]],
            steps: int, carry: Optional[SliceCarry] = None) -> List[ModuleTiming]:
    """Module rows; a backward row's calls are the forward calls whose backward it ran (in a
    slice, those not counted by the slices before it: ``carry``), or once per step when no
    forward range is known (the loss's backward, outside every module)."""
    rows: List[ModuleTiming] = []
    for phase in ("forward", "backward", "optimizer"):
        if phase in root_rows:
            time_s, self_s, calls = root_rows[phase]
            rows.append(ModuleTiming("", phase, calls, time_s, self_s, _ROOT_SCOPE))
        for (name, p), acc in accs.items():
            if p != phase or name == "":
                continue
            if phase == "forward" and name != OUTSIDE:
                calls = acc.calls
            elif phase == "forward":
                calls = _calls(0, (name, phase), acc.scope, steps, carry)
            else:
                ids = acc.range_ids
                if carry is not None and ids:  # the forward calls not met in the slices before
                    seen = carry.backward_calls.setdefault(name, set())
                    ids = ids - seen
                    seen |= acc.range_ids
                calls = _calls(len(ids), (name, phase), acc.scope, max(steps, 1), carry)
            rows.append(ModuleTiming(name, phase, calls, math.fsum(acc.time),
                                     math.fsum(acc.self_time), acc.scope))
    return rows


def _top_level_sum(accs: Mapping[Tuple[str, str], _Acc], phase: str) -> float:
    return math.fsum(math.fsum(a.time) for (name, p), a in accs.items()
                     if p == phase and name != "" and len(a.scope) == 2)


def _root_forward(step_time_s: float, other_self_s: float, top_level_s: float, whole: bool = True
                  ) -> Tuple[float, float]:
    """The root's forward (time, self time): the step's time less every other row's self time.
    ``whole``: the trace is a whole step (not one slice of it, whose share may be negative
    while the step's sum is not: :func:`root_forward_floor` takes the step's)."""
    self_s = step_time_s - other_self_s
    if self_s < 0.0 and whole:
        _log.warning(
            "measured module time exceeds the step's wall time by %.3g s (overlapping "
            "streams or threads); the root's forward self time is reported as 0.", -self_s)
        self_s = 0.0
    return self_s + top_level_s, self_s


def _cpu_module_rows(timeline: HostTimeline, steps: int, step_time_s: float,
                     ops: Sequence[OpTiming], carry: Optional[SliceCarry] = None) -> List[ModuleTiming]:
    accs: Dict[Tuple[str, str], _Acc] = {}
    outside = [op.time_s for op in ops if op.phase == "forward" and op.module == OUTSIDE]
    if outside:  # no range of its own: the time of its ops, once per step
        acc = accs[(OUTSIDE, "forward")] = _Acc(_OUTSIDE_SCOPE)
        acc.time, acc.self_time, acc.calls = list(outside), list(outside), steps
    child_time: Dict[int, float] = defaultdict(float)
    ranges = _forward_ranges(timeline)
    for node in ranges:
        if len(node.ranges) > 1:  # a module range's ranges end with itself: [-2] is its parent range
            child_time[node.ranges[-2]] += node.event.dur_s
    root_calls = 0
    for node in ranges:
        scope = _rooted(node.scope)
        fqn = scope[-1]
        counted = timeline.counted(node)
        if fqn == "":
            root_calls += counted
            continue
        acc = accs.setdefault((fqn, "forward"), _Acc(scope))
        acc.calls += counted
        acc.time.append(node.event.dur_s)
        acc.self_time.append(node.event.dur_s - child_time[node.event.index])

    engine = _phase_markers(timeline, "backward")
    for node in engine:
        if node.event.kind != "cpu_op" or node.engine_depth != 1:
            continue  # phase ranges and nested (reentrant) engine events
        _, scope, range_ids = timeline.context(node)
        _add_backward(accs, scope, range_ids, node.event.dur_s)
    bwd_wall = _union_length((n.event.start_s, n.event.end_s) for n in engine)
    opt_markers = _phase_markers(timeline, "optimizer")
    # The optimizer's own time: its marks' span less the forward/backward work run inside them.
    opt_wall = max(0.0, _union_length((n.event.start_s, n.event.end_s) for n in opt_markers)
                   - _union_length(timeline.in_optimizer))

    root_rows: Dict[str, Tuple[float, float, int]] = {}
    other_self = 0.0
    if engine:
        bwd_self = bwd_wall - _top_level_sum(accs, "backward")
        root_rows["backward"] = (bwd_wall, bwd_self, _count_calls(timeline, engine, "backward", steps, carry))
        other_self += bwd_self
    if opt_markers:
        root_rows["optimizer"] = (opt_wall, opt_wall, _count_calls(timeline, opt_markers, "optimizer", steps, carry))
        other_self += opt_wall
    other_self += math.fsum(math.fsum(a.self_time) for a in accs.values())
    fwd_time, fwd_self = _root_forward(step_time_s, other_self, _top_level_sum(accs, "forward"), carry is None)
    root_rows["forward"] = (fwd_time, fwd_self, _calls(root_calls, ("", "forward"), _ROOT_SCOPE, steps, carry))
    return _finish(accs, root_rows, steps, carry)


def root_forward_floor(modules: Sequence[ModuleTiming]) -> Tuple[ModuleTiming, ...]:
    """The module rows of a step summed from its slices, with the root's forward self time
    floored at 0 as :func:`attribute` floors a whole step's (and the warning it gives)."""
    rows = []
    for m in modules:
        if m.name == "" and m.phase == "forward" and m.self_time_s < 0.0:
            time_s, self_s = _root_forward(0.0, -m.self_time_s, m.time_s - m.self_time_s)
            m = ModuleTiming(m.name, m.phase, m.calls, time_s, self_s, m.scope)
        rows.append(m)
    return tuple(rows)


def _add_backward(accs: Dict[Tuple[str, str], _Acc], scope: Tuple[str, ...],
                  range_ids: Tuple[int, ...], time_s: float) -> None:
    for depth, fqn in enumerate(scope):
        if fqn == "":
            continue
        acc = accs.setdefault((fqn, "backward"), _Acc(scope[: depth + 1]))
        acc.time.append(time_s)
        range_id = _range_id(scope, range_ids, depth)
        if range_id is not None:
            acc.range_ids.add(range_id)
    if scope[-1] != "":
        accs[(scope[-1], "backward")].self_time.append(time_s)


def _range_id(scope: Tuple[str, ...], range_ids: Tuple[int, ...], depth: int) -> Optional[int]:
    """The range id of ``scope[depth]``'s forward call: ``range_ids`` lists the non-root
    module ranges of ``scope``, so they match by position from the end; None past the list."""
    offset = len(scope) - 1 - depth
    return range_ids[len(range_ids) - 1 - offset] if offset < len(range_ids) else None


def _calls(counted: int, key: Tuple[str, str], scope: Tuple[str, ...], steps: int,
           carry: Optional[SliceCarry], second: int = 0) -> int:
    """A row's calls: ``counted`` (the calls seen in the trace; else ``second``, those of a
    second kind) when there are any, else once per step. In a slice of a step (``carry``):
    none, the counts tallied for the step's end (:meth:`SliceCarry.calls`)."""
    if carry is None:
        return counted or second or steps
    tally = carry.tally.setdefault(key, [scope, 0, 0])
    tally[1] += counted
    tally[2] += second
    return 0


def _count_calls(timeline: HostTimeline, markers: Sequence[_Node], phase: str, steps: int,
                 carry: Optional[SliceCarry] = None) -> int:
    """Calls of the root's backward or optimizer row: its phase markers that begin in the trace
    (named ones first), else once per step (:func:`_calls`)."""
    markers = [n for n in markers if timeline.counted(n)]
    if phase == "optimizer":
        named = [n for n in markers if n.event.name.startswith("Optimizer.step#")]
        ranged = [n for n in markers if parse_range_name(n.event.name) == ("phase", "optimizer")]
        return _calls(len(named), ("", phase), _ROOT_SCOPE, steps, carry, second=len(ranged))
    ranged = [n for n in markers if parse_range_name(n.event.name) == ("phase", "backward")]
    return _calls(len(ranged), ("", phase), _ROOT_SCOPE, steps, carry)


def _gpu_module_rows(timeline: HostTimeline, activities: Sequence[DeviceActivity], steps: int,
                     step_time_s: float, carry: Optional[SliceCarry] = None) -> List[ModuleTiming]:
    accs: Dict[Tuple[str, str], _Acc] = {}
    root: Dict[str, List[float]] = defaultdict(list)
    root_self: Dict[str, List[float]] = defaultdict(list)
    root_calls = 0
    for node in _forward_ranges(timeline):
        scope = _rooted(node.scope)
        counted = timeline.counted(node)
        if scope[-1] == "":
            root_calls += counted
        else:
            accs.setdefault((scope[-1], "forward"), _Acc(scope)).calls += counted
    for act in activities:
        root[act.phase].append(act.dur_s)
        if act.scope[-1] == "":
            root_self[act.phase].append(act.dur_s)
        for depth, fqn in enumerate(act.scope):
            if fqn == "":
                continue
            acc = accs.setdefault((fqn, act.phase), _Acc(act.scope[: depth + 1]))
            acc.time.append(act.dur_s)
            if depth == len(act.scope) - 1:
                acc.self_time.append(act.dur_s)
    if (OUTSIDE, "forward") in accs:  # no range of its own: once per step
        accs[(OUTSIDE, "forward")].calls = steps
    # Backward calls: distinct forward calls reached, through the launches' contexts.
    for node in timeline.order:
        if node.mark == "backward" and node.event.kind in _LAUNCH_KINDS:
            _, scope, range_ids = timeline.context(node)
            for depth, fqn in enumerate(scope[1:], start=1):
                range_id = _range_id(scope, range_ids, depth)
                if (fqn, "backward") in accs and range_id is not None:
                    accs[(fqn, "backward")].range_ids.add(range_id)

    root_rows: Dict[str, Tuple[float, float, int]] = {}
    other_self = math.fsum(math.fsum(a.self_time) for a in accs.values())
    for phase in ("backward", "optimizer"):
        if root.get(phase):
            markers = _phase_markers(timeline, phase)
            self_s = math.fsum(root_self[phase])
            root_rows[phase] = (math.fsum(root[phase]), self_s, _count_calls(timeline, markers, phase, steps, carry))
            other_self += self_s
    fwd_time, fwd_self = _root_forward(step_time_s, other_self, _top_level_sum(accs, "forward"), carry is None)
    root_rows["forward"] = (fwd_time, fwd_self, _calls(root_calls, ("", "forward"), _ROOT_SCOPE, steps, carry))
    return _finish(accs, root_rows, steps, carry)
