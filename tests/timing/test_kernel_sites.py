"""A torch.compile kernel under the module whose ops it fused (issue 15, build point 1).

Compiled code runs no module ranges, so a fused kernel's event lies in the compiled module's
range only. torch keeps the stack traces of each kernel's ops; following the calls in them down
the model's tree puts the kernel under the module whose ops it computes, or under the common
parent of several. The oracles are the models' source: which line of which ``forward`` made
each op (written out by hand below), and the recorded fixtures of ``tests/data/inductor``
(``record.py``: a Linear-GELU-Linear-residual-LayerNorm block and torchvision's resnet18).
"""

from __future__ import annotations

from _paths import TESTS_DIR
import gzip
import os
import shutil

import pytest
import torch
from torch import nn

from torch_roofline import RooflineProfiler
from torch_roofline._depth import named_modules
from torch_roofline.devices import Device
from torch_roofline.records import ModuleTiming, OpCost, OpTiming
from torch_roofline.timing.stack_traces import (CallChain, Frame, ModuleTree, call_chain, common_parent,
                                                 read_stack_traces, resolve_module)
from torch_roofline.timing._inductor_sources import _module_path
from torch_roofline.timing.inductor import KernelCost, kernel_name, read_compiled_graph
from torch_roofline.timing.kernel_sites import KernelSite, kernel_sites_note, place_fused_kernels

INDUCTOR = os.path.join(TESTS_DIR, "data", "inductor")
FLAT = Device(name="flat-kernel-sites-test", peak_flops={"fp32": 1e11}, bandwidth=1e10)
needs_compiler = pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                                    reason="torch.compile's CPU backend needs a C++ compiler")


def _frame(file: str, line: int, func: str, code: str, marked: str) -> str:
    start = code.index(marked)
    return f'  File "{file}", line {line}, in {func}\n    {code}\n    {" " * start}{"^" * len(marked)}\n'


# --------------------------------------------------------------------------- reading a trace


def test_a_stack_trace_reads_as_the_calls_down_from_the_compiled_module():
    trace = (_frame("m.py", 10, "forward", "return self.b2(self.b1(x))", "self.b1(x)")
             + _frame("m.py", 20, "forward", "h = self._mix(x)", "self._mix(x)")  # a method: same module
             + _frame("m.py", 30, "_mix", "return self.layers[0](x) * 2", "self.layers[0](x)")
             + _frame("n.py", 5, "forward", "return self.fc(self.drop(x))", "self.fc(self.drop(x))"))
    chain = call_chain(trace)
    assert chain == CallChain(Frame("m.py", 10), (("b1", Frame("m.py", 20)), ("layers.0", Frame("n.py", 5))), "fc")
    # Python marks binary operators with ~ and ^; a call on a loop variable cannot be followed.
    stop = (_frame("m.py", 10, "forward", "for blk in self.blocks: x = blk(x)", "blk(x)")
            + _frame("b.py", 3, "forward", "return self.fc(x)", "self.fc(x)"))
    assert call_chain(stop) == CallChain(Frame("m.py", 10), (), None, complete=False)
    ops = '  File "m.py", line 4, in forward\n    return x + self.fc(x)\n           ~~^~~~~~~~~~~~\n'
    assert call_chain(ops) == CallChain(Frame("m.py", 4), (), None)  # the add itself: the module's own op
    assert call_chain('  File "m.py", line 4, in step\n    return f(x)\n') is None  # not a module's forward
    assert read_stack_traces("not json") == {} and read_stack_traces(None) == {}
    # the frame torch_roofline adds while it records a compile: the op's module as Dynamo traced it
    marked = stop + '  File "<torch_roofline module>", line 0, in module:blocks.1.fc\n    pass\n'
    assert call_chain(marked) == CallChain(Frame("m.py", 10), (), None, False, "blocks.1.fc")
    assert resolve_module("", call_chain(marked), ModuleTree({"": "m.py", "blocks.1.fc": None})) == "blocks.1.fc"
    assert resolve_module("", call_chain(marked), ModuleTree({"": "m.py"})) == ""  # not the model's: not taken


