"""FLOPs and bytes of a trace's op rows from what the profiler recorded: count what ran.

A trace recorded with ``torch.profiler.profile(record_shapes=True)`` keeps, on every
``cpu_op`` event, the op's arguments in schema order: ``Input Dims`` (tensor shapes),
``Input type`` (the tensor's dtype as C++ names it, ``"float"``, ``"c10::Half"``, or
``"Scalar"`` / ``"ScalarList"`` / ``"TensorList"``), ``Input Strides`` and ``Concrete Inputs``
(scalar arguments as strings, ``"[1, 1]"``, ``"1e-05"``, ``"True"``). :func:`shape_costs`
rebuilds each op row's call from them with meta tensors of those shapes, dtypes and strides,
and runs it under the counter (:class:`~torch_roofline.count.mode.OpCounter`), so the FLOP
formulas and the traffic model are the ones ``torch_roofline.count`` uses. This is how the
live profiler counts the steps it timed (no second run of the user's code), and how a saved
trace is counted without its model.

Rules (each one a choice):

* **One cost per op row, named like the row.** The rows are those of
  :func:`~torch_roofline.timing.attribution.attribute`: the calls a dispatch-mode counter sees
  (:mod:`torch_roofline.count.dispatch`), so a row's replay usually dispatches exactly its own
  op (``aten.convolution``; ``aten.addmm``) and its cost equals ``count()``'s for that call.
  When a replay dispatches several ops (a composite row with nothing recorded inside, a row
  chosen by ``op_names``), their FLOPs, MACs and bytes are summed into the row's
  :class:`~torch_roofline.records.OpCost`, which takes the dtype and unit (matrix/vector) of
  the sub-op with the most FLOPs (then bytes). The dispatched names are kept in
  :attr:`ShapeCosts.dispatched`.
* **One replay per signature.** Calls with the same name, argument types, shapes, strides,
  scalar values and aliasing (which arguments are the same tensor or share a storage) cost
  the same: each signature is replayed once and reused, so 80 identical transformer layers
  cost one layer's replays.
* **Arguments the profiler does not record** (strings such as ``gelu``'s ``approximate``,
  devices, generators) take their schema default; ``None`` for optional ones; device
  arguments are ``"meta"``. A required argument that is missing makes the row uncounted.
  Tensor lists carry shapes but no dtypes: their tensors take the dtype of the op's first
  recorded tensor, else float32, and the result says so in a note.
* **Rows the meta device cannot run** (no meta kernel: ``mkldnn_linear``; data-dependent
  output: ``nonzero``, boolean indexing) are counted, in a live session, from the allocations
  the profiler saw the call make: its outputs' bytes are the bytes it allocated and kept, its
  FLOPs the formula's from the input shapes (or 0 for ops without arithmetic). Elsewhere (a
  saved trace), and when the formula needs the output, the row is uncounted: an ``OpCost``
  with ``counted=False`` and 0 FLOPs and bytes whose reason is kept in
  :attr:`ShapeCosts.reasons`: listed with its time, never silently zero. An op without a
  formula is counted through its decomposition (:mod:`torch_roofline.count.decompose`).
* **Compulsory bytes.** In a live session the profiler's tensor identities
  (:mod:`torch_roofline.timing.identity`) say which storage each argument was, and which
  storages each call allocated: each storage is then read and written at most once per
  profiled step, and a storage the step produced whole is never read back, exactly as
  ``count(memory_model="compulsory")`` moves it. A saved trace records no identities: each
  row's compulsory traffic is its own first-touch traffic (reuse across ops cannot be seen),
  and a note says so.

Example::

    from torch_roofline.timing import attribute, load_trace
    from torch_roofline.timing.shapes import costs_from_shapes, has_recorded_shapes

    trace = load_trace("trace.json.gz")
    if has_recorded_shapes(trace):
        costs = costs_from_shapes(trace, attribute(trace))
"""

from __future__ import annotations

import ast
import dataclasses
import json
import re
import threading
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from torch_roofline._lazy_dynamo import prepare_meta_replays, replays_prepared
from torch_roofline.count._onednn_formulas import CONV_OPS, STAND_INS
from torch_roofline.records import OpCost, frozen_record
from torch_roofline.timing.attribution import TraceTiming, _as_int, dotted_op_name
from torch_roofline.timing.compiled import is_fused_kernel
from torch_roofline.timing.inductor import KernelCost, compiled_costs
from torch_roofline.timing.identity import CallIdentity, Identities, TensorId
from torch_roofline.timing.trace import Trace, TraceEvent

__all__ = ["ShapeCosts", "ShapeTally", "has_recorded_shapes", "shape_costs", "costs_from_shapes", "per_step",
           "reason_lines", "replay_cache"]

# Kineto writes a tensor's dtype as caffe2's TypeMeta name.
_DTYPES: Mapping[str, torch.dtype] = {
    "float": torch.float32, "double": torch.float64, "c10::Half": torch.float16,
    "c10::BFloat16": torch.bfloat16, "long int": torch.int64, "long long": torch.int64,
    "__int64": torch.int64, "int": torch.int32, "short int": torch.int16, "short": torch.int16,
    "signed char": torch.int8, "unsigned char": torch.uint8, "bool": torch.bool,
    "c10::complex<float>": torch.complex64, "c10::complex<double>": torch.complex128,
    "c10::complex<c10::Half>": torch.complex32,
    "c10::Float8_e5m2": torch.float8_e5m2, "c10::Float8_e4m3fn": torch.float8_e4m3fn,
    "c10::Float8_e5m2fnuz": torch.float8_e5m2fnuz, "c10::Float8_e4m3fnuz": torch.float8_e4m3fnuz,
}
# c10::ScalarType enum values, as ``Concrete Inputs`` records a dtype argument.
_SCALAR_TYPES: Mapping[int, torch.dtype] = {
    0: torch.uint8, 1: torch.int8, 2: torch.int16, 3: torch.int32, 4: torch.int64,
    5: torch.float16, 6: torch.float32, 7: torch.float64, 8: torch.complex32,
    9: torch.complex64, 10: torch.complex128, 11: torch.bool, 15: torch.bfloat16,
    23: torch.float8_e5m2, 24: torch.float8_e4m3fn, 25: torch.float8_e5m2fnuz,
    26: torch.float8_e4m3fnuz,
}
_LAYOUTS: Mapping[int, torch.layout] = {0: torch.strided}
_MEMORY_FORMATS: Mapping[int, torch.memory_format] = {
    0: torch.contiguous_format, 1: torch.preserve_format, 2: torch.channels_last,
    3: torch.channels_last_3d,
}
_SCALAR_BASES = ("int", "SymInt", "float", "bool", "number", "ScalarType", "Layout", "MemoryFormat")
_INT = re.compile(r"^[+-]?\d+$")
_OPTIONAL = re.compile(r"^Optional\[(.*)\]$")


class _Unbuildable(Exception):
    """The recorded call cannot be rebuilt; the message is the reason."""


