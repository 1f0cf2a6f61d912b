"""FLOPs and bytes of Inductor's fused CPU kernels, from the compiled graph they came from.

A fused kernel records no shapes, so the trace alone cannot count it. The compiled graph
that ran it can: every graph Inductor compiled is a ``CompiledFxGraph`` object in the
process that keeps

* ``source_code``: the generated Python wrapper. Its ``call()`` allocates every buffer with
  its size, stride and dtype (``buf0 = empty_strided_cpu((8, 256), (256, 1), torch.float32)``),
  ``get_args()`` lists the graph's inputs the same way, and each kernel is called with its
  buffers in the order of its C++ parameters, named ``in_ptr<k>`` (read), ``out_ptr<k>``
  (written) or ``in_out_ptr<k>`` (both);
* ``inductor_post_grad_graph_str``: the graph Inductor lowered, one aten op per line with
  its output's dtype, size and stride (``mul: "f32[8, 256][256, 1]cpu" = ...``);
* ``inductor_provenance_mapping_str`` (only when compiled with
  ``torch._inductor.config.trace.provenance_tracking_level = 1``): which of those ops each
  kernel fused (``"cppCodeToPost": {"cpp_fused_gelu_0:2": ["mul", "erf", ...]}``).

The trace names the graph each kernel ran in: the kernel's event lies inside the graph's
``## Call CompiledFxGraph <cache key> ##`` range. A trace read in another process finds its
graphs in a file saved beside it: :func:`save_compiled_graphs` writes every compiled graph
of the process to ``<trace file>.inductor.json.gz`` (gzipped JSON ``{"format":
"torch_roofline.inductor/1", "torch": version, "graphs": {key: {"wrapper": ..., "graph": ...,
"provenance": ...}}}``), which ``from_trace`` reads when it is there.

Conventions (a kernel's row):

* **Bytes** are the kernel's real traffic: each tensor argument once, ``in_ptr`` read,
  ``out_ptr`` written, ``in_out_ptr`` read and written, at its view's distinct elements
  (broadcast dimensions, stride 0, counted once) times the dtype's size. Not the sum of the
  fused ops' traffic: the intermediate values stay in registers; that is what fusion buys.
* **FLOPs** are the fused ops' FLOPs by this package's formulas, each op counted on the
  shapes the graph gives it. They are Inductor's *decomposed* ops (``gelu`` is
  ``mul, mul, erf, add, mul``: 5 elementwise ops, where the eager ``aten.gelu`` counts as 1
  per element), and include what Inductor recomputes instead of saving; so a compiled step's
  FLOPs can exceed the eager count. Matrix work is not here: Inductor hands ``mm`` /
  ``addmm`` / convolutions to extern kernels, which the trace records as aten ops with
  shapes, counted as usual.
* A kernel whose graph, provenance or shapes cannot be read (a saved trace without its
  process, symbolic sizes, an op without a formula) keeps its time and stays uncounted, with
  the reason.
* **Eager bytes** (what the ops it fused move run one by one as eager ops) and **compulsory
  bytes** (the buffers it is first to read or write in its graph's run) come from the same
  texts: :mod:`torch_roofline.timing._fusion_traffic`.
* The graph's **extern kernel calls** (``extern_kernels.addmm``, fallback aten calls) are
  listed per aten op in call order (:attr:`CompiledGraph.externs`), with the modules of their
  ops, so the aten events the trace records for them are placed under those modules.

The parsing is of text that torch generates and may change between versions: everything
unexpected makes the kernel uncounted with the reason, never a wrong number.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from torch_roofline.timing._fusion_traffic import compulsory_by_call, is_generated
from torch_roofline.timing._inductor_wrapper import kernel_traffic, read_wrapper, record_names
from torch_roofline.timing.stack_traces import CallChain, read_stack_traces
from torch_roofline.timing._inductor_graph import (_call_flops, _eager_bytes, _event_op, _extern_op, _extern_post_ops,
                                                   _first_listed, _graph_nodes, _orphan_owners, _provenance, _split)
from torch_roofline.timing._inductor_sources import (SIDECAR_SUFFIX, _NODE_ORIGINS, _UNKEYED, _live_texts, _load,
                                                     _recorded_modules, module_tree_beside, remember_node_modules,
                                                     save_compiled_graphs)

__all__ = ["KernelCost", "CompiledGraph", "compiled_graphs", "read_compiled_graph", "graph_key", "kernel_name",
           "kernel_costs", "compiled_costs", "save_compiled_graphs", "load_compiled_graphs", "module_tree_beside",
           "remember_node_modules", "SIDECAR_SUFFIX"]

_CALL_PREFIX = "## Call CompiledFxGraph "
#: A run of an unkeyed graph whose kernels fit no single unkeyed graph (or several).
_UNRESOLVED = "None?"
_GRAPH_PREFIX = re.compile(r"^graph_\d+_")
_HANDLE = re.compile(r"# \[Provenance debug handles\] ([\w.]+):(\d+)")
#: A size written as a symbol in the graph's text (``"f32[s0, 64][64, 1]cpu"``): dynamic shapes.
_SYMBOLIC = re.compile(r'"[a-z0-9]+\[[^\]"]*\b[a-z]+\d+\b[^\]"]*\]')
_DYNAMIC_REASON = ("its graph was compiled with dynamic shapes (sizes like s0 in the graph: "
                   "torch.compile(dynamic=True), or a recompile after a shape changed): the trace does not say each "
                   "call's sizes, so its work is not counted; its time is")



@dataclass(frozen=True)
class KernelCost:
    """Work and traffic of one fused kernel call.

    Attributes:
        name: the kernel's name in its graph (``"cpp_fused_gelu_0"``).
        flops: FLOPs of the ops it fused (module docstring), ``None`` when unknown.
        bytes_read: bytes its arguments read, ``None`` when unknown.
        bytes_written: bytes its arguments written, ``None`` when unknown.
        dtype: the dtype of most of its bytes (``"float32"``), ``None`` when unknown.
        ops: the aten ops it fused (``("aten.mul", "aten.erf", ...)``), empty when unknown.
        reason: why it is not (fully) counted, ``None`` when it is.
        chains: how each op it computes was reached from the compiled module's ``forward``
            (:class:`~torch_roofline.timing.stack_traces.CallChain`, one per distinct stack
            trace): the modules whose ops it fused. Empty when torch kept no stack trace.
        split: ``(module, FLOPs)`` per module whose ops it fused, the module's name relative to
            the compiled module (``""`` its own code), FLOPs of those ops (``None`` when the
            kernel's are unknown); from each op's module recorded while it compiled
            (:func:`remember_node_modules`), empty when that was not recorded.
        recomputed: ops (post-grad node names) with FLOPs that another kernel of the graph
            computes too: Inductor recomputes them instead of storing them; counted in each.
        eager_bytes: bytes the aten ops it fused would move run one by one as eager ops
            (:mod:`torch_roofline.timing._fusion_traffic`), ``None`` when unknown
            (:attr:`eager_why` says why).
        compulsory: (bytes read, bytes written) it is the first in its graph's run to read or
            write (each buffer once), ``None`` when unknown.
        eager_why: why :attr:`eager_bytes` is unknown, ``None`` when it is known.
        relayout: it lists an extern kernel's op, computes nothing of its own and writes what it
            reads: it changes the layout of that kernel's input (a convolution's weights, at
            every call of a model not frozen).
        post_op_flops: an extern oneDNN convolution's call (a frozen model): the FLOPs of the
            post-ops its code passes (``'relu'``, a residual ``'add'``) beyond those a replay of
            its recorded shapes counts (the profiler records no strings), ``None`` otherwise.
    """

    name: str
    flops: Optional[int]
    bytes_read: Optional[int]
    bytes_written: Optional[int]
    dtype: Optional[str]
    ops: Tuple[str, ...] = ()
    reason: Optional[str] = None
    chains: Tuple[CallChain, ...] = ()
    split: Tuple[Tuple[str, Optional[int]], ...] = ()
    recomputed: Tuple[str, ...] = ()
    eager_bytes: Optional[int] = None
    compulsory: Optional[Tuple[int, int]] = None
    eager_why: Optional[str] = None
    relayout: bool = False
    post_op_flops: Optional[int] = None


@dataclass(frozen=True)
class CompiledGraph:
    """The kernels of one compiled graph, by name (see :class:`KernelCost`).

    Attributes:
        key: the graph's cache key.
        kernels: kernel name -> the cost of its first call.
        calls: kernel name -> the cost of each of its calls in one run of the graph, in order:
            a kernel Inductor reuses (the same GELU in two blocks) runs once per block, each
            call with the ops of its own block.
        externs: aten op (``"aten.addmm"``) -> the graph's extern kernel calls of it in order
            (``extern_kernels.addmm``, a fallback ``torch.ops.aten...`` call), each a
            :class:`KernelCost` with only the modules of its ops (``chains``, ``split``): the
            trace records them as aten ops with shapes, costed as such, placed by these.
    """

    key: str
    kernels: Mapping[str, KernelCost]
    calls: Mapping[str, Tuple[KernelCost, ...]] = field(default_factory=dict)
    externs: Mapping[str, Tuple[KernelCost, ...]] = field(default_factory=dict)


def graph_key(annotation_name: str) -> Optional[str]:
    """The cache key in a ``## Call CompiledFxGraph <key> ##`` range name, else ``None``."""
    if not annotation_name.startswith(_CALL_PREFIX):
        return None
    return annotation_name[len(_CALL_PREFIX):].rstrip("# ").strip() or None


