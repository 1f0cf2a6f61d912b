"""Hand-computed FLOPs of the formulas issue 13 adds: interpolation, grid sampling,
im2col/col2im, sorting and selection, unique, indexed writes, ranges, metadata ops,
torchvision's detection ops and the recurrent kernels, each with its arithmetic in a comment.

Conventions: formulas.py, _vision_formulas.py, _index_formulas.py, _recurrent_formulas.py.
float32 throughout: 4 bytes per element.
"""

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torch_roofline.count import count

torchvision = pytest.importorskip("torchvision")
from torchvision import ops  # noqa: E402


def _only(result, op):
    calls = [o for o in result.ops if o.op == op]
    assert len(calls) == 1, [o.op for o in result.ops]
    return calls[0]


def _flops(result, op, phase=None):
    return sum(o.flops for o in result.ops if o.op == op and (phase is None or o.phase == phase))


# --------------------------------------------------------------------------------------
# Interpolation: 2 FLOPs per tap per output element.
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode, shape, scale, op, flops", [
    # [1,2,4] -> [1,2,8]: 16 outputs x 2 taps x 2 = 64
    ("linear", (1, 2, 4), 2, "aten.upsample_linear1d", 64),
    # [1,2,4,4] -> [1,2,8,8]: 128 outputs x 4 taps x 2 = 1024
    ("bilinear", (1, 2, 4, 4), 2, "aten.upsample_bilinear2d", 1024),
    # 128 outputs x 16 taps x 2 = 4096
    ("bicubic", (1, 2, 4, 4), 2, "aten.upsample_bicubic2d", 4096),
    # [1,1,2,2,2] -> [1,1,4,4,4]: 64 outputs x 8 taps x 2 = 1024
    ("trilinear", (1, 1, 2, 2, 2), 2, "aten.upsample_trilinear3d", 1024),
    # nearest is a gather: 0
    ("nearest", (1, 2, 4, 4), 2, "aten.upsample_nearest2d", 0),
])
def test_interpolation(mode, shape, scale, op, flops):
    x = torch.randn(*shape)
    r = count(lambda x: F.interpolate(x, scale_factor=scale, mode=mode), (x,))
    call = _only(r, op)
    assert call.flops == flops and call.counted and r.uncounted == {}
    with torch.inference_mode():  # the .vec overload reaches the counter: same count
        assert count(lambda x: F.interpolate(x, scale_factor=scale, mode=mode), (x,)).total.flops == flops


def test_bilinear_is_twice_fvcores_tap_count():
    fvcore_nn = pytest.importorskip("fvcore.nn")

    class Up(nn.Module):
        def forward(self, x):
            return F.interpolate(x, scale_factor=2, mode="bilinear")

    x = torch.randn(1, 2, 4, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fv = fvcore_nn.FlopCountAnalysis(Up(), (x,)).total()
    assert fv == 4 * 128  # fvcore: 4 (multiply-accumulates) per output element
    assert count(Up(), x).total.flops == 2 * fv  # ours: 2 FLOPs per multiply-accumulate


def test_antialiased_downsampling_widens_the_filter():
    x = torch.randn(1, 1, 8, 8)
    r = count(lambda x: F.interpolate(x, size=(4, 4), mode="bilinear", antialias=True), (x,))
    # halving each side: taps per dim ceil(2 * 8/4) = 4 -> 16 taps; 16 outputs x 16 x 2 = 512
    assert _only(r, "aten._upsample_bilinear2d_aa").flops == 512


def test_interpolation_backward():
    x = torch.randn(1, 2, 4, 4, requires_grad=True)
    r = count(lambda x: F.interpolate(x, scale_factor=2, mode="bilinear"), (x,), backward=True)
    # each of the 128 output gradients spread over 4 taps: 128 x 4 x 2 = 1024
    assert _flops(r, "aten.upsample_bilinear2d_backward") == 1024
    r = count(lambda x: F.interpolate(x, scale_factor=2, mode="nearest"), (x,), backward=True)
    assert _flops(r, "aten.upsample_nearest2d_backward") == 128  # one add per output gradient
    assert r.uncounted == {}


# --------------------------------------------------------------------------------------
# Grid sampling, im2col/col2im.
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode, flops", [
    # out [1,3,5,6] = 90 elements; 30 locations x 2 coordinates x 4 = 240 to unnormalise
    ("bilinear", 2 * 4 * 90 + 240),  # 720 + 240 = 960
    ("nearest", 240),  # a gather at the coordinates
    ("bicubic", 2 * 16 * 90 + 240),  # 2880 + 240 = 3120
])
def test_grid_sample_2d(mode, flops):
    x, grid = torch.randn(1, 3, 4, 4), torch.rand(1, 5, 6, 2) * 2 - 1
    r = count(lambda x, g: F.grid_sample(x, g, mode=mode, align_corners=False), (x, grid))
    assert _only(r, "aten.grid_sampler_2d").flops == flops


