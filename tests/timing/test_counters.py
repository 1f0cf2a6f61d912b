"""Hardware-counter FLOPs: the Nsight Compute formula, checked by hand on real kernels."""

from _paths import TESTS_DIR
import logging
import os

from torch_roofline.timing.counters import kernel_counters, sass_flops
from torch_roofline.timing.trace import load_trace

DATA = os.path.join(TESTS_DIR, "data")
COUNTERS = os.path.join(DATA, "alexnet_a100_forward_cupti_counters.kineto.json.gz")
TINY = os.path.join(DATA, "tinyconv_cpu_train.kineto.json.gz")

_M = "smsp__sass_thread_inst_executed_op_{}_pred_on.sum"


def test_formula_on_a_synthetic_kernel():
    metrics = {_M.format("fadd"): 10, _M.format("fmul"): 5, _M.format("ffma"): 100,
               _M.format("dadd"): 1, _M.format("dmul"): 2, _M.format("dfma"): 3}
    # fp32: 10 + 5 + 2*100 = 215; fp64: 1 + 2 + 2*3 = 9; fp16 counters absent -> no key.
    assert dict(sass_flops(metrics)) == {"fp32": 215, "fp64": 9}


def test_hand_checked_kernels_of_the_a100_fixture():
    kernels = kernel_counters(load_trace(COUNTERS))
    assert len(kernels) == 77
    # Range 0, distribution_elementwise_grid_stride_kernel (torch.rand):
    #   ffma 38731776, fmul 0, fadd 0; hfma 4866048, hmul 0, hadd 0; d* all 0
    #   fp32 = 2*38731776 = 77463552; fp16 = 2*4866048 = 9732096
    k0 = kernels[0]
    assert k0.name.startswith("void at::native::(anonymous namespace)::distribution_elementwise")
    assert dict(k0.flops) == {"fp64": 0, "fp32": 77463552, "fp16": 9732096}
    assert k0.op == "aten.rand" and k0.cpu_op == "aten::uniform_"
    # Range 1, "__missing__" (first conv, cuDNN): ffma 9119334400, fmul 24780800, fadd 0
    #   fp32 = 24780800 + 2*9119334400 = 18263449600
    k1 = kernels[1]
    assert k1.name == "__missing__"
    assert k1.flops["fp32"] == 18263449600 and k1.total_flops == 18263449600
    assert k1.op == "aten.convolution" and k1.cpu_op == "aten::cudnn_convolution"  # row under conv2d
    # Range 2, elementwise CUDAFunctor_add (conv bias add): ffma 24780800, hfma 49561600
    #   fp32 = 2*24780800 = 49561600; fp16 = 2*49561600 = 99123200
    k2 = kernels[2]
    assert k2.flops["fp32"] == 49561600 and k2.flops["fp16"] == 99123200
    assert k2.cpu_op == "aten::add_" and k2.op == "aten.convolution"


def test_counters_join_the_same_ops_as_timing():
    kernels = kernel_counters(load_trace(COUNTERS))
    sgemm = [k for k in kernels if k.name == "ampere_sgemm_32x32_sliced1x4_tn"]
    assert len(sgemm) == 6 and {(k.op, k.cpu_op) for k in sgemm} == {("aten.addmm", "aten::addmm")}
    relu = [k for k in kernels if k.cpu_op == "aten::clamp_min_"]
    assert {k.op for k in relu} == {"aten.relu_"}
    with_names = kernel_counters(load_trace(COUNTERS), op_names={"aten.convolution"})
    assert with_names[1].op == "aten.convolution"
    assert with_names[30].op is None  # sgemm: not inside a counted op
    assert all(k.dram_bytes is None for k in kernels)  # fixture has no DRAM counters


def test_dram_counters_and_unmatched_launches(caplog):
    trace = load_trace({"traceEvents": [
        {"ph": "X", "cat": "cuda_profiler_range", "name": "k", "ts": 5, "dur": 1, "pid": 0,
         "tid": 0, "args": {"dram__bytes_read.sum": 4096.0, "dram__bytes_write.sum": 1024}},
    ]})
    with caplog.at_level(logging.WARNING):
        (k,) = kernel_counters(trace)
    assert "1 counter ranges but 0 kernel launches" in caplog.text
    assert (k.dram_bytes_read, k.dram_bytes_written, k.dram_bytes) == (4096, 1024, 5120)
    assert k.op is None and k.module == "" and dict(k.flops) == {}


def test_no_counters_in_a_cpu_trace():
    assert kernel_counters(load_trace(TINY)) == ()
