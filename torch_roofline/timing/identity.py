"""Tensor identities of a live profiling session: which storage each recorded op read and wrote.

The compulsory memory model moves each storage once per step, so counting it needs to know
*which* storage an op touched, not only its shape. A saved Chrome trace does not say; the
profiler that wrote it does. With ``record_shapes=True`` and ``profile_memory=True``,
torch.profiler keeps, for every op it records, the metadata of each tensor argument, and
in post-processing gives every storage allocation an id (``AllocationID``: the same id for
every view of a storage, a new one when the memory is freed and reused) and every allocator
event the id it belongs to. Its in-memory event tree (``experimental_event_tree()``) holds
both: that is the record used here, taken in the same pass as the timings.

Why this and not the execution-trace observer (``ExecutionTraceObserver``), which also writes
storage ids: it is a second observer with its own per-op JSON serialisation *inside* the
timed step (on top of Kineto's), and its nodes must then be joined to Kineto's events by
record-function id; the event tree costs nothing more while the step runs (the ids are
computed after it) and is joined by start time.

The join: a trace event's ``ts_ns`` (its start in the file's nanoseconds) plus the trace's
``baseTimeNanoseconds`` is the tree node's ``start_time_ns``; names agree up to the overload
suffix. A node found at the same start on another thread with another name is not taken.

Example::

    with ProfileSession(record_shapes=True, profile_memory=True, keep_results=True) as s:
        model(x)
    ids = Identities(s.results[-1], s.trace)
    ids.of(event)  # CallIdentity(inputs=((140..., 7), None, ...), allocations=(12,))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple, Union

import torch

from torch_roofline.timing.trace import Trace, TraceEvent

__all__ = ["CallIdentity", "Identities", "TensorId"]

#: One tensor argument: (TensorImpl address, storage allocation id, storage data address). The
#: TensorImpl address tells two arguments that are the same tensor apart from two views of one
#: storage (same allocation id); the data address lets a storage be matched to a live tensor
#: (a parameter).
TensorId = Tuple[int, Optional[int], int]

_TORCH_OP = torch._C._profiler._EventType.TorchOp
_ALLOCATION = torch._C._profiler._EventType.Allocation


@dataclass(frozen=True)
class CallIdentity:
    """Which storages one recorded op call touched.

    Attributes:
        inputs: per recorded argument, in the trace's argument order: a :data:`TensorId`, a
            tuple of them (tensor lists), or ``None`` (scalars, absent optionals).
        allocations: storage allocation ids allocated inside the call (its outputs and its
            temporaries), in allocation order.
        kept: ``(allocation id, bytes)`` of the allocations still alive when the call returned:
            its outputs (and caches it filled).
        list_dtypes: per recorded argument, the dtypes of a tensor list's elements (which the
            Chrome trace does not record), else ``None``.
        fresh: per recorded argument, whether it is a tensor allocated right before the call
            (after the previous op of its caller): how a Python number the dispatcher wrapped
            in a 0-dim tensor looks (``x * 0.5``), as opposed to a real 0-dim tensor.
    """

    inputs: Tuple[Union[None, TensorId, Tuple[Optional[TensorId], ...]], ...]
    allocations: Tuple[int, ...]
    kept: Tuple[Tuple[int, int], ...] = ()
    list_dtypes: Tuple[Optional[Tuple[Optional[torch.dtype], ...]], ...] = ()
    fresh: Tuple[bool, ...] = ()


class Identities:
    """Look up the :class:`CallIdentity` of a trace's op events in a live session's results.

    Args:
        results: ``torch.profiler.profile().profiler.kineto_results`` of the window whose
            trace is ``trace`` (kept by :class:`~torch_roofline.timing.session.ProfileSession`
            with ``keep_results=True``).
        trace: that window's exported trace.

    The event tree is walked once, on first use; :meth:`of` answers from an index.
    """

    def __init__(self, results: Any, trace: Trace) -> None:
        self._results = results
        base = trace.metadata.get("baseTimeNanoseconds")
        self._base_ns = int(base) if isinstance(base, (int, float)) else None
        self._index: Optional[Dict[int, List[Any]]] = None
        self._sizes: Dict[int, int] = {}
        self._before: Dict[int, frozenset] = {}  # id(op node) -> allocations made just before it
        self.available = self._base_ns is not None and results is not None

    def _build(self) -> Dict[int, List[Any]]:
        index: Dict[int, List[Any]] = {}
        if not self.available:
            return index
        base, sizes, before = self._base_ns, self._sizes, self._before
        stack = [list(self._results.experimental_event_tree())]
        while stack:
            pending: List[int] = []  # allocations since the previous op among these siblings
            for node in stack.pop():
                tag = node.tag
                if tag == _TORCH_OP:
                    index.setdefault(node.start_time_ns - base, []).append(node)
                    if pending:
                        before[id(node)] = frozenset(pending)
                        pending = []
                elif tag == _ALLOCATION:
                    fields = node.extra_fields
                    if fields.alloc_size > 0 and fields.allocation_id is not None:
                        sizes[fields.allocation_id] = fields.alloc_size
                        pending.append(fields.allocation_id)
                children = node.children
                if children:
                    stack.append(children)
        return index

    def allocation_bytes(self, allocation_id: int) -> Optional[int]:
        """Bytes of a storage allocated while the profiler recorded; ``None`` for one allocated
        before (parameters, inputs, caches made earlier)."""
        if self._index is None:
            self._index = self._build()
        return self._sizes.get(allocation_id)

    def of(self, event: TraceEvent) -> Optional[CallIdentity]:
        """The identity of one ``cpu_op`` event of the trace, or ``None`` when not found."""
        if self._index is None:
            self._index = self._build()
        if event.ts_ns is None:
            return None
        name = event.name.split(".", 1)[0] if "::" in event.name else event.name
        for delta in (0, -1, 1):  # the file's microseconds round-trip to the nanosecond, +-1
            for node in self._index.get(event.ts_ns + delta, ()):
                if node.name == name:
                    return _identity(node, self._before.get(id(node), frozenset()))
        return None


def _identity(node: Any, made_before: frozenset = frozenset()) -> CallIdentity:
    raw = node.extra_fields.inputs
    inputs = tuple(_tensor_id(i) for i in raw)
    fresh = tuple(isinstance(t, tuple) and len(t) == 3 and isinstance(t[0], int) and t[1] in made_before
                  for t in inputs)
    list_dtypes = tuple(tuple(getattr(v, "dtype", None) for v in i) if isinstance(i, list) else None for i in raw)
    allocated: Dict[int, int] = {}
    freed = set()
    stack = list(node.children)
    while stack:
        child = stack.pop()
        if child.tag == _ALLOCATION:
            fields = child.extra_fields
            if fields.allocation_id is None:
                continue
            if fields.alloc_size > 0:
                allocated[fields.allocation_id] = fields.alloc_size
            else:
                freed.add(fields.allocation_id)
        elif child.children:
            stack.extend(child.children)
    ids = tuple(sorted(allocated))
    kept = tuple((i, allocated[i]) for i in ids if i not in freed)
    return CallIdentity(inputs, ids, kept, list_dtypes, fresh)


def _tensor_id(value: Any) -> Union[None, TensorId, Tuple[Optional[TensorId], ...]]:
    if isinstance(value, list):
        return tuple(_one(v) for v in value)
    return _one(value)


def _one(value: Any) -> Optional[TensorId]:
    impl = getattr(value, "impl_ptr", None)
    if impl is None:
        return None
    data = int(getattr(value, "storage_data_ptr", 0) or 0)
    # A tensor without a storage the profiler can see (oneDNN's opaque tensors) has data
    # address 0 and a shared placeholder allocation id: its storage is unknown, not shared.
    return (int(impl), value.allocation_id if data else None, data)
