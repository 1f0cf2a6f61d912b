"""FLOPs and bytes of a trace's ops from the shapes the profiler recorded (no model needed).

A trace recorded with ``torch.profiler.profile(record_shapes=True)`` keeps, on every
``cpu_op`` event, the op's arguments in schema order: ``Input Dims`` (tensor shapes),
``Input type`` (the tensor's dtype as C++ names it, ``"float"``, ``"c10::Half"``, or
``"Scalar"`` / ``"ScalarList"`` / ``"TensorList"``), ``Input Strides`` and ``Concrete Inputs``
(scalar arguments as strings, ``"[1, 1]"``, ``"1e-05"``, ``"True"``). :func:`shape_costs`
rebuilds each op row's call from them, with meta tensors of those shapes, dtypes and strides,
and runs it under the counter (:class:`~torch_roofline.count.mode.OpCounter`), so the FLOP
formulas and the traffic model are the ones ``torch_roofline.count`` uses.

Rules (each one a choice):

* **One cost per op row, named like the row.** A row is an outermost ``aten::`` op of the
  trace (``aten::conv2d``, ``aten::linear``, ``aten::relu_``); replaying it dispatches the ops
  beneath it (``aten.convolution``; ``aten.t`` and ``aten.addmm``). Their FLOPs, MACs and
  bytes are summed into one :class:`~torch_roofline.records.OpCost` carrying the row's
  op name, module, scope, phase and index, so the analysis joins it to exactly that row's
  time by (module, phase, op): every timed row has exactly one cost and no cost lacks a
  time. (Renaming the timings to the dispatched ops instead would need the trace's nesting
  to match the meta replay's dispatch, which it does not always do: device-specific
  wrappers such as ``aten::_convolution`` / ``aten::mkldnn_convolution`` appear in the trace
  only.) The merged cost takes the dtype and unit (matrix/vector) of its sub-op with the
  most FLOPs (then the most bytes): its roofline time uses that one roof, exact for the
  usual single-kernel rows, an approximation when a row mixes a GEMM with an elementwise op.
  The dispatched names are kept in :attr:`ShapeCosts.dispatched`.
* **Arguments the profiler does not record** (strings such as ``gelu``'s ``approximate``,
  devices, generators) take their schema default; ``None`` for optional ones; device
  arguments are ``"meta"``. A required argument that is missing makes the row uncounted.
  Tensor lists carry shapes but no dtypes: their tensors take the dtype of the op's first
  recorded tensor, else float32, and the result says so in a note.
* **Uncounted rows.** A row whose call cannot be rebuilt (no recorded shapes, an argument
  type we cannot read, no overload matching the recorded arguments) or cannot run on meta
  tensors (data-dependent output: ``nonzero``, boolean indexing, ``item``) becomes an
  ``OpCost`` with ``counted=False`` and 0 FLOPs and bytes, and its reason is kept in
  :attr:`ShapeCosts.reasons`: listed with its time, never silently zero. An op without a
  formula is counted through its decomposition (``count/decompose.py``); a row that
  dispatches an op that cannot be decomposed is uncounted too (its bytes are kept).
* **Compulsory bytes** are per row: the trace records no tensor identities, so reuse across
  ops cannot be seen and each row's compulsory traffic is its own first-touch traffic.

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
from collections import defaultdict
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from torch_roofline.records import OpCost
from torch_roofline.timing.attribution import TraceTiming, _as_int, dotted_op_name
from torch_roofline.timing.trace import Trace, TraceEvent

__all__ = ["ShapeCosts", "has_recorded_shapes", "shape_costs", "costs_from_shapes", "per_step"]

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
            module, scope, phase and index copied from the row).
        reasons: ``(op, reason)`` per uncounted row, in row order.
        dispatched: ``op -> dotted names of the ops its replay dispatched`` (e.g.
            ``"aten.conv2d" -> ("aten.convolution",)``).
        notes: assumptions made (tensor-list dtypes), for the report.
    """

    costs: Tuple[OpCost, ...]
    reasons: Tuple[Tuple[str, str], ...]
    dispatched: Mapping[str, Tuple[str, ...]]
    notes: Tuple[str, ...] = ()

    def summary(self) -> Tuple[str, ...]:
        """Report notes: the assumptions, then the uncounted rows grouped by op and reason."""
        grouped: Dict[Tuple[str, str], int] = defaultdict(int)
        for op, reason in self.reasons:
            grouped[(op, reason)] += 1
        lines = [f"{op} ({n} call{'s' if n > 1 else ''}) not counted from the trace's shapes: {reason}"
                 for (op, reason), n in grouped.items()]
        return tuple(self.notes) + tuple(lines)


