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
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple, Union

from torch_roofline.records import OUTSIDE, ModuleTiming, OpTiming, frozen_record
from torch_roofline.timing.compiled import is_fused_kernel
from torch_roofline.timing.ranges import RANGE_PREFIX, parse_range_name, read_labels
from torch_roofline.timing.steps import profiler_steps, step_markers
from torch_roofline.timing.trace import DEVICE_KINDS, DeviceProperties, Trace, TraceEvent
from torch_roofline.count.dispatch import default_is_composite, is_composite_call, op_kind

__all__ = ["DeviceActivity", "TraceTiming", "SliceCarry", "attribute", "dotted_op_name", "merged_spans"]

_log = logging.getLogger(__name__)

_BACKWARD_PREFIX = "autograd::engine::evaluate_function:"
_OPTIMIZER_PREFIXES = ("Optimizer.step#", "Optimizer.zero_grad#")
_HOST_KINDS = ("cpu_op", "user_annotation", "cuda_runtime", "cuda_driver")
_KIND_RANK = {"user_annotation": 0, "cpu_op": 1, "cuda_runtime": 2, "cuda_driver": 3}
_LAUNCH_KINDS = ("cuda_runtime", "cuda_driver")
# Traces store microseconds with nanosecond decimals; containment tolerates 1 ns.
_TOL_S = 1e-9
_ROOT_SCOPE: Tuple[str, ...] = ("",)
_OUTSIDE_SCOPE: Tuple[str, ...] = ("", OUTSIDE)
_NOT_FORWARD = ("backward", "optimizer")


# (start of a forward op, its rooted module scope, its module range indices)
_SeqEntry = Tuple[float, Tuple[str, ...], Tuple[int, ...]]


@dataclass
class SliceCarry:
    """What the slices of one long step, attributed one after the other in time order
    (``attribute(slice, carry=...)``; :func:`~torch_roofline.timing.segments.slice_trace`),
    hand on to the slices after them. One per step; it grows with the step's forward op
    calls and module ranges, not with its events.

    Attributes:
        forward: autograd sequence number -> the forward ops showing it so far, as
            (start in seconds, rooted module scope, module range indices), in time order: a
            backward op in a later slice belongs to the module of its forward op.
        backward_calls: module name -> the forward calls (module range indices) whose
            backward was already counted: a module's backward calls are distinct forward calls.
        tally: ``(module, phase) -> [scope, calls seen, calls seen of a second kind]`` of
            the rows whose calls are counted at the step's end (:meth:`calls`).
    """

    forward: Dict[int, List[_SeqEntry]] = field(default_factory=dict)
    backward_calls: Dict[str, Set[int]] = field(default_factory=dict)
    tally: Dict[Tuple[str, str], List] = field(default_factory=dict)

    def calls(self) -> Dict[Tuple[str, str], Tuple[Tuple[str, ...], int]]:
        """``(module, phase) -> (scope, calls in the step)`` of the rows whose calls are left to
        the step's end (a slice gives them none): the root's rows and ``OUTSIDE`` (calls from
        the markers or ranges the slices held, named ones first, else one) and the backward
        rows (their distinct forward calls, else one), as a whole read counts them."""
        return {key: (scope, first or second or 1) for key, (scope, first, second) in self.tally.items()}


def dotted_op_name(name: str) -> str:
    """``"aten::convolution"`` → ``"aten.convolution"``; overload suffixes are dropped
    (``"aten::add.Tensor"`` → ``"aten.add"``); names without ``::`` are returned as is."""
    ns, sep, rest = name.partition("::")
    if not sep:
        return name
    return f"{ns}.{rest.split('.', 1)[0]}"