def kernel_name(event_name: str) -> str:
    """The kernel's name in its graph: ``"graph_0_cpp_fused_gelu_0"`` -> ``"cpp_fused_gelu_0"``."""
    return _GRAPH_PREFIX.sub("", event_name, count=1)


def compiled_graphs(keys: Iterable[str]) -> Dict[str, CompiledGraph]:
    """The compiled graphs with these cache keys that this process still holds, read; a key
    with no graph is missing from the result."""
    return {key: read_compiled_graph(key, *texts) for key, texts in _live_texts(set(keys)).items()}


def load_compiled_graphs(path: str) -> Dict[str, CompiledGraph]:
    """The compiled graphs saved by :func:`save_compiled_graphs`, read.

    Raises:
        ValueError: ``path`` is not such a file (the message names it and what it holds).
    """
    doc = _load(path)
    out: Dict[str, CompiledGraph] = {}
    for key, texts in doc["graphs"].items():
        if isinstance(texts, dict):
            modules, origins = texts.get("node_modules"), texts.get("node_origins")
            out[str(key)] = read_compiled_graph(str(key), str(texts.get("wrapper") or ""), str(texts.get("graph") or ""),
                                                texts.get("provenance") or None, texts.get("stack_traces") or None,
                                                modules if isinstance(modules, dict) else None,
                                                origins if isinstance(origins, dict) else None)
    return out