def test_grid_sample_3d_and_backward():
    x, grid = torch.randn(1, 2, 3, 3, 3), torch.rand(1, 2, 2, 2, 3) * 2 - 1
    r = count(lambda x, g: F.grid_sample(x, g, align_corners=False), (x, grid))
    # out [1,2,2,2,2] = 16 elements x 8 taps x 2 = 256; 8 locations x 3 coordinates x 4 = 96
    assert _only(r, "aten.grid_sampler_3d").flops == 352
    x, grid = torch.randn(1, 3, 4, 4, requires_grad=True), (torch.rand(1, 5, 6, 2) * 2 - 1).requires_grad_(True)
    r = count(lambda x, g: F.grid_sample(x, g, align_corners=False), (x, grid), backward=True)
    # 240 (coordinates) + grad input 2*4*90 = 720 + grad grid 2*4*2*90 = 1440 -> 2400
    assert _flops(r, "aten.grid_sampler_2d_backward") == 2400


def test_im2col_is_a_copy_and_col2im_adds():
    x = torch.randn(1, 2, 4, 4)
    r = count(lambda x: F.unfold(x, 2), (x,))
    call = _only(r, "aten.im2col")
    # [1,2,4,4] -> [1, 2*2*2, 3*3] = 72 elements: no arithmetic; read 32*4, write 72*4
    assert (call.flops, call.counted, call.bytes_read, call.bytes_written) == (0, True, 128, 288)
    cols = torch.randn(1, 8, 9)
    assert _only(count(lambda c: F.fold(c, (4, 4), 2), (cols,)), "aten.col2im").flops == 72  # 1 add per input


# --------------------------------------------------------------------------------------
# Sorting, selection, unique.
# --------------------------------------------------------------------------------------
def test_sort_argsort_topk():
    x = torch.randn(3, 10)
    # 3 rows x 10 keys x ceil(log2 10) = 4 comparisons -> 120
    assert _only(count(lambda x: torch.sort(x), (x,)), "aten.sort").flops == 120
    assert _only(count(lambda x: torch.argsort(x), (x,)), "aten.sort").flops == 120
    # a selection pass (10) + sorting the 4 found (4 * 2): 3 x 18 = 54
    assert _only(count(lambda x: torch.topk(x, 4), (x,)), "aten.topk").flops == 54
    # integer keys: no floating-point work
    assert count(lambda x: torch.sort(x), (torch.arange(30).reshape(3, 10),)).total.flops == 0


def test_nonzero_and_unique():
    x = torch.tensor([0.0, 1.0, 2.0, 2.0, 0.0, 3.0, 1.0, 5.0, 5.0, 4.0])
    r = count(torch.nonzero, (x,))
    assert _only(r, "aten.nonzero").flops == 0 and r.uncounted == {}
    # sort 10 keys (10 * 4) + compare neighbours (10) = 50
    assert _only(count(torch.unique, (x,)), "aten._unique2").flops == 50
    assert _only(count(torch.unique_consecutive, (x,)), "aten.unique_consecutive").flops == 10
    rows = torch.randn(6, 4)
    # 6 slices of 4 elements sorted lexicographically: 4 * 6 * ceil(log2 6) = 72, + 24 neighbours
    assert _only(count(lambda r: torch.unique(r, dim=0), (rows,)), "aten.unique_dim").flops == 96
    assert count(torch.unique, (torch.tensor([3, 1, 3]),)).total.flops == 0  # integer labels


