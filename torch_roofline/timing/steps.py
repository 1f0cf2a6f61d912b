"""How many steps a saved trace holds, and where they are.

A report divides each measured time by the number of steps it covers, so a trace holding
two forwards read as one step shows every op at twice its time. :func:`split_steps` finds
the steps, trying in order:

1. ``ProfilerStep#N`` markers (torch.profiler's schedule, ``prof.step()``) that hold an op
   call: one step each, and the trace is cut to them (as HolisticTraceAnalysis splits
   iterations: work launched outside every step, e.g. set-up before the first, is left out);
2. optimizer steps (``Optimizer.step#...`` annotations), when there are at least two;
3. sibling annotations: the user annotations (``record_function`` ranges of a benchmark
   harness, e.g. ``[param|model|warmup|forward]`` and ``[param|model|measure|forward]``)
   that are the disjoint children of one annotation (or of none) and hold at least two of
   them, each with op calls inside, and together at least half of the trace's aten op
   calls: one step each, and the trace is cut to them (set-up work outside them, e.g.
   moving the model to the GPU, is left out). The ranges libraries draw inside a step
   are never steps: FSDP's (``FSDP::pre_forward (0)``, ``FSDP::all_gather (2)``), DDP's,
   the process-group backends' (``gloo:all_gather``, ``nccl:all_reduce``), the
   optimizer's, ours;
4. backward passes (autograd engine work separated by other work), when at least two;
5. otherwise one step.

The result says which rule decided (:attr:`StepSplit.how`), for the report's notes.

Example::

    split = split_steps(load_trace("trace.json.gz"))
    print(split.steps, split.how)
"""

from __future__ import annotations

import bisect
import math
import re
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Set, Tuple

from torch_roofline.timing.ranges import RANGE_PREFIX
from torch_roofline.timing.trace import DEVICE_KINDS, LAUNCH_KINDS, Trace, TraceEvent

__all__ = ["StepSplit", "profiler_steps", "step_markers", "split_steps", "span_test", "span_tests", "within"]

_PROFILER_STEP = re.compile(r"^ProfilerStep#\d+$")
_OPTIMIZER_STEP = "Optimizer.step#"
_BACKWARD_PREFIX = "autograd::engine::evaluate_function:"
_TOL_S = 1e-9
# Ranges that libraries draw inside a step (never a step of their own): ours, the optimizer's,
# FSDP's (FSDP1 and FSDP2), DDP's; and the process-group backends' ``<backend>:<collective>``.
_LIBRARY_RANGES = (RANGE_PREFIX, "Optimizer.", "FSDP::", "FullyShardedDataParallel", "DistributedDataParallel",
                   "DDP::", "c10d::", "ProfilerStep#",
                   # torch.compile's: each compiled graph's call, Dynamo's frames and its compile phases
                   "## Call CompiledFxGraph", "Torch-Compiled Region", "CompiledFunction", "TorchDynamo",
                   "dynamo", "entire_frame_compile", "compile_attempt", "bytecode_tracing")
_BACKEND_RANGE = re.compile(r"^(gloo|nccl|mpi|ucc|xccl|hccl):")


@dataclass(frozen=True)
class StepSplit:
    """The steps of a trace.

    Attributes:
        steps: how many steps the trace holds (at least 1).
        how: which rule found them, in words, for the report's notes.
        spans: ``(start_s, end_s)`` of each step (seconds, the trace's clock) when the steps
            are spans of the trace (ProfilerStep markers, sibling annotations), sorted; empty
            when the whole trace is the steps.
    """

    steps: int
    how: str
    spans: Tuple[Tuple[float, float], ...] = ()


