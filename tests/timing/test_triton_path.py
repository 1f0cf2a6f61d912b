"""The GPU path of torch.compile: Triton kernels (issue 15, build point 5), without a GPU.

No GPU is lent to this project's machines and no recorded GPU trace of a compiled model is in
its fixtures, so the device-specific part is kept thin and tested here on texts written like
Inductor's (torch 2.14) and a hand-built trace:

* the wrapper: a Triton kernel is made by ``async_compile.triton(name, source)`` whose source
  holds ``def name(in_ptr0, out_ptr0, xnumel, XBLOCK : tl.constexpr)``, and called as
  ``name.run(buf0, buf1, 2048, stream=stream0)`` inside ``with torch.cuda._DeviceGuard(0):``
  (``torch/_inductor/codegen/triton.py``, ``wrapper.py``);
* the trace: each launch is a host range named after the kernel (Inductor's
  ``CachingAutotuner`` wraps it in ``_RecordFunctionFast(kernel_name, ...)`` with
  ``kernel_backend="triton"``, ``torch/_inductor/runtime/triton_heuristics.py``), holding the
  driver's launch, whose correlation names the device kernel of the same name.

Everything else (which ops a kernel fused, its bytes, eager and compulsory bytes, the graph
lookup) is the CPU path's code. The Block of tests/data/inductor/record.py, batch 8: the graph
and provenance are the recorded CPU ones with the kernels renamed as Inductor names Triton
kernels; oracles by hand as in tests/timing/test_fusion_traffic.py.
"""

from __future__ import annotations

from _paths import TESTS_DIR
import gzip
import json
import os

import pytest

from torch_roofline.devices import Device
from torch_roofline.offline import from_trace
from torch_roofline.timing.compiled import is_fused_kernel
from torch_roofline.timing.inductor import SIDECAR_SUFFIX, read_compiled_graph

INDUCTOR = os.path.join(TESTS_DIR, "data", "inductor")
FLAT = Device(name="flat-triton-test", peak_flops={"fp32": 1e12}, bandwidth=1e11)
B, D, H = 8, 64, 256
US = 1e-6

RENAMED = {"cpp_fused_gelu_0": "triton_poi_fused_gelu_0",
           "cpp_fused_add_native_layer_norm_1": "triton_per_fused_add_native_layer_norm_1"}

WRAPPER = '''
import torch
from torch._inductor.async_compile import AsyncCompile
empty_strided_cuda = torch._C._dynamo.guards._empty_strided_cuda
reinterpret_tensor = torch._C._dynamo.guards._reinterpret_tensor
async_compile = AsyncCompile()

triton_poi_fused_gelu_0 = async_compile.triton('triton_poi_fused_gelu_0', """
import triton
import triton.language as tl

@triton.jit
def triton_poi_fused_gelu_0(in_ptr0, out_ptr0, xnumel, XBLOCK : tl.constexpr):
    xnumel = 2048
    xoffset = tl.program_id(0) * XBLOCK
""", device_str='cuda')

triton_per_fused_add_native_layer_norm_1 = async_compile.triton('triton_per_fused_add_native_layer_norm_1', """
@triton.jit
def triton_per_fused_add_native_layer_norm_1(in_out_ptr0, in_out_ptr1, in_ptr0, in_ptr1, in_ptr2, in_ptr3, out_ptr0,
                                             xnumel, r0_numel, XBLOCK : tl.constexpr):
    xnumel = 8
""", device_str='cuda')

class Runner:
    def call(self, args):
        primals_1, primals_2, primals_3, primals_4, primals_5, primals_6, primals_7 = args
        args.clear()
        with torch.cuda._DeviceGuard(0):
            torch.cuda.set_device(0)
            buf0 = empty_strided_cuda((8, 256), (256, 1), torch.float32)
            # [Provenance debug handles] extern_kernels.addmm:1
            extern_kernels.addmm(primals_2, primals_3, reinterpret_tensor(primals_1, (64, 256), (1, 64), 0), alpha=1, beta=1, out=buf0)
            buf1 = empty_strided_cuda((8, 256), (256, 1), torch.float32)
            # [Provenance debug handles] triton_poi_fused_gelu_0:2
            stream0 = get_raw_stream(0)
            triton_poi_fused_gelu_0.run(buf0, buf1, 2048, stream=stream0)
            buf2 = empty_strided_cuda((8, 64), (64, 1), torch.float32)
            # [Provenance debug handles] extern_kernels.addmm:3
            extern_kernels.addmm(primals_5, buf1, reinterpret_tensor(primals_4, (256, 64), (1, 256), 0), alpha=1, beta=1, out=buf2)
            buf3 = empty_strided_cuda((8, 1), (1, 8), torch.float32)
            buf4 = buf3; del buf3  # reuse
            buf5 = empty_strided_cuda((8, 1), (1, 8), torch.float32)
            buf6 = reinterpret_tensor(buf5, (8, 1), (1, 1), 0); del buf5  # reuse
            buf7 = empty_strided_cuda((8, 64), (64, 1), torch.float32)
            # [Provenance debug handles] triton_per_fused_add_native_layer_norm_1:4
            triton_per_fused_add_native_layer_norm_1.run(buf4, buf6, primals_3, buf2, primals_6, primals_7, buf7, 8, 64, stream=stream0)
        return (buf7, primals_3, primals_4, primals_6, buf0, buf1, buf2, reinterpret_tensor(buf4, (8, 1), (1, 1), 0), buf6, )

def get_args():
    from torch._dynamo.testing import rand_strided
    primals_1 = rand_strided((256, 64), (64, 1), device='cuda:0', dtype=torch.float32)
    primals_2 = rand_strided((256, ), (1, ), device='cuda:0', dtype=torch.float32)
    primals_3 = rand_strided((8, 64), (64, 1), device='cuda:0', dtype=torch.float32)
    primals_4 = rand_strided((64, 256), (256, 1), device='cuda:0', dtype=torch.float32)
    primals_5 = rand_strided((64, ), (1, ), device='cuda:0', dtype=torch.float32)
    primals_6 = rand_strided((64, ), (1, ), device='cuda:0', dtype=torch.float32)
    primals_7 = rand_strided((64, ), (1, ), device='cuda:0', dtype=torch.float32)
    return [primals_1, primals_2, primals_3, primals_4, primals_5, primals_6, primals_7]
'''


