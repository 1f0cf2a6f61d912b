"""torch.compile'd models under the profiler (issue 15, first part): the fused kernels a compiled
model runs are rows of their own, timed, never dropped; the profiler does not make the model
compile again; a compiled model whose kernels were not recorded gets a note saying how to.

A fused kernel's bytes come from its compiled graph's generated code (its arguments' sizes),
its FLOPs from the ops torch says it fused (provenance; for a backward graph only when it
compiled while the profiler recorded); the oracles are hand derivations from the Block's
shapes. Kernels torch gives no provenance for (a backward graph compiled before) are uncounted
rows with the reason, and still show their bytes. Which module each kernel is under:
``tests/timing/test_kernel_sites.py``. The matrix work a compiled
CPU model runs outside the fused kernels (Inductor's extern ``mm``/``addmm`` calls) is counted
as recorded, and checked against the hand derivation and ``FlopCounterMode`` around the
eager step.
"""

from __future__ import annotations

from _paths import TESTS_DIR
import atexit
import gzip
import os
import re
import shutil
import tempfile
from unittest import mock

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from torch_roofline import RooflineProfiler, from_trace
from torch_roofline.devices import Device
from torch_roofline.timing.attribution import attribute
from torch_roofline.timing.compiled import (compiled_kernels_note, compiled_regions, compiled_regions_note,
                                          is_fused_kernel)
from torch_roofline.timing.inductor import kernel_name, read_compiled_graph
from torch_roofline.timing.trace import load_trace

FLAT = Device(name="flat-compile-test", peak_flops={"fp32": 1e11}, bandwidth=1e10)
B, D, H = 8, 64, 256  # batch, model width, hidden width

needs_compiler = pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                                    reason="torch.compile's CPU backend needs a C++ compiler")


class Block(nn.Module):
    """An MLP block with a residual and a LayerNorm: two matmuls, elementwise work to fuse."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2, self.ln = nn.Linear(D, H), nn.GELU(), nn.Linear(H, D), nn.LayerNorm(D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln(x + self.fc2(self.act(self.fc1(x))))


def _frames() -> int:
    import torch._dynamo.utils as dynamo_utils

    return sum(dynamo_utils.counters["frames"].values())


def _compiled(kernel_profile: bool, in_place: bool = False):
    import torch._dynamo
    import torch._inductor.config as inductor_config

    torch._dynamo.reset()
    torch.manual_seed(0)
    model = Block()
    x = torch.randn(B, D)
    # A compile cache of its own: torch keys its cache by the graph, not by the source, so the
    # same Block compiled from another file (examples/compiled_vs_eager.py, run by another test
    # with these sizes) would come back with that file's stack traces.
    private = {"TORCHINDUCTOR_CACHE_DIR": tempfile.mkdtemp(prefix="torch-roofline-test-compile-")}
    atexit.register(shutil.rmtree, private["TORCHINDUCTOR_CACHE_DIR"], ignore_errors=True)
    with mock.patch.dict(os.environ, private), \
            inductor_config.patch({"cpp.enable_kernel_profile": kernel_profile, "trace.provenance_tracking_level": 1}):
        if in_place:
            model.compile()
            run = model
        else:
            run = torch.compile(model)
        run(x).sum().backward()  # compiles (forward and backward) outside the profiler
        run(x).sum().backward()
    return model, run, x


def _profile_once(model, x):
    """One training step of ``model`` under the profiler: (profiler, report, frames compiled
    during it)."""
    frames = _frames()
    prof = RooflineProfiler(model, roof=FLAT)
    with prof:
        model(x).sum().backward()
    report = prof.report()
    return prof, report, _frames() - frames


def _matrix_flops(report) -> int:
    return sum(o.flops for o in report.ops if o.op in ("aten.mm", "aten.addmm") and o.flops)


def _check_kernel_costs(rows, report):
    """The Block's fused kernels, by hand from its shapes (fp32, 4 bytes per element)."""
    # by kernel name without the graph's number (which counts the graphs compiled in the process)
    by_op = {kernel_name(o.op): o for o in rows}
    # Forward GELU: reads fc1's output [B, H], writes its activation [B, H]; Inductor's GELU is
    # x * 0.5 * (1 + erf(x * 0.7071...)): 5 elementwise ops, 1 FLOP per element each (the eager
    # aten.gelu counts 1 per element in all: decomposed ops are what the kernel computes).
    gelu = by_op["cpp_fused_gelu_0"]
    assert gelu.counted and gelu.flops == 5 * B * H
    assert (gelu.bytes_read, gelu.bytes_written) == (4 * B * H, 4 * B * H)
    assert gelu.bound == "memory" or gelu.bound == "overhead"  # placed on the roofline
    # Forward add + LayerNorm: reads x and fc2's output [B, D], weight and bias [D], and its two
    # per-row statistics buffers [B, 1] (in-out); writes the output [B, D] and the statistics.
    norm = by_op["cpp_fused_add_native_layer_norm_1"]
    assert norm.counted and norm.flops > 0
    assert norm.bytes_read == 4 * (2 * B * D + 2 * D + 2 * B) and norm.bytes_written == 4 * (B * D + 2 * B)
    # Backward kernels: torch records no provenance for them: uncounted with the reason, bytes shown.
    backward = [o for o in rows if o.phase == "backward"]
    assert backward and all(not o.counted and o.flops is None and o.bytes_read > 0 for o in backward)
    assert {u.op for u in report.uncounted} == {o.op for o in backward}
    assert any("torch recorded no provenance" in n for n in report.notes), report.notes


