"""What a compiled graph's fused kernels would move unfused, and what they must move at least.

Used by :mod:`torch_roofline.timing.inductor` for each C++ kernel call, beside its real traffic:

* **Eager bytes**: the bytes the aten ops it fused move when each runs as its own eager op
  (this package's op memory model: an op reads its inputs and writes its outputs). Inductor
  decomposes many ops before it fuses them (``aten.gelu`` into ``mul, mul, erf, add, mul``);
  counting the decomposed ops one by one would charge a GELU five reads and writes that eager
  PyTorch never makes. So the post-grad ops are grouped back into the aten op each came from
  (its ``original_aten`` and autograd sequence number, recorded while the graph compiled, one
  group per connected run of such ops), and a group moves the values entering it from other
  ops plus the values it hands on (used by another op or returned by the graph). A group of
  views (``aten.t``) moves nothing. A group is charged to the kernel that computes its last
  op; one an extern kernel computes (a matrix multiplication) is the extern kernel's own row.
  Outputs the compiled graph never uses are not counted (Inductor removed them; eager
  ``native_layer_norm`` also writes its mean and rstd in inference).
* **Compulsory bytes**: within one run of its graph, the bytes of the buffers the kernel is
  the first to read (graph inputs no earlier kernel touched) or to write (each buffer
  written once): this package's compulsory memory model (each storage moved once), taken
  over the buffers the generated code really allocates. A buffer the graph allocates is never
  a compulsory read (nothing is in it before a kernel writes it). A graph's inputs are counted
  again in each graph (a backward graph reading what its forward saved).
"""

from __future__ import annotations

import ast
import functools
from typing import Dict, List, Mapping, Optional, Sequence, Set, Tuple

import torch

from torch_roofline.count.traffic import is_view_op
from torch_roofline.timing._inductor_wrapper import callee_name, distinct_elements, kernel_callee, param_role, tensor_of

__all__ = ["eager_bytes_by_call", "compulsory_by_call", "group_ops", "is_generated"]


def is_generated(key: str) -> bool:
    """True for a kernel Inductor generated (``"cpp_fused_gelu_0:2"``, ``"triton_poi_fused_gelu_0:2"``),
    False for an extern kernel call (``"extern_kernels.addmm:1"``)."""
    return key.startswith(("cpp_", "triton_"))


# --------------------------------------------------------------------------- eager bytes


def group_ops(order: Sequence[str], refs: Mapping[str, Sequence[str]], origins: Mapping[str, str]) -> List[List[str]]:
    """The graph's ops (``order``: names in graph order) grouped into the aten ops they came
    from: ops with the same recorded origin (``"aten.gelu.default@18"``) that feed one another
    are one group; an op without a recorded origin is a group of its own. Groups in order of
    their first op."""
    parent = {n: n for n in order}
    position = {n: i for i, n in enumerate(order)}

    def root(n: str) -> str:
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    for n in order:
        key = origins.get(n)
        if key is None:
            continue
        for r in refs.get(n, ()):
            if r in parent and origins.get(r) == key:
                a, b = root(n), root(r)
                if a != b:
                    parent[max(a, b, key=position.__getitem__)] = min(a, b, key=position.__getitem__)
    groups: Dict[str, List[str]] = {}
    for n in order:
        groups.setdefault(root(n), []).append(n)
    return list(groups.values())


@functools.lru_cache(maxsize=None)
def _is_view(target: Optional[str]) -> bool:
    """True for an op that moves no data (``"torch.ops.aten.permute.default"``), as the op
    memory model counts it (:func:`~torch_roofline.count.traffic.is_view_op`); ``None``, a
    getitem of a tuple output, moves none either."""
    if target is None:
        return True
    obj: object = torch
    for part in target.split(".")[1:]:
        obj = getattr(obj, part, None)
        if obj is None:
            return False
    return is_view_op(obj)


def _group_bytes(group: Sequence[str], refs: Mapping[str, Sequence[str]], users: Mapping[str, Set[str]],
                 returned: Set[str], nbytes: Mapping[str, Optional[int]], targets: Mapping[str, Optional[str]]
                 ) -> Optional[int]:
    """Bytes one eager op (a group) moves: values entering it plus values it hands on; ``None``
    when a value's size is unknown."""
    if all(_is_view(targets.get(n)) for n in group):
        return 0
    members = set(group)
    values = {r for n in group for r in refs.get(n, ()) if r not in members}
    values |= {n for n in group if n in returned or users.get(n, set()) - members}
    total = 0
    for v in values:
        b = nbytes.get(v)
        if b is None:
            return None
        total += b
    return total


