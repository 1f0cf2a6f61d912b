"""Big traces a few steps at a time: where a trace's steps and events are, and one part of it.

Held whole as records, a trace costs about ten bytes of memory per byte of file (its events,
the attribution's nodes, the op rows and their costs): a 1 GB trace would need ~10 GB. A
trace of many ``ProfilerStep#N`` steps is read instead in two goes:

1. :func:`scan_trace` reads the file once, piece by piece
   (:class:`~torch_roofline.timing.trace.EventPieces`), and keeps only where things are:
   each piece's place in the file (or, for a gzip file, which cannot be read from the
   middle, the piece compressed again, about a tenth of its size), the time range of its host
   events and the correlation ids of its device activity, and the ``ProfilerStep#N``
   markers. Nothing per event is kept.
2. :func:`part_trace` builds the :class:`~torch_roofline.timing.trace.Trace` of a few
   consecutive steps from the pieces that hold them: host events (ops, annotations, memory
   and flow events) by time, device activity (kernels, memcpys, memsets) by the correlation
   id of the launch that a kept host event made. Kineto writes a GPU trace's host events of
   every step first and the device activity after them, so the pieces are chosen by time for
   the one and by correlation id for the other, never by their place in the file. The part is
   then cut to its steps exactly as a whole trace is
   (:func:`~torch_roofline.timing.steps.within`), with the times measured from the whole
   file's origin, so each event is the record a whole-file read makes of it.

:func:`plan_parts` groups the steps into parts of about :data:`PART_BYTES` of file each;
:mod:`torch_roofline.offline` reads one part at a time and adds up what each part measured
and counted (:mod:`torch_roofline.timing.merge`). Memory then grows with one part and the
distinct calls, not with the file.

A part is at least one step. A step too long to hold at once (a 4 GB trace of 5 steps) is
read in slices, one after the other (:func:`slice_cuts`, :func:`slice_trace`): a cut never
falls inside an op call or a launch (it moves to the call's start), only inside the spans
that hold calls (module ranges, autograd engine events, the step, annotations); such a span
ends at the cut and the next slice carries it from its start, so its time is counted once
over the slices and its call in the slice where it began. Each slice is attributed after the
ones before it (:class:`~torch_roofline.timing.attribution.SliceCarry`: the step's forward
ops by autograd sequence number, for backward ops in later slices; the module calls counted).
Memory then grows with one slice, the step's forward op calls and module ranges, and its op
costs (one record per op call), not with its events.

Example::

    scan = scan_trace("big.pt.trace.json.gz")
    for steps in plan_parts(scan):
        trace = part_trace(scan, steps)
"""

from __future__ import annotations

import math
import os
import re
import zlib
from dataclasses import dataclass, replace
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from torch_roofline.timing.ranges import PHASE_PREFIX, RANGE_PREFIX

import msgspec

from torch_roofline.timing.steps import profiler_steps, span_test, span_tests, within
from torch_roofline.timing._trace_parse import (_TIME_LIMIT_US, _Builder, _duration_event, _int_or_none, _loads,
                                                _memory_event, _ts_us, kind_of_category)
from torch_roofline.timing.trace import DEVICE_KINDS, LAUNCH_KINDS, EventPieces, MemoryEvent, Trace, _Unstreamable

__all__ = ["PART_BYTES", "BLOCK_BYTES", "TraceBlock", "TraceScan", "StepMarker", "RangeScan", "scan_trace", "scan_range",
           "join_scans", "plan_parts", "part_trace"]

#: Bytes of (decompressed) file per part (:func:`plan_parts`): a part's records take about ten
#: times that while it is read.
PART_BYTES = 32 << 20
#: Bytes of file per piece kept by the scan: a part reads the pieces that overlap it, so
#: smaller pieces read less beyond the part's own events (a 25 MB part: 8 % more with 2 MB
#: pieces, 1.6 % with 512 KB ones, which the scan also decodes faster).
BLOCK_BYTES = 512 << 10
#: Slack in microseconds when choosing the pieces of a part; the exact cut is ``within``'s.
_SLACK_US = 1.0
_PROFILER_STEP = re.compile(r"^ProfilerStep#\d+$")