@dataclass(frozen=True)
class ShapeCosts:
    """Costs of a trace's op rows rebuilt from their recorded shapes.

    Attributes:
        costs: one :class:`OpCost` per row of ``timing.ops``, in the same order (op name,
            module, scope, phase, index and recompute flag copied from the row).
        reasons: ``(op, reason)`` per uncounted row, in row order.
        dispatched: ``op -> dotted names of the ops its replay dispatched`` (e.g.
            ``"aten.linear" -> ("aten.t", "aten.addmm")``).
        notes: assumptions made (tensor-list dtypes, how compulsory bytes were counted), for
            the report.
        signatures: distinct call signatures replayed (each replayed once).
        activation_bytes: module name -> bytes of the storages its forward saved for backward
            (children included; each storage once per step, averaged over the steps), from the
            identities of a live session (:func:`_activation_bytes`); empty without them.
        kernels: row position -> a torch.compile kernel call's
            :class:`~torch_roofline.timing.inductor.KernelCost`, for the rows of kernels whose
            ops' modules are known (:func:`torch_roofline.timing.kernel_sites.place_fused_kernels`):
            fused kernels, and the aten op rows of a compiled graph's extern kernel calls.
    """

    costs: Tuple[OpCost, ...]
    reasons: Tuple[Tuple[str, str], ...]
    dispatched: Mapping[str, Tuple[str, ...]]
    notes: Tuple[str, ...] = ()
    signatures: int = 0
    activation_bytes: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    tally: "ShapeTally" = field(default_factory=lambda: ShapeTally())
    kernels: Mapping[int, KernelCost] = field(default_factory=lambda: MappingProxyType({}))

    def summary(self) -> Tuple[str, ...]:
        """Report notes: the assumptions, then the uncounted rows grouped by op and reason."""
        return tuple(self.notes) + reason_lines(Counter(self.reasons))


def reason_lines(reasons: Mapping[Tuple[str, str], int]) -> Tuple[str, ...]:
    """Report notes for uncounted rows: ``(op, reason) -> calls``, one line per op and reason
    (fused torch.compile kernels: one line per reason)."""
    grouped: Dict[Tuple[str, str], int] = {}
    kernels: Dict[str, Dict[str, int]] = defaultdict(lambda: defaultdict(int))  # reason -> kernel -> calls
    for (op, reason), n in reasons.items():
        if is_fused_kernel(op):
            kernels[reason][op] += n
        else:
            grouped[(op, reason)] = n
    lines = [f"{op} ({n} call{'s' if n > 1 else ''}) not counted from the trace's shapes: {reason}"
             for (op, reason), n in grouped.items()]
    for reason, calls in kernels.items():  # one note per reason: a compiled model runs dozens of kernels
        names = ", ".join(list(calls)[:3]) + (", ..." if len(calls) > 3 else "")
        lines.append(f"{len(calls)} torch.compile fused kernel(s) ({sum(calls.values())} call(s): {names}) are "
                     f"timed rows of their own, not counted: {reason}")
    return tuple(lines)


@dataclass(frozen=True)
class ShapeTally:
    """The counts behind a :class:`ShapeCosts`' notes (added up over the parts of a trace read
    a few steps at a time).

    Attributes:
        list_dtype_assumed: op -> calls with tensor lists, whose dtypes the trace does not record.
        omitted: ``(op, argument)`` -> calls counted without that argument (not recorded).
        aborted: calls that stopped before computing (activation checkpointing's recompute end).
        unjoined: calls without tensor identities in a live session's records.
        recomputed: torch.compile kernel -> its calls that compute ops another kernel of its
            graph computes too (:attr:`~torch_roofline.timing.inductor.KernelCost.recomputed`).
        relayout: torch.compile kernel -> (calls, bytes read and written) of the kernels that
            only change the layout of an extern kernel's input
            (:attr:`~torch_roofline.timing.inductor.KernelCost.relayout`).
    """

    list_dtype_assumed: Mapping[str, int] = field(default_factory=dict)
    omitted: Mapping[Tuple[str, str], int] = field(default_factory=dict)
    aborted: int = 0
    unjoined: int = 0
    recomputed: Mapping[str, int] = field(default_factory=dict)
    relayout: Mapping[str, Tuple[int, int]] = field(default_factory=dict)

    def __add__(self, other: "ShapeTally") -> "ShapeTally":
        relayout = dict(self.relayout)
        for name, (calls, nbytes) in other.relayout.items():
            before = relayout.get(name, (0, 0))
            relayout[name] = (before[0] + calls, before[1] + nbytes)
        return ShapeTally(dict(Counter(self.list_dtype_assumed) + Counter(other.list_dtype_assumed)),
                          dict(Counter(self.omitted) + Counter(other.omitted)),
                          self.aborted + other.aborted, self.unjoined + other.unjoined,
                          dict(Counter(self.recomputed) + Counter(other.recomputed)), relayout)

    def notes(self) -> Tuple[str, ...]:
        """The report notes these counts make."""
        notes = [f"{op}: {n} call(s) with tensor lists, whose dtypes the trace does not record; "
                 "the op's first tensor dtype (else float32) was assumed" for op, n in self.list_dtype_assumed.items()]
        for (op, name), n in self.omitted.items():
            value = _STAND_INS.get(op, {}).get(name)
            if isinstance(value, str):
                notes.append(f"{op}: {n} call(s) counted with {name}={value!r}: torch.profiler records no strings, so "
                             "which post-op the fused call ran is not in the trace, nor in a compiled graph of this "
                             "process or beside the trace; its convolution's FLOPs are exact, a fused activation's "
                             "(1 FLOP per output element) is not counted")
                continue
            notes.append(f"{op}: {n} call(s) counted without their {name!r} argument, which torch.profiler does not "
                         "record (a list of optional tensors): the bytes of those tensors are not included")
        if self.aborted:
            notes.append(f"{self.aborted} op call(s) stopped before computing (entered, nothing allocated: activation "
                         "checkpointing ends its recompute this way): counted as no work")
        if self.unjoined:
            notes.append(f"{self.unjoined} op call(s) had no tensor identities in the profiler's records: their "
                         "compulsory bytes are their own first-touch bytes")
        if self.recomputed:
            names = sorted(self.recomputed)
            notes.append(f"{len(names)} torch.compile fused kernel(s) ({sum(self.recomputed.values())} call(s): "
                         f"{', '.join(names[:3])}{', ...' if len(names) > 3 else ''}) compute ops that another kernel "
                         "of the same graph computes too (Inductor recomputes cheap ops rather than storing them): "
                         "their FLOPs count in each kernel that runs them, real work the eager step does once")
        if self.relayout:
            names = sorted(self.relayout)
            calls = sum(c for c, _ in self.relayout.values())
            nbytes = sum(b for _, b in self.relayout.values())
            notes.append(f"{len(names)} torch.compile fused kernel(s) ({calls} call(s), {nbytes / 1e6:.3g} MB read and "
                         f"written in the recorded steps: {', '.join(names[:3])}{', ...' if len(names) > 3 else ''}) "
                         "only change the layout of an extern kernel's input (a convolution's input or weights "
                         "into the layout oneDNN wants), at every call: traffic the eager step does not show (an "
                         "eager oneDNN convolution reorders inside the op). For inference, "
                         "torch._inductor.config.freezing = True makes Inductor reorder the weights once, at "
                         "compile time")
        return tuple(notes)


