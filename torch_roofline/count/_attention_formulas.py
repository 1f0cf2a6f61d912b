"""FLOP formulas of fused attention: SDPA kernels (CPU flash, flash, memory-efficient, cuDNN),
their backwards, and the fused ``nn.MultiheadAttention`` / ``nn.TransformerEncoderLayer`` paths.

Convention: **the work the fused kernel does.** A fused kernel computes a score only for the
query-key pairs its mask lets through (it skips the masked-out blocks), so

* forward  = 2 * b * h_q * pairs * (d_qk + d_v)      (Q @ K^T and P @ V over the attended pairs)
* backward = 2 * b * h_q * pairs * (3 * d_qk + 2 * d_v)
  (recompute S = Q K^T, dP = dO V^T, dV = P^T dO, dQ = dS K, dK = dS^T Q: 2.5 x the forward)

with ``pairs`` the attended (query, key) pairs (:func:`attended_pairs`):

* no mask: ``s_q * s_k``;
* causal (``is_causal=True``): query i attends keys j <= i (+ ``s_k - s_q`` when the mask is
  aligned bottom-right): for s_q = s_k = T, the lower triangle with its diagonal, T(T+1)/2
  pairs, so the forward is **2 * b * h * d * T(T+1)** for d_qk = d_v = d, not the full
  square 4 * b * h * d * T^2 that torch's formulas (and FlopCounterMode) count;
* sliding window (``window_size_left/right`` of ``_flash_attention_forward``,
  ``window_size`` of ``_efficient_attention_forward``): the band of the window.

PyTorch's SDPA ops align a causal mask top-left (``torch.nn.attention.bias.CausalBias``);
``_flash_attention_forward`` called directly aligns it bottom-right (FlashAttention-2's
convention). An arbitrary ``attn_mask`` / ``attn_bias`` is data: its zeros cannot be seen
from shapes, so it counts the full square (an upper bound).

NB: pairs are counted exactly; the kernels compute whole tiles on the mask's diagonal, a
few percent more at long sequences. The softmax between the two matmuls is not counted, as
in torch's formulas. Grouped-query attention counts the query heads (K and V broadcast).
"""

from __future__ import annotations

from typing import Any, Iterator, Optional, Sequence, Tuple

import torch

from torch_roofline.count._registry import FlopCount, register_formula

__all__ = ["attended_pairs", "attention_flops", "attention_backward_flops"]

aten = torch.ops.aten

#: Stands for an unbounded window side (any value >= s_q + s_k works).
_UNBOUNDED = None


def _sum_clipped(first: int, count: int, n: int) -> int:
    """sum of clip(x, 0, n) for x = first, first + 1, ..., first + count - 1."""
    if count <= 0:
        return 0
    last = first + count - 1
    lo, hi = max(first, 0), min(last, n)
    total = (lo + hi) * (hi - lo + 1) // 2 if hi >= lo else 0
    above = last - max(first, n + 1) + 1  # terms clipped down to n
    return total + (n * above if above > 0 else 0)


def attended_pairs(s_q: int, s_k: int, *, causal: bool = False, bottom_right: bool = False,
                   left: Optional[int] = _UNBOUNDED, right: Optional[int] = _UNBOUNDED) -> int:
    """Query-key pairs a masked attention computes.

    Query i attends keys j with ``i + o - left <= j <= i + o + right`` (clipped to
    ``[0, s_k)``), o = ``s_k - s_q`` when ``bottom_right`` else 0; ``causal`` sets
    ``right = 0``; ``None`` is an unbounded side. Closed form, O(1).

    Example: ``attended_pairs(4, 4, causal=True)`` = 1 + 2 + 3 + 4 = 10.
    """
    if causal:
        right = 0 if right is None else min(right, 0)
    if left is None and right is None:
        return s_q * s_k
    big = s_q + s_k
    lo_side = big if left is None or left < 0 else left
    hi_side = big if right is None or right < 0 else right
    offset = s_k - s_q if bottom_right else 0
    # sum over i of [clip(i + o + right + 1, 0, s_k) - clip(i + o - left, 0, s_k)]
    return _sum_clipped(offset + hi_side + 1, s_q, s_k) - _sum_clipped(offset - lo_side, s_q, s_k)


