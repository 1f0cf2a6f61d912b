"""FLOP formulas per aten op, and the explicit set of ops that do no arithmetic.

Conventions (each formula below repeats the one it follows):

* **Matrix work** (mm, addmm, bmm, baddbmm, convolution and its backward, attention):
  2 FLOPs per multiply-accumulate, MACs = FLOPs / 2. Most come from
  ``torch.utils.flop_counter.flop_registry`` unchanged, so our count equals
  ``FlopCounterMode``'s for those ops. As there, a bias add is not counted (fvcore does not
  count it either). **The arithmetic wins where torch's formulas are wrong**:
  convolution backward is counted per group (torch counts grad weight over all channel
  pairs, groups times too high), and fused attention counts the query-key pairs its mask
  lets through: causal attention over T tokens is 2*b*h*d*T(T+1) forward, not the full
  square 4*b*h*d*T^2 (``_attention_formulas.py``). We add the matrix ops torch counts as
  zero: CPU flash attention, ``_native_multi_head_attention`` and
  ``_transformer_encoder_layer_fwd`` (the fused eval-mode paths of ``nn.MultiheadAttention``
  and ``nn.TransformerEncoderLayer``), ``mkldnn_linear`` (``torch.utils.mkldnn``), the
  fused RNN kernels (``_recurrent_formulas.py``), ``torchvision::deform_conv2d``, and the
  oneDNN / MKL ops of a frozen ``torch.compile`` model (``onednn_formulas.py``).
* **Elementwise ops**: FLOPs per output element = the number of arithmetic operations in
  the op's definition (``add`` 1, ``addcmul`` 2, ``lerp`` 3, ...). A transcendental or an
  activation function (exp, tanh, sigmoid, gelu, ...) counts 1 per element: hardware
  spends several instructions on it, but no single count is right across devices, and
  1 per element is what ptflops and thop use. MACs are 0 for everything that is not matrix
  work.
* **Reductions**: one FLOP per input element (sum, mean, max, ...). Comparisons in sorts
  and selections count 1 each, as max does (``_index_formulas.py``).
* **Resampling** (interpolation, grid sampling, RoI ops): 2 FLOPs per tap per output
  element, a multiply-accumulate per tap as convolution counts them; nearest is a gather
  (0). Bilinear is 8 per output element, 2 x fvcore's 4 (``_vision_formulas.py``).
* **Only floating-point arithmetic counts.** Integer and bool elementwise ops have 0 FLOPs
  (they are counted, and move bytes); integer matmuls (int8) count ops like FLOPs, since
  the int8 roofs are quoted in operations per second.
* **Complex tensors**: matrix work x4 (a complex MAC is 4 real multiplies and 4 adds),
  add/sub/neg x2, mul x6; other complex ops are listed as uncounted rather than guessed.
* **Sparse and nested tensors**: the formulas assume dense tensors (a sparse op works per
  stored element, a nested op per sequence), so an op with arithmetic on such a tensor is
  listed as uncounted (its bytes still count) and the result carries a note. oneDNN
  (``to_mkldnn()``) tensors are dense, only blocked in memory: they are counted.

An op with no formula and not in :data:`NO_ARITHMETIC` is decomposed before it is given up
(``count/decompose.py``: its composite kernel's parts, or torch's decomposition table on
meta copies); a formula that returns ``None`` (a call it has no honest count for) or raises
falls back to the same. Only what cannot be decomposed is *uncounted*: it still moves
bytes, its time is still measured, and it is listed, with the reason, in the result's
``uncounted`` view.
"""

from __future__ import annotations

import math
from typing import Any, Callable, List, Mapping, Optional, Sequence, Tuple

import torch
from torch.utils import flop_counter as _tfc
from torch_roofline.count._registry import _BY_NAME, _REGISTRY, FlopCount, Formula, _Entry, op_key, op_name, register_formula
from torch_roofline.count.tree import shapes as _tree_shapes, tensors as _tensors

__all__ = [
    "Formula",
    "FlopCount",
    "register_formula",
    "NO_ARITHMETIC",
    "METADATA_OP_NAMES",
    "INPLACE_METADATA_OP_NAMES",
    "lookup",
    "op_key",
    "op_name",
]