@dataclass(frozen=True)
class DeviceActivity:
    """One kernel, memcpy or memset and where it was attributed.

    Attributes:
        kind: ``"kernel"``, ``"gpu_memcpy"`` or ``"gpu_memset"``.
        name: kernel name or ``"Memcpy HtoD (Pageable -> Device)"``-style label.
        start_s: start in seconds from the trace origin.
        dur_s: device duration in seconds.
        device: GPU index.
        stream: CUDA stream.
        correlation: CUPTI correlation id.
        bytes: bytes moved (memcpy/memset), ``None`` for kernels.
        op_index: index into :attr:`TraceTiming.ops` of the op row it belongs to, ``None``
            when unattributed.
        op: dotted name of that op row (``"aten.conv2d"``), ``None`` when unattributed.
        cpu_op: original name of the innermost ``cpu_op`` around the launch
            (``"aten::cudnn_convolution"``), ``None`` if the launch is outside every op.
        module: module the launch ran in (``""`` root).
        scope: enclosing modules, outermost first.
        phase: ``"forward"``, ``"backward"`` or ``"optimizer"``.
        reason: why it has no op row (``None`` when attributed).
    """

    kind: str
    name: str
    start_s: float
    dur_s: float
    device: Optional[int]
    stream: Optional[int]
    correlation: Optional[int]
    bytes: Optional[int]
    op_index: Optional[int]
    op: Optional[str]
    cpu_op: Optional[str]
    module: str
    scope: Tuple[str, ...]
    phase: str
    reason: Optional[str] = None


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


# --------------------------------------------------------------------------- host timeline


class _Node:
    """A host event placed in its thread's nesting tree (internal, mutable while built)."""

    __slots__ = ("event", "scope", "ranges", "mark", "bwd_seq", "bwd_start", "cpu_op", "row",
                 "engine_depth", "parent", "has_op_child", "recompute", "is_op", "pending", "compiling")

    def __init__(self, event: TraceEvent) -> None:
        self.event = event
        self.scope: Tuple[str, ...] = ()  # enclosing module fqns, self included
        self.ranges: Tuple[int, ...] = ()  # event indices of those module ranges
        self.mark: Optional[str] = None  # nearest phase marker: "backward"/"optimizer"/...
        self.bwd_seq: Optional[int] = None  # sequence number of the enclosing engine event
        self.bwd_start: float = 0.0
        self.cpu_op: Optional[_Node] = None  # innermost cpu_op, self included
        self.row: Optional[_Node] = None  # op row (outermost matched op), self included
        self.engine_depth = 0  # autograd engine events enclosing it, self included
        self.parent: Optional[_Node] = None  # enclosing host event on the same thread
        self.has_op_child = False  # an op event is recorded inside it
        self.recompute = False  # inside a module range entered during backward (checkpointing)
        self.is_op = False  # a cpu_op that is an op call (not a range or engine event)
        self.pending: Optional[bool] = False  # row kind: True row, None composite (decided later)
        self.compiling = False  # inside torch.compile's compilation (its tracing runs ops too)


def _is_compile_mark(name: str) -> bool:
    """torch.compile's own annotations around compiling (dynamo's ``dynamo_timed`` regions)."""
    return name in ("dynamo", "entire_frame_compile") or name.endswith("(dynamo_timed)")


def _contains(outer: TraceEvent, inner: TraceEvent) -> bool:
    return outer.start_s <= inner.start_s + _TOL_S and inner.end_s <= outer.end_s + _TOL_S


def _rooted(scope: Tuple[str, ...]) -> Tuple[str, ...]:
    return scope if scope and scope[0] == "" else _ROOT_SCOPE + scope


