"""The generated wrapper of an Inductor graph, read for each generated kernel's traffic.

Used by :mod:`torch_roofline.timing.inductor` (conventions there): which buffers each kernel is
called with, their sizes, strides and dtypes (``empty_strided_cpu(...)``,
``empty_strided_cuda(...)``, ``rand_strided(...)`` in ``get_args()``, ``reinterpret_tensor(...)``,
the ``assert_tensor_metadata(...)`` checks after extern kernels, ``a = b`` reuses), and which
the kernel reads or writes: its parameter names ``in_ptr``/``out_ptr``/``in_out_ptr``, the same
for a C++ kernel (``async_compile.cpp_pybinding(..., source)``, called as ``name(...)``) and a
Triton kernel on a GPU (``async_compile.triton(name, source)`` holding ``def name(in_ptr0, ...)``,
called as ``name.run(...)``). Only the Triton part of this module is device-specific.
"""

from __future__ import annotations

import ast
import re
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch

__all__ = ["callee_name", "distinct_elements", "kernel_callee", "kernel_traffic", "param_role", "read_wrapper",
           "record_names", "tensor_of"]

_PARAMS = re.compile(r'extern\s+"C"[^(]*\(([^)]*)\)', re.S)
_TRITON_DEF = re.compile(r"\bdef\s+\w+\s*\(([^)]*)\)", re.S)


_Tensor = Tuple[Tuple[int, ...], Tuple[int, ...], torch.dtype]


def read_wrapper(source: str
                 ) -> Tuple[Dict[str, List[ast.expr]], Dict[str, _Tensor], Dict[str, List[str]], List[ast.stmt]]:
    """(kernel -> its first call's arguments, buffer/input name -> tensor, kernel -> C++ parameter
    names, the statements of ``call()``)."""
    tree = ast.parse(source)
    params: Dict[str, List[str]] = {}
    tensors: Dict[str, _Tensor] = {}
    calls: Dict[str, List[ast.expr]] = {}
    call_body: List[ast.stmt] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            value = node.value
            maker = callee_name(value) if isinstance(value, ast.Call) else ""
            if maker in ("async_compile.cpp_pybinding", "async_compile.triton") and len(value.args) >= 2:
                code = value.args[1]
                if isinstance(code, ast.Constant) and isinstance(code.value, str):
                    read = _param_names if maker == "async_compile.cpp_pybinding" else _triton_param_names
                    params[node.targets[0].id] = read(code.value)
        if isinstance(node, ast.FunctionDef) and node.name == "get_args":
            for stmt in node.body:
                _tensor_assign(stmt, tensors, "rand_strided")
        if isinstance(node, ast.FunctionDef) and node.name == "call":
            call_body = _flat(node.body)
    for stmt in call_body:
        if _tensor_assign(stmt, tensors, None):
            continue
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call):
            callee = callee_name(stmt.value)
            if callee in ("assert_tensor_metadata", "assert_size_stride"):
                _asserted(stmt.value, tensors)  # an extern kernel's output: its size, checked
                continue
            kernel = kernel_callee(stmt.value, params)
            if kernel is not None and kernel not in calls:
                calls[kernel] = list(stmt.value.args)
    return calls, tensors, params, call_body


_CPP_DEF = re.compile(r"^(\w+) = async_compile\.cpp_pybinding\(", re.M)
_RECORD = re.compile(r'RAIIAtenRecordFunctionHandle\s+\w+\(\s*"graph_\d+_(\w+)"')


def record_names(source: str) -> Dict[str, str]:
    """C++ kernel -> the name its profiler event carries (without the ``graph_<n>_`` prefix),
    for the kernels whose event is not named after them: Inductor's C++ GEMM templates
    (``max-autotune``) record ``graph_0_gemm_m8n256k64_kernel`` for ``cpp_fused_addmm_gelu_0``."""
    starts = [(m.start(), m.group(1)) for m in _CPP_DEF.finditer(source)]
    out: Dict[str, str] = {}
    for k, (start, name) in enumerate(starts):
        end = starts[k + 1][0] if k + 1 < len(starts) else len(source)
        found = _RECORD.search(source, start, end)
        if found is not None and found.group(1) != name:
            out[name] = found.group(1)
    return out


