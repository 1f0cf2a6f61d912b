"""The oneDNN / MKL ops a frozen torch.compile model runs on the CPU
(``torch._inductor.config.freezing = True``): their FLOPs by hand from the shapes, and a
frozen model's step counted from its trace against FlopCounterMode around the eager model.

Hand derivation of a convolution: MACs = N x prod(out spatial) x prod(W), W = [C_out,
C_in/groups, kh, kw]; out = (in + 2 pad - dil (k - 1) - 1) // stride + 1; FLOPs = 2 x MACs,
plus the fused post-op's 1 FLOP per output element (2 for an add with alpha != 1).
"""

from __future__ import annotations

import importlib
import os
import shutil
import warnings

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from torch_roofline.count.formulas import evaluate, lookup
from torch_roofline.timing.compiled import is_fused_kernel

S = torch.Size


def _flops(op, *args, out=None):
    entry = lookup(op)
    assert entry is not None, op
    return evaluate(entry, args, {}, out)


def test_convolution_pointwise_is_the_convolution_plus_its_post_op():
    x, w, b = S([2, 3, 32, 32]), S([8, 3, 3, 3]), S([8])
    macs = 2 * 32 * 32 * (8 * 3 * 3 * 3)  # padding 1: 32 x 32 outputs
    outputs = 2 * 8 * 32 * 32
    mk = torch.ops.mkldnn
    plain = _flops(mk._convolution_pointwise.default, x, w, b, [1, 1], [1, 1], [1, 1], 1, "none", [], "")
    assert (plain.flops, plain.macs, plain.unit) == (2 * macs, macs, "matrix")
    relu = _flops(mk._convolution_pointwise.default, x, w, b, [1, 1], [1, 1], [1, 1], 1, "relu", [None], "")
    assert relu.flops == 2 * macs + outputs
    # stride 2, no padding: (32 - 2 - 1) // 2 + 1 = 15
    strided = _flops(mk._convolution_pointwise.default, x, w, None, [0, 0], [2, 2], [1, 1], 1, "none", [], "")
    assert strided.macs == 2 * 15 * 15 * (8 * 27)
    # binary: a residual add (then ReLU), and an add scaled by alpha = 2 (a multiply more)
    other = S([2, 8, 32, 32])
    add_relu = _flops(mk._convolution_pointwise.binary, x, other, w, b, [1, 1], [1, 1], [1, 1], 1, "add", None,
                      "relu", [], None)
    assert add_relu.flops == 2 * macs + 2 * outputs
    scaled = _flops(mk._convolution_pointwise_.binary, other, x, w, b, [1, 1], [1, 1], [1, 1], 1, "add", 2.0, None,
                    [], None)
    assert scaled.flops == 2 * macs + 2 * outputs
    # an unknown post-op: no honest count, the formula declines
    assert _flops(mk._convolution_pointwise.default, x, w, b, [1, 1], [1, 1], [1, 1], 1, "softsign", [], "") is None


def test_mkl_linear_and_inductor_s_low_memory_max_pool():
    mkl = _flops(torch.ops.mkl._mkl_linear.default, S([4, 5, 1800]), S([2442273, 1]), S([10, 1800]), None, 20)
    assert (mkl.flops, mkl.macs) == (2 * 20 * 1800 * 10, 20 * 1800 * 10)  # bias add not counted, as addmm's
    importlib.import_module("torch._inductor.inductor_prims")  # registers the prims
    pool = _flops(torch.ops.prims._low_memory_max_pool_with_offsets.default, S([2, 8, 14, 14]), [2, 2], [2, 2],
                  [0, 0], [1, 1], False, out=(torch.empty(2, 8, 7, 7), torch.empty(2, 8, 7, 7, dtype=torch.int8)))
    assert pool.flops == 2 * 8 * 7 * 7 * 4  # one compare per window element per output, as max_pool2d's


