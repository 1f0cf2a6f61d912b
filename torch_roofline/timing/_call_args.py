"""Rebuilding a recorded op call from a trace event's arguments (``Input type``, ``Input Dims``,
``Input Strides``, ``Concrete Inputs``): meta tensors of the recorded shapes, dtypes and strides,
scalars parsed from their text, the schema's defaults and stand-ins for what the profiler does
not record (:mod:`torch_roofline.timing.shapes` says which rules, and why).
"""

from __future__ import annotations

import ast
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from torch_roofline.count.onednn_formulas import CONV_OPS, STAND_INS
from torch_roofline.timing.timeline import dotted_op_name
from torch_roofline.timing.trace import TraceEvent
from torch_roofline.timing.kineto_dtypes import KINETO_DTYPES as _DTYPES


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


# --------------------------------------------------------------------------- replaying a call

# Per recorded tensor argument: (tensor class, storage class, storage larger than the view).
# Classes number the arguments by first appearance: two arguments with one class are the
# same tensor (or share a storage). ``None`` where the call's identities are unknown.
_Alias = Optional[Tuple[int, int, bool]]
_Slot = Tuple[str, int]  # ("in", storage class) or ("new", j): a storage the call created

#: Required arguments torch.profiler does not record (strings, lists of optional scalars),
#: with the value a replay takes, per op: the oneDNN convolutions of a frozen torch.compile
#: model (``count/onednn_formulas.py``): no unary post-op, a residual add.
_STAND_INS: Mapping[str, Mapping[str, Any]] = {op: STAND_INS for op in CONV_OPS}


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
        from torch_roofline.count.traffic import storage_key

        alias = self.aliases[self.position] if self.aliases and self.position < len(self.aliases) else None
        storage_class = alias[1] if alias is not None else self.position
        self.position += 1
        if alias is not None and alias[0] in self.made:
            return self.made[alias[0]]
        t = _meta_tensor(dims, strides, dtype, larger=alias is not None and alias[2])
        if alias is not None:
            self.made[alias[0]] = t
        self.slots.setdefault(storage_key(t), ("in", storage_class))
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