def _check_kernel_sites(rows, report):
    """Each kernel under the module whose ops it computes (torch's stack traces of its ops), and
    each extern matmul under its Linear. The Block's submodules ran inside compiled code, which
    records no module range: a submodule holding kernels gets a row timed by them, the others
    none."""
    where = {(kernel_name(o.op), o.phase): o.name for o in rows}
    assert where[("cpp_fused_gelu_0", "forward")] == "act"  # GELU's own ops
    # the residual add (the Block's own code) fused with ln's normalisation: their common parent
    assert where[("cpp_fused_add_native_layer_norm_1", "forward")] == ""
    assert where[("cpp_fused_sum_2", "backward")] == "fc1"  # fc1's bias gradient: a sum over the batch
    assert where[("cpp_fused_gelu_gelu_backward_sum_1", "backward")] == ""  # act's gradient + fc2's bias
    # the extern matmuls (recorded as aten ops) under the Linear each one computes, by the order
    # of the graph's extern calls: fc1's and fc2's forward addmm, their backward mm
    externs = {(o.op, o.phase, o.name) for o in report.ops if o.op in ("aten.addmm", "aten.mm")}
    assert {("aten.addmm", "forward", "fc1"), ("aten.addmm", "forward", "fc2"),
            ("aten.mm", "backward", "fc2")} <= externs and all(name in ("fc1", "fc2") for _, _, name in externs)
    inner = [m for m in report.modules if m.name not in ("", "(outside modules)")]
    assert {m.name for m in inner} == {"act", "fc1", "fc2"}
    assert all(m.type.endswith("(in compiled code)") for m in inner)
    for m in inner:
        if m.phase != "all":  # timed by its kernels and extern ops: inclusive = self = their time
            mine = sum(o.time_s for o in report.ops if o.name == m.name and o.phase == m.phase)
            assert m.time_s == pytest.approx(mine, rel=1e-9) and m.self_time_s == pytest.approx(mine, rel=1e-9)
    # each module's FLOPs are named too when this process saw the graph compile while recording
    # (another test's identical Block may have): either form
    shared = re.compile(r"cpp_fused_add_native_layer_norm_1 \(forward\) under \(root\): ops of \(root\)"
                        r"( \([\d,]+ FLOPs\))?, ln\b")
    assert any("under their common parent" in n and shared.search(n) for n in report.notes), report.notes


# --------------------------------------------------------------------------- without compiling


def test_fused_kernel_names():
    assert is_fused_kernel("graph_0_cpp_fused_gelu_0")
    assert is_fused_kernel("graph_12_cpp_fused_add_native_layer_norm_backward_3")
    assert is_fused_kernel("cpp_fused_sum_2")
    assert not is_fused_kernel("aten::mm")
    assert not is_fused_kernel("graph_0_inductor_wrapper_call")
    assert not is_fused_kernel("cpp_fused")


