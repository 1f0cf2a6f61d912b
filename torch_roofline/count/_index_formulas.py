"""FLOP formulas of sorting and selection, indexed writes and reductions into indices, and ranges.

Conventions (each formula repeats the one it follows):

* **Comparisons in a selection count 1 each**, as the max/min reductions do (a comparison
  of two floats runs on the floating-point units): a comparison sort of n keys counts
  n * ceil(log2 n) comparisons (the information-theoretic bound; radix sorts do other
  work), a selection pass (topk, kthvalue, median) n. Integer and bool keys count 0: only
  floating-point arithmetic counts (detection models sort integer labels).
* **Indexed reads and writes without arithmetic are 0 FLOPs** (gather, scatter, index_copy,
  index_put without accumulate, nonzero, masked_select: see ``formulas.NO_ARITHMETIC``);
  their bytes are counted by ``traffic.py``. **Accumulating** writes (scatter_add,
  index_add, index_put with ``accumulate=True``, put_ with accumulate, scatter_reduce,
  index_reduce) count 1 per element accumulated, plus 1 per element for a scale (``alpha``)
  or a mean's divide.
* **Ranges**: ``linspace`` computes ``start + i * step`` (2 per element), ``logspace``
  ``base ** (start + i * step)`` (3 per element); ``arange`` is 0 (an integer sequence,
  ``NO_ARITHMETIC``).
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import torch

from torch_roofline.count._registry import FlopCount, register_formula

aten = torch.ops.aten

_ZERO = FlopCount(0)


def _floating(t: Any) -> bool:
    return isinstance(t, torch.Tensor) and (t.is_floating_point() or t.is_complex())


def _log2_ceil(n: int) -> int:
    return (n - 1).bit_length() if n > 1 else 0


def _along(x: torch.Tensor, dim: int) -> tuple:
    """(rows, n): the number of slices along ``dim`` and their length (a 0-d tensor: 1, 1)."""
    if x.dim() == 0:
        return 1, 1
    n = x.shape[dim]
    return (x.numel() // n if n else 0), n


def _sort_compares(n: int) -> int:
    """Comparisons of a comparison sort of n keys: n * ceil(log2 n)."""
    return n * _log2_ceil(n)


# --------------------------------------------------------------------------------------
# Sorting and selection (float keys only).
# --------------------------------------------------------------------------------------
@register_formula(aten.sort, raw=True)
def _sort_flops(x: torch.Tensor, *args: Any, out: Any = None, dim: int = -1, **kw: Any) -> FlopCount:
    """rows * n * ceil(log2 n) comparisons, n = size along ``dim`` (float keys; ints: 0)."""
    if not _floating(x):
        return _ZERO
    if args and isinstance(args[0], int) and not isinstance(args[0], bool):
        dim = args[0]
    rows, n = _along(x, dim)
    return FlopCount(rows * _sort_compares(n))


@register_formula(aten.topk, raw=True)
def _topk_flops(x: torch.Tensor, k: int, dim: int = -1, largest: bool = True, sorted: bool = True,
                *, out: Any = None) -> FlopCount:
    """A selection pass (1 comparison per element) + sorting the k found: rows * (n + k*ceil(log2 k))."""
    if not _floating(x):
        return _ZERO
    rows, n = _along(x, dim)
    return FlopCount(rows * (n + (_sort_compares(int(k)) if sorted else 0)))


@register_formula(aten.kthvalue, aten.median, aten.nanmedian, raw=True)
def _select_flops(x: torch.Tensor, *args: Any, out: Any = None, **kw: Any) -> FlopCount:
    """A selection pass: 1 comparison per element (quickselect's expected work, NB: ~2-3x in practice)."""
    return FlopCount(x.numel()) if _floating(x) else _ZERO


@register_formula(aten.mode, raw=True)
def _mode_flops(x: torch.Tensor, dim: int = -1, keepdim: bool = False, *, out: Any = None) -> FlopCount:
    """Sort each row, then count runs: rows * (n*ceil(log2 n) + n)."""
    if not _floating(x):
        return _ZERO
    rows, n = _along(x, dim)
    return FlopCount(rows * (_sort_compares(n) + n))


@register_formula(aten._unique2, aten._unique, raw=True)
def _unique_flops(x: torch.Tensor, *args: Any, out: Any = None, **kw: Any) -> FlopCount:
    """Sort all n elements, then compare neighbours: n*ceil(log2 n) + n (float keys; ints: 0).

    NB: the CPU kernel of an unsorted ``_unique`` hashes instead; counted as the sort too.
    """
    if not _floating(x):
        return _ZERO
    n = x.numel()
    return FlopCount(_sort_compares(n) + n)


@register_formula(aten.unique_dim, raw=True)
def _unique_dim_flops(x: torch.Tensor, dim: int, *args: Any, out: Any = None, **kw: Any) -> FlopCount:
    """Sort the d slices along ``dim`` lexicographically (each comparison reads a slice of
    s = numel/d elements), then compare neighbours: s*d*ceil(log2 d) + numel."""
    if not _floating(x):
        return _ZERO
    slices, d = _along(x, dim)  # slices = numel/d = elements per slice
    return FlopCount(slices * _sort_compares(d) + x.numel())


@register_formula(aten.unique_consecutive, raw=True)
def _unique_consecutive_flops(x: torch.Tensor, *args: Any, out: Any = None, **kw: Any) -> FlopCount:
    """Compare each element with its neighbour: numel comparisons."""
    return FlopCount(x.numel()) if _floating(x) else _ZERO


def _binary_searches(boundaries: Any, values: Any) -> FlopCount:
    """values * ceil(log2(len(boundaries) + 1)) comparisons (float boundaries; ints: 0)."""
    if not isinstance(boundaries, torch.Tensor) or not _floating(boundaries) or boundaries.dim() == 0:
        return _ZERO
    n_values = values.numel() if isinstance(values, torch.Tensor) else 1
    return FlopCount(n_values * _log2_ceil(boundaries.shape[-1] + 1))


@register_formula(aten.searchsorted, raw=True)
def _searchsorted_flops(sorted_sequence: Any, values: Any, *, out: Any = None, **kw: Any) -> FlopCount:
    """A binary search per value: values * ceil(log2(n + 1)) comparisons."""
    return _binary_searches(sorted_sequence, values)


@register_formula(aten.bucketize, raw=True)
def _bucketize_flops(values: Any, boundaries: Any, *, out: Any = None, **kw: Any) -> FlopCount:
    """A binary search per value: values * ceil(log2(n + 1)) comparisons."""
    return _binary_searches(boundaries, values)


# --------------------------------------------------------------------------------------
# Accumulating indexed writes: 1 per element accumulated.
# --------------------------------------------------------------------------------------
@register_formula(aten.scatter_add, aten.scatter_add_, raw=True)
def _scatter_add_flops(x: torch.Tensor, dim: int, index: torch.Tensor, src: torch.Tensor, *,
                       out: Any = None) -> FlopCount:
    """out[index[i]] += src[i]: 1 add per index element."""
    return FlopCount(index.numel()) if _floating(x) else _ZERO


@register_formula(aten.scatter_reduce, aten.scatter_reduce_, raw=True)
def _scatter_reduce_flops(x: torch.Tensor, dim: int, index: torch.Tensor, src: Any, reduce: str, *,
                          out: Any = None, include_self: bool = True) -> FlopCount:
    """1 per index element (sum, prod, amax, amin); ``mean`` adds a divide per output element."""
    if not _floating(x):
        return _ZERO
    return FlopCount(index.numel() + (x.numel() if reduce == "mean" else 0))


@register_formula(aten.index_add, aten.index_add_, raw=True)
def _index_add_flops(x: torch.Tensor, dim: int, index: torch.Tensor, source: torch.Tensor, *args: Any,
                     out: Any = None, alpha: Any = 1) -> FlopCount:
    """out[index] += alpha * source: 1 add per source element (+ 1 multiply when alpha != 1)."""
    if args:
        alpha = args[0]
    if not _floating(x):
        return _ZERO
    return FlopCount(source.numel() * (1 if alpha == 1 else 2))


@register_formula(aten.index_reduce, aten.index_reduce_, raw=True)
def _index_reduce_flops(x: torch.Tensor, dim: int, index: torch.Tensor, source: torch.Tensor, reduce: str, *,
                        out: Any = None, include_self: bool = True) -> FlopCount:
    """1 per source element; ``mean`` adds a divide per output element."""
    if not _floating(x):
        return _ZERO
    return FlopCount(source.numel() + (x.numel() if reduce == "mean" else 0))


def written_by_index_put(x: torch.Tensor, indices: Sequence[Optional[torch.Tensor]],
                         values: Optional[torch.Tensor] = None) -> Optional[int]:
    """Elements ``x[indices] = values`` writes: the indexing result's size.

    Integer indices: the broadcast index shape x the dims not indexed. A boolean mask selects
    a data-dependent count, read from ``values`` when they are not broadcast along the
    selected dimension (the backward of ``x[mask]`` writes a gradient of exactly that shape);
    otherwise ``None``.
    """
    shapes = []
    masks = [i for i in indices if i is not None and i.dtype in (torch.bool, torch.uint8)]
    if masks:
        return _written_by_mask(x, indices, masks, values)
    indexed = 0
    for idx in indices:
        indexed += 1
        if idx is not None:
            shapes.append(tuple(idx.shape))
    try:
        picked = math.prod(torch.broadcast_shapes(*shapes)) if shapes else 1
    except RuntimeError:
        return None
    rest = math.prod(x.shape[d] for d, idx in enumerate(indices) if idx is None)
    rest *= math.prod(x.shape[indexed:])
    return picked * rest


def _written_by_mask(x: torch.Tensor, indices: Sequence[Optional[torch.Tensor]], masks: Sequence[torch.Tensor],
                     values: Optional[torch.Tensor]) -> Optional[int]:
    """One boolean mask among ``None`` indices: [*before, nnz, *after], nnz read from ``values``."""
    if len(masks) != 1 or any(i is not None and i is not masks[0] for i in indices) or values is None:
        return None
    position = next(p for p, i in enumerate(indices) if i is masks[0])
    before = x.shape[:position]
    after = x.shape[position + masks[0].dim():]
    rank = len(before) + 1 + len(after)
    if values.dim() != rank or values.shape[len(before)] == 1:
        return None  # broadcast along the selected dimension: how many were selected is data
    return math.prod(before) * values.shape[len(before)] * math.prod(after)


@register_formula(aten.index_put, aten.index_put_, aten._index_put_impl_, raw=True)
def _index_put_flops(x: torch.Tensor, indices: Sequence[Optional[torch.Tensor]], values: torch.Tensor,
                     accumulate: bool = False, *args: Any, out: Any = None, **kw: Any) -> Optional[FlopCount]:
    """0 (a write); with ``accumulate=True``, 1 add per element written.

    NB: a boolean mask selects a data-dependent count, read from ``values`` when they are not
    broadcast (:func:`written_by_index_put`); otherwise accumulating through one declines.
    """
    if not accumulate or not _floating(x):
        return _ZERO
    written = written_by_index_put(x, indices, values)
    return None if written is None else FlopCount(written)


@register_formula(aten.put_, aten.put, raw=True)
def _put_flops(x: torch.Tensor, index: torch.Tensor, source: torch.Tensor, accumulate: bool = False, *,
               out: Any = None) -> FlopCount:
    """0 (a write); with ``accumulate=True``, 1 add per index element."""
    return FlopCount(index.numel()) if accumulate and _floating(x) else _ZERO


# --------------------------------------------------------------------------------------
# Ranges.
# --------------------------------------------------------------------------------------
@register_formula(aten.linspace, raw=True)
def _linspace_flops(*args: Any, out: Any = None, **kw: Any) -> FlopCount:
    """start + i * step: 2 per element of a floating-point output (integer outputs: 0)."""
    return FlopCount(2 * out.numel()) if _floating(out) else _ZERO


@register_formula(aten.logspace, raw=True)
def _logspace_flops(*args: Any, out: Any = None, **kw: Any) -> FlopCount:
    """base ** (start + i * step): 3 per element of a floating-point output."""
    return FlopCount(3 * out.numel()) if _floating(out) else _ZERO
