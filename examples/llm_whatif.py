"""What-if for a 7B-class decoder-only transformer, on devices you do not have.

The model is plain PyTorch (RMSNorm, rotary-free attention with a KV cache, SwiGLU MLP) and
is built on the meta device: no weight is allocated, so this runs on a laptop. It shows:

* prefill (2,048 tokens) is compute-bound and decode (1 token, KV cache of 2,048) is
  memory-bound on an H100 and an A100;
* decode's roofline time is about (weight bytes + KV-cache bytes) / bandwidth;
* a batch-size sweep: where decode crosses the ridge;
* weights at bf16 vs int8 (the dtype what-if: bytes and roofs change together).

Run: python examples/llm_whatif.py
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class Config:
    dim: int = 4096
    layers: int = 32
    heads: int = 32
    ffn: int = 11008
    vocab: int = 32000


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class Block(nn.Module):
    def __init__(self, c: Config) -> None:
        super().__init__()
        self.heads = c.heads
        self.attn_norm = RMSNorm(c.dim)
        self.q = nn.Linear(c.dim, c.dim, bias=False)
        self.k = nn.Linear(c.dim, c.dim, bias=False)
        self.v = nn.Linear(c.dim, c.dim, bias=False)
        self.o = nn.Linear(c.dim, c.dim, bias=False)
        self.mlp_norm = RMSNorm(c.dim)
        self.gate = nn.Linear(c.dim, c.ffn, bias=False)
        self.up = nn.Linear(c.dim, c.ffn, bias=False)
        self.down = nn.Linear(c.ffn, c.dim, bias=False)

    def forward(self, x: torch.Tensor, cache_k: torch.Tensor = None, cache_v: torch.Tensor = None) -> torch.Tensor:
        """Prefill without a cache; decode with a static cache whose last slot takes the new token."""
        b, t, d = x.shape
        h = self.attn_norm(x)
        q, k, v = (proj(h).view(b, t, self.heads, d // self.heads).transpose(1, 2) for proj in (self.q, self.k, self.v))
        if cache_k is not None:  # write the new token in place (no copy of the cache), attend to all
            cache_k[:, :, -t:].copy_(k)
            cache_v[:, :, -t:].copy_(v)
            k, v = cache_k, cache_v
        a = F.scaled_dot_product_attention(q, k, v, is_causal=cache_k is None)
        x = x + self.o(a.transpose(1, 2).reshape(b, t, d))
        h = self.mlp_norm(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class Decoder(nn.Module):
    def __init__(self, c: Config = Config()) -> None:
        super().__init__()
        self.c = c
        self.embed = nn.Embedding(c.vocab, c.dim)
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.layers))
        self.norm = RMSNorm(c.dim)
        self.lm_head = nn.Linear(c.dim, c.vocab, bias=False)

    def forward(self, ids: torch.Tensor, past=None) -> torch.Tensor:
        x = self.embed(ids)
        for i, blk in enumerate(self.blocks):
            x = blk(x, *(past[i] if past is not None else (None, None)))
        return self.lm_head(self.norm(x))


def build(c: Config = Config(), dtype: torch.dtype = torch.bfloat16) -> Decoder:
    """The decoder on the meta device (no weights allocated)."""
    with torch.device("meta"):
        return Decoder(c).to(dtype)


def decode_inputs(c: Config, batch: int, cache: int, dtype: torch.dtype = torch.bfloat16):
    """One new token per sequence and a static KV cache of ``cache`` past tokens + 1 slot (meta)."""
    hd = c.dim // c.heads
    ids = torch.zeros(batch, 1, dtype=torch.long, device="meta")
    past = [(torch.empty(batch, c.heads, cache + 1, hd, dtype=dtype, device="meta"),
             torch.empty(batch, c.heads, cache + 1, hd, dtype=dtype, device="meta")) for _ in range(c.layers)]
    return (ids, past)


def main() -> None:
    from torch_roofline import predict

    c = Config()
    model = build(c)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    kv = 2 * c.layers * 2048 * c.dim * 2
    print(f"7B-class decoder: {sum(p.numel() for p in model.parameters()) / 1e9:.2f} B parameters, "
          f"{weights / 1e9:.2f} GB of bf16 weights; KV cache at 2,048 tokens: {kv / 1e9:.2f} GB")
    on = ["h100-sxm", "a100-sxm4-80gb"]
    prefill = predict(model, (torch.zeros(1, 2048, dtype=torch.long, device="meta"),), on=on)
    decode = predict(model, decode_inputs(c, 1, 2048), on=on, memory_model="compulsory")
    for dev in on:
        p, d = prefill[dev], decode[dev]
        bw = p.device.memory_bandwidth
        print(f"\n{dev}: prefill 2,048 tokens: {p.totals.roofline_time_s * 1e3:.1f} ms, {p.module('').bound}-bound; "
              f"decode 1 token: {d.totals.roofline_time_s * 1e3:.2f} ms, {d.module('').bound}-bound "
              f"((weights + KV) / bandwidth = {(weights + kv) / bw * 1e3:.2f} ms)")
    from torch_roofline import devices

    ridge = devices.get("h100-sxm").ridge("bf16")
    print(f"\nDecode batch sweep on h100-sxm (linear layers' intensity vs the bf16 ridge of {ridge:.0f} FLOP/B;"
          " attention over each sequence's own KV cache stays memory-bound):")
    for batch in (1, 8, 32, 64, 128, 256, 512):
        r = predict(model, decode_inputs(c, batch, 2048), on=["h100-sxm"], memory_model="compulsory")["h100-sxm"]
        mats = [o for o in r.ops if o.op == "aten.mm"]
        f = sum(o.flops for o in mats)
        b = sum(o.bytes_read + o.bytes_written for o in mats)
        print(f"  batch {batch:4d}: linear layers {f / b:7.1f} FLOP/B, step {r.totals.roofline_time_s * 1e3:7.2f} ms, "
              f"{r.totals.roofline_time_s * 1e3 / batch:6.3f} ms/token, linear layers "
              f"{'compute' if f / b >= ridge else 'memory'}-bound")
    print("\nWeights at bf16 vs int8 (decode, batch 1, h100-sxm):")
    for dt in ("bf16", "int8"):
        r = predict(model, decode_inputs(c, 1, 2048), on=["h100-sxm"], dtype=dt, memory_model="compulsory")["h100-sxm"]
        t = r.totals
        print(f"  {dt}: {(t.bytes_read + t.bytes_written) / 1e9:.2f} GB moved, {t.roofline_time_s * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
