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
"""

from __future__ import annotations

import gzip
import json
import os
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Iterable, List, Mapping, Optional, Tuple, Union

from torch_roofline._gc import paused_gc
from torch_roofline.records import frozen_record

__all__ = [
    "EVENT_KINDS",
    "DEVICE_KINDS",
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

# Older Kineto / TensorBoard-plugin spellings.
_CATEGORY_ALIASES: Mapping[str, str] = {
    "operator": "cpu_op",
    "runtime": "cuda_runtime",
    "driver": "cuda_driver",
    "memcpy": "gpu_memcpy",
    "memset": "gpu_memset",
}

_US = 1e-6  # seconds per microsecond


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
    """

    events: Tuple[TraceEvent, ...]
    memory: Tuple[MemoryEvent, ...] = ()
    flows: Tuple[FlowEvent, ...] = ()
    devices: Tuple[DeviceProperties, ...] = ()
    origin_us: float = 0.0
    metadata: Mapping[str, Any] = field(default_factory=_empty, compare=False, repr=False)
    source: str = "<dict>"

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

    Example::

        trace = load_trace("tests/data/alexnet_a100_forward.kineto.json.gz")
        print(trace.device().name, len(trace.of_kind("kernel")))
    """
    with paused_gc():  # millions of objects, no cycles: see torch_roofline._gc
        return _load(source)


def _load(source: Union[str, "os.PathLike[str]", Mapping[str, Any], List[Any]]) -> Trace:
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        data = _read_json(path)
        label = path
    else:
        data, label = source, "<dict>"
    if isinstance(data, list):
        data = {"traceEvents": data}
    if not isinstance(data, Mapping) or not isinstance(data.get("traceEvents"), list):
        keys = sorted(data)[:5] if isinstance(data, Mapping) else "-"
        raise ValueError(
            f"load_trace({label!r}): expected a Chrome trace, a JSON object with a "
            f"'traceEvents' list (as written by torch.profiler's export_chrome_trace), got "
            f"{type(data).__name__} with keys {keys}; pass a file exported by torch.profiler."
        )
    return _parse(data, label)


def _read_json(path: str) -> Any:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise FileNotFoundError(
            f"load_trace({path!r}): no such file; pass the path of a trace written by "
            "torch.profiler (export_chrome_trace or tensorboard_trace_handler)."
        ) from None
    if raw[:2] == b"\x1f\x8b":  # gzip magic
        raw = gzip.decompress(raw)
    try:
        return _loads(raw)
    except ValueError as err:
        raise ValueError(
            f"load_trace({path!r}): not valid JSON ({err}); expected a Chrome/Kineto "
            "trace (.json or .json.gz) as written by torch.profiler."
        ) from None


def _loads(raw: bytes) -> Any:
    """Parse JSON bytes: orjson when installed (several times faster on large traces), else json."""
    if _orjson is not None:
        return _orjson.loads(raw)
    return json.loads(raw)


try:  # a dependency of the package; the stdlib parser is the fallback
    import orjson as _orjson
except ImportError:  # pragma: no cover - orjson is in install_requires
    _orjson = None


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
    raw = event.get("cat", "")
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
    raw_events: Iterable[Any] = data["traceEvents"]
    durations: List[Tuple[int, str, Mapping[str, Any]]] = []
    instants: List[Mapping[str, Any]] = []
    flows: List[Mapping[str, Any]] = []
    for i, ev in enumerate(raw_events):
        if not isinstance(ev, Mapping):
            continue
        ph = ev.get("ph")
        if ph == "X":
            kind = _kind(ev)
            if kind is not None and "ts" in ev:
                durations.append((i, kind, ev))
        elif ph == "i" and ev.get("name") == "[memory]":
            instants.append(ev)
        elif ph in ("s", "f") and ev.get("cat") in ("ac2g", "fwdbwd"):
            flows.append(ev)
    origin_us = min((float(ev["ts"]) for _, _, ev in durations), default=0.0)

    def seconds(ts: Any) -> float:
        return (float(ts) - origin_us) * _US

    events = tuple(_duration_event(i, kind, ev, origin_us) for i, kind, ev in durations)
    memory = tuple(
        sorted((_memory_event(ev, seconds) for ev in instants), key=lambda m: m.time_s)
    )
    flow_events = tuple(
        FlowEvent(
            category=str(ev.get("cat")),
            id=_int_or_none(ev.get("id")) or 0,
            phase=str(ev.get("ph")),
            time_s=seconds(ev.get("ts", origin_us)),
            pid=ev.get("pid", 0),
            tid=ev.get("tid", 0),
        )
        for ev in flows
    )
    header = data.get("deviceProperties") or ()
    devices = tuple(_device(d) for d in header if isinstance(d, Mapping))
    metadata = MappingProxyType({k: v for k, v in data.items() if k != "traceEvents"})
    return Trace(
        events=events,
        memory=memory,
        flows=flow_events,
        devices=devices,
        origin_us=origin_us,
        metadata=metadata,
        source=label,
    )


def _duration_event(index: int, kind: str, ev: Mapping[str, Any], origin_us: float) -> TraceEvent:
    # Hot path (one call per event of a trace of up to millions): the record is filled
    # without the frozen dataclass's __init__, and ``args`` is wrapped, not copied.
    args = ev.get("args") or _NO_ARGS
    ts = float(ev["ts"])
    dur = ev.get("dur", 0.0)
    dur = float(dur) if dur else 0.0
    get = args.get
    return frozen_record(TraceEvent, {
        "kind": kind,
        "name": str(ev.get("name", "")),
        "start_s": (ts - origin_us) * _US,
        "dur_s": dur * _US if dur > 0.0 else 0.0,
        "pid": ev.get("pid", 0),
        "tid": ev.get("tid", 0),
        "index": index,
        "correlation": _int_or_none(get("correlation")),
        "external_id": _int_or_none(get("External id")),
        "seq": _int_or_none(get("Sequence number")),
        "fwd_thread": _int_or_none(get("Fwd thread id")),
        "device": _int_or_none(get("device")),
        "stream": _int_or_none(get("stream")),
        "bytes": _int_or_none(get("bytes")),
        "args": MappingProxyType(args),
        "ts_ns": round(ts * 1000.0),
    })


_NO_ARGS: Mapping[str, Any] = MappingProxyType({})


def _memory_event(ev: Mapping[str, Any], seconds) -> MemoryEvent:
    args = ev.get("args") or {}
    return MemoryEvent(
        time_s=seconds(ev.get("ts", 0.0)),
        bytes=_int_or_none(args.get("Bytes")) or 0,
        total_allocated_bytes=_int_or_none(args.get("Total Allocated")) or 0,
        total_reserved_bytes=_int_or_none(args.get("Total Reserved")) or 0,
        device_type=_int_or_none(args.get("Device Type")) or 0,
        device_id=_int_or_none(args.get("Device Id")) if args.get("Device Id") is not None else -1,
        pid=ev.get("pid", 0),
        tid=ev.get("tid", 0),
        address=_int_or_none(args.get("Addr")),
    )


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
