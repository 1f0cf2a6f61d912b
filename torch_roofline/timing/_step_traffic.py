"""Which storages a profiled step's calls touched, from the live session's tensor identities:
each argument's storage and span, the aliasing classes of a call's arguments, the compulsory
bytes of each call against what the step moved before it, and the activation bytes autograd
saved per module.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from torch_roofline.count.traffic import NO_STORAGE
from torch_roofline.timing.identity import CallIdentity, TensorId
from torch_roofline.timing.trace import TraceEvent
from torch_roofline.timing._call_args import _Alias, _DTYPES, _WRAPPED_TYPES, _wrapped_numbers
from torch_roofline.timing._replay import _Replayed, _beyond_allocated


def _activation_bytes(rows: Sequence[Tuple[Any, Optional[TraceEvent], Optional[CallIdentity]]],
                      tensors: Sequence[Optional[List[Tuple[Optional[TensorId], int]]]],
                      spans: Mapping[int, int], parameters: Sequence[Any], steps: int) -> Dict[str, int]:
    """Module -> bytes autograd saved during its forward, from what the steps read in backward.

    A storage is an activation when a backward op reads it and a forward op of the same step
    used it (read it, or allocated and kept it), and it is not a parameter's. It is charged
    once per step to the module of the *earliest* forward op that saved it: backward ops carry
    the sequence number of the forward op that created their autograd node, so among the
    backward ops reading the storage, the smallest number is that op; the charge goes to its
    module and every module enclosing it (as :func:`torch_roofline.count` charges it when
    autograd packs the tensor). Its size is the widest view of it seen in the step.
    """
    params = set()
    for p in parameters:
        try:
            params.add(p.untyped_storage().data_ptr())
        except NO_STORAGE:
            continue
    first: Dict[Tuple[int, int], int] = {}  # (step, storage) -> position of its first forward use
    created: Dict[Tuple[int, int], int] = {}  # (step, sequence number) -> position of the forward op
    saver: Dict[Tuple[int, int], Tuple[int, Tuple[str, ...]]] = {}
    for position, ((row, ev, identity), row_tensors) in enumerate(zip(rows, tensors)):
        if identity is None or ev is None or row_tensors is None:
            continue
        ids = [t for t, _ in row_tensors if t is not None and t[1] is not None]
        if row.phase == "forward" and not row.recompute:
            for t in ids:
                first.setdefault((row.step, t[1]), position)
            for alloc, _ in identity.kept:
                first.setdefault((row.step, alloc), position)
            if row.seq is not None:
                created.setdefault((row.step, row.seq), position)
        elif row.phase == "backward" and row.seq is not None and not row.recompute:
            made = created.get((row.step, row.seq))
            for t in ids:
                key = (row.step, t[1])
                # saved: it existed when the op that saved it ran (not the gradient seed, made later)
                if made is not None and first.get(key, made + 1) <= made and t[2] not in params:
                    known = saver.get(key)
                    if known is None or row.seq < known[0]:
                        saver[key] = (row.seq, tuple(row.scope))
    out: Dict[str, int] = defaultdict(int)
    for (_, alloc), (_, scope) in saver.items():
        for name in set(scope):
            out[name] += spans.get(alloc, 0)
    return {k: int(round(v / max(steps, 1))) for k, v in out.items()}


class _StepTraffic:
    """Compulsory bytes over a step's real storages (allocation ids), from replayed accesses.

    The same rules as :class:`~torch_roofline.count.traffic.StepTraffic`: a storage is read
    at most once per step (free when the step produced it whole) and written at most once.
    """

    def __init__(self) -> None:
        self._step: Optional[int] = None
        self._read: set = set()
        self._written: set = set()
        self._produced: set = set()
        self._rows = 0

    def start(self, step: int) -> None:
        """Begin (or continue) profiled step ``step``: a new step starts from nothing."""
        if step != self._step:
            self._step = step
            self._read, self._written, self._produced = set(), set(), set()

    def apply(self, replayed: _Replayed, identity: CallIdentity, storages: Mapping[int, int]) -> Tuple[int, int]:
        """The call's compulsory bytes (read, written), counted against the step's storages so far.

        ``storages``: ``{storage class: allocation id}`` of the call's arguments (:func:`_aliases`).
        """
        self._rows += 1
        read, written, produced = self._read, self._written, self._produced
        comp_read = comp_written = 0
        made_whole = False
        for access in replayed.accesses:
            slot = access[1]
            if slot[0] == "in" and slot[1] in storages:
                key: Any = storages[slot[1]]
            else:
                key = (self._rows, slot)  # a storage this call created: new, unique
            kind = access[0]
            if kind == "r":
                if key not in read:
                    read.add(key)
                    if key not in produced:
                        comp_read += access[2]
            elif kind == "p":  # a partial read (an indexed write's destination): not marked read
                if key not in read and key not in produced:
                    comp_read += access[2]
            else:
                if key not in written:
                    written.add(key)
                    comp_written += access[2]
                if access[3]:
                    produced.add(key)
                    made_whole = made_whole or slot[0] == "new"
        if made_whole:  # its outputs are storages the profiler saw it allocate
            produced.update(identity.allocations)
        if identity.kept:  # as for the op bytes: the real outputs may be smaller than the meta ones
            comp_written = max(comp_written - _beyond_allocated(replayed, identity), 0)
        return comp_read, comp_written


# One tensor argument of a recorded call, as far as the call's signature tells: (recorded
# argument k, element j of a tensor list or -1, span in elements, dtype (None: a list element,
# dtype from the identities), a Python number the dispatcher may have wrapped).
_Entry = Tuple[int, int, int, Optional[torch.dtype], bool]


def _entries(ev: TraceEvent) -> Tuple[_Entry, ...]:
    """Every tensor argument of a recorded call, tensor lists flattened, in the order the call
    is rebuilt (:class:`_Builder`); computed once per signature."""
    args = ev.args
    types = args.get("Input type") or ()
    dims = args.get("Input Dims") or ()
    strides = args.get("Input Strides") or ()
    out: List[_Entry] = []
    for k, typ in enumerate(types):
        d = dims[k] if k < len(dims) else None
        st = strides[k] if k < len(strides) else None
        if typ in _DTYPES:
            out.append((k, -1, _span_elements(d, st), _DTYPES[typ], typ in _WRAPPED_TYPES and d == []))
        elif typ == "TensorList" and isinstance(d, list):
            for j, dj in enumerate(d):
                sj = st[j] if isinstance(st, list) and j < len(st) else None
                out.append((k, j, _span_elements(dj, sj), None, False))
    return tuple(out)


def _row_tensors(entries: Sequence[_Entry], identity: CallIdentity, ev: TraceEvent
                 ) -> List[Tuple[Optional[TensorId], int]]:
    """(tensor id, span bytes) of each tensor argument the rebuilt call passes as a tensor
    (wrapped Python numbers left out, as :func:`_wrapped_numbers` decides)."""
    inputs, fresh, list_dtypes = identity.inputs, identity.fresh, identity.list_dtypes
    guess: Optional[List[bool]] = None
    out: List[Tuple[Optional[TensorId], int]] = []
    for k, j, span, dtype, candidate in entries:
        if candidate:
            if fresh:
                if k < len(fresh) and fresh[k]:
                    continue
            else:
                if guess is None:
                    guess = _wrapped_numbers(ev.args.get("Input type") or (), ev.args.get("Input Dims") or ())
                if guess[k]:
                    continue
        ident = inputs[k] if k < len(inputs) else None
        if j >= 0:
            ident = ident[j] if isinstance(ident, tuple) and j < len(ident) and isinstance(ident[j], tuple) else None
            known = list_dtypes[k] if k < len(list_dtypes) else None
            dtype = known[j] if known and j < len(known) and known[j] is not None else torch.float32
        elif not (isinstance(ident, tuple) and len(ident) == 3 and isinstance(ident[0], int)):
            ident = None
        out.append((ident, span * dtype.itemsize))
    return out


def _span_elements(dims: Any, strides: Any) -> int:
    """Elements from a view's first to its last (its numel when strides are unknown)."""
    if not isinstance(dims, list) or any(not isinstance(d, int) for d in dims):
        return 0
    if any(d == 0 for d in dims):
        return 0
    if isinstance(strides, list) and len(strides) == len(dims) and all(isinstance(s, int) for s in strides):
        return 1 + sum((d - 1) * abs(s) for d, s in zip(dims, strides))
    n = 1
    for d in dims:
        n *= d
    return n


