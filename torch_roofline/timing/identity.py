"""Tensor identities of a live profiling session: which storage each recorded op read and wrote.

The compulsory memory model moves each storage once per step, so counting it needs to know
*which* storage an op touched, not only its shape. A saved Chrome trace does not say; the
profiler that wrote it knows. With ``record_shapes=True`` and ``profile_memory=True``:

* its in-memory event tree (``experimental_event_tree()``) keeps, for every op it recorded,
  each tensor argument's metadata: the ``TensorImpl`` address (two arguments that are the same
  tensor) and its storage's data address;
* its allocator events (the trace's ``[memory]`` events: address, bytes, time, thread) say
  when each block was allocated and freed.

A storage is then ``(address, generation)``: its data address and how many allocations that
address has seen up to the moment it is used (a freed address reused by a later allocation is
a new storage; a storage allocated before the profiler started is generation 0). An op's
outputs are the blocks it allocated and still held when it returned. All of it is taken in
the same pass as the timings.

Why this and not the execution-trace observer (``ExecutionTraceObserver``), which also writes
storage ids: it is a second observer with its own per-op JSON serialisation *inside* the
timed step (on top of Kineto's), and its nodes must then be joined to Kineto's events by
record-function id; the event tree and the allocator events cost nothing more while the step
runs. (The profiler's own ``allocation_id`` would do as well, but reading it per allocation
means walking every op's subtree in Python: the addresses come with the trace's events.)

The join: a trace event's ``ts_ns`` (its start in the file's nanoseconds) plus the trace's
``baseTimeNanoseconds`` is the tree node's ``start_time_ns``; names agree up to the overload
suffix. Host addresses and CUDA device addresses do not overlap (unified virtual addressing
on 64-bit systems), so one address space serves both.

Example::

    with ProfileSession(record_shapes=True, profile_memory=True, keep_results=True) as s:
        model(x)
    ids = Identities(s.results[-1], s.trace)
    ids.of(event)  # CallIdentity(inputs=((140..., (94..., 0), 94...), None, ...), ...)
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Dict, Hashable, List, Optional, Sequence, Tuple, Union

import torch

from torch_roofline.timing.trace import Trace, TraceEvent

__all__ = ["CallIdentity", "Identities", "TensorId", "StorageKey"]

#: A storage: (data address, allocation generation at that address).
StorageKey = Tuple[int, int]

#: One tensor argument: (TensorImpl address, its storage (``None`` when the profiler saw no
#: storage: oneDNN's opaque tensors), storage data address). The TensorImpl address tells two
#: arguments that are the same tensor apart from two views of one storage; the data address
#: lets a storage be matched to a live tensor (a parameter).
TensorId = Tuple[int, Optional[Hashable], int]

_TORCH_OP = torch._C._profiler._EventType.TorchOp
_ALLOCATION = torch._C._profiler._EventType.Allocation
_TOL_S = 1e-9


@dataclass(frozen=True)
class CallIdentity:
    """Which storages one recorded op call touched.

    Attributes:
        inputs: per recorded argument, in the trace's argument order: a :data:`TensorId`, a
            tuple of them (tensor lists), or ``None`` (scalars, absent optionals).
        allocations: storages allocated inside the call (its outputs and its temporaries),
            in allocation order.
        kept: ``(storage, bytes)`` of the allocations still alive when the call returned: its
            outputs (and caches it filled).
        list_dtypes: per recorded argument, the dtypes of a tensor list's elements (which the
            Chrome trace does not record), else ``None``.
        fresh: per recorded argument, whether it is a tensor allocated right before the call
            (after the previous op of its caller): how a Python number the dispatcher wrapped
            in a 0-dim tensor looks (``x * 0.5``), as opposed to a real 0-dim tensor.
    """

    inputs: Tuple[Union[None, TensorId, Tuple[Optional[TensorId], ...]], ...]
    allocations: Tuple[Hashable, ...]
    kept: Tuple[Tuple[Hashable, int], ...] = ()
    list_dtypes: Tuple[Optional[Tuple[Optional[torch.dtype], ...]], ...] = ()
    fresh: Tuple[bool, ...] = ()


class Identities:
    """Look up the :class:`CallIdentity` of a trace's op events in a live session's results.

    Args:
        results: ``torch.profiler.profile().profiler.kineto_results`` of the window whose
            trace is ``trace`` (kept by :class:`~torch_roofline.timing.session.ProfileSession`
            with ``keep_results=True``).
        trace: that window's exported trace (its ``[memory]`` events give the allocations).

    The event tree is walked once, on first use, down to the events asked for.
    """

    def __init__(self, results: Any, trace: Trace) -> None:
        self._results = results
        base = trace.metadata.get("baseTimeNanoseconds")
        self._base_ns = int(base) if isinstance(base, (int, float)) else None
        self._index: Optional[Dict[int, List[Any]]] = None
        self._before: Dict[int, frozenset] = {}  # id(op node) -> addresses allocated just before it
        self.available = self._base_ns is not None and results is not None and any(
            m.address is not None for m in trace.memory)
        # Allocator events: per address, the times of its allocations; per thread, all events.
        self._allocated_at: Dict[int, List[float]] = defaultdict(list)
        self._by_thread: Dict[Any, List[Tuple[float, int, int]]] = defaultdict(list)
        for m in trace.memory:  # in time order
            if m.address is None:
                continue
            if m.bytes > 0:
                self._allocated_at[m.address].append(m.time_s)
            self._by_thread[m.tid].append((m.time_s, m.address, m.bytes))
        self._thread_times = {tid: [e[0] for e in events] for tid, events in self._by_thread.items()}

    def storage(self, address: int, time_s: float) -> Optional[StorageKey]:
        """The storage at data ``address`` in use at ``time_s`` (seconds from the trace origin)."""
        if not address:
            return None
        times = self._allocated_at.get(address)
        return (address, bisect.bisect_right(times, time_s + _TOL_S) if times else 0)

    def _build(self, wanted: Optional[set] = None) -> Dict[int, List[Any]]:
        """Index the tree's op nodes by start (ns since the trace's base). With ``wanted`` (the
        starts of the rows asked for), a wanted node's subtree is not walked: rows never nest."""
        index: Dict[int, List[Any]] = {}
        if not self.available:
            return index
        base, before = self._base_ns, self._before
        stack = [list(self._results.experimental_event_tree())]
        while stack:
            pending: List[int] = []  # addresses allocated since the previous op among these siblings
            for node in stack.pop():
                tag = node.tag
                if tag == _TORCH_OP:
                    key = node.start_time_ns - base
                    index.setdefault(key, []).append(node)
                    if pending:
                        before[id(node)] = frozenset(pending)
                        pending = []
                    if wanted is not None and key in wanted:
                        continue
                elif tag == _ALLOCATION:
                    fields = node.extra_fields
                    if fields.alloc_size > 0:
                        pending.append(fields.ptr)
                    continue
                children = node.children
                if children:
                    stack.append(children)
        return index

    def of(self, event: TraceEvent) -> Optional[CallIdentity]:
        """The identity of one ``cpu_op`` event of the trace, or ``None`` when not found."""
        if self._index is None:
            self._index = self._build()
        return self._find(event)

    def of_many(self, events: Sequence[Optional[TraceEvent]]) -> List[Optional[CallIdentity]]:
        """The identities of many events at once (walks only down to them)."""
        if self._index is None:
            wanted = set()
            for ev in events:
                if ev is not None and ev.ts_ns is not None:
                    wanted.update((ev.ts_ns - 1, ev.ts_ns, ev.ts_ns + 1))
            self._index = self._build(wanted)
        return [self._find(ev) if ev is not None else None for ev in events]

    def _find(self, event: TraceEvent) -> Optional[CallIdentity]:
        if event.ts_ns is None:
            return None
        name = event.name.split(".", 1)[0] if "::" in event.name else event.name
        for delta in (0, -1, 1):  # the file's microseconds round-trip to the nanosecond, +-1
            for node in self._index.get(event.ts_ns + delta, ()):
                if node.name == name:
                    return self._identity(node, event)
        return None

    def _identity(self, node: Any, event: TraceEvent) -> CallIdentity:
        raw = node.extra_fields.inputs
        start = event.start_s
        made_before = self._before.get(id(node), ())
        inputs: List[Any] = []
        fresh: List[bool] = []
        list_dtypes: List[Any] = []
        for value in raw:
            if isinstance(value, list):
                inputs.append(tuple(self._tensor_id(v, start) for v in value))
                list_dtypes.append(tuple(getattr(v, "dtype", None) for v in value))
                fresh.append(False)
                continue
            tid = self._tensor_id(value, start)
            inputs.append(tid)
            list_dtypes.append(None)
            fresh.append(tid is not None and tid[2] in made_before)
        allocations, kept = self._allocations(event)
        return CallIdentity(tuple(inputs), allocations, kept, tuple(list_dtypes), tuple(fresh))

    def _tensor_id(self, value: Any, time_s: float) -> Optional[TensorId]:
        impl = getattr(value, "impl_ptr", None)
        if impl is None:
            return None
        data = int(getattr(value, "storage_data_ptr", 0) or 0)
        return (int(impl), self.storage(data, time_s), data)

    def _allocations(self, event: TraceEvent) -> Tuple[Tuple[Hashable, ...], Tuple[Tuple[Hashable, int], ...]]:
        """Storages allocated during ``event`` on its thread, and those still held at its end."""
        events = self._by_thread.get(event.tid)
        if not events:
            return (), ()
        times = self._thread_times[event.tid]
        lo = bisect.bisect_left(times, event.start_s - _TOL_S)
        hi = bisect.bisect_right(times, event.end_s + _TOL_S)
        made: Dict[int, Tuple[Hashable, int]] = {}
        order: List[Hashable] = []
        for time_s, address, nbytes in events[lo:hi]:
            if nbytes > 0:
                key = self.storage(address, time_s)
                made[address] = (key, nbytes)
                order.append(key)
            else:
                made.pop(address, None)
        return tuple(order), tuple(made.values())