def _read(part: str) -> str:
    with gzip.open(os.path.join(INDUCTOR, f"block_0.{part}.txt.gz"), "rt") as f:
        return f.read()


def _texts():
    graph = _read("graph").replace("]cpu\"", "]cuda:0\"")
    provenance = json.loads(_read("provenance"))
    provenance["cppCodeToPost"] = {
        f"{RENAMED.get(k.split(':')[0], k.split(':')[0])}:{k.split(':')[1]}": v
        for k, v in provenance["cppCodeToPost"].items()}
    origins = {post: pre[0] for post, pre in provenance["postToPre"].items()}
    return graph, json.dumps(provenance), origins


def test_triton_kernel_names_are_fused_kernels():
    assert is_fused_kernel("triton_poi_fused_gelu_0")
    assert is_fused_kernel("triton_per_fused_add_native_layer_norm_1")
    assert is_fused_kernel("triton_red_fused_sum_2") and is_fused_kernel("triton_tem_fused_mm_0")
    assert not is_fused_kernel("triton_helper") and not is_fused_kernel("aten::mm")


def test_a_triton_wrapper_is_costed_like_the_cpp_one():
    graph_text, provenance, origins = _texts()
    graph = read_compiled_graph("k", WRAPPER, graph_text, provenance, node_origins=origins)
    gelu = graph.kernels["triton_poi_fused_gelu_0"]
    norm = graph.kernels["triton_per_fused_add_native_layer_norm_1"]
    # GELU: reads fc1's output [B, H], writes [B, H]; Inductor's GELU is 5 elementwise ops
    assert gelu.reason is None and gelu.flops == 5 * B * H
    assert (gelu.bytes_read, gelu.bytes_written) == (4 * B * H, 4 * B * H)
    # add + LayerNorm: reads x and fc2's output [B, D], weight and bias [D] and the two [B, 1]
    # statistics (in-out); writes the output [B, D] and the statistics
    assert (norm.bytes_read, norm.bytes_written) == (4 * (2 * B * D + 2 * D + 2 * B), 4 * (B * D + 2 * B))
    assert norm.reason is None and norm.flops > 0
    # eager and compulsory bytes, by hand as for the C++ kernels (tests/timing/test_fusion_traffic.py)
    assert gelu.eager_bytes == 2 * 4 * B * H
    assert norm.eager_bytes == 4 * 3 * B * D + 4 * (B * D + 2 * D + B * D + 2 * B)
    assert gelu.compulsory == (0, 4 * B * H) and norm.compulsory == (4 * 2 * D, 4 * (2 * B + B * D))
    assert set(graph.externs) == {"aten.addmm"} and len(graph.externs["aten.addmm"]) == 2


