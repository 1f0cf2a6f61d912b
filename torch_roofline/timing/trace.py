"""Read Chrome/Kineto traces written by torch.profiler into frozen records.

:func:`load_trace` accepts what ``torch.profiler.profile.export_chrome_trace`` and
``torch.profiler.tensorboard_trace_handler`` write (``.json`` or gzip-compressed
``.json.gz``; compression is detected from the file's bytes, not its name) or the
already-parsed JSON object.

What is kept (Kineto ``cat`` → :attr:`TraceEvent.kind`):

* ``cpu_op`` (aten ops, autograd engine events), ``user_annotation`` (``record_function``
  ranges: our ``roofline::`` module ranges, ``ProfilerStep#N``, ``Optimizer.step#...``),
  ``gpu_user_annotation`` (the same ranges drawn on a GPU stream),
* ``cuda_runtime`` / ``cuda_driver`` (host API calls: kernel launches, memcpy calls),
* ``kernel``, ``gpu_memcpy``, ``gpu_memset`` (device activity, on ``pid`` = device,
  ``tid`` = stream), ``cuda_sync``,
* ``cuda_profiler_range`` (CUPTI range-profiler counters, one event per kernel),
* ``[memory]`` instant events (``profile_memory=True``) as :class:`MemoryEvent`,
* ``ac2g`` / ``fwdbwd`` flow events as :class:`FlowEvent`,
* ``deviceProperties`` from the header as :class:`DeviceProperties`.

``python_function`` events, profiler bookkeeping spans and metadata rows are dropped.
Older traces spell categories ``Operator``, ``Runtime``, ``Kernel``, ``Memcpy``, ``Memset``;
they are mapped onto the names above.

Times: the trace stores microseconds; records hold seconds (``start_s`` from the trace's
origin, the earliest timed event, and ``dur_s``).

Big files (256 MB or more on disk) are read chunk by chunk: only one piece of the document
is parsed at a time, each event becomes its record at once, and the recorded shapes, types
and strides that repeat from step to step are shared between the events that repeat them.
The records are the same as a whole-document read's (tested on every fixture and layout);
the peak memory of reading a 200 MB trace drops from 1.93 GB to 0.71 GB, at 10-25 % more
time. A layout the chunked reader does not understand falls back to the whole-document
read, which also words any error.

Validation: every way a file can be unreadable raises one error type, :class:`TraceError`
(a ``ValueError``), naming the file, the event's index in ``traceEvents``, the field, what
was expected and what arrived: a truncated or corrupt ``.gz``, a directory, bytes that are
not UTF-8 JSON, a document without a ``traceEvents`` list, an event that is not a JSON
object, and in the events that are kept: ``ts`` missing, null, a string, NaN or infinite;
``dur`` not a finite number or negative (a NaN or negative duration would otherwise become
a wrong time); ``args`` not an object; ``pid``/``tid`` a list or an object. A missing path
raises ``FileNotFoundError``. Events of dropped kinds are only checked to be objects.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import zlib
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, FrozenSet, Iterator, List, Mapping, Optional, Tuple, Union

from torch_roofline._gc import paused_gc
from torch_roofline.records import frozen_record

__all__ = [
    "TraceError",
    "EVENT_KINDS",
    "DEVICE_KINDS",
    "LAUNCH_KINDS",
    "kind_of_category",
    "TraceEvent",
    "MemoryEvent",
    "FlowEvent",
    "DeviceProperties",
    "Trace",
    "load_trace",
]

EVENT_KINDS: Tuple[str, ...] = (
    "cpu_op",
    "user_annotation",
    "gpu_user_annotation",
    "cuda_runtime",
    "cuda_driver",
    "kernel",
    "gpu_memcpy",
    "gpu_memset",
    "cuda_sync",
    "cuda_profiler_range",
)
"""Kinds of duration events kept by :func:`load_trace`."""

DEVICE_KINDS: Tuple[str, ...] = ("kernel", "gpu_memcpy", "gpu_memset")
"""Kinds that are device activity (time measured on the GPU)."""

LAUNCH_KINDS: Tuple[str, ...] = ("cuda_runtime", "cuda_driver")
"""Kinds of the host calls that launch device activity (joined to it by correlation id)."""

# Older Kineto / TensorBoard-plugin spellings.
_CATEGORY_ALIASES: Mapping[str, str] = {
    "operator": "cpu_op",
    "runtime": "cuda_runtime",
    "driver": "cuda_driver",
    "memcpy": "gpu_memcpy",
    "memset": "gpu_memset",
}

_US = 1e-6  # seconds per microsecond
_RECORD_AGAIN = (
    "the file is damaged or was not written by torch.profiler: record it again with "
    "torch.profiler.profile(...).export_chrome_trace('trace.json') or tensorboard_trace_handler"
)


class TraceError(ValueError):
    """A trace file (or parsed trace) that :func:`load_trace` cannot read.

    The message says which file, which event (its index in ``traceEvents``), which field,
    what was expected (with an example) and what arrived, and how to get a readable trace.
    The parts are also attributes, for programs.

    Attributes:
        source: the path read, or ``"<dict>"`` for an already-parsed trace.
        index: index of the offending event in ``traceEvents``; ``None`` when the problem is
            the file or the document as a whole.
        field: the offending field (``"ts"``, ``"dur"``, ``"args"``, ...); ``None`` for the
            whole event, document or file.
        expected: what the reader expected, with an example.
        got: what it found (a short ``repr``).

    Example::

        try:
            trace = load_trace("trace.json.gz")
        except TraceError as err:
            print(err.source, err.index, err.field)
    """

    def __init__(self, source: str, expected: str, got: str, *, index: Optional[int] = None,
                 field: Optional[str] = None, fix: str = _RECORD_AGAIN) -> None:
        self.source, self.index, self.field, self.expected, self.got = source, index, field, expected, got
        where = "" if index is None else f"event {index}"
        if field is not None:
            where += f"{' ' if where else ''}field {field!r}"
        super().__init__(
            f"load_trace({source!r}): {where + ': ' if where else ''}expected {expected}, got {got}; {fix}"
        )

    def __reduce__(self):  # picklable (multiprocessing) although __init__ takes keywords
        return (_rebuild_trace_error, (self.source, self.expected, self.got, self.index, self.field, self.args))


def _rebuild_trace_error(source, expected, got, index, field, args) -> TraceError:
    err = TraceError.__new__(TraceError)
    ValueError.__init__(err, *args)
    err.source, err.index, err.field, err.expected, err.got = source, index, field, expected, got
    return err


def _empty() -> Mapping[str, Any]:
    return MappingProxyType({})


@dataclass(frozen=True)
class TraceEvent:
    """One duration (``"ph": "X"``) event.

    Attributes:
        kind: normalised category, one of :data:`EVENT_KINDS`.
        name: event name (``"aten::conv2d"``, ``"roofline::layer1"``, a kernel name).
        start_s: start in seconds from the trace origin (:attr:`Trace.origin_us`).
        dur_s: duration in seconds.
        pid: process id for host events, device index for device events.
        tid: thread id for host events, stream for device events.
        index: position of the event in the file (stable identity and tie-breaker).
        correlation: CUPTI correlation id linking a launch to its device activity.
        external_id: Kineto's external id (links ops and launches in newer traces).
        seq: autograd sequence number (``"Sequence number"``), when recorded.
        fwd_thread: ``"Fwd thread id"``: Kineto's internal id of the forward thread of a
            backward op (not an OS thread id; 0 on forward ops).
        device: device index of device activity (``args.device``).
        stream: CUDA stream of device activity.
        bytes: bytes moved by a memcpy/memset (``args.bytes``).
        args: every argument of the event, read-only.
        ts_ns: the event's ``ts`` as written in the file, in integer nanoseconds (the file's
            own clock; live traces: nanoseconds since ``baseTimeNanoseconds``), for joining
            with the profiler's in-memory records; ``None`` when built by hand.
    """

    kind: str
    name: str
    start_s: float
    dur_s: float
    pid: Union[int, str]
    tid: Union[int, str]
    index: int
    correlation: Optional[int] = None
    external_id: Optional[int] = None
    seq: Optional[int] = None
    fwd_thread: Optional[int] = None
    device: Optional[int] = None
    stream: Optional[int] = None
    bytes: Optional[int] = None
    args: Mapping[str, Any] = field(default_factory=_empty, compare=False, repr=False)
    ts_ns: Optional[int] = field(default=None, compare=False, repr=False)

    @property
    def end_s(self) -> float:
        """End in seconds from the trace origin."""
        return self.start_s + self.dur_s


@dataclass(frozen=True)
class MemoryEvent:
    """One ``[memory]`` instant event (``profile_memory=True``).

    Attributes:
        time_s: when it happened, seconds from the trace origin.
        bytes: allocation size in bytes; negative for a free.
        total_allocated_bytes: bytes allocated on that device after this event, as the
            profiler reports it (on the CPU: allocations made while profiling only).
        total_reserved_bytes: bytes reserved by the caching allocator (CUDA), else 0.
        device_type: c10 device type: 0 CPU, 1 CUDA.
        device_id: device index (-1 for the CPU).
        pid: process id.
        tid: thread id.
        address: the block's address (``Addr``), ``None`` when not recorded.
    """

    time_s: float
    bytes: int
    total_allocated_bytes: int
    total_reserved_bytes: int
    device_type: int
    device_id: int
    pid: Union[int, str]
    tid: Union[int, str]
    address: Optional[int] = None


@dataclass(frozen=True)
class FlowEvent:
    """One end of a flow arrow (``ph`` ``"s"`` start or ``"f"`` finish).

    Attributes:
        category: ``"ac2g"`` (launch → device activity) or ``"fwdbwd"`` (forward → backward).
        id: flow id shared by both ends.
        phase: ``"s"`` or ``"f"``.
        time_s: seconds from the trace origin.
        pid: process id.
        tid: thread id.
    """

    category: str
    id: int
    phase: str
    time_s: float
    pid: Union[int, str]
    tid: Union[int, str]


@dataclass(frozen=True)
class DeviceProperties:
    """A GPU described in the trace header (``deviceProperties``).

    Attributes:
        id: device index.
        name: marketing name (``"NVIDIA A100-PG509-200"``).
        total_memory_bytes: global memory in bytes (``totalGlobalMem``).
        num_sms: streaming multiprocessors (``numSms``).
        compute_capability: ``(major, minor)``, e.g. ``(8, 0)``.
        warp_size: threads per warp.
        max_threads_per_sm: ``maxThreadsPerMultiprocessor``.
        shared_memory_per_sm_bytes: ``sharedMemPerMultiprocessor`` in bytes.
        registers_per_sm: ``regsPerMultiprocessor``.
        raw: every field as written in the header.
    """

    id: int
    name: str
    total_memory_bytes: Optional[int] = None
    num_sms: Optional[int] = None
    compute_capability: Optional[Tuple[int, int]] = None
    warp_size: Optional[int] = None
    max_threads_per_sm: Optional[int] = None
    shared_memory_per_sm_bytes: Optional[int] = None
    registers_per_sm: Optional[int] = None
    raw: Mapping[str, Any] = field(default_factory=_empty, compare=False, repr=False)

    def __reduce__(self) -> Tuple[Any, Tuple[Any, ...]]:
        # picklable (a part of a big trace read in a worker process sends it back): the
        # read-only view of the header's fields travels as a plain dict
        values = {f: getattr(self, f) for f in self.__dataclass_fields__}
        values["raw"] = dict(self.raw)
        return _rebuild_device_properties, (values,)


def _rebuild_device_properties(values: Mapping[str, Any]) -> DeviceProperties:
    return DeviceProperties(**{**values, "raw": MappingProxyType(dict(values["raw"]))})


@dataclass(frozen=True)
class Trace:
    """A parsed trace.

    Attributes:
        events: duration events of :data:`EVENT_KINDS`, in file order.
        memory: ``[memory]`` events, in time order.
        flows: flow event ends, in file order.
        devices: GPUs listed in the header (empty on CPU-only traces).
        origin_us: the trace origin in the file's microseconds (earliest event start).
        metadata: top-level header fields other than ``traceEvents`` (``schemaVersion``,
            ``traceName``, ``baseTimeNanoseconds``, ...).
        source: the path read, or ``"<dict>"``.
        continued: file indices of the events carried into this trace from before its start
            (a slice of one long step: :func:`~torch_roofline.timing.segments.slice_trace`),
            their starts moved to the slice's start: their time in it counts, their calls
            were counted in the slice where they began. Empty for a whole trace or a part.
    """

    events: Tuple[TraceEvent, ...]
    memory: Tuple[MemoryEvent, ...] = ()
    flows: Tuple[FlowEvent, ...] = ()
    devices: Tuple[DeviceProperties, ...] = ()
    origin_us: float = 0.0
    metadata: Mapping[str, Any] = field(default_factory=_empty, compare=False, repr=False)
    source: str = "<dict>"
    continued: FrozenSet[int] = frozenset()

    def derived(self, key: str, compute: Callable[["Trace"], Any]) -> Any:
        """``compute(self)``, computed once per trace and kept with it under ``key`` (facts
        that several stages read, e.g. its ``ProfilerStep`` markers). Not a field: equality,
        ``repr`` and :func:`dataclasses.replace` ignore it (a replaced trace computes again)."""
        cache = self.__dict__.get("_derived")
        if cache is None:
            cache = {}
            object.__setattr__(self, "_derived", cache)
        if key not in cache:
            cache[key] = compute(self)
        return cache[key]

    def of_kind(self, *kinds: str) -> Tuple[TraceEvent, ...]:
        """Events whose kind is one of ``kinds``, in file order."""
        wanted = set(kinds)
        return tuple(e for e in self.events if e.kind in wanted)

    @property
    def has_device_activity(self) -> bool:
        """True when the trace holds kernels, memcpys or memsets."""
        return any(e.kind in DEVICE_KINDS for e in self.events)

    def device(self, index: Optional[int] = None) -> Optional[DeviceProperties]:
        """Properties of GPU ``index``; by default the GPU the trace's kernels ran on.

        Returns ``None`` when the header lists no such device (CPU traces).
        """
        if not self.devices:
            return None
        if index is None:
            used = [e.device for e in self.events
                    if e.kind in DEVICE_KINDS and e.device is not None]
            index = min(used) if used else (self.devices[0].id if self.devices else None)
        for props in self.devices:
            if props.id == index:
                return props
        return None


def load_trace(source: Union[str, "os.PathLike[str]", Mapping[str, Any], List[Any]]) -> Trace:
    """Read a Chrome/Kineto trace into a :class:`Trace`.

    Args:
        source: a path to a ``.json`` or ``.json.gz`` file, or the parsed JSON (a dict
            with ``traceEvents``, or the bare list of events).

    Returns:
        The trace, with times in seconds from its origin.

    Raises:
        TraceError: the file or an event cannot be read (see the module docstring); the
            message names the file, the event index, the field, what was expected and what
            arrived.
        FileNotFoundError: no file at ``source``.

    Example::

        trace = load_trace("tests/data/alexnet_a100_forward.kineto.json.gz")
        print(trace.device().name, len(trace.of_kind("kernel")))
    """
    with paused_gc():  # millions of objects, no cycles: see torch_roofline._gc
        return _load(source)


_TRACE_DOCUMENT = "a JSON object with a 'traceEvents' list, e.g. {\"traceEvents\": [{\"ph\": \"X\", ...}]}"


def _load(source: Union[str, "os.PathLike[str]", Mapping[str, Any], List[Any]]) -> Trace:
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if os.path.isfile(path) and os.path.getsize(path) >= _STREAM_BYTES:
            streamed = _stream(path)
            if streamed is not None:
                return streamed
        data = _read_json(path)
        label = path
    else:
        data, label = source, "<dict>"
    if isinstance(data, list):
        data = {"traceEvents": data}
    if not isinstance(data, Mapping):
        raise TraceError(label, _TRACE_DOCUMENT, _describe(data),
                         fix="pass a file exported by torch.profiler (export_chrome_trace)")
    if not isinstance(data.get("traceEvents"), list):
        if "traceEvents" in data:
            got = f"'traceEvents' holding a JSON {_json_type(data['traceEvents'])}"
        else:
            got = f"an object with keys {sorted(map(str, data))[:5]} and no 'traceEvents'"
        raise TraceError(label, _TRACE_DOCUMENT + " as written by torch.profiler's export_chrome_trace", got,
                         field="traceEvents", fix="pass a file exported by torch.profiler")
    return _parse(data, label)


def _read_json(path: str) -> Any:
    if os.path.isdir(path):
        found = sorted(n for n in os.listdir(path) if n.endswith((".json", ".json.gz")))[:3]
        example = os.path.join(path, found[0]) if found else os.path.join(path, "<host>.pt.trace.json.gz")
        raise TraceError(path, "a trace file (.json or .json.gz)", "a directory",
                         fix=f"pass one of the trace files in it, e.g. {example!r}")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise FileNotFoundError(
            f"load_trace({path!r}): no such file; pass the path of a trace written by "
            "torch.profiler (export_chrome_trace or tensorboard_trace_handler)."
        ) from None
    if raw[:2] == b"\x1f\x8b":  # gzip magic
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as err:  # truncated: EOFError; corrupt: BadGzipFile, zlib.error
            raise TraceError(path, "a complete gzip stream (.json.gz)", f"a truncated or corrupt gzip file ({err})",
                             fix="the file was cut short or damaged (a full disk, an interrupted copy): "
                                 "copy or record it again") from None
    try:
        return _loads(raw)
    except (ValueError, RecursionError) as err:  # JSONDecodeError, UnicodeDecodeError: ValueErrors
        raise TraceError(path, "UTF-8 JSON (a Chrome/Kineto trace, .json or .json.gz)",
                         f"bytes that are not valid JSON ({err})") from None


# ----------------------------------------------------------------------------- streaming

#: Files at least this big (bytes on disk) are read chunk by chunk (:func:`_stream`): 2.7x less
#: memory while reading, 10-25 % slower; below it, the whole-document parse is the faster.
_STREAM_BYTES = 256 << 20
#: Bytes read (and parsed) at a time by :func:`_stream`.
_CHUNK = 8 << 20
_EVENTS_KEY = b'"traceEvents"'


class _Unstreamable(Exception):
    """The file's layout is not one :class:`EventPieces` reads: the caller parses it whole."""


