"""Reading a compiled graph's post-grad FX text: its nodes (op, arguments, output layout), the
FLOPs of the ops a fused kernel runs (each node replayed under the counter on meta tensors),
their eager bytes, the provenance that maps kernels to nodes, and the post-ops of extern calls.
"""

from __future__ import annotations

import ast
import dataclasses
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from torch_roofline.timing._fusion_traffic import eager_bytes_by_call, is_generated
from torch_roofline.timing._inductor_wrapper import callee_name, distinct_elements
from torch_roofline.timing.stack_traces import json_object


#: A node's output annotation in the graph text: ``f32[8, 64][64, 1]cpu``.
_ANNOTATION = re.compile(r"^([a-z0-9]+)\[([^\]]*)\]\[([^\]]*)\]")

#: ``"f32"`` -> torch.float32, from torch.fx's own table (what the graph text is written with).
try:
    from torch.fx.graph import dtype_abbrs as _ABBRS
except ImportError:  # pragma: no cover - older torch
    _ABBRS = {}
_DTYPE_OF = {abbr: dtype for dtype, abbr in _ABBRS.items()}


def _sizes(annotation: Optional[str]) -> Optional[str]:
    """The sizes in a value's annotation as the graph's text writes them (``"8, 256"`` of
    ``"f32[8, 256][256, 1]cpu"``), ``None`` without one: with the op names, the key under which
    :func:`remember_node_modules` keeps a graph's maps."""
    match = _ANNOTATION.match(annotation or "")
    return match.group(2) if match is not None else None


def _event_op(name: str) -> str:
    """An aten event's op without its overload: ``"aten::addmm.out"`` -> ``"aten.addmm"``."""
    return ".".join(name.replace("::", ".").split(".")[:2])


def _extern_post_ops(body: Sequence[ast.stmt], tensors: Mapping[str, Any]) -> Dict[str, List[Optional[int]]]:
    """Extern op (``"mkldnn._convolution_pointwise"``) -> per call of it in ``call()``, in
    order, the FLOPs of the post-ops its code passes beyond those a replay of the recorded
    shapes counts (its stand-ins: :data:`~torch_roofline.count.onednn_formulas.STAND_INS`);
    ``None`` for a call whose post-ops or sizes cannot be read."""
    from torch_roofline.count.onednn_formulas import CONV_OPS, conv_call_flops, with_stand_ins

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