def read_compiled_graph(key: str, source_code: str, post_grad_graph: str, provenance: Optional[str],
                        stack_traces: Optional[str] = None,
                        node_modules: Optional[Mapping[str, str]] = None,
                        node_origins: Optional[Mapping[str, str]] = None) -> CompiledGraph:
    """Cost every C++ kernel call of one compiled graph from its texts (module docstring).

    ``stack_traces`` (``inductor_provenance_stack_traces_str``) and ``node_modules`` (each op's
    module, recorded while it compiled: :func:`remember_node_modules`) say which modules' ops
    each kernel call computes; ``node_origins`` (likewise recorded) the aten op each op came
    from, for the eager bytes (:mod:`torch_roofline.timing._fusion_traffic`)."""
    try:
        calls, tensors, params, body = read_wrapper(source_code)
    except (SyntaxError, ValueError):
        return CompiledGraph(key, {})  # not a wrapper this reads: every kernel stays uncounted
    # torch's map can hold other graphs' kernels too (a backward graph's lists every kernel
    # compiled outside a forward compile so far, whose node names reuse this graph's): keep the
    # kernels this wrapper calls.
    handles = _HANDLE.findall(source_code)  # (kernel, debug handle) of each call, extern kernels too, in order
    mine = {f"{name}:{handle}" for name, handle in handles}
    fused = {k: v for k, v in _provenance(provenance).items() if k in mine}
    records = record_names(source_code)
    emptied = set()
    if records:
        firsts = _first_listed(fused, [f"{n}:{h}" for n, h in handles])
        emptied = {k for k, v in firsts.items() if fused[k] and not v}  # computes nothing new
        fused = {k: list(v) for k, v in firsts.items()}
    # Ops an extern kernel ran (a convolution, an mm) are counted as the aten op the trace
    # records. Provenance can tie a C++ kernel to more ops than it computes: a kernel that
    # changes a convolution weight's layout lists the convolution and the batch norms of the
    # kernels after it. Such a kernel (one listing an extern kernel's op) counts only the ops
    # no other kernel lists, so none is counted twice (a layout change: bytes, 0 FLOPs). An op
    # two clean kernels list is one Inductor recomputes in both instead of storing it: it
    # counts in each (real work).
    extern = {n for key, names in fused.items() if not is_generated(key) for n in names}
    listed: Dict[str, int] = {}
    for key, names in fused.items():
        if is_generated(key) and not extern.intersection(names):
            for n in set(names):
                listed[n] = listed.get(n, 0) + 1
    others = dict(listed)  # an imprecise kernel's op that another kernel lists is the other's
    for key, names in fused.items():
        if is_generated(key) and extern.intersection(names):
            for n in set(names):
                others[n] = others.get(n, 0) + 1
    nodes = _graph_nodes(post_grad_graph) if fused else {}
    orphans = _orphan_owners(fused, [f"{n}:{h}" for n, h in handles], nodes, extern, listed, others)
    called: Dict[str, List[str]] = {}  # C++ kernel -> the debug handle of each of its calls, in order
    for name, handle in handles:
        if "." not in name:  # not extern_kernels.<op>
            called.setdefault(name, []).append(handle)
    traces = read_stack_traces(stack_traces)
    if records:  # the stack traces are cumulative like the provenance: each in its first kernel
        traces = _first_listed(traces, [f"{n}:{h}" for n, h in handles])
    if node_modules is None and nodes:
        node_modules = _recorded_modules(nodes)  # compiled in this process while kernels were recorded
    if node_origins is None and nodes:
        node_origins = _recorded_modules(nodes, _NODE_ORIGINS)
    eager, eager_why = _eager_bytes(nodes, node_origins, fused, provenance)
    first = compulsory_by_call(body, params, tensors)
    dynamic = _SYMBOLIC.search(post_grad_graph) is not None
    kernels: Dict[str, KernelCost] = {}
    runs: Dict[str, Tuple[KernelCost, ...]] = {}
    for name, args in calls.items():
        traffic = kernel_traffic(args, params.get(name), tensors)
        if isinstance(traffic, str) and dynamic:
            traffic = _DYNAMIC_REASON
        costs = []
        touches = first.get(name, [])
        for k, handle in enumerate(called.get(name) or [None]):
            names = fused.get(f"{name}:{handle}") if handle is not None else None
            if names is None and handle is None:
                same = [v for k, v in fused.items() if k.rsplit(":", 1)[0] == name]
                names = same[0] if len(same) == 1 else None
            if f"{name}:{handle}" in emptied:  # each op it lists is an earlier kernel's
                flops, ops, why, per_node = 0, (), None, {}
            else:
                flops, ops, why, per_node = _call_flops(names, nodes, provenance, extern, others,
                                                        orphans.get(f"{name}:{handle}", ()))
            again = tuple(sorted(n for n in names or () if listed.get(n, 0) > 1 and n in per_node))
            split = _split(names, per_node if flops is not None else None, node_modules)
            chains = traces.get(f"{name}:{handle}", ()) if handle is not None else ()
            eager_bytes = eager.get(f"{name}:{handle}") if handle is not None else None
            why_eager = None if eager_bytes is not None else (
                eager_why or "the sizes of the ops it fused are not all in the compiled graph's text")
            compulsory = touches[k] if k < len(touches) else None
            relayout = (flops == 0 and bool(names) and bool(extern.intersection(names))
                        and not isinstance(traffic, str) and traffic[0] == traffic[1] > 0)
            if isinstance(traffic, str):
                costs.append(KernelCost(name, flops, None, None, None, ops, traffic, chains, split, again,
                                        eager_bytes, None, why_eager, relayout))
            else:
                read, written, dtype = traffic
                costs.append(KernelCost(name, flops, read, written, dtype, ops, why, chains, split, again,
                                        eager_bytes, compulsory, why_eager, relayout))
        kernels[name], runs[name] = costs[0], tuple(costs)
    _add_record_names(kernels, runs, records, handles)
    externs: Dict[str, List[KernelCost]] = {}
    post_ops = _extern_post_ops(body, tensors)
    wanted = Counter(_extern_op(name) for name, _ in handles)
    for name, handle in handles:
        op = _extern_op(name)
        if op is not None:
            names = fused.get(f"{name}:{handle}")
            written = post_ops.get(op, [])
            k = len(externs.get(op, ()))
            extra = written[k] if len(written) == wanted[op] else None  # the code's calls, in order
            externs.setdefault(op, []).append(KernelCost(
                name, None, None, None, None, chains=traces.get(f"{name}:{handle}", ()),
                split=_split(names, None, node_modules), post_op_flops=extra))
    return CompiledGraph(key, kernels, runs, {op: tuple(calls) for op, calls in externs.items()})


