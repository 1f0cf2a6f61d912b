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

import ast
import dataclasses
import gc
import json
import os
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import torch

from torch_roofline.timing._fusion_traffic import compulsory_by_call, eager_bytes_by_call, is_generated
from torch_roofline.timing._inductor_wrapper import (callee_name, distinct_elements, kernel_traffic, read_wrapper,
                                                     record_names)
from torch_roofline.timing._stack_traces import MODULE_FRAME, CallChain, ModuleTree, json_object, read_stack_traces

__all__ = ["KernelCost", "CompiledGraph", "compiled_graphs", "read_compiled_graph", "graph_key", "kernel_name",
           "kernel_costs", "compiled_costs", "save_compiled_graphs", "load_compiled_graphs", "module_tree_beside",
           "remember_node_modules", "SIDECAR_SUFFIX"]

#: Suffix of the file beside a trace holding its compiled graphs (:func:`save_compiled_graphs`).
SIDECAR_SUFFIX = ".inductor.json.gz"
_FORMAT = "torch_roofline.inductor/1"

_CALL_PREFIX = "## Call CompiledFxGraph "
#: What a graph compiled outside Inductor's graph cache (``freezing``, a cache bypass) is
#: called in its trace range; such graphs are told apart by their kernels' names.
_UNKEYED = "None"
#: A run of an unkeyed graph whose kernels fit no single unkeyed graph (or several).
_UNRESOLVED = "None?"
_GRAPH_PREFIX = re.compile(r"^graph_\d+_")
_ANNOTATION = re.compile(r"^([a-z0-9]+)\[([^\]]*)\]\[([^\]]*)\]")
_HANDLE = re.compile(r"# \[Provenance debug handles\] ([\w.]+):(\d+)")
#: A size written as a symbol in the graph's text (``"f32[s0, 64][64, 1]cpu"``): dynamic shapes.
_SYMBOLIC = re.compile(r'"[a-z0-9]+\[[^\]"]*\b[a-z]+\d+\b[^\]"]*\]')
_DYNAMIC_REASON = ("its graph was compiled with dynamic shapes (sizes like s0 in the graph: "
                   "torch.compile(dynamic=True), or a recompile after a shape changed): the trace does not say each "
                   "call's sizes, so its work is not counted; its time is")

#: ``"f32"`` -> torch.float32, from torch.fx's own table (what the graph text is written with).
try:
    from torch.fx.graph import dtype_abbrs as _ABBRS
except ImportError:  # pragma: no cover - older torch
    _ABBRS = {}