def test_dynamo_s_module_stack_reads_as_a_path_below_the_compiled_module():
    assert _module_path({"a": ("L['self'].layers.0", object), "b": ("L['self'].layers.0.act", object)}) == "layers.0.act"
    assert _module_path({"a": ("L['self']._modules['blocks']._modules['3']", object)}) == "blocks.3"
    assert _module_path({}) == "" and _module_path(None) == ""  # the compiled module's own code
    assert _module_path({"a": ("L['model'].fc", object)}) is None  # a compiled function's argument, not self
    # torch.compile(nn.Sequential(...)): Dynamo traced the module's call, naming it L['fn'], listed first
    assert _module_path({"a": ("L['fn']", object), "b": ("L['fn'].1", object)}) == "1"
    assert _module_path({"a": ("L['fn']", object)}) == ""


def test_a_call_is_followed_only_where_the_model_s_tree_confirms_it():
    tree = ModuleTree({"": "m.py", "b1": "m.py", "b1.layers": "torch/nn/modules/container.py",
                       "b1.layers.0": "n.py", "b1.layers.0.fc": "torch/nn/modules/linear.py",
                       "b1.layers.0.drop": None})
    chain = CallChain(Frame("m.py", 10), (("b1", Frame("m.py", 20)), ("layers.0", Frame("n.py", 5))), "fc")
    assert resolve_module("", chain, tree) == "b1.layers.0.fc"
    # a call on an nn.Sequential: torch leaves out the container's frame, the next one is in a
    # block's file, not in container.py: which block is not said, so the op stays on the container
    seq = CallChain(Frame("m.py", 10), (("b1", Frame("m.py", 20)), ("layers", Frame("n.py", 5))), "fc")
    assert resolve_module("", seq, tree) == "b1.layers"
    # `self.weight.t()` in the last frame is not a module call
    assert resolve_module("", CallChain(Frame("m.py", 10), (("b1", Frame("m.py", 20)),), "weight.t"), tree) == "b1"
    # a chain that does not start in the compiled module's forward is not followed at all
    assert resolve_module("", CallChain(Frame("other.py", 1), (("b1", Frame("m.py", 20)),), None), tree) == ""
    assert resolve_module("b1", CallChain(Frame("m.py", 20), (), "layers"), tree) == "b1.layers"
    assert common_parent(("b1.layers.0.fc", "b1.layers.0.drop")) == "b1.layers.0"
    assert common_parent(("b1.fc", "b10.fc")) == "" and common_parent(("", "b1")) == "" and common_parent(()) == ""


def test_a_compile_recorded_by_the_profiler_writes_each_op_s_module_into_its_stack_trace():
    # what the no-op post-grad pass does while the profiler records a compile: torch copies an op's
    # stack trace into its kernel's and keeps it in its compile cache, so a graph loaded from the
    # cache in another process still says each op's module
    from torch_roofline.timing._inductor_sources import _node_modules_of, remember_node_modules

    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    mul = graph.create_node("call_function", torch.ops.aten.mul.Tensor, (x, 2.0), name="mul")
    mul.meta.update(nn_module_stack={"a": ("L['self'].layers.1", object), "b": ("L['self'].layers.1.act", object)},
                    stack_trace='File "m.py", line 3, in forward\n    return self.act(x)')  # no final newline
    add = graph.create_node("call_function", torch.ops.aten.add.Tensor, (mul, 1.0), name="add")
    add.meta.update(fwd_nn_module_stack={})  # a backward op of the compiled module's own code
    for node in (mul, add):
        node.meta["val"] = torch.empty(4, device="meta")  # the graph's ops and their sizes key what is kept
    graph.output(add)
    remember_node_modules(graph)
    assert mul.meta["stack_trace"].endswith('\n  File "<torch_roofline module>", line 0, in module:layers.1.act\n    pass\n')
    assert call_chain(mul.meta["stack_trace"]).module == "layers.1.act"
    assert call_chain(add.meta["stack_trace"]).module == ""
    remember_node_modules(graph)  # a second pass over the same graph adds no second frame
    assert mul.meta["stack_trace"].count("<torch_roofline module>") == 1
    text = ('class GraphModule(torch.nn.Module):\n    def forward(self, x: "f32[4][1]cpu"):\n'
            '        mul: "f32[4][1]cpu" = torch.ops.aten.mul.Tensor(x, 2.0);  x = None\n'
            '        add: "f32[4][1]cpu" = torch.ops.aten.add.Tensor(mul, 1.0);  mul = None\n        return (add,)\n')
    assert _node_modules_of(text) == {"mul": "layers.1.act", "add": ""}
    # a graph with the same op names but other sizes is another graph: nothing recorded for it
    assert _node_modules_of(text.replace("f32[4]", "f32[8]")) is None