def has_recorded_shapes(trace: Trace) -> bool:
    """True when the trace's ``cpu_op`` events carry ``Input Dims`` (``record_shapes=True``)."""
    return any(ev.kind == "cpu_op" and "Input Dims" in ev.args for ev in trace.events)


def costs_from_shapes(trace: Trace, timing: TraceTiming) -> Tuple[OpCost, ...]:
    """One :class:`OpCost` per op row of ``timing`` (FLOPs, bytes) from the trace's shapes.

    Args:
        trace: a trace recorded with ``record_shapes=True``.
        timing: ``attribute(trace)`` (rows are the outermost ``aten::`` ops).

    Returns:
        ``shape_costs(trace, timing).costs``: see :func:`shape_costs` and the module docstring.
    """
    return shape_costs(trace, timing).costs


def shape_costs(trace: Trace, timing: TraceTiming) -> ShapeCosts:
    """Rebuild every op row's call from its recorded shapes and count it (module docstring).

    Args:
        trace: a trace recorded with ``record_shapes=True``.
        timing: the trace's attribution, ``attribute(trace)``; each row is matched to its
            ``cpu_op`` event by (thread, start time, op name).

    Returns:
        A :class:`ShapeCosts`: costs for all rows (all profiled steps: see :func:`per_step`),
        the reasons of the uncounted ones, and the notes.
    """
    events = _events_by_key(trace)
    cache: Dict[str, Tuple[List[OpCost], Optional[str], bool]] = {}
    costs: List[OpCost] = []
    reasons: List[Tuple[str, str]] = []
    dispatched: Dict[str, Tuple[str, ...]] = {}
    assumed: Dict[str, int] = defaultdict(int)
    for row in timing.ops:
        ev = _pop_event(events, row.thread, row.start_s, row.op)
        signature = _signature(ev)
        if signature not in cache:
            cache[signature] = _replay(ev)
        subs, reason, list_dtype_assumed = cache[signature]
        if list_dtype_assumed:
            assumed[row.op] += 1
        cost, why = _merge(row.op, subs, reason, ev)
        costs.append(dataclasses.replace(cost, module=row.module, scope=tuple(row.scope),
                                         phase=row.phase, index=row.index))
        if why is not None:
            reasons.append((row.op, why))
        if subs:
            dispatched.setdefault(row.op, tuple(dict.fromkeys(s.op for s in subs)))
    notes = tuple(f"{op}: {n} call(s) with tensor lists, whose dtypes the trace does not record; "
                  "the op's first tensor dtype (else float32) was assumed" for op, n in assumed.items())
    return ShapeCosts(tuple(costs), tuple(reasons), MappingProxyType(dispatched), notes)