_DTYPE_OF = {abbr: dtype for dtype, abbr in _ABBRS.items()}


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
            (:class:`~torch_roofline.timing._stack_traces.CallChain`, one per distinct stack
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


class _Texts(NamedTuple):
    """What one compiled graph keeps, as text (module docstring)."""

    wrapper: str
    graph: str
    provenance: Optional[str]
    stack_traces: Optional[str]


#: The modules of the ops of each graph compiled while kernels were recorded
#: (:func:`remember_node_modules`): the graph's ops in order, each its name and output sizes ->
#: the ``{op: module}`` maps seen with that sequence (two graphs with the same ops but other
#: modules: ambiguous, neither used).
_NODE_MODULES: Dict[Tuple[Tuple[str, Optional[str]], ...], List[Dict[str, str]]] = {}
#: Likewise the aten op each op of those graphs came from (``"aten.gelu.default@18"``: the
#: op Inductor decomposed and its autograd sequence number), for their eager traffic.
_NODE_ORIGINS: Dict[Tuple[Tuple[str, Optional[str]], ...], List[Dict[str, str]]] = {}
_NODE_MODULES_KEPT = 1024  # graphs remembered at most (a few KB each)
_MODULE_PATH = re.compile(r"^L\['(\w+)'\]((?:\.\w+|\[\d+\]|\['[^']*'\])*)$")


def _module_path(stack: Any) -> Optional[str]:
    """The innermost module of an fx node's ``nn_module_stack`` (``{key: ("L['self'].b1.fc",
    Linear)}``), relative to the compiled module (``"b1.fc"``; ``""`` its own code); ``None``
    when it is not a path from the compiled module. Dynamo names that module ``L['self']``
    when it traced its ``forward``, or ``L['fn']`` (listed first, bare) when it traced the
    module's call (``torch.compile(nn.Sequential(...))``)."""
    if not stack:
        return ""  # the compiled module's own code (no submodule on the stack)
    try:
        paths = [str(entry[0]).replace("._modules[", "[") for entry in stack.values()]
    except (AttributeError, IndexError, TypeError):
        return None
    match = _MODULE_PATH.match(paths[-1]) if paths else None
    if match is None:
        return None
    root = match.group(1)
    if root != "self" and paths[0] != f"L['{root}']":
        return None  # a path from an argument of a compiled function, not from the compiled module
    parts = re.findall(r"\.(\w+)|\[(\d+)\]|\['([^']*)'\]", match.group(2))
    return ".".join(a or b or c for a, b, c in parts)


def remember_node_modules(graph: Any) -> None:
    """Record the module of each aten op of a post-grad fx graph (its ``nn_module_stack``, or
    ``fwd_nn_module_stack`` for a backward op), for :func:`read_compiled_graph`: in this
    process by op (:data:`_NODE_MODULES`: the FLOPs each module's ops add to a kernel), and as a
    last frame of the op's stack trace (``File "<torch_roofline module>", line 0, in
    module:b1.fc``), which torch copies into each kernel's stack traces and keeps in its compile
    cache. Called by the pass that ``recording_compiled_kernels`` gives Inductor while it
    compiles; changes nothing else of the graph."""
    names: List[Tuple[str, Optional[str]]] = []
    modules: Dict[str, str] = {}
    origins: Dict[str, str] = {}
    ranks: Dict[Any, int] = {}
    for node in graph.nodes:
        if node.op != "call_function":
            continue
        if isinstance(node.target, torch._ops.OpOverload):  # the ops the graph's text writes as calls
            val = node.meta.get("val")
            names.append((node.name, ", ".join(str(d) for d in val.shape) if isinstance(val, torch.Tensor) else None))
        meta = node.meta
        if meta.get("original_aten") is not None:
            origins[node.name] = f"{meta['original_aten']}@{_seq_rank(ranks, meta.get('seq_nr'))}"
        path = _module_path(meta.get("nn_module_stack") or meta.get("fwd_nn_module_stack"))
        if path is not None:
            modules[node.name] = path
            trace = meta.get("stack_trace") or ""
            if trace and not trace.endswith("\n"):
                trace += "\n"
            if MODULE_FRAME not in trace:
                meta["stack_trace"] = f'{trace}  File "{MODULE_FRAME}", line 0, in module:{path}\n    pass\n'
    for registry, found in ((_NODE_MODULES, modules), (_NODE_ORIGINS, origins)):
        seen = registry.setdefault(tuple(names), [])
        if found not in seen:
            seen.append(found)
        while len(registry) > _NODE_MODULES_KEPT:  # a long run that keeps recompiling: drop the oldest
            del registry[next(iter(registry))]


def _seq_rank(ranks: Dict[Any, int], seq: Any) -> Any:
    """An autograd sequence number as its rank in the graph (first seen: 0): the same graph
    compiled again records the same origins, though autograd's counter has moved on."""
    if seq is None:
        return None
    if seq not in ranks:
        ranks[seq] = len(ranks)
    return ranks[seq]


def _recorded_modules(nodes: Mapping[str, "_Node"], registry: Optional[Mapping] = None) -> Optional[Dict[str, str]]:
    """The ``{op: module}`` map recorded for the graph with these nodes (:func:`_graph_nodes`),
    ``None`` when none or several different ones were; from ``registry`` (default
    :data:`_NODE_MODULES`; :data:`_NODE_ORIGINS` for the ops' origins)."""
    registry = _NODE_MODULES if registry is None else registry
    if not registry:
        return None
    key = tuple((name, _sizes(node.annotation)) for name, node in nodes.items() if node.target is not None)
    seen = registry.get(key)
    return dict(seen[0]) if seen is not None and len(seen) == 1 else None


def _sizes(annotation: Optional[str]) -> Optional[str]:
    """The sizes in a value's annotation as the graph's text writes them (``"8, 256"`` of
    ``"f32[8, 256][256, 1]cpu"``), ``None`` without one: with the op names, the key under which
    :func:`remember_node_modules` keeps a graph's maps."""
    match = _ANNOTATION.match(annotation or "")
    return match.group(2) if match is not None else None


def _node_modules_of(post_grad_graph: str, registry: Optional[Mapping] = None) -> Optional[Dict[str, str]]:
    """:func:`_recorded_modules` of a graph's text."""
    registry = _NODE_MODULES if registry is None else registry
    return _recorded_modules(_graph_nodes(post_grad_graph), registry) if registry else None


def _live_texts(wanted: Optional[set] = None) -> Dict[str, _Texts]:
    """key -> the texts of the compiled graphs this process holds (all of them without
    ``wanted``). Found among the live objects; nothing of Inductor's is imported when it was
    never used."""
    module = sys.modules.get("torch._inductor.output_code")
    cls = getattr(module, "CompiledFxGraph", None) if module is not None else None
    if cls is None or wanted is not None and not wanted:
        return {}
    found: Dict[str, _Texts] = {}
    unkeyed = wanted is None or _UNKEYED in wanted
    for obj in gc.get_objects():
        if type(obj) is cls:  # type(), not isinstance: a dead weak proxy raises on __class__
            key = getattr(obj, "_fx_graph_cache_key", None)
            if key is None and unkeyed and getattr(obj, "cache_key", None):
                key = f"{_UNKEYED}#{obj.cache_key}"  # its trace range names no key: found by its kernels
            if key and (wanted is None or key in wanted or key.startswith(_UNKEYED + "#")) and key not in found:
                found[key] = _Texts(getattr(obj, "source_code", "") or "",
                                    getattr(obj, "inductor_post_grad_graph_str", "") or "",
                                    getattr(obj, "inductor_provenance_mapping_str", None),
                                    getattr(obj, "inductor_provenance_stack_traces_str", None))
    return found


def compiled_graphs(keys: Iterable[str]) -> Dict[str, CompiledGraph]:
    """The compiled graphs with these cache keys that this process still holds, read; a key
    with no graph is missing from the result."""
    return {key: read_compiled_graph(key, *texts) for key, texts in _live_texts(set(keys)).items()}


def save_compiled_graphs(path: str, model: Optional[torch.nn.Module] = None) -> int:
    """Write every compiled graph this process holds to ``path`` (for a trace saved as
    ``trace.json``, ``path`` = ``"trace.json" + SIDECAR_SUFFIX``, which ``from_trace`` finds by
    itself); returns how many. Call it after the profiled steps, before the model is freed.
    With ``model`` (the model the trace's module ranges name), its module names and the file of
    each one's ``forward`` are saved too, so ``from_trace`` puts each fused kernel under the
    module whose ops it fused (:mod:`torch_roofline.timing.kernel_sites`), as the live report does.

    Example::

        prof.export_chrome_trace("trace.json")
        save_compiled_graphs("trace.json" + SIDECAR_SUFFIX, model)
    """
    import gzip

    import torch as _torch

    from torch_roofline._depth import named_modules

    texts = _live_texts()
    doc: Dict[str, Any] = {"format": _FORMAT, "torch": _torch.__version__,
                           "graphs": {k: {"wrapper": t.wrapper, "graph": t.graph, "provenance": t.provenance,
                                          "stack_traces": t.stack_traces,
                                          "node_modules": _node_modules_of(t.graph),
                                          "node_origins": _node_modules_of(t.graph, _NODE_ORIGINS)}
                                      for k, t in texts.items()}}
    if model is not None:
        doc["modules"] = ModuleTree.of(named_modules(model)).files
    with gzip.open(path, "wt", encoding="utf-8") as f:
        json.dump(doc, f)
    return len(texts)


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


def module_tree_beside(source: Optional[str]) -> Optional[ModuleTree]:
    """The model's module tree saved beside the trace ``source`` (``save_compiled_graphs(...,
    model)``), ``None`` when there is no such file or it was saved without the model."""
    sidecar = source + SIDECAR_SUFFIX if source else None
    if not sidecar or not os.path.isfile(sidecar):
        return None
    try:
        modules = _load(sidecar).get("modules")
    except ValueError:
        return None  # kernel_costs names the bad file in each kernel's reason
    if not isinstance(modules, dict):
        return None
    return ModuleTree({str(k): (str(v) if v is not None else None) for k, v in modules.items()})


def _load(path: str) -> Dict[str, Any]:
    import gzip

    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError, EOFError) as exc:
        raise ValueError(f"load_compiled_graphs({path!r}): not a gzipped JSON file written by save_compiled_graphs "
                         f"({type(exc).__name__}: {exc}); write it again with "
                         "torch_roofline.timing.inductor.save_compiled_graphs") from None
    if not isinstance(doc, dict) or doc.get("format") != _FORMAT or not isinstance(doc.get("graphs"), dict):
        raise ValueError(f"load_compiled_graphs({path!r}): expected {{'format': {_FORMAT!r}, 'graphs': {{...}}}}, "
                         f"got a {type(doc).__name__} with format {doc.get('format') if isinstance(doc, dict) else None!r}")
    return doc


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