class _HostTimeline:
    """Nesting of host events per thread, and each event's op row, module and phase.

    Shared by :func:`attribute` and :mod:`torch_roofline.timing.counters`.
    """

    def __init__(self, trace: Trace, op_names: Optional[Set[str]],
                 labels: Optional[Mapping[str, str]] = None, outside: Optional[bool] = None,
                 collapse: bool = False, carry: Optional[SliceCarry] = None) -> None:
        self.op_names = op_names
        self.continued = trace.continued  # events carried from the slice before (time, no calls)
        # CPU traces: the events inside an op row (its inner calls) change nothing about where
        # the row ran, so they are not made nodes at all (most of a trace's events).
        self.collapse = collapse
        self.labels = dict(labels) if labels is not None else read_labels(trace.metadata)
        self.nodes: Dict[int, _Node] = {}
        self.order: List[_Node] = []  # every node, parents before children
        # Forward/backward work nested inside an optimizer mark (Lightning runs training_step and
        # backward inside optimizer.step(closure)): (start, end) of each such outermost event.
        self.in_optimizer: List[Tuple[float, float]] = []
        self.compile_spans: List[Tuple[float, float]] = []  # torch.compile compiling (left out)
        self.has_ranges = False
        threads: Dict[Tuple[object, object], List[TraceEvent]] = defaultdict(list)
        for ev in trace.events:
            if ev.kind in _HOST_KINDS:
                threads[(ev.pid, ev.tid)].append(ev)
        self.threads = threads
        for events in threads.values():
            events.sort(key=lambda e: (e.start_s, -e.dur_s, _KIND_RANK[e.kind], e.index))
            self._sweep(events)
        self._assign_rows()
        # Ops outside every module range get a row of their own, when the trace has ranges
        # (a model was given) and the rows are the recorded calls (not a model's replay).
        self.outside = (self.has_ranges if outside is None else outside) and op_names is None
        self._fwd_by_seq = self._forward_sequence_map(carry)
        # the start times of a sequence number's entries, for bisect (built once per number looked up)
        self._fwd_starts: Dict[int, List[float]] = {}

    def release(self) -> None:
        """Drop the links between nodes. A node's ``row`` and ``cpu_op`` are often the node
        itself: left in place, every node (with its event) is a reference cycle that only the
        cyclic collector frees, which then walks a whole trace's objects at once (~1 s for a
        50 MB trace) and holds its memory until it runs. Call it when done with the timeline."""
        for node in self.order:
            node.parent = node.row = node.cpu_op = None
        self.nodes.clear()
        self.order.clear()

    def _row_kind(self, ev: TraceEvent) -> Optional[bool]:
        """True: a row; False: not an op the counter sees; None: a composite, a row only when
        nothing was recorded inside it (decided after the sweep)."""
        if self.op_names is not None:
            return dotted_op_name(ev.name) in self.op_names
        if is_fused_kernel(ev.name):
            return True
        kind = op_kind(ev.name)
        if kind == "row":
            return True
        if kind == "through":
            return None
        if kind == "mixed":
            types = ev.args.get("Input type")
            # without recorded argument types, the default overload is the best guess
            composite = is_composite_call(ev.name, types) if types else default_is_composite(ev.name)
            return None if composite else True
        return False

    def _sweep(self, events: Sequence[TraceEvent]) -> None:
        stack: List[_Node] = []
        collapse = self.collapse
        for ev in events:
            end = ev.start_s + _TOL_S
            while stack:
                top = stack[-1].event
                if top.start_s <= end and ev.start_s + ev.dur_s <= top.start_s + top.dur_s + _TOL_S:
                    break
                stack.pop()
            parent = stack[-1] if stack else None
            if collapse and parent is not None and parent.row is not None and ev.kind == "cpu_op":
                parent.has_op_child = True
                continue  # an inner call of a row (CPU trace): nothing to attribute
            node = _Node(ev)
            if parent is not None:
                node.parent = parent
                node.scope, node.ranges = parent.scope, parent.ranges
                node.mark, node.bwd_seq = parent.mark, parent.bwd_seq
                node.bwd_start = parent.bwd_start
                node.cpu_op = parent.cpu_op
                node.engine_depth = parent.engine_depth
                node.recompute = parent.recompute
                node.row = parent.row
                node.compiling = parent.compiling
            in_opt = node.mark == "optimizer"
            name = ev.name
            if name.startswith(RANGE_PREFIX):  # ours: user_annotation or (fast ranges) cpu_op
                parsed = parse_range_name(name, self.labels)
                if parsed is not None and parsed[0] == "module":
                    self.has_ranges = True
                    node.scope = node.scope + (parsed[1],)
                    node.ranges = node.ranges + (ev.index,)
                    if node.mark == "optimizer":  # a module's forward run by an optimizer closure
                        node.mark = None
                    elif node.mark == "backward":  # a forward re-run during backward: recompute
                        node.recompute = True
                elif parsed is not None and parsed[0] == "phase":
                    node.mark = parsed[1]
            elif _is_compile_mark(name):  # a cpu_op or user_annotation, by torch version
                if not node.compiling:
                    node.compiling = True
                    self.compile_spans.append((ev.start_s, ev.end_s))
            elif ev.kind == "user_annotation":
                if name.startswith(_OPTIMIZER_PREFIXES):
                    node.mark = "optimizer"
            elif ev.kind == "cpu_op":
                node.cpu_op = node
                if name.startswith(_BACKWARD_PREFIX):
                    node.mark, node.bwd_seq, node.bwd_start = "backward", ev.seq, ev.start_s
                    node.engine_depth += 1
                    node.recompute = False
                else:
                    if node.bwd_seq is None and ev.seq is not None and node.engine_depth and not node.recompute:
                        # An engine event without a sequence number (a node with tensor pre-hooks:
                        # FSDP's pre_backward): the node's own event inside it carries it.
                        node.bwd_seq = ev.seq
                    node.is_op = True
                    if parent is not None:
                        parent.has_op_child = True
                    if node.row is None and not node.compiling:
                        node.row = parent.row if parent is not None else None
                        if node.row is None:
                            node.pending = self._row_kind(ev)
                            if node.pending:
                                node.row = node
            if in_opt and node.mark != "optimizer":
                self.in_optimizer.append((ev.start_s, ev.end_s))
            self.nodes[ev.index] = node
            self.order.append(node)
            stack.append(node)

    def _assign_rows(self) -> None:
        """Rows decided after the sweep: a composite with nothing recorded inside it dispatched
        nothing a counter sees, so it is a row of its own (without work). The others were
        decided during the sweep: each op event's row is the outermost enclosing row (see
        :mod:`torch_roofline.count.dispatch`)."""
        for node in self.order:
            if node.row is None and node.is_op and node.pending is None and not node.has_op_child and not node.compiling:
                node.row = node

    def module_scope(self, scope: Tuple[str, ...]) -> Tuple[str, ...]:
        """A forward event's rooted module scope: its ranges; outside every range, the
        ``OUTSIDE`` row when the trace has ranges, else the root."""
        if not scope and self.outside:
            return _OUTSIDE_SCOPE
        return _rooted(scope)

    def _forward_sequence_map(self, carry: Optional[SliceCarry]) -> Dict[int, List[_SeqEntry]]:
        """Sequence number -> its forward ops in time order: this trace's, after the earlier
        slices' of ``carry`` (which then holds them all)."""
        by_seq: Dict[int, List[_SeqEntry]] = defaultdict(list)
        continued = self.continued
        for node in self.order:
            ev = node.event
            if ev.kind == "cpu_op" and ev.seq is not None and (node.mark not in _NOT_FORWARD or node.recompute) \
                    and ev.index not in continued:
                by_seq[ev.seq].append((ev.start_s, self.module_scope(node.scope), node.ranges))
        for entries in by_seq.values():
            entries.sort(key=lambda t: t[0])
        if carry is None:
            return by_seq
        known = carry.forward
        for seq, entries in by_seq.items():  # this slice's ops begin after the earlier slices'
            known.setdefault(seq, []).extend(entries)
        return known

    def counted(self, node: _Node) -> bool:
        """Whether the node's event begins in this trace (its call is counted here), not
        carried from the slice before (:attr:`Trace.continued`)."""
        return node.event.index not in self.continued

    def context(self, node: _Node) -> Tuple[str, Tuple[str, ...], Tuple[int, ...]]:
        """(phase, rooted module scope, module range indices) of a host event."""
        if node.mark == "optimizer":
            return "optimizer", _ROOT_SCOPE, ()
        if node.recompute:  # a checkpointed forward re-run in backward: its own module ranges
            return "backward", _rooted(node.scope), node.ranges
        if node.mark == "backward":
            entries = self._fwd_by_seq.get(node.bwd_seq) if node.bwd_seq is not None else None
            if not entries:
                return "backward", _ROOT_SCOPE, ()
            # The node's creator is the last forward op showing this number before backward.
            starts = self._fwd_starts.get(node.bwd_seq)
            if starts is None or len(starts) != len(entries):
                starts = self._fwd_starts[node.bwd_seq] = [t[0] for t in entries]
            i = bisect.bisect_right(starts, node.bwd_start) - 1
            _, scope, ranges = entries[max(i, 0)]
            return "backward", scope, ranges
        return "forward", self.module_scope(node.scope), node.ranges

    def launch_site(self, event_index: int) -> Optional[_Node]:
        return self.nodes.get(event_index)


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
            (:func:`~torch_roofline.timing.segments.slice_trace`), attributed after the slices
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
    timeline = _HostTimeline(trace, names, labels, outside, collapse=not on_device, carry=carry)
    try:
        return _attribute(trace, timeline, on_device, carry)
    finally:
        timeline.release()