def has_recorded_shapes(trace: Trace) -> bool:
    """True when the trace's ``cpu_op`` events carry ``Input Dims`` (``record_shapes=True``)."""
    return any(ev.kind == "cpu_op" and "Input Dims" in ev.args for ev in trace.events)


def costs_from_shapes(trace: Trace, timing: TraceTiming) -> Tuple[OpCost, ...]:
    """One :class:`OpCost` per op row of ``timing`` (FLOPs, bytes) from the trace's shapes.

    Args:
        trace: a trace recorded with ``record_shapes=True``.
        timing: ``attribute(trace)``.

    Returns:
        ``shape_costs(trace, timing).costs``: see :func:`shape_costs` and the module docstring.
    """
    return shape_costs(trace, timing).costs


def shape_costs(trace: Trace, timing: TraceTiming, *, identities: Optional[Identities] = None,
                formulas: Optional[Mapping[Any, Callable[..., Any]]] = None,
                parameters: Optional[Sequence[Any]] = None, cache: Optional["_Replayer"] = None) -> ShapeCosts:
    """Rebuild every op row's call from its recorded shapes and count it (module docstring).

    Args:
        trace: a trace recorded with ``record_shapes=True``.
        timing: the trace's attribution, ``attribute(trace)``; each row is matched to its
            ``cpu_op`` event by (thread, start time, op name).
        identities: the live session's tensor identities
            (:class:`~torch_roofline.timing.identity.Identities`): exact compulsory bytes, and
            rows the meta device cannot run counted from their allocations.
        formulas: per-call FLOP formulas, as for :func:`torch_roofline.count`.
        parameters: the model's parameters (their storages are weights, not activations).
        cache: a :func:`replay_cache` shared by the calls over the parts of one trace (read a
            few steps at a time), so each distinct call is replayed once; default: a new one.

    Returns:
        A :class:`ShapeCosts`: costs for all rows (all profiled steps: see :func:`per_step`),
        the reasons of the uncounted ones, and the notes.
    """
    use_ids = identities is not None and identities.available
    if len(timing.row_events) == len(timing.ops):
        found: List[Optional[TraceEvent]] = list(timing.row_events)
    else:  # a TraceTiming built elsewhere: match rows to events by (thread, start, name)
        events = _events_by_key(trace)
        found = [_pop_event(events, row.thread, row.start_s, row.op) for row in timing.ops]
    ids = identities.of_many(found) if use_ids else [None] * len(found)
    rows = list(zip(timing.ops, found, ids))
    signatures = [_signature(ev) for ev in found]
    entries: Dict[Any, Tuple[_Entry, ...]] = {}
    tensors: List[Optional[List[Tuple[Optional[TensorId], int]]]] = []
    for (row, ev, identity), sig in zip(rows, signatures):
        if identity is None or ev is None:
            tensors.append(None)
            continue
        static = entries.get(sig)
        if static is None:
            static = entries[sig] = _entries(ev)
        tensors.append(_row_tensors(static, identity, ev))
    spans = _storage_spans(tensors) if use_ids else {}
    kernel_events = [ev for ev in found if ev is not None and is_fused_kernel(ev.name)]
    fused: Dict[int, Any] = {}
    extern: Dict[int, KernelCost] = {}
    if kernel_events:
        aten_events = [ev for ev in found if ev is not None and not is_fused_kernel(ev.name)]
        fused, extern = compiled_costs(trace.events, kernel_events, aten_events, trace.source)
    replayer = cache if cache is not None else _Replayer(formulas)
    signatures_before = replayer.signatures
    traffic = _StepTraffic()
    costs: List[OpCost] = []
    reasons: List[Tuple[str, str]] = []
    dispatched: Dict[str, Tuple[str, ...]] = {}
    assumed: Dict[str, int] = defaultdict(int)
    unjoined = aborted = 0
    partial: Dict[Tuple[str, str], int] = defaultdict(int)
    kernels: Dict[int, KernelCost] = {}
    recomputed: Dict[str, int] = defaultdict(int)
    relayout: Dict[str, Tuple[int, int]] = {}
    for position, ((row, ev, identity), sig, row_tensors) in enumerate(zip(rows, signatures, tensors)):
        post_op = None  # FLOPs of post-ops the compiled graph's code names beyond the replay's stand-ins
        if ev is not None and ev.index in extern:  # an extern kernel of a compiled graph: placed by its ops' modules
            placed = extern[ev.index]
            if placed.chains or placed.split:
                kernels[position] = placed
            post_op = placed.post_op_flops
        if ev is not None and ev.index in fused:  # a torch.compile kernel: costed from its compiled graph
            fields, why = _kernel_fields(row.op, fused[ev.index])
            found = fused[ev.index]
            if isinstance(found, KernelCost) and (found.chains or found.split):
                kernels[position] = found
            if isinstance(found, KernelCost) and found.recomputed and fields["counted"]:
                recomputed[row.op] += 1
            if isinstance(found, KernelCost) and found.relayout:
                calls, nbytes = relayout.get(row.op, (0, 0))
                relayout[row.op] = (calls + 1, nbytes + fields["bytes_read"] + fields["bytes_written"])
            fields.update(module=row.module, scope=tuple(row.scope), phase=row.phase, index=row.index,
                          recompute=row.recompute)
            costs.append(frozen_record(OpCost, fields))
            if why is not None:
                reasons.append((row.op, why))
            continue
        if use_ids and identity is None:
            unjoined += 1
        aliases, storages = _aliases(row_tensors, spans) if row_tensors is not None else (None, {})
        replayed = replayer.replay(ev, identity, aliases, sig)
        if replayed.list_dtype_assumed:
            assumed[row.op] += 1
        fields = dict(replayer.cost(replayed, row.op, ev).__dict__)
        if post_op is not None and replayed.reason is None and any(n in _POST_OP_ARGS for n in replayed.omitted):
            fields["flops"] += post_op  # the stand-ins corrected from the code: nothing left out
        else:
            for name in replayed.omitted:
                partial[(row.op, name)] += 1
        if identity is not None and replayed.reason is None and not identity.allocations and replayed.writes_new:
            # It returns fresh outputs, yet the profiler saw it allocate nothing: it stopped
            # before computing (activation checkpointing stops its recompute by raising in the
            # op that saves the last tensor it needs; the op was entered, never run).
            fields.update(flops=0, macs=0, bytes_read=0, bytes_written=0,
                          compulsory_bytes_read=0, compulsory_bytes_written=0)
            replayed = _NOTHING
            aborted += 1
        elif identity is not None and replayed.reason is None and identity.kept:
            fields["bytes_written"] -= _beyond_allocated(replayed, identity)
        if use_ids:
            traffic.start(row.step)
            if identity is not None:
                fields["compulsory_bytes_read"], fields["compulsory_bytes_written"] = traffic.apply(
                    replayed, identity, storages)
        fields.update(module=row.module, scope=tuple(row.scope), phase=row.phase, index=row.index,
                      recompute=row.recompute)
        costs.append(frozen_record(OpCost, fields))
        why = replayed.reason or replayed.uncounted_reason
        if why is not None:
            reasons.append((row.op, why))
        if replayed.subs:
            dispatched.setdefault(row.op, tuple(dict.fromkeys(sub.op for sub in replayed.subs)))
    tally = ShapeTally(dict(assumed), dict(partial), aborted, unjoined, dict(recomputed), relayout)
    activations = _activation_bytes(rows, tensors, spans, parameters or (), timing.steps) if use_ids else {}
    return ShapeCosts(tuple(costs), tuple(reasons), MappingProxyType(dispatched), tally.notes(),
                      replayer.signatures - signatures_before, MappingProxyType(activations), tally,
                      MappingProxyType(kernels))


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
        except (RuntimeError, NotImplementedError, AttributeError):
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


