"""Decompose before giving up (issue 13, item 1): an op without a formula of its own is
counted through the ops it is made of; only what cannot be decomposed stays uncounted.

Oracles: torch's FlopCounterMode (which decomposes the same way) and PyTorch's own
``test_flop_counter.py`` expectations for resnet18 (forward, batch 1, 224x224:
3,628,146,688 FLOPs, the same under ``torch.inference_mode()`` as without it), and hand
counts of small decompositions.
"""

import dataclasses

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from torch_roofline import count, predict
from torch_roofline.timing import attribute, load_trace
from torch_roofline.timing.shapes import costs_from_shapes

# PyTorch's test_flop_counter.py::test_module / test_inference_mode: resnet18 forward, batch 1
RESNET18_MATRIX_FLOPS = 3_628_146_688


def _matrix(result):
    return sum(o.flops for o in result.ops if o.unit == "matrix")


def _totals(result):
    t = result.total
    return t.flops, t.macs, t.bytes_read, t.bytes_written


@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(0)
    return torchvision.models.resnet18().eval(), torch.randn(1, 3, 224, 224)


def test_inference_mode_counts_what_no_grad_counts(resnet18):
    model, x = resnet18
    with torch.no_grad():
        standard = count(model, x)
    with torch.inference_mode():
        inference = count(model, x)
    assert inference.uncounted == {} and standard.uncounted == {}
    assert _totals(inference) == _totals(standard)
    # both memory models (each op record carries both)
    compulsory = [dataclasses.replace(r, memory_model="compulsory") for r in (inference, standard)]
    assert _totals(compulsory[0]) == _totals(compulsory[1])
    assert inference.by_module()["layer1"] == standard.by_module()["layer1"]
    assert _matrix(inference) == _matrix(standard) == RESNET18_MATRIX_FLOPS
    # each composite op keeps its own row: conv2d, not the convolution it ran as
    by_op = inference.by_op()
    assert by_op["aten.conv2d"].calls == 20 and "aten.convolution" not in by_op
    assert by_op["aten.conv2d"].flops == standard.by_op()["aten.convolution"].flops


def test_flop_counter_mode_agrees_under_inference_mode(resnet18):
    model, x = resnet18
    fcm = FlopCounterMode(display=False)
    with torch.inference_mode(), fcm:
        model(x)
    assert fcm.get_total_flops() == RESNET18_MATRIX_FLOPS


def test_inference_mode_on_meta_and_fake_tensors():
    from torch._subclasses.fake_tensor import FakeTensorMode

    def net():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
                             nn.Linear(8 * 8 * 8, 10)).eval()

    # conv 2*1*8*8*8*3*3*3 = 27648; linear 2*512*10 = 10240
    matrix = 27648 + 10240
    with torch.device("meta"):
        meta_net, meta_x = net(), torch.empty(1, 3, 8, 8)
    with torch.no_grad():
        standard = count(meta_net, meta_x)
    with torch.inference_mode():
        inference = count(meta_net, meta_x)
    assert _totals(inference) == _totals(standard) and _matrix(inference) == matrix
    with FakeTensorMode():
        fake_net, fake_x = net(), torch.empty(1, 3, 8, 8)
        with torch.no_grad():
            fake_standard = count(fake_net, fake_x)
        with torch.inference_mode():
            fake = count(fake_net, fake_x)
    assert fake.uncounted == {} and _totals(fake) == _totals(fake_standard)
    assert fake.total.flops == standard.total.flops and _matrix(fake) == matrix


def test_table_decomposition_counts_flops_and_keeps_the_ops_own_bytes():
    x = torch.randn(4, 6)
    r = count(F.glu, (x,))
    (op,) = r.ops
    # glu(x) = a * sigmoid(b), halves of x: [4, 3] output; sigmoid 12 + multiply 12 = 24
    assert (op.op, op.flops, op.counted) == ("aten.glu", 24, True)
    # the fused kernel's bytes: read x 4*6*4 = 96, write 4*3*4 = 48 (not its parts')
    assert (op.bytes_read, op.bytes_written) == (96, 48)


def test_a_formula_that_declines_or_raises_falls_back_to_the_decomposition():
    x = torch.randn(4, 6)

    def raises(*args, **kwargs):
        raise ValueError("unexpected signature")

    for formula in (lambda *a, **k: None, raises):
        r = count(F.glu, (x,), formulas={torch.ops.aten.glu: formula})
        assert r.total.flops == 24 and r.uncounted == {}


_LIB = torch.library.Library("roofline_test", "DEF")
_LIB.define("mystery(Tensor x) -> Tensor")
_LIB.define("outer(Tensor x) -> Tensor")
_LIB.impl("mystery", lambda x: x * 3, "CPU")
_LIB.impl("mystery", lambda x: torch.empty_like(x), "Meta")
_LIB.impl("outer", lambda x: torch.ops.roofline_test.mystery(x) + 1, "CompositeImplicitAutograd")


def test_what_cannot_be_decomposed_is_uncounted_with_the_reason():
    x = torch.randn(4, 6)
    r = count(torch.ops.roofline_test.mystery, (x,))
    assert r.uncounted == {"roofline_test.mystery": 1}
    assert "no formula and no decomposition" in r.uncounted_reasons["roofline_test.mystery"]
    assert r.ops[0].bytes_read == 96  # still moves its bytes
    assert "roofline_test.mystery: roofline_test.mystery has no formula" in r.table()
    # a composite op whose part has no formula: the op's row is uncounted and says which part
    with torch.inference_mode():
        r = count(torch.ops.roofline_test.outer, (x,))
    assert r.uncounted == {"roofline_test.outer": 1}
    assert "roofline_test.mystery" in r.uncounted_reasons["roofline_test.outer"]

    class Mystery(nn.Module):
        def forward(self, x):
            return torch.ops.roofline_test.mystery(x)

    report = predict(Mystery(), torch.empty(4, 6, device="meta"), on="h100-sxm")["h100-sxm"]
    assert any(n.startswith("roofline_test.mystery is uncounted: ") for n in report.notes)


def test_recorded_shapes_rows_are_decomposed_too(tmp_path):
    x = torch.randn(4, 6)

    def step():
        return F.glu(x)

    step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as prof:
        step()
    path = str(tmp_path / "trace.json")
    prof.export_chrome_trace(path)
    trace = load_trace(path)
    (row,) = [c for c in costs_from_shapes(trace, attribute(trace)) if c.op == "aten.glu"]
    assert row.flops == 24 and row.counted  # sigmoid 12 + multiply 12, from the meta decomposition