def _add_record_names(kernels: Dict[str, KernelCost], runs: Dict[str, Tuple[KernelCost, ...]],
                      records: Mapping[str, str], handles: Sequence[Tuple[str, str]]) -> None:
    """Make the kernels whose profiler event carries another name (a C++ GEMM template's
    ``gemm_m8n256k64_kernel``) findable under it too: its calls in the wrapper's order (two
    kernels of one shape record one name)."""
    done: Dict[str, int] = {}
    by_record: Dict[str, List[KernelCost]] = {}
    for name, handle in handles:
        record = records.get(name)
        if record is None or name not in runs:
            continue
        k = done.get(name, 0)
        done[name] = k + 1
        calls = runs[name]
        by_record.setdefault(record, []).append(calls[k] if k < len(calls) else calls[-1])
    for record, costs in by_record.items():
        if record not in kernels:
            kernels[record], runs[record] = costs[0], tuple(costs)


def _resolve_unkeyed(key_of: Dict[int, Optional[str]], slot_of: Mapping[int, Tuple[Any, Tuple[float, float, str], str]],
                     kernels: Sequence[Any], graphs: Mapping[str, CompiledGraph]) -> None:
    """Give the events of each run of a graph whose trace range names no key (``## Call
    CompiledFxGraph None ##``) the key of the one unkeyed graph holding every kernel the run
    called; a run that fits none or several gets :data:`_UNRESOLVED` (its kernels say why)."""
    unkeyed = {k: set(g.calls) for k, g in graphs.items() if k.startswith(_UNKEYED + "#")}
    called: Dict[Tuple[float, float, str], set] = {}
    for ev in kernels:
        if key_of.get(ev.index) == _UNKEYED:
            called.setdefault(slot_of[ev.index][1], set()).add(kernel_name(ev.name))
    chosen: Dict[Tuple[float, float, str], Optional[str]] = {}
    for run, names in called.items():
        fits = [k for k, have in unkeyed.items() if names <= have]
        chosen[run] = fits[0] if len(fits) == 1 else _UNRESOLVED
    for index, key in list(key_of.items()):
        if key == _UNKEYED:
            key_of[index] = chosen.get(slot_of[index][1], _UNRESOLVED) if index in slot_of else None


