"""FLOP formulas of the oneDNN / MKL ops a frozen ``torch.compile`` model runs on the CPU.

With ``torch._inductor.config.freezing = True``, Inductor folds a convolution's batch norm
into its weights, packs the weights once at compile time, and calls oneDNN and MKL ops that
carry the fused work in arguments:

* ``mkldnn._convolution_pointwise(X, W, B, padding, stride, dilation, groups, attr, scalars,
  algorithm)``: a convolution, then the unary post-op ``attr`` on each output element
  (``"relu"``, ``"gelu"``, ``"hardswish"``, ... or ``"none"``);
* ``mkldnn._convolution_pointwise.binary(X, other, W, B, ..., binary_attr, alpha, unary_attr,
  ...)`` and the in-place ``mkldnn._convolution_pointwise_.binary(other, X, W, B, ...)``: a
  convolution, then ``binary_attr`` (``"add"``, ``"sub"``, ``"mul"``, ``"div"``) with
  ``other`` (a residual), then the optional ``unary_attr``;
* ``mkl._mkl_linear(X, MKL_W, ORI_W, B, batch_size)``: ``X @ ORI_W.T`` with the weight
  packed once (``MKL_W`` is the opaque packed blob; ``ORI_W [n, k]`` gives the sizes).

Conventions (those of :mod:`torch_roofline.count.formulas`):

* **Matrix work**: 2 FLOPs per multiply-accumulate; a convolution pairs every output position
  with ``prod(W)`` weights (``W [C_out, C_in/groups, *k]``), so MACs = N x prod(out spatial)
  x prod(W); the output's spatial size is ``(in + 2 padding - dilation (k - 1) - 1) // stride
  + 1``. The bias add is not counted (as for ``aten.convolution`` and ``addmm``).
* **Post-ops** are elementwise: 1 FLOP per output element for the binary op (2 for an ``add``
  or ``sub`` whose ``alpha`` is not 1) and 1 for an activation, as the eager ops count them.
  ``"none"`` is 0.
* **What the trace does not record**: torch.profiler records no strings, so a saved or live
  trace cannot say which post-op ran. The replay of such a call takes ``"none"`` for the unary
  post-op and ``"add"`` for the binary one (a residual; ``timing/shapes.py``), and the
  report's notes say so: the convolution's FLOPs are exact, an activation's 1 per output
  element is left out.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

from torch_roofline.count._registry import FlopCount, register_formula

__all__ = ["CONV_OPS", "STAND_INS", "conv_call_flops", "conv_output_spatial", "post_op_flops", "with_stand_ins"]

#: Unary post-ops of oneDNN's fused convolutions (Inductor's ``mkldnn_fusion``): 1 FLOP per
#: output element each, as the eager activation counts it.
_UNARY = frozenset({"relu", "sigmoid", "tanh", "hardswish", "swish", "leaky_relu", "hardtanh", "gelu",
                    "hardsigmoid", "mish", "elu", "silu"})
_BINARY = frozenset({"add", "sub", "mul", "div"})


def conv_output_spatial(x: Sequence[int], w: Sequence[int], padding: Sequence[int], stride: Sequence[int],
                        dilation: Sequence[int]) -> list:
    """The output's spatial sizes of a convolution of ``x [N, C, *in]`` by ``w [C_out, C_in/g, *k]``."""
    dims = len(x) - 2

    def per_dim(v: Any) -> list:
        v = list(v) if isinstance(v, (list, tuple)) else [v]
        return v * dims if len(v) == 1 else v

    pad, st, dil = per_dim(padding), per_dim(stride), per_dim(dilation)
    return [(x[2 + i] + 2 * pad[i] - dil[i] * (w[2 + i] - 1) - 1) // st[i] + 1 for i in range(dims)]


def post_op_flops(unary: Optional[str], binary: Optional[str] = None, alpha: Any = None) -> Optional[int]:
    """FLOPs per output element of a fused post-op; ``None`` for one we have no count for."""
    per = 0
    if binary is not None:
        if binary not in _BINARY:
            return None
        per += 2 if binary in ("add", "sub") and alpha not in (None, 1, 1.0) else 1
    if unary not in (None, "", "none"):
        if unary not in _UNARY:
            return None
        per += 1
    return per


#: The oneDNN convolutions with fused post-ops (their overloads name their arguments alike).
CONV_OPS = ("mkldnn._convolution_pointwise", "mkldnn._convolution_pointwise_")

#: The values a replay of such a call takes for the arguments torch.profiler does not record
#: (strings, lists of optional scalars), by argument name: no unary post-op, a residual add.
STAND_INS = {"attr": "none", "scalars": [], "binary_attr": "add", "unary_scalars": []}


def _schema_names(overload: str) -> Optional[list]:
    """The argument names of ``"mkldnn._convolution_pointwise.binary"`` (``torch.ops``), or
    ``None`` where this torch has no such op."""
    import torch

    ns, op, name = overload.split(".")
    try:
        return [a.name for a in getattr(getattr(getattr(torch.ops, ns), op), name)._schema.arguments]
    except (AttributeError, RuntimeError):
        return None


def conv_call_flops(overload: str, args: Sequence[Any]) -> Optional[FlopCount]:
    """FLOPs of one call of a oneDNN convolution with fused post-ops (``overload``:
    ``"mkldnn._convolution_pointwise.default"``, ``.binary`` or the in-place
    ``"mkldnn._convolution_pointwise_.binary"``; ``args``: its arguments by position, a tensor
    as its sizes): 2 x MACs + the post-ops per output element; ``None`` for an unknown post-op
    or size."""
    names = _schema_names(overload)
    if names is None or len(args) > len(names):
        return None
    named = dict(zip(names, args))
    x, w = named.get("X"), named.get("W")
    if not (isinstance(x, (tuple, list)) and isinstance(w, (tuple, list)) and len(x) == len(w) >= 3):
        return None
    unary = named["attr"] if "attr" in named else named.get("unary_attr")
    return _conv(x, w, named["padding"], named["stride"], named["dilation"],
                 unary if isinstance(unary, str) else None, named.get("binary_attr"), named.get("alpha"))


def with_stand_ins(overload: str, args: Sequence[Any]) -> list:
    """``args`` as a replay of the recorded shapes takes them (:data:`STAND_INS`; the optional
    strings, which the profiler does not record either, ``None``)."""
    names = _schema_names(overload) or []
    out = list(args)
    for k, name in enumerate(names[:len(out)]):
        if name in STAND_INS:
            out[k] = STAND_INS[name]
        elif name in ("unary_attr", "algorithm", "unary_algorithm"):
            out[k] = None
    return out


def _conv(x: Any, w: Any, padding: Any, stride: Any, dilation: Any, unary: Optional[str],
          binary: Optional[str] = None, alpha: Any = None) -> Optional[FlopCount]:
    per = post_op_flops(unary, binary, alpha)
    if per is None:
        return None
    spatial = conv_output_spatial(x, w, padding, stride, dilation)
    outputs = x[0] * w[0] * math.prod(spatial)
    macs = x[0] * math.prod(w) * math.prod(spatial)
    return FlopCount(2 * macs + per * outputs, macs, "matrix")


@register_formula("mkldnn::_convolution_pointwise", unit="matrix")
def _convolution_pointwise_flops(*args: Any, out: Any = None, **kw: Any) -> Optional[FlopCount]:
    """oneDNN's convolution with a fused post-op: the default overload (10 arguments) and
    ``.binary`` (13): 2 x MACs + the post-op's FLOPs per output element (module docstring)."""
    overload = "binary" if len(args) > 10 else "default"
    return conv_call_flops(f"mkldnn._convolution_pointwise.{overload}", args)


@register_formula("mkldnn::_convolution_pointwise_", unit="matrix")
def _convolution_pointwise_inplace_flops(*args: Any, out: Any = None, **kw: Any) -> Optional[FlopCount]:
    """The in-place binary form: the result lands in ``other`` (a residual added in place)."""
    return conv_call_flops("mkldnn._convolution_pointwise_.binary", args)


@register_formula("mkl::_mkl_linear", unit="matrix")
def _mkl_linear_flops(x: Any, packed: Any, w: Any, bias: Any = None, batch_size: Any = None, *,
                      out: Any = None) -> int:
    """MKL's linear on a weight packed at compile time: ``x [..., k] @ ORI_W[n, k].T``:
    2 * rows * k * n. NB: the bias add is not counted, as for ``addmm``."""
    return 2 * math.prod(x[:-1]) * x[-1] * w[0]


@register_formula("prims::_low_memory_max_pool_with_offsets")
def _low_memory_max_pool_flops(x: Any, kernel_size: Any, *args: Any, out: Any = None, **kw: Any) -> int:
    """Inductor's max pooling that keeps the offset inside each window instead of an index
    (``torch._inductor.inductor_prims``): one compare per window element per output, as
    ``max_pool2d_with_indices`` counts it."""
    values = out[0] if isinstance(out, (list, tuple)) else out
    window = list(kernel_size) if isinstance(kernel_size, (list, tuple)) else [kernel_size]
    if len(window) == 1:
        window = window * (len(x) - 2)
    return math.prod(values) * math.prod(window)


@register_formula("prims::_low_memory_max_pool_offsets_to_indices")
def _offsets_to_indices_flops(*args: Any, out: Any = None, **kw: Any) -> int:
    """Turning window offsets into flat indices is integer arithmetic: 0 FLOPs."""
    return 0