class EventPieces:
    """The ``traceEvents`` array of a trace file, piece by piece (about ``chunk`` bytes each,
    default :data:`_CHUNK`).

    Iterating yields ``(offset, piece, events)``: where the piece starts in the (decompressed)
    file, its raw JSON bytes (events joined by commas, no brackets) and its parsed events. The
    array is cut after an event's closing ``}`` and its comma, and each piece parsed with the
    same parser as a whole file; a cut that lands inside a string or a nested object does not
    parse, and an earlier one is tried (``decode``: how a piece is parsed, a JSON array's bytes
    to a list; default the whole-file parser). After the iteration :attr:`header` holds the document's
    other keys (before and after the array). Raises :class:`_Unstreamable` when the layout is
    not one this understands (no ``"traceEvents": [`` in the first chunk, a piece that will not
    parse, anything unexpected at the end); the whole-file parse then words any error.
    """

    def __init__(self, path: str, decode: Optional[Callable[[bytes], Any]] = None, chunk: int = 0,
                 start: Optional[int] = None, end: Optional[int] = None) -> None:
        self.path = path
        self.chunk = chunk or _CHUNK
        # A byte range of a plain file's array (a scan split between processes): ``start``, an
        # event's first byte (no header is read); ``end``, just after the comma that follows
        # an event (the range's last event ends there; nothing after it is read).
        self.start, self.end = start, end
        with open(path, "rb") as probe:
            self.gzipped = probe.read(2) == b"\x1f\x8b"
        self.header: dict = {}
        self.decode = decode or _loads

    def open(self) -> Any:
        """The file for reading, decompressed when it is gzip."""
        return gzip.open(self.path, "rb") if self.gzipped else open(self.path, "rb")

    def __iter__(self) -> Iterator[Tuple[int, bytes, List[Any]]]:
        if (self.start is not None or self.end is not None) and self.gzipped:
            raise _Unstreamable  # a gzip stream cannot be entered in its middle
        try:
            with self.open() as f:
                if self.start is None:
                    head = f.read(max(self.chunk, _CHUNK) if self.end is None else min(max(self.chunk, _CHUNK), self.end))
                    k = head.find(_EVENTS_KEY)
                    j = head.find(b"[", k + len(_EVENTS_KEY)) if k >= 0 else -1
                    if j < 0 or head[k + len(_EVENTS_KEY):j].strip() != b":":
                        raise _Unstreamable
                    header = _loads(head[:k] + b'"traceEvents": []}')
                    if not isinstance(header, dict):
                        raise _Unstreamable
                    buf, base = head[j + 1:], j + 1
                else:
                    f.seek(self.start)
                    header, buf, base = {}, b"", self.start
                left = None if self.end is None else self.end - (base + len(buf))
                while True:
                    more = f.read(self.chunk if left is None else min(self.chunk, left))
                    if not more:
                        break
                    if left is not None:
                        left -= len(more)
                    buf += more
                    cut = _cut(buf, self.decode)
                    if cut is None:
                        if len(buf) > 8 * _CHUNK:  # no event boundary in 64 MB: not a layout this reads
                            raise _Unstreamable
                        continue
                    events, size = cut
                    yield base, buf[:size], events
                    buf, base = buf[size + 1:], base + size + 1
                if self.end is not None:  # the range ends after an event and its comma
                    size = len(buf.rstrip())
                    if size and buf[size - 1:size] != b",":
                        raise _Unstreamable
                    events, size, trailer = (self.decode(b"[" + buf[:size - 1] + b"]"), size - 1, {}) if size else ([], 0, {})
                else:
                    tail = _tail(buf, self.decode)
                    if tail is None:
                        raise _Unstreamable
                    events, size, trailer = tail
                if events:
                    yield base, buf[:size], events
        except (EOFError, OSError, zlib.error, ValueError, RecursionError) as err:
            if isinstance(err, TraceError):
                raise  # an event the reader refuses: the same error as a whole-file read gives
            raise _Unstreamable from None  # a damaged file: the whole-file read says what is wrong
        header.pop("traceEvents", None)
        header.update(trailer)
        self.header = header


