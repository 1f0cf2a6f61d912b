"""FLOP formulas of resampling ops (interpolation, grid sampling, im2col/col2im) and of
torchvision's detection ops (nms, roi_align, roi_pool, ps_roi_align, ps_roi_pool,
deform_conv2d), with their backwards.

Conventions (each formula repeats the one it follows):

* **Interpolation is a weighted sum of taps: 2 FLOPs per tap per output element** (a
  multiply-accumulate per tap, as convolution counts 2 per MAC): linear 2 taps -> 4,
  bilinear 4 -> 8, bicubic 16 -> 32, trilinear 8 -> 16 per output element. The tap
  weights depend on the output row/column only and are computed once per row/column
  (not counted). **Nearest** is a gather: 0 FLOPs (``NO_ARITHMETIC``, as ``index_select``).
  Peers disagree: fvcore counts 4 per output element for bilinear (1 for nearest), ptflops
  1, thop 11. We take fvcore's tap count in our unit (2 per MAC, so 8 = 2 x fvcore's 4,
  the same factor as for its convolutions), because it is the arithmetic of the weighted
  sum; fvcore's 1 per element for nearest counts a copy as a FLOP, which no other copy is.
* **Anti-aliased** interpolation (``_upsample_*_aa``) widens the filter when downsampling:
  taps per dimension = ceil(support * max(1, in / out)), support 2 (bilinear) or 4
  (bicubic); NB: taps clipped at the borders are counted.
* **Backward** of an interpolation spreads each output gradient over the same taps: the
  same 2 per tap per output element; nearest backward adds each output gradient into its
  source: 1 per output element.
* **Grid sampling** is interpolation at computed coordinates: 2 per tap per output element
  (bilinear 4 taps in 2-D, 8 in 3-D; bicubic 16; nearest 0) plus, per output location, 4
  per grid coordinate (unnormalise: add, multiply, subtract, divide). NB: the tap weights
  (a few operations per location) and the padding modes' reflections are not counted.
* **im2col** is a copy (0); **col2im** sums overlapping patches: 1 add per input element.
* **RoI ops**: ``roi_align`` / ``ps_roi_align`` average S bilinear samples per output
  element (S = sampling_ratio^2): 8*S + 1 (4 MACs per sample, one divide). With adaptive
  sampling (``sampling_ratio <= 0``) S depends on each box: read from the boxes when they
  are real CPU tensors, else the formula declines. ``roi_pool`` compares every feature-map
  cell its bin covers (1 each), ``ps_roi_pool`` adds them and divides once per output:
  both read the boxes (cells per bin are data). ``nms``: n(n-1)/2 IoUs of 13 FLOPs each
  (the CUDA kernel computes the whole upper triangle; the CPU kernel skips suppressed boxes:
  an upper bound there), 3 per box for the areas, and the score sort n*ceil(log2 n).
* **deform_conv2d**: the convolution's MACs (2 FLOPs each, matrix) plus a bilinear sample
  (8) per input channel x kernel tap x output position, and the modulation multiply (1)
  when a mask is given.
"""

from __future__ import annotations

import math
from typing import Any, List, Optional, Sequence

import torch

from torch_roofline.count._registry import FlopCount, register_formula

aten = torch.ops.aten


def _numel(shape: Sequence[int]) -> int:
    return math.prod(shape)


def _first(out: Any) -> Any:
    return out[0] if isinstance(out, (list, tuple)) and out and not isinstance(out[0], int) else out


# --------------------------------------------------------------------------------------
# Interpolation.
# --------------------------------------------------------------------------------------
def _interpolation(taps: int) -> Any:
    def formula(x: Any, *args: Any, out: Any = None, **kw: Any) -> int:
        """2 FLOPs per tap per output element: [N, C, *in] -> [N, C, *out]."""
        return 2 * taps * _numel(_first(out))

    return formula


for _name, _taps in (("upsample_linear1d", 2), ("upsample_bilinear2d", 4), ("upsample_bicubic2d", 16),
                     ("upsample_trilinear3d", 8)):
    register_formula(getattr(aten, _name))(_interpolation(_taps))


def _aa_taps(support: int, in_sizes: Sequence[int], out_sizes: Sequence[int]) -> int:
    """Taps of a separable anti-aliased filter: per dim ceil(support * max(1, in/out))."""
    taps = 1
    for i, o in zip(in_sizes, out_sizes):
        taps *= math.ceil(support * max(1.0, i / o)) if o else 0
    return taps


def _interpolation_aa(support: int) -> Any:
    def formula(x: Any, *args: Any, out: Any = None, **kw: Any) -> int:
        """2 FLOPs per tap per output element; the filter widens by in/out when downsampling."""
        o = _first(out)
        return 2 * _aa_taps(support, x[2:], o[2:]) * _numel(o)

    return formula