def _fixture(name):
    def read(part):
        path = os.path.join(INDUCTOR, f"{name}.{part}.txt.gz")
        with gzip.open(path, "rt") as f:
            return f.read()

    return read_compiled_graph(name, read("wrapper"), read("graph"), read("provenance") or None, read("stacks"))


def _sites(graph, tree, root=""):
    """kernel name -> (each call's fused modules, each call's common parent)."""
    out = {}
    for name, runs in graph.calls.items():
        fused = [tuple(sorted({resolve_module(root, c, tree) for c in call.chains})) for call in runs]
        out[name] = (fused, [common_parent(f) for f in fused])
    return out


def _block_tree(graph):
    """The Block of record.py, as recorded: its forward's file is the recording's path."""
    start = next(c.start for runs in graph.calls.values() for call in runs for c in call.chains)
    return ModuleTree({"": start.file, "fc1": None, "act": None, "fc2": None, "ln": None})


def test_the_block_s_kernels_forward_and_backward_land_on_the_modules_of_their_ops():
    # record.py line 33: return self.ln(x + self.fc2(self.act(self.fc1(x))))
    forward = _fixture("block_0")
    sites = _sites(forward, _block_tree(forward))
    assert sites["cpp_fused_gelu_0"] == ([("act",)], ["act"])  # GELU's decomposed ops: act's
    # the residual add (the Block's own `x + ...`) fused with ln's normalisation: their parent
    assert sites["cpp_fused_add_native_layer_norm_1"] == ([("", "ln")], [""])
    backward = _fixture("block_1")  # a backward op has its forward op's stack trace
    sites = _sites(backward, _block_tree(backward))
    assert sites["cpp_fused_sum_2"] == ([("fc1",)], ["fc1"])  # fc1's bias gradient: a sum over the batch
    assert sites["cpp_fused_gelu_gelu_backward_sum_1"] == ([("act", "fc2")], [""])  # GELU's gradient, fc2's bias
    assert sites["cpp_fused_add_native_layer_norm_backward_0"] == ([("", "ln")], [""])


def test_resnet18_s_kernels_stop_at_the_sequential_stages_and_never_take_a_wrong_branch():
    import torchvision

    graph = _fixture("resnet18_eval_0")
    starts = {c.start.file for runs in graph.calls.values() for call in runs for c in call.chains}
    recorded = os.path.dirname(next(iter(starts)))  # torchvision/models as installed where it was recorded
    live = os.path.dirname(os.path.abspath(torchvision.models.resnet.__file__))
    model = torchvision.models.resnet18(num_classes=10)
    tree = ModuleTree({name: (f.replace(live, recorded) if f else f) for name, f in ModuleTree.of(named_modules(model)).files.items()})
    sites = _sites(graph, tree)
    names = set(tree.files)
    for fused, parents in sites.values():
        assert all(set(f) <= names for f in fused)  # only modules the model has
    # The stem: conv1's weight layout, bn1 and relu, then bn1 + relu + maxpool: ops of the
    # root's own submodules, under the root.
    assert sites["cpp_fused__native_batch_norm_legit_no_training_max_pool2d_with_indices_relu_1"][0] == [
        ("bn1", "maxpool", "relu")]
    # layer1's blocks run through nn.Sequential, whose frame torch leaves out: which block is
    # not said, so a block's kernels land on layer1. A kernel Inductor reuses for both blocks
    # (bn + relu) is called twice, each call with its own block's ops.
    assert sites["cpp_fused__native_batch_norm_legit_no_training_relu_2"] == ([("layer1",), ("layer1",)],
                                                                             ["layer1", "layer1"])
    # The last kernel: layer4's last bn + residual add + relu, and the root's avgpool.
    last = sites["cpp_fused__native_batch_norm_legit_no_training_add_mean_relu_15"]
    assert last == ([("avgpool", "layer4")], [""])