def _stream(path: str) -> Optional[Trace]:
    """Read a big trace chunk by chunk (:class:`EventPieces`): only one chunk's parsed events
    are alive at a time, each made a record at once (recorded shapes shared between repeats,
    see :class:`_Builder`). ``None`` when the layout is not one this reads."""
    builder = _Builder(path, intern=True)
    pieces = EventPieces(path)
    index = 0
    try:
        for _, _, events in pieces:
            for ev in events:
                builder.add(index, ev)
                index += 1
    except _Unstreamable:
        return None
    return builder.finish(pieces.header)


def _cut(buf: bytes, decode: Callable[[bytes], Any]) -> Optional[Tuple[List[Any], int]]:
    """The whole events at the start of ``buf`` (parsed) and their length in bytes (the comma
    after them follows), or ``None``."""
    limit = len(buf)
    for _ in range(4):  # a cut inside a string or a nested object fails to parse: try earlier
        pos = buf.rfind(b"},", 0, limit)
        if pos < 0:
            return None
        try:
            events = decode(b"[" + buf[:pos + 1] + b"]")
        except ValueError:
            limit = pos
            continue
        return (events, pos + 1) if isinstance(events, list) else None
    return None


def _tail(buf: bytes, decode: Callable[[bytes], Any]) -> Optional[Tuple[List[Any], int, Mapping[str, Any]]]:
    """The last events, their length in bytes, and the document's keys after ``traceEvents``
    (``]``, then ``}`` or more keys), or ``None``."""
    limit = len(buf)
    for _ in range(4):
        pos = buf.rfind(b"]", 0, limit)
        if pos < 0:
            return None
        rest = buf[pos + 1:].strip()
        try:
            events = decode(b"[" + buf[:pos] + b"]")
            trailer = {} if rest == b"}" else _loads(b"{" + rest[1:]) if rest.startswith(b",") else None
        except ValueError:
            limit = pos
            continue
        if isinstance(events, list) and isinstance(trailer, dict):
            return events, pos, trailer
        limit = pos
    return None