@dataclass(frozen=True)
class TraceBlock:
    """One piece of a trace file's ``traceEvents`` array, and where its events lie.

    Attributes:
        first: file index of its first event (events are numbered in file order from 0).
        count: how many events it holds.
        offset: where it starts in the (decompressed) file, in bytes.
        size: its length in bytes.
        packed: the piece compressed with zlib when the file is gzip (read back from memory),
            else ``None`` (read back from the file at ``offset``).
        host_lo_us, host_hi_us: earliest and latest ``ts`` of its host events (every event
            kept by time: ops, annotations, runtime calls, memory and flow events), in the
            file's microseconds; ``inf``/``-inf`` when it has none.
        correlation_lo, correlation_hi: smallest and largest correlation id of its device
            activity; ``None`` when it has none.
        ranged: it holds a module range of ours (``roofline::<module>``).
    """

    first: int
    count: int
    offset: int
    size: int
    packed: Optional[bytes]
    host_lo_us: float
    host_hi_us: float
    correlation_lo: Optional[int]
    correlation_hi: Optional[int]
    ranged: bool = False


@dataclass(frozen=True)
class StepMarker:
    """A ``ProfilerStep#N`` marker found by :func:`scan_trace`.

    Attributes:
        index: the event's file index.
        start_us: its ``ts`` (the file's microseconds).
        dur_us: its ``dur`` (microseconds).
    """

    index: int
    start_us: float
    dur_us: float

    @property
    def end_us(self) -> float:
        """Its end in the file's microseconds."""
        return self.start_us + self.dur_us

    def span_s(self, origin_us: float) -> Tuple[float, float]:
        """(start, end) in seconds from ``origin_us``, as the marker's record has them."""
        start = (self.start_us - origin_us) * 1e-6
        return start, start + (self.dur_us * 1e-6 if self.dur_us else 0.0)

    def end_s(self, origin_us: float) -> float:
        """Its end in seconds from ``origin_us``, by the same arithmetic as
        :attr:`TraceEvent.end_s <torch_roofline.timing.trace.TraceEvent.end_s>`."""
        return (self.start_us - origin_us) * 1e-6 + (self.dur_us * 1e-6 if self.dur_us else 0.0)


@dataclass(frozen=True)
class TraceScan:
    """What :func:`scan_trace` keeps of a trace file: where its pieces and steps are.

    Attributes:
        path: the file.
        header: the document's keys other than ``traceEvents``.
        blocks: its pieces, in file order.
        markers: its ``ProfilerStep#N`` markers, by start time.
        origin_us: the earliest duration event's ``ts`` (the origin every time is measured from).
        events: events in the file.
        bytes: bytes of the (decompressed) ``traceEvents`` array.
    """

    path: str
    header: Mapping[str, Any]
    blocks: Tuple[TraceBlock, ...]
    markers: Tuple[StepMarker, ...]
    origin_us: float
    events: int
    bytes: int


def scan_trace(path: str) -> Optional[TraceScan]:
    """Read ``path`` once for where its pieces, steps and events are (module docstring).

    Returns ``None`` when the file is not one this reads piece by piece (its layout, or an
    event without a usable ``ts``): the caller then reads it whole, which names what is wrong.
    """
    scanned = scan_range(path)
    return None if scanned is None else join_scans(path, [scanned])


@dataclass(frozen=True)
class RangeScan:
    """:func:`scan_range`'s result: a :class:`TraceScan` of a byte range of the file, its
    events numbered from 0 (:func:`join_scans` numbers them in the file).

    Attributes:
        header: the document's keys read in the range (before the array in the first range,
            after it in the last).
        blocks, markers: as in :class:`TraceScan`, numbered within the range.
        events: events in the range.
        origin_us: the earliest duration event's ``ts`` (``inf``: none).
    """

    header: Mapping[str, Any]
    blocks: Tuple[TraceBlock, ...]
    markers: Tuple[StepMarker, ...]
    events: int
    origin_us: float


def scan_range(path: str, start: Optional[int] = None, end: Optional[int] = None) -> Optional[RangeScan]:
    """:func:`scan_trace` of the events from byte ``start`` (an event's first byte; default
    the array's start) to ``end`` (just after an event's comma; default the array's end), as
    a :class:`RangeScan`, or ``None`` (see :func:`scan_trace`)."""
    pieces = EventPieces(os.fspath(path), decode=_decode_scan, chunk=BLOCK_BYTES, start=start, end=end)
    blocks: List[TraceBlock] = []
    markers: List[StepMarker] = []
    origin = math.inf
    index = 0
    try:
        for offset, piece, events in pieces:
            scanned = _scan_piece(events, index, markers)
            if scanned is None:
                return None
            lo, hi, c_lo, c_hi, first_ts, ranged = scanned
            origin = min(origin, first_ts)
            blocks.append(TraceBlock(index, len(events), offset, len(piece),
                                     zlib.compress(piece, 1) if pieces.gzipped else None, lo, hi, c_lo, c_hi, ranged))
            index += len(events)
    except _Unstreamable:
        return None
    return RangeScan(pieces.header, tuple(blocks), tuple(markers), index, origin)


