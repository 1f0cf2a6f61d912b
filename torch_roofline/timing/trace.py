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
import os
import zlib
from typing import Any, Callable, Iterator, List, Mapping, Optional, Tuple, Union

from torch_roofline._gc import paused_gc
from torch_roofline.timing._trace_parse import _Builder, _describe, _json_type, _loads, _parse, kind_of_category
from torch_roofline.timing._trace_records import (DEVICE_KINDS, EVENT_KINDS, LAUNCH_KINDS, DeviceProperties, FlowEvent,
                                                  MemoryEvent, Trace, TraceError, TraceEvent)

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
"""Kinds of duration events kept by :func:`load_trace`."""
"""Kinds that are device activity (time measured on the GPU)."""
"""Kinds of the host calls that launch device activity (joined to it by correlation id)."""


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