# --------------------------------------------------------------------------------------
# Indexed writes, gathers, ranges, metadata.
# --------------------------------------------------------------------------------------
def test_indexed_writes_and_gathers():
    idx, v = torch.tensor([0, 2, 4]), torch.randn(3, 4)
    put = count(lambda x: x.index_put_((idx,), v, accumulate=True), (torch.zeros(5, 4),))
    assert _only(put, "aten.index_put_").flops == 12  # 3 rows x 4: one add per element written
    put = count(lambda x: x.index_put_((idx,), v), (torch.zeros(5, 4),))
    assert _only(put, "aten.index_put_").flops == 0  # a plain write
    # a boolean mask: as many elements as the values hold (the backward of x[mask] writes
    # a gradient of the selected shape): mask selects 3 of 5 rows -> [3, 4] = 12 adds
    mask = torch.tensor([True, False, True, False, True])
    x = torch.randn(5, 4, requires_grad=True)
    r = count(lambda x: x[mask], (x,), backward=True)
    assert _flops(r, "aten.index_put") == 12 and r.uncounted == {}
    put = _only(count(lambda x: x.index_put_((mask,), v), (torch.zeros(5, 4),)), "aten.index_put_")
    # in place: writes the 12 selected elements (48 bytes), reads mask 5 + values 48
    assert (put.bytes_read, put.bytes_written) == (53, 48)
    src, index = torch.randn(2, 4), torch.tensor([[0, 1, 2, 0], [1, 2, 0, 1]])
    assert _only(count(lambda s: torch.zeros(3, 4).scatter_add(0, index, s), (src,)), "aten.scatter_add").flops == 8
    # mean: 8 accumulations + 12 divides (one per output element)
    r = count(lambda s: torch.zeros(3, 4).scatter_reduce(0, index, s, "mean"), (src,))
    assert _only(r, "aten.scatter_reduce").flops == 20
    # alpha = 2: a multiply and an add per source element: 2 * 8 = 16
    r = count(lambda s: torch.zeros(3, 4).index_add(0, torch.tensor([0, 2]), s, alpha=2), (src,))
    assert _only(r, "aten.index_add").flops == 16
    assert _only(count(lambda s: torch.gather(s, 1, torch.tensor([[0], [1]])), (src,)), "aten.gather").flops == 0


def test_ranges_and_metadata():
    r = count(lambda: torch.linspace(0, 1, 10))
    assert _only(r, "aten.linspace").flops == 20  # start + i * step: 2 per element
    assert _only(count(lambda: torch.logspace(0, 1, 10)), "aten.logspace").flops == 30
    assert count(lambda: torch.arange(10.0)).total.flops == 0
    x = torch.randn(4, 4)
    r = count(lambda x: x.as_strided_((2, 2), (4, 1)), (x,))
    call = _only(r, "aten.as_strided_")
    # metadata only: no arithmetic, no bytes (its schema marks self as written)
    assert (call.flops, call.bytes_read, call.bytes_written, call.counted) == (0, 0, 0, True)


# --------------------------------------------------------------------------------------
# torchvision's detection ops.
# --------------------------------------------------------------------------------------
def test_nms():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [21, 21, 31, 31], [0, 0, 5, 5.0]])
    r = count(ops.nms, (boxes, torch.rand(5), 0.5))
    # 5 boxes: sort 5 * ceil(log2 5) = 15, areas 3 * 5 = 15, 10 IoUs x 13 = 130 -> 160
    assert _only(r, "torchvision.nms").flops == 160