def _x(name, ts, dur, cat="cpu_op", **args):
    return {"ph": "X", "cat": cat, "name": name, "ts": ts, "dur": dur, "pid": 1, "tid": 1, "args": args}


def test_every_fused_kernel_of_a_trace_is_a_timed_row_in_its_module():
    # A hand-built compiled forward: the region is called inside module `blk`'s range and runs
    # two fused kernels and one extern matmul; a third kernel runs in the root, outside `blk`.
    trace = load_trace({"traceEvents": [
        _x("roofline::", 0, 100),
        _x("roofline::blk", 5, 60),
        _x("Torch-Compiled Region: 0/0", 6, 58),
        _x("graph_0_cpp_fused_gelu_0", 10, 7),
        _x("aten::mm", 20, 15, **{"Input Dims": [[8, 64], [64, 256]], "Input type": ["float", "float"]}),
        _x("graph_0_cpp_fused_add_native_layer_norm_1", 40, 3),
        _x("graph_1_cpp_fused_sum_0", 80, 2),
    ]})
    timing = attribute(trace, outside=True)
    rows = {(o.op, o.module): o.time_s for o in timing.ops}
    assert rows == pytest.approx({
        ("graph_0_cpp_fused_gelu_0", "blk"): 7e-6,
        ("aten.mm", "blk"): 15e-6,
        ("graph_0_cpp_fused_add_native_layer_norm_1", "blk"): 3e-6,
        ("graph_1_cpp_fused_sum_0", ""): 2e-6,  # in the root's range, outside `blk`
    })
    assert compiled_kernels_note(trace) is None  # kernels were recorded


def test_a_compiled_region_without_recorded_kernels_says_how_to_record_them():
    trace = load_trace({"traceEvents": [
        _x("Torch-Compiled Region: 0/0", 6, 58),
        _x("aten::mm", 20, 15, **{"Input Dims": [[8, 64], [64, 256]], "Input type": ["float", "float"]}),
    ]})
    note = compiled_kernels_note(trace)
    assert note is not None and "enable_kernel_profile = True" in note and "1 compiled region" in note
    assert compiled_kernels_note(load_trace({"traceEvents": [_x("aten::mm", 20, 15)]})) is None


def test_compiled_regions_list_graph_breaks_with_their_module_time_and_recompilations():
    # Frame 0 and, after a graph break, frame 1 run inside module `blk`, twice each over two
    # steps; frame 0 was recompiled inside the window (version 0/1 ran in the second step).
    events = [_x("roofline::", 0, 1000), _x("roofline::blk", 1, 998)]
    for step, t0 in enumerate((10, 500)):
        events += [_x(f"Torch-Compiled Region: 0/{step}", t0, 100), _x("aten::add", t0 + 150, 5),
                   _x("Torch-Compiled Region: 1/0", t0 + 200, 40)]
    events.append(_x("dynamo_data: compile_id=0/1", 300, 1, cat="user_annotation"))
    trace = load_trace({"traceEvents": events})
    regions = compiled_regions(trace)
    assert [(r.frame, r.versions, r.calls, r.module) for r in regions] == [
        ("0", ("0/0", "0/1"), 2, "blk"), ("1", ("1/0",), 2, "blk")]
    assert [r.time_s for r in regions] == pytest.approx([200e-6, 80e-6])
    note = compiled_regions_note(trace, steps=2, graph_breaks=["Call to `torch._dynamo.graph_break()`"])
    assert "2 compiled frame(s) ran per step" in note
    assert "frame 0: 1 call(s), 0.1 ms in 'blk', versions 0/0, 0/1" in note
    assert "frame 1: 1 call(s), 0.04 ms in 'blk'" in note
    assert "graph breaks split" in note and "graph_break()" in note
    assert "Compiled inside the recorded steps: 0/1" in note
    assert compiled_regions_note(load_trace({"traceEvents": [_x("aten::mm", 0, 1)]})) is None