def split_steps(trace: Trace) -> StepSplit:
    """The steps of ``trace`` by the first rule of the module docstring that finds some."""
    host = [e for e in trace.events if e.kind in ("cpu_op", "user_annotation")]
    markers = profiler_steps(trace)
    if markers:
        return StepSplit(len(markers), f"{len(markers)} ProfilerStep marker(s); work outside them is left out",
                         tuple(sorted((e.start_s, e.end_s) for e in markers)))
    optimizer = [e for e in host if e.kind == "user_annotation" and e.name.startswith(_OPTIMIZER_STEP)]
    if len(optimizer) >= 2:
        return StepSplit(len(optimizer), f"{len(optimizer)} optimizer steps (Optimizer.step annotations)")
    siblings = _sibling_annotations(host)
    if siblings is not None:
        names = ", ".join(repr(e.name) for e in siblings[:4]) + (" ..." if len(siblings) > 4 else "")
        return StepSplit(len(siblings), f"{len(siblings)} sibling annotations ({names}), one step each; work "
                                        "outside them is left out",
                         tuple((e.start_s, e.end_s) for e in siblings))
    passes = _backward_passes(host)
    if passes >= 2:
        return StepSplit(passes, f"{passes} backward passes")
    return StepSplit(1, "one step (no ProfilerStep markers, optimizer steps, sibling annotations or repeated "
                        "backward passes)")


def profiler_steps(trace: Trace) -> List[TraceEvent]:
    """The ``ProfilerStep#N`` spans of ``trace`` that hold an op call. A profiler stopped right
    after a ``step()`` leaves an empty last span (HolisticTraceAnalysis, too, leaves the last one
    out), which is not a step that ran. Found once per trace (several stages ask)."""
    return list(trace.derived("profiler_steps", _profiler_steps))


def _profiler_steps(trace: Trace) -> Tuple[TraceEvent, ...]:
    markers: List[TraceEvent] = []
    starts: List[float] = []  # op calls: every cpu_op but ours and the markers
    for e in trace.events:  # one pass
        kind = e.kind
        if kind != "cpu_op" and kind != "user_annotation":
            continue
        name = e.name
        if name.startswith("ProfilerStep#") and _PROFILER_STEP.match(name) is not None:
            markers.append(e)
        elif kind == "cpu_op" and not name.startswith(RANGE_PREFIX):
            starts.append(e.start_s)
    if not markers:
        return ()
    starts.sort()
    return tuple(m for m in markers
                 if bisect.bisect_right(starts, m.end_s + _TOL_S) > bisect.bisect_left(starts, m.start_s - _TOL_S))


def step_markers(trace: Trace) -> List[TraceEvent]:
    """Every ``ProfilerStep#N`` event of ``trace``, in file order, whether it holds an op call
    or not: the step of a slice (:func:`~torch_roofline.timing.slices.slice_trace`), whose
    ops may all lie in other slices."""
    return [e for e in trace.events if _is_profiler_step(e)]


def _is_profiler_step(e: TraceEvent) -> bool:
    return e.kind in ("user_annotation", "cpu_op") and _PROFILER_STEP.match(e.name) is not None


def _outermost(events: Sequence[TraceEvent]) -> List[TraceEvent]:
    """The events not inside another one of ``events`` (same thread), by start."""
    out: List[TraceEvent] = []
    last: Dict[object, TraceEvent] = {}  # per thread: threads' events interleave in time
    for e in sorted(events, key=lambda e: (e.start_s, -e.dur_s)):
        top = last.get(e.tid)
        if top is not None and e.start_s >= top.start_s - _TOL_S and e.end_s <= top.end_s + _TOL_S:
            continue
        last[e.tid] = e
        out.append(e)
    return out


def _sibling_annotations(host: Sequence[TraceEvent]) -> Optional[List[TraceEvent]]:
    """The disjoint child annotations of one annotation (or of none) holding op calls, when at
    least two; of the candidates, the set holding the most op calls."""
    annotations = [e for e in host if e.kind == "user_annotation" and not e.name.startswith(_LIBRARY_RANGES)
                   and _BACKEND_RANGE.match(e.name) is None and "compile_id=" not in e.name]
    if len(annotations) < 2:
        return None
    ops = sorted(e.start_s for e in host if e.kind == "cpu_op" and e.name.startswith("aten::"))
    if not ops:
        return None
    enough = (len(ops) + 1) // 2  # steps hold the step's work; a library's inner ranges hold a part of it

    def holds(e: TraceEvent) -> int:
        return bisect.bisect_right(ops, e.end_s + _TOL_S) - bisect.bisect_left(ops, e.start_s - _TOL_S)

    parents: List[Optional[TraceEvent]] = [None] + annotations
    best: Optional[List[TraceEvent]] = None
    best_ops = 0
    for parent in parents:
        inside = [e for e in annotations if e is not parent and (parent is None or (
            e.tid == parent.tid and parent.start_s - _TOL_S <= e.start_s and e.end_s <= parent.end_s + _TOL_S))]
        children = [e for e in _outermost(inside) if holds(e) > 0]
        if len(children) < 2:
            continue
        total = sum(holds(e) for e in children)
        if total >= enough and total > best_ops:
            best, best_ops = children, total
    return best