def _attribute(trace: Trace, timeline: "_HostTimeline", on_device: bool,
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
    trace: Trace, timeline: _HostTimeline, row_nodes: List[_Node], row_index: Mapping[int, int]
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


def _as_int(value: Union[int, str]) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _op_rows(
    timeline: _HostTimeline, row_nodes: List[_Node], per_row: Mapping[int, List[DeviceActivity]],
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


def _main_thread(timeline: _HostTimeline) -> Optional[Tuple[object, object]]:
    best, best_count = None, -1
    for key, events in timeline.threads.items():
        count = sum(1 for e in events if e.kind == "cpu_op")
        if count > best_count:
            best, best_count = key, count
    return best


def _step_time(
    steps: Sequence[TraceEvent], timeline: _HostTimeline, activities: Sequence[DeviceActivity]
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


def merged_spans(spans: Iterable[Tuple[float, float]]) -> List[Tuple[float, float]]:
    """``(start, end)`` spans (seconds) merged where they overlap or touch, sorted."""
    out: List[List[float]] = []
    for lo, hi in sorted(spans):
        if out and lo <= out[-1][1]:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return [(lo, hi) for lo, hi in out]


def _union_length(intervals: Iterable[Tuple[float, float]]) -> float:
    return sum(hi - lo for lo, hi in merged_spans(intervals))


def _phase_markers(timeline: _HostTimeline, phase: str) -> List[_Node]:
    """Host events that mark ``phase``: autograd engine events or optimizer annotations, and
    ``roofline::phase::<phase>`` ranges (nested ones included; callers take unions)."""
    found = []
    for node in timeline.order:
        ev = node.event
        if phase == "backward":
            marks = ev.kind == "cpu_op" and ev.name.startswith(_BACKWARD_PREFIX)
        else:
            marks = ev.kind == "user_annotation" and ev.name.startswith(_OPTIMIZER_PREFIXES)
        parsed = parse_range_name(ev.name) if ev.kind == "user_annotation" else None
        marks = marks or (parsed is not None and parsed == ("phase", phase))
        if marks:
            found.append(node)
    return found


def _peak_memory(trace: Trace, on_device: bool) -> Optional[int]:
    device_type = 1 if on_device else 0
    totals = [m.total_allocated_bytes for m in trace.memory if m.device_type == device_type]
    return max(totals) if totals else None


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


def _forward_ranges(timeline: _HostTimeline) -> List[_Node]:
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


def _cpu_module_rows(timeline: _HostTimeline, steps: int, step_time_s: float,
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


def _count_calls(timeline: _HostTimeline, markers: Sequence[_Node], phase: str, steps: int,
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


def _gpu_module_rows(timeline: _HostTimeline, activities: Sequence[DeviceActivity], steps: int,
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
