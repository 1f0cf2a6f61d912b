"""What-if predictions on catalog devices (issue 7)."""

from _paths import REPO_ROOT
import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from torch_roofline import devices, predict
from torch_roofline.cli import main as cli

ROOT = REPO_ROOT


def _llm():
    spec = importlib.util.spec_from_file_location("llm_whatif", os.path.join(ROOT, "examples", "llm_whatif.py"))
    mod = importlib.util.module_from_spec(spec)
    sys.modules["llm_whatif"] = mod  # dataclasses look their module up while the class is built
    spec.loader.exec_module(mod)
    return mod


def test_vgg16_compute_bound_mobilenet_memory_bound_on_1080ti():
    torchvision = pytest.importorskip("torchvision")
    with torch.device("meta"):
        vgg, mob = torchvision.models.vgg16(), torchvision.models.mobilenet_v2()
        x = torch.empty(1, 3, 224, 224)
    ridge = devices.get("gtx-1080-ti").ridge("fp32")  # 11.34e12 / 484e9 = 23.4 FLOP/B
    r = predict(vgg, x, on="gtx-1080-ti", memory_model="compulsory")["gtx-1080-ti"]
    t = r.totals
    # seed 000: ~15.5 GMACs; weights 138.36 M params x 4 B = 553.4 MB + feature maps -> ~600 MB
    assert t.macs == pytest.approx(15.47e9, rel=0.01)
    params = sum(p.numel() for p in vgg.parameters())
    assert params == 138_357_544
    moved = t.bytes_read + t.bytes_written
    assert params * 4 < moved < 700e6
    assert 22 < t.macs / moved < 27  # ~25 MAC/B
    assert t.flops / moved > ridge and r.module("").bound == "compute"
    m = predict(mob, x, on="gtx-1080-ti", memory_model="compulsory")["gtx-1080-ti"]
    mt = m.totals
    # MobileNet-V2, BN outputs as tensors of their own (unfused): well below the ridge
    assert mt.flops / (mt.bytes_read + mt.bytes_written) < ridge / 2
    assert m.module("").bound == "memory"
    assert m.predicted and mt.time_s is None


def test_7b_decoder_prefill_compute_decode_memory_on_h100():
    llm = _llm()
    c = llm.Config()
    model = llm.build(c)
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    kv_bytes = 2 * c.layers * (2048 + 1) * c.dim * 2  # K and V, 32 layers, 2049 slots, bf16
    h100 = devices.get("h100-sxm")
    prefill = predict(model, (torch.zeros(1, 2048, dtype=torch.long, device="meta"),), on=[h100])[h100.id]
    decode = predict(model, llm.decode_inputs(c, 1, 2048), on=[h100], memory_model="compulsory")[h100.id]
    assert prefill.module("").bound == "compute"
    assert decode.module("").bound == "memory"
    # decode reads every matrix weight once (13.48 GB less the 32000 x 4096 x 2 B = 0.26 GB
    # embedding table, gathered by row) and the KV cache once: time = bytes / bandwidth
    matrix_weights = weight_bytes - c.vocab * c.dim * 2
    mm_time = sum(o.roofline_time_s for o in decode.ops if o.op == "aten.mm")
    assert mm_time == pytest.approx(matrix_weights / h100.memory_bandwidth, rel=0.01)
    expected = (matrix_weights + kv_bytes) / h100.memory_bandwidth  # (13.22 + 1.07) GB / 3.35 TB/s
    assert decode.totals.roofline_time_s == pytest.approx(expected, rel=0.02)


def test_meta_attention_is_counted_as_the_fused_kernel():
    # On meta, torch's SDPA would take its math path (bf16 K/V up-cast to fp32); the counter
    # counts the fused kernel a CPU/GPU run uses: Q, K, V read once, the output written once.
    from torch_roofline import count

    b, h, s_q, s_k, d = 1, 8, 1, 512, 64
    q = torch.empty(b, h, s_q, d, device="meta", dtype=torch.bfloat16)
    k = torch.empty(b, h, s_k, d, device="meta", dtype=torch.bfloat16)

    class Attn(nn.Module):
        def forward(self, q, k, v):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v)

    r = count(Attn(), (q, k, k))
    (op,) = [o for o in r.ops if o.flops]
    assert op.op == "aten._scaled_dot_product_flash_attention_for_cpu"
    assert op.flops == 2 * 2 * b * h * s_q * s_k * d  # QK^T and PV: 4*1*8*1*512*64 = 1048576
    assert op.bytes_read == (b * h * s_q * d + b * h * s_k * d) * 2  # q, and k (= v, read once)
    assert op.dtype == "bfloat16"