# --------------------------------------------------------------------------- moving the rows


def _timing(op, module, scope, phase, time_s, index):
    return OpTiming(op=op, module=module, scope=scope, phase=phase, time_s=time_s, cpu_time_s=time_s, index=index)


def _cost(op, module, scope, phase, index):
    return OpCost(op, module, scope, phase, 10, 0, 4, 4, 4, 4, "float32", "vector", True, index)


def test_placing_moves_kernel_rows_and_times_the_modules_inside_compiled_code():
    tree = ModuleTree({"": "m.py", "net": "n.py", "net.b1": "b.py", "net.b1.act": None, "net.b1.ln": None})
    def chain(*path, last=None):
        return CallChain(Frame("n.py", 1), tuple((p, Frame("b.py", 2)) for p in path), last)
    scope = ("", "net")
    ops = [_timing("aten.addmm", "net", scope, "forward", 5.0, 0),
           _timing("graph_0_cpp_fused_gelu_0", "net", scope, "forward", 2.0, 1),
           _timing("graph_0_cpp_fused_add_native_layer_norm_1", "net", scope, "forward", 1.0, 2),
           _timing("graph_1_cpp_fused_sum_0", "net", scope, "backward", 0.5, 0),
           _timing("aten.sum", "(outside modules)", ("", "(outside modules)"), "forward", 0.25, 3)]
    costs = [_cost(t.op, t.module, t.scope, t.phase, t.index) for t in ops]
    modules = [ModuleTiming("", "forward", 1, 9.0, 0.75, ("",)), ModuleTiming("net", "forward", 1, 8.25, 8.0, scope),
               ModuleTiming("net", "backward", 1, 0.5, 0.5, scope)]
    def kernel(*chains, split=()):
        return KernelCost("k", 1, 4, 4, "float32", chains=chains, split=split)
    # rows 1 and 3 placed from their stack traces, row 2 from its ops' recorded modules (which wins)
    kernels = {1: kernel(chain("b1", last="act")), 2: kernel(chain("b1"), split=(("b1", 64), ("b1.ln", 2560))),
               3: kernel(chain("b1", last="act")), 4: kernel(chain("b1"))}
    new_ops, new_costs, new_modules, sites = place_fused_kernels(ops, costs, modules, kernels, tree)
    assert [(o.module, o.scope) for o in new_ops] == [
        ("net", scope), ("net.b1.act", scope + ("net.b1", "net.b1.act")), ("net.b1", scope + ("net.b1",)),
        ("net.b1.act", scope + ("net.b1", "net.b1.act")), ("(outside modules)", ("", "(outside modules)"))]
    assert [(c.module, c.scope) for c in new_costs] == [(o.module, o.scope) for o in new_ops]
    timed = {(m.name, m.phase): (m.calls, m.time_s, m.self_time_s, m.scope) for m in new_modules}
    assert timed == {
        ("", "forward"): (1, 9.0, 0.75, ("",)),
        ("net", "forward"): (1, 8.25, 5.0, scope),  # its own addmm; the kernels moved down
        ("net", "backward"): (1, 0.5, 0.0, scope),
        ("net.b1", "forward"): (1, 3.0, 1.0, scope + ("net.b1",)),
        ("net.b1.act", "forward"): (1, 2.0, 2.0, scope + ("net.b1", "net.b1.act")),
        ("net.b1", "backward"): (1, 0.5, 0.0, scope + ("net.b1",)),
        ("net.b1.act", "backward"): (1, 0.5, 0.5, scope + ("net.b1", "net.b1.act")),
    }
    assert KernelSite("graph_0_cpp_fused_add_native_layer_norm_1", "forward", "net.b1", ("net.b1", "net.b1.ln"), "net",
                      (64, 2560)) in sites
    note = kernel_sites_note(sites)
    assert note.startswith("1 torch.compile fused kernel(s) compute ops of several modules")
    assert ("graph_0_cpp_fused_add_native_layer_norm_1 (forward) under net.b1: ops of net.b1 (64 FLOPs), "
            "net.b1.ln (2,560 FLOPs)") in note
    # without the model's tree (a saved trace without it), nothing moves
    assert place_fused_kernels(ops, costs, modules, kernels, None) == (tuple(ops), tuple(costs), tuple(modules), ())