for _name, _support in (("_upsample_bilinear2d_aa", 2), ("_upsample_bicubic2d_aa", 4)):
    if hasattr(aten, _name):
        register_formula(getattr(aten, _name))(_interpolation_aa(_support))


def _interpolation_backward(taps: int) -> Any:
    def formula(grad_out: Any, output_size: Any, input_size: Any, *args: Any, out: Any = None, **kw: Any) -> int:
        """Each output gradient spread over its taps: 2 per tap per grad_output element."""
        return 2 * taps * _numel(grad_out)

    return formula


for _name, _taps in (("upsample_linear1d_backward", 2), ("upsample_bilinear2d_backward", 4),
                     ("upsample_bicubic2d_backward", 16), ("upsample_trilinear3d_backward", 8)):
    if hasattr(aten, _name):
        register_formula(getattr(aten, _name))(_interpolation_backward(_taps))


def _interpolation_aa_backward(support: int) -> Any:
    def formula(grad_out: Any, output_size: Any, input_size: Any, *args: Any, out: Any = None, **kw: Any) -> int:
        """2 per tap per grad_output element, the taps of the anti-aliased forward."""
        return 2 * _aa_taps(support, list(input_size)[2:], list(output_size)) * _numel(grad_out)

    return formula


for _name, _support in (("_upsample_bilinear2d_aa_backward", 2), ("_upsample_bicubic2d_aa_backward", 4)):
    if hasattr(aten, _name):
        register_formula(getattr(aten, _name))(_interpolation_aa_backward(_support))


@register_formula(*[getattr(aten, f"{p}upsample_nearest{d}d_backward")
                    for p in ("", "_") for d in (1, 2, 3)
                    if hasattr(aten, f"{p}upsample_nearest{d}d_backward")])
def _nearest_backward_flops(grad_out: Any, *args: Any, out: Any = None, **kw: Any) -> int:
    """Each output gradient added into its source element: 1 per grad_output element."""
    return _numel(grad_out)


# --------------------------------------------------------------------------------------
# Grid sampling: interpolation at computed coordinates.
# --------------------------------------------------------------------------------------
_GRID_TAPS = {0: 2, 1: 0, 2: 4}  # interpolation_mode -> taps per dimension (bilinear, nearest, bicubic)


def _grid_taps(mode: int, dims: int) -> Optional[int]:
    per_dim = _GRID_TAPS.get(int(mode))
    return None if per_dim is None else per_dim ** dims


@register_formula(aten.grid_sampler_2d, aten.grid_sampler_3d)
def _grid_sampler_flops(x: Any, grid: Any, interpolation_mode: int, padding_mode: int, align_corners: bool,
                        *, out: Any = None) -> Optional[int]:
    """[N, C, *in] sampled at grid [N, *out, D] -> [N, C, *out]:
    2 per tap per output element + 4 per coordinate per output location."""
    dims = grid[-1]
    taps = _grid_taps(interpolation_mode, dims)
    if taps is None:
        return None
    locations = _numel(grid[:-1])
    return 2 * taps * _numel(out) + 4 * dims * locations


@register_formula(aten.grid_sampler_2d_backward, aten.grid_sampler_3d_backward)
def _grid_sampler_backward_flops(grad_out: Any, x: Any, grid: Any, interpolation_mode: int, padding_mode: int,
                                 align_corners: bool, output_mask: Sequence[bool], *, out: Any = None) -> Optional[int]:
    """grad input: 2 per tap per grad element; grad grid: 2 per tap per coordinate per grad
    element (the weights' derivatives); 4 per coordinate per location (unnormalise).

    NB: an operation count of the textbook backward; nearest has no grid gradient work.
    """
    dims = grid[-1]
    taps = _grid_taps(interpolation_mode, dims)
    if taps is None:
        return None
    elements = _numel(grad_out)
    flops = 4 * dims * _numel(grid[:-1])
    if output_mask[0]:
        flops += 2 * taps * elements
    if output_mask[1]:
        flops += 2 * taps * dims * elements
    return flops


@register_formula(aten.col2im)
def _col2im_flops(cols: Any, *args: Any, out: Any = None, **kw: Any) -> int:
    """[N, C*kh*kw, L] summed into [N, C, H, W]: 1 add per input element."""
    return _numel(cols)


# --------------------------------------------------------------------------------------
# torchvision's detection ops (registered by name: torchvision need not be imported).
# --------------------------------------------------------------------------------------
_IOU = 13  # 4 max/min + 2 sub + 2 clamp + 1 mul (intersection) + 2 add/sub (union) + 1 div + 1 compare