def _event_op(name: str) -> str:
    """An aten event's op without its overload: ``"aten::addmm.out"`` -> ``"aten.addmm"``."""
    return ".".join(name.replace("::", ".").split(".")[:2])


def _extern_post_ops(body: Sequence[ast.stmt], tensors: Mapping[str, Any]) -> Dict[str, List[Optional[int]]]:
    """Extern op (``"mkldnn._convolution_pointwise"``) -> per call of it in ``call()``, in
    order, the FLOPs of the post-ops its code passes beyond those a replay of the recorded
    shapes counts (its stand-ins: :data:`~torch_roofline.count._onednn_formulas.STAND_INS`);
    ``None`` for a call whose post-ops or sizes cannot be read."""
    from torch_roofline.count._onednn_formulas import CONV_OPS, conv_call_flops, with_stand_ins

    out: Dict[str, List[Optional[int]]] = {}
    for stmt in body:
        value = stmt.value if isinstance(stmt, (ast.Assign, ast.Expr)) else None
        if not isinstance(value, ast.Call):
            continue
        callee = callee_name(value)
        if not callee.startswith("torch.ops.") or callee.count(".") != 4:
            continue
        overload = callee[len("torch.ops."):]
        op = ".".join(overload.split(".")[:2])
        extra = None
        if op in CONV_OPS:
            args = [tuple(tensors[a.id][0]) if isinstance(a, ast.Name) and a.id in tensors else _literal(a)
                    for a in value.args]
            written, stood = conv_call_flops(overload, args), conv_call_flops(overload, with_stand_ins(overload, args))
            extra = written.flops - stood.flops if written is not None and stood is not None else None
        out.setdefault(op, []).append(extra)
    return out