def eager_bytes_by_call(order: Sequence[str], refs: Mapping[str, Sequence[str]], returned: Set[str],
                        nbytes: Mapping[str, Optional[int]], targets: Mapping[str, Optional[str]],
                        origins: Mapping[str, str], calls: Mapping[str, Sequence[str]]) -> Dict[str, Optional[int]]:
    """Eager bytes (module docstring) per C++ kernel call.

    Args:
        order: the graph's op names in order (placeholders excluded).
        refs: op -> the values its arguments name.
        returned: values the graph returns.
        nbytes: value -> its bytes (distinct elements x dtype size), ``None`` unknown.
        targets: op -> its aten overload (``"torch.ops.aten.mul.Tensor"``), ``None`` for getitem.
        origins: op -> the aten op it came from (:func:`group_ops`).
        calls: ``"<kernel>:<handle>"`` -> the ops it lists, C++ kernels and extern kernels alike.

    Returns:
        ``"<kernel>:<handle>"`` -> eager bytes, for the C++ kernels' calls.
    """
    users: Dict[str, Set[str]] = {}
    for n in order:
        for r in refs.get(n, ()):
            users.setdefault(r, set()).add(n)
    position = {n: i for i, n in enumerate(order)}
    owner: Dict[str, str] = {}  # op -> a C++ call listing it (a recomputed op: the first)
    extern: Set[str] = set()
    for key, names in calls.items():
        if not is_generated(key):
            extern.update(names)
    # a call that also lists an extern kernel's op (a weight-layout change) owns only the ops
    # no other call lists: its list names the ops of the kernels after it too
    clean = [key for key, names in calls.items() if is_generated(key) and not extern.intersection(names)]
    loose = [key for key, names in calls.items() if is_generated(key) and extern.intersection(names)]
    for key in clean + loose:
        for n in calls[key]:
            owner.setdefault(n, key)
    out: Dict[str, Optional[int]] = {key: 0 for key in calls if is_generated(key)}
    for group in group_ops(order, refs, origins):
        if extern.intersection(group):
            continue  # an extern kernel's op: its own row, with its recorded shapes
        listed = [n for n in group if n in owner]
        if not listed:
            continue  # views the generated code folds into its indexing
        key = owner[max(listed, key=position.__getitem__)]
        if out[key] is None:
            continue
        b = _group_bytes(group, refs, users, returned, nbytes, targets)
        out[key] = None if b is None else out[key] + b
    return out


# --------------------------------------------------------------------------- compulsory bytes


def _root(expr: ast.expr, alias: Mapping[str, str]) -> Optional[str]:
    """The buffer an argument expression stands for (``reinterpret_tensor(buf3, ...)`` -> the
    buffer ``buf3`` is, after ``buf3 = buf1`` reuses)."""
    if isinstance(expr, ast.Call) and callee_name(expr) == "reinterpret_tensor" and expr.args:
        return _root(expr.args[0], alias)
    if isinstance(expr, ast.Name):
        name = expr.id
        while name in alias:
            name = alias[name]
        return name
    return None


def compulsory_by_call(body: Sequence[ast.stmt], params: Mapping[str, List[str]],
                       tensors: Mapping[str, Tuple[Tuple[int, ...], Tuple[int, ...], torch.dtype]]
                       ) -> Dict[str, List[Optional[Tuple[int, int]]]]:
    """Compulsory (bytes read, bytes written) of each generated kernel call in one run of the graph
    (module docstring), by kernel name, its calls in order; ``None`` for a call with an
    argument of unknown size.

    Args:
        body: the statements of the wrapper's ``call()``.
        params: generated kernel -> its parameter names (``in_ptr0``, ``out_ptr0``, ...).
        tensors: buffer -> (size, stride, dtype), as the wrapper allocates them.
    """
    alias: Dict[str, str] = {}
    touched: Set[str] = set()
    written: Set[str] = set()
    out: Dict[str, List[Optional[Tuple[int, int]]]] = {}
    for stmt in body:
        value = stmt.value if isinstance(stmt, (ast.Assign, ast.Expr)) else None
        target = stmt.targets[0].id if (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
                                        and isinstance(stmt.targets[0], ast.Name)) else None
        if target is not None and (isinstance(value, ast.Name) or (
                isinstance(value, ast.Call) and callee_name(value) == "reinterpret_tensor")):
            base = _root(value, alias)
            if base is not None and base != target:
                alias[target] = base  # a reuse or a view: the same storage
            continue
        if target is not None and isinstance(value, ast.Subscript):
            base = _root(value.value, alias)
            if base is not None:
                alias[target] = base  # one output of a tuple-returning extern kernel
            continue
        if not isinstance(value, ast.Call):
            continue
        callee = callee_name(value)
        if target is not None and callee.startswith("empty_strided"):
            touched.add(target)  # allocated here: nothing in it to read until a kernel writes it
            continue
        kernel = kernel_callee(value, params)
        if kernel is not None:
            first = _first_touch(value.args, params[kernel], tensors, alias, touched, written)
            out.setdefault(kernel, []).append(first)
        elif callee.startswith("empty_strided") or callee.startswith("assert_") or callee == "reinterpret_tensor":
            continue
        else:  # an extern kernel or a fallback op: what it names is touched; what it returns, written
            for arg in list(value.args) + [k.value for k in value.keywords]:
                for node in ast.walk(arg):
                    base = _root(node, alias) if isinstance(node, (ast.Name, ast.Call)) else None
                    if base is not None:
                        touched.add(base)
            for k in value.keywords:
                base = _root(k.value, alias) if k.arg == "out" else None
                if base is not None:
                    written.add(base)
            if target is not None:
                touched.add(target)
                written.add(target)
    return out


def _first_touch(args: Sequence[ast.expr], names: Sequence[str], tensors: Mapping, alias: Mapping[str, str],
                 touched: Set[str], written: Set[str]) -> Optional[Tuple[int, int]]:
    read = wrote = 0
    for arg, param in zip(args, names):
        is_in, is_out = param_role(param)
        if not (is_in or is_out):
            continue
        base = _root(arg, alias)
        tensor = tensor_of(arg, tensors)
        if base is None or tensor is None:
            return None
        n = distinct_elements(tensor[0], tensor[1]) * tensor[2].itemsize
        if is_in and base not in touched:
            read += n
        if is_out and base not in written:
            wrote += n
        touched.add(base)
        if is_out:
            written.add(base)
    return read, wrote
