"""Hand-computed FLOPs and bytes of single ops, each with its arithmetic in a comment.

Conventions under test (torch_roofline/count/formulas.py and traffic.py): 2 FLOPs per
multiply-accumulate, bias adds not counted in matrix ops; elementwise 1 per output element;
bytes: every op reads the storage its inputs really address and writes its outputs.
float32 throughout: 4 bytes per element; int64 indices: 8 bytes.
"""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import sdpa_flop_count

from torch_roofline.count import count


def _only(result, op):
    """The single call of ``op`` in the result (asserting there is exactly one)."""
    calls = [o for o in result.ops if o.op == op]
    assert len(calls) == 1, [o.op for o in result.ops]
    return calls[0]


def test_conv_stride_padding_dilation_groups():
    conv = nn.Conv2d(4, 8, 3, stride=2, padding=1, dilation=2, groups=2)
    x = torch.randn(1, 4, 9, 9)
    r = count(conv, x)
    # effective kernel 2*(3-1)+1 = 5; out = (9 + 2*1 - 5)//2 + 1 = 4 -> [1, 8, 4, 4]
    assert conv(x).shape == (1, 8, 4, 4)
    op = _only(r, "aten.convolution")
    # MACs = N*Cout*Hout*Wout*(Cin/groups)*kh*kw = 1*8*4*4*2*3*3 = 2304; bias not counted
    assert (op.macs, op.flops) == (2304, 4608)
    assert op.unit == "matrix"
    # read x 4*9*9*4 = 1296 + weight 8*2*3*3*4 = 576 + bias 8*4 = 32 -> 1904; write 8*4*4*4 = 512
    assert (op.bytes_read, op.bytes_written) == (1904, 512)
    assert r.total.flops == 4608


def test_linear_with_bias_does_not_count_the_bias():
    x = torch.randn(8, 64)
    r = count(nn.Linear(64, 32), x)
    # 2*8*64*32 = 32768; the bias add (8*32 = 256 adds) is not counted, as torch and fvcore
    assert r.total.flops == 32768 and r.total.macs == 16384
    assert count(nn.Linear(64, 32, bias=False), x).total.flops == 32768
    op = _only(r, "aten.addmm")
    # read x 8*64*4 = 2048 + W 32*64*4 = 8192 + b 32*4 = 128 -> 10368; write 8*32*4 = 1024
    assert (op.bytes_read, op.bytes_written) == (10368, 1024)


def test_bmm():
    a, b = torch.randn(3, 4, 5), torch.randn(3, 5, 6)
    r = count(torch.bmm, (a, b))
    op = _only(r, "aten.bmm")
    # [3,4,5] @ [3,5,6]: 2*3*4*5*6 = 720
    assert (op.flops, op.macs) == (720, 360)
    # read (60 + 90)*4 = 600, write 3*4*6*4 = 288
    assert (op.bytes_read, op.bytes_written) == (600, 288)


@pytest.mark.parametrize("causal", [False, True])
def test_sdpa_counts_the_attended_pairs(causal):
    q, k, v = (torch.randn(1, 2, 8, 4) for _ in range(3))
    r = count(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=causal), (q, k, v))
    op = _only(r, "aten._scaled_dot_product_flash_attention_for_cpu")
    if causal:
        # The fused kernel computes the lower triangle with its diagonal: 8*9/2 = 36 pairs per
        # head; QK^T and PV 2*b*h*pairs*d each = 2*1*2*36*4 = 576 -> 1152 = 2*b*h*d*T(T+1).
        # torch's formula counts the full square (2048) for a causal mask too: the
        # arithmetic wins (formulas.py, _attention_formulas.py).
        assert op.flops == 1152 == 2 * 1 * 2 * 4 * 8 * 9
        assert sdpa_flop_count(q.shape, k.shape, v.shape) == 2048
    else:
        # QK^T 2*b*h*s*s*d = 2*1*2*8*8*4 = 1024, PV the same: 2048
        assert op.flops == 2048
        assert op.flops == sdpa_flop_count(q.shape, k.shape, v.shape)  # torch's own formula
    # read q, k, v 3*64*4 = 768; write out 64*4 = 256 + logsumexp [1,2,8] 16*4 = 64
    assert (op.bytes_read, op.bytes_written) == (768, 320)


def test_add_broadcast_counts_real_storage():
    a = torch.randn(4, 1, 8)
    b = torch.randn(8).expand(3, 8)  # logical 24 elements, storage 8
    r = count(torch.add, (a, b))
    op = _only(r, "aten.add")
    # out [4,3,8] = 96 elements: 96 FLOPs
    assert op.flops == 96
    # read a 32*4 = 128 + b's real storage 8*4 = 32 -> 160 (not 24*4); write 96*4 = 384
    assert (op.bytes_read, op.bytes_written) == (160, 384)


def test_transpose_is_free_contiguous_copies():
    x = torch.randn(16, 8)
    r = count(lambda x: x.t().contiguous(), (x,))
    t = _only(r, "aten.t")
    assert (t.flops, t.bytes_read, t.bytes_written) == (0, 0, 0)
    copy_op = _only(r, "aten.clone")
    # 16*8 = 128 elements: read 128*4 = 512, write 512, no arithmetic
    assert (copy_op.flops, copy_op.bytes_read, copy_op.bytes_written) == (0, 512, 512)
    assert copy_op.counted and r.uncounted == {}
    assert (r.total.bytes_read, r.total.bytes_written) == (512, 512)


