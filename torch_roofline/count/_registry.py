"""The registry of FLOP formulas: :func:`register_formula` and what it stores.

The formulas themselves are in :mod:`torch_roofline.count.formulas` and the modules beside
it (``_attention_formulas.py``, ...), which register on import; :func:`~torch_roofline.count.formulas.lookup`
reads the registry. Kept apart so that those modules import the registry, never each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional

__all__ = ["FlopCount", "Formula", "register_formula", "op_key", "op_name"]


@dataclass(frozen=True)
class FlopCount:
    """The result of a formula: FLOPs and MACs of one op call, and the unit that does it."""

    flops: int
    macs: int = 0
    unit: str = "vector"


#: A formula takes the op's ``args``, ``kwargs`` and its output, and returns the FLOPs
#: (an int) or a :class:`FlopCount`.
Formula = Callable[..., Any]


@dataclass(frozen=True)
class _Entry:
    fn: Formula
    unit: str
    raw: bool  # False: tensors are replaced by their shapes before the call
    # Same answer as ``fn``, from the call's already-walked tensors:
    # ``fast(ins, outs, args, kwargs, out)`` (built-in elementwise and torch's formulas; the
    # counter has the input and output tensors in hand, so they need not be walked again).
    fast: Optional[Callable[..., Any]] = None


_REGISTRY: Dict[Any, _Entry] = {}
#: Formulas of ops registered by name (``"torchvision.nms"``): their library need not be
#: imported for the formula to be registered.
_BY_NAME: Dict[str, _Entry] = {}


def op_key(func: Any) -> Any:
    """The registry key of an op: its overload packet (``aten.add`` for ``aten.add.Tensor``)."""
    return getattr(func, "overloadpacket", func)


def op_name(func: Any) -> str:
    """Dotted op name of an overload: ``aten.convolution`` for ``aten.convolution.default``."""
    packet = getattr(func, "overloadpacket", None)
    if packet is None:
        return str(func)
    return f"{getattr(func, 'namespace', 'aten')}.{packet.__name__}"


def register_formula(*ops: Any, unit: str = "vector", raw: bool = False) -> Callable[[Formula], Formula]:
    """Decorator registering a FLOP formula for one or more ops (overload packets or overloads,
    or names ``"namespace::op"`` for ops of a library that may not be imported yet).

    The formula is called as ``fn(*args, out=output, **kwargs)``. With ``raw=False`` (default)
    every tensor in ``args``, ``kwargs`` and ``out`` is replaced by its shape (a
    ``torch.Size``); with ``raw=True`` the tensors are passed as they are (use it when the
    formula needs dtypes or values of non-tensor arguments only available raw).
    It returns FLOPs (int; MACs are FLOPs/2 when ``unit="matrix"``, else 0) or a
    :class:`FlopCount`.

    Example::

        @register_formula(torch.ops.mylib.fused_gelu)
        def fused_gelu_flops(x, *, out=None, **kw):
            return math.prod(x)  # x is a torch.Size: 1 FLOP per element

    Registering replaces an earlier formula for the same op. For a formula that should
    apply to one ``count()`` call only, pass ``formulas={op: fn}`` to :func:`count` instead.
    """
    if unit not in ("matrix", "vector"):
        raise ValueError(f"register_formula(unit={unit!r}): expected 'matrix' or 'vector'")

    def deco(fn: Formula) -> Formula:
        for op in ops:
            if isinstance(op, str):  # "torchvision::nms": an op of a library that may not be loaded
                _BY_NAME[op.replace("::", ".")] = _Entry(fn, unit, raw)
            else:
                _REGISTRY[op_key(op)] = _Entry(fn, unit, raw)
        return fn

    return deco
