"""Which recorded ops a dispatch-mode counter sees: the rows of a profiled step.

torch.profiler records every op call at the dispatcher's entry, nested: ``aten::linear``
holds ``aten::t`` and ``aten::addmm``, which holds ``aten::expand`` and ``aten::copy_``.
:func:`torch_roofline.count` runs under a ``TorchDispatchMode`` and sees a different cut of
the same calls: below autograd, an op with a kernel of its own is seen once (``aten.addmm``;
what its kernel calls inside is not seen), while a ``CompositeImplicitAutograd`` op
(``aten::linear``, ``aten::conv2d``, ``aten::batch_norm``, ``aten::matmul``) is not seen
itself: the ops its decomposition calls are.

So the rows a report counts and times are the **outermost recorded ops that are not
CompositeImplicitAutograd**: exactly the calls ``count()`` sees, with the same names
(``aten.convolution``, ``aten.addmm``), which is what lets a live report's FLOPs and bytes
equal ``count()`` of the same step, op by op. A composite op is passed through to the ops
recorded inside it; one with nothing recorded inside (``aten::contiguous`` of a contiguous
tensor) is a row of its own, with no work.

Rules (:func:`op_kind`):

* ``"row"``: an op of a registered namespace (``aten``, ``torchvision``, a user's library)
  whose overloads all have kernels of their own;
* ``"through"``: every overload is CompositeImplicitAutograd;
* ``"mixed"``: some overloads are, some are not (``aten::where``, ``aten::upsample_*``,
  ``aten::std``): the recorded overload decides when the trace names it
  (``capture_overload_names``), else the recorded argument types (:func:`is_composite_call`);
* ``"none"``: not an op (autograd engine events, ranges, ``Optimizer.step``) or a namespace
  whose calls are not computation the counter models (``c10d`` collectives, which
  :mod:`torch_roofline.timing.collectives` reads, and ``profiler`` markers).
"""

from __future__ import annotations

import functools
import re
from typing import Any, Optional, Sequence, Tuple

import torch

__all__ = ["op_kind", "is_composite_call", "default_is_composite", "NOT_COUNTED_NAMESPACES"]

#: Namespaces whose recorded calls are never rows: communication (read by the collectives
#: stage) and profiler bookkeeping.
NOT_COUNTED_NAMESPACES = frozenset({"c10d", "_c10d_functional", "_c10d_functional_autograd", "profiler",
                                    "record_param_comms"})

_NAME = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)::([A-Za-z_][A-Za-z0-9_]*)(?:\.([A-Za-z0-9_]+))?$")


@functools.lru_cache(maxsize=None)
def _packet(namespace: str, name: str) -> Any:
    if namespace in NOT_COUNTED_NAMESPACES:
        return None
    if namespace == "torchvision":  # its ops are registered when torchvision is imported
        try:
            import torchvision  # noqa: F401
        except ImportError:
            return None
    try:
        return getattr(getattr(torch.ops, namespace), name)
    except (AttributeError, RuntimeError):
        return None


@functools.lru_cache(maxsize=None)
def _composite_overloads(namespace: str, name: str) -> Optional[Tuple[Tuple[str, bool], ...]]:
    """``((overload, is_composite), ...)`` of an op packet; ``None`` when it is not an op."""
    packet = _packet(namespace, name)
    if packet is None:
        return None
    found = []
    for overload in packet.overloads():
        qualified = f"{namespace}::{name}" + ("" if overload == "default" else f".{overload}")
        try:
            found.append((overload, _autograd_runs_composite(qualified)))
        except (AttributeError, RuntimeError):
            continue
    return tuple(found) if found else None


def _autograd_runs_composite(qualified: str) -> bool:
    """Whether the computed dispatch table sends this overload's autograd key to its
    CompositeImplicitAutograd ("math") kernel. An op may register a composite kernel *and* an
    autograd kernel of its own (``native_batch_norm``): the autograd kernel wins, and a
    dispatch mode sees the op itself, so asking only whether a composite kernel exists is wrong.
    """
    for line in torch._C._dispatch_dump_table(qualified).splitlines():
        if line.startswith("AutogradCPU:"):
            return "[math kernel]" in line
    return False