def _literal(node: ast.expr) -> Any:
    """A call argument's value when the code writes it as a literal (``'relu'``, ``[1, 1]``,
    ``None``), else ``None``."""
    try:
        return ast.literal_eval(node)
    except (ValueError, SyntaxError, TypeError):
        return None


def _first_listed(lists: Mapping[str, Sequence[Any]], order: Sequence[str]) -> Dict[str, Tuple[Any, ...]]:
    """Each item (an op, a stack trace) kept in the first generated kernel call listing it, the
    first that can compute it (``order``: the calls in the wrapper's order); extern calls keep
    theirs. Used where torch's provenance lists an op in several kernels that do not all
    compute it: a graph with C++ GEMM templates (``max-autotune``), whose every kernel lists
    the ops of the kernels before it too, and the ops only imprecise kernels list
    (:func:`_orphan_owners`)."""
    seen: set = set()
    out: Dict[str, Tuple[Any, ...]] = {}
    for key in order:
        items = lists.get(key)
        if items is None:
            continue
        out[key] = tuple(items) if not is_generated(key) else tuple(i for i in dict.fromkeys(items) if i not in seen)
        if is_generated(key):
            seen.update(items)
    return out


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


def _extern_op(name: str) -> Optional[str]:
    """The aten op the trace records for an extern kernel call of the wrapper
    (``"extern_kernels.addmm"`` -> ``"aten.addmm"``, ``"torch.ops.aten.convolution_backward.default"``
    -> ``"aten.convolution_backward"``), ``None`` for a C++ kernel."""
    if name.startswith("extern_kernels."):
        return "aten." + name[len("extern_kernels."):]
    parts = name[len("torch.ops."):].split(".") if name.startswith("torch.ops.") else name.split(".")
    if len(parts) == 3:  # namespace.op.overload
        return f"{parts[0]}.{parts[1]}"
    return None