def per_step(costs: Sequence[OpCost], steps: int, step_of: Optional[Sequence[int]] = None
             ) -> Tuple[Tuple[OpCost, ...], Tuple[str, ...]]:
    """The costs of one (average) step, from costs counted over ``steps`` profiled steps.

    For each (module, phase, op): when every step ran the same calls at the same cost (their
    FLOPs, MACs and bytes agree step by step), the first step's calls are kept; otherwise
    (variable-length batches, a step that skipped an op) every call is kept with its FLOPs,
    MACs and bytes divided by ``steps`` (rounded), so the sums are the per-step averages, and
    a note says so.

    Args:
        costs: the calls of all steps, in time order.
        steps: profiled steps.
        step_of: each call's step (0-based), aligned with ``costs``; default: calls are split
            into ``steps`` equal runs per (module, phase, op).

    Returns:
        ``(costs, notes)``.
    """
    if steps < 1:
        raise ValueError(f"per_step(steps={steps}): expected a positive number of steps")
    if steps == 1:
        return tuple(costs), ()
    groups: Dict[Tuple[str, str, str], List[Tuple[int, OpCost]]] = defaultdict(list)
    for i, c in enumerate(costs):
        groups[(c.module, c.phase, c.op)].append((i, c))
    keep: List[OpCost] = []
    uneven: List[str] = []
    for (module, phase, op), calls in groups.items():
        chunks = _chunks(calls, steps, step_of)
        if chunks is not None and all(_sums(ch) == _sums(chunks[0]) for ch in chunks[1:]):
            keep += chunks[0]
        else:
            uneven.append(op)
            keep += [_scaled(c, steps) for _, c in calls]
    keep.sort(key=lambda c: (c.phase, c.index))
    notes = (f"ops whose calls differ between the {steps} profiled steps ({', '.join(sorted(set(uneven)))}): "
             "their counts are averaged over the steps",) if uneven else ()
    return tuple(keep), notes


def _chunks(calls: Sequence[Tuple[int, OpCost]], steps: int, step_of: Optional[Sequence[int]]
            ) -> Optional[List[List[OpCost]]]:
    """The calls split by step; ``None`` when they cannot be split into ``steps`` parts."""
    if step_of is not None:
        by_step: List[List[OpCost]] = [[] for _ in range(steps)]
        for i, c in calls:
            k = step_of[i]
            if not 0 <= k < steps:
                return None
            by_step[k].append(c)
        return by_step
    if len(calls) % steps:
        return None
    n = len(calls) // steps
    return [[c for _, c in calls[k * n:(k + 1) * n]] for k in range(steps)]


def _sums(calls: Sequence[OpCost]) -> Tuple[int, ...]:
    return (len(calls), sum(c.flops for c in calls), sum(c.macs for c in calls),
            sum(c.bytes_read for c in calls), sum(c.bytes_written for c in calls),
            sum(c.compulsory_bytes_read for c in calls), sum(c.compulsory_bytes_written for c in calls))


# --------------------------------------------------------------------------- matching rows to events


def _events_by_key(trace: Trace) -> Dict[Tuple[int, float, str], List[TraceEvent]]:
    table: Dict[Tuple[int, float, str], List[TraceEvent]] = defaultdict(list)
    for ev in trace.events:
        if ev.kind == "cpu_op":
            table[(_as_int(ev.tid), ev.start_s, dotted_op_name(ev.name))].append(ev)
    for evs in table.values():
        evs.sort(key=lambda e: (-e.dur_s, e.index))  # the outermost event first
    return table


def _pop_event(table: Mapping[Tuple[int, float, str], List[TraceEvent]], thread: int, start_s: float,
               op: str) -> Optional[TraceEvent]:
    evs = table.get((thread, start_s, op))
    return evs.pop(0) if evs else None


def _signature(ev: Optional[TraceEvent]) -> Any:
    """What a call's cost depends on, as one hashable value: its name and recorded arguments."""
    if ev is None:
        return ""
    get = ev.args.get
    return ev.name, _dumps([get("Input type"), get("Input Dims"), get("Input Strides"), get("Concrete Inputs")])


try:
    from orjson import dumps as _dumps
except ImportError:  # pragma: no cover - orjson is in install_requires
    def _dumps(value: Any) -> Any:
        return json.dumps(value)


# --------------------------------------------------------------------------- replaying a call

# Per recorded tensor argument: (tensor class, storage class, storage larger than the view).
# Classes number the arguments by first appearance: two arguments with one class are the
# same tensor (or share a storage). ``None`` where the call's identities are unknown.
_Alias = Optional[Tuple[int, int, bool]]
_Slot = Tuple[str, int]  # ("in", storage class) or ("new", j): a storage the call created


