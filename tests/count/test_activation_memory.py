"""Activation memory per module: the tensors autograd saves for backward, each storage once."""

import torch
from torch import nn

import torch_roofline
from torch_roofline import RooflineProfiler
from torch_roofline.devices import Device


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))


def test_saved_tensors_charged_to_the_module_that_saved_them():
    r = torch_roofline.count(_mlp(), torch.randn(8, 64), backward=True)
    # Linear 0 saves its input x: 8*64*4 = 2048 B (its weight is a parameter, not an activation)
    # ReLU saves its output: 8*128*4 = 4096 B; Linear 2 saves that same tensor (counted once)
    # and a view of its weight (a parameter again)
    assert r.activation_bytes == {"": 2048 + 4096, "0": 2048, "1": 4096}


def test_no_grad_saves_nothing():
    with torch.no_grad():
        r = torch_roofline.count(_mlp(), torch.randn(8, 64))
    assert r.activation_bytes == {}


def test_profiler_report_carries_activation_bytes():
    model = _mlp()
    flat = Device(name="flat-activation-test", peak_flops={"fp32": 1e11}, bandwidth=1e10)
    with RooflineProfiler(model, roof=flat) as prof:
        model(torch.randn(8, 64)).sum().backward()
    report = prof.report()
    assert report.module("1", "forward").activation_bytes == 4096
    assert report.module("", "forward").activation_bytes == 6144