def join_scans(path: str, ranges: Sequence[RangeScan]) -> TraceScan:
    """The :class:`TraceScan` of a file from the scans of its consecutive byte ranges."""
    blocks: List[TraceBlock] = []
    markers: List[StepMarker] = []
    header: Dict[str, Any] = {}
    first = 0
    for r in ranges:
        header.update(r.header)
        blocks += [replace(b, first=b.first + first) for b in r.blocks] if first else list(r.blocks)
        markers += [replace(m, index=m.index + first) for m in r.markers] if first else list(r.markers)
        first += r.events
    markers.sort(key=lambda m: m.start_us)
    origin = min((r.origin_us for r in ranges), default=math.inf)
    return TraceScan(os.fspath(path), header, tuple(blocks), tuple(markers),
                     origin if blocks and origin < math.inf else 0.0, first, sum(b.size for b in blocks))


class _Args(msgspec.Struct):
    """The one field of an event's ``args`` the scan reads."""

    correlation: Any = None


class _ScanEvent(msgspec.Struct):
    """The fields of an event the scan reads; the others are skipped unparsed."""

    ph: Any = None
    cat: Any = None
    name: Any = None
    ts: Any = None
    dur: Any = None
    args: Optional[_Args] = None


_SCAN_DECODER = msgspec.json.Decoder(List[_ScanEvent])


def _decode_scan(raw: bytes) -> List[Any]:
    """A piece's events as :class:`_ScanEvent`s (an event that is not an object, or whose
    ``args`` is not one, fails to decode: the whole read then names it)."""
    return _SCAN_DECODER.decode(raw)


def _scan_piece(events: Sequence[_ScanEvent], first: int, markers: List[StepMarker]
                ) -> Optional[Tuple[float, float, Optional[int], Optional[int], float, bool]]:
    """(host lo, host hi, correlation lo, correlation hi, earliest duration ts, whether it holds
    a module range) of a piece, its step markers appended to ``markers``; ``None`` for an event
    this cannot place."""
    ranged = False
    host: List[Any] = []  # ts of host events
    durations: List[Any] = []  # ts of duration events of a known kind
    correlations: List[Any] = []
    for i, ev in enumerate(events):
        ph = ev.ph
        if ph == "X":
            kind = kind_of_category(ev.cat)
            if kind is None:
                continue
            ts = ev.ts
            durations.append(ts)
            if kind in DEVICE_KINDS:
                args = ev.args
                if args is not None:
                    correlations.append(args.correlation)
                continue
            host.append(ts)
            if kind == "user_annotation" or kind == "cpu_op":
                name = ev.name
                if type(name) is str and name[:13] == "ProfilerStep#" and _PROFILER_STEP.match(name):
                    dur = ev.dur
                    markers.append(StepMarker(first + i, ts, dur if type(dur) is int or type(dur) is float else 0))
                elif not ranged and type(name) is str and name[:10] == RANGE_PREFIX and name[:17] != PHASE_PREFIX:
                    ranged = True
        elif ph == "i":
            if ev.name == "[memory]":
                host.append(ev.ts)
        elif ph == "s" or ph == "f":
            host.append(ev.ts)
    try:  # one C-speed pass each; a ts that is not a number makes the whole read say what is wrong
        lo, hi = (min(host), max(host)) if host else (math.inf, -math.inf)
        earliest = min(durations) if durations else math.inf
    except TypeError:
        return None
    if not all(_finite(x) for x in (lo, hi, earliest) if x not in (math.inf, -math.inf)):
        return None
    ids = [c if type(c) is int else _int_or_none(c) for c in correlations]
    ids = [c for c in ids if c is not None]
    return lo, hi, (min(ids) if ids else None), (max(ids) if ids else None), earliest, ranged


def _finite(x: Any) -> bool:
    return (type(x) is int or type(x) is float) and math.isfinite(x)