def _flat(body: List[ast.stmt]) -> List[ast.stmt]:
    """The statements of ``body`` with those of its ``with`` blocks in their place (a GPU
    wrapper runs its kernels inside ``with torch.cuda._DeviceGuard(0):``)."""
    out: List[ast.stmt] = []
    for stmt in body:
        if isinstance(stmt, ast.With):
            out.extend(_flat(stmt.body))
        else:
            out.append(stmt)
    return out


def kernel_callee(call: ast.Call, params: Mapping[str, List[str]]) -> Optional[str]:
    """The generated kernel a call of the wrapper runs (``cpp_fused_gelu_0(...)``,
    ``triton_poi_fused_gelu_0.run(...)``), else ``None``."""
    callee = callee_name(call)
    if callee.endswith(".run"):
        callee = callee[: -len(".run")]
    return callee if callee in params else None


def callee_name(call: ast.Call) -> str:
    """The called expression as source text (``"async_compile.cpp_pybinding"``), or ``""``."""
    try:
        return ast.unparse(call.func)
    except Exception:  # noqa: BLE001 - an expression ast cannot write back: not a callee we know
        return ""


def _param_names(cpp: str) -> List[str]:
    """The C++ kernel's parameter names, in order (``in_ptr0``, ``out_ptr0``, ``ks0``)."""
    match = _PARAMS.search(cpp)
    if match is None:
        return []
    return [p.strip().split()[-1].lstrip("*&") for p in match.group(1).split(",") if p.strip()]


def _triton_param_names(source: str) -> List[str]:
    """A Triton kernel's parameter names, in order (``in_ptr0``, ``out_ptr0``, ``xnumel``), from
    its ``def`` (annotations such as ``XBLOCK : tl.constexpr`` dropped)."""
    match = _TRITON_DEF.search(source)
    if match is None:
        return []
    return [p.split(":")[0].split("=")[0].strip() for p in match.group(1).split(",") if p.strip()]


def _tensor_assign(stmt: ast.stmt, tensors: Dict[str, _Tensor], only: Optional[str]) -> bool:
    """Record ``name = empty_strided_*(size, stride, dtype)`` / ``rand_strided(...)`` /
    ``reinterpret_tensor(other, size, stride, offset)`` / ``name = other``; True when recorded."""
    if not isinstance(stmt, ast.Assign) or len(stmt.targets) != 1 or not isinstance(stmt.targets[0], ast.Name):
        return False
    target, value = stmt.targets[0].id, stmt.value
    if isinstance(value, ast.Name) and only is None:
        if value.id in tensors:
            tensors[target] = tensors[value.id]
            return True
        return False
    if not isinstance(value, ast.Call):
        return False
    callee = callee_name(value)
    if only is not None and callee != only:
        return False
    tensor = tensor_of(value, tensors)
    if tensor is None:
        return False
    tensors[target] = tensor
    return True


def _asserted(call: ast.Call, tensors: Dict[str, _Tensor]) -> None:
    """``assert_tensor_metadata(buf, size, stride, dtype, ...)`` / ``assert_size_stride(buf, size,
    stride, ...)``: the size of a buffer an extern kernel returned."""
    args = call.args
    if len(args) < 3 or not isinstance(args[0], ast.Name):
        return
    name = args[0].id
    dtype = _dtype(args[3]) if len(args) > 3 else None
    if dtype is None:
        dtype = tensors[name][2] if name in tensors else None
    if dtype is None:
        return
    try:
        tensors[name] = (tuple(ast.literal_eval(args[1])), tuple(ast.literal_eval(args[2])), dtype)
    except (ValueError, TypeError, SyntaxError):
        return