# --------------------------------------------------------------------------- joining the trace


def kernel_costs(events: Sequence[Any], kernels: Sequence[Any], source: Optional[str] = None) -> Dict[int, Any]:
    """Each fused kernel event's :class:`KernelCost`, or the reason there is none (a string),
    by event index: :func:`compiled_costs` without the aten ops."""
    return compiled_costs(events, kernels, (), source)[0]


def compiled_costs(events: Sequence[Any], kernels: Sequence[Any], aten: Sequence[Any] = (),
                   source: Optional[str] = None) -> Tuple[Dict[int, Any], Dict[int, KernelCost]]:
    """Each fused kernel event's :class:`KernelCost`, or the reason there is none (a string),
    and each aten op event that ran as one of its graph's extern kernel calls, its
    :attr:`CompiledGraph.externs` record (the modules of its ops), both by event index.

    Args:
        events: the trace's events (for the ``## Call CompiledFxGraph <key> ##`` ranges).
        kernels: the fused kernels' events (:func:`torch_roofline.timing.compiled.is_fused_kernel`).
        aten: aten op events (the op rows' outermost events); the n-th event of an op inside a
            graph's run is the graph's n-th extern call of it when the counts agree, else it is
            left out.
        source: the trace's file; its graphs are read from ``source + SIDECAR_SUFFIX`` when that
            file exists, else from this process.
    """
    calls: Dict[Any, List[Tuple[float, float, str]]] = {}
    for ev in events:
        if ev.name.startswith(_CALL_PREFIX):
            key = graph_key(ev.name)
            if key is not None:
                calls.setdefault(ev.tid, []).append((ev.start_s, ev.start_s + ev.dur_s, key))
    key_of: Dict[int, Optional[str]] = {}
    nth: Dict[int, int] = {}  # which call of its kernel in its graph's run (a reused kernel runs twice)
    seen: Dict[Tuple[Any, Tuple[float, float, str], str], int] = {}
    slot_of: Dict[int, Tuple[Any, Tuple[float, float, str], str]] = {}
    is_kernel = {ev.index for ev in kernels}
    for ev in sorted([*kernels, *aten], key=lambda e: e.start_s):
        inside = [c for c in calls.get(ev.tid, ()) if c[0] <= ev.start_s + 1e-9 and ev.start_s + ev.dur_s <= c[1] + 1e-9]
        run = min(inside, key=lambda c: c[1] - c[0]) if inside else None
        key_of[ev.index] = run[2] if run is not None else None
        if run is not None:  # an aten op's calls count by op, its overloads together (the extern calls do)
            name = ev.name if ev.index in is_kernel else _event_op(ev.name)
            slot = slot_of[ev.index] = (ev.tid, run, name)
            nth[ev.index] = seen.get(slot, 0)
            seen[slot] = nth[ev.index] + 1
    keys = {k for k in key_of.values() if k is not None}
    sidecar = source + SIDECAR_SUFFIX if source else None
    graphs: Dict[str, CompiledGraph] = {}
    unreadable = None
    if sidecar and os.path.isfile(sidecar):
        try:
            graphs = load_compiled_graphs(sidecar)
        except ValueError as exc:  # the report goes on; each kernel says why it is uncounted
            unreadable = str(exc)
    graphs.update(compiled_graphs(keys - set(graphs)))
    if _UNKEYED in keys:
        _resolve_unkeyed(key_of, slot_of, kernels, graphs)
    out: Dict[int, Any] = {}
    for ev in kernels:
        key = key_of[ev.index]
        if key is None:
            out[ev.index] = "the trace does not say which compiled graph ran it (no CompiledFxGraph range around it)"
        elif key == _UNRESOLVED:
            out[ev.index] = ("its graph was compiled outside Inductor's graph cache (freezing), so the trace names "
                             "no key for it, and the kernels its run called fit no single compiled graph of this "
                             "process")
        elif key not in graphs and unreadable is not None:
            out[ev.index] = unreadable
        elif key not in graphs:
            out[ev.index] = ("its compiled graph is not in this process (a trace read in another process, or the "
                             "compiled model was freed) nor in a file beside the trace (save it with "
                             "torch_roofline.timing.inductor.save_compiled_graphs(trace_path + SIDECAR_SUFFIX))")
        else:
            graph = graphs[key]
            name = kernel_name(ev.name)
            runs = graph.calls.get(name, ())
            found = runs[nth[ev.index]] if nth[ev.index] < len(runs) else graph.kernels.get(name)
            out[ev.index] = found if found is not None else "it is not among its compiled graph's kernels"
    placed: Dict[int, KernelCost] = {}
    for ev in aten:
        key = key_of.get(ev.index)
        graph = graphs.get(key) if key is not None and ev.index not in is_kernel else None
        externs = graph.externs.get(_event_op(ev.name)) if graph is not None else None
        if externs and seen[slot_of[ev.index]] == len(externs):  # as many events of the op as extern calls
            placed[ev.index] = externs[nth[ev.index]]
    return out, placed
