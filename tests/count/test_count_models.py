"""torchvision models against two independent counters: fvcore and torch's FlopCounterMode.

* every Conv2d and Linear module: our forward MACs == fvcore's count for that module
  (fvcore's "flops" are MACs), and our FLOPs == 2 x MACs, exactly;
* every op FlopCounterMode counts: our FLOPs for that op == its count, exactly.

vit_b_16 runs ``nn.MultiheadAttention``. In eval mode under no_grad it takes the fused
``aten._native_multi_head_attention`` path, which FlopCounterMode counts as zero (it only
sees the MLP's and the head's ``addmm``); we compare the ops it does count, and check the
fused op against an analytic derivation. In train mode (dropout is 0 in vit_b_16) the
attention decomposes into ``mm``/``addmm`` plus CPU flash attention (also zero for
FlopCounterMode): the matrix FLOPs of both modes must agree. The fused path never calls
``out_proj`` as a module (it reads its weights), so neither fvcore nor we attribute
anything to it.

Each model is counted once per test module (module-scoped fixtures), batch 1, random weights.
"""

import functools
import warnings

import pytest
import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from torch_roofline.count import count

fvcore_nn = pytest.importorskip("fvcore.nn")

MODELS = ["resnet50", "mobilenet_v2", "vit_b_16", "efficientnet_b0"]


def _flop_counter_mode(model, x):
    fcm = FlopCounterMode(display=False)
    with fcm:
        model(x)
    return {f"aten.{packet.__name__}": n for packet, n in fcm.get_flop_counts()["Global"].items()}


def _fvcore_by_module(model, x):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        analysis = fvcore_nn.FlopCountAnalysis(model, (x,))
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        return analysis.by_module()


@functools.lru_cache(maxsize=None)
def _counted(name):
    """(model, ours, FlopCounterMode's counts, fvcore's by_module) in eval mode under no_grad."""
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)().eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        ours = count(model, x)
        fcm = _flop_counter_mode(model, x)
    fv = _fvcore_by_module(model, x)
    return model, ours, fcm, fv


@pytest.fixture(scope="module", params=MODELS)
def counted(request):
    return (request.param,) + _counted(request.param)


def test_conv_and_linear_modules_match_fvcore(counted):
    name, model, ours, _, fv = counted
    inclusive = ours.by_module(phase="forward")
    checked = 0
    for mod_name, mod in model.named_modules():
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            got = inclusive[mod_name]
            assert got.macs == fv[mod_name], (name, mod_name)
            assert got.flops == 2 * got.macs, (name, mod_name)
            checked += 1
    assert checked > 10


def test_every_op_flop_counter_mode_counts_matches(counted):
    name, _, ours, fcm, _ = counted
    by_op = ours.by_op()
    assert fcm, "FlopCounterMode counted nothing"
    for op, flops in fcm.items():
        assert by_op[op].flops == flops, (name, op)
    # matrix ops we count that FlopCounterMode does not: only the fused attention
    ours_matrix = {o.op for o in ours.ops if o.unit == "matrix" and o.flops}
    expected_extra = {"aten._native_multi_head_attention"} if name == "vit_b_16" else set()
    assert ours_matrix - set(fcm) == expected_extra
    assert ours.uncounted == {}


def test_vit_fused_attention_is_the_analytic_count():
    _, ours, fcm, _ = _counted("vit_b_16")
    layers, s, e = 12, 197, 768  # 196 patches + class token, width 768
    # per layer: q, k, v and out projections 4 x 2*s*e*e; QK^T and PV 2 x 2*s*s*e (all heads)
    # 8*197*768*768 + 4*197*197*768 = 929562624 + 119221248 = 1048783872
    per_layer = 8 * s * e * e + 4 * s * s * e
    assert per_layer == 1048783872
    mha = ours.by_op()["aten._native_multi_head_attention"]
    assert mha.calls == layers and mha.flops == layers * per_layer
    matrix = sum(o.flops for o in ours.ops if o.unit == "matrix")
    assert matrix == sum(fcm.values()) + layers * per_layer


def test_vit_train_mode_decomposes_and_agrees():
    model, eval_ours, _, _ = _counted("vit_b_16")
    model.train()  # dropout is 0 in vit_b_16: train mode differs only by leaving the fast path
    try:
        x = torch.randn(1, 3, 224, 224)
        ours = count(model, x)
        fcm = _flop_counter_mode(model, x)
    finally:
        model.eval()
    by_op = ours.by_op()
    assert "aten._native_multi_head_attention" not in by_op
    for op, flops in fcm.items():
        assert by_op[op].flops == flops, op
    layers, s, e, h = 12, 197, 768, 12
    # CPU flash attention, which FlopCounterMode counts as 0: 2 x 2*h*s*s*(e/h) per layer
    # 12 * 4*12*197*197*64 = 12 * 119221248 = 1430654976
    attn = by_op["aten._scaled_dot_product_flash_attention_for_cpu"]
    assert attn.flops == 1430654976
    matrix = sum(o.flops for o in ours.ops if o.unit == "matrix")
    eval_matrix = sum(o.flops for o in eval_ours.ops if o.unit == "matrix")
    assert matrix == eval_matrix == sum(fcm.values()) + attn.flops
