"""Bytes read and written per aten op, under two memory models.

``op`` model (the unfused cost): every op reads its inputs and writes its outputs.

* A tensor moves the bytes of the elements it addresses: ``min(numel, span) x itemsize``,
  where ``span = 1 + sum((size_i - 1) x |stride_i|)``. So a broadcast (expanded, stride 0)
  input counts its real storage, not its logical size, and a transpose counts its numel.
* View and metadata ops (outputs alias inputs in the op schema: ``view``, ``transpose``,
  ``expand``, ...; size/stride/device queries) move 0 bytes; ``empty*`` allocates without
  writing (0 bytes). Factories shaped like an input (``zeros_like``, ``new_ones``, ...) write
  their output but read nothing: only the input's metadata is used.
* An in-place op (``relu_``) reads the mutated tensor once and writes it once; ``out=``
  tensors are written, not read. ``copy_`` and ``fill_`` do not read their destination.
* The same tensor passed twice (``x * x``) is read once.
* Gathers (``embedding``, ``index_select``, ``index``) read the rows they gather (the
  output's size), not the whole table, plus the indices.
* Indexed in-place writes (``index_copy_``, ``index_put_``, ``scatter_``, ``scatter_add_``,
  ``scatter_reduce_``, ``index_add_``, ``index_reduce_``, ``index_fill_``, ``put_``) move the
  elements they write, the indices and the source, not the whole destination: an LLM
  decode step writing one token's slot of a static KV cache moves that slot. Accumulating
  ones (``index_add_``, ``scatter_add_``, ``index_put_(accumulate=True)``, ...) also read
  the elements they update. A boolean-mask ``index_put_`` writes as many elements as its
  values hold (unless they are broadcast: then how many it writes is data, and it keeps the
  whole-destination charge). NB: masked writes (``masked_fill_``,
  ``masked_scatter_``) keep it too: their kernels run over every element of the destination
  (the mask picks each element's value, not its address), so they do move all of it.
* ``mkl._mkl_linear(X, MKL_W, ORI_W, B, batch_size)`` (a frozen torch.compile model) reads
  its weight once, counted as the weight's own bytes (``ORI_W``'s): ``MKL_W`` is the same
  weight packed into MKL's panels in a buffer whose size MKL chooses, padding included (135x
  the weight for a 10 x 1800 one, 3.5x for resnet18's 1000 x 512), not what the product reads.

``compulsory`` model (the lower bound a perfectly fused step could reach): each distinct
storage is read at most once (weights, inputs: the first time an op reads them) and
written at most once (activations: the first time an op writes them); a storage the step
itself produced whole is never read back from memory. A partial write (a slice, e.g. one
new token's slot in a preallocated KV cache) does not make the rest of the storage
"produced": reading it later still costs its bytes once; a partial read (the elements an
accumulating indexed write updates) costs its bytes without marking the storage read.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch_roofline.count.tree import tensors as _all_tensors

from torch_roofline.count.formulas import INPLACE_METADATA_OP_NAMES, METADATA_OP_NAMES, op_key

__all__ = ["Traffic", "tensor_bytes", "is_view_op", "storage_key", "NO_STORAGE", "StepTraffic"]

aten = torch.ops.aten


@dataclass(frozen=True)
class Traffic:
    """Bytes of one op call: op model and compulsory model."""

    bytes_read: int
    bytes_written: int
    compulsory_bytes_read: int
    compulsory_bytes_written: int


def tensor_bytes(t: torch.Tensor) -> int:
    """Bytes a tensor addresses: min(numel, span) x itemsize (0 for an empty tensor).

    Sparse COO tensors count their values and indices; nested tensors their buffer.
    """
    if t.is_sparse:
        return tensor_bytes(t._values()) + tensor_bytes(t._indices())
    if t.is_nested:
        return int(t.values().numel()) * t.element_size() if hasattr(t, "values") else 0
    numel = t.numel()
    if numel == 0:
        return 0
    if t.is_contiguous():  # the common case: span == numel
        return numel * t.element_size()
    try:
        span = 1 + sum((s - 1) * abs(st) for s, st in zip(t.shape, t.stride()) if s > 0)
    except RuntimeError:  # tensors without strides (e.g. some subclasses)
        span = numel
    return int(min(numel, span)) * t.element_size()


@functools.lru_cache(maxsize=None)
def _schema_flags(func: Any) -> Tuple[bool, bool]:
    """(is_view, mutates): outputs alias inputs read-only / some argument is written."""
    schema = getattr(func, "_schema", None)
    if schema is None:
        return False, False
    rets = schema.returns
    mutates = any(a.alias_info is not None and a.alias_info.is_write for a in schema.arguments)
    is_view = bool(rets) and all(
        r.alias_info is not None and not r.alias_info.is_write for r in rets
    )
    return is_view, mutates


_VIEW_LIKE = {
    op_key(o)
    for o in (aten._unsafe_view, aten.lift_fresh, aten.detach, aten._reshape_alias)
    if o is not None
}
_METADATA = {op_key(getattr(aten, n)) for n in METADATA_OP_NAMES + INPLACE_METADATA_OP_NAMES if hasattr(aten, n)}
_FACTORY_LIKE = {op_key(getattr(aten, n)) for n in
                 ("zeros_like", "ones_like", "full_like", "rand_like", "randn_like", "randint_like",
                  "new_zeros", "new_ones", "new_full") if hasattr(aten, n)}
_ALLOC_ONLY = {op_key(getattr(aten, n)) for n in
               ("empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided")}
_NO_READ_OF_DEST = {op_key(getattr(aten, n)) for n in ("copy_", "fill_", "zero_", "normal_",
                                                        "uniform_", "random_", "bernoulli_",
                                                        "exponential_")}
_GATHERS = {op_key(getattr(aten, n)) for n in ("embedding", "index_select", "index", "_unsafe_index")}
_INDEXED_WRITES = {op_key(getattr(aten, n)) for n in
                   ("index_copy_", "index_put_", "_index_put_impl_", "scatter_", "scatter_add_", "scatter_reduce_",
                    "index_add_", "index_reduce_", "index_fill_", "put_") if hasattr(aten, n)}


def is_view_op(func: Any) -> bool:
    """True when an op only creates views or changes metadata (moves 0 bytes)."""
    if op_key(func) in _VIEW_LIKE:
        return True
    return _schema_flags(func)[0]


def _identity(t: torch.Tensor) -> Tuple[Any, ...]:
    """Same storage, same offset, same shape and strides: the same data."""
    return _identity_of(t, storage_key(t))


def _identity_of(t: torch.Tensor, storage_key: Any) -> Tuple[Any, ...]:
    try:
        return (storage_key, t.storage_offset(), tuple(t.shape), tuple(t.stride()))
    except RuntimeError:
        return (id(t),)


#: What asking a tensor for its storage raises when it has none we can see: opaque tensors
#: (oneDNN's ``to_mkldnn()``), some subclasses, tensors without a Python storage object.
NO_STORAGE = (RuntimeError, NotImplementedError, AttributeError)


def storage_key(t: torch.Tensor) -> Any:
    try:
        return t.untyped_storage()._cdata
    except NO_STORAGE:
        return ("tensor", id(t))


def _storage_nbytes(t: torch.Tensor) -> int:
    try:
        return t.untyped_storage().nbytes()
    except NO_STORAGE:
        return 0


def _unique(ts: Sequence[torch.Tensor]) -> List[Tuple[torch.Tensor, Any]]:
    """Distinct tensors (by :func:`_identity`), each with its storage key (computed once).

    Tensors on different storages are distinct without comparing offsets, shapes and
    strides; the full identity is built only when two tensors share a storage.
    """
    keyed = [(t, storage_key(t)) for t in ts]
    if len(keyed) < 2 or len({sk for _, sk in keyed}) == len(keyed):
        return keyed
    seen, out = set(), []
    for t, sk in keyed:
        key = _identity_of(t, sk)
        if key not in seen:
            seen.add(key)
            out.append((t, sk))
    return out


_NO_DATA = "no-data"
_ZERO = Traffic(0, 0, 0, 0)
#: id(op overload) -> (the overload, _NO_DATA or its role). Keyed by id to skip
#: ``OpOverload.__hash__`` (Python code) on every op call; the entry holds the overload, so
#: its id cannot be reused by another object.
_KINDS: Dict[int, Tuple[Any, Any]] = {}


def _kind_of(func: Any) -> Any:
    """``_NO_DATA`` for ops that move no bytes (views, allocations, metadata, markers), else
    its role: ``"no-read-of-dest"``, ``"factory"``, ``"gather"``, ``"indexed-write"``,
    ``"packed-linear"`` or None."""
    key = op_key(func)
    if key in _VIEW_LIKE or key in _ALLOC_ONLY or key in _METADATA:
        return _NO_DATA
    if getattr(func, "namespace", "") in ("profiler", "prim") or _schema_flags(func)[0]:
        return _NO_DATA
    if getattr(func, "namespace", "") == "mkl" and getattr(key, "__name__", "") == "_mkl_linear":
        return "packed-linear"
    for role, members in (("no-read-of-dest", _NO_READ_OF_DEST), ("factory", _FACTORY_LIKE), ("gather", _GATHERS),
                          ("indexed-write", _INDEXED_WRITES)):
        if key in members:
            return role
    return None


class StepTraffic:
    """Measures each op's traffic and keeps the per-step state the compulsory model needs.

    One instance per counted step. Storages are remembered through ``StorageWeakRef``s, which
    keep the storage's bookkeeping object (not its data) alive, so a freed storage's address
    cannot be reused for a new one and mistaken for it within the step.
    """

    def __init__(self) -> None:
        from torch.multiprocessing.reductions import StorageWeakRef

        #: When a list, every storage access is appended to it, in order: ``("r", storage key,
        #: bytes)``, ``("p", storage key, bytes)`` (a partial read, which does not mark the
        #: storage read) and ``("w", storage key, bytes, whole)`` (``whole``: the write covered
        #: the storage). The recorded-shapes path replays one op alone and re-applies these accesses
        #: to the step's real storages (:mod:`torch_roofline.timing.shapes`).
        self.log: Optional[List[Tuple[Any, ...]]] = None
        self._weakref = StorageWeakRef
        self._alive: Dict[Any, Any] = {}  # storage key -> its weak reference (one per storage)
        self._read: set = set()
        self._written: set = set()
        self._produced: set = set()  # storages an op wrote whole: later reads are free

    def _keep(self, t: torch.Tensor, key: Any) -> None:
        """Hold a weak reference to ``t``'s storage (key ``key``) for the rest of the step."""
        try:
            self._alive[key] = self._weakref(t.untyped_storage())
        except NO_STORAGE:
            self._alive[key] = t

    def measure(self, func: Any, args: Sequence[Any], kwargs: Mapping[str, Any], out: Any,
                tensors: Optional[Tuple[List[torch.Tensor], List[torch.Tensor]]] = None) -> Traffic:
        """Bytes read and written by one op call (both memory models).

        ``tensors``: the call's input and output tensors when the caller has already walked
        the arguments (used unless an ``out=`` keyword needs separating).
        """
        known = _KINDS.get(id(func))
        if known is None:
            known = _KINDS[id(func)] = (func, _kind_of(func))
        if known[1] is _NO_DATA:
            return _ZERO
        role = known[1]
        out_kw = kwargs.get("out") if kwargs else None
        if tensors is not None and out_kw is None:
            inputs, outputs = _unique(tensors[0]), _unique(tensors[1])
        else:
            kw_in = {k: v for k, v in (kwargs or {}).items() if k != "out"}
            inputs = _unique(_all_tensors((list(args), kw_in)))
            outputs = _unique(_all_tensors(out) + _all_tensors(out_kw))
        if role == "no-read-of-dest" and args and isinstance(args[0], torch.Tensor):
            dest = _identity(args[0])
            inputs = [(t, sk) for t, sk in inputs if _identity_of(t, sk) != dest]
        if role == "factory":
            inputs = []
        blob = (args[1] if len(args) > 1 else (kwargs or {}).get("MKL_W")) if role == "packed-linear" else None
        if isinstance(blob, torch.Tensor):
            packed = _identity(blob)  # the weight counts once, as ORI_W's bytes (module docstring)
            inputs = [(t, sk) for t, sk in inputs if _identity_of(t, sk) != packed]
        # an indexed write's destination: (bytes read, bytes written) of the elements it writes
        partial = _indexed_write(func, args, kwargs) if role == "indexed-write" else None
        if partial is not None:
            dest_id = _identity(args[0])
            inputs = [(t, sk) for t, sk in inputs if _identity_of(t, sk) != dest_id]
            outputs = [(t, sk) for t, sk in outputs if _identity_of(t, sk) != dest_id]
        if role == "gather":
            reads = self._gather_reads(args, [t for t, _ in outputs])
        elif partial is not None:
            reads = [(t, sk, _source_bytes(func, args, t)) for t, sk in inputs]
        else:
            reads = [(t, sk, tensor_bytes(t)) for t, sk in inputs]
        bytes_read = comp_read = 0
        read, produced, alive, log = self._read, self._produced, self._alive, self.log
        for t, sk, b in reads:
            if log is not None:
                log.append(("r", sk, b))
            bytes_read += b
            if sk not in read:
                read.add(sk)
                if sk not in alive:
                    self._keep(t, sk)
                if sk not in produced:
                    comp_read += b
        bytes_written = comp_written = 0
        for t, sk in outputs:
            b = tensor_bytes(t)
            bytes_written += b
            comp_written += self._first_write(t, sk, b)
            if sk not in produced or log is not None:
                whole = b >= _storage_nbytes(t)
                if whole:
                    produced.add(sk)
                if log is not None:
                    log.append(("w", sk, b, whole))
        if partial is not None:  # the destination's written (and, accumulating, re-read) elements
            dest, (dest_read, dest_written) = args[0], partial
            sk = storage_key(dest)
            bytes_read += dest_read
            if sk not in read and sk not in produced:
                comp_read += dest_read  # a partial read does not mark the storage read
            bytes_written += dest_written
            comp_written += self._first_write(dest, sk, dest_written)
            if log is not None:
                if dest_read:
                    log.append(("p", sk, dest_read))  # a partial read: charged, not marked read
                log.append(("w", sk, dest_written, False))
        return Traffic(bytes_read, bytes_written, comp_read, comp_written)

    def _first_write(self, t: torch.Tensor, sk: Any, nbytes: int) -> int:
        """Compulsory bytes of writing ``nbytes`` to storage ``sk`` (of tensor ``t``): all of
        them the first time the step writes it, none after."""
        if sk in self._written:
            return 0
        self._written.add(sk)
        if sk not in self._alive:
            self._keep(t, sk)
        return nbytes

    @staticmethod
    def _gather_reads(args: Sequence[Any], outputs: List[torch.Tensor]) -> List[Tuple[torch.Tensor, Any, int]]:
        """A gather reads its indices and the rows it gathers (the output's bytes)."""
        gathered = sum(tensor_bytes(o) for o in outputs)
        tensors = _all_tensors(list(args))
        if not tensors:
            return []
        # embedding(weight, indices); index_select(self, dim, index); index(self, indices)
        source, index_tensors = tensors[0], tensors[1:]
        reads = [(source, storage_key(source), min(gathered, tensor_bytes(source)))]
        reads += [(t, storage_key(t), tensor_bytes(t)) for t in index_tensors]
        return reads