@register_formula("torchvision::nms")
def _nms_flops(boxes: Any, scores: Any, iou_threshold: float, *, out: Any = None) -> int:
    """n boxes: the score sort n*ceil(log2 n), areas 3n, and n(n-1)/2 IoUs of 13 FLOPs."""
    n = boxes[0]
    log2n = (n - 1).bit_length() if n > 1 else 0
    return n * log2n + 3 * n + _IOU * n * (n - 1) // 2


def _readable(t: Any) -> bool:
    """A real tensor whose values can be read without a device sync (CPU, not meta or fake)."""
    from torch._subclasses.fake_tensor import is_fake

    return isinstance(t, torch.Tensor) and t.device.type == "cpu" and not is_fake(t)


def _roi_sizes(rois: torch.Tensor, spatial_scale: float, aligned: bool) -> Optional[List[tuple]]:
    """(height, width) of each box on the feature map (roi_align's arithmetic), None if unreadable."""
    if not _readable(rois):
        return None
    offset = 0.5 if aligned else 0.0
    sizes = []
    for _, x1, y1, x2, y2 in rois.detach().to(torch.float64).tolist():
        w = x2 * spatial_scale - offset - (x1 * spatial_scale - offset)
        h = y2 * spatial_scale - offset - (y1 * spatial_scale - offset)
        if not aligned:
            w, h = max(w, 1.0), max(h, 1.0)
        sizes.append((h, w))
    return sizes


def _roi_align_count(channels: int, rois: Any, spatial_scale: float, ph: int, pw: int, sampling_ratio: int,
                     aligned: bool) -> Optional[int]:
    """Output elements x (8 per bilinear sample + 1 divide); adaptive sampling from the boxes."""
    k = rois.shape[0]
    if sampling_ratio > 0:
        return k * channels * ph * pw * (8 * sampling_ratio * sampling_ratio + 1)
    sizes = _roi_sizes(rois, spatial_scale, aligned)
    if sizes is None:
        return None  # adaptive sampling depends on the boxes' values
    samples = sum(math.ceil(h / ph) * math.ceil(w / pw) for h, w in sizes)
    return channels * ph * pw * (8 * samples + k)


@register_formula("torchvision::roi_align", raw=True)
def _roi_align_flops(x: torch.Tensor, rois: torch.Tensor, spatial_scale: float, pooled_height: int,
                     pooled_width: int, sampling_ratio: int, aligned: bool, *, out: Any = None) -> Optional[int]:
    """[K, C, ph, pw] bins, each the mean of S bilinear samples: 8*S + 1 per output element."""
    return _roi_align_count(x.shape[1], rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned)


@register_formula("torchvision::_roi_align_backward", raw=True)
def _roi_align_backward_flops(grad: torch.Tensor, rois: torch.Tensor, spatial_scale: float, pooled_height: int,
                              pooled_width: int, batch_size: int, channels: int, height: int, width: int,
                              sampling_ratio: int, aligned: bool, *, out: Any = None) -> Optional[int]:
    """Each output gradient spread over S samples x 4 taps: 8*S + 1 per grad element, as the forward."""
    return _roi_align_count(channels, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned)


@register_formula("torchvision::ps_roi_align", raw=True)
def _ps_roi_align_flops(x: torch.Tensor, rois: torch.Tensor, spatial_scale: float, pooled_height: int,
                        pooled_width: int, sampling_ratio: int, *, out: Any = None) -> Optional[int]:
    """[K, C/(ph*pw), ph, pw] bins, each the mean of S bilinear samples: 8*S + 1 per output element."""
    channels = x.shape[1] // (pooled_height * pooled_width)
    return _roi_align_count(channels, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, False)


@register_formula("torchvision::_ps_roi_align_backward", raw=True)
def _ps_roi_align_backward_flops(grad: torch.Tensor, rois: torch.Tensor, channel_mapping: Any, spatial_scale: float,
                                 pooled_height: int, pooled_width: int, sampling_ratio: int, *args: Any,
                                 out: Any = None) -> Optional[int]:
    """As the forward, per grad element."""
    return _roi_align_count(grad.shape[1], rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, False)


def _pool_cells(rois: torch.Tensor, spatial_scale: float, ph: int, pw: int, height: int, width: int) -> Optional[int]:
    """Feature-map cells covered by the bins of every box (roi_pool's integer bin arithmetic)."""
    if not _readable(rois):
        return None
    total = 0
    for _, x1, y1, x2, y2 in rois.detach().to(torch.float64).tolist():
        start_w, start_h = round(x1 * spatial_scale), round(y1 * spatial_scale)
        end_w, end_h = round(x2 * spatial_scale), round(y2 * spatial_scale)
        roi_w, roi_h = max(end_w - start_w + 1, 1), max(end_h - start_h + 1, 1)
        bin_h, bin_w = roi_h / ph, roi_w / pw
        rows = sum(max(0, min(max(math.ceil((i + 1) * bin_h) + start_h, 0), height)
                       - min(max(math.floor(i * bin_h) + start_h, 0), height)) for i in range(ph))
        cols = sum(max(0, min(max(math.ceil((j + 1) * bin_w) + start_w, 0), width)
                       - min(max(math.floor(j * bin_w) + start_w, 0), width)) for j in range(pw))
        total += rows * cols
    return total