def _eager_bytes(nodes: Mapping[str, "_Node"], origins: Optional[Mapping[str, str]],
                 fused: Mapping[str, List[str]], provenance: Optional[str]
                 ) -> Tuple[Dict[str, Optional[int]], Optional[str]]:
    """(``"<kernel>:<handle>"`` -> eager bytes, why they are unknown) for a graph's C++ kernel calls."""
    if not provenance:
        return {}, "compile with torch._inductor.config.trace.provenance_tracking_level = 1 to know the ops it fused"
    if origins is None:
        return {}, ("which aten op each fused op came from was not recorded (it is, for a compile the profiler or "
                    "the Lightning callback watches)")
    order = [n for n, node in nodes.items() if node.call is not None or node.refs]
    refs = {n: nodes[n].refs for n in order}
    returned = {n for n, node in nodes.items() if node.returned}
    nbytes = {n: _value_bytes(node.annotation) for n, node in nodes.items()}
    targets = {n: nodes[n].target for n in order}
    return eager_bytes_by_call(order, refs, returned, nbytes, targets, origins, fused), None


def _value_bytes(annotation: Optional[str]) -> Optional[int]:
    """Bytes of a graph value from its annotation (``"f32[8, 256][256, 1]cpu"``), distinct
    elements (a broadcast dimension once) x dtype size; ``None`` when unreadable."""
    layout = _layout(annotation)
    if layout is None:
        return None
    size, stride, dtype = layout
    return distinct_elements(size, stride) * dtype.itemsize


def _orphan_owners(fused: Mapping[str, List[str]], order: Sequence[str], nodes: Mapping[str, "_Node"],
                   extern: set, listed: Mapping[str, int], others: Mapping[str, int]) -> Dict[str, Tuple[str, ...]]:
    """``"<kernel>:<handle>"`` -> the ops it counts beyond those no other kernel lists: ops that
    only imprecise kernels (listing an extern kernel's op) and extern calls list, none of them
    an extern call's own op (a frozen graph's max pool, listed by the kernel computing it, by
    the MKL linear after it and by that linear's bias-add kernel). Each goes to the first such
    kernel in call order, which is the first that can compute it: counted once, never dropped."""
    own_ops = set()  # the nodes extern calls compute themselves: their op is the call's op
    for key, names in fused.items():
        if not is_generated(key):
            op = _extern_op(key.rsplit(":", 1)[0])
            mine = [n for n in names if nodes.get(n) is not None and nodes[n].target is not None
                    and ".".join(nodes[n].target[len("torch.ops."):].split(".")[:2]) == op]
            own_ops.update(mine or names)
    candidates = {key: [n for n in names if n not in own_ops and not listed.get(n)
                        and (n in extern or others.get(n, 0) > 1)]
                  for key, names in fused.items() if is_generated(key) and extern.intersection(names)}
    return {key: mine for key, mine in _first_listed(candidates, order).items() if mine}


def _call_flops(names: Optional[List[str]], nodes: Mapping[str, "_Node"], provenance: Optional[str], extern: set,
                listed: Mapping[str, int], orphans: Sequence[str] = ()
                ) -> Tuple[Optional[int], Tuple[str, ...], Optional[str], Dict[str, int]]:
    """(FLOPs, ops, reason, FLOPs per node) of one kernel call that fused the post-grad nodes
    ``names``; a call listing an extern kernel's op counts only the ops no other kernel lists
    (``listed``: op -> how many kernels list it), and the ``orphans`` it is the first to list
    (:func:`_orphan_owners`)."""
    if not provenance:
        return None, (), ("compile with torch._inductor.config.trace.provenance_tracking_level = 1 "
                          "to know the ops it fused (its FLOPs)"), {}
    if names is None:
        return None, (), ("torch recorded no provenance for it (torch 2.14 writes which ops a kernel fused for a "
                          "backward graph only when it compiles while torch_roofline records: profile the step in "
                          "which the model compiles, or compile it inside RooflineProfiler)"), {}
    if not extern.intersection(names):
        return _fused_flops(names, nodes)
    own = [n for n in names if n not in extern and listed.get(n, 0) <= 1] + list(orphans)
    if not own:
        return 0, (), None, {}  # a layout change feeding an extern kernel: bytes, no arithmetic
    return _fused_flops(own, nodes)