# --------------------------------------------------------------------------- generated code, recorded


INDUCTOR = os.path.join(TESTS_DIR, "data", "inductor")


def _fixture(name):
    def read(part):
        with gzip.open(os.path.join(INDUCTOR, f"{name}.{part}.txt.gz"), "rt") as f:
            return f.read()

    return read_compiled_graph(name, read("wrapper"), read("graph"), read("provenance") or None)


def test_kernel_costs_of_the_block_s_forward_graph_by_hand():
    kernels = _fixture("block_0").kernels  # tests/data/inductor/record.py: the Block, batch 8
    gelu = kernels["cpp_fused_gelu_0"]
    assert gelu.reason is None and gelu.flops == 5 * B * H  # mul, mul, erf, add, mul: 1 FLOP/element each
    assert (gelu.bytes_read, gelu.bytes_written, gelu.dtype) == (4 * B * H, 4 * B * H, "float32")
    norm = kernels["cpp_fused_add_native_layer_norm_1"]
    # x + fc2(...): B*D adds; var_mean of B rows of D; + eps and rsqrt per row; (x - mean) * rstd
    # * weight + bias: 4*B*D. var_mean by this package's formula (count.formulas): 4 per element.
    assert norm.flops == B * D + 4 * B * D + 2 * B + 4 * B * D
    assert norm.bytes_read == 4 * (2 * B * D + 2 * D + 2 * B) and norm.bytes_written == 4 * (B * D + 2 * B)


def test_kernels_torch_gives_no_provenance_for_keep_their_bytes_and_the_reason():
    kernels = _fixture("block_1").kernels  # the backward graph: provenance is {"version": 2.0}
    assert kernels and all(k.flops is None and "no provenance" in k.reason for k in kernels.values())
    assert all(k.bytes_read > 0 and k.bytes_written > 0 for k in kernels.values())
    # fc1 bias gradient: the sum over the batch of a [B, H] gradient: reads B x H, writes H
    assert (kernels["cpp_fused_sum_2"].bytes_read, kernels["cpp_fused_sum_2"].bytes_written) == (4 * B * H, 4 * H)


def test_imprecise_provenance_is_not_counted_twice_and_a_clean_kernel_is_counted():
    # resnet18, eval, batch 1, 64x64: Inductor converts conv weights' layout in kernels whose
    # provenance also lists the convolutions (run by extern kernels, counted in their aten rows)
    # and batch-norm ops of the kernels after them (counted there): a copy, 0 FLOPs of its own.
    kernels = _fixture("resnet18_eval_0").kernels
    layout = kernels["cpp_fused__native_batch_norm_legit_no_training_convolution_relu_0"]
    assert layout.flops == 0 and layout.reason is None and layout.relayout
    assert not kernels["cpp_fused__native_batch_norm_legit_no_training_add_mean_relu_15"].relayout
    assert layout.bytes_read == layout.bytes_written > 0  # a copy: what it reads it writes
    # The last kernel: batch norm (x - mean) * rstd * weight + bias, + residual, relu over
    # 512 x 2 x 2 elements (6 per element), rstd = rsqrt(var + eps) per channel (2 x 512), and
    # the global average pool (mean: 1 per element read).
    last = kernels["cpp_fused__native_batch_norm_legit_no_training_add_mean_relu_15"]
    n = 512 * 2 * 2
    assert last.reason is None and last.flops == 6 * n + 2 * 512 + n
    # reads the conv output and the residual (n each) and the 4 batch-norm vectors (512 each);
    # writes the pooled [1, 512]
    assert (last.bytes_read, last.bytes_written) == (4 * (2 * n + 4 * 512), 4 * 512)
    assert sum(k.flops is not None for k in kernels.values()) >= 3


# --------------------------------------------------------------------------- compiled for real


