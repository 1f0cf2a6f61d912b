"""Profiler trace → measured time per aten op and per module (forward, backward, optimizer).

One code path for saved traces and live sessions: :class:`~torch_roofline.timing.session.
ProfileSession` exports its trace and this module reads it back, so the attribution tested
on the A100 fixture is the attribution that runs on a user's GPU.

Rules (each one is a choice; the docstrings below state them once):

**Op rows.** An op is a ``cpu_op`` event. With ``op_names`` (dotted aten names, e.g.
``{"aten.convolution", "aten.addmm"}``, the ops the dispatch-mode counter saw), the rows are
the *outermost* ``cpu_op`` events whose dotted name is in ``op_names``: composite wrappers
(``aten::conv2d``, ``aten::linear``) are descended into, and ops nested inside a row are
not rows of their own. Without ``op_names`` the rows are the outermost ``aten::`` ops.

**Device time.** Each kernel, memcpy and memset → the ``cuda_runtime``/``cuda_driver`` call
with the same correlation id → the innermost ``cpu_op`` enclosing that call on its thread
→ the op row enclosing that. An op's ``device_time_s`` is the exact sum of its device
activities' durations (``math.fsum``); its ``time_s`` is that device time when the op ran
device work, else its inclusive CPU time (the :class:`~torch_roofline.records.OpTiming`
contract). Device activity that reaches no op row is listed in
:attr:`TraceTiming.unattributed` with the reason, never dropped.

**Modules and phases.** An op's module is the innermost ``roofline::<fqn>`` range enclosing
it on its thread (``scope``: every enclosing module range, outermost first, always starting
with the root ``""``); ops outside every range belong to the root. Ops inside an autograd
engine event (``autograd::engine::evaluate_function: XBackward0``, on whichever thread) are
phase ``"backward"`` and belong to the module of the *forward* op with the same autograd
sequence number (the last forward op showing that number before the backward event: the
one that created the autograd node). Ops inside ``Optimizer.step#...`` /
``Optimizer.zero_grad#...`` or ``roofline::phase::optimizer`` are phase ``"optimizer"`` on
the root. Everything else is ``"forward"``.

**Module times** (totals over all profiled steps; divide by :attr:`TraceTiming.steps`).

* CPU traces (no device activity): forward ``time_s`` is the summed duration of the
  module's ranges; backward ``time_s`` the summed duration of the autograd engine events
  whose node was created inside the module; ``self_time_s`` excludes child modules.
* GPU traces: a module's time in a phase is the device time of the kernels, memcpys and
  memsets launched inside it in that phase.
* The root carries everything not in a child: its backward/optimizer time is the phase's
  wall time on the CPU (union of its engine events / optimizer ranges) or its device time
  on a GPU, and its forward row takes the rest of the step, so the self times of all rows
  sum to :attr:`TraceTiming.step_time_s` (idle time and host gaps included).
* ``calls``: forward, the number of ranges; backward, the number of distinct forward calls
  its backward ops came from; root rows, the number of root ranges / optimizer events, else
  the number of steps.
"""

from __future__ import annotations

import bisect
import logging
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

from torch_roofline.records import ModuleTiming, OpTiming, frozen_record
from torch_roofline.timing.steps import profiler_steps, step_markers
from torch_roofline.timing.trace import DEVICE_KINDS, DeviceProperties, Trace, TraceEvent
from torch_roofline.timing._module_rows import _cpu_module_rows, _gpu_module_rows, root_forward_floor
from torch_roofline.timing.timeline import (_LAUNCH_KINDS, _ROOT_SCOPE, _TOL_S, DeviceActivity, HostTimeline, SliceCarry,
                                            _as_int, _Node, _union_length, dotted_op_name, merged_spans)