def attention_flops(b: int, h: int, pairs: int, d_qk: int, d_v: int) -> int:
    """Forward: Q @ K^T and P @ V over the attended pairs: 2*b*h*pairs*(d_qk + d_v)."""
    return 2 * b * h * pairs * (d_qk + d_v)


def attention_backward_flops(b: int, h: int, pairs: int, d_qk: int, d_v: int) -> int:
    """Backward: 5 matmuls over the attended pairs: 2*b*h*pairs*(3*d_qk + 2*d_v)."""
    return 2 * b * h * pairs * (3 * d_qk + 2 * d_v)


def _bhsd(q: Sequence[int], k: Sequence[int], v: Sequence[int]) -> Optional[Tuple[int, int, int, int, int, int]]:
    """(b, h_q, s_q, s_k, d_qk, d_v) of [b, h, s, d] tensors; None when the shapes are not that."""
    if len(q) != 4 or len(k) != 4 or len(v) != 4:
        return None
    return q[0], q[1], q[2], k[2], q[3], v[3]


# --------------------------------------------------------------------------------------
# SDPA-level kernels: [b, h, s, d], causal aligned top-left.
# --------------------------------------------------------------------------------------
def _sdpa(causal_at: int, backward: bool = False) -> Any:
    """The formula of a fused SDPA kernel (``backward``: its backward, whose first argument is
    ``grad_out``); ``causal_at``: the position of its ``is_causal`` argument.

    Forward: [b,h,s_q,d] @ [b,h,d,s_k] -> [b,h,s_q,s_k] @ [b,h,s_k,d_v] -> [b,h,s_q,d_v];
    backward: 5 matmuls of [b,h,s_q,s_k] scores with [b,h,s,d] operands; attended pairs only."""
    first = 1 if backward else 0  # q's position
    count = attention_backward_flops if backward else attention_flops

    def formula(*args: Any, out: Any = None, **kw: Any) -> Optional[int]:
        q, k, v = args[first:first + 3]
        dims = _bhsd(q, k, v)
        if dims is None:
            return None
        b, h, s_q, s_k, d, d_v = dims
        causal = bool(args[causal_at]) if len(args) > causal_at else bool(kw.get("is_causal", False))
        return count(b, h, attended_pairs(s_q, s_k, causal=causal), d, d_v)

    return formula


# (op, position of is_causal in its schema) for the forwards and backwards
_SDPA_FORWARDS = (
    ("_scaled_dot_product_flash_attention_for_cpu", 4),
    ("_scaled_dot_product_flash_attention", 4),
    ("_scaled_dot_product_efficient_attention", 6),
    ("_scaled_dot_product_cudnn_attention", 6),
    ("_scaled_dot_product_fused_attention_overrideable", 5),
)
_SDPA_BACKWARDS = (
    ("_scaled_dot_product_flash_attention_for_cpu_backward", 7),
    ("_scaled_dot_product_flash_attention_backward", 11),
    ("_scaled_dot_product_efficient_attention_backward", 11),
    ("_scaled_dot_product_cudnn_attention_backward", 14),
    ("_scaled_dot_product_fused_attention_overrideable_backward", 13),
)
for _name, _at in _SDPA_FORWARDS:
    if hasattr(aten, _name):
        register_formula(getattr(aten, _name), unit="matrix")(_sdpa(_at))
for _name, _at in _SDPA_BACKWARDS:
    if hasattr(aten, _name):
        register_formula(getattr(aten, _name), unit="matrix")(_sdpa(_at, backward=True))


# --------------------------------------------------------------------------------------
# The kernels beneath SDPA, when called directly: [b, s, h, d] or varlen [total, h, d].
# --------------------------------------------------------------------------------------
def _lengths(offsets: Any, longest: Any) -> Sequence[int]:
    """Sequence lengths of a varlen batch; the longest for every sequence when they cannot be read."""
    from torch.utils.flop_counter import _offsets_to_lengths

    return _offsets_to_lengths(offsets, longest)