def plan_parts(scan: TraceScan, part_bytes: Optional[int] = None, at_least: int = 1
               ) -> Tuple[Tuple[StepMarker, ...], ...]:
    """The steps grouped into parts, in time order: parts of about ``part_bytes`` (default
    :data:`PART_BYTES`) of file each, at least ``at_least`` of them (the processes reading
    them) where there are that many steps, at least one step each, the file's bytes shared
    evenly between its steps and the steps evenly between the parts."""
    part_bytes = PART_BYTES if part_bytes is None else part_bytes
    markers = scan.markers
    if not markers:
        return ()
    parts = max(math.ceil(scan.bytes / max(part_bytes, 1)), at_least, 1)
    per = math.ceil(len(markers) / min(parts, len(markers)))
    return tuple(markers[i:i + per] for i in range(0, len(markers), per))


def part_trace(scan: TraceScan, steps: Sequence[StepMarker], after_s: Optional[float] = None
               ) -> Optional[Tuple[Trace, Tuple[Tuple[float, float], ...]]]:
    """The part of the file holding ``steps`` (a few consecutive markers of ``scan``), cut to
    them as :func:`~torch_roofline.timing.steps.within` cuts a whole trace, and the steps'
    spans (seconds); ``None`` when none of them holds an op call.

    Times are measured from the whole file's origin and events keep their file indices, so
    each event is the record a whole-file read makes of it. ``after_s``: leave out host and
    memory events up to this time (seconds), which the part before kept. Of the memory events
    only those holding the largest ``Total Allocated`` of each device type are kept (a
    report's peak memory: :class:`~torch_roofline.timing.attribution.TraceTiming`): a trace
    recorded with ``profile_memory=True`` holds one per allocation and one per free. Flow
    events are left out (:attr:`Trace.flows <torch_roofline.timing.trace.Trace.flows>` is
    empty): nothing the report reads needs them.
    """
    lo = min(m.start_us for m in steps) - _SLACK_US
    hi = max(m.end_us for m in steps) + _SLACK_US
    origin = scan.origin_us
    # Host events are kept by within()'s own rule on the steps' spans (times by the records'
    # arithmetic), so the part needs no second cut unless one of its markers holds no op.
    inside, covers = span_tests([m.span_s(origin) for m in steps], after_s)
    builder = _Builder(scan.path, origin_us=origin)
    launched: set = set()
    memory: List[Tuple[int, Any]] = []
    # a piece whose host events all lie in one step's span needs no test per event
    kept_for_device = _read_host(scan, builder, lo, hi, inside, covers, launched, memory)
    _add_launched(scan, builder, launched, kept_for_device)
    del kept_for_device
    trace = replace(builder.finish(scan.header), memory=_memory_peaks(scan, memory, inside))
    wanted = {m.index for m in steps}
    spans = tuple(sorted((e.start_s, e.end_s) for e in profiler_steps(trace) if e.index in wanted))
    if not spans:
        return None
    if len(spans) < len(steps):  # a marker that holds no op is no step: cut to the others
        trace = replace(within(trace, spans, after_s), memory=_memory_peaks(scan, memory, span_test(spans, after_s)))
    return trace, spans


def _add_launched(scan: TraceScan, builder: _Builder, launched: set, read: Mapping[int, List[Any]]) -> None:
    """The device activity launched by the correlation ids ``launched``, into ``builder``, from
    the pieces whose ids may hold them (``read``: pieces already read, by first event)."""
    if not launched:
        return
    c_lo, c_hi = min(launched), max(launched)
    for block in scan.blocks:
        if block.correlation_lo is None or block.correlation_hi < c_lo or block.correlation_lo > c_hi:
            continue
        events = read.get(block.first)
        if events is None:
            events = _read_block(scan, block)
        _add_device(builder, block.first, events, launched)


def _memory_peaks(scan: TraceScan, memory: Sequence[Tuple[int, Any]], inside: Any) -> Tuple[MemoryEvent, ...]:
    """The memory events inside the steps holding the largest ``Total Allocated`` of their
    device type, as records (a malformed one is read as a record, which names what is wrong)."""
    best: Dict[Any, Tuple[int, int, Any]] = {}
    origin = scan.origin_us
    for index, ev in memory:
        args, ts = ev.get("args"), ev.get("ts")
        if type(args) is not dict or (type(ts) is not float and type(ts) is not int):
            _memory_event(scan.path, index, ev, origin)  # raises, naming the event
            continue
        total, kind = args.get("Total Allocated"), args.get("Device Type")
        total = total if type(total) is int else _int_or_none(total) or 0
        kind = kind if type(kind) is int else _int_or_none(kind) or 0
        known = best.get(kind)
        if (known is None or total > known[0]) and inside((ts - origin) * 1e-6):  # the cheap test first
            best[kind] = (total, index, ev)
    peaks = [_memory_event(scan.path, index, ev, origin) for _, index, ev in best.values()]
    return tuple(sorted(peaks, key=lambda m: m.time_s))


