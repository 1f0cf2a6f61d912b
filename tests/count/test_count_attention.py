"""Fused attention, which FlopCounterMode and fvcore count as zero, against analytic counts.

* ``nn.MultiheadAttention`` in eval mode under no_grad (batch_first, need_weights=False)
  runs the single fused op ``aten._native_multi_head_attention``; in train mode it
  decomposes into ``mm``/``addmm``, a bias ``add`` and CPU flash attention. The matrix
  FLOPs of both modes equal the derivation below; only the elementwise parts differ.
* ``F.scaled_dot_product_attention`` on CPU float32 runs
  ``aten._scaled_dot_product_flash_attention_for_cpu`` (and its backward): FlopCounterMode
  counts it as zero, but counts the same computation through the math path
  (``aten._scaled_dot_product_attention_math``, which decomposes into ``bmm``): an
  independent oracle for the forward, and for the backward up to the recomputation of
  QK^T that the flash backward does.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from torch_roofline.count import count

B, S, E, H, FF = 2, 5, 16, 2, 32  # batch, sequence, width, heads, MLP width


class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(E, H, batch_first=True)
        self.fc1 = nn.Linear(E, FF)
        self.fc2 = nn.Linear(FF, E)

    def forward(self, x):
        x = x + self.attn(x, x, x, need_weights=False)[0]
        return x + self.fc2(torch.relu(self.fc1(x)))


# Matrix FLOPs, bias adds not counted:
#   in-projection q, k, v   3 x 2*B*S*E*E = 3 * 2*2*5*16*16 = 15360
#   QK^T and PV (all heads) 2 x 2*B*S*S*E = 2 * 2*2*5*5*16  = 3200
#   out-projection              2*B*S*E*E =                   5120
#   fc1 and fc2             2 x 2*B*S*E*FF = 2 * 2*2*5*16*32 = 20480
ATTENTION_MATRIX = 15360 + 3200 + 5120  # 23680
BLOCK_MATRIX = ATTENTION_MATRIX + 20480  # 44160


def _matrix(result):
    return sum(o.flops for o in result.ops if o.unit == "matrix")


def _vector(result):
    return sum(o.flops for o in result.ops if o.unit == "vector")


@pytest.fixture(scope="module")
def block():
    torch.manual_seed(0)
    return _Block(), torch.randn(B, S, E)


def test_mha_eval_runs_the_fused_op_and_counts_it(block):
    model, x = block
    model.eval()
    with torch.no_grad():
        r = count(model, x)
        fcm = FlopCounterMode(display=False)
        with fcm:
            model(x)
    mha = r.by_op()["aten._native_multi_head_attention"]
    assert mha.calls == 1 and mha.flops == ATTENTION_MATRIX and mha.macs == ATTENTION_MATRIX // 2
    assert r.by_module()["attn"].flops == ATTENTION_MATRIX
    assert _matrix(r) == BLOCK_MATRIX
    # FlopCounterMode sees only fc1 and fc2: 20480
    assert fcm.get_total_flops() == 20480
    # vector work: 2 residual adds 2*B*S*E = 320, relu B*S*FF = 320 -> 640
    assert _vector(r) == 640
    assert r.uncounted == {}


def test_mha_train_decomposes_with_the_same_matrix_flops(block):
    model, x = block
    model.train()  # dropout 0.0: no dropout op, only the fast path is left
    r = count(model, x)
    by_op = r.by_op()
    assert "aten._native_multi_head_attention" not in by_op
    # the decomposed attention: flash attention for the QK^T and PV part
    assert by_op["aten._scaled_dot_product_flash_attention_for_cpu"].flops == 3200
    assert _matrix(r) == BLOCK_MATRIX
    # vector work: as in eval (640) plus the in-projection's separate bias add 3*B*S*E = 480
    assert _vector(r) == 640 + 480
    assert r.uncounted == {}


def test_cpu_flash_attention_forward_and_backward():
    b, h, s, d = 2, 4, 16, 8
    torch.manual_seed(0)
    q, k, v = (torch.randn(b, h, s, d, requires_grad=True) for _ in range(3))

    r = count(F.scaled_dot_product_attention, (q, k, v), backward=True, loss_fn=lambda out: out.sum())
    fwd = r.by_op(phase="forward")["aten._scaled_dot_product_flash_attention_for_cpu"]
    bwd = r.by_op(phase="backward")["aten._scaled_dot_product_flash_attention_for_cpu_backward"]
    # forward QK^T + PV: 2 x 2*b*h*s*s*d = 4*2*4*16*16*8 = 65536
    assert fwd.flops == 65536
    # backward: recompute QK^T, dV = P^T dO, dP = dO V^T, dQ = dS K, dK = dS^T Q:
    # 5 x 2*b*h*s*s*d = 5 * 32768 = 163840
    assert bwd.flops == 163840

    fcm = FlopCounterMode(display=False)
    with fcm:
        F.scaled_dot_product_attention(q, k, v)
    assert fcm.get_total_flops() == 0  # the op FlopCounterMode misses

    fcm = FlopCounterMode(display=False)
    with fcm:
        out = torch.ops.aten._scaled_dot_product_attention_math(q, k, v)[0]
    assert fcm.get_total_flops() == fwd.flops  # same forward via math-path bmm
    fcm = FlopCounterMode(display=False)
    with fcm:
        out.sum().backward()
    math_backward = fcm.get_total_flops()  # 4 bmm grads: 2 x forward = 131072
    assert math_backward == 131072
    assert bwd.flops == math_backward + 2 * b * h * s * s * d  # + the QK^T recompute 32768
