"""EfficientNet-B0's training step (forward + backward) against a hand derivation (issue 13).

The derivation reads only the module tree and the activation shapes (forward hooks); it does
not call the counter's formulas. Per layer type, with the conventions of formulas.py:

* Conv2d, forward: 2 * N * C_out * H_out * W_out * (C_in / groups) * kh * kw (bias add not
  counted); backward: grad weight the same, grad input the same again unless the input
  needs no gradient (the stem's image). Per group: the depthwise convolutions' backward is
  2 x their forward, not 2 x 32 x (torch's formula).
* Linear [N, i] -> [N, o]: forward 2*N*i*o; backward grad input and grad weight 2*N*i*o
  each, grad bias a sum over the batch (N*o).
* BatchNorm2d (train): 7 per element forward (statistics 3, normalise 2, affine 2), 10 backward.
* SiLU: 1 per element forward, 1 backward. Sigmoid: 1 forward, 3 backward (g*y*(1-y)).
* AdaptiveAvgPool2d: 1 per input element forward and backward.
* Squeeze-excitation ``scale * x``: 1 per element forward; backward grad x (1), grad scale
  (a multiply and a sum over H*W: 2), and autograd's sum of x's two gradients (the pool's
  and the multiply's: 1).
* Residual ``result += input``: 1 per element forward, and 1 in backward to add the two
  gradients of ``input``.
* Stochastic depth (train, per row): noise / survival on [N, 1, 1, 1] (N), ``x * noise``
  (1 per element); backward ``grad * noise`` (1).
* Dropout(inplace=True) (train): noise / (1 - p) and ``x *= noise``: 2 per element;
  backward ``grad * noise``: 1.
* The loss ``out.sum()``: 1 per element.
"""

import math

import pytest
import torch
import torchvision
from torch import nn
from torchvision.ops.misc import SqueezeExcitation
from torchvision.ops.stochastic_depth import StochasticDepth

from torch_roofline import count

BATCH = 2


def _hand_derived(model, x):
    """(forward FLOPs, backward FLOPs) of a training step with loss = out.sum()."""
    fwd, bwd = [0], [0]
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))

    def hook(mod, args, out):
        inp = args[0]
        n_in, n_out = inp.numel(), out.numel()
        if isinstance(mod, nn.Conv2d):
            macs = out.shape[0] * out.shape[1] * out.shape[2] * out.shape[3] * math.prod(mod.weight.shape[1:])
            fwd[0] += 2 * macs
            bwd[0] += 2 * macs * (1 if mod is first_conv else 2)
        elif isinstance(mod, nn.Linear):
            fwd[0] += 2 * inp.shape[0] * mod.in_features * mod.out_features
            bwd[0] += 2 * 2 * inp.shape[0] * mod.in_features * mod.out_features + n_out
        elif isinstance(mod, nn.BatchNorm2d):
            fwd[0] += 7 * n_out
            bwd[0] += 10 * n_out
        elif isinstance(mod, nn.SiLU):
            fwd[0] += n_out
            bwd[0] += n_out
        elif isinstance(mod, nn.Sigmoid):
            fwd[0] += n_out
            bwd[0] += 3 * n_out
        elif isinstance(mod, nn.AdaptiveAvgPool2d):
            fwd[0] += n_in
            bwd[0] += n_in
        elif isinstance(mod, SqueezeExcitation):
            fwd[0] += n_out
            bwd[0] += 3 * n_out + n_in
        elif isinstance(mod, StochasticDepth) and mod.p > 0:
            fwd[0] += inp.shape[0] + n_out
            bwd[0] += n_out
        elif isinstance(mod, torchvision.models.efficientnet.MBConv) and mod.use_res_connect:
            fwd[0] += n_out
            bwd[0] += n_in
        elif isinstance(mod, nn.Dropout):
            fwd[0] += 2 * n_out
            bwd[0] += n_out

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        out = model(x)
    finally:
        for h in handles:
            h.remove()
    fwd[0] += out.numel()  # the loss: out.sum()
    return fwd[0], bwd[0]


@pytest.fixture(scope="module")
def efficientnet_b0():
    torch.manual_seed(0)
    with torch.device("meta"):
        model = torchvision.models.efficientnet_b0().train()
        x = torch.empty(BATCH, 3, 224, 224)
    return model, x


def test_training_step_equals_the_hand_derivation(efficientnet_b0):
    model, x = efficientnet_b0
    fwd, bwd = _hand_derived(model, x)
    r = count(model, x, backward=True, loss_fn=lambda out: out.sum())
    assert r.uncounted == {}
    ours_fwd = r.by_module("forward")[""].flops
    ours_bwd = r.by_module("backward")[""].flops
    assert ours_fwd == pytest.approx(fwd, rel=0.005)
    assert ours_bwd == pytest.approx(bwd, rel=0.005)
    assert r.total.flops == pytest.approx(fwd + bwd, rel=0.005)


def test_convolution_backward_is_twice_the_forward_not_thirty_times(efficientnet_b0):
    model, x = efficientnet_b0
    r = count(model, x, backward=True, loss_fn=lambda out: out.sum())
    conv_fwd = r.by_op(phase="forward")["aten.convolution"].flops
    conv_bwd = r.by_op(phase="backward")["aten.convolution_backward"].flops
    stem = model.features[0][0]
    # 2 x the forward, less the stem's grad input (its input is the image):
    # stem MACs = 2 * 32 * 112 * 112 * 3 * 3 * 3 = 21676032
    stem_macs = BATCH * 32 * 112 * 112 * 3 * 3 * 3
    assert stem.weight.shape == (32, 3, 3, 3) and stem_macs == 21676032
    assert conv_bwd == 2 * conv_fwd - 2 * stem_macs
