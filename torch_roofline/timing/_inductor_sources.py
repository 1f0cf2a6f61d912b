"""Where a compiled graph's texts come from: Inductor's live registry in this process (the
wrapper code, the post-grad graph, the provenance), the module each graph node came from
(remembered by a post-grad pass while torch.compile runs), and the graphs file saved beside a
exported trace (``<trace>.inductor.json.gz``).
"""

from __future__ import annotations

import gc
import json
import os
import re
import sys
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Tuple

import torch

from torch_roofline.timing.stack_traces import MODULE_FRAME, ModuleTree
from torch_roofline.timing._inductor_graph import _Node, _graph_nodes, _sizes

_FORMAT = "torch_roofline.inductor/1"


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


#: Suffix of the file beside a trace holding its compiled graphs (:func:`save_compiled_graphs`).
SIDECAR_SUFFIX = ".inductor.json.gz"

#: What a graph compiled outside Inductor's graph cache (``freezing``, a cache bypass) is
#: called in its trace range; such graphs are told apart by their kernels' names.
_UNKEYED = "None"


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