__all__ = ["DeviceActivity", "TraceTiming", "SliceCarry", "attribute", "dotted_op_name", "merged_spans",
           "root_forward_floor"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TraceTiming:
    """Measured time of a profiled step (or steps), per op and per module.

    All times are totals over :attr:`steps` profiled steps, in seconds.

    Attributes:
        ops: one row per op call (see the module docstring for which events are rows).
        modules: one row per (module, phase).
        step_time_s: wall time of the profiled steps: the summed ``ProfilerStep#N`` spans,
            else the span of the main thread's events (extended to the last device
            activity on GPU traces).
        steps: number of ``ProfilerStep#N`` events (at least 1).
        on_device: True when the trace holds device activity (op and module times are then
            device times).
        device_name: name of the GPU the kernels ran on, ``None`` on CPU traces.
        device: that GPU's properties from the trace header.
        activities: every kernel, memcpy and memset, attributed or not, in time order.
        unattributed: the activities that reach no op row.
        device_busy_s: union of device activity intervals (seconds), ``None`` on CPU traces.
        peak_memory_bytes: the largest ``Total Allocated`` of the profiler's memory events
            on the device that ran the work (CUDA on GPU traces, CPU otherwise); ``None``
            when the trace has none (``profile_memory=False``).
        row_events: the trace event each op row was read from, aligned with :attr:`ops`.
        compile_time_s: host time spent inside torch.compile's compilation (seconds, summed
            over its outermost regions); the ops its tracing ran are not op rows.
    """

    ops: Tuple[OpTiming, ...]
    modules: Tuple[ModuleTiming, ...]
    step_time_s: float
    steps: int
    on_device: bool
    device_name: Optional[str]
    device: Optional[DeviceProperties]
    activities: Tuple[DeviceActivity, ...]
    unattributed: Tuple[DeviceActivity, ...]
    device_busy_s: Optional[float]
    peak_memory_bytes: Optional[int]
    row_events: Tuple[TraceEvent, ...] = field(default=(), compare=False, repr=False)
    compile_time_s: float = 0.0

    @property
    def unattributed_time_s(self) -> float:
        """Device time in seconds of the activities with no op row."""
        return math.fsum(a.dur_s for a in self.unattributed)

    def module(self, name: str, phase: str = "forward") -> Optional[ModuleTiming]:
        """The row of module ``name`` in ``phase``, ``None`` if it has none."""
        for row in self.modules:
            if row.name == name and row.phase == phase:
                return row
        return None


# --------------------------------------------------------------------------- attribution


def attribute(trace: Trace, *, op_names: Optional[Iterable[str]] = None,
              labels: Optional[Mapping[str, str]] = None, outside: Optional[bool] = None,
              carry: Optional[SliceCarry] = None) -> TraceTiming:
    """Measured time per op and per module of a parsed trace.

    Args:
        trace: from :func:`~torch_roofline.timing.trace.load_trace` or a live session.
        op_names: dotted aten op names to make rows of (``{"aten.convolution"}``, the ops
            a model's replay counted); ``None`` makes a row of every call a dispatch-mode
            counter sees: the outermost recorded ops that are not CompositeImplicitAutograd
            (:mod:`torch_roofline.count.dispatch`).
        labels: ``{"#<k>": module name}`` of ranges recorded under safe labels; default: the
            table in the trace's metadata (:data:`~torch_roofline.timing.ranges.LABELS_KEY`).
        outside: whether ops outside every module range form the ``OUTSIDE`` row (else they
            belong to the root); default: when the trace has module ranges.
        carry: the trace is one slice of a long step
            (:func:`~torch_roofline.timing.slices.slice_trace`), attributed after the slices
            before it, which left their forward ops and counted backward calls here (and this
            one leaves its own). Its steps are its ``ProfilerStep`` markers that begin in it
            (with or without an op in the slice); events it carries from the slice before
            (:attr:`~torch_roofline.timing.trace.Trace.continued`) add their time in the slice
            and no call. The slices' timings added up are the step's
            (:class:`~torch_roofline.timing.merge.TimingSum`).

    Returns:
        A :class:`TraceTiming` (rules in the module docstring).

    Example::

        timing = attribute(load_trace("trace.json.gz"), op_names={"aten.convolution"})
        for op in timing.ops:
            print(op.op, op.module, op.time_s)
    """
    names = _check_op_names(op_names)
    on_device = trace.has_device_activity
    timeline = HostTimeline(trace, names, labels, outside, collapse=not on_device, carry=carry)
    try:
        return _attribute(trace, timeline, on_device, carry)
    finally:
        timeline.release()


def _attribute(trace: Trace, timeline: "HostTimeline", on_device: bool,
               carry: Optional[SliceCarry] = None) -> TraceTiming:
    row_nodes = [n for n in timeline.order if n.row is n]
    row_nodes.sort(key=lambda n: (n.event.start_s, n.event.index))
    per_row: Dict[int, List[DeviceActivity]] = defaultdict(list)
    activities: List[DeviceActivity] = []
    if on_device:  # a CPU trace has no device activity to attribute
        row_index = {n.event.index: i for i, n in enumerate(row_nodes)}
        activities = _attribute_activities(trace, timeline, row_nodes, row_index)
        for act in activities:
            if act.op_index is not None:
                per_row[act.op_index].append(act)

    markers = profiler_steps(trace) if carry is None else step_markers(trace)
    ops = _op_rows(timeline, row_nodes, per_row, sorted(e.start_s for e in markers))
    steps, step_time_s = _step_time(markers, timeline, activities)
    if carry is not None:  # a slice: its steps are the markers that begin in it
        steps = sum(1 for e in markers if e.index not in trace.continued)
    if on_device:
        modules = _gpu_module_rows(timeline, activities, steps, step_time_s, carry)
    else:
        modules = _cpu_module_rows(timeline, steps, step_time_s, ops, carry)
    device = trace.device() if on_device else None
    return TraceTiming(
        ops=tuple(ops),
        modules=tuple(modules),
        step_time_s=step_time_s,
        steps=steps,
        on_device=on_device,
        device_name=device.name if device is not None else None,
        device=device,
        activities=tuple(activities),
        unattributed=tuple(a for a in activities if a.op_index is None),
        device_busy_s=_union_length([(a.start_s, a.start_s + a.dur_s) for a in activities])
        if on_device else None,
        peak_memory_bytes=_peak_memory(trace, on_device),
        row_events=tuple(n.event for n in row_nodes),
        compile_time_s=_union_length(timeline.compile_spans),
    )


def _check_op_names(op_names: Optional[Iterable[str]]) -> Optional[Set[str]]:
    if op_names is None:
        return None
    if isinstance(op_names, str):
        raise TypeError(
            f"attribute(op_names={op_names!r}): expected a collection of dotted op names, "
            "e.g. {'aten.convolution', 'aten.addmm'}, got a single string; wrap it in a set."
        )
    names = set(op_names)
    bad = sorted(n for n in names if "::" in n)
    if bad:
        raise ValueError(
            f"attribute(op_names=...): expected dotted aten names like 'aten.convolution', "
            f"got {bad[:3]}; replace '::' with '.' (dotted_op_name() does it)."
        )
    return names


def _attribute_activities(
    trace: Trace, timeline: HostTimeline, row_nodes: List[_Node], row_index: Mapping[int, int]
) -> List[DeviceActivity]:
    launches: Dict[int, TraceEvent] = {}
    for ev in trace.events:
        if ev.kind in _LAUNCH_KINDS and ev.correlation is not None:
            launches.setdefault(ev.correlation, ev)
    result: List[DeviceActivity] = []
    device_events = sorted(
        (e for e in trace.events if e.kind in DEVICE_KINDS), key=lambda e: (e.start_s, e.index)
    )
    for ev in device_events:
        launch = launches.get(ev.correlation) if ev.correlation is not None else None
        node = timeline.launch_site(launch.index) if launch is not None else None
        base = dict(
            kind=ev.kind, name=ev.name, start_s=ev.start_s, dur_s=ev.dur_s, device=ev.device,
            stream=ev.stream, correlation=ev.correlation,
            bytes=ev.bytes if ev.kind != "kernel" else None,
        )
        if node is None:
            result.append(DeviceActivity(
                **base, op_index=None, op=None, cpu_op=None, module="", scope=_ROOT_SCOPE,
                phase="forward",
                reason=f"no cuda_runtime/cuda_driver launch with correlation id {ev.correlation}",
            ))
            continue
        phase, scope, _ = timeline.context(node)
        cpu_op = node.cpu_op.event.name if node.cpu_op is not None else None
        if node.row is None:
            reason = (f"launched by {cpu_op}, which is not inside a counted op" if cpu_op
                      else f"launched by {launch.name} outside every cpu_op")
            if launch.name.startswith("cudaGraphLaunch"):
                reason = (f"replayed by a CUDA graph ({launch.name}; torch.compile mode='reduce-overhead' or "
                          "torch.cuda.graphs), which runs its kernels without an op of their own: their time is "
                          f"this list's, not a row's ({reason})")
            result.append(DeviceActivity(
                **base, op_index=None, op=None, cpu_op=cpu_op, module=scope[-1], scope=scope,
                phase=phase, reason=reason,
            ))
            continue
        index = row_index[node.row.event.index]
        result.append(DeviceActivity(
            **base, op_index=index, op=dotted_op_name(node.row.event.name), cpu_op=cpu_op,
            module=scope[-1], scope=scope, phase=phase,
        ))
    return result


def _op_rows(
    timeline: HostTimeline, row_nodes: List[_Node], per_row: Mapping[int, List[DeviceActivity]],
    step_starts: Sequence[float],
) -> List[OpTiming]:
    rows: List[OpTiming] = []
    phase_counter: Dict[str, int] = defaultdict(int)
    for i, node in enumerate(row_nodes):
        ev = node.event
        phase, scope, _ = timeline.context(node)
        acts = per_row.get(i, ())
        device_time_s = math.fsum(a.dur_s for a in acts) if acts else 0.0
        rows.append(frozen_record(OpTiming, {
            "op": dotted_op_name(ev.name),
            "module": scope[-1],
            "scope": scope,
            "phase": phase,
            "time_s": device_time_s if acts else ev.dur_s,
            "cpu_time_s": ev.dur_s,
            "device_time_s": device_time_s,
            "kernels": sum(1 for a in acts if a.kind == "kernel"),
            "start_s": ev.start_s,
            "thread": _as_int(ev.tid),
            "seq": node.bwd_seq if phase == "backward" else ev.seq,
            "index": phase_counter[phase],
            "step": max(bisect.bisect_right(step_starts, ev.start_s + _TOL_S) - 1, 0) if step_starts else 0,
            "recompute": node.recompute,
            "calls": 1,
        }))
        phase_counter[phase] += 1
    return rows


# --------------------------------------------------------------------------- step, phases


def _main_thread(timeline: HostTimeline) -> Optional[Tuple[object, object]]:
    best, best_count = None, -1
    for key, events in timeline.threads.items():
        count = sum(1 for e in events if e.kind == "cpu_op")
        if count > best_count:
            best, best_count = key, count
    return best


def _step_time(
    steps: Sequence[TraceEvent], timeline: HostTimeline, activities: Sequence[DeviceActivity]
) -> Tuple[int, float]:
    """Steps and their total time: the ``ProfilerStep`` spans ``steps`` when there are any,
    else one step spanning the main thread's events and the device activity."""
    if steps:
        return len(steps), math.fsum(e.dur_s for e in steps)
    key = _main_thread(timeline)
    events = timeline.threads.get(key, []) if key is not None else []
    if not events and not activities:
        return 1, 0.0
    starts = [e.start_s for e in events] + [a.start_s for a in activities]
    ends = [e.end_s for e in events] + [a.start_s + a.dur_s for a in activities]
    return 1, max(ends) - min(starts)




def _peak_memory(trace: Trace, on_device: bool) -> Optional[int]:
    device_type = 1 if on_device else 0
    totals = [m.total_allocated_bytes for m in trace.memory if m.device_type == device_type]
    return max(totals) if totals else None
