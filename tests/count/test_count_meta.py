"""A 7B-parameter decoder-only transformer counted on the meta device: nothing is allocated.

The model (LLaMA-7B shapes: d=4096, 32 layers, 32 heads, SwiGLU FFN 11008, vocab 32000,
RMSNorm, no rotary) is defined here in plain PyTorch. Counted in a subprocess so that its
peak resident memory (``ru_maxrss``, which includes importing torch) can be measured.

Forward matrix FLOPs for T tokens (batch 1):
  * every matmul parameter does one multiply-accumulate per token: 2 x P_matmul x T;
  * attention, per layer: QK^T and PV over the causal mask's T(T+1)/2 query-key pairs,
    2*d*T(T+1)/2 each (all heads together): 2*d*T(T+1), the work the fused kernel does
    (torch's sdpa formulas count the full square 4*d*T^2 for a causal mask too). On the meta
    device the counter routes SDPA to the fused CPU flash op (torch itself would take its
    math path there), so this work shows up in ``aten._scaled_dot_product_flash_attention_for_cpu``.
"""

from _paths import REPO_ROOT
import json
import os
import subprocess
import sys
import textwrap

import pytest

VOCAB, D, LAYERS, HEADS, FFN, T = 32000, 4096, 32, 32, 11008, 128

_SCRIPT = textwrap.dedent(
    f"""
    import json, resource, sys, time

    def peak_kib():
        # This process image's own peak RSS (VmHWM, Linux). Not ru_maxrss: Linux carries the
        # parent's peak across fork/vfork + exec, so inside a pytest process that once held
        # 2 GiB the child would "use" 2 GiB before running a line.
        try:
            with open("/proc/self/status") as f:
                return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
        except OSError:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            return peak // 1024 if sys.platform == "darwin" else peak  # macOS: bytes
    import torch, torch.nn as nn, torch.nn.functional as F
    from torch_roofline.count import count

    class Block(nn.Module):
        def __init__(self, d, h, f):
            super().__init__()
            self.h = h
            self.attn_norm = nn.RMSNorm(d)
            self.q = nn.Linear(d, d, bias=False)
            self.k = nn.Linear(d, d, bias=False)
            self.v = nn.Linear(d, d, bias=False)
            self.o = nn.Linear(d, d, bias=False)
            self.ffn_norm = nn.RMSNorm(d)
            self.gate = nn.Linear(d, f, bias=False)
            self.up = nn.Linear(d, f, bias=False)
            self.down = nn.Linear(f, d, bias=False)

        def forward(self, x):
            b, t, d = x.shape
            y = self.attn_norm(x)
            q, k, v = (p(y).view(b, t, self.h, d // self.h).transpose(1, 2) for p in (self.q, self.k, self.v))
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.o(a.transpose(1, 2).reshape(b, t, d))
            y = self.ffn_norm(x)
            return x + self.down(F.silu(self.gate(y)) * self.up(y))

    class Decoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding({VOCAB}, {D})
            self.layers = nn.ModuleList(Block({D}, {HEADS}, {FFN}) for _ in range({LAYERS}))
            self.norm = nn.RMSNorm({D})
            self.head = nn.Linear({D}, {VOCAB}, bias=False)

        def forward(self, ids):
            x = self.embed(ids)
            for layer in self.layers:
                x = layer(x)
            return self.head(self.norm(x))

    with torch.device("meta"):
        model = Decoder()
    ids = torch.randint(0, {VOCAB}, (1, {T}), device="meta")
    start = time.perf_counter()
    r = count(model, ids)
    seconds = time.perf_counter() - start
    print(json.dumps({{
        "seconds": seconds,
        "maxrss_kb": peak_kib(),
        "params": sum(p.numel() for p in model.parameters()),
        "root_params": r.module("").params,
        "matrix_flops": sum(o.flops for o in r.ops if o.unit == "matrix" and o.phase == "forward"),
        "attention_flops": sum(o.flops for o in r.ops if o.op == "aten._scaled_dot_product_flash_attention_for_cpu"),
        "bmm_flops": sum(o.flops for o in r.ops if o.op == "aten.bmm"),
        "uncounted": r.uncounted,
        "embed_read": r.by_op("embed")["aten.embedding"].bytes_read,
    }}))
    """
)


@pytest.fixture(scope="module")
def seven_b():
    root = REPO_ROOT
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_parameter_count_is_7b(seven_b):
    # embed 32000*4096 = 131072000; per layer 4*4096^2 + 3*4096*11008 + 2*4096 (norms)
    # = 67108864 + 135266304 + 8192 = 202383360; x32 = 6476267520; final norm 4096;
    # head 131072000 -> 6738415616
    assert seven_b["params"] == seven_b["root_params"] == 6738415616


def test_forward_matrix_flops(seven_b):
    matmul_params = LAYERS * (4 * D * D + 3 * D * FFN) + D * VOCAB
    # 32 * (67108864 + 135266304) + 131072000 = 6476005376 + 131072000 = 6607077376
    assert matmul_params == 6607077376
    attention = LAYERS * 2 * D * T * (T + 1)  # causal: 32 * 2*4096*128*129 = 32 * 135266304 = 4328521728
    # on the meta device SDPA is counted as the fused kernel a CPU/GPU run uses, not torch's
    # meta math fallback: the attention matmuls are in the flash op, no bmm remains
    assert seven_b["attention_flops"] == attention and seven_b["bmm_flops"] == 0
    # 2 * 6607077376 * 128 + 4328521728 = 1691411808256 + 4328521728 = 1695740329984
    assert seven_b["matrix_flops"] == 2 * matmul_params * T + attention == 1695740329984
    assert seven_b["uncounted"] == {}


def test_embedding_reads_rows_not_the_table(seven_b):
    # 128 rows of 4096 float32 (2097152 bytes) + 128 int64 ids (1024), not the 524 MB table
    assert seven_b["embed_read"] == 128 * 4096 * 4 + 128 * 8


def test_fast_and_small(seven_b):
    # Acceptance: under a minute and under 2 GB. Generous bounds (the count itself takes
    # about a second here); the peak includes importing torch.
    assert seven_b["seconds"] < 60
    assert seven_b["maxrss_kb"] * 1024 < 2e9