def test_dtype_what_if_halves_bytes_not_flops():
    llm = _llm()
    c = llm.Config(dim=256, layers=2, heads=4, ffn=512, vocab=1000)
    model = llm.build(c)
    inputs = llm.decode_inputs(c, 1, 64)
    bf16 = predict(model, inputs, on="h100-sxm", dtype="bf16", memory_model="compulsory")["h100-sxm"].totals
    int8 = predict(model, inputs, on="h100-sxm", dtype="int8", memory_model="compulsory")["h100-sxm"].totals
    assert int8.flops == bf16.flops
    # every floating-point tensor from 2 B to 1 B per element; integer token ids unchanged
    assert int8.bytes_read + int8.bytes_written == pytest.approx((bf16.bytes_read + bf16.bytes_written) / 2, rel=0.01)
    assert int8.roofline_time_s < bf16.roofline_time_s


def test_70b_decoder_on_meta_is_fast_and_small():
    # What is bounded: what building and predicting the model costs this process, not the
    # process's history. The child measures its own peak RSS growth (VmHWM after minus VmRSS
    # before; ru_maxrss would not do: Linux carries the parent's peak across fork/vfork + exec,
    # so inside a pytest process that once held 2 GiB the child "used" 2 GiB before it ran a
    # line) and its own CPU time (wall time doubles when another process shares the cores).
    code = f"""
import resource, sys, time, importlib.util, torch
sys.path.insert(0, {ROOT!r})

def rss_kib(field):  # this process image only (Linux); elsewhere the peak since start
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak // 1024 if sys.platform == "darwin" else peak  # macOS: bytes

spec = importlib.util.spec_from_file_location("m", {os.path.join(ROOT, "examples", "llm_whatif.py")!r})
m = importlib.util.module_from_spec(spec); sys.modules["m"] = m; spec.loader.exec_module(m)
from torch_roofline import predict
c = m.Config(dim=8192, layers=80, heads=64, ffn=28672, vocab=32000)
before_kib = rss_kib("VmRSS")
t = time.process_time()
model = m.build(c)
r = predict(model, (torch.zeros(1, 16, dtype=torch.long, device="meta"),), on="h100-sxm")["h100-sxm"]
print(sum(p.numel() for p in model.parameters()), r.totals.flops, time.process_time() - t,
      (rss_kib("VmHWM") - before_kib) * 1024)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    params, flops, cpu_seconds, grown_bytes = out.stdout.split()
    assert int(params) > 68e9  # a 70B-class model
    assert float(cpu_seconds) < 60  # about 4 s on a 2-core CI machine
    # No weight is allocated: 70e9 bf16 weights would be 140 GB, one layer's MLP ~0.9 GB.
    # Measured: ~100 MiB for the module objects, hooks and fake tensors.
    assert int(grown_bytes) < 512 * 1024 ** 2


def test_unknown_device_lists_close_matches():
    with torch.device("meta"):
        net = nn.Linear(8, 8)
    with pytest.raises(KeyError, match="h100-sxm"):
        predict(net, torch.empty(2, 8, device="meta"), on=["h100-sxn"])


def test_data_dependent_model_names_the_fix():
    class Item(nn.Module):
        def forward(self, x):
            return x * x.sum().item()

    with pytest.raises(RuntimeError, match=r"item\(\).*real inputs on the CPU"):
        predict(Item().to("meta"), torch.empty(4, device="meta"), on="h100-sxm")


def test_cli_predict_and_diff(tmp_path, capsys):
    out = tmp_path / "pred"
    rc = cli(["predict", "torchvision:resnet18", "--input-shape", "1,3,64,64", "--on", "gtx-1080-ti",
              "--on", "h100-sxm", "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "gtx-1080-ti [ms]" in text and "h100-sxm [ms]" in text
    a = json.loads((out / "report-gtx-1080-ti.json").read_text())
    assert a["predicted"] is True and a["totals"]["time_s"] is None and a["totals"]["roofline_time_s"] > 0
    assert (out / "roofline.png").read_bytes()[:4] == b"\x89PNG"
    rc = cli(["diff", str(out / "report-gtx-1080-ti.json"), str(out / "report-h100-sxm.json"), "--depth", "1"])
    assert rc == 0
    assert "layer1" in capsys.readouterr().out
