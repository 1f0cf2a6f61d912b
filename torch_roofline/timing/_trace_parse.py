"""Turning a trace's parsed JSON events into records: each field checked by one type test on the
hot path (one call per event of traces of millions), the rare bad value named with its event
by :class:`~torch_roofline.timing.trace.TraceError`; recorded shapes shared between repeats.
"""

from __future__ import annotations

import json
import math
from types import MappingProxyType
from typing import Any, List, Mapping, Optional, Tuple

from torch_roofline.records import frozen_record
from torch_roofline.timing._trace_records import (_US, EVENT_KINDS, DeviceProperties, FlowEvent, MemoryEvent, Trace,
                                                  TraceError, TraceEvent, TraceId)


# Older Kineto / TensorBoard-plugin spellings.
_CATEGORY_ALIASES: Mapping[str, str] = {
    "operator": "cpu_op",
    "runtime": "cuda_runtime",
    "driver": "cuda_driver",
    "memcpy": "gpu_memcpy",
    "memset": "gpu_memset",
}


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


def _thread_id(label: str, index: int, name: str, value: Any) -> TraceId:
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
