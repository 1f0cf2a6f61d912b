"""The records a trace is read into (:class:`Trace`, :class:`TraceEvent`, :class:`MemoryEvent`,
:class:`FlowEvent`, :class:`DeviceProperties`), the event kinds kept, and :class:`TraceError`,
the one error an unreadable trace raises (:mod:`torch_roofline.timing.trace` reads them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, FrozenSet, Mapping, Optional, Tuple, Union



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

DEVICE_KINDS: Tuple[str, ...] = ("kernel", "gpu_memcpy", "gpu_memset")

LAUNCH_KINDS: Tuple[str, ...] = ("cuda_runtime", "cuda_driver")

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


#: A trace's ``pid`` or ``tid``: a number, or a string where the writer put a label there
#: (Chrome traces allow either; a missing one reads as 0).
TraceId = Union[int, str]


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
    pid: TraceId
    tid: TraceId
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
    pid: TraceId
    tid: TraceId
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
    pid: TraceId
    tid: TraceId


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
            (a slice of one long step: :func:`~torch_roofline.timing.slices.slice_trace`),
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