def _x(cat, name, ts, dur, tid=1, pid=1, **args):
    return {"ph": "X", "cat": cat, "name": name, "ts": ts, "dur": dur, "pid": pid, "tid": tid, "args": args}


def _launch(name, ts, dur, kernel_ts, kernel_dur, corr, dims):
    """A Triton launch as Inductor records it (with ``record_shapes``): its host range with its
    arguments' shapes, the driver's launch inside, the device kernel of the same name."""
    return [_x("cpu_op", name, ts, dur, kernel_backend="triton", kernel_name=name, **{"Input Dims": dims}),
            _x("cuda_driver", "cuLaunchKernel", ts + 1, dur - 2, correlation=corr),
            _x("kernel", name, kernel_ts, kernel_dur, tid=7, pid=0, correlation=corr, stream=7, device=0)]


def test_a_saved_gpu_trace_of_a_compiled_step_times_and_counts_each_triton_kernel(tmp_path):
    graph_text, provenance, origins = _texts()
    key = "fxkeyblock0"
    events = [
        _x("user_annotation", "ProfilerStep#0", 0, 200),
        _x("cpu_op", "Torch-Compiled Region: 0/0", 5, 180),
        _x("user_annotation", f"## Call CompiledFxGraph {key} ##", 10, 170),
        *_launch("triton_poi_fused_gelu_0", 40, 10, 60, 4, 2, [[B, H], [B, H], []]),
        *_launch("triton_per_fused_add_native_layer_norm_1", 100, 10, 120, 6, 4,
                 [[B, 1], [B, 1], [B, D], [B, D], [D], [D], [B, D], [], []]),
    ]
    path = tmp_path / "compiled_gpu.json"
    path.write_text(json.dumps({"traceEvents": events, "deviceProperties": [
        {"id": 0, "name": "Hand GPU", "numSms": 2, "totalGlobalMem": 1000}]}))
    with gzip.open(str(path) + SIDECAR_SUFFIX, "wt") as f:
        json.dump({"format": "torch_roofline.inductor/1", "graphs": {key: {
            "wrapper": WRAPPER, "graph": graph_text, "provenance": provenance, "node_origins": origins}}}, f)
    report = from_trace(str(path), roof=FLAT)
    rows = {o.op: o for o in report.ops}
    gelu, norm = rows["triton_poi_fused_gelu_0"], rows["triton_per_fused_add_native_layer_norm_1"]
    # each kernel a row: timed by its device kernel, counted from the compiled graph
    assert gelu.time_s == pytest.approx(4 * US) and norm.time_s == pytest.approx(6 * US)
    assert gelu.counted and gelu.flops == 5 * B * H and gelu.bytes_read == 4 * B * H
    assert gelu.eager_bytes == 2 * 4 * B * H and norm.counted
    assert report.totals.eager_bytes is not None


def test_kernels_replayed_by_a_cuda_graph_are_listed_with_the_reason():
    # mode="reduce-overhead": one cudaGraphLaunch inside the compiled region replays every kernel
    from torch_roofline.timing.attribution import attribute
    from torch_roofline.timing.trace import load_trace

    trace = {"traceEvents": [
        _x("user_annotation", "roofline::", 0, 100),
        _x("cpu_op", "Torch-Compiled Region: 0/0", 10, 60),
        _x("cuda_runtime", "cudaGraphLaunch", 20, 5, correlation=50),
        _x("kernel", "triton_poi_fused_gelu_0", 30, 8, tid=7, pid=0, correlation=50, stream=7, device=0),
        _x("kernel", "triton_per_fused_native_layer_norm_1", 40, 6, tid=7, pid=0, correlation=50, stream=7, device=0),
    ], "deviceProperties": [{"id": 0, "name": "Hand GPU", "numSms": 2, "totalGlobalMem": 1000}]}
    timing = attribute(load_trace(trace))
    assert [a.name for a in timing.unattributed] == ["triton_poi_fused_gelu_0", "triton_per_fused_native_layer_norm_1"]
    assert all("replayed by a CUDA graph" in a.reason and "reduce-overhead" in a.reason for a in timing.unattributed)
