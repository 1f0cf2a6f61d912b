"""Exact where the anchors are wrong (issue 13): grouped convolution backward, causal and
sliding-window attention, and the traffic of indexed in-place writes.

The oracle is the arithmetic, written out in each test. Where torch's FlopCounterMode (the
anchor our matrix formulas otherwise equal) disagrees, the test shows by how much and why.
"""

from _paths import REPO_ROOT
import importlib.util
import os
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from torch_roofline import count, devices, predict
from torch_roofline.count._attention_formulas import attended_pairs

ROOT = REPO_ROOT


def _flops(result, op, phase=None):
    return sum(o.flops for o in result.ops if o.op == op and (phase is None or o.phase == phase))


# --------------------------------------------------------------------------------------
# Convolution backward, per group.
# --------------------------------------------------------------------------------------
N, C, HW, K = 2, 8, 10, 3


def _conv_step(conv, x):
    x = x.clone().requires_grad_(True)
    return count(conv, x, backward=True, loss_fn=lambda out: out.sum())


@pytest.mark.parametrize("groups", [1, 2, C])
def test_grouped_conv_forward_and_backward_are_the_analytic_count(groups):
    torch.manual_seed(0)
    conv = nn.Conv2d(C, C, K, padding=1, groups=groups, bias=False)
    x = torch.randn(N, C, HW, HW)
    r = _conv_step(conv, x)
    # MACs = N * C_out * H_out * W_out * (C_in / groups) * kh * kw = 2*8*10*10*(8/g)*3*3 = 14400 * 8/g
    macs = N * C * HW * HW * (C // groups) * K * K
    assert macs == {1: 115200, 2: 57600, C: 14400}[groups]
    assert _flops(r, "aten.convolution") == 2 * macs
    # backward: grad input (a transposed convolution of grad_out with w) and grad weight (per
    # group, a [C_out/g, N*H*W] @ [N*H*W, C_in/g*k*k] product) each do every forward MAC once
    assert _flops(r, "aten.convolution_backward") == 2 * 2 * macs
    # torch's formula counts grad weight over all C_in x C_out channel pairs: groups times too
    # many (the issue's x32 for a depthwise conv of 32 channels)
    fcm = FlopCounterMode(display=False)
    xg = x.clone().requires_grad_(True)
    with fcm:
        conv(xg).sum().backward()
    assert fcm.get_flop_counts()["Global"][torch.ops.aten.convolution_backward] == 2 * macs + 2 * macs * groups


@pytest.mark.parametrize("groups", [1, 2, C])
def test_grouped_conv_backward_equals_explicit_matmuls(groups):
    # An independent oracle: the two gradients computed by hand as matrix products (unfold
    # + one matmul per group), which FlopCounterMode counts exactly; they equal autograd's.
    torch.manual_seed(0)
    w = torch.randn(C, C // groups, K, K)
    x = torch.randn(N, C, HW, HW, requires_grad=True)
    out = F.conv2d(x, w.requires_grad_(True), padding=1, groups=groups)
    grad_out = torch.randn_like(out)
    out.backward(grad_out)
    cols = F.unfold(x.detach(), K, padding=1)  # [N, C*k*k, L]
    go = grad_out.reshape(N, C, -1)  # [N, C_out, L]
    cg, og = C // groups * K * K, C // groups
    fcm = FlopCounterMode(display=False)
    with fcm:
        grad_w, grad_cols = [], []
        for g in range(groups):
            go_g, cols_g = go[:, g * og:(g + 1) * og], cols[:, g * cg:(g + 1) * cg]
            w_g = w.detach()[g * og:(g + 1) * og].reshape(og, cg)
            # grad weight: [C_out/g, N*L] @ [N*L, C_in/g*k*k]
            grad_w.append(torch.mm(go_g.transpose(0, 1).reshape(og, -1), cols_g.transpose(0, 1).reshape(cg, -1).t()))
            # grad columns: per image [C_in/g*k*k, C_out/g] @ [C_out/g, L]
            grad_cols.append(torch.bmm(w_g.t().expand(N, cg, og), go_g))
        grad_w, grad_cols = torch.cat(grad_w).reshape_as(w), torch.cat(grad_cols, dim=1)
    grad_x = F.fold(grad_cols, (HW, HW), K, padding=1)
    torch.testing.assert_close(grad_w, w.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(grad_x, x.grad, rtol=1e-4, atol=1e-4)
    r = _conv_step(nn.Conv2d(C, C, K, padding=1, groups=groups, bias=False), x.detach())
    assert _flops(r, "aten.convolution_backward") == fcm.get_total_flops()


def test_depthwise_conv_of_the_issue():
    conv = nn.Conv2d(32, 32, 3, padding=1, groups=32, bias=False)
    r = _conv_step(conv, torch.randn(1, 32, 56, 56))
    # forward: 2 * 1*32*56*56 * 1 * 3*3 = 1806336 (1.81 MFLOP); forward + backward 3x = 5419008
    assert _flops(r, "aten.convolution") == 1806336
    assert r.total.flops - _flops(r, "aten.sum") - _flops(r, "aten.convolution") == 2 * 1806336
    assert _flops(r, "aten.convolution") + _flops(r, "aten.convolution_backward") == 5419008


@pytest.mark.parametrize("groups", [1, 2, C])
def test_transposed_conv_forward_and_backward(groups):
    torch.manual_seed(0)
    conv = nn.ConvTranspose2d(C, C, K, stride=2, padding=1, groups=groups, bias=False)
    x = torch.randn(N, C, 5, 5)
    assert conv(x).shape == (N, C, 9, 9)  # (5-1)*2 - 2*1 + 3 = 9
    r = _conv_step(conv, x)
    # a transposed convolution scatters every *input* element through its C_out/g x k x k
    # weights: MACs = N * H_in * W_in * C_in * (C_out / g) * k * k = 2*5*5*8*(8/g)*9 = 3600 * 8/g
    macs = N * 5 * 5 * C * (C // groups) * K * K
    assert _flops(r, "aten.convolution") == 2 * macs
    # grad input (a plain convolution of grad_out with w) and grad weight each do every MAC once
    assert _flops(r, "aten.convolution_backward") == 2 * 2 * macs


# --------------------------------------------------------------------------------------
# Causal and sliding-window attention: the attended pairs.
# --------------------------------------------------------------------------------------
def test_attended_pairs_by_hand():
    assert attended_pairs(3, 5) == 15  # no mask: every pair
    assert attended_pairs(4, 4, causal=True) == 1 + 2 + 3 + 4
    assert attended_pairs(2, 4, causal=True) == 1 + 2  # top-left: query i sees keys 0..i
    assert attended_pairs(2, 4, causal=True, bottom_right=True) == 3 + 4  # query i sees keys 0..i+2
    assert attended_pairs(6, 6, causal=True, left=1) == 1 + 2 * 5  # itself and the one before
    assert attended_pairs(4, 4, left=1, right=1) == 2 + 3 + 3 + 2  # a band of width 3
    assert attended_pairs(2048, 2048, causal=True) == 2048 * 2049 // 2


def test_causal_prefill_of_a_7b_shaped_layer_counts_the_triangle():
    b, h, t, d = 1, 32, 2048, 128  # LLaMA-7B: 32 heads of 128, a 2,048-token prompt
    q, k, v = (torch.empty(b, h, t, d, device="meta", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    r = count(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True), (q, k, v),
              backward=True, loss_fn=lambda out: out.sum())
    fwd = sum(o.flops for o in r.ops if o.phase == "forward" and o.unit == "matrix")
    bwd = sum(o.flops for o in r.ops if o.phase == "backward" and o.unit == "matrix")
    # QK^T and PV over the T(T+1)/2 pairs of the causal triangle: 2*B*H*d*T(T+1)
    # = 2*1*32*128*2048*2049 = 34376515584, not the full square 4*B*H*d*T^2 = 68719476736
    assert fwd == 2 * b * h * d * t * (t + 1) == 34376515584
    assert fwd != 4 * b * h * d * t * t
    # backward: 5 matmuls over the same pairs, 2*B*H*pairs*(3d + 2d) = 2.5 x the forward
    assert bwd == 5 * fwd // 2 == 85941288960


@pytest.mark.parametrize("op", ["flash", "efficient"])
def test_gpu_sdpa_kernels_count_the_triangle(op):
    b, h, t, d = 2, 4, 16, 8
    q = torch.empty(b, h, t, d, device="meta")
    if op == "flash":
        call = lambda q: torch.ops.aten._scaled_dot_product_flash_attention(q, q, q, 0.0, True)  # noqa: E731
    else:
        call = lambda q: torch.ops.aten._scaled_dot_product_efficient_attention(q, q, q, None, False, 0.0, True)  # noqa: E731
    r = count(call, (q,))
    # 16*17/2 = 136 pairs per head: 2*b*h*136*(d + d) = 2*2*4*136*16 = 34816
    assert r.total.flops == 34816


def test_sliding_window_flash_and_efficient_kernels():
    b, h, t, d = 1, 4, 16, 8
    q = torch.empty(b, t, h, d, device="meta")  # the kernels beneath SDPA take [b, s, h, d]
    flash = count(lambda q: torch.ops.aten._flash_attention_forward(
        q, q, q, None, None, t, t, 0.0, True, False, window_size_left=3, window_size_right=0)[0], (q,))
    efficient = count(lambda q: torch.ops.aten._efficient_attention_forward(
        q, q, q, None, None, None, t, t, 0.0, 1, False, window_size=4)[0], (q,))
    # causal window of 4 keys (itself and 3 before): 1 + 2 + 3 + 4*13 = 58 pairs per head;
    # 2*b*h*58*(d + d) = 2*1*4*58*16 = 7424 (the full square would be 2*4*256*16 = 32768)
    assert flash.total.flops == efficient.total.flops == 7424


# --------------------------------------------------------------------------------------
# Indexed in-place writes move what they write.
# --------------------------------------------------------------------------------------
def _op(result, name):
    (call,) = [o for o in result.ops if o.op == name]
    return call


def _cache():
    return torch.zeros(1, 8, 2049, 128), torch.randn(1, 8, 1, 128), torch.tensor([2048])


@pytest.mark.parametrize("memory_model", ["op", "compulsory"])
def test_index_copy_into_a_kv_cache_moves_one_slot(memory_model):
    cache, new, pos = _cache()  # 8*2049*128*4 = 8392704 bytes; one slot 8*128*4 = 4096

    def write(cache, new, pos):
        return cache.index_copy_(2, pos, new)

    c = _op(count(write, (cache, new, pos), memory_model=memory_model), "aten.index_copy_")
    # read the source 4096 + the index 8; write the slot 4096 (not 2 x 8392704)
    assert (c.bytes_read, c.bytes_written) == (4104, 4096)
    assert (c.compulsory_bytes_read, c.compulsory_bytes_written) == (4104, 4096)


def test_index_put_and_scatter_move_what_they_write():
    cache, new, pos = _cache()

    def put(cache, new, pos):
        cache[:, :, pos] = new  # index_put_ with indices (None, None, pos)
        return cache

    c = _op(count(put, (cache, new, pos)), "aten.index_put_")
    assert (c.flops, c.bytes_read, c.bytes_written) == (0, 4104, 4096)  # source + index; the slot

    src = torch.randn(4, 16)
    idx = torch.tensor([[0, 1, 2], [3, 4, 5]])  # scatter reads the 2x3 corner of src it covers

    def scatter(dest, idx, src):
        return dest.scatter_(1, idx, src)

    c = _op(count(scatter, (torch.zeros(4, 32), idx, src)), "aten.scatter_")
    # read index 6*8 = 48 + src 6*4 = 24; write 6*4 = 24 (the destination is 4*32*4 = 512)
    assert (c.bytes_read, c.bytes_written) == (72, 24)

    def scatter_add(dest, idx, src):
        return dest.scatter_add_(1, idx, src)

    c = _op(count(scatter_add, (torch.zeros(4, 32), idx, src)), "aten.scatter_add_")
    # accumulating: also read the 6 updated elements (24); 6 adds
    assert (c.flops, c.bytes_read, c.bytes_written) == (6, 96, 24)

    def index_add(dest, idx, src):
        return dest.index_add_(0, idx, src)

    c = _op(count(index_add, (torch.zeros(10, 16), torch.tensor([1, 5]), torch.randn(2, 16))), "aten.index_add_")
    # 2 rows of 16: read source 128 + index 16 + the 32 updated elements 128; write 128; 32 adds
    assert (c.flops, c.bytes_read, c.bytes_written) == (32, 272, 128)


def test_masked_fill_keeps_the_whole_destination():
    # masked_fill_'s kernel runs over every element of the destination (the mask chooses
    # each element's value, not its address), so it does move all of it (traffic.py).
    x, mask = torch.zeros(4, 16), torch.zeros(4, 16, dtype=torch.bool)
    c = _op(count(lambda x, m: x.masked_fill_(m, 1.0), (x, mask)), "aten.masked_fill_")
    # read x 256 + mask 64; write x 256
    assert (c.bytes_read, c.bytes_written) == (320, 256)


def _llm():
    spec = importlib.util.spec_from_file_location("llm_whatif", os.path.join(ROOT, "examples", "llm_whatif.py"))
    mod = importlib.util.module_from_spec(spec)
    sys.modules["llm_whatif"] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("write", ["index_copy_", "index_put_"])
def test_static_kv_cache_decode_is_weights_plus_kv_over_bandwidth(write):
    llm = _llm()

    class Block(llm.Block):
        """The example's block, writing the new token into the static cache with an indexed write."""

        def forward(self, x, cache_k, cache_v):
            b, t, d = x.shape
            h = self.attn_norm(x)
            q, k, v = (p(h).view(b, t, self.heads, d // self.heads).transpose(1, 2) for p in (self.q, self.k, self.v))
            pos = torch.full((t,), cache_k.shape[2] - t, dtype=torch.long, device=x.device)
            if write == "index_copy_":
                cache_k.index_copy_(2, pos, k)
                cache_v.index_copy_(2, pos, v)
            else:
                cache_k[:, :, pos] = k
                cache_v[:, :, pos] = v
            a = F.scaled_dot_product_attention(q, cache_k, cache_v)
            x = x + self.o(a.transpose(1, 2).reshape(b, t, d))
            h = self.mlp_norm(x)
            return x + self.down(F.silu(self.gate(h)) * self.up(h))

    c = llm.Config()
    model = llm.build(c)
    for blk in model.blocks:
        blk.__class__ = Block
    h100 = devices.get("h100-sxm")
    decode = predict(model, llm.decode_inputs(c, 1, 2048), on=[h100], memory_model="compulsory")[h100.id]
    writes = [o for o in decode.ops if o.op == f"aten.{write}"]
    assert writes, [o.op for o in decode.ops]
    # each write moves one token's slot: 4096 * 2 B = 8192 bytes (the cache is 2049 slots)
    assert all(o.bytes_written == 8192 * o.calls for o in writes)
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    matrix_weights = weight_bytes - c.vocab * c.dim * 2  # the embedding table is gathered by row
    kv_bytes = 2 * c.layers * (2048 + 1) * c.dim * 2  # K and V, 32 layers, 2049 slots, bf16
    expected = (matrix_weights + kv_bytes) / h100.memory_bandwidth  # (13.22 + 1.07) GB / 3.35 TB/s
    assert decode.totals.roofline_time_s == pytest.approx(expected, rel=0.02)