@needs_compiler
@pytest.mark.parametrize("in_place", [False, True], ids=["torch.compile(model)", "model.compile()"])
def test_profiling_a_compiled_model_runs_its_fused_kernels_as_rows_without_compiling_again(in_place, tmp_path):
    model, run, x = _compiled(kernel_profile=True, in_place=in_place)
    prof, report, compiled = _profile_once(run, x)
    frames = _frames()
    # Nothing was compiled again: no new Dynamo frame, no compile time in the step.
    assert compiled == 0
    assert not any("compiling" in n for n in report.notes), report.notes

    # Every fused kernel the trace recorded is in exactly one row, with its measured time.
    kernels = [e for e in prof.trace.events if e.kind == "cpu_op" and is_fused_kernel(e.name)]
    assert len(kernels) >= 3  # gelu forward, add+layer_norm forward, their backwards
    rows = [o for o in report.ops if is_fused_kernel(o.op)]
    assert sorted(o.op for o in rows) == sorted(e.name for e in kernels)
    assert sum(o.time_s for o in rows) == pytest.approx(sum(e.dur_s for e in kernels), rel=1e-9)
    _check_kernel_costs(rows, report)
    # Rows of a compiled model are named after the original module, never `_orig_mod`.
    assert not any("_orig_mod" in m.name for m in report.modules)
    assert next(m for m in report.modules if m.name == "").type == "Block (compiled)"
    _check_kernel_sites(rows, report)

    # The matrix work ran as Inductor's extern mm/addmm calls and is counted as recorded:
    # forward 2*B*D*H per Linear; backward grad-input of fc2 and grad-weights of both (the
    # input x needs no gradient), 2*B*D*H each. FlopCounterMode around the eager step agrees.
    hand = 2 * (2 * B * D * H) + 3 * (2 * B * D * H)
    with FlopCounterMode(display=False) as eager:
        model(x).sum().backward()
    assert eager.get_total_flops() == hand
    assert _matrix_flops(report) == hand

    # A plain torch.profiler trace of the same step, read back: the same kernel rows.
    with torch.profiler.profile(record_shapes=True) as plain:
        run(x).sum().backward()
    path = str(tmp_path / "compiled.json")
    plain.export_chrome_trace(path)
    saved = from_trace(path, roof=FLAT)  # read in the process that holds the compiled graphs
    saved_rows = [o for o in saved.ops if is_fused_kernel(o.op)]
    assert sorted(o.op for o in saved_rows) == sorted(e.name for e in kernels)
    _check_kernel_costs(saved_rows, saved)
    assert _frames() == frames
    if not in_place:
        _check_in_a_fresh_process(path)


def _check_in_a_fresh_process(path):
    """The saved trace read by another process: with the graphs saved beside it, the same
    kernel costs; without them, uncounted rows that say how to save them."""
    from torch_roofline.timing.inductor import SIDECAR_SUFFIX, save_compiled_graphs

    bare = path.replace(".json", "_bare.json")
    shutil.copy(path, bare)
    assert save_compiled_graphs(path + SIDECAR_SUFFIX) >= 2  # forward and backward graphs
    from _fresh import from_trace_elsewhere

    def read(p):
        rows, notes = from_trace_elsewhere(p)
        return {r["op"]: [r["flops"], r["bytes_read"], r["bytes_written"]] for r in rows if "cpp_fused" in r["op"]}, notes

    rows, _ = read(path)
    gelu = next(k for k in rows if kernel_name(k) == "cpp_fused_gelu_0")
    assert rows[gelu] == [5 * B * H, 4 * B * H, 4 * B * H]
    rows, notes = read(bare)
    assert rows[gelu][0] is None
    assert any("save_compiled_graphs" in n for n in notes), notes


@needs_compiler
def test_a_compiled_model_without_kernel_profiling_gets_the_note():
    _, run, x = _compiled(kernel_profile=False)
    _, report, _ = _profile_once(run, x)
    assert not any(is_fused_kernel(o.op) for o in report.ops)
    assert any("enable_kernel_profile = True" in n for n in report.notes), report.notes