@dataclass(frozen=True)
class _Replayed:
    """One signature's replay: the dispatched ops' costs and their storage accesses."""

    subs: Tuple[OpCost, ...]
    reason: Optional[str]
    list_dtype_assumed: bool = False
    accesses: Tuple[Tuple[Any, ...], ...] = ()  # ("r", slot, bytes) / ("w", slot, bytes, whole)
    omitted: Tuple[str, ...] = ()  # arguments the profiler did not record, left out of the cost
    per_call: bool = False  # built for one call (from its allocations), not cached per signature
    why: Optional[str] = None  # the counter's reason when a dispatched op stayed uncounted

    @property
    def new_bytes(self) -> int:
        """Bytes written to storages the call creates (its fresh outputs)."""
        return sum(a[2] for a in self.accesses if a[0] == "w" and a[1][0] == "new")

    @property
    def writes_new(self) -> bool:
        """Whether the call writes bytes to a storage it creates (a fresh output)."""
        return self.new_bytes > 0

    def cost(self, op: str, ev: Optional[TraceEvent]) -> OpCost:
        """The row's cost: the dispatched ops merged (op-model bytes; compulsory per row)."""
        if self.reason is not None:
            return _uncounted(op, ev)
        if not self.subs:  # nothing dispatched (contiguous() of a contiguous tensor): no work
            return dataclasses.replace(_uncounted(op, ev), counted=True)
        subs = self.subs
        lead = subs[0] if len(subs) == 1 else max(subs, key=lambda c: (c.flops, c.bytes_read + c.bytes_written))
        missing = [c.op for c in subs if not c.counted]
        counted = not missing
        return OpCost(
            op=op, module="", scope=("",), phase="forward",
            flops=sum(c.flops for c in subs) if counted else 0,
            macs=sum(c.macs for c in subs) if counted else 0,
            bytes_read=sum(c.bytes_read for c in subs), bytes_written=sum(c.bytes_written for c in subs),
            compulsory_bytes_read=sum(c.compulsory_bytes_read for c in subs),
            compulsory_bytes_written=sum(c.compulsory_bytes_written for c in subs),
            dtype=lead.dtype, unit=lead.unit, counted=counted,
        )

    @property
    def uncounted_reason(self) -> Optional[str]:
        missing = sorted({c.op for c in self.subs if not c.counted})
        if not missing:
            return None
        return self.why or f"no FLOP formula for {', '.join(missing)}"


def _kernel_fields(op: str, found: Any) -> Tuple[Dict[str, Any], Optional[str]]:
    """OpCost fields of a fused kernel call (:mod:`torch_roofline.timing.inductor`) and why it
    is not counted, if it is not. Compulsory bytes are the buffers it is the first in its
    graph's run to read or write (:attr:`KernelCost.compulsory`), else its own traffic."""
    cost = found if isinstance(found, KernelCost) else None
    read = cost.bytes_read if cost is not None and cost.bytes_read is not None else 0
    written = cost.bytes_written if cost is not None and cost.bytes_written is not None else 0
    first_read, first_written = cost.compulsory if cost is not None and cost.compulsory is not None else (read, written)
    counted = cost is not None and cost.reason is None and cost.flops is not None and cost.bytes_read is not None
    why = None if counted else (cost.reason if cost is not None else str(found))
    return {
        "op": op, "module": "", "scope": ("",), "phase": "forward",
        "flops": cost.flops if counted else 0, "macs": 0, "bytes_read": read, "bytes_written": written,
        "compulsory_bytes_read": first_read, "compulsory_bytes_written": first_written,
        "dtype": cost.dtype if cost is not None else None, "unit": "vector", "counted": counted,
        "index": 0, "recompute": False, "fused": True, "eager_bytes": cost.eager_bytes if cost is not None else None,
    }, why


def replay_cache(formulas: Optional[Mapping[Any, Callable[..., Any]]] = None) -> "_Replayer":
    """A cache of replayed calls for :func:`shape_costs` (``cache=``), to share between the
    parts of one trace: each distinct call signature is replayed on meta tensors once."""
    return _Replayer(formulas)


class _Replayer:
    """Replays recorded calls on meta tensors, once per signature."""

    def __init__(self, formulas: Optional[Mapping[Any, Callable[..., Any]]]) -> None:
        self.formulas = formulas
        self._cache: Dict[Any, _Replayed] = {}
        self._costs: Dict[Tuple[int, str], OpCost] = {}
        self.signatures = 0

    def cost(self, replayed: _Replayed, op: str, ev: Optional[TraceEvent]) -> OpCost:
        """``replayed.cost(op, ev)``, computed once per replay and op name."""
        if replayed.per_call or replayed.reason is not None:
            return replayed.cost(op, ev)
        key = (id(replayed), op)  # cached replays live as long as this replayer: ids stay theirs
        found = self._costs.get(key)
        if found is None:
            found = self._costs[key] = replayed.cost(op, ev)
        return found

    def replay(self, ev: Optional[TraceEvent], identity: Optional[CallIdentity],
               aliases: Optional[Tuple[_Alias, ...]] = None, signature: Optional[str] = None) -> _Replayed:
        list_dtypes = _list_dtypes(identity)
        fresh = identity.fresh if identity is not None and any(identity.fresh) else None
        key = (signature if signature is not None else _signature(ev), aliases, list_dtypes, fresh)
        found = self._cache.get(key)
        if found is None:
            found = self._cache[key] = self._run(ev, aliases, list_dtypes, fresh)
            self.signatures += 1
        if found.reason is not None and identity is not None and ev is not None and not is_fused_kernel(ev.name):
            # The meta device cannot run it: count it from what the profiler saw it allocate.
            fallback = _from_allocations(ev, aliases, identity, self.formulas)
            if fallback is not None:
                return fallback
        return found

    def _run(self, ev: Optional[TraceEvent], aliases: Optional[Tuple[_Alias, ...]],
             list_dtypes: Optional[Tuple[Any, ...]], fresh: Optional[Tuple[bool, ...]] = None) -> _Replayed:
        """Replay one call, once what torch's Python meta kernels import at their first call
        is imported off the caller's stack or deferred
        (:func:`~torch_roofline._lazy_dynamo.prepare_meta_replays`): such an import can keep
        the frames below it alive (see :func:`torch_roofline._gc.import_off_stack`), which
        must not be the caller's (a whole trace). Where that could not be done, on a thread of
        its own."""
        if not replays_prepared():
            prepare_meta_replays()
        if replays_prepared():
            return self._run_here(ev, aliases, list_dtypes, fresh)
        box: List[_Replayed] = []
        thread = threading.Thread(target=lambda: box.append(self._run_here(ev, aliases, list_dtypes, fresh)),
                                  name="torch_roofline-replay", daemon=True)
        thread.start()
        thread.join()
        return box[0] if box else self._run_here(ev, aliases, list_dtypes, fresh)  # failed there: fail here

    def _run_here(self, ev: Optional[TraceEvent], aliases: Optional[Tuple[_Alias, ...]],
                  list_dtypes: Optional[Tuple[Any, ...]], fresh: Optional[Tuple[bool, ...]] = None) -> _Replayed:
        from torch_roofline.count.mode import OpCounter

        try:
            if ev is None:
                raise _Unbuildable("no trace event found for the row")
            # stand-ins only: a gather replayed on meta without its indices would cost another op
            omitted: Optional[List[str]] = [] if dotted_op_name(ev.name) in _STAND_INS else None
            candidates, assumed = _calls(ev, aliases, list_dtypes, omitted, fresh=fresh)
        except _Unbuildable as exc:
            return _Replayed((), str(exc))
        last = "no overload of the op matches the recorded arguments"
        for overload, kwargs, slots in candidates:
            counter = OpCounter(None, self.formulas, replay=True)
            counter._traffic.log = log = []
            try:
                with counter:
                    overload(**kwargs)
            except Exception as exc:  # noqa: BLE001 - any failure means this overload cannot replay it
                last = _failure(exc)
                outs = _shaped_outputs(overload, kwargs)
                shaped = _with_outputs(overload, kwargs, slots, outs, omitted, self.formulas, per_call=False) \
                    if outs is not None else None
                if shaped is not None:
                    return shaped
                continue
            why = "; ".join(counter.reasons[c.op] for c in counter.ops
                            if not c.counted and c.op in counter.reasons) or None
            return _Replayed(tuple(counter.ops), None, assumed, _slotted(log, slots), tuple(dict.fromkeys(omitted or ())),
                             why=why)
        return _Replayed((), last)