@register_formula("torchvision::roi_pool", raw=True)
def _roi_pool_flops(x: torch.Tensor, rois: torch.Tensor, spatial_scale: float, pooled_height: int,
                    pooled_width: int, *, out: Any = None) -> Optional[int]:
    """Max over each bin: 1 comparison per feature-map cell a bin covers, per channel."""
    cells = _pool_cells(rois, spatial_scale, pooled_height, pooled_width, x.shape[2], x.shape[3])
    return None if cells is None else x.shape[1] * cells


@register_formula("torchvision::_roi_pool_backward")
def _roi_pool_backward_flops(grad: Any, *args: Any, out: Any = None) -> int:
    """Each output gradient added at its argmax: 1 per grad element."""
    return _numel(grad)


@register_formula("torchvision::ps_roi_pool", raw=True)
def _ps_roi_pool_flops(x: torch.Tensor, rois: torch.Tensor, spatial_scale: float, pooled_height: int,
                       pooled_width: int, *, out: Any = None) -> Optional[int]:
    """Mean over each bin: 1 add per covered cell + 1 divide per output element."""
    channels = x.shape[1] // (pooled_height * pooled_width)
    cells = _pool_cells(rois, spatial_scale, pooled_height, pooled_width, x.shape[2], x.shape[3])
    if cells is None:
        return None
    return channels * cells + rois.shape[0] * channels * pooled_height * pooled_width


@register_formula("torchvision::_ps_roi_pool_backward", raw=True)
def _ps_roi_pool_backward_flops(grad: torch.Tensor, rois: torch.Tensor, channel_mapping: Any, spatial_scale: float,
                                pooled_height: int, pooled_width: int, batch_size: int, channels: int,
                                height: int, width: int, *, out: Any = None) -> Optional[int]:
    """Each output gradient divided once and added to every cell of its bin."""
    cells = _pool_cells(rois, spatial_scale, pooled_height, pooled_width, height, width)
    if cells is None:
        return None
    return grad.shape[1] * cells + grad.numel()


def _deform_counts(x: Sequence[int], weight: Sequence[int], out_shape: Sequence[int], use_mask: bool) -> tuple:
    """(convolution MACs, sampled elements, per-sample FLOPs) of a deformable convolution."""
    n, c_in = x[0], x[1]
    c_out, _, kh, kw = weight
    positions = out_shape[2] * out_shape[3]
    macs = n * positions * _numel(weight)  # weight [C_out, C_in/g, kh, kw]
    samples = n * c_in * kh * kw * positions
    return macs, samples, 8 + (1 if use_mask else 0)


@register_formula("torchvision::deform_conv2d", unit="matrix")
def _deform_conv2d_flops(x: Any, weight: Any, offset: Any, mask: Any, bias: Any, stride_h: int, stride_w: int,
                         pad_h: int, pad_w: int, dil_h: int, dil_w: int, n_weight_grps: int, n_offset_grps: int,
                         use_mask: bool, *, out: Any = None) -> FlopCount:
    """Bilinear sampling of the deformed taps (8 each, +1 modulation) + the convolution's 2*MACs."""
    macs, samples, per_sample = _deform_counts(x, weight, out, use_mask)
    return FlopCount(2 * macs + samples * per_sample, macs, "matrix")


@register_formula("torchvision::_deform_conv2d_backward", unit="matrix")
def _deform_conv2d_backward_flops(grad: Any, x: Any, weight: Any, offset: Any, mask: Any, bias: Any,
                                  stride_h: int, stride_w: int, pad_h: int, pad_w: int, dil_h: int, dil_w: int,
                                  n_weight_grps: int, n_offset_grps: int, use_mask: bool, *,
                                  out: Any = None) -> FlopCount:
    """grad columns and grad weight (2 x the forward's MACs), then per sample: the input
    gradient through 4 taps (8), the offset gradient (2 coordinates x 4 taps x 2 = 16) and
    the mask gradient (2).

    NB: an operation count of the textbook backward.
    """
    macs, samples, _ = _deform_counts(x, weight, grad, use_mask)
    per_sample = 8 + 16 + (2 if use_mask else 0)
    return FlopCount(4 * macs + samples * per_sample, 2 * macs, "matrix")
