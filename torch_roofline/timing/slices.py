"""Slices of one long step: a step too big to read at once is cut at quiet moments of its main
thread into slices of about :data:`~torch_roofline.timing.segments.PART_BYTES` each, and each
slice is read as a trace of its own, with the events that span a cut carried over.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from torch_roofline.timing.ranges import RANGE_PREFIX


from torch_roofline.timing.steps import _TOL_S, span_tests
from torch_roofline.timing._trace_parse import _Builder
from torch_roofline.timing.trace import LAUNCH_KINDS, Trace, TraceEvent
from torch_roofline.timing import segments as _segments
from torch_roofline.timing.segments import _PROFILER_STEP, _SLACK_US, StepMarker, TraceBlock, TraceScan, _add_launched, _memory_peaks, _read_host

__all__ = ["step_blocks", "step_bytes", "slice_cuts", "TraceSlice", "slice_trace"]


# --------------------------------------------------------------------------- slices of a step


def step_blocks(scan: TraceScan, step: StepMarker) -> List[TraceBlock]:
    """The pieces whose host events overlap ``step``, in file order."""
    return [b for b in scan.blocks if b.host_hi_us >= step.start_us and b.host_lo_us <= step.end_us]


def step_bytes(scan: TraceScan, step: StepMarker) -> int:
    """Bytes of file in the pieces whose host events overlap ``step`` (its host events and
    those of the pieces it shares with its neighbours)."""
    return sum(b.size for b in step_blocks(scan, step))


def slice_cuts(scan: TraceScan, step: StepMarker, slice_bytes: Optional[int] = None) -> Tuple[float, ...]:
    """Where to cut one long step into slices of about ``slice_bytes`` of host events each
    (default :data:`~torch_roofline.timing.segments.PART_BYTES`): times in seconds from the file's origin, in order, each the
    earliest host event of a piece of the file. Empty: the step is one slice. The cuts are
    proposals: :func:`slice_trace` moves one that would pass through an op call."""
    slice_bytes = _segments.PART_BYTES if slice_bytes is None else slice_bytes  # read now: tests change it
    lo, hi = step.start_us, step.end_us
    cuts: List[float] = []
    held = 0
    for b in step_blocks(scan, step):  # file order, which is time order for a trace's host events
        if held >= slice_bytes and b.host_lo_us > (cuts[-1] if cuts else lo) and b.host_lo_us < hi:
            cuts.append(b.host_lo_us)
            held = 0
        held += b.size
    return tuple((c - scan.origin_us) * 1e-6 for c in cuts)


@dataclass(frozen=True)
class TraceSlice:
    """One slice of a long step (:func:`slice_trace`).

    Attributes:
        trace: its :class:`~torch_roofline.timing.trace.Trace`: the host events that begin
            in it, those carried from the slice before (:attr:`Trace.continued
            <torch_roofline.timing.trace.Trace.continued>`, their starts moved to the
            slice's), both ending at its end at the latest, and the device activity they
            launched.
        start_s, end_s: where it begins and ends, seconds from the file's origin (the first
            slice begins with the step: ``start_s`` is ``None``; the last ends with it:
            ``end_s`` is ``None``).
        open: the host events still open at ``end_s``, whole (not cut at the end): the next
            slice carries them.
    """

    trace: Trace
    start_s: Optional[float]
    end_s: Optional[float]
    open: Tuple[TraceEvent, ...]


def _passable(e: TraceEvent) -> bool:
    """Whether a slice's end may fall inside this host event, which the next slice then
    carries: the spans that hold ops (module ranges, phase marks, steps, annotations, autograd
    engine events, compiling), never an op call or a launch (its work is in one slice)."""
    if e.kind == "cpu_op":
        name = e.name
        return (name.startswith(RANGE_PREFIX) or name.startswith("autograd::engine::evaluate_function:")
                or _PROFILER_STEP.match(name) is not None or name in ("dynamo", "entire_frame_compile")
                or name.endswith("(dynamo_timed)"))
    return e.kind not in LAUNCH_KINDS


def slice_trace(scan: TraceScan, step: StepMarker, start_s: Optional[float], end_s: Optional[float],
                carried: Sequence[TraceEvent] = (), after_s: Optional[float] = None) -> TraceSlice:
    """The slice of ``step`` from ``start_s`` up to ``end_s`` (seconds from the file's origin;
    ``None``: the step's own start or end), carrying ``carried`` (the slice before's
    :attr:`TraceSlice.open`); ``after_s`` as for :func:`part_trace`.

    Its host events are the step's (:func:`~torch_roofline.timing.steps.within`'s rule) that
    begin at ``start_s`` or later and before its end. The end is ``end_s`` unless an op call
    or a launch is open there (on any thread): then it is moved back to the start of the
    earliest such call, or, where that call began the slice, on past the end of the calls
    open there, so no call is split between slices (:func:`_passable`). Host events open at
    the end (module ranges, autograd engine events, the step) end there, and the next slice
    carries them from its start to their end (:attr:`TraceSlice.open`), so each event's time
    is counted once over the slices and its call in the slice where it begins
    (:func:`~torch_roofline.timing.attribution.attribute` with ``carry``). Memory events are
    the slice's largest, as for parts.
    """
    origin = scan.origin_us
    inside_step, covers_step = span_tests([step.span_s(origin)], after_s)
    lo = -math.inf if start_s is None else start_s
    step_end_s = step.end_s(origin)
    while True:
        builder, host, memory, kept_for_device = _slice_host(scan, step, lo, end_s, inside_step, covers_step)
        if end_s is None:
            break
        end_s, host, further = _settle_end(host, end_s)
        if further is None:
            break
        end_s = further if further < step_end_s else None  # read again, up to past the call
    hi = math.inf if end_s is None else end_s
    still_open = tuple(e for e in list(carried) + host if e.start_s + e.dur_s > hi + _TOL_S)
    # the events carried in, from the slice's start; those open at its end, up to it
    moved = [_clipped(e, lo, hi) for e in carried if e.start_s + e.dur_s > lo]
    host = [_clipped(e, None, hi) if e.start_s + e.dur_s > hi else e for e in host]
    launched = {e.correlation for e in host if e.kind in LAUNCH_KINDS and e.correlation is not None}
    builder.durations = moved + host
    builder.in_order = False
    _add_launched(scan, builder, launched, kept_for_device)
    del kept_for_device
    trace = builder.finish(scan.header)
    peaks = _memory_peaks(scan, memory, lambda t: lo <= t < hi and inside_step(t))
    trace = replace(trace, memory=peaks, continued=frozenset(e.index for e in moved))
    return TraceSlice(trace, start_s, end_s, still_open)


def _slice_host(scan: TraceScan, step: StepMarker, lo: float, end_s: Optional[float],
                inside_step: Callable[[float], bool], covers_step: Callable[[float, float], bool]
                ) -> Tuple[_Builder, List[TraceEvent], List[Tuple[int, Any]], Dict[int, List[Any]]]:
    """The host events of ``step`` beginning from ``lo`` up to ``end_s`` (seconds; ``None``:
    the step's end), as records in a builder; the memory events there, unread; the pieces
    read that hold device activity (for its launches)."""
    origin = scan.origin_us
    hi = math.inf if end_s is None else end_s
    lo_us = step.start_us - _SLACK_US if lo == -math.inf else origin + lo * 1e6 - _SLACK_US
    hi_us = step.end_us + _SLACK_US if end_s is None else origin + end_s * 1e6 + _SLACK_US

    def inside(t: float) -> bool:
        return lo <= t < hi and inside_step(t)

    def covers(first_s: float, last_s: float) -> bool:
        return lo <= first_s and last_s < hi and covers_step(first_s, last_s)

    builder = _Builder(scan.path, origin_us=origin)
    memory: List[Tuple[int, Any]] = []
    kept_for_device = _read_host(scan, builder, lo_us, hi_us, inside, covers, set(), memory)
    return builder, builder.durations, memory, kept_for_device


def _settle_end(host: List[TraceEvent], end_s: float) -> Tuple[float, List[TraceEvent], Optional[float]]:
    """``(end, host events before it, None)``: ``end_s``, or the start of the earliest op call
    or launch open at it (again, until none is open at the end); ``(end_s, host, past)`` where
    such a call began the slice: the slice must be read on to ``past``, after the calls open
    at ``end_s``."""
    first = min((e.start_s for e in host), default=end_s)
    while True:
        blocking = [e for e in host if e.start_s + e.dur_s > end_s + _TOL_S and not _passable(e)]
        if not blocking:
            return end_s, host, None
        earlier = min(e.start_s for e in blocking)
        if earlier <= first:
            return end_s, host, max(e.start_s + e.dur_s for e in blocking) + 2 * _TOL_S
        end_s = earlier
        host = [e for e in host if e.start_s < end_s]


def _clipped(e: TraceEvent, start_s: Optional[float], end_s: float) -> TraceEvent:
    """``e`` from ``start_s`` (``None``: its own start) up to ``end_s`` at the latest."""
    begin = e.start_s if start_s is None else max(e.start_s, start_s)
    return replace(e, start_s=begin, dur_s=max(0.0, min(e.start_s + e.dur_s, end_s) - begin))