def _read_block(scan: TraceScan, block: TraceBlock) -> List[Any]:
    if block.packed is not None:
        raw = zlib.decompress(block.packed)
    else:
        with open(scan.path, "rb") as f:
            f.seek(block.offset)
            raw = f.read(block.size)
    events = _loads(b"[" + raw + b"]")
    if not isinstance(events, list) or len(events) != block.count:
        raise OSError(f"{scan.path}: the file changed while it was read (a piece at byte {block.offset} no longer "
                      "holds the events it held); read it again once nothing writes to it")
    return events


def _add_host(builder: _Builder, first: int, events: Sequence[Any], lo: float, hi: float, origin: float,
              inside: Callable[[float], bool], launched: set, memory: List[Tuple[int, Any]],
              whole: bool = False) -> None:
    """A piece's host duration events inside the steps (``inside`` of their start in seconds;
    ``[lo, hi]``, microseconds, a quick bound first; every one when ``whole``: the piece lies
    in one step); their launches' correlation ids into ``launched``; memory events within the
    bound into ``memory``, unread. Flow events are left out (nothing downstream reads them)."""
    durations, label = builder.durations, builder.label
    for i, ev in enumerate(events):
        ph = ev.get("ph")
        if ph == "X":
            kind = kind_of_category(ev.get("cat"))
            if kind is None or kind in DEVICE_KINDS:
                continue
            ts = ev["ts"]  # a number: the scan refused any other
            if whole or (lo <= ts <= hi and inside((ts - origin) * 1e-6)):
                # what _Builder.add does with a duration event (its origin is the file's)
                if type(ts) is not float or not -_TIME_LIMIT_US < ts < _TIME_LIMIT_US:
                    ts = _ts_us(label, first + i, ts)
                durations.append(_duration_event(label, first + i, kind, ev, ts, origin))
                if kind in LAUNCH_KINDS:
                    args = ev.get("args")
                    c = _int_or_none(args.get("correlation")) if type(args) is dict else None
                    if c is not None:
                        launched.add(c)
        elif ph == "i":
            if ev.get("name") == "[memory]":
                ts = ev.get("ts")
                if not (type(ts) is float or type(ts) is int) or lo <= ts <= hi:
                    memory.append((first + i, ev))


def _add_device(builder: _Builder, first: int, events: Sequence[Any], launched: set) -> None:
    """Device activity of a piece launched by one of ``launched``."""
    add = builder.add
    for i, ev in enumerate(events):
        if ev.get("ph") != "X":
            continue
        if kind_of_category(ev.get("cat")) not in DEVICE_KINDS:
            continue
        args = ev.get("args")
        c = _int_or_none(args.get("correlation")) if type(args) is dict else None
        if c in launched:
            add(first + i, ev)


def _read_host(scan: TraceScan, builder: _Builder, lo_us: float, hi_us: float, inside: Callable[[float], bool],
               covers: Callable[[float, float], bool], launched: set, memory: List[Tuple[int, Any]]
               ) -> Dict[int, List[Any]]:
    """The host events of the pieces overlapping ``[lo_us, hi_us]`` (the file's microseconds)
    whose start (seconds) is ``inside``, into ``builder`` (every event of a piece whose host
    events the window ``covers`` from first to last); their launches' correlation ids into
    ``launched``, their memory events into ``memory``. Returns the pieces read that hold
    device activity, by first event (for :func:`_add_launched`)."""
    origin = scan.origin_us
    kept_for_device: Dict[int, List[Any]] = {}
    for block in scan.blocks:
        if block.host_hi_us < lo_us or block.host_lo_us > hi_us:
            continue
        events = _read_block(scan, block)
        if block.correlation_lo is not None:
            kept_for_device[block.first] = events
        whole = covers((block.host_lo_us - origin) * 1e-6, (block.host_hi_us - origin) * 1e-6)
        _add_host(builder, block.first, events, lo_us, hi_us, origin, inside, launched, memory, whole)
    return kept_for_device