def _varlen_shapes(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cum_q: Any, cum_k: Any,
                   max_q: Any, max_k: Any) -> Iterator[Tuple[int, int, int, int, int, int]]:
    """(b, h, s_q, s_k, d_qk, d_v) per sequence of a [b, s, h, d] or varlen [total, h, d] call.

    NB: varlen offsets are read from the tensor (one small device-to-host copy); on meta or
    fake tensors every sequence is assumed to be the longest, as torch's formulas do.
    """
    if cum_q is None:
        b, s_q, h, d = q.shape
        yield b, h, s_q, k.shape[1], d, v.shape[-1]
        return
    h, d, d_v = q.shape[-2], q.shape[-1], v.shape[-1]
    for s_q, s_k in zip(_lengths(cum_q, max_q), _lengths(cum_k, max_k)):
        yield 1, h, int(s_q), int(s_k), d, d_v


def _window(value: Any) -> Optional[int]:
    return None if value is None or int(value) < 0 else int(value)


@register_formula(aten._flash_attention_forward, unit="matrix", raw=True)
def _flash_forward_flops(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, cum_seq_q: Any,
                         cum_seq_k: Any, max_q: Any, max_k: Any, dropout_p: float, is_causal: bool,
                         *args: Any, out: Any = None, window_size_left: Any = None,
                         window_size_right: Any = None, **kw: Any) -> int:
    """FlashAttention-2 forward ([b, s, h, d]): causal and windows aligned bottom-right."""
    return sum(
        attention_flops(b, h, attended_pairs(s_q, s_k, causal=bool(is_causal), bottom_right=True,
                                             left=_window(window_size_left), right=_window(window_size_right)),
                        d, d_v)
        for b, h, s_q, s_k, d, d_v in _varlen_shapes(query, key, value, cum_seq_q, cum_seq_k, max_q, max_k))


@register_formula(aten._flash_attention_backward, unit="matrix", raw=True)
def _flash_backward_flops(grad_out: torch.Tensor, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                          out_: Any, logsumexp: Any, cum_seq_q: Any, cum_seq_k: Any, max_q: Any, max_k: Any,
                          dropout_p: float, is_causal: bool, *args: Any, out: Any = None,
                          window_size_left: Any = None, window_size_right: Any = None, **kw: Any) -> int:
    """FlashAttention-2 backward: 5 matmuls over the forward's attended pairs."""
    return sum(
        attention_backward_flops(b, h, attended_pairs(s_q, s_k, causal=bool(is_causal), bottom_right=True,
                                                      left=_window(window_size_left),
                                                      right=_window(window_size_right)), d, d_v)
        for b, h, s_q, s_k, d, d_v in _varlen_shapes(query, key, value, cum_seq_q, cum_seq_k, max_q, max_k))


def _efficient_pairs(s_q: int, s_k: int, mask_type: int, window: Any) -> int:
    """Memory-efficient attention's ``custom_mask_type``: 0 none, 1 causal top-left, 2 causal
    bottom-right; ``window_size`` w > 0 (with a causal mask): the w keys up to the diagonal."""
    if mask_type not in (1, 2):
        return s_q * s_k
    left = int(window) - 1 if window is not None and int(window) > 0 else None
    return attended_pairs(s_q, s_k, causal=True, bottom_right=mask_type == 2, left=left)


def _efficient_shapes(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_q: Any, cu_k: Any,
                      max_q: Any, max_k: Any) -> Iterator[Tuple[int, int, int, int, int, int]]:
    """(b, h, s_q, s_k, d_qk, d_v) per sequence of a [b, s, h, d] call (varlen: b = 1, per sequence)."""
    b, s_q, h, d = q.shape
    if cu_q is None:
        yield b, h, s_q, k.shape[1], d, v.shape[-1]
        return
    for len_q, len_k in zip(_lengths(cu_q, max_q), _lengths(cu_k, max_k)):
        yield 1, h, int(len_q), int(len_k), d, v.shape[-1]


def _efficient_flops(count: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_q: Any, cu_k: Any,
                     max_q: Any, max_k: Any, mask_type: int, window: Any) -> int:
    """``count`` (forward or backward FLOPs) summed over the sequences of a memory-efficient call."""
    return sum(count(b, h, _efficient_pairs(s_q, s_k, mask_type, window), d, d_v)
               for b, h, s_q, s_k, d, d_v in _efficient_shapes(q, k, v, cu_q, cu_k, max_q, max_k))