def _split(names: Optional[List[str]], per_node: Optional[Mapping[str, int]],
           node_modules: Optional[Mapping[str, str]]) -> Tuple[Tuple[str, Optional[int]], ...]:
    """(module, FLOPs of its ops in this call) per module whose ops the call fused, modules
    relative to the compiled module; empty unless every fused op's module is known. FLOPs are
    ``None`` when the call's FLOPs are unknown (``per_node`` is ``None``)."""
    if not names or not node_modules or any(n not in node_modules for n in names):
        return ()
    flops: Dict[str, Optional[int]] = {}
    for n in names:
        module = node_modules[n]
        flops[module] = None if per_node is None else (flops.get(module) or 0) + per_node.get(n, 0)
    return tuple(sorted(flops.items()))


# --------------------------------------------------------------------------- the fused ops


def _provenance(text: Optional[str]) -> Dict[str, List[str]]:
    """``"<kernel>:<debug handle>"`` -> the post-grad nodes it fused (``cppCodeToPost``), ``{}``
    without it. The handle tells apart kernels of the same name in different graphs."""
    out: Dict[str, List[str]] = {}
    for key, nodes in (json_object(text).get("cppCodeToPost") or {}).items():
        if isinstance(nodes, list):
            out[str(key)] = [str(n) for n in nodes]
    return out


@dataclass(frozen=True)
class _Node:
    target: Optional[str]  # "torch.ops.aten.mul.Tensor"; None for getitem and the like
    call: Optional[ast.Call]
    annotation: Optional[str]
    refs: Tuple[str, ...] = ()  # the values its expression names
    returned: bool = False  # the graph returns it


def _graph_nodes(text: str) -> Dict[str, _Node]:
    """name -> node of the post-grad graph's text (placeholders have no call)."""
    text = re.sub(r"^class <[^>]*>\(", "class _Graph(", text, count=1, flags=re.M)  # "class <lambda>(...)"
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return {}
    forward = next((n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "forward"), None)
    if forward is None:
        return {}
    nodes: Dict[str, _Node] = {}
    for arg in forward.args.args:
        ann = arg.annotation.value if isinstance(arg.annotation, ast.Constant) else None
        nodes[arg.arg] = _Node(None, None, ann if isinstance(ann, str) else None)
    for stmt in forward.body:
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            ann = stmt.annotation.value if isinstance(stmt.annotation, ast.Constant) else None
            name, value = stmt.target.id, stmt.value
        elif isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            ann, name, value = None, stmt.targets[0].id, stmt.value
        else:
            continue
        if isinstance(value, ast.Constant) and value.value is None:
            continue  # `x = None`: the graph freeing a value, not a node
        call = value if isinstance(value, ast.Call) else None
        target = callee_name(call) if call is not None else None
        refs = tuple(dict.fromkeys(n.id for n in ast.walk(value) if isinstance(n, ast.Name) and n.id in nodes))
        nodes[name] = _Node(target if target and target.startswith("torch.ops.") else None, call,
                            ann if isinstance(ann, str) else None, refs)
    for stmt in forward.body:
        if isinstance(stmt, ast.Return) and stmt.value is not None:
            for n in ast.walk(stmt.value):
                if isinstance(n, ast.Name) and n.id in nodes:
                    nodes[n.id] = dataclasses.replace(nodes[n.id], returned=True)
    return nodes


def _layout(annotation: Optional[str]) -> Optional[Tuple[List[int], List[int], torch.dtype]]:
    """(size, stride, dtype) of a value's annotation (``"f32[8, 256][256, 1]cpu"``), ``None``
    when it has none or its sizes are symbols."""
    match = _ANNOTATION.match(annotation or "")
    if match is None:
        return None
    dtype = _DTYPE_OF.get(match.group(1))
    try:
        size = [int(s) for s in match.group(2).split(",") if s.strip()]
        stride = [int(s) for s in match.group(3).split(",") if s.strip()]
    except ValueError:  # symbolic sizes (s0)
        return None
    if dtype is None or len(size) != len(stride):
        return None
    return size, stride, dtype


def _meta(annotation: Optional[str]) -> Optional[torch.Tensor]:
    layout = _layout(annotation)
    if layout is None:
        return None
    size, stride, dtype = layout
    return torch.empty_strided(size, stride, dtype=dtype, device="meta")