@needs_compiler
def test_lightning_fit_of_a_compiled_module_does_not_compile_again_and_times_its_kernels(tmp_path):
    # trainer.fit(torch.compile(module)): Lightning compiles the module's forward and
    # training_step in place (from_compiled); the callback's windows must not recompile it.
    import lightning as L
    import torch._dynamo
    import torch._inductor.config as inductor_config

    from torch_roofline.lightning import Roofline

    class AutoEncoder(L.LightningModule):  # Lightning's README example, smaller
        def __init__(self) -> None:
            super().__init__()
            self.encoder = nn.Sequential(nn.Linear(D, 16), nn.ReLU(), nn.Linear(16, 3))
            self.decoder = nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, D))

        def forward(self, x):
            return self.decoder(self.encoder(x))

        def training_step(self, batch, batch_idx):
            (x,) = batch
            return nn.functional.mse_loss(self(x), x)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    def fit(callbacks):
        torch._dynamo.reset()
        torch.manual_seed(0)
        data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(48, D)), batch_size=B)
        trainer = L.Trainer(max_steps=5, callbacks=callbacks, logger=False, enable_progress_bar=False,
                            enable_checkpointing=False, enable_model_summary=False, default_root_dir=str(tmp_path))
        before = _frames()
        trainer.fit(torch.compile(AutoEncoder()), data)  # the callback asks Inductor to record the kernels
        return _frames() - before

    plain = fit([])
    callback = Roofline(roof=FLAT, warmup=1, active=2, plot=False, dirpath=str(tmp_path / "out"))
    with pytest.warns(UserWarning, match="under torch.compile"):
        profiled = fit([callback])
    assert profiled == plain  # the same compiled frames: nothing compiled again for the window
    report = callback.reports[-1]
    kernels = [o for o in report.ops if is_fused_kernel(o.op)]
    assert kernels and all(o.time_s > 0 for o in kernels)
    # the forward ReLU kernel, one code for the encoder's and the decoder's hidden layers
    # (B x 16 each): called twice, B x 16 elements read and written per call
    relu = next(o for o in kernels if o.op.endswith("cpp_fused_relu_0"))
    assert relu.counted and relu.calls == 2 and relu.flops == 2 * B * 16
    assert relu.bytes_read == relu.bytes_written == 2 * 4 * B * 16
    assert not inductor_config.cpp.enable_kernel_profile  # the fit's settings are given back
    assert any("runs under torch.compile" in n for n in report.notes), report.notes