def _storage_spans(tensors: Sequence[Optional[List[Tuple[Optional[TensorId], int]]]]) -> Dict[int, int]:
    """Per storage (allocation id), the widest span any recorded view of it covered in the
    window: the best size estimate for storages allocated before the profiler started."""
    spans: Dict[int, int] = {}
    get = spans.get
    for row in tensors:
        if not row:
            continue
        for tid, span in row:
            if tid is not None and tid[1] is not None and span > get(tid[1], -1):
                spans[tid[1]] = span
    return spans


def _aliases(tensors: Sequence[Tuple[Optional[TensorId], int]], spans: Mapping[int, int]
             ) -> Tuple[Tuple[_Alias, ...], Dict[int, int]]:
    """Per tensor argument: (tensor class, storage class, storage larger than this view); and
    ``{storage class: allocation id}``."""
    impls: Dict[int, int] = {}
    storages: Dict[int, int] = {}
    out: List[_Alias] = []
    for position, (tid, span) in enumerate(tensors):
        if tid is None:
            out.append((-1 - position, 1_000_000 + position, False))
            continue
        impl, alloc, _ = tid
        impl_class = impls.setdefault(impl, position)
        if alloc is None:
            out.append((impl_class, 1_000_000 + position, False))
            continue
        storage_class = storages.setdefault(alloc, len(storages))
        out.append((impl_class, storage_class, spans.get(alloc, 0) > span))
    return tuple(out), {cls: alloc for alloc, cls in storages.items()}