def per_step(costs: Sequence[OpCost], steps: int) -> Tuple[Tuple[OpCost, ...], Tuple[str, ...]]:
    """The costs of one step, from costs counted over ``steps`` profiled steps.

    For each (module, phase, op) with ``k`` calls: when ``steps`` divides ``k`` the steps are
    taken to be alike and the first ``k / steps`` calls are kept; otherwise every call is kept
    with its FLOPs, MACs and bytes divided by ``steps`` (rounded), and a note says so.

    Returns:
        ``(costs, notes)``.
    """
    if steps < 1:
        raise ValueError(f"per_step(steps={steps}): expected a positive number of steps")
    if steps == 1:
        return tuple(costs), ()
    groups: Dict[Tuple[str, str, str], List[OpCost]] = defaultdict(list)
    for c in costs:
        groups[(c.module, c.phase, c.op)].append(c)
    keep: List[OpCost] = []
    uneven: List[str] = []
    for (module, phase, op), calls in groups.items():
        if len(calls) % steps == 0:
            keep += calls[: len(calls) // steps]
        else:
            uneven.append(op)
            keep += [_scaled(c, steps) for c in calls]
    keep.sort(key=lambda c: (c.phase, c.index))
    notes = (f"ops whose call count differs between the {steps} profiled steps ({', '.join(sorted(set(uneven)))}): "
             "their counts are averaged over the steps",) if uneven else ()
    return tuple(keep), notes


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


def _signature(ev: Optional[TraceEvent]) -> str:
    if ev is None:
        return ""
    keys = ("Input type", "Input Dims", "Input Strides", "Concrete Inputs")
    return ev.name + json.dumps([ev.args.get(k) for k in keys])


# --------------------------------------------------------------------------- rebuilding a call


def _replay(ev: Optional[TraceEvent]) -> Tuple[List[OpCost], Optional[str], bool]:
    """(dispatched op costs, reason it could not run, tensor-list dtype assumed)."""
    from torch_roofline.count.mode import OpCounter

    try:
        if ev is None:
            raise _Unbuildable("no trace event found for the row")
        candidates, assumed = _calls(ev)
    except _Unbuildable as exc:
        return [], str(exc), False
    last = "no overload of the op matches the recorded arguments"
    for overload, kwargs in candidates:
        try:
            with OpCounter(None) as counter:
                overload(**kwargs)
        except Exception as exc:  # noqa: BLE001 - any failure means this overload cannot replay it
            last = _failure(exc)
            continue
        return list(counter.ops), None, assumed
    return [], last, False


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


def _calls(ev: TraceEvent) -> Tuple[List[Tuple[Any, Dict[str, Any]]], bool]:
    """Every overload whose schema fits the recorded arguments, with its keyword arguments."""
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
    fits, reason = [], None
    for name in packet.overloads():
        overload = getattr(packet, name)
        schema = overload._schema.arguments
        if len(schema) != len(recorded):
            continue
        try:
            fits.append((overload, _kwargs(schema, recorded, list_dtype)))
        except _Unbuildable as exc:
            reason = reason or str(exc)
    if not fits:
        raise _Unbuildable(reason or f"no overload of {ev.name} takes {len(recorded)} arguments")
    assumed = "TensorList" in types
    return fits, assumed


def _kwargs(schema: Sequence[Any], recorded: Sequence[Tuple[Any, Any, Any, Any]], list_dtype: torch.dtype
            ) -> Dict[str, Any]:
    kwargs: Dict[str, Any] = {}
    for arg, (typ, dim, stride, value) in zip(schema, recorded):
        real = str(arg.real_type)
        match = _OPTIONAL.match(real)
        base, optional = (match.group(1), True) if match else (real, False)
        if base == "Device":
            kwargs[arg.name] = "meta"
        elif typ == "":
            if arg.has_default_value():
                continue
            if not optional:
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
            kwargs[arg.name] = [_meta_tensor(d, s, list_dtype) for d, s in zip(dim, strides)]
        elif typ in _DTYPES:
            if base != "Tensor":
                raise _Unbuildable(f"argument {arg.name!r} ({real}) recorded as a tensor")
            kwargs[arg.name] = _meta_tensor(dim, stride, _DTYPES[typ])
        else:
            raise _Unbuildable(f"argument {arg.name!r} has a recorded type we cannot rebuild ({typ!r})")
    return kwargs


def _meta_tensor(dims: Any, strides: Any, dtype: torch.dtype) -> torch.Tensor:
    if not isinstance(dims, list) or not all(isinstance(d, int) for d in dims):
        raise _Unbuildable(f"tensor shape {dims!r} is not a list of ints")
    if isinstance(strides, list) and len(strides) == len(dims) and all(isinstance(s, int) for s in strides):
        return torch.empty_strided(dims, strides, dtype=dtype, device="meta")
    return torch.empty(dims, dtype=dtype, device="meta")


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


# --------------------------------------------------------------------------- merging


def _merge(op: str, subs: Sequence[OpCost], reason: Optional[str], ev: Optional[TraceEvent]
           ) -> Tuple[OpCost, Optional[str]]:
    """One cost for the row from its dispatched ops' costs; (cost, reason when uncounted)."""
    if reason is not None:
        return _uncounted(op, ev), reason
    if not subs:  # the op returned without dispatching anything (e.g. contiguous() on a contiguous tensor)
        return dataclasses.replace(_uncounted(op, ev), counted=True), None
    lead = max(subs, key=lambda s: (s.flops, s.bytes_read + s.bytes_written))
    missing = sorted({s.op for s in subs if not s.counted})
    counted = not missing
    cost = OpCost(
        op=op, module="", scope=("",), phase="forward",
        flops=sum(s.flops for s in subs) if counted else 0,
        macs=sum(s.macs for s in subs) if counted else 0,
        bytes_read=sum(s.bytes_read for s in subs), bytes_written=sum(s.bytes_written for s in subs),
        compulsory_bytes_read=sum(s.compulsory_bytes_read for s in subs),
        compulsory_bytes_written=sum(s.compulsory_bytes_written for s in subs),
        dtype=lead.dtype, unit=lead.unit, counted=counted,
    )
    return cost, None if counted else f"no FLOP formula for {', '.join(missing)}"


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
        compulsory_bytes_written=per(c.compulsory_bytes_written))