@needs_compiler
def test_a_graph_break_is_listed_with_its_frames_and_reason():
    import torch._dynamo
    import torch._inductor.config as inductor_config

    class Broken(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(D, H), nn.Linear(H, D)

        def forward(self, x):
            h = self.fc1(x).relu()
            torch._dynamo.graph_break()
            return self.fc2(h)

    torch._dynamo.reset()
    x = torch.randn(B, D)
    with inductor_config.patch({"cpp.enable_kernel_profile": True}):
        run = torch.compile(Broken())
        run(x).sum().backward()
    _, report, _ = _profile_once(run, x)
    note = next(n for n in report.notes if n.startswith("torch.compile:"))
    assert "2 compiled frame(s) ran per step" in note and "in the root" in note, note
    assert "graph_break()" in note, note


@needs_compiler
def test_a_compiled_submodule_gets_one_row_named_as_written():
    # model.encoder = torch.compile(...): the encoder's compiled call is one range, its type the
    # original's; the eager head keeps its own range; nothing below the encoder has a row.
    import torch._dynamo
    import torch._inductor.config as inductor_config

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = torch.compile(nn.Sequential(nn.Linear(D, H), nn.GELU(), nn.Linear(H, D)))
            self.head = nn.Linear(D, 10)

        def forward(self, x):
            return self.head(self.encoder(x))

    torch._dynamo.reset()
    net, x = Net(), torch.randn(B, D)
    with inductor_config.patch({"cpp.enable_kernel_profile": True}):
        net(x).sum().backward()
    prof, report, compiled = _profile_once(net, x)
    assert compiled == 0
    rows = {(m.name, m.phase): m for m in report.modules}
    assert {m.name for m in report.modules} == {"", "encoder", "head", "(outside modules)"}  # the .sum() loss
    assert rows[("encoder", "forward")].type == "Sequential (compiled)" and rows[("encoder", "forward")].calls == 1
    kernels = [o for o in report.ops if is_fused_kernel(o.op)]
    assert kernels and all(o.name == "encoder" for o in kernels)
    # head: one addmm forward, 2*B*D*10 FLOPs, counted as recorded
    assert sum(o.flops for o in report.ops if o.name == "head" and o.phase == "forward" and o.flops) == 2 * B * D * 10


def test_a_bad_compiled_graphs_file_is_named_in_the_error(tmp_path):
    from torch_roofline.timing.inductor import load_compiled_graphs

    bad = tmp_path / "trace.json.inductor.json.gz"
    bad.write_text("not gzip")
    with pytest.raises(ValueError, match="trace.json.inductor.json.gz.*save_compiled_graphs"):
        load_compiled_graphs(str(bad))
    with gzip.open(tmp_path / "other.json.gz", "wt") as f:
        f.write('{"format": "something else"}')
    with pytest.raises(ValueError, match="expected .*torch_roofline.inductor/1"):
        load_compiled_graphs(str(tmp_path / "other.json.gz"))


@needs_compiler
def test_a_model_compiled_inside_the_block_records_its_kernels_and_the_settings_come_back():
    import torch._dynamo
    import torch._inductor.config as inductor_config

    torch._dynamo.reset()
    torch.manual_seed(0)
    run, x = torch.compile(Block()), torch.randn(B, D)  # lazy: compiles at its first call
    _, report, compiled = _profile_once(run, x)
    assert compiled >= 1 and any("compiling" in n for n in report.notes)
    gelu = next(o for o in report.ops if kernel_name(o.op) == "cpp_fused_gelu_0")
    assert gelu.counted and gelu.flops == 5 * B * H
    assert not inductor_config.cpp.enable_kernel_profile and inductor_config.trace.provenance_tracking_level == 0


def test_a_graph_whose_range_names_no_key_is_found_by_its_kernels():
    # freezing compiles outside Inductor's graph cache: the trace range says
    # "## Call CompiledFxGraph None ##", and the process's unkeyed graphs are told apart by
    # the kernels each run called
    from types import SimpleNamespace

    from torch_roofline.timing.inductor import CompiledGraph, _resolve_unkeyed

    def ev(index, name):
        return SimpleNamespace(index=index, name=name)

    run_a, run_b, run_c = (0.0, 1.0, "None"), (2.0, 3.0, "None"), (4.0, 5.0, "None")
    kernels = [ev(1, "graph_0_cpp_fused_relu_0"), ev(2, "graph_0_cpp_fused_mean_1"), ev(3, "graph_1_cpp_fused_add_0"),
               ev(4, "graph_2_cpp_fused_relu_0")]
    key_of = {1: "None", 2: "None", 3: "None", 4: "None"}
    slot_of = {1: (1, run_a, "x"), 2: (1, run_a, "y"), 3: (1, run_b, "z"), 4: (1, run_c, "w")}
    graphs = {"None#a": CompiledGraph("None#a", {}, {"cpp_fused_relu_0": (), "cpp_fused_mean_1": ()}),
              "None#b": CompiledGraph("None#b", {}, {"cpp_fused_add_0": (), "cpp_fused_relu_0": ()})}
    _resolve_unkeyed(key_of, slot_of, kernels, graphs)
    # run a: only graph a holds relu and mean; run b: only b holds add; run c's relu: both do
    assert key_of == {1: "None#a", 2: "None#a", 3: "None#b", 4: "None?"}


@needs_compiler
def test_submodules_of_a_model_compiled_in_place_called_from_eager_code_keep_their_rows():
    # model.compile() compiles model(x) only: model.fc1(x) called from eager code runs eagerly and
    # gets its range (through _compiled_call_impl, which Dynamo neither traces nor guards on), while
    # the compiled call compiles nothing again and its submodules get no range inside it.
    model, run, x = _compiled(kernel_profile=True, in_place=True)
    frames = _frames()
    prof = RooflineProfiler(model, roof=FLAT)
    with prof:
        run(x).sum().backward()
        model.fc1(x).sum().backward()
    report = prof.report()
    assert _frames() == frames  # nothing compiled again
    fc1 = report.module("fc1", "forward")
    assert fc1.type == "Linear" and fc1.calls >= 1
    # the eager call's addmm: 2*B*D*H FLOPs under fc1, beside the compiled call's extern addmm
    eager_addmm = [o for o in report.ops if o.name == "fc1" and o.phase == "forward" and o.op == "aten.addmm"]
    assert sum(o.flops for o in eager_addmm) == 2 * (2 * B * D * H)
    assert all(m.__dict__.get("_compiled_call_impl") is None for m in model.modules() if m is not model)
    assert model._compiled_call_impl is not None  # the model's own compiled call is given back


def test_the_eager_submodule_ranges_of_a_compiled_model_are_removed_after_an_exception():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    compiled_call = lambda *a, **k: model._call_impl(*a, **k)  # noqa: E731  stands in for module.compile()
    object.__setattr__(model, "_compiled_call_impl", compiled_call)
    with pytest.raises(RuntimeError, match="boom"):
        with RooflineProfiler(model, roof=FLAT):
            assert model[0].__dict__.get("_compiled_call_impl") is not None
            raise RuntimeError("boom")
    assert "_compiled_call_impl" not in model[0].__dict__ and "_compiled_call_impl" not in model[1].__dict__
    assert model._compiled_call_impl is compiled_call


@needs_compiler
def test_max_autotune_cpp_gemm_templates_are_rows_counted_once_with_their_traffic():
    # mode="max-autotune" with frozen weights: Inductor runs the Linears as C++ GEMM templates whose
    # events are named after the template (graph_0_gemm_m8n256k64_kernel), not after the kernel,
    # whose parameters are X, W (read) and Y (written), and whose provenance lists the ops of the
    # kernels before them too. Each must be a row, costed once, by hand from the Block's shapes.
    import torch._dynamo
    import torch._inductor.config as inductor_config

    torch._dynamo.reset()
    torch.manual_seed(0)
    model, x = Block().eval(), torch.randn(B, D)
    run = torch.compile(model, mode="max-autotune")
    settings = {"freezing": True, "max_autotune_gemm_backends": "CPP", "cpp.enable_kernel_profile": True,
                "trace.provenance_tracking_level": 1}
    with inductor_config.patch(settings), torch.no_grad():
        try:
            run(x)
        except Exception as exc:  # noqa: BLE001 - no C++ GEMM template for this CPU: nothing to test
            if "NoValidChoices" in repr(exc):
                pytest.skip("Inductor has no C++ GEMM template for this CPU")
            raise
        prof = RooflineProfiler(run, roof=FLAT)
        with prof:
            run(x)
    report = prof.report()
    events = [e.name for e in prof.trace.events if e.kind == "cpu_op" and is_fused_kernel(e.name)]
    rows = {kernel_name(o.op): o for o in report.ops if is_fused_kernel(o.op)}
    assert sorted(o.op for o in report.ops if is_fused_kernel(o.op)) == sorted(events)  # each in one row
    fc1, fc2 = rows["gemm_m8n256k64_kernel"], rows["gemm_m8n64k256_kernel"]
    # fc1's GEMM with the GELU as its epilogue (Inductor's GELU: 5 elementwise ops per element);
    # reads x [B, D], the packed weight (D x H values) and the bias [H]; writes [B, H]
    assert fc1.flops == 2 * B * D * H + 5 * B * H
    assert (fc1.bytes_read, fc1.bytes_written) == (4 * (B * D + D * H + H), 4 * B * H)
    # fc2's GEMM: its provenance lists fc1's ops too; counted once, in fc1's kernel
    assert fc2.flops == 2 * B * H * D and fc2.name == "fc2"
    assert (fc2.bytes_read, fc2.bytes_written) == (4 * (B * H + H * D), 4 * B * D)
    with FlopCounterMode(display=False) as eager:
        model(x)
    assert fc1.flops + fc2.flops - 5 * B * H == eager.get_total_flops()
    # the last kernel (bias, residual add, LayerNorm) counts none of the GEMMs' work
    (rest,) = [o for k, o in rows.items() if not k.startswith("gemm_")]
    assert 0 < rest.flops < 20 * B * D