aten = torch.ops.aten


def evaluate(entry: _Entry, args: Sequence[Any], kwargs: Mapping[str, Any], out: Any,
             tensors: Optional[Tuple[List[torch.Tensor], List[torch.Tensor]]] = None) -> Optional[FlopCount]:
    """Run one registry entry on an op call and normalise its answer to a :class:`FlopCount`.

    ``None`` means the formula declined (no honest count for these arguments).
    ``tensors``: the call's (input, output) tensors, when the caller has walked them already.
    """
    if entry.fast is not None and tensors is not None:
        res = entry.fast(tensors[0], tensors[1], args, kwargs, out)
    elif entry.raw:
        res = entry.fn(*args, out=out, **kwargs)
    else:
        a, k, o = _tree_shapes((tuple(args), dict(kwargs), out))
        res = entry.fn(*a, out=o, **k)
    if res is None or isinstance(res, FlopCount):
        return res
    flops = int(res)
    return FlopCount(flops, flops // 2 if entry.unit == "matrix" else 0, entry.unit)


def lookup(func: Any, extra: Optional[Mapping[Any, Formula]] = None) -> Optional[_Entry]:
    """The formula for ``func``: the per-call mapping first, then ours, then torch's registry."""
    key = op_key(func)
    if extra:
        for cand in (func, key):
            if cand in extra:
                return _Entry(extra[cand], "vector", False)
    if key in _REGISTRY:
        return _REGISTRY[key]
    if key in _tfc.flop_registry:
        call, fast = _torch_formula(_tfc.flop_registry[key])
        return _Entry(call, "matrix", True, fast)
    return _BY_NAME.get(op_name(func)) if _BY_NAME else None


def _torch_formula(fn: Callable[..., int]) -> Tuple[Formula, Callable[..., Any]]:
    """(formula, its fast form taking the already-walked tensors) for one of torch's formulas."""
    # torch's registered formulas are already shape-wrapped: they take raw args and out_val.
    # NB: they count real arithmetic; a complex multiply-accumulate is 4 real MACs (4 real
    # multiplies, 4 adds), so complex matrix work is x4 (see the module docstring).
    # The registry's wrapper (``shape_wrapper``) maps tensors to shapes with torch's general
    # pytree, the largest part of a call; the raw formula it wraps (``__wrapped__``) gets the
    # same shapes from our aten-only walk instead.
    raw = getattr(fn, "__wrapped__", None)

    def fast(ins: List[torch.Tensor], outs: List[torch.Tensor], args: Sequence[Any],
             kwargs: Mapping[str, Any], out: Any = None) -> int:
        if raw is not None:
            shaped_kwargs = _tree_shapes(kwargs) if kwargs else {}
            flops = int(raw(*_tree_shapes(args), out_shape=_tree_shapes(out), **shaped_kwargs))
        else:
            flops = int(fn(*args, out_val=out, **kwargs))
        for t in ins:
            if t.is_complex():
                return flops * 4
        return flops

    def call(*args: Any, out: Any = None, **kwargs: Any) -> int:
        return fast(_tensors(args, kwargs), [], args, kwargs, out)

    return call, fast


def _numel(shape: Any) -> int:
    return math.prod(shape) if shape is not None else 0


def _first_shape(tree: Any) -> Any:
    """The first ``torch.Size`` in a tree of shapes (a Size is a tuple: test it first)."""
    if isinstance(tree, torch.Size):
        return tree
    items = tree.values() if isinstance(tree, dict) else tree if isinstance(tree, (list, tuple)) else ()
    for item in items:
        found = _first_shape(item)
        if found is not None:
            return found
    return None


def _values_numel(out: Any) -> int:
    """Elements of an op's first output (``max_pool2d_with_indices``: the values, not the indices)."""
    return _numel(_first_shape(out))


def _out_numel(out: Any) -> int:
    """Elements of the (first) output tensor; foreach ops: summed over the list."""
    if isinstance(out, (list, tuple)) and out and all(isinstance(o, torch.Size) for o in out):
        return sum(_numel(o) for o in out)
    return _numel(_first_shape(out))


# --------------------------------------------------------------------------------------
# Ops that do no arithmetic: 0 FLOPs, counted (not "uncounted"). Views among them move
# 0 bytes (traffic.py decides that from the op schema); copies and fills move bytes.
# --------------------------------------------------------------------------------------
#: Metadata queries: they read sizes, strides, device or layout, never tensor data, so they
#: do no arithmetic and move 0 bytes (``prim.device`` and ``prim.layout`` too; they show up
#: under FakeTensorMode and for nested tensors).
METADATA_OP_NAMES = (
    "sym_size", "sym_stride", "sym_numel", "sym_storage_offset", "is_contiguous", "is_same_size",
    "dim", "size", "stride", "_nested_tensor_size", "_nested_tensor_strides",
    "_nested_tensor_storage_offsets", "cudnn_is_acceptable", "is_floating_point", "is_complex", "is_signed",
    "_has_compatible_shallow_copy_type",
)

#: In-place view ops: they change a tensor's sizes, strides or offset and touch no data
#: (0 FLOPs, 0 bytes), though their schemas mark ``self`` as written.
INPLACE_METADATA_OP_NAMES = (
    "as_strided_", "transpose_", "t_", "squeeze_", "unsqueeze_", "swapaxes_", "swapdims_", "detach_",
)


def _collect_no_arithmetic() -> frozenset:
    names = (
        # views and metadata
        "view _unsafe_view reshape _reshape_alias as_strided expand permute transpose t slice "
        "select split split_with_sizes unbind squeeze unsqueeze detach alias lift_fresh "
        "view_as_real view_as_complex unfold diagonal narrow chunk flatten unflatten "
        "expand_as view_as movedim _conj _neg_view resolve_conj resolve_neg set_ resize_ "
        # allocation (writes nothing), fills, copies and gathers (move bytes, no arithmetic)
        "empty empty_like empty_strided new_empty new_empty_strided zeros zeros_like ones "
        "ones_like full full_like new_zeros new_ones new_full fill fill_ zero_ scalar_tensor "
        "arange clone copy copy_ _to_copy contiguous cat stack constant_pad_nd flip roll "
        "repeat index_select gather index embedding masked_fill masked_fill_ where tril triu "
        "tril_ triu_ scatter scatter_ index_copy index_copy_ slice_scatter select_scatter "
        "as_strided_scatter select_backward slice_backward expand_copy permute_copy t_copy "
        "transpose_copy view_copy _unsafe_index reflection_pad1d reflection_pad2d "
        "replication_pad1d replication_pad2d upsample_nearest1d upsample_nearest2d "
        "upsample_nearest3d pixel_shuffle pixel_unshuffle channel_shuffle native_channel_shuffle "
        "max_pool2d_with_indices_backward lift_fresh_copy "
        "index_fill index_fill_ take masked_select masked_scatter masked_scatter_ nonzero "
        "nonzero_static argwhere im2col _upsample_nearest_exact1d _upsample_nearest_exact2d "
        "_upsample_nearest_exact3d reflection_pad3d replication_pad3d max_pool3d_with_indices_backward "
        # layout conversions (oneDNN's blocked layout, dense): copies
        "to_mkldnn _to_dense to_dense "
        # random numbers: integer generator work, not floating-point arithmetic
        "rand randn rand_like randn_like randint randperm normal_ uniform_ bernoulli "
        "bernoulli_ random_ exponential_ "
        # comparisons and logic produce bools: no floating-point arithmetic
        "eq ne lt le gt ge logical_not logical_and logical_or bitwise_not bitwise_and "
        "bitwise_or isnan isinf isfinite sign argmax argmin _local_scalar_dense item equal "
        "is_nonzero any all "
        # metadata queries (sizes, strides, device, layout): no data is touched at all
        + " ".join(METADATA_OP_NAMES) + " " + " ".join(INPLACE_METADATA_OP_NAMES)
    ).split()
    ops = {getattr(aten, n) for n in names if hasattr(aten, n)}
    ops |= {getattr(torch.ops.prim, n) for n in ("device", "layout") if hasattr(torch.ops.prim, n)}
    # prims that Inductor's decompositions leave in a compiled graph (a cast, an index range):
    # the counterparts of _to_copy and arange above (its random-number prims, registered when
    # Inductor is imported, are skipped where compiled graphs are counted: timing/inductor.py)
    prims = getattr(torch.ops, "prims", None)
    ops |= {getattr(prims, n) for n in ("convert_element_type", "iota") if prims is not None and hasattr(prims, n)}
    return frozenset(ops)


#: Overload packets of ops that do no floating-point arithmetic: views, copies, fills,
#: gathers, random-number generation, comparisons. They count 0 FLOPs (and are *not*
#: listed as uncounted); the copies among them still move bytes.
NO_ARITHMETIC = _collect_no_arithmetic()


# --------------------------------------------------------------------------------------
# Elementwise: FLOPs per output element.
# --------------------------------------------------------------------------------------
_ELEMENTWISE_1 = (
    "add sub mul div neg abs reciprocal sqrt rsqrt exp exp2 expm1 log log2 log10 log1p pow "
    "sin cos tan tanh sigmoid relu relu6 gelu silu mish elu selu celu leaky_relu hardtanh "
    "hardswish hardsigmoid softplus clamp clamp_min clamp_max maximum minimum threshold "
    "threshold_backward hardtanh_backward leaky_relu_backward elu_backward gelu_backward "
    "silu_backward hardswish_backward hardsigmoid_backward mish_backward softplus_backward "
    "erf erfc floor ceil round trunc frac square rsub sgn atan atan2 asin acos sinh cosh "
    "fmod remainder"
).split()
# NB: activation backwards count 1 per element like their forwards (a derivative
# evaluation); sigmoid/tanh backward are written out below because their definition is short.
_ELEMENTWISE_K = {
    "addcmul": 2,  # self + value * t1 * t2: one multiply, one add (value == 1)
    "addcdiv": 2,  # self + value * t1 / t2: one divide, one add (value == 1)
    "lerp": 3,  # start + weight * (end - start): sub, mul, add
    "sigmoid_backward": 3,  # grad * y * (1 - y)
    "tanh_backward": 3,  # grad * (1 - y * y)
    "native_dropout": 1,  # x * mask * scale, folded into one multiply
    "native_dropout_backward": 1,
    "xlogy": 2,
    "hypot": 3,
}
_SCALED_BY_ALPHA = {"add", "sub", "rsub", "addcmul", "addcdiv"}  # alpha/value != 1: +1 multiply


def _is_complex(t: Any) -> bool:
    return isinstance(t, torch.Tensor) and t.is_complex()


def _is_float(t: Any) -> bool:
    return isinstance(t, torch.Tensor) and (t.is_floating_point() or t.is_complex())


def _elementwise(per_elem: int, base: str) -> Tuple[Formula, Callable[..., Any]]:
    """(formula, its fast form taking the already-walked input and output tensors)."""

    def fast(tensors: List[torch.Tensor], outs: List[torch.Tensor], args: Sequence[Any],
             kwargs: Mapping[str, Any], out: Any = None) -> Any:
        every = tensors + outs
        for t in every:
            if t.is_floating_point() or t.is_complex():
                break
        else:
            return _ZERO  # integer/bool arithmetic is not floating-point work
        k = per_elem
        if base in _SCALED_BY_ALPHA:
            scale = kwargs.get("alpha", kwargs.get("value", 1))
            if len(args) > 3 and base in ("addcmul", "addcdiv"):
                scale = args[3]
            if scale != 1:
                k += 1
        if any(t.is_complex() for t in every):
            factor = {"add": 2, "sub": 2, "neg": 2, "rsub": 2, "mul": 6}.get(base)
            if factor is None:
                return None  # no honest per-element count for this complex op
            k *= factor
        numel = sum(o.numel() for o in outs) if outs else 0
        return FlopCount(k * numel)

    def formula(*args: Any, out: Any = None, **kwargs: Any) -> Any:
        return fast(_tensors(args, kwargs), _tensors(out), args, kwargs)

    return formula, fast


_ZERO = FlopCount(0)


def _register_elementwise() -> None:
    table = {name: 1 for name in _ELEMENTWISE_1}
    table.update(_ELEMENTWISE_K)
    for name, k in table.items():
        for variant in (name, name + "_"):
            packet = getattr(aten, variant, None)
            if packet is not None:
                formula, fast = _elementwise(k, name)
                _REGISTRY[op_key(packet)] = _Entry(formula, "vector", True, fast)
        fe = getattr(aten, f"_foreach_{name}", None)
        fe_ = getattr(aten, f"_foreach_{name}_", None)
        for packet in (fe, fe_):
            if packet is not None:
                _REGISTRY[op_key(packet)] = _Entry(_foreach(k, name), "vector", True)


def _foreach(per_elem: int, base: str) -> Formula:
    """``_foreach_<op>(_)``: the elementwise count summed over the tensor list."""

    def formula(*args: Any, out: Any = None, **kwargs: Any) -> Any:
        first = args[0]
        written = out if out is not None and _tensors(out) else first
        tensors = _tensors(written)
        if not tensors or not any(_is_float(t) for t in tensors):
            return FlopCount(0)
        k = per_elem
        if base in _SCALED_BY_ALPHA:
            scale = kwargs.get("alpha", kwargs.get("value", 1))
            if isinstance(scale, (int, float)) and scale != 1:
                k += 1
            elif isinstance(scale, (list, tuple)) or isinstance(scale, torch.Tensor):
                k += 1  # per-tensor scalars: assume a scaling multiply
        if any(_is_complex(t) for t in tensors):
            return None
        return FlopCount(k * sum(t.numel() for t in tensors))

    return formula


_register_elementwise()


# --------------------------------------------------------------------------------------
# Reductions: 1 FLOP per input element.
# --------------------------------------------------------------------------------------
def _reduction(per_elem: int) -> Formula:
    def formula(x: Any, *args: Any, out: Any = None, **kwargs: Any) -> int:
        return per_elem * _numel(x)

    return formula


for _name, _k in {
    "sum": 1, "mean": 1, "prod": 1, "amax": 1, "amin": 1, "max": 1, "min": 1, "logsumexp": 3,
    "cumsum": 1, "cumprod": 1, "nansum": 1,
    # var/std: (x - mean) then square-and-accumulate: 3 per element (plus the mean's 1)
    "var": 4, "std": 4, "var_mean": 4, "std_mean": 4,
    "linalg_vector_norm": 2, "norm": 2,  # square and accumulate
}.items():
    if hasattr(aten, _name):
        register_formula(getattr(aten, _name))(_reduction(_k))


@register_formula(aten._foreach_norm)
def _foreach_norm_flops(tensors: Any, *args: Any, out: Any = None, **kwargs: Any) -> int:
    """2 per element (square and accumulate), summed over the list."""
    return 2 * sum(_numel(s) for s in tensors)


# --------------------------------------------------------------------------------------
# Softmax family.
# --------------------------------------------------------------------------------------
_SOFTMAX_OPS = [aten._softmax, aten._log_softmax] + ([aten._safe_softmax] if hasattr(aten, "_safe_softmax") else [])


@register_formula(*_SOFTMAX_OPS)
def _softmax_flops(x: Any, dim: int, half_to_float: Any = False, *, out: Any = None) -> int:
    """5 per element: running max, subtract, exp, accumulate, divide (log_softmax: log, sub).

    NB: the per-row max/sum/log are amortised into the per-element count. ``_safe_softmax``
    (the math SDPA path's softmax, which zeroes fully masked rows) counts the same.
    """
    return 5 * _numel(x)


@register_formula(aten._softmax_backward_data, aten._log_softmax_backward_data)
def _softmax_backward_flops(grad: Any, output: Any, dim: int, dtype: Any, *, out: Any = None) -> int:
    """4 per element: grad * y, row sum, y * sum, subtract (log_softmax: exp, sum, mul, sub)."""
    return 4 * _numel(grad)


# --------------------------------------------------------------------------------------
# Normalisation. Statistics: 3 per element (accumulate x, subtract mean, square-accumulate);
# normalise: 2 per element ((x - mean) * rstd); affine: 2 per element (* weight + bias).
# --------------------------------------------------------------------------------------
def _norm_flops(numel: int, training_stats: bool, affine: bool) -> int:
    return numel * ((3 if training_stats else 0) + 2 + (2 if affine else 0))


@register_formula(aten.native_batch_norm, aten._native_batch_norm_legit)
def _batch_norm_flops(x: Any, weight: Any, bias: Any, *args: Any, out: Any = None, **kw: Any) -> int:
    """Training batch norm: batch statistics 3 + normalise 2 + affine 2 per element.

    NB: in eval mode (training=False) this op uses running stats: 4 per element.
    """
    training = bool(args[2]) if len(args) > 2 and isinstance(args[2], bool) else kw.get("training", True)
    if len(args) >= 1 and isinstance(args[0], bool):  # _native_batch_norm_legit(x, w, b, training, ...)
        training = args[0]
    return _norm_flops(_numel(x), bool(training), weight is not None)


@register_formula(aten._native_batch_norm_legit_no_training)
def _batch_norm_eval_flops(x: Any, weight: Any, bias: Any, *args: Any, out: Any = None, **kw: Any) -> int:
    """Eval batch norm (running statistics): normalise 2 + affine 2 per element."""
    return _norm_flops(_numel(x), False, weight is not None)


if hasattr(aten, "_native_batch_norm_legit_functional"):
    register_formula(aten._native_batch_norm_legit_functional)(_batch_norm_flops)


@register_formula(aten.native_layer_norm)
def _layer_norm_flops(x: Any, normalized_shape: Any, weight: Any, bias: Any, eps: float, *, out: Any = None) -> int:
    """Layer norm: statistics 3 + normalise 2 + affine 2 per element."""
    return _norm_flops(_numel(x), True, weight is not None)


@register_formula(aten.native_group_norm)
def _group_norm_flops(x: Any, weight: Any, bias: Any, *args: Any, out: Any = None, **kw: Any) -> int:
    """Group norm: statistics 3 + normalise 2 + affine 2 per element."""
    return _norm_flops(_numel(x), True, weight is not None)


if hasattr(aten, "_fused_rms_norm"):

    @register_formula(aten._fused_rms_norm)
    def _rms_norm_flops(x: Any, *args: Any, out: Any = None, **kw: Any) -> int:
        """RMS norm: square-accumulate 2 + scale 1 + weight 1 per element."""
        weight = args[1] if len(args) > 1 else kw.get("weight")
        return _numel(x) * (3 + (1 if weight is not None else 0))


@register_formula(
    aten.native_batch_norm_backward, aten.native_layer_norm_backward, aten.native_group_norm_backward
)
def _norm_backward_flops(grad: Any, x: Any, *args: Any, out: Any = None, **kw: Any) -> int:
    """Norm backward: 2 reductions (sum g, sum g*xhat: 3 per element) + input grad (5) +
    weight/bias grads (2) = 10 per element.

    NB: an operation count of the textbook backward; kernels may recompute xhat (+2).
    """
    return 10 * _numel(grad)


if hasattr(aten, "_fused_rms_norm_backward"):

    @register_formula(aten._fused_rms_norm_backward)
    def _rms_norm_backward_flops(grad: Any, x: Any, *args: Any, out: Any = None, **kw: Any) -> int:
        """RMS norm backward: 7 per element (one reduction, input grad, weight grad)."""
        return 7 * _numel(grad)


# --------------------------------------------------------------------------------------
# Pooling.
# --------------------------------------------------------------------------------------
def _window(kernel: Any, ndim: int) -> int:
    ks = list(kernel) if isinstance(kernel, (list, tuple)) else [kernel]
    if len(ks) == 1:
        ks = ks * ndim
    return math.prod(ks)


@register_formula(aten.max_pool2d_with_indices, aten.max_pool2d, aten.avg_pool2d)
def _pool2d_flops(x: Any, kernel_size: Any, *args: Any, out: Any = None, **kw: Any) -> int:
    """One compare (max) or add (avg) per window element per output: out x kh x kw.

    NB: avg pooling's final divide (1 per output) is folded in.
    """
    return _values_numel(out) * _window(kernel_size, 2)


@register_formula(aten.max_pool3d_with_indices, aten.avg_pool3d)
def _pool3d_flops(x: Any, kernel_size: Any, *args: Any, out: Any = None, **kw: Any) -> int:
    """out x kd x kh x kw compares/adds."""
    return _values_numel(out) * _window(kernel_size, 3)


@register_formula(aten.max_pool1d, aten.avg_pool1d)
def _pool1d_flops(x: Any, kernel_size: Any, *args: Any, out: Any = None, **kw: Any) -> int:
    """out x k compares/adds."""
    return _values_numel(out) * _window(kernel_size, 1)


@register_formula(aten._adaptive_avg_pool2d, aten._adaptive_avg_pool3d, aten.adaptive_max_pool2d)
def _adaptive_pool_flops(x: Any, output_size: Any, *, out: Any = None) -> int:
    """Each input element is added (compared) once into its window: numel(input)."""
    return _numel(x)


@register_formula(aten._adaptive_avg_pool2d_backward, aten.avg_pool2d_backward)
def _avg_pool_backward_flops(grad: Any, x: Any, *args: Any, out: Any = None, **kw: Any) -> int:
    """Spread each output grad over its window: one add per input element."""
    return _numel(x)


# --------------------------------------------------------------------------------------
# Losses.
# --------------------------------------------------------------------------------------
@register_formula(aten.nll_loss_forward, aten.nll_loss2d_forward)
def _nll_flops(x: Any, target: Any, *args: Any, out: Any = None, **kw: Any) -> int:
    """Gather -log p[target] and accumulate: 1 per target element (+ the mean's divide)."""
    return _numel(target)


@register_formula(aten.nll_loss_backward, aten.nll_loss2d_backward)
def _nll_backward_flops(grad: Any, x: Any, target: Any, *args: Any, out: Any = None, **kw: Any) -> int:
    """Scatter -grad/N to the target class: 1 per target element."""
    return _numel(target)


@register_formula(aten.mse_loss)
def _mse_flops(x: Any, target: Any, *args: Any, out: Any = None, **kw: Any) -> int:
    """subtract, square, accumulate: 3 per element."""
    return 3 * _numel(x)


@register_formula(aten.mse_loss_backward)
def _mse_backward_flops(grad: Any, x: Any, target: Any, *args: Any, out: Any = None, **kw: Any) -> int:
    """2 * (x - t) * grad / N: 3 per element."""
    return 3 * _numel(x)


@register_formula(aten.smooth_l1_loss, aten.huber_loss)
def _smooth_l1_flops(x: Any, target: Any, *args: Any, out: Any = None, **kw: Any) -> int:
    """d = x - t, |d|, compare with beta, the quadratic branch 0.5*d*d/beta (3), accumulate: 7 per element."""
    return 7 * _numel(x)


@register_formula(aten.smooth_l1_loss_backward, aten.huber_loss_backward)
def _smooth_l1_backward_flops(grad: Any, x: Any, target: Any, *args: Any, out: Any = None, **kw: Any) -> int:
    """d = x - t, compare, d/beta (or its sign), times grad: 4 per element."""
    return 4 * _numel(x)


@register_formula(aten.binary_cross_entropy_with_logits)
def _bce_logits_flops(x: Any, target: Any, *args: Any, out: Any = None, **kw: Any) -> int:
    """max(x,0) - x*t + log(1 + exp(-|x|)) and accumulate: 7 per element."""
    return 7 * _numel(x)


# --------------------------------------------------------------------------------------
# Embedding backward and fused optimizer updates.
# --------------------------------------------------------------------------------------
@register_formula(aten.embedding_dense_backward)
def _embedding_backward_flops(grad: Any, indices: Any, *args: Any, out: Any = None, **kw: Any) -> int:
    """Accumulate each gradient row into the weight's row: 1 add per gradient element."""
    return _numel(grad)


# Per-element operation counts of the fused optimizer updates (torch.optim's algorithms):
# Adam:  m = lerp(m, g, 1-b1) 3; v = b2*v + (1-b2)*g*g 4; denom = sqrt(v)/sqrt(bc2) + eps 3;
#        p -= (lr/bc1) * m / denom 3  -> 13.  AdamW adds the decoupled decay p *= 1-lr*wd: 14.
#        Adam with weight_decay adds g += wd * p: 2.  SGD: p -= lr * g: 2 (+ momentum 2, + wd 2).
_FUSED_OPT = {"_fused_adam": 13, "_fused_adamw": 14, "_fused_sgd": 2}


def _fused_opt(base: int, name: str) -> Formula:
    def formula(params: Any, grads: Any, *args: Any, out: Any = None, **kw: Any) -> int:
        k = base
        wd = kw.get("weight_decay", 0)
        if name == "_fused_adam" and wd:
            k += 2
        if name == "_fused_sgd":
            if wd:
                k += 2
            if kw.get("momentum", 0):
                k += 2
        return k * sum(_numel(s) for s in params)

    return formula


for _name, _k in _FUSED_OPT.items():
    for _variant in (_name, _name + "_"):
        if hasattr(aten, _variant):
            register_formula(getattr(aten, _variant))(_fused_opt(_k, _name))


# --------------------------------------------------------------------------------------
# Matrix work: convolution backward per group, and what torch's registry leaves at zero.
# --------------------------------------------------------------------------------------
def _conv_macs(x: Any, w: Any, out_spatial: Sequence[int], transposed: bool) -> int:
    """Multiply-accumulates of one convolution: every (output or input) position x kernel.

    ``w`` is ``[C_out, C_in/groups, *k]`` (``[C_in, C_out/groups, *k]`` transposed): its
    product already holds the per-group channel pairs. A convolution pairs every output
    position with ``prod(w)`` weights; a transposed one every *input* position.
    """
    spatial = x[2:] if transposed else out_spatial
    return x[0] * math.prod(w) * math.prod(spatial)


@register_formula(aten.convolution_backward, unit="matrix")
def _conv_backward_flops(grad_out: Any, x: Any, w: Any, bias_sizes: Any, stride: Any, padding: Any,
                         dilation: Any, transposed: bool, output_padding: Any, groups: int,
                         output_mask: Sequence[bool], *, out: Any = None) -> int:
    """Convolution backward, per group: grad input and grad weight each equal the forward's MACs.

    forward MACs = N * prod(out spatial) * C_out * (C_in/groups) * prod(k)   (w: [C_out, C_in/g, *k])
    grad input  = conv_transpose(grad_out, w): each forward MAC once -> the forward's MACs;
    grad weight = per group, [C_in/g, N*out] @ [N*out, C_out/g] per tap -> the forward's MACs.
    Transposed (w: [C_in, C_out/g, *k]): forward MACs = N * prod(in spatial) * C_in * (C_out/g) * prod(k),
    and the same for each gradient.
    NB: torch's formula (and FlopCounterMode) counts grad weight over all C_in x C_out channel
    pairs, groups times too high (x32 for a depthwise conv of 32 channels). The bias
    gradient (a sum over grad_out) is not counted, as the forward's bias add is not.
    """
    fwd = _conv_macs(x, w, grad_out[2:], bool(transposed))
    grads = int(bool(output_mask[0])) + int(bool(output_mask[1]))
    return 2 * fwd * grads


if hasattr(aten, "mkldnn_linear"):

    @register_formula(aten.mkldnn_linear, unit="matrix")
    def _mkldnn_linear_flops(x: Any, weight: Any, bias: Any = None, *, out: Any = None) -> int:
        """oneDNN's inner product (``torch.utils.mkldnn``'s ``MkldnnLinear``): ``x [..., k]``,
        ``weight [n, k]``: 2 * rows * k * n, rows = product of x's leading dims.
        NB: the bias add is not counted, as for ``addmm``."""
        rows = _numel(x[:-1])
        return 2 * rows * x[-1] * weight[0]


# Formulas kept in modules of their own (they register themselves on import, through
# count/_registry.py: they do not import this module).
from torch_roofline.count import _attention_formulas, _index_formulas  # noqa: E402,F401
from torch_roofline.count import _recurrent_formulas, _vision_formulas  # noqa: E402,F401
from torch_roofline.count import onednn_formulas  # noqa: E402,F401