@functools.lru_cache(maxsize=None)
def op_kind(name: str) -> str:
    """``"row"``, ``"through"``, ``"mixed"`` or ``"none"`` for a recorded op name
    (``"aten::linear"``, ``"aten::add.Tensor"``); see the module docstring.

    >>> op_kind("aten::linear"), op_kind("aten::addmm"), op_kind("autograd::engine::evaluate_function: X")
    ('through', 'row', 'none')
    """
    match = _NAME.match(name)
    if match is None:
        return "none"
    namespace, packet, overload = match.groups()
    flags = _composite_overloads(namespace, packet)
    if flags is None:
        return "none"
    if overload is not None:
        by_name = dict(flags)
        if overload in by_name:
            return "through" if by_name[overload] else "row"
    composite = {f for _, f in flags}
    if composite == {True}:
        return "through"
    if composite == {False}:
        return "row"
    return "mixed"


@functools.lru_cache(maxsize=None)
def default_is_composite(name: str) -> bool:
    """The guess for a ``"mixed"`` op when a trace records neither its overload nor its
    argument types: the ``default`` overload's kind, else the kind of most overloads other
    than TorchScript's ``prim_*`` ones.

    >>> default_is_composite("aten::linear"), default_is_composite("aten::rand"), default_is_composite("aten::to")
    (True, False, True)
    """
    match = _NAME.match(name)
    if match is None:
        return False
    flags = dict(_composite_overloads(match.group(1), match.group(2)) or ())
    if "default" in flags:
        return flags["default"]
    votes = [f for o, f in flags.items() if not o.startswith("prim_")]
    return bool(votes) and sum(votes) * 2 > len(votes)


# Recorded argument types (Kineto's "Input type") -> the schema types they can fill.
_TENSOR_TYPES = ("Tensor",)
_SCALAR_TYPES = ("int", "SymInt", "float", "bool", "number", "ScalarType", "Layout", "MemoryFormat", "Scalar",
                 "str", "Device", "Generator")


def is_composite_call(name: str, types: Sequence[str]) -> Optional[bool]:
    """Whether the overload of ``name`` that fits the recorded argument ``types`` is
    CompositeImplicitAutograd; ``None`` when no overload or overloads of both kinds fit.

    >>> is_composite_call("aten::where", ["bool", "Scalar", "float"])  # where.ScalarSelf
    True
    """
    return _is_composite_call(name, tuple(types))


@functools.lru_cache(maxsize=4096)
def _is_composite_call(name: str, types: Tuple[str, ...]) -> Optional[bool]:
    match = _NAME.match(name)
    if match is None:
        return None
    namespace, packet_name, _ = match.groups()
    flags = _composite_overloads(namespace, packet_name)
    packet = _packet(namespace, packet_name)
    if flags is None or packet is None:
        return None
    verdicts = set()
    for overload, composite in flags:
        schema = getattr(packet, overload)._schema
        if _fits(schema.arguments, types):
            verdicts.add(composite)
    return verdicts.pop() if len(verdicts) == 1 else None


def _fits(arguments: Sequence[Any], types: Sequence[str]) -> bool:
    if len(arguments) != len(types):
        return False
    for arg, typ in zip(arguments, types):
        real = str(arg.real_type)
        if typ == "":
            if not (real.startswith("Optional[") or arg.has_default_value() or real in ("Device", "Generator")):
                return False
        elif typ == "TensorList":
            if "Tensor" not in real or not real.startswith(("List[", "Optional[List[")):
                return False
        elif typ in ("Scalar", "ScalarList"):
            if "Tensor" in real.replace("Optional[", ""):
                return False
        elif not (real == "Tensor" or real == "Optional[Tensor]"):
            return False
    return True
