"""The host timeline of a trace: per thread, how its events nest, which of them are op rows (the
calls a dispatch-mode counter sees), and the module and phase each ran in (module ranges,
autograd's sequence numbers for backward ops, optimizer marks). Shared by
:func:`~torch_roofline.timing.attribution.attribute` and :mod:`torch_roofline.timing.counters`.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple, Union

from torch_roofline.records import OUTSIDE
from torch_roofline.timing.compiled import is_fused_kernel
from torch_roofline.timing.ranges import RANGE_PREFIX, parse_range_name, read_labels
from torch_roofline.timing.trace import Trace, TraceEvent
from torch_roofline.count.dispatch import default_is_composite, is_composite_call, op_kind

__all__ = ["HostTimeline", "SliceCarry", "DeviceActivity", "dotted_op_name", "merged_spans"]


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
    (``attribute(slice, carry=...)``; :func:`~torch_roofline.timing.slices.slice_trace`),
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


class HostTimeline:
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


def _as_int(value: Union[int, str]) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


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


def _phase_markers(timeline: HostTimeline, phase: str) -> List[_Node]:
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
