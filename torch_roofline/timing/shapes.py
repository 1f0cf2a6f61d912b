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

import dataclasses
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from torch_roofline.records import OpCost, frozen_record
from torch_roofline.timing.attribution import TraceTiming
from torch_roofline.timing.timeline import _as_int, dotted_op_name
from torch_roofline.timing.compiled import is_fused_kernel
from torch_roofline.timing.inductor import KernelCost, compiled_costs
from torch_roofline.timing.identity import Identities, TensorId
from torch_roofline.timing.trace import Trace, TraceEvent
from torch_roofline.timing._call_args import _STAND_INS
from torch_roofline.timing._replay import (_NOTHING, _POST_OP_ARGS, _Replayer, _beyond_allocated, _signature,
                                           replay_cache)
from torch_roofline.timing._step_traffic import (_Entry, _StepTraffic, _activation_bytes, _aliases, _entries,
                                                 _row_tensors, _storage_spans)

__all__ = ["ShapeCosts", "ShapeTally", "has_recorded_shapes", "shape_costs", "costs_from_shapes", "per_step",
           "reason_lines", "replay_cache"]


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


def _scaled(c: OpCost, steps: int) -> OpCost:
    def per(v: int) -> int:
        return int(round(v / steps))

    return dataclasses.replace(
        c, flops=per(c.flops), macs=per(c.macs), bytes_read=per(c.bytes_read),
        bytes_written=per(c.bytes_written), compulsory_bytes_read=per(c.compulsory_bytes_read),
        compulsory_bytes_written=per(c.compulsory_bytes_written),
        eager_bytes=per(c.eager_bytes) if c.eager_bytes is not None else None)