def _backward_passes(host: Sequence[TraceEvent]) -> int:
    """Runs of autograd engine work with other op work between them. The ops a process-group
    backend runs on its own worker thread (inside a ``gloo:all_gather`` range: FSDP's copies
    while the backward goes on) are communication, not other work between two passes."""
    comm: Dict[object, List[Tuple[float, float]]] = {}
    for e in host:
        if e.kind == "user_annotation" and _BACKEND_RANGE.match(e.name):
            comm.setdefault(e.tid, []).append((e.start_s - _TOL_S, e.end_s + _TOL_S))

    def communicating(e: TraceEvent) -> bool:
        return any(lo <= e.start_s <= hi for lo, hi in comm.get(e.tid, ()))

    timeline = sorted((e.start_s, e.name.startswith(_BACKWARD_PREFIX)) for e in _outermost(
        [e for e in host if e.kind == "cpu_op"]) if not (comm and communicating(e)))
    passes, in_backward = 0, False
    for _, backward in timeline:
        if backward and not in_backward:
            passes += 1
        in_backward = backward
    return passes


def span_test(spans: Sequence[Tuple[float, float]], after_s: Optional[float] = None) -> Callable[[float], bool]:
    """Whether a time (seconds) lies inside one of ``spans`` (touching spans merged, ends
    included with a nanosecond's slack) and after ``after_s``: :func:`within`'s rule."""
    return span_tests(spans, after_s)[0]


def span_tests(spans: Sequence[Tuple[float, float]], after_s: Optional[float] = None
               ) -> Tuple[Callable[[float], bool], Callable[[float, float], bool]]:
    """``(inside, covers)``: :func:`span_test`'s ``inside``, and whether every time from one
    to another (seconds, in order) is inside (both in one merged span, after ``after_s``)."""
    merged: List[List[float]] = []
    for lo, hi in sorted(spans):
        if merged and lo - _TOL_S <= merged[-1][1] + _TOL_S:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    starts = [lo for lo, _ in merged]
    floor = -math.inf if after_s is None else after_s

    def inside(t: float) -> bool:
        i = bisect.bisect_right(starts, t + _TOL_S) - 1
        return i >= 0 and t <= merged[i][1] + _TOL_S and t > floor

    def covers(first: float, last: float) -> bool:
        i = bisect.bisect_right(starts, first + _TOL_S) - 1
        return (i >= 0 and first > floor and last <= merged[i][1] + _TOL_S
                and bisect.bisect_right(starts, last + _TOL_S) - 1 == i)

    return inside, covers


def within(trace: Trace, spans: Sequence[Tuple[float, float]], after_s: Optional[float] = None) -> Trace:
    """``trace`` cut to ``spans``: host events that start inside one (other threads' too), the
    device activity they launched (by correlation id), and memory events inside one.

    ``after_s``: keep only host and memory events later than this (seconds): a part of a trace
    read a few steps at a time leaves what the part before it kept to that part
    (:mod:`~torch_roofline.timing.segments`)."""
    from dataclasses import replace

    inside = span_test(spans, after_s)
    kept: List[TraceEvent] = []
    launched: Set[int] = set()
    for e in trace.events:
        if e.kind in DEVICE_KINDS:
            continue
        if inside(e.start_s):
            kept.append(e)
            if e.correlation is not None and e.kind in LAUNCH_KINDS:
                launched.add(e.correlation)
    kept += [e for e in trace.events if e.kind in DEVICE_KINDS and e.correlation in launched]
    kept.sort(key=lambda e: e.index)
    memory = tuple(m for m in trace.memory if inside(m.time_s))
    return replace(trace, events=tuple(kept), memory=memory)