def _slotted(log: Sequence[Tuple[Any, ...]], slots: Mapping[Any, _Slot]) -> Tuple[Tuple[Any, ...], ...]:
    """The replay's storage accesses with meta storage keys replaced by slots."""
    new: Dict[Any, _Slot] = {}
    out = []
    for access in log:
        key = access[1]
        slot = slots.get(key)
        if slot is None:
            slot = new.get(key)
            if slot is None:
                slot = new[key] = ("new", len(new))
        out.append((access[0], slot) + tuple(access[2:]))
    return tuple(out)


def _from_allocations(ev: TraceEvent, aliases: Optional[Tuple[_Alias, ...]], identity: CallIdentity,
                      formulas: Optional[Mapping[Any, Callable[..., Any]]]) -> Optional[_Replayed]:
    """The cost of a call the meta device cannot run, from the inputs' recorded shapes and the
    outputs the profiler saw it allocate (bytes kept when it returned).

    FLOPs: the op's formula on the inputs alone (no output), or 0 for an op without
    arithmetic; a formula that needs the output leaves the row uncounted.
    """
    # Leaving out an unrecorded list of index tensors only loses their own bytes for a gather
    # (its output, allocated, says what it read); an indexed write without its indices would be
    # costed as a different write, so it stays uncounted.
    omitted = _omissions(dotted_op_name(ev.name))
    try:
        candidates, _ = _calls(ev, aliases, _list_dtypes(identity), omitted, identity.fresh or None)
    except _Unbuildable:
        return None
    overload, kwargs, slots = candidates[0]
    outs = [torch.empty(nbytes, dtype=torch.uint8, device="meta") for _, nbytes in identity.kept]
    return _with_outputs(overload, kwargs, slots, outs, omitted, formulas, per_call=True)


#: Ops without a meta kernel whose output is shaped like one of their arguments (by name), or
#: is that argument (an in-place op): the oneDNN convolutions with a fused residual of a frozen
#: torch.compile model.
_OUTPUT_LIKE: Mapping[str, Tuple[str, bool]] = {
    "mkldnn::_convolution_pointwise.binary": ("other", False),
    "mkldnn::_convolution_pointwise_.binary": ("other", True),
}


def _shaped_outputs(overload: Any, kwargs: Mapping[str, Any]) -> Optional[List[torch.Tensor]]:
    """The outputs of a call of ``overload`` that the meta device cannot run, from
    :data:`_OUTPUT_LIKE`; ``None`` for other ops."""
    schema = overload._schema
    rule = _OUTPUT_LIKE.get(f"{schema.name}.{schema.overload_name or 'default'}")
    if rule is None or not isinstance(kwargs.get(rule[0]), torch.Tensor):
        return None
    like = kwargs[rule[0]]
    return [like if rule[1] else torch.empty_like(like)]


def _with_outputs(overload: Any, kwargs: Mapping[str, Any], slots: Mapping[Any, _Slot], outs: List[torch.Tensor],
                  omitted: Optional[List[str]], formulas: Optional[Mapping[Any, Callable[..., Any]]],
                  per_call: bool) -> Optional[_Replayed]:
    """The cost of a rebuilt call whose outputs are known without running it: bytes by the op
    memory model, FLOPs by the op's formula on the inputs alone (0 for an op without
    arithmetic); ``None`` when the formula needs the output or there is none."""
    from torch_roofline.count import formulas as _f
    from torch_roofline.count.mode import compute_dtype, op_name
    from torch_roofline.count.traffic import StepTraffic, is_view_op
    from torch_roofline.count._tree import tensors as _tensors

    traffic = StepTraffic()
    traffic.log = log = []
    measured = traffic.measure(overload, (), kwargs, outs)
    entry = _f.lookup(overload, formulas)
    flops = macs = 0
    unit = "vector"
    if entry is not None:
        try:
            result = _f.evaluate(entry, *_positional(overload, kwargs), None)
        except Exception:  # noqa: BLE001 - a formula that needs the output: not countable here
            result = None
        if result is None or result.flops is None:
            return None
        flops, macs, unit = result.flops, result.macs, result.unit
    elif not (_f.op_key(overload) in _f.NO_ARITHMETIC or is_view_op(overload)):
        return None
    ins = _tensors(kwargs)
    cost = OpCost(op=op_name(overload), module="", scope=("",), phase="forward", flops=int(flops), macs=int(macs),
                  bytes_read=measured.bytes_read, bytes_written=measured.bytes_written,
                  compulsory_bytes_read=measured.compulsory_bytes_read,
                  compulsory_bytes_written=measured.compulsory_bytes_written,
                  dtype=compute_dtype(ins, [], unit), unit=unit, counted=True)
    return _Replayed((cost,), None, False, _slotted(log, slots), tuple(dict.fromkeys(omitted or ())),
                     per_call=per_call)


def _beyond_allocated(replayed: _Replayed, identity: CallIdentity) -> int:
    """Bytes by which the replay's fresh outputs exceed what the profiler saw the call allocate
    and keep (0 when they do not). The meta device's shapes can be larger than a real kernel's:
    eval-mode ``native_batch_norm`` on the CPU returns empty ``save_mean``/``save_invstd``, its
    meta kernel ``[C]`` ones. Only ever a cut: a caching allocator rounds its blocks up."""
    kept = sum(nbytes for _, nbytes in identity.kept)
    return max(replayed.new_bytes - kept, 0)


_GATHERS_WITHOUT_INDICES = frozenset({"aten.index", "aten._unsafe_index"})

#: Required arguments torch.profiler does not record (strings, lists of optional scalars),
#: with the value a replay takes, per op: the oneDNN convolutions of a frozen torch.compile
#: model (``count/_onednn_formulas.py``): no unary post-op, a residual add.
_STAND_INS: Mapping[str, Mapping[str, Any]] = {op: STAND_INS for op in CONV_OPS}


#: The stand-ins naming a post-op (corrected from a compiled graph's code when it is known).
_POST_OP_ARGS = frozenset({"attr", "binary_attr"})


def _omissions(name: str) -> Optional[List[str]]:
    """A list to collect the arguments a replay of op ``name`` goes without (or takes a stand-in
    for), for the ops allowed to; ``None`` for the others (a missing argument refuses them)."""
    return [] if name in _GATHERS_WITHOUT_INDICES or name in _STAND_INS else None


