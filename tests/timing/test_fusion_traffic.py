"""What torch.compile's fused kernels would move unfused (eager bytes) and must move at least
(compulsory bytes), per kernel, per module and per step (issue 15, build point 2).

Oracles: the eager count of the same op on the same shapes (``torch_roofline.count``, whose op
memory model is derived by hand in tests/count/test_count_exact.py), and the buffer sizes the
generated code allocates, added up by hand below.
"""

from __future__ import annotations

from _paths import TESTS_DIR
import gzip
import json
import os

import pytest
import torch
from torch import nn

import torch_roofline
from torch_roofline import RooflineProfiler
from torch_roofline.devices import Device
from torch_roofline.timing._fusion_traffic import group_ops
from torch_roofline.timing.inductor import read_compiled_graph

INDUCTOR = os.path.join(TESTS_DIR, "data", "inductor")
FLAT = Device(name="flat-fusion-traffic-test", peak_flops={"fp32": 1e11}, bandwidth=1e10)


def _read(name: str, part: str) -> str:
    with gzip.open(os.path.join(INDUCTOR, f"{name}.{part}.txt.gz"), "rt") as f:
        return f.read()


def _eager_op_bytes(module: nn.Module, *inputs: torch.Tensor) -> int:
    total = torch_roofline.count(module, inputs).total
    return total.bytes_read + total.bytes_written


class _Add(nn.Module):
    def forward(self, a, b):
        return a + b


def test_ops_group_back_into_the_aten_op_they_came_from():
    # mul and erf came from one gelu and feed each other; the second gelu's mul is another op,
    # and so is an op whose origin was not recorded
    order = ["mul", "erf", "out", "mul_1", "x"]
    refs = {"mul": ["a"], "erf": ["mul"], "out": ["erf"], "mul_1": ["out"], "x": ["mul_1"]}
    origins = {"mul": "aten.gelu.default@1", "erf": "aten.gelu.default@1", "out": "aten.gelu.default@1",
               "mul_1": "aten.gelu.default@2"}
    assert group_ops(order, refs, origins) == [["mul", "erf", "out"], ["mul_1"], ["x"]]
    # two ops of one autograd node with the same origin that do not feed each other stay apart
    assert group_ops(["mm", "mm_1"], {"mm": ["g", "w"], "mm_1": ["g", "x"]},
                     {"mm": "aten.mm.default@7", "mm_1": "aten.mm.default@7"}) == [["mm"], ["mm_1"]]


def test_the_recorded_block_s_kernels_eager_bytes_are_the_eager_ops_and_compulsory_the_first_touches():
    # tests/data/inductor/record.py: Linear(64, 256) -> GELU -> Linear(256, 64) -> + x -> LayerNorm(64), batch 8,
    # the forward graph of a training step. Each op's origin: the pre-grad op torch's provenance
    # names for it (postToPre), which is what the recording pass records for a forward op.
    provenance = _read("block_0", "provenance")
    origins = {post: pre[0] for post, pre in json.loads(provenance)["postToPre"].items()}
    graph = read_compiled_graph("block_0", _read("block_0", "wrapper"), _read("block_0", "graph"), provenance,
                                _read("block_0", "stacks"), node_origins=origins)
    gelu = graph.kernels["cpp_fused_gelu_0"]
    norm = graph.kernels["cpp_fused_add_native_layer_norm_1"]
    # GELU fused alone: what eager aten.gelu moves on the same (8, 256) input, which is also the
    # kernel's own traffic (nothing to fuse with)
    assert gelu.eager_bytes == _eager_op_bytes(nn.GELU(), torch.randn(8, 256)) == 2 * 8 * 256 * 4
    assert gelu.bytes_read + gelu.bytes_written == gelu.eager_bytes
    # the residual add and LayerNorm, fused: eager, two ops (the graph returns LayerNorm's mean
    # and rstd for the backward, as eager native_layer_norm writes them)
    x = torch.randn(8, 64)
    assert norm.eager_bytes == _eager_op_bytes(_Add(), x, torch.randn(8, 64)) + _eager_op_bytes(nn.LayerNorm(64), x)
    assert norm.bytes_read + norm.bytes_written < norm.eager_bytes  # the sum stays in registers
    # Compulsory, by hand from the wrapper's call(): the GELU kernel reads buf0, which the extern
    # addmm wrote (no first touch), and is the first to write buf1 (8 x 256 floats). The
    # LayerNorm kernel is the first to read primals_6 and primals_7 (64 floats each; primals_3
    # and buf2 were touched by the addmm calls) and to write buf4, buf6 (8 floats each: mean,
    # rstd; allocated here, so their in_out reads are no compulsory reads) and buf7 (8 x 64).
    assert gelu.compulsory == (0, 8 * 256 * 4)
    assert norm.compulsory == (2 * 64 * 4, (8 + 8 + 8 * 64) * 4)