def tensor_of(value: ast.expr, tensors: Mapping[str, _Tensor]) -> Optional[_Tensor]:
    """The tensor (size, stride, dtype) an argument expression stands for, or ``None``."""
    if isinstance(value, ast.Name):
        return tensors.get(value.id)
    if not isinstance(value, ast.Call):
        return None
    callee = callee_name(value)
    try:
        if callee.startswith("empty_strided") or callee == "rand_strided":
            size, stride = ast.literal_eval(value.args[0]), ast.literal_eval(value.args[1])
            dtype_node = value.args[2] if len(value.args) > 2 else next(
                (k.value for k in value.keywords if k.arg == "dtype"), None)
            dtype = _dtype(dtype_node)
            return (tuple(size), tuple(stride), dtype) if dtype is not None else None
        if callee == "reinterpret_tensor":
            base = tensor_of(value.args[0], tensors)
            if base is None:
                return None
            size, stride = ast.literal_eval(value.args[1]), ast.literal_eval(value.args[2])
            return (tuple(size), tuple(stride), base[2])
    except (ValueError, TypeError, IndexError, SyntaxError):  # symbolic sizes, unexpected forms
        return None
    return None


def _dtype(node: Optional[ast.expr]) -> Optional[torch.dtype]:
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "torch":
        dtype = getattr(torch, node.attr, None)
        return dtype if isinstance(dtype, torch.dtype) else None
    return None


def distinct_elements(size: Sequence[int], stride: Sequence[int]) -> int:
    """Elements a view of ``size`` and ``stride`` holds, a broadcast (stride 0) dimension once."""
    n = 1
    for s, st in zip(size, stride):
        if st != 0:
            n *= s
    return n if all(s > 0 for s in size) else 0


#: Parameter names of Inductor's C++ GEMM templates (``max-autotune``): ``X`` (input) and
#: ``W`` (packed weight) read, ``Y`` (output) written, beside the usual ``in_ptr<k>``.
_TEMPLATE_IN, _TEMPLATE_OUT = frozenset({"X", "W"}), frozenset({"Y"})


def param_role(name: str) -> Tuple[bool, bool]:
    """(read, written) of a generated kernel's parameter: ``in_ptr<k>`` read, ``out_ptr<k>``
    written, ``in_out_ptr<k>`` both, a C++ GEMM template's ``X``/``W`` read and ``Y`` written;
    a scalar (``ks0``, ``xnumel``) neither."""
    is_in = name.startswith(("in_ptr", "in_out_ptr")) or name in _TEMPLATE_IN
    is_out = name.startswith(("out_ptr", "in_out_ptr")) or name in _TEMPLATE_OUT
    return is_in, is_out


def kernel_traffic(args: Sequence[ast.expr], names: Optional[List[str]], tensors: Mapping[str, _Tensor]):
    """(bytes read, bytes written, dominant dtype name) of one kernel call, or the reason."""
    if not names:
        return "its C++ signature could not be read from the generated code"
    read = written = 0
    by_dtype: Dict[str, int] = {}
    for arg, param in zip(args, names):
        is_in, is_out = param_role(param)
        if not (is_in or is_out):
            continue  # a scalar (a size, a seed)
        tensor = tensor_of(arg, tensors)
        if tensor is None:
            return f"the size of its argument {ast.unparse(arg)!r} could not be read (symbolic or unexpected)"
        size, stride, dtype = tensor
        nbytes = distinct_elements(size, stride) * dtype.itemsize
        read += nbytes if is_in else 0
        written += nbytes if is_out else 0
        name = str(dtype).replace("torch.", "")
        by_dtype[name] = by_dtype.get(name, 0) + nbytes
    dtype_name = max(by_dtype, key=by_dtype.__getitem__) if by_dtype else None
    return read, written, dtype_name