def _indexed_write(func: Any, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Optional[Tuple[int, int]]:
    """(bytes of the destination read, bytes written) of an indexed in-place write, or
    None when how many elements it writes cannot be known from shapes (a boolean mask)."""
    if not args or not isinstance(args[0], torch.Tensor):
        return None
    dest = args[0]
    name = op_key(func).__name__
    itemsize = dest.element_size()
    accumulate = False
    if name in ("index_put_", "_index_put_impl_"):
        from torch_roofline.count._index_formulas import written_by_index_put

        indices = args[1] if len(args) > 1 else kwargs.get("indices", ())
        values = args[2] if len(args) > 2 else kwargs.get("values")
        written = written_by_index_put(dest, list(indices), values if isinstance(values, torch.Tensor) else None)
        accumulate = bool(args[3] if len(args) > 3 else kwargs.get("accumulate", False))
    elif name in ("index_copy_", "index_add_", "index_reduce_"):
        source = args[3] if len(args) > 3 else kwargs.get("source")
        written = source.numel() if isinstance(source, torch.Tensor) else None
        accumulate = name != "index_copy_"
    elif name == "index_fill_":
        dim, index = args[1], args[2]
        size = dest.shape[dim] if dest.dim() else 1
        written = index.numel() * (dest.numel() // size if size else 0)
    elif name in ("scatter_", "scatter_add_", "scatter_reduce_"):
        index = args[2] if len(args) > 2 else kwargs.get("index")
        written = index.numel() if isinstance(index, torch.Tensor) else None
        accumulate = name != "scatter_" or "reduce" in kwargs or len(args) > 4
    elif name == "put_":
        written = args[1].numel()
        accumulate = bool(args[3] if len(args) > 3 else kwargs.get("accumulate", False))
    else:
        return None
    if written is None:
        return None
    written_bytes = min(written, dest.numel()) * itemsize
    return (written_bytes if accumulate else 0), written_bytes


def _source_bytes(func: Any, args: Sequence[Any], t: torch.Tensor) -> int:
    """Bytes an indexed write reads of one of its inputs: a scatter reads only the part of
    ``src`` its index covers; everything else (indices, sources, values) is read whole."""
    if op_key(func).__name__ in ("scatter_", "scatter_add_", "scatter_reduce_") and len(args) > 3 and t is args[3]:
        index = args[2]
        return min(tensor_bytes(t), index.numel() * t.element_size())
    return tensor_bytes(t)