def _torch_attr(dotted: str) -> Any:
    """``"torch.ops.aten.mul.Tensor"`` / ``"torch.float32"`` -> the object, or ``None``.
    Inductor's own prims (``torch.ops.prims._low_memory_max_pool_with_offsets``) are registered
    when Inductor is imported: a graph read from a saved file in a process that compiled
    nothing imports them first."""
    obj: Any = torch
    for part in dotted.split(".")[1:]:
        found = getattr(obj, part, None)
        if found is None and obj is getattr(torch.ops, "prims", None):
            import importlib

            importlib.import_module("torch._inductor.inductor_prims")
            found = getattr(obj, part, None)
        obj = found
        if obj is None:
            return None
    return obj


#: Inductor's own prims, FLOPs per output element: ``fma(a, b, c)`` = a * b + c.
_INDUCTOR_PRIMS = {"torch.ops.prims.fma.default": 2}


class _Unreadable(Exception):
    pass


def _value(node: ast.expr, nodes: Mapping[str, _Node]) -> Any:
    if isinstance(node, ast.Name):
        found = nodes.get(node.id)
        tensor = _meta(found.annotation) if found is not None else None
        if tensor is None:
            raise _Unreadable(f"the shape of {node.id!r} is not in the graph's text")
        return tensor
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_value(e, nodes) for e in node.elts]
    if isinstance(node, ast.Attribute):
        text = ast.unparse(node)
        if text.startswith("torch."):
            obj = _torch_attr(text)
            if obj is not None:
                return obj
        raise _Unreadable(f"argument {text!r}")
    if isinstance(node, ast.Call) and callee_name(node) == "device":
        return torch.device("meta")
    text = ast.unparse(node)
    if text in ("inf", "-inf", "nan"):  # how the graph's text writes these floats
        return float(text)
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise _Unreadable(f"argument {ast.unparse(node)!r}") from None


def _fused_flops(names: Optional[List[str]], nodes: Mapping[str, _Node]
                 ) -> Tuple[Optional[int], Tuple[str, ...], Optional[str], Dict[str, int]]:
    """(FLOPs, ops, reason, FLOPs per node) of the post-grad nodes one kernel fused."""
    from torch_roofline.count.mode import OpCounter

    if not names:
        return None, (), "the compiled graph does not say which ops it fused", {}
    flops = 0
    ops: List[str] = []
    per_node: Dict[str, int] = {}
    for name in names:
        node = nodes.get(name)
        if node is None:
            return None, tuple(ops), f"its op {name!r} is not in the compiled graph's text", {}
        if node.target is None or node.call is None:
            continue  # getitem of a tuple output, a placeholder: no arithmetic
        if node.target.startswith("torch.ops.prims.inductor_"):
            continue  # Inductor's random numbers and their seeds (dropout): no floating-point arithmetic
        per_element = _INDUCTOR_PRIMS.get(node.target)
        if per_element is not None:  # registered with Inductor, so not in the counter's tables
            out = _meta(node.annotation)
            if out is None:
                return None, tuple(ops), f"the shape of {name!r} is not in the graph's text", {}
            per_node[name] = per_element * out.numel()
            flops += per_node[name]
            ops.append(node.target[len("torch.ops."):].rsplit(".", 1)[0])
            continue
        target = _torch_attr(node.target)
        if target is None:
            return None, tuple(ops), f"unknown op {node.target!r}", {}
        try:
            args = [_value(a, nodes) for a in node.call.args]
            kwargs = {k.arg: _value(k.value, nodes) for k in node.call.keywords if k.arg}
        except _Unreadable as exc:
            return None, tuple(ops), f"its op {name!r} has an argument that cannot be rebuilt ({exc})", {}
        counter = OpCounter(None, None)
        try:
            with counter:
                target(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - the meta device cannot run it: unknown work
            return (None, tuple(ops), f"its op {name!r} ({node.target}) cannot run on meta tensors "
                    f"({type(exc).__name__})", {})
        missing = [c.op for c in counter.ops if not c.counted]
        if missing:
            return None, tuple(ops), f"no FLOP formula for {', '.join(sorted(set(missing)))}", {}
        per_node[name] = sum(c.flops for c in counter.ops)
        flops += per_node[name]
        ops.extend(c.op for c in counter.ops)
    return flops, tuple(dict.fromkeys(ops)), None, per_node


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