@register_formula(aten._efficient_attention_forward, unit="matrix", raw=True)
def _efficient_forward_flops(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, bias: Any,
                             cu_seqlens_q: Any, cu_seqlens_k: Any, max_seqlen_q: Any, max_seqlen_k: Any,
                             dropout_p: float, custom_mask_type: int, *args: Any, out: Any = None,
                             window_size: Any = None, **kw: Any) -> int:
    """Memory-efficient attention forward ([b, s, h, d]) over the attended pairs."""
    return _efficient_flops(attention_flops, query, key, value, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
                            max_seqlen_k, custom_mask_type, window_size)


@register_formula(aten._efficient_attention_backward, unit="matrix", raw=True)
def _efficient_backward_flops(grad_out: torch.Tensor, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                              bias: Any, out_: Any, cu_seqlens_q: Any, cu_seqlens_k: Any, max_seqlen_q: Any,
                              max_seqlen_k: Any, logsumexp: Any, dropout_p: float, philox_seed: Any,
                              philox_offset: Any, custom_mask_type: int, *args: Any, out: Any = None,
                              window_size: Any = None, **kw: Any) -> int:
    """Memory-efficient attention backward: 5 matmuls over the attended pairs."""
    return _efficient_flops(attention_backward_flops, query, key, value, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
                            max_seqlen_k, custom_mask_type, window_size)


# --------------------------------------------------------------------------------------
# Fused eval-mode paths of nn.MultiheadAttention and nn.TransformerEncoderLayer.
# --------------------------------------------------------------------------------------
@register_formula(aten._native_multi_head_attention, unit="matrix")
def _mha_flops(query: Any, key: Any, value: Any, embed_dim: int, num_heads: int, *args: Any,
               out: Any = None, **kw: Any) -> int:
    """Fused eval-mode multi-head attention (batch first [b, s, e]):

    in-projection  q: 2*b*s_q*e*e, k: 2*b*s_k*e*e, v: 2*b*s_k*e*e;
    attention      2*b*s_q*s_k*e (QK^T, all heads) + 2*b*s_q*s_k*e (PV);
    out-projection 2*b*s_q*e*e.
    NB: bias adds and the softmax are not counted, as in torch's linear and sdpa formulas;
    a mask is data (the full square is counted).
    """
    q_shape, k_shape = query, key
    b, s_q, e = (q_shape[0], q_shape[1], q_shape[2]) if len(q_shape) == 3 else (1, q_shape[0], q_shape[1])
    s_k = k_shape[1] if len(k_shape) == 3 else k_shape[0]
    proj = 2 * b * (s_q + 2 * s_k) * e * e + 2 * b * s_q * e * e
    return proj + 4 * b * s_q * s_k * e


@register_formula(aten._transformer_encoder_layer_fwd, unit="matrix")
def _encoder_layer_flops(src: Any, embed_dim: int, num_heads: int, qkv_weight: Any, qkv_bias: Any,
                         proj_weight: Any, proj_bias: Any, use_gelu: bool, norm_first: bool,
                         eps: float, norm_weight_1: Any, norm_bias_1: Any, norm_weight_2: Any,
                         norm_bias_2: Any, ffn_weight_1: Any, ffn_bias_1: Any, ffn_weight_2: Any,
                         *args: Any, out: Any = None, **kw: Any) -> FlopCount:
    """Fused eval-mode ``nn.TransformerEncoderLayer`` ([b, s, e], feed-forward width f):

    self-attention as in ``_native_multi_head_attention`` with s_q = s_k = s: 8*b*s*e*e + 4*b*s*s*e;
    feed-forward 2*b*s*e*f + 2*b*s*f*e (MACs: half of these matrix FLOPs);
    plus vector work: 2 layer norms (7 per element each), the activation (1 per b*s*f) and
    the two residual adds (1 per element each).
    """
    b, s, e = src if len(src) == 3 else (1, src[0], src[1])
    f = ffn_weight_1[0]
    matrix = 8 * b * s * e * e + 4 * b * s * s * e + 4 * b * s * e * f
    vector = 2 * 7 * b * s * e + b * s * f + 2 * b * s * e
    return FlopCount(matrix + vector, matrix // 2, "matrix")