def _positional(overload: Any, kwargs: Mapping[str, Any]) -> Tuple[Tuple[Any, ...], Dict[str, Any]]:
    """``kwargs`` of a rebuilt call split as the dispatcher passes them: positional arguments in
    schema order (defaults filled in), keyword-only ones by name."""
    args: List[Any] = []
    kw: Dict[str, Any] = {}
    for arg in overload._schema.arguments:
        if arg.kwarg_only:
            if arg.name in kwargs:
                kw[arg.name] = kwargs[arg.name]
        elif arg.name in kwargs:
            args.append(kwargs[arg.name])
        else:
            args.append(arg.default_value if arg.has_default_value() else None)
    return tuple(args), kw


_NOTHING = _Replayed((), None)  # a call that did no work


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


def _list_dtypes(identity: Optional[CallIdentity]) -> Optional[Tuple[Any, ...]]:
    if identity is None or not any(d is not None for d in identity.list_dtypes):
        return None
    return tuple(identity.list_dtypes)


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


def _failure(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "meta" in text.lower() or "DataDependent" in type(exc).__name__:
        return f"cannot run on meta tensors (data-dependent output or no meta kernel): {text[:160]}"
    return f"replay failed: {type(exc).__name__}: {text[:160]}"


def _packet(name: str) -> Any:
    ns, sep, rest = name.partition("::")
    if not sep:
        raise _Unbuildable(f"{name!r} is not a namespaced aten op")
    try:
        return getattr(getattr(torch.ops, ns), rest.split(".", 1)[0])
    except (AttributeError, RuntimeError):
        raise _Unbuildable(f"torch.ops.{ns} has no op {rest!r} in this torch") from None


def _calls(ev: TraceEvent, aliases: Optional[Tuple[_Alias, ...]] = None,
           list_dtypes: Optional[Sequence[Any]] = None, omitted: Optional[List[str]] = None,
           fresh: Optional[Sequence[bool]] = None
           ) -> Tuple[List[Tuple[Any, Dict[str, Any], Dict[Any, _Slot]]], bool]:
    """Every overload whose schema fits the recorded arguments: (overload, keyword arguments,
    ``{meta storage key: ("in", storage class)}``), and whether a tensor list's dtype was assumed.

    ``aliases``: per tensor argument (tensor lists flattened), its tensor and storage classes
    (:func:`_aliases`): arguments of one tensor class are one meta tensor. ``list_dtypes``: the
    element dtypes of tensor lists when known (live sessions), per recorded argument.
    ``omitted``: when a list, a required ``List[Optional[Tensor]]`` argument that the profiler
    did not record (it never records that type: ``index``'s ``indices``) is rebuilt as an
    empty list and its name appended, instead of refusing the call. ``fresh``: per recorded
    argument, allocated right before the call (:func:`_wrapped_numbers`).
    """
    args = ev.args
    if "Input Dims" not in args or "Input type" not in args:
        raise _Unbuildable("the trace has no recorded shapes for it (record_shapes=False)")
    dims, types = list(args["Input Dims"]), list(args["Input type"])
    strides = list(args.get("Input Strides") or [None] * len(dims))
    concrete = list(args.get("Concrete Inputs") or [None] * len(dims))
    if not (len(dims) == len(types) == len(strides) == len(concrete)):
        raise _Unbuildable("its recorded argument lists differ in length")
    packet = _packet(ev.name)
    list_dtype = next((_DTYPES[t] for t in types if t in _DTYPES), torch.float32)
    recorded = list(zip(types, dims, strides, concrete))
    overloads = _overloads(packet, ev.name)
    fits, reason = [], None
    for overload in overloads:
        schema = overload._schema.arguments
        if len(schema) != len(recorded):
            continue
        try:
            builder = _Builder(aliases, list_dtype, list_dtypes)
            builder.omitted = omitted
            builder.stand_ins = _STAND_INS.get(dotted_op_name(ev.name), {}) if omitted is not None else {}
            builder.fresh = fresh
            fits.append((overload, _kwargs(schema, recorded, builder), builder.slots))
        except _Unbuildable as exc:
            reason = reason or str(exc)
    if not fits:
        raise _Unbuildable(reason or f"no overload of {ev.name} takes {len(recorded)} arguments")
    assumed = "TensorList" in types and not list_dtypes
    return fits, assumed


def _overloads(packet: Any, name: str) -> List[Any]:
    """The recorded overload when the trace names it (``aten::add.Tensor``), else all of them."""
    _, _, rest = name.partition("::")
    if "." in rest:
        overload = rest.split(".", 1)[1]
        if overload in packet.overloads():
            return [getattr(packet, overload)]
    elif "default" in packet.overloads():  # a name without suffix may be the default overload: try it first
        return [packet.default] + [getattr(packet, o) for o in packet.overloads() if o != "default"]
    return [getattr(packet, o) for o in packet.overloads()]


class _Builder:
    """Builds one call's meta tensors, aliased as the recorded call's tensors were."""

    def __init__(self, aliases: Optional[Tuple[_Alias, ...]], list_dtype: torch.dtype,
                 list_dtypes: Optional[Sequence[Any]]) -> None:
        self.aliases = aliases
        self.list_dtype = list_dtype
        self.list_dtypes = list_dtypes
        self.position = 0  # flat index of the next tensor argument
        self.made: Dict[int, torch.Tensor] = {}
        self.slots: Dict[Any, _Slot] = {}
        self.omitted: Optional[List[str]] = None
        self.stand_ins: Mapping[str, Any] = {}
        self.fresh: Optional[Sequence[bool]] = None

    def tensor(self, dims: Any, strides: Any, dtype: torch.dtype) -> torch.Tensor:
        from torch_roofline.count.traffic import _storage_key

        alias = self.aliases[self.position] if self.aliases and self.position < len(self.aliases) else None
        storage_class = alias[1] if alias is not None else self.position
        self.position += 1
        if alias is not None and alias[0] in self.made:
            return self.made[alias[0]]
        t = _meta_tensor(dims, strides, dtype, larger=alias is not None and alias[2])
        if alias is not None:
            self.made[alias[0]] = t
        self.slots.setdefault(_storage_key(t), ("in", storage_class))
        return t


def _kwargs(schema: Sequence[Any], recorded: Sequence[Tuple[Any, Any, Any, Any]], builder: _Builder
            ) -> Dict[str, Any]:
    kwargs: Dict[str, Any] = {}
    wrapped = _wrapped_numbers([r[0] for r in recorded], [r[1] for r in recorded], builder.fresh)
    for index, (arg, (typ, dim, stride, value)) in enumerate(zip(schema, recorded)):
        if wrapped[index] and str(arg.real_type) in ("Tensor", "Scalar"):
            kwargs[arg.name] = _WRAPPED_VALUE[typ]
            continue
        real = str(arg.real_type)
        match = _OPTIONAL.match(real)
        base, optional = (match.group(1), True) if match else (real, False)
        if base == "Device":
            kwargs[arg.name] = "meta"
        elif typ == "":
            if arg.has_default_value():
                continue
            if not optional:
                if arg.name in builder.stand_ins and builder.omitted is not None:
                    value = builder.stand_ins[arg.name]
                    kwargs[arg.name] = list(value) if isinstance(value, list) else value
                    if isinstance(value, str):
                        builder.omitted.append(arg.name)
                    continue
                if builder.omitted is not None and real == "List[Optional[Tensor]]":
                    builder.omitted.append(arg.name)
                    kwargs[arg.name] = []
                    continue
                raise _Unbuildable(f"argument {arg.name!r} ({real}) was not recorded")
            kwargs[arg.name] = None
        elif typ == "Scalar":
            kwargs[arg.name] = _scalar(base, value, arg.name)
        elif typ == "ScalarList":
            kwargs[arg.name] = _scalar_list(base, value, arg.name)
        elif typ == "TensorList":
            if not base.startswith(("List[Tensor]", "List[Optional[Tensor]]")):
                raise _Unbuildable(f"argument {arg.name!r} ({real}) recorded as a tensor list")
            strides = stride if isinstance(stride, list) and len(stride) == len(dim) else [None] * len(dim)
            known = builder.list_dtypes[index] if builder.list_dtypes and index < len(builder.list_dtypes) else None
            dtypes = list(known) if known and len(known) == len(dim) else [builder.list_dtype] * len(dim)
            kwargs[arg.name] = [builder.tensor(d, s, dt or builder.list_dtype) for d, s, dt in zip(dim, strides, dtypes)]
        elif typ in _DTYPES:
            if base != "Tensor":
                raise _Unbuildable(f"argument {arg.name!r} ({real}) recorded as a tensor")
            kwargs[arg.name] = builder.tensor(dim, stride, _DTYPES[typ])
        else:
            raise _Unbuildable(f"argument {arg.name!r} has a recorded type we cannot rebuild ({typ!r})")
    return kwargs


def _meta_tensor(dims: Any, strides: Any, dtype: torch.dtype, larger: bool = False) -> torch.Tensor:
    """A meta tensor of the recorded shape and strides; ``larger``: on a storage one element
    longer than the view (the real storage is bigger, so writing the view does not cover it)."""
    if not isinstance(dims, list) or not all(isinstance(d, int) for d in dims):
        raise _Unbuildable(f"tensor shape {dims!r} is not a list of ints")
    if not (isinstance(strides, list) and len(strides) == len(dims) and all(isinstance(s, int) for s in strides)):
        strides = None
    if not larger:
        if strides is not None:
            return torch.empty_strided(dims, strides, dtype=dtype, device="meta")
        return torch.empty(dims, dtype=dtype, device="meta")
    view = torch.empty_strided(dims, strides, dtype=dtype, device="meta") if strides is not None else \
        torch.empty(dims, dtype=dtype, device="meta")
    base = torch.empty(view.untyped_storage().nbytes() // view.element_size() + 1, dtype=dtype, device="meta")
    return base.as_strided(view.shape, view.stride(), 0)


_WRAPPED_TYPES = ("double", "long int", "long long", "__int64", "bool", "c10::complex<double>")


def _wrapped_numbers(types: Sequence[Any], dims: Sequence[Any], fresh: Optional[Sequence[bool]] = None
                     ) -> List[bool]:
    """Which recorded tensor arguments are Python numbers the dispatcher wrapped in a 0-dim
    tensor (``x * 0.9`` calls ``mul.Tensor`` with a float64 0-dim tensor, which the profiler
    records as a tensor). A dispatch-mode counter sees the Python number, so the rebuilt call
    passes a number too (no bytes read for it).

    A wrapped number is a 0-dim float64/int64/bool/complex128 argument; in a live session,
    also one allocated right before the call (``fresh``, from the tensor identities), which
    tells it from a real 0-dim tensor. Without identities (a saved trace), one whose dtype
    differs from the call's other tensors'.
    """
    tensor_types = [t for t in types if t in _DTYPES]
    out = []
    for k, (typ, dim) in enumerate(zip(types, dims)):
        candidate = typ in _WRAPPED_TYPES and dim == []
        if fresh is not None and k < len(fresh):
            out.append(candidate and bool(fresh[k]))
        else:
            out.append(candidate and any(t != typ for t in tensor_types))
    return out


_WRAPPED_VALUE = {"double": 1.0, "long int": 1, "long long": 1, "__int64": 1, "bool": True,
                  "c10::complex<double>": 1.0}


def _scalar(base: str, value: Any, name: str) -> Any:
    if base not in _SCALAR_BASES:
        raise _Unbuildable(f"argument {name!r} ({base}) recorded as a scalar")
    if not isinstance(value, str) or value == "":
        raise _Unbuildable(f"scalar argument {name!r} has no recorded value (Concrete Inputs)")
    try:
        if base == "bool":
            return {"True": True, "False": False, "1": True, "0": False}[value]
        if base in ("int", "SymInt"):
            return int(value)
        if base == "float":
            return float(value)
        if base == "ScalarType":
            return _SCALAR_TYPES[int(value)]
        if base == "Layout":
            return _LAYOUTS[int(value)]
        if base == "MemoryFormat":
            return _MEMORY_FORMATS[int(value)]
        if value in ("True", "False"):
            return value == "True"
        return int(value) if _INT.match(value) else float(value)
    except (KeyError, ValueError):
        raise _Unbuildable(f"cannot read {base} argument {name!r} from {value!r}") from None


def _scalar_list(base: str, value: Any, name: str) -> List[Any]:
    if not base.startswith("List[") or "Tensor" in base:
        raise _Unbuildable(f"argument {name!r} ({base}) recorded as a scalar list")
    if not isinstance(value, str) or value == "":
        raise _Unbuildable(f"list argument {name!r} has no recorded value (Concrete Inputs)")
    try:
        items = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        raise _Unbuildable(f"cannot read list argument {name!r} from {value!r}") from None
    if not isinstance(items, (list, tuple)):
        raise _Unbuildable(f"list argument {name!r} recorded as {value!r}")
    if base == "List[float]":
        return [float(v) for v in items]
    return list(items)


def _uncounted(op: str, ev: Optional[TraceEvent]) -> OpCost:
    types = ev.args.get("Input type", ()) if ev is not None else ()
    dtype = next((str(_DTYPES[t]).replace("torch.", "") for t in types if t in _DTYPES), None)
    return OpCost(op=op, module="", scope=("",), phase="forward", flops=0, macs=0, bytes_read=0,
                  bytes_written=0, compulsory_bytes_read=0, compulsory_bytes_written=0,
                  dtype=dtype, unit="vector", counted=False)


def _scaled(c: OpCost, steps: int) -> OpCost:
    def per(v: int) -> int:
        return int(round(v / steps))

    return dataclasses.replace(
        c, flops=per(c.flops), macs=per(c.macs), bytes_read=per(c.bytes_read),
        bytes_written=per(c.bytes_written), compulsory_bytes_read=per(c.compulsory_bytes_read),
        compulsory_bytes_written=per(c.compulsory_bytes_written),
        eager_bytes=per(c.eager_bytes) if c.eager_bytes is not None else None)