def _loads(raw: bytes) -> Any:
    """Parse JSON bytes: orjson when installed (several times faster on large traces), else json."""
    if _orjson is not None:
        return _orjson.loads(raw)
    return json.loads(raw)


try:  # a dependency of the package; the stdlib parser is the fallback
    import orjson as _orjson
except ImportError:  # pragma: no cover - orjson is in install_requires
    _orjson = None


# ----------------------------------------------------------------------------- validation

#: Largest |ts| and dur accepted, in microseconds (about 3 million years): beyond any clock,
#: and small enough that the nanosecond and second conversions stay finite.
_TIME_LIMIT_US = 1e20


def _json_type(value: Any) -> str:
    """The JSON name of a parsed value's type (``object``, ``array``, ``string``, ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, (list, tuple)):
        return "array"
    return type(value).__name__


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe(value: Any) -> str:
    """A parsed value for an error message: ``a JSON array ([1, 2])``, ``null``."""
    return "null" if value is None else f"a JSON {_json_type(value)} ({_short(value)})"


def _not_an_object(label: str, index: int, ev: Any) -> TraceError:
    return TraceError(label, "a JSON object, e.g. {\"ph\": \"X\", \"name\": \"aten::mm\", \"ts\": 10.5, \"dur\": 2.0}",
                      _describe(ev), index=index)


def _ts_us(label: str, index: int, ts: Any) -> float:
    """``ts`` of event ``index`` as a float in microseconds; a TraceError unless a finite number."""
    if isinstance(ts, bool) or not isinstance(ts, (int, float)):
        got = "no 'ts'" if ts is _MISSING else _describe(ts)
        raise TraceError(label, "a number of microseconds, e.g. 1714.25", got, index=index, field="ts")
    if not -_TIME_LIMIT_US < ts < _TIME_LIMIT_US:  # NaN fails every comparison
        raise TraceError(label, f"a finite number of microseconds (|ts| < {_TIME_LIMIT_US:g}), e.g. 1714.25",
                         _short(ts), index=index, field="ts")
    return float(ts)


def _bad_dur(label: str, index: int, dur: Any) -> TraceError:
    if isinstance(dur, (int, float)) and not isinstance(dur, bool):
        why = "a negative duration" if dur < 0 else "NaN" if dur != dur else "a duration beyond any clock"
        got = f"{_short(dur)} ({why})"
    else:
        got = _describe(dur)
    return TraceError(label, "a finite, non-negative number of microseconds, e.g. 12.5", got, index=index,
                      field="dur", fix="the trace is damaged (a NaN or negative duration would be a wrong time): "
                                       "record it again with torch.profiler")


def _args(label: str, index: int, args: Any) -> Mapping[str, Any]:
    """``args`` of event ``index``: an object (absent or null: empty); a TraceError otherwise."""
    if args is None or args is _MISSING:
        return _NO_ARGS
    if isinstance(args, Mapping):
        return args
    raise TraceError(label, "a JSON object, e.g. {\"External id\": 12}", _describe(args),
                     index=index, field="args")


def _thread_id(label: str, index: int, name: str, value: Any) -> Union[int, str]:
    """``pid``/``tid`` of event ``index``: a number or a string; a TraceError for arrays and objects."""
    if value is _MISSING:
        return 0
    if value is None or isinstance(value, (int, float, str)):
        return value
    raise TraceError(label, "a number or a string, e.g. 4711", _describe(value),
                     index=index, field=name)


_MISSING: Any = object()


# ----------------------------------------------------------------------------- records


def _int_or_none(value: Any) -> Optional[int]:
    if value is None:  # the common case: the event has no such field
        return None
    if type(value) is int:
        return value
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return None
    return None


_KIND_OF_CATEGORY: dict = {}


def _kind(event: Mapping[str, Any]) -> Optional[str]:
    return kind_of_category(event.get("cat", ""))


def kind_of_category(raw: Any) -> Optional[str]:
    """The :data:`EVENT_KINDS` kind of an event's ``cat`` (older spellings included), or
    ``None`` for a category the reader does not keep."""
    try:
        return _KIND_OF_CATEGORY[raw]
    except (KeyError, TypeError):
        pass
    cat = str(raw).lower()
    cat = _CATEGORY_ALIASES.get(cat, cat)
    kind = cat if cat in EVENT_KINDS else None
    if isinstance(raw, str):
        _KIND_OF_CATEGORY[raw] = kind
    return kind


def _parse(data: Mapping[str, Any], label: str) -> Trace:
    builder = _Builder(label)
    add = builder.add
    for i, ev in enumerate(data["traceEvents"]):
        add(i, ev)
    return builder.finish(data)


class _Builder:
    """Turns events into records as they arrive (from a whole parsed document, or chunk by
    chunk from :func:`_stream`): times are kept in the file's microseconds until the origin
    (the earliest duration event) is known, then converted by the same arithmetic,
    ``(ts - origin) * 1e-6``. With ``intern``, the recorded shapes, types and strides of
    events are shared between events that repeat them (a trace of many steps repeats each
    step's), so memory grows with the distinct calls, not with the events."""

    def __init__(self, label: str, intern: bool = False, origin_us: Optional[float] = None) -> None:
        self.label = label
        self.durations: List[TraceEvent] = []
        self.memory: List[MemoryEvent] = []
        self.flows: List[Tuple[int, Mapping[str, Any]]] = []
        self.origin_us = math.inf
        self.shared: Optional[dict] = {} if intern else None
        # Known ahead (a part of a file: the whole file's origin): records are made with their
        # times in seconds from it, by the same arithmetic, and finish() converts nothing.
        self.fixed_origin_us = origin_us
        self.in_order = True  # durations were added in file order (nothing to sort)

    def add(self, i: int, ev: Any) -> None:
        label = self.label
        if type(ev) is not dict and not isinstance(ev, Mapping):
            raise _not_an_object(label, i, ev)
        ph = ev.get("ph")
        if ph == "X":
            kind = _kind(ev)
            if kind is not None:
                ts = ev.get("ts", _MISSING)
                # Hot path: one type check and one chained comparison (NaN fails it) per event.
                if type(ts) is not float or not -_TIME_LIMIT_US < ts < _TIME_LIMIT_US:
                    ts = _ts_us(label, i, ts)
                if ts < self.origin_us:
                    self.origin_us = ts
                if self.shared is not None:
                    _share_args(ev, self.shared)
                durations = self.durations
                if durations and durations[-1].index > i:
                    self.in_order = False
                durations.append(_duration_event(label, i, kind, ev, ts, self.fixed_origin_us))
        elif ph == "i" and ev.get("name") == "[memory]":
            self.memory.append(_memory_event(label, i, ev, self.fixed_origin_us))
        elif ph in ("s", "f") and ev.get("cat") in ("ac2g", "fwdbwd"):
            self.flows.append((i, ev))

    def finish(self, header: Mapping[str, Any], origin_us: Optional[float] = None) -> Trace:
        """The trace of the events added. ``origin_us``: the origin to measure times from (a
        part of a file read by :mod:`~torch_roofline.timing.segments` keeps the whole file's);
        default: the earliest duration event added (ignored when the builder was made with
        one). Events added out of file order (a part's host events first, then its device
        activity) are put back in file order."""
        label = self.label
        fixed = self.fixed_origin_us
        if fixed is not None:
            origin_us = fixed
        elif origin_us is None:
            origin_us = self.origin_us if self.durations else 0.0
        if not self.in_order:
            self.durations.sort(key=_event_index)
            self.flows.sort(key=_first)
        if fixed is None:
            for record in self.durations:  # start_s held the file's microseconds until now
                d = record.__dict__
                d["start_s"] = (d["start_s"] - origin_us) * _US
            for m in self.memory:
                d = m.__dict__
                d["time_s"] = (d["time_s"] - origin_us) * _US
        memory = tuple(sorted(self.memory, key=lambda m: m.time_s))
        flow_events = tuple(_flow_event(label, i, ev, origin_us) for i, ev in self.flows)
        devices = _devices(label, header.get("deviceProperties"))
        metadata = MappingProxyType({k: v for k, v in header.items() if k != "traceEvents"})
        return Trace(events=tuple(self.durations), memory=memory, flows=flow_events, devices=devices,
                     origin_us=origin_us, metadata=metadata, source=label)


def _event_index(event: TraceEvent) -> int:
    return event.index


def _first(pair: Tuple[int, Any]) -> int:
    return pair[0]


#: The recorded-call fields of an event's ``args`` that repeat from step to step.
_SHARED_ARGS = ("Input Dims", "Input type", "Input Strides", "Concrete Inputs")


def _share_args(ev: Mapping[str, Any], shared: dict) -> None:
    """Replace the event's recorded shapes, types and strides by equal objects seen before
    (one key for the four fields: a single serialisation per event)."""
    args = ev.get("args")
    if type(args) is not dict or "Input Dims" not in args:
        return
    values = [args.get(key) for key in _SHARED_ARGS]
    token = _orjson.dumps(values) if _orjson is not None else json.dumps(values).encode()
    seen = shared.get(token)
    if seen is None:
        shared[token] = values
    else:
        for key, value in zip(_SHARED_ARGS, seen):
            if value is not None:
                args[key] = value


def _duration_event(label: str, index: int, kind: str, ev: Mapping[str, Any], ts: float,
                    origin_us: Optional[float]) -> TraceEvent:
    # Hot path (one call per event of a trace of up to millions): the record is filled
    # without the frozen dataclass's __init__, ``args`` is wrapped, not copied, and each
    # field is checked by one type test, the rare others in a helper that names the event.
    args = ev.get("args", _MISSING)
    if type(args) is not dict:
        args = _args(label, index, args)
    dur = ev.get("dur", 0)
    if (type(dur) is not float and type(dur) is not int) or not 0 <= dur < _TIME_LIMIT_US:
        raise _bad_dur(label, index, dur)
    pid = ev.get("pid", 0)
    if type(pid) is not int:
        pid = _thread_id(label, index, "pid", pid)
    tid = ev.get("tid", 0)
    if type(tid) is not int:
        tid = _thread_id(label, index, "tid", tid)
    get = args.get
    # The integer fields of ``args`` (most absent from most events): one get each, and the
    # rare non-int value (a float, a string) through _int_or_none.
    correlation, external_id, seq = get("correlation"), get("External id"), get("Sequence number")
    fwd_thread, device, stream, nbytes = get("Fwd thread id"), get("device"), get("stream"), get("bytes")
    record = _new_event(TraceEvent)
    _set_dict(record, "__dict__", {
        "kind": kind,
        "name": str(ev.get("name", "")),
        "start_s": ts if origin_us is None else (ts - origin_us) * _US,  # None: converted later
        "dur_s": dur * _US if dur else 0.0,
        "pid": pid,
        "tid": tid,
        "index": index,
        "correlation": correlation if correlation is None or type(correlation) is int else _int_or_none(correlation),
        "external_id": external_id if external_id is None or type(external_id) is int else _int_or_none(external_id),
        "seq": seq if seq is None or type(seq) is int else _int_or_none(seq),
        "fwd_thread": fwd_thread if fwd_thread is None or type(fwd_thread) is int else _int_or_none(fwd_thread),
        "device": device if device is None or type(device) is int else _int_or_none(device),
        "stream": stream if stream is None or type(stream) is int else _int_or_none(stream),
        "bytes": nbytes if nbytes is None or type(nbytes) is int else _int_or_none(nbytes),
        "args": MappingProxyType(args),
        "ts_ns": round(ts * 1000.0),
    })
    return record


#: A frozen record is filled by handing it its ``__dict__`` whole (see records.frozen_record:
#: same fields, equality and hash as one built by ``__init__``; no copy of the dict).
_new_event = object.__new__
_set_dict = object.__setattr__


_NO_ARGS: Mapping[str, Any] = MappingProxyType({})


def _memory_event(label: str, index: int, ev: Mapping[str, Any], origin_us: Optional[float]) -> MemoryEvent:
    # Hot path too (one per allocation and free): the usual well-formed event takes the
    # fast branch; anything else goes through the checks that name the event.
    args = ev.get("args", _MISSING)
    if type(args) is not dict:
        args = _args(label, index, args)
    ts = ev.get("ts", _MISSING)
    if (type(ts) is not float and type(ts) is not int) or not -_TIME_LIMIT_US < ts < _TIME_LIMIT_US:
        ts = _ts_us(label, index, ts)  # raises, naming the event (NaN fails every comparison)
    pid, tid = ev.get("pid", _MISSING), ev.get("tid", _MISSING)
    if type(pid) is not int:
        pid = _thread_id(label, index, "pid", pid)
    if type(tid) is not int:
        tid = _thread_id(label, index, "tid", tid)
    get = args.get
    device_id = _int_or_none(get("Device Id"))
    return frozen_record(MemoryEvent, {
        "time_s": ts if origin_us is None else (ts - origin_us) * _US,  # None: converted later
        "bytes": _int_or_none(get("Bytes")) or 0,
        "total_allocated_bytes": _int_or_none(get("Total Allocated")) or 0,
        "total_reserved_bytes": _int_or_none(get("Total Reserved")) or 0,
        "device_type": _int_or_none(get("Device Type")) or 0,
        "device_id": device_id if device_id is not None else -1,
        "pid": pid,
        "tid": tid,
        "address": _int_or_none(get("Addr")),
    })


def _flow_event(label: str, index: int, ev: Mapping[str, Any], origin_us: float) -> FlowEvent:
    return FlowEvent(
        category=str(ev.get("cat")),
        id=_int_or_none(ev.get("id")) or 0,
        phase=str(ev.get("ph")),
        time_s=(_ts_us(label, index, ev.get("ts", _MISSING)) - origin_us) * _US,
        pid=_thread_id(label, index, "pid", ev.get("pid", _MISSING)),
        tid=_thread_id(label, index, "tid", ev.get("tid", _MISSING)),
    )


def _devices(label: str, header: Any) -> Tuple[DeviceProperties, ...]:
    """The ``deviceProperties`` header: absent or null (CPU traces), else a list of objects."""
    if header is None:
        return ()
    if not isinstance(header, list):
        raise TraceError(label, "a JSON array of objects, e.g. [{\"id\": 0, \"name\": \"NVIDIA A100\"}]",
                         _describe(header), field="deviceProperties")
    for i, d in enumerate(header):
        if not isinstance(d, Mapping):
            raise TraceError(label, "a JSON object, e.g. {\"id\": 0, \"name\": \"NVIDIA A100\"}",
                             _describe(d), field=f"deviceProperties[{i}]")
    return tuple(_device(d) for d in header)


def _device(d: Mapping[str, Any]) -> DeviceProperties:
    major, minor = _int_or_none(d.get("computeMajor")), _int_or_none(d.get("computeMinor"))
    return DeviceProperties(
        id=_int_or_none(d.get("id")) or 0,
        name=str(d.get("name", "")),
        total_memory_bytes=_int_or_none(d.get("totalGlobalMem")),
        num_sms=_int_or_none(d.get("numSms")),
        compute_capability=(major, minor) if major is not None and minor is not None else None,
        warp_size=_int_or_none(d.get("warpSize")),
        max_threads_per_sm=_int_or_none(d.get("maxThreadsPerMultiprocessor")),
        shared_memory_per_sm_bytes=_int_or_none(d.get("sharedMemPerMultiprocessor")),
        registers_per_sm=_int_or_none(d.get("regsPerMultiprocessor")),
        raw=MappingProxyType(dict(d)),
    )