class _Net(nn.Module):
    """conv+BN+ReLU, a residual conv+add+ReLU, a strided conv, max pool, a Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1, self.relu = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()
        self.conv2, self.conv3 = nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 3, stride=2)
        self.pool, self.fc = nn.MaxPool2d(2), nn.Linear(8 * 7 * 7, 10)

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.conv2(y) + y)
        return self.fc(self.pool(self.conv3(y)).flatten(1))


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                    reason="torch.compile's CPU backend needs a C++ compiler")
def test_a_frozen_compiled_model_s_onednn_ops_are_counted(tmp_path):
    import torch._dynamo
    import torch._inductor.config as inductor_config

    from torch_roofline import RooflineProfiler
    from torch_roofline.devices import Device

    torch._dynamo.reset()
    torch.manual_seed(0)
    model, x = _Net().eval(), torch.randn(2, 3, 32, 32)
    with FlopCounterMode(display=False) as eager:
        model(x)
    run = torch.compile(model)
    with warnings.catch_warnings(), inductor_config.patch({"freezing": True, "cpp.enable_kernel_profile": True,
                                                                   "trace.provenance_tracking_level": 1}), torch.no_grad():
        warnings.simplefilter("ignore")
        run(x)  # compiles outside the profiler
        trace = str(tmp_path / "frozen.json")
        prof = RooflineProfiler(run, roof=Device(name="flat", peak_flops={"fp32": 1e12}, bandwidth=1e11),
                                export_trace=trace)
        with prof:
            run(x)
    report = prof.report()
    onednn = [o for o in report.ops if o.op in ("mkldnn._convolution_pointwise", "mkl._mkl_linear")]
    assert {o.op for o in onednn} == {"mkldnn._convolution_pointwise", "mkl._mkl_linear"}
    assert all(o.counted for o in onednn)
    # The matrix work equals FlopCounterMode's around the eager model (convolutions + linear;
    # the batch norm is folded into conv1's weights by freezing).
    assert sum(2 * o.macs for o in onednn) == eager.get_total_flops()
    # The post-ops, which the trace does not record (strings), read from the compiled graph's code:
    # conv1's ReLU, conv2's residual add and ReLU, 1 FLOP each per output element [2, 8, 32, 32].
    outputs = 2 * 8 * 32 * 32
    convs = sum(o.flops - 2 * o.macs for o in onednn if o.op == "mkldnn._convolution_pointwise")
    assert convs == 3 * outputs
    assert not any("torch.profiler records no strings" in n for n in report.notes), report.notes
    assert report.module("conv3", "forward").flops == 2 * 2 * 8 * 15 * 15 * (8 * 3 * 3)  # no post-op
    assert not any(o.op.startswith(("mkldnn.", "mkl.")) and not o.counted for o in report.ops)
    # MKL's linear reads its input and its weight once (the weight's own bytes, not the padded
    # buffer MKL packed it into) and writes its output (fp32): [2, 392] x [10, 392] -> [2, 10]
    mkl = next(o for o in onednn if o.op == "mkl._mkl_linear")
    assert (mkl.bytes_read, mkl.bytes_written) == (4 * (2 * 392 + 10 * 392), 4 * 2 * 10)
    # The max pool's kernel: its provenance also lists the MKL linear after it (which lists the
    # pool too), and so does that linear's bias-add kernel. The pool counts once, in the first
    # kernel listing it (the one computing it): one compare per window element per output.
    kernels = [o for o in report.ops if is_fused_kernel(o.op)]
    assert [o.flops for o in kernels if o.flops].count(2 * 8 * 7 * 7 * 4) == 1

    # The exported trace has the compiled graphs beside it: read in a process that compiled
    # nothing, the same FLOPs (the oneDNN ops from the recorded shapes; the kernels, Inductor's
    # max pool prim included, from the saved graph), every row counted.
    from torch_roofline.timing.inductor import SIDECAR_SUFFIX

    assert os.path.exists(trace + SIDECAR_SUFFIX)
    from _fresh import from_trace_elsewhere

    rows, _ = from_trace_elsewhere(trace)
    assert all(r["counted"] for r in rows), rows
    assert sorted(r["flops"] for r in rows) == sorted(o.flops for o in report.ops)
    # Without the graphs beside it, the post-ops are unknown: the replay counts conv2's add alone
    # (its stand-in), leaves the ReLUs out, and says so.
    bare = str(tmp_path / "bare.json")
    shutil.copy(trace, bare)
    rows, notes = from_trace_elsewhere(bare)
    conv_rows = [r for r in rows if r["op"] == "mkldnn._convolution_pointwise"]
    assert sum(r["flops"] for r in conv_rows) == sum(2 * o.macs for o in onednn if o.op != "mkl._mkl_linear") + outputs
    assert any("torch.profiler records no strings" in n for n in notes), notes
