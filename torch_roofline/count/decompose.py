"""Decomposition: count an op that has no formula of its own through the ops it is made of.

An op that reaches the counter with no formula (and is not in
:data:`~torch_roofline.count.formulas.NO_ARITHMETIC`) is decomposed before it is given up,
from two sources, tried in this order:

1. **Its CompositeImplicitAutograd kernel** (``OpOverload.decompose``, as torch's
   ``FlopCounterMode`` does). Such an op *is* that sequence of ops: with autograd on, the
   dispatcher runs the kernel before any dispatch mode sees the op; under
   ``torch.inference_mode()`` (no autograd keys) the mode sees the composite op itself
   (``aten.conv2d``, ``aten.linear``, ``aten.batch_norm``). The counter runs the kernel
   under itself, so the parts really run and are counted like any op (FLOPs and bytes,
   both memory models), then merged into one row named like the original op
   (:func:`merge_parts`). The count equals the one made with autograd on.
2. **torch's decomposition tables** (``torch._decomp.decomposition_table``): a reference
   implementation of an op that has a fused kernel of its own (``upsample_bilinear2d``,
   ``im2col``). The real kernel runs, so the step computes exactly what it would without
   the counter; the decomposition runs on meta copies of the arguments only to count its
   FLOPs (:func:`meta_flops`). The bytes are the real op's own (its inputs and outputs):
   the fused kernel does not move the decomposition's intermediates.

A formula that declines a call (returns ``None``) or raises falls back to (2) as well.
What cannot be decomposed (no kernel and no table entry, a part without a formula, a
decomposition that needs real data) stays uncounted, with the reason.

NB: counting a table decomposition costs a meta run of its ops, once per distinct call
signature per counted step (cached); ops with formulas never come here.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from torch_roofline.count import formulas as _f
from torch_roofline.count.tree import tensors as _tensors
from torch_roofline.count.traffic import is_view_op
from torch_roofline.records import OpCost

__all__ = ["has_arithmetic_without_formula", "has_implicit_kernel", "composite_devices", "device_type", "run_composite",
           "meta_flops", "merge_parts", "MAX_DEPTH"]

#: Nested decompositions followed at most this deep (a decomposition that re-enters itself
#: is given up rather than followed forever).
MAX_DEPTH = 8


def has_arithmetic_without_formula(func: Any, formulas: Optional[Mapping[Any, Callable[..., Any]]] = None) -> bool:
    """True when ``func`` has no formula and is not known to do no arithmetic."""
    if _f.lookup(func, formulas) is not None:
        return False
    return not (_f.op_key(func) in _f.NO_ARITHMETIC or is_view_op(func)
                or getattr(func, "namespace", "") in ("profiler", "prim"))


def has_implicit_kernel(func: Any) -> bool:
    """True when ``func`` (an overload) has a C++ CompositeImplicitAutograd kernel. (A Python
    kernel for that key, registered for tracing, does not count: eager mode never runs it.)"""
    try:
        return bool(torch._C._dispatch_has_kernel_for_dispatch_key(func.name(), torch._C.DispatchKey.CompositeImplicitAutograd))
    except (AttributeError, RuntimeError):
        return False


_BACKENDS = {"cpu": "CPU", "cuda": "CUDA", "meta": "Meta", "xpu": "XPU", "mps": "MPS"}


def composite_devices(func: Any) -> Optional[frozenset]:
    """Where ``func`` runs as its composite kernel's parts.

    ``None``: it has no CompositeImplicitAutograd kernel. Otherwise the device types that
    have a kernel of their own (the composite runs everywhere else): empty for ``conv2d``
    (always its parts), ``{"cpu", "cuda", "meta"}`` for ``silu_backward`` (a fused kernel
    on those devices; the composite only serves autograd of higher order).
    """
    if not has_implicit_kernel(func):
        return None
    own = set()
    for device, key in _BACKENDS.items():
        dk = getattr(torch._C.DispatchKey, key, None)
        try:
            if dk is not None and torch._C._dispatch_has_kernel_for_dispatch_key(func.name(), dk):
                own.add(device)
        except RuntimeError:
            continue
    return frozenset(own)


def device_type(args: Sequence[Any]) -> Optional[str]:
    """The device type of the first tensor among ``args`` (one level of lists), else None."""
    for a in args:
        if isinstance(a, torch.Tensor):
            return a.device.type
        if isinstance(a, (list, tuple)):
            for b in a:
                if isinstance(b, torch.Tensor):
                    return b.device.type
    return None


def run_composite(func: Any, args: Sequence[Any], kwargs: Mapping[str, Any], python: bool = True) -> Any:
    """Run ``func``'s CompositeImplicitAutograd kernel (``NotImplemented`` when it has none).

    The C++ kernel first, the one eager mode runs: ``OpOverload.decompose`` prefers a Python
    kernel registered for tracing (``upsample_nearest2d``'s computes its own indices), which
    is not what an eager step executes. ``python``: fall back to such a Python kernel (to
    count on meta copies; never for the ops of a live step).
    """
    if has_implicit_kernel(func):
        return func._op_dk(torch._C.DispatchKey.CompositeImplicitAutograd, *args, **kwargs)
    return func.decompose(*args, **kwargs) if python else NotImplemented


def _table_entry(func: Any) -> Optional[Callable[..., Any]]:
    from torch._decomp import decomposition_table

    return decomposition_table.get(func)


def merge_parts(name: str, parts: Sequence[OpCost], template: OpCost) -> OpCost:
    """One row for a decomposed call: its parts' FLOPs, MACs and bytes summed.

    ``template``: the row the call would have had on its own (name, module, scope, phase,
    index, and dtype/unit when it dispatched nothing). The row takes the dtype and unit of
    the part with the most FLOPs (then the most bytes), as the recorded-shapes path merges a
    trace row (``timing/shapes.py``). A part without FLOPs makes the row uncounted (its FLOPs
    are then unknown, 0 here; its bytes stay counted).
    """
    if not parts:
        return template
    lead = max(parts, key=lambda p: (p.flops, p.bytes_read + p.bytes_written))
    counted = all(p.counted for p in parts)
    fields = dict(template.__dict__)
    fields.update(
        op=name,
        flops=sum(p.flops for p in parts) if counted else 0,
        macs=sum(p.macs for p in parts) if counted else 0,
        bytes_read=sum(p.bytes_read for p in parts),
        bytes_written=sum(p.bytes_written for p in parts),
        compulsory_bytes_read=sum(p.compulsory_bytes_read for p in parts),
        compulsory_bytes_written=sum(p.compulsory_bytes_written for p in parts),
        dtype=lead.dtype,
        unit=lead.unit,
        counted=counted,
    )
    record = OpCost.__new__(OpCost)
    record.__dict__.update(fields)
    return record


# --------------------------------------------------------------------------------------
# Counting a decomposition on meta copies.
# --------------------------------------------------------------------------------------
class _Undecomposable(Exception):
    """A part of the decomposition has no formula and no decomposition (the message says which)."""


class _PartCounter(TorchDispatchMode):
    """Sums the FLOPs of the ops a decomposition dispatches (meta tensors; no bytes)."""

    def __init__(self, formulas: Optional[Mapping[Any, Callable[..., Any]]]) -> None:
        super().__init__()
        self.formulas = formulas
        self.flops = 0
        self.matrix_flops = 0
        self.vector_flops = 0
        self.macs = 0
        self.depth = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Tuple = (), kwargs: Optional[Dict] = None) -> Any:
        kwargs = kwargs or {}
        if getattr(func, "namespace", "") in ("prim", "profiler"):
            return func(*args, **kwargs)
        entry = _f.lookup(func, self.formulas)
        if entry is None:
            if not has_arithmetic_without_formula(func, self.formulas):
                return func(*args, **kwargs)
            return self._decomposed(func, args, kwargs)
        out = func(*args, **kwargs)
        try:
            result = _f.evaluate(entry, args, kwargs, out)
        except Exception:  # noqa: BLE001 - a formula that raises declines
            result = None
        if result is None:
            self._decomposed(func, args, kwargs)
        else:
            self._add(result)
        return out

    def _add(self, result: "_f.FlopCount") -> None:
        self.flops += result.flops
        self.macs += result.macs
        if result.unit == "matrix":
            self.matrix_flops += result.flops
        else:
            self.vector_flops += result.flops

    def _decomposed(self, func: Any, args: Tuple, kwargs: Dict) -> Any:
        """Count ``func`` through its decomposition (the ops it dispatches); its output."""
        if self.depth >= MAX_DEPTH:
            raise _Undecomposable(f"{_f.op_name(func)} decomposes deeper than {MAX_DEPTH} levels")
        self.depth += 1
        try:
            out = NotImplemented
            with self:
                out = run_composite(func, args, kwargs)
                if out is NotImplemented:
                    table = _table_entry(func)
                    if table is not None:
                        out = table(*args, **kwargs)
            if out is NotImplemented:
                raise _Undecomposable(f"{_f.op_name(func)} has no formula and no decomposition")
            return out
        finally:
            self.depth -= 1


def _to_meta(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        try:
            return torch.empty_strided(tuple(x.shape), tuple(x.stride()), dtype=x.dtype, device="meta")
        except RuntimeError:
            return torch.empty(tuple(x.shape), dtype=x.dtype, device="meta")
    if isinstance(x, (list, tuple)):
        walked = [_to_meta(v) for v in x]
        return walked if isinstance(x, list) else tuple(walked)
    if isinstance(x, dict):
        return {k: _to_meta(v) for k, v in x.items()}
    if isinstance(x, torch.device):
        return torch.device("meta")
    return x


def _signature(func: Any, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
    """A hashable key for a call: tensors by shape, strides and dtype; other values as they are."""

    def key(x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            return ("T", tuple(x.shape), tuple(x.stride()) if x.layout is torch.strided else None, x.dtype)
        if isinstance(x, (list, tuple)):
            return (type(x).__name__, tuple(key(v) for v in x))
        if isinstance(x, dict):
            return ("d", tuple(sorted((k, key(v)) for k, v in x.items())))
        try:
            hash(x)
            return x
        except TypeError:
            return repr(x)

    return (id(func), key(tuple(args)), key(dict(kwargs)))


MetaCount = Tuple[Optional["_f.FlopCount"], Optional[str]]


def meta_flops(func: Any, args: Sequence[Any], kwargs: Mapping[str, Any],
               formulas: Optional[Mapping[Any, Callable[..., Any]]] = None,
               cache: Optional[Dict[Any, MetaCount]] = None) -> MetaCount:
    """FLOPs of ``func(*args, **kwargs)`` counted through its decomposition on meta copies.

    Tries the op's CompositeImplicitAutograd kernel, then torch's decomposition table; parts
    without a formula are decomposed in turn. Returns ``(FlopCount, None)``, or ``(None,
    reason)`` when the op cannot be counted this way. Never raises: any failure of the meta
    run is a reason. ``cache``: a dict kept by the caller, keyed by call signature.
    """
    from torch.utils._python_dispatch import _disable_current_modes

    key = None
    if cache is not None:
        try:
            key = _signature(func, args, kwargs)
            hit = cache.get(key)
        except Exception:  # noqa: BLE001 - an unhashable signature is counted uncached
            key, hit = None, None
        if hit is not None:
            return hit
    name = _f.op_name(func)
    if any(t.layout is not torch.strided or t.is_nested for t in _tensors(tuple(args), dict(kwargs))):
        found: MetaCount = (None, f"{name}: no formula for its arguments, and no decomposition for non-dense tensors")
    else:
        counter = _PartCounter(formulas)
        try:
            with _disable_current_modes():
                margs, mkwargs = _to_meta(tuple(args)), _to_meta(dict(kwargs))
                counter._decomposed(func, margs, mkwargs)
            unit = "matrix" if counter.matrix_flops >= counter.vector_flops and counter.matrix_flops else "vector"
            found = (_f.FlopCount(counter.flops, counter.macs, unit), None)
        except _Undecomposable as exc:
            found = (None, str(exc))
        except Exception as exc:  # noqa: BLE001 - e.g. a decomposition that needs real data
            text = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
            found = (None, f"{name}: no formula, and its decomposition cannot run on meta tensors "
                           f"({type(exc).__name__}: {text})")
    if cache is not None and key is not None:
        cache[key] = found
    return found


def first_reasons(reasons: Mapping[str, str], ops: List[OpCost]) -> Dict[str, str]:
    """The reasons of the ops that are still uncounted (op name -> reason)."""
    uncounted = {o.op for o in ops if not o.counted}
    return {k: v for k, v in reasons.items() if k in uncounted}