def test_roi_align_fixed_and_adaptive_sampling():
    x = torch.randn(1, 2, 8, 8)
    rois = torch.tensor([[0, 0, 0, 4, 4], [0, 1, 1, 6, 5.0]])
    r = count(lambda x: ops.roi_align(x, rois, (2, 2), 1.0, sampling_ratio=2), (x,))
    # 2 rois x 2 channels x 2x2 bins = 16 outputs, each 4 samples x 8 + 1 divide = 33 -> 528
    assert _only(r, "torchvision.roi_align").flops == 528
    r = count(lambda x: ops.roi_align(x, rois, (2, 2), 1.0, sampling_ratio=-1), (x,))
    # adaptive: box 1 is 4x4 -> ceil(4/2)^2 = 4 samples; box 2 is 5 wide, 4 high -> 3*2 = 6
    # 2 channels x 4 bins x (8 * (4 + 6) + 2 divides) = 8 * 82 = 656
    assert _only(r, "torchvision.roi_align").flops == 656
    xg = x.clone().requires_grad_(True)
    r = count(lambda x: ops.roi_align(x, rois, (2, 2), 1.0, sampling_ratio=2), (xg,), backward=True)
    assert _flops(r, "torchvision._roi_align_backward") == 528  # spread back through the same samples


def test_roi_pool_ps_roi_align_deform_conv():
    x = torch.randn(1, 2, 8, 8)
    r = count(lambda x: ops.roi_pool(x, torch.tensor([[0, 0, 0, 3, 3.0]]), (2, 2), 1.0), (x,))
    # a 4x4 box in 2x2 bins of 2x2 cells: 16 comparisons per channel, 2 channels -> 32
    assert _only(r, "torchvision.roi_pool").flops == 32
    x8 = torch.randn(1, 8, 8, 8)
    r = count(lambda x: ops.ps_roi_align(x, torch.tensor([[0, 0, 0, 4, 4.0]]), (2, 2), 1.0, sampling_ratio=2), (x8,))
    # [1, 8/(2*2), 2, 2] = 8 outputs x (4 samples x 8 + 1) = 264
    assert _only(r, "torchvision.ps_roi_align").flops == 264
    inp, w = torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3)
    offset, mask = torch.randn(1, 18, 3, 3), torch.rand(1, 9, 3, 3)
    r = count(lambda i: ops.deform_conv2d(i, offset, w, mask=mask), (inp,))
    call = _only(r, "torchvision.deform_conv2d")
    # convolution: 9 positions x 3*2*3*3 = 486 MACs -> 972; sampling: 2 channels x 9 taps x
    # 9 positions = 162 samples x (8 + 1 modulation) = 1458 -> 2430
    assert (call.flops, call.macs, call.unit) == (2430, 486, "matrix")


# --------------------------------------------------------------------------------------
# Recurrent layers on the CPU.
# --------------------------------------------------------------------------------------
def test_lstm_gru_rnn():
    x = torch.randn(2, 5, 8)  # batch 2, 5 steps, 8 inputs; 16 hidden units: 10 rows
    torch.manual_seed(0)
    lstm = nn.LSTM(8, 16, batch_first=True)
    # projections 2 * 10 * (64*8 + 64*16) = 30720; cell 10 * 13 * 16 = 2080 -> 32800
    r = count(lstm, x)
    assert r.total.flops == 32800 and r.uncounted == {}
    with torch.inference_mode():
        assert count(lstm, x).total.flops == 32800
    r = count(lstm, x.clone().requires_grad_(True), backward=True, loss_fn=lambda o: o[0].sum())
    # backward: 2 x 30720 + 2 x 2080 + bias gradients 10 * 64 = 66240
    assert _flops(r, "aten.mkldnn_rnn_layer_backward") == 66240 and r.uncounted == {}
    for cls, gates in ((nn.GRU, 3), (nn.RNN, 1)):
        r = count(cls(8, 16, batch_first=True), x)
        # the projections, counted on the decomposed path: 2 * 10 * (16g*8 + 16g*16)
        matrix = sum(o.flops for o in r.ops if o.unit == "matrix")
        assert matrix == 2 * 10 * (16 * gates * 8 + 16 * gates * 16) and r.uncounted == {}