# --------------------------------------------------------------------------- compiled for real


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2, self.ln = nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 32), nn.LayerNorm(32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln(x + self.fc2(self.act(self.fc1(x))))


class Pair(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.b1, self.b2 = Block(), Block()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b2(self.b1(x))


@needs_compiler
def test_a_model_compiled_in_the_block_shows_each_kernel_call_under_its_own_block():
    import torch._dynamo
    import torch._inductor.config as inductor_config
    import torch._inductor.debug as inductor_debug

    torch._dynamo.reset()
    torch.manual_seed(0)
    model, x = Pair(), torch.randn(8, 32)
    run = torch.compile(model)
    prof = RooflineProfiler(run, roof=FLAT)
    with prof:  # compiles here, at its first call: forward and backward graphs
        run(x).sum().backward()
    with prof:
        run(x).sum().backward()
    report = prof.report()
    kernels = [o for o in report.ops if kernel_name(o.op).startswith("cpp_fused")]
    where = {}
    for o in kernels:
        where.setdefault((kernel_name(o.op), o.phase), set()).add(o.name)
    # Inductor generates one GELU kernel and calls it once per block: each call on its own block
    assert where[("cpp_fused_gelu_0", "forward")] == {"b1.act", "b2.act"}
    # fc1's bias gradient (a sum over the batch) of each block
    assert {n for (k, p), names in where.items() if p == "backward" and k.startswith("cpp_fused_sum") for n in names} \
        == {"b1.fc1", "b2.fc1"}
    assert all(name.startswith(("b1", "b2")) for names in where.values() for name in names)
    # The backward graph, compiled at the first backward, keeps which ops each kernel fused
    # (torch alone writes an empty map for it): its kernels are counted.
    assert all(o.counted and o.flops > 0 for o in kernels if o.phase == "backward")
    # The time moved, not added: the compiled module's inclusive time is unchanged and the self
    # times of the modules below it plus its own sum to it.
    rows = {(m.name, m.phase): m for m in report.modules}
    for phase in ("forward", "backward"):
        below = [m for (n, p), m in rows.items() if p == phase and n not in ("", "(outside modules)")]
        assert all(m.type.endswith("(in compiled code)") for m in below)
        outside = rows[("(outside modules)", phase)].time_s if ("(outside modules)", phase) in rows else 0.0
        own = rows[("", phase)].self_time_s + sum(m.self_time_s for m in below) + outside
        assert own == pytest.approx(rows[("", phase)].time_s, rel=1e-6)
    # the settings are given back
    assert inductor_config.post_grad_custom_post_pass is None and inductor_config.trace.provenance_tracking_level == 0
    assert inductor_debug._pre_grad_graph_id is None


class Stack(nn.Module):
    """Blocks run by a loop over an nn.ModuleList (as Hugging Face models do): the stack trace
    says `blk(x)`, which no frame-following can place; Dynamo's module stack can."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList([Block(), Block()])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.layers:
            x = blk(x)
        return x


@needs_compiler
def test_a_loop_over_a_module_list_is_placed_from_the_modules_dynamo_traced():
    import torch._dynamo

    torch._dynamo.reset()
    torch.manual_seed(0)
    run, x = torch.compile(Stack()), torch.randn(8, 32)
    prof = RooflineProfiler(run, roof=FLAT)
    with prof:
        with torch.no_grad():
            run(x)
    report = prof.report()
    gelu = sorted(o.name for o in report.ops if kernel_name(o.op) == "cpp_fused_gelu_0")
    assert gelu == ["layers.0.act", "layers.1.act"]
    # the residual add (the Block's own code: 8 x 32 FLOPs) fused with its LayerNorm: under the block
    norm = [o for o in report.ops if "layer_norm" in o.op]
    assert sorted(o.name for o in norm) == ["layers.0", "layers.1"]
    note = next(n for n in report.notes if "common parent" in n)
    assert f"under layers.1: ops of layers.1 ({8 * 32:,} FLOPs), layers.1.ln (" in note


@needs_compiler
def test_a_saved_trace_with_the_model_s_tree_beside_it_places_kernels_as_the_live_report(tmp_path, monkeypatch):
    import torch._dynamo
    from torch.profiler import schedule

    from torch_roofline import offline, trace_file
    from torch_roofline.timing import parts, segments
    from torch_roofline.timing import trace as trace_module
    from torch_roofline.timing.inductor import SIDECAR_SUFFIX, save_compiled_graphs

    torch._dynamo.reset()
    torch.manual_seed(0)
    model, x = Pair(), torch.randn(8, 32)
    run = torch.compile(model)
    with RooflineProfiler(run, roof=FLAT):  # compiles while kernels are recorded
        run(x).sum().backward()
    path = str(tmp_path / "pair.json")
    prof = RooflineProfiler(run, roof=FLAT, export_trace=path, schedule=schedule(wait=0, warmup=0, active=1, repeat=1))
    with prof:
        run(x).sum().backward()
        prof.step()
    live = prof.report()

    def sites(report):
        return sorted((kernel_name(o.op), o.phase, o.name) for o in report.ops if "cpp_fused" in o.op)

    def inner(report):
        return sorted((m.name, m.phase, m.calls, m.type.endswith("(in compiled code)") or m.type == "")
                      for m in report.modules if m.name.startswith(("b1", "b2")))

    assert any(name == "b2.act" for _, _, name in sites(live))
    # without the model's tree beside it: the kernels stay on the compiled module
    save_compiled_graphs(path + SIDECAR_SUFFIX)
    bare = offline.from_trace(path, roof=FLAT)
    assert {name for _, _, name in sites(bare)} == {""} and not inner(bare)
    save_compiled_graphs(path + SIDECAR_SUFFIX, run)
    whole = offline.from_trace(path, roof=FLAT)
    assert sites(whole) == sites(live) and inner(whole) == inner(live) and inner(live)
    assert [n for n in whole.notes if "common parent" in n] == [n for n in live.notes if "common parent" in n]
    # read in parts of one step, and that step in slices of ~4 KB (tests/timing/test_slices.py)
    monkeypatch.setattr(segments, "PART_BYTES", 1)
    monkeypatch.setattr(segments, "BLOCK_BYTES", 4096)
    monkeypatch.setattr(trace_module, "_CHUNK", 16384)
    monkeypatch.setattr(parts, "SLICE_BYTES", 4096)
    monkeypatch.setattr(parts, "PART_WORKERS", 1)
    monkeypatch.setattr(trace_file, "PARTS_MEMORY_BYTES", 0)
    monkeypatch.setattr(trace_file, "PARTS_BYTES", 0)
    sliced = offline.from_trace(path, roof=FLAT)
    assert any("slices" in n for n in sliced.notes), sliced.notes
    assert sites(sliced) == sites(live) and inner(sliced) == inner(live)
    for row in whole.modules:
        assert sliced.module(row.name, row.phase).time_s == pytest.approx(row.time_s, rel=1e-9, abs=1e-12)