def test_inplace_relu_reads_once_writes_once():
    x = torch.randn(16, 8)
    r = count(nn.ReLU(inplace=True), x)
    op = _only(r, "aten.relu_")
    # 128 elements: 128 FLOPs, read 512, write 512
    assert (op.flops, op.bytes_read, op.bytes_written) == (128, 512, 512)
    # compulsory: the input storage is read once and written once too
    assert (op.compulsory_bytes_read, op.compulsory_bytes_written) == (512, 512)


def test_layer_norm():
    r = count(nn.LayerNorm(8), torch.randn(4, 8))
    op = _only(r, "aten.native_layer_norm")
    # 4*8 = 32 elements x (statistics 3 + normalise 2 + affine 2) = 224
    assert op.flops == 224
    # read x 128 + weight 32 + bias 32 = 192; write y 128 + mean 4*4 + rstd 4*4 = 160
    assert (op.bytes_read, op.bytes_written) == (192, 160)


def test_softmax():
    r = count(lambda x: x.softmax(-1), (torch.randn(4, 8),))
    op = _only(r, "aten._softmax")
    # 32 elements x 5 (max, subtract, exp, sum, divide) = 160; read 128, write 128
    assert (op.flops, op.bytes_read, op.bytes_written) == (160, 128, 128)


def test_embedding_reads_gathered_rows_not_the_table():
    emb = nn.Embedding(100, 16)  # table 100*16*4 = 6400 bytes
    idx = torch.tensor([[1, 2, 3]])
    r = count(emb, idx)
    op = _only(r, "aten.embedding")
    assert op.flops == 0 and op.counted  # a gather: no arithmetic
    # read 3 rows 3*16*4 = 192 + indices 3*8 = 24 -> 216; write 192
    assert (op.bytes_read, op.bytes_written) == (216, 192)


def test_cross_entropy():
    logits, target = torch.randn(4, 10), torch.tensor([1, 2, 3, 4])
    r = count(F.cross_entropy, (logits, target))
    # log_softmax 5*4*10 = 200; nll_loss: gather and accumulate 1 per target = 4
    assert _only(r, "aten._log_softmax").flops == 200
    assert _only(r, "aten.nll_loss_forward").flops == 4
    assert r.total.flops == 204 and r.uncounted == {}


class _Recorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == "aten":  # skip profiler range markers
            self.names.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


def test_adamw_step():
    torch.manual_seed(0)
    model = nn.Linear(4, 3)  # W 12 + b 3 = 15 elements in 2 tensors
    x = torch.randn(2, 4)
    # Oracle for which ops the default CPU AdamW (single-tensor path) runs per parameter:
    # record them on an identical copy with a plain dispatch mode.
    twin = copy.deepcopy(model)
    twin_opt = torch.optim.AdamW(twin.parameters(), lr=1e-3)
    twin(x).sum().backward()
    rec = _Recorder()
    with rec:
        twin_opt.step()
    arith = [n for n in rec.names if n not in ("lift_fresh", "zeros_like", "_local_scalar_dense")]
    per_param = ["add_", "mul_", "lerp_", "mul_", "addcmul_", "sqrt", "div", "add_", "addcdiv_"]
    assert arith == per_param * 2
    # Per element: p.mul_(1-lr*wd) 1, m.lerp_(g, 1-b1) 3, v.mul_(b2) 1,
    # v.addcmul_(g, g, value=1-b2) 3 (mul, mul by value, add), sqrt 1, div by sqrt(bc2) 1,
    # add_(eps) 1, p.addcdiv_(m, denom, value=-step) 3 -> 14; plus step += 1: 1 per tensor.
    # 14*15 + 2 = 212
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    r = count(model, x, backward=True, optimizer=opt)
    assert r.by_module("optimizer")[""].flops == 212
    assert r.optimizer_steps == 1
    assert all(o.module == "" for o in r.ops if o.phase == "optimizer")
    assert r.uncounted == {}


def test_complex_and_integer_matmul():
    a, b = torch.ones(2, 3, dtype=torch.cfloat), torch.ones(3, 4, dtype=torch.cfloat)
    # 2*3*4 = 24 complex MACs, each 4 real multiplies + 4 adds: 24*8 = 192 FLOPs
    assert count(torch.mm, (a, b)).total.flops == 192
    # complex mul: 4 multiplies + 2 adds = 6 per element: 6*2*3 = 36
    assert count(torch.mul, (a[:, :3], a[:, :3] + 1)).total.flops == 36
    ai, bi = torch.ones(2, 3, dtype=torch.int64), torch.ones(3, 4, dtype=torch.int64)
    # integer matmul counts ops like FLOPs (int roofs are in ops/s): 2*2*3*4 = 48
    assert count(torch.mm, (ai, bi)).total.flops == 48
    # integer elementwise: no floating-point work, still bytes: read 2*24, write 24
    r = count(torch.add, (ai, ai + 1))
    assert (r.total.flops, r.total.bytes_read, r.total.bytes_written) == (0, 96, 48)


def test_compulsory_memory_model_moves_each_storage_once():
    lin = nn.Linear(8, 8)
    x = torch.randn(16, 8)
    r = count(lambda x: lin(lin(x)), (x,), memory_model="compulsory")
    # op model: each addmm reads x 16*8*4 = 512 + W 256 + b 32 = 800 and writes 512
    assert [(o.bytes_read, o.bytes_written) for o in r.ops if o.op == "aten.addmm"] == [(800, 512)] * 2
    # compulsory: W, b and x read once (800); the first output is produced in the step, so
    # the second addmm reads nothing from memory; each output written once: 2*512
    assert (r.total.bytes_read, r.total.bytes_written) == (800, 1024)
    op_model = count(lambda x: lin(lin(x)), (x,))
    assert (op_model.total.bytes_read, op_model.total.bytes_written) == (1600, 1024)