def test_without_recorded_origins_the_eager_bytes_are_unknown_with_the_reason(monkeypatch):
    from torch_roofline.timing import inductor

    monkeypatch.setattr(inductor, "_NODE_ORIGINS", {})  # nothing this process compiled while recording
    graph = read_compiled_graph("block_0", _read("block_0", "wrapper"), _read("block_0", "graph"),
                                _read("block_0", "provenance"), _read("block_0", "stacks"))
    gelu = graph.kernels["cpp_fused_gelu_0"]
    assert gelu.eager_bytes is None and "not recorded" in gelu.eager_why
    assert gelu.compulsory == (0, 8 * 256 * 4)  # the wrapper alone gives these


class Block(nn.Module):
    def __init__(self, d: int = 64, h: int = 256) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2, self.ln = nn.Linear(d, h), nn.GELU(), nn.Linear(h, d), nn.LayerNorm(d)

    def forward(self, x):
        return self.ln(x + self.fc2(self.act(self.fc1(x))))


@pytest.fixture(scope="module")
def compiled_reports():
    """A Block compiled inside the profiler: an inference step and a training step."""
    import torch._dynamo

    torch._dynamo.reset()
    torch.manual_seed(0)
    model, x = Block(), torch.randn(16, 64)
    run = torch.compile(model)

    def infer():
        with torch.no_grad():
            run(x)

    def train():
        run.zero_grad(set_to_none=True)
        run(x).sum().backward()

    out = {}
    for name, step in (("infer", infer), ("train", train)):
        prof = RooflineProfiler(run, roof=FLAT)
        with prof:  # compiles here
            step()
        with prof:
            step()
        out[name] = prof.report()
    eager_infer = torch_roofline.count(lambda: infer_eager(model, x), modules=model)
    return out, eager_infer, x


def infer_eager(model, x):
    with torch.no_grad():
        model(x)


def test_a_compiled_step_s_eager_bytes_are_the_eager_count_of_the_same_step(compiled_reports):
    reports, eager, x = compiled_reports
    report = reports["infer"]
    totals = eager.total
    eager_bytes = totals.bytes_read + totals.bytes_written
    # The same ops, run one by one: eager's count, less LayerNorm's mean and rstd (16 floats
    # each), which eager native_layer_norm writes and the compiled inference graph never makes.
    assert report.totals.eager_bytes == eager_bytes - 2 * 16 * 4
    compiled = report.totals.bytes_read + report.totals.bytes_written
    assert compiled < report.totals.eager_bytes  # fusion saved traffic
    assert compiled >= report.totals.compulsory_bytes
    rows = {(m.name, m.phase): m for m in report.modules}
    act = rows[("act", "all")]
    assert act.eager_bytes == _eager_op_bytes(nn.GELU(), torch.randn(16, 256)) == act.bytes_read + act.bytes_written
    assert rows[("", "all")].eager_bytes == report.totals.eager_bytes
    text = report.table()
    assert "torch.compile traffic per module" in text and "headroom left" in text


def test_a_compiled_training_step_has_eager_and_compulsory_bytes_for_every_kernel(compiled_reports):
    reports, _, _ = compiled_reports
    report = reports["train"]
    kernels = [o for o in report.ops if "cpp_fused" in o.op]
    assert {o.phase for o in kernels} == {"forward", "backward"}
    for o in kernels:
        assert o.eager_bytes is not None and o.eager_bytes >= o.bytes_read + o.bytes_written, o.op
        assert 0 <= o.compulsory_bytes <= o.bytes_read + o.bytes_written, o.op
    # the step's numbers add up from its rows; an eager op's eager bytes are its op bytes
    counted = [o for o in report.ops if o.counted]
    assert report.totals.eager_bytes == sum(
        o.eager_bytes if o.eager_bytes is not None else o.bytes_read + o.bytes_written for o in counted)
    rebuilt = type(report).from_json(report.to_json())
    assert rebuilt.totals.eager_bytes == report.totals.eager_bytes
    assert [m.eager_bytes for m in rebuilt.modules] == [m.eager_bytes for m in report.modules]


def test_an_eager_report_has_no_eager_bytes_column_values():
    model = nn.Linear(8, 4)
    prof = RooflineProfiler(model, roof=FLAT)
    with prof:
        model(torch.randn(2, 8)).sum().backward()
    report = prof.report()
    assert report.totals.eager_bytes is None
    assert all(m.eager_bytes is None for m in report.modules) and all(o.eager_bytes is None for o in report.ops)
    assert "torch.compile traffic" not in report.table()


def test_a_graph_with_symbolic_sizes_says_it_was_compiled_with_dynamic_shapes():
    # the recorded Block's texts with its batch made a symbol, as torch.compile(dynamic=True) writes them
    wrapper = _read("block_0", "wrapper").replace("(8, ", "(s0, ")
    text = _read("block_0", "graph").replace("[8, ", "[s0, ")
    graph = read_compiled_graph("block_0", wrapper, text, _read("block_0", "provenance"))
    gelu = graph.kernels["cpp_fused_gelu_0"]
    assert gelu.bytes_read is None and "dynamic shapes" in gelu.reason
