"""The counter: a private TorchDispatchMode plus module and phase attribution.

Forward ops are attributed to the innermost module whose forward is running (module
forward pre/post hooks maintain the call stack). Backward ops are attributed to the module
whose forward *created* the autograd node being executed: during forward we note the range
of autograd sequence numbers each module call allocated; during backward,
``torch._C._current_autograd_node()`` gives the node and its sequence number. Optimizer
ops are those run inside ``Optimizer.step`` (global step hooks), attributed to the root.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.optim.optimizer as _optim
from torch import nn
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch_roofline._gc import import_off_stack
from torch_roofline._installed import Installed
from torch_roofline.count.tree import tensors as _tensors

from torch_roofline.count import decompose as _decompose
from torch_roofline.count import formulas as _f
from torch_roofline.count.formulas import op_name
from torch_roofline.count.traffic import StepTraffic, storage_key, is_view_op, tensor_bytes
from torch_roofline.count.result import CountResult
from torch_roofline._depth import named_modules as _named_modules
from torch_roofline.records import ModuleInfo, OpCost, frozen_record
from torch_roofline.count.module_infos import module_infos

__all__ = ["OpCounter", "module_infos", "op_name", "compute_dtype"]

_ACTIVE = threading.local()

#: What the counter knows of an overload: (formula entry, dotted name, has arithmetic but no
#: formula, the overload, decompose it: True, False, or the device types where it does not).
_Facts = Tuple[Any, str, bool, Any, Union[bool, frozenset]]


def compute_dtype(ins: Sequence[torch.Tensor], outs: Sequence[torch.Tensor], unit: str) -> Optional[str]:
    """The dtype an op computes in: matrix ops, their first floating input; others, the output.

    ``ins`` and ``outs``: the op's input and output tensors.
    """
    order = ins + outs if unit == "matrix" else outs + ins
    for t in order:
        if t.is_floating_point() or t.is_complex():
            return _dtype_name(t.dtype)
    return _dtype_name(order[0].dtype) if order else None


_DTYPE_NAMES: Dict[torch.dtype, str] = {}


def _dtype_name(dtype: torch.dtype) -> str:
    """``"float32"`` for ``torch.float32`` (cached: called once per op)."""
    name = _DTYPE_NAMES.get(dtype)
    if name is None:
        name = _DTYPE_NAMES[dtype] = str(dtype).replace("torch.", "")
    return name


class _MetaAttention(TorchFunctionMode):
    """On the meta device, count ``F.scaled_dot_product_attention`` as the fused kernel.

    CPU and CUDA runs dispatch SDPA to a fused kernel (flash / memory-efficient), which reads
    Q, K and V once and writes the output once. Meta tensors have no fused kernel, so torch
    falls back to its math path (matmul, softmax, and for bf16/fp16 an up-cast of K and V to
    fp32): other ops and several times the traffic. This mode routes meta SDPA calls to
    ``aten._scaled_dot_product_flash_attention_for_cpu``, which has meta and backward
    kernels; calls it cannot express (grouped-query ``enable_gqa``, dropout, a mask that needs
    a gradient) keep the default.
    """

    def __torch_function__(self, func: Any, types: Any, args: Tuple = (), kwargs: Optional[Dict] = None) -> Any:
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention and args and getattr(args[0], "is_meta", False):
            routed = _flash_on_meta(*args, **kwargs)
            if routed is not None:
                return routed
        return func(*args, **kwargs)


def _flash_on_meta(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_mask: Any = None,
                   dropout_p: float = 0.0, is_causal: bool = False, scale: Optional[float] = None,
                   enable_gqa: bool = False) -> Optional[torch.Tensor]:
    if enable_gqa or dropout_p or query.dim() != 4 or query.shape[1] != key.shape[1]:
        return None
    if isinstance(attn_mask, torch.Tensor) and attn_mask.requires_grad and torch.is_grad_enabled():
        return None  # a learned bias (relative positions): no fused kernel differentiates it; CPU runs the math path too
    return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        query, key, value, 0.0, is_causal, attn_mask=attn_mask, scale=scale)[0]


def _dispatch(self: "_Mode", func: Any, types: Any, args: Tuple = (), kwargs: Optional[Dict] = None) -> Any:
    """The counting dispatch mode's ``__torch_dispatch__``: count ``func``'s call, run it."""
    kwargs = kwargs or {}
    if getattr(func, "namespace", "") == "prim":  # metadata queries (prim.device): no op ran
        return func(*args, **kwargs)
    counter = self.counter
    facts = counter._op_facts(func)
    how = facts[4]
    if how:  # no formula, or a composite op: decompose before giving up
        if how is True or _decompose.device_type(args) not in how:
            return counter._decompose(self, func, args, kwargs, facts)
        if facts[2]:  # a kernel of its own on this device: run it, count its decomposition
            return counter._decompose(self, func, args, kwargs, facts, composite=False)
    known = counter.scalar_values
    if known and func is torch.ops.aten._local_scalar_dense.default and id(args[0]) in known:
        out = known[id(args[0])]  # a fake stand-in for a real scalar (see count.replay)
    else:
        out = func(*args, **kwargs)
    counter._record(func, args, kwargs, out, facts)
    return out


class _Mode(TorchDispatchMode):
    """Counts the ops dispatched under it (torch wraps ``__torch_dispatch__`` so that Dynamo
    does not compile into it, importing ``torch._dynamo`` at the first op)."""

    def __init__(self, counter: "OpCounter") -> None:
        super().__init__()
        self.counter = counter

    __torch_dispatch__ = _dispatch


class _ReplayMode(_Mode):
    """:class:`_Mode` for replays of recorded calls on meta tensors (no user code runs under
    it, so nothing is compiled): not wrapped against Dynamo, so ``torch._dynamo`` (1.5-2 s to
    import) is not imported for it."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        return False

    __torch_dispatch__ = _dispatch


class OpCounter(Installed):
    """Counts every aten op run inside it and attributes it to module and phase.

    Private engine behind :func:`torch_roofline.count`; use that instead. One instance
    counts one step. Hooks, the dispatch mode and optimizer hooks are installed on
    ``__enter__`` and removed on ``__exit__``, exceptions included.
    """

    def __init__(
        self,
        model: Optional[nn.Module] = None,
        formulas: Optional[Mapping[Any, Callable]] = None,
        scalar_values: Optional[Mapping[int, Any]] = None,
        meta_attention: bool = False,
        named_modules: Optional[Sequence[Tuple[str, nn.Module]]] = None,
        replay: bool = False,
    ) -> None:
        self.model = model
        # a replay of recorded calls (timing.shapes): no user code runs, nothing is compiled
        self.replay = replay
        self._named_modules = named_modules  # model.named_modules() when the caller has it
        # Only on the meta device: a TorchFunctionMode also switches off fast paths (e.g.
        # nn.MultiheadAttention's) that a CPU or CUDA run would take, and meta runs take none.
        self.meta_attention = meta_attention
        self.scalar_values = dict(scalar_values or {})
        self.formulas = dict(formulas or {})
        self.ops: List[OpCost] = []
        self.calls: Dict[str, int] = {}
        self.optimizer_steps = 0
        # module name -> bytes of the tensors autograd saves for backward while the module's
        # forward runs (inclusive of children): the step's activation memory, per module
        self.activation_bytes: Dict[str, int] = {}
        self._saved: set = set()
        self.unusual_layouts: set = set()  # "sparse" / "nested" when such tensors were seen
        self._stack: List[str] = []
        self._facts: Dict[int, Tuple[Any, str, bool, Any]] = {}
        self._names: Dict[int, str] = {}
        self._scope: Tuple[str, ...] = ("",)
        self._seq_start: List[int] = []
        self._seq_scope: Dict[int, Tuple[str, ...]] = {}
        self._phase_override: Optional[str] = None
        self._traffic = StepTraffic()
        # op name -> why it stayed uncounted (no formula, no decomposition, ...)
        self.reasons: Dict[str, str] = {}
        self._meta_counts: Dict[Any, Any] = {}  # call signature -> FLOPs of its decomposition
        self._handles: List[Any] = []
        self._exit = contextlib.ExitStack()

    def result(self, modules: Sequence[ModuleInfo], memory_model: str, notes: Sequence[str]) -> CountResult:
        """The counted step as a :class:`~torch_roofline.count.result.CountResult`."""
        return CountResult(
            ops=tuple(self.ops),
            modules=tuple(modules),
            memory_model=memory_model,
            backend="dispatch",
            module_calls=dict(self.calls) or {"": 1},
            optimizer_steps=self.optimizer_steps,
            notes=tuple(notes),
            activation_bytes=dict(self.activation_bytes),
            uncounted_reasons=_decompose.first_reasons(self.reasons, self.ops),
        )

    # ---- context management -------------------------------------------------------
    def _begin(self) -> None:
        if getattr(_ACTIVE, "on", False):
            raise RuntimeError(
                "torch_roofline.count() is already running in this thread; nested counting "
                "would count every op twice. Count the outer call only."
            )
        if not self.replay:
            import_off_stack("torch._dynamo")  # imported by the first op under the mode: see _gc

    def _install(self) -> None:
        _ACTIVE.on = True
        self._install_module_hooks()
        self._handles.append(_optim.register_optimizer_step_pre_hook(self._opt_pre))
        self._handles.append(_optim.register_optimizer_step_post_hook(self._opt_post))
        self._exit.enter_context(torch.autograd.graph.saved_tensors_hooks(self._pack, _unpack))
        if self.meta_attention:
            self._exit.enter_context(_MetaAttention())
        self._exit.enter_context((_ReplayMode if self.replay else _Mode)(self))

    def _remove(self) -> None:
        try:
            self._exit.close()
        finally:
            for h in self._handles:
                h.remove()
            self._handles.clear()
            _ACTIVE.on = False

    def _install_module_hooks(self) -> None:
        """Two global module hooks (cheaper than two per module), filtered to this model."""
        if self.model is None or isinstance(self.model, torch.jit.ScriptModule):
            return
        named = self._named_modules if self._named_modules is not None else _named_modules(self.model)
        self._names = {}
        for name, mod in named:
            self._names.setdefault(id(mod), name)
        self._handles.append(nn.modules.module.register_module_forward_pre_hook(self._pre_hook))
        self._handles.append(nn.modules.module.register_module_forward_hook(self._post_hook, always_call=True))

    # ---- attribution ----------------------------------------------------------------
    def _pre_hook(self, module: nn.Module, args: Any) -> None:
        name = self._names.get(id(module))
        if name is None:
            return
        self._stack.append(name)
        self._scope = self._scope_of(self._stack)
        self._seq_start.append(torch._C._autograd._get_sequence_nr())
        if torch._C._current_autograd_node() is None:
            self.calls[name] = self.calls.get(name, 0) + 1

    def _post_hook(self, module: nn.Module, args: Any, output: Any) -> None:
        name = self._names.get(id(module))
        if name is None:
            return
        if not self._stack or self._stack[-1] != name:
            # Inconsistent (a forward raised inside a child): log, never raise in the step.
            warnings.warn(f"torch_roofline: module stack out of order at {name!r}", RuntimeWarning)
            while self._stack and self._stack[-1] != name:
                self._stack.pop()
                self._seq_start.pop()
            if not self._stack:
                self._scope = self._scope_of(self._stack)
                return
        scope = self._scope_of(self._stack)
        start = self._seq_start.pop()
        self._stack.pop()
        self._scope = self._scope_of(self._stack)
        for seq in range(start, torch._C._autograd._get_sequence_nr()):
            self._seq_scope.setdefault(seq, scope)

    def _scope_of(self, stack: List[str]) -> Tuple[str, ...]:
        # only the module hooks call this, and they are installed only with a model
        return tuple(stack) if stack and stack[0] == "" else ("",) + tuple(stack)

    def scope(self) -> Tuple[str, ...]:
        """The current module call stack, root first."""
        return self._scope

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        """Saved-tensor hook: charge a saved activation to the modules running (once each)."""
        base = t._base if t._base is not None else t
        if self.model is not None and not (base.is_leaf and base.requires_grad):  # parameters (and views of them) are not activations
            key = storage_key(t)
            if key not in self._saved and torch._C._current_autograd_node() is None:
                self._saved.add(key)
                size = tensor_bytes(t)
                for name in set(self._scope):
                    self.activation_bytes[name] = self.activation_bytes.get(name, 0) + size
        return t

    def _opt_pre(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self._phase_override = "optimizer"
        self.optimizer_steps += 1

    def _opt_post(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self._phase_override = None

    def _where(self) -> Tuple[str, Tuple[str, ...]]:
        if self._phase_override:
            return self._phase_override, ("",)
        node = torch._C._current_autograd_node()
        if node is not None:
            if self._stack:  # a module's forward re-run in backward (activation checkpointing)
                return "backward", self.scope()
            return "backward", self._seq_scope.get(node._sequence_nr(), ("",))
        return "forward", self.scope()

    # ---- counting -------------------------------------------------------------------
    def _op_facts(self, func: Any) -> "_Facts":
        """(formula entry, dotted name, has arithmetic but no formula, the overload, decompose
        it) of an overload, cached: the answers depend on the overload only (and this
        counter's ``formulas``). Keyed by ``id(func)`` (``OpOverload.__hash__`` is Python
        code); the entry keeps ``func`` alive, so the id stays its own.

        An overload is decomposed (``_decompose``) when it has arithmetic but no formula, and
        wherever its CompositeImplicitAutograd kernel is what runs (unless ``formulas`` names
        it): such an op reaches the counter when autograd is off (``inference_mode``), and its
        parts are what runs (``max_pool2d`` runs ``max_pool2d_with_indices``, ``reshape`` of a
        non-contiguous tensor a copy), so it is counted exactly as it is with autograd on. The
        last field is True (always), False (never) or the device types where the op has a
        kernel of its own (``silu_backward``: a fused CPU kernel; decomposed elsewhere)."""
        facts = self._facts.get(id(func))
        if facts is None:
            entry = _f.lookup(func, self.formulas)
            no_formula = entry is None and not (
                _f.op_key(func) in _f.NO_ARITHMETIC or is_view_op(func) or _is_marker(func))
            own = bool(self.formulas) and (func in self.formulas or _f.op_key(func) in self.formulas)
            devices = None if own else _decompose.composite_devices(func)
            if devices is None or not devices:
                decompose: Any = no_formula or devices is not None
            else:
                decompose = devices  # the composite runs except on these devices
            facts = self._facts[id(func)] = (entry, op_name(func), no_formula, func, decompose)
        return facts

    def _decompose(self, mode: "_Mode", func: Any, args: Tuple, kwargs: Dict, facts: "_Facts",
                   composite: bool = True) -> Any:
        """Run and count an op that has no formula through its decomposition (``count.decompose``).

        Its CompositeImplicitAutograd kernel runs under the counter and its parts become one
        row named like the op; otherwise the op itself runs and its FLOPs are counted from
        torch's decomposition table on meta copies. Returns the op's output.
        """
        start = len(self.ops)
        template_where = self._where()
        out: Any = NotImplemented
        if composite and not _unusual_layout(_tensors(args, kwargs), []):
            try:
                with mode:
                    out = _decompose.run_composite(func, args, kwargs, python=False)
            except Exception as exc:  # noqa: BLE001 - never fail the step: run the op itself below
                del self.ops[start:]
                self.reasons.setdefault(facts[1], f"{facts[1]}: its decomposition raised {type(exc).__name__}")
                out = NotImplemented
        if out is not NotImplemented:
            parts = self.ops[start:]
            del self.ops[start:]
            self._record_parts(func, args, kwargs, out, facts[1], parts, template_where)
            return out
        out = func(*args, **kwargs)
        self._record(func, args, kwargs, out, facts)
        return out

    def _record(self, func: Any, args: Tuple, kwargs: Dict, out: Any, facts: Optional["_Facts"] = None) -> None:
        phase, scope = self._where()
        entry, name, no_formula = (facts or self._op_facts(func))[:3]
        ins, outs = _tensors(args, kwargs), _tensors(out)
        layout = _unusual_layout(ins, outs)
        flops = macs = 0
        unit, counted = "vector", True
        result = None
        if entry is not None:
            try:
                result = _f.evaluate(entry, args, kwargs, out, (ins, outs))
            except Exception as exc:  # noqa: BLE001 - a formula must never fail the user's step
                self.reasons.setdefault(name, f"{name}: its formula raised {type(exc).__name__}: {exc}"[:200])
        if result is not None and result.flops is not None:
            flops, macs, unit = result.flops, result.macs, result.unit
        elif entry is not None or no_formula:  # declined, raised or missing: its decomposition
            flops, macs, unit, counted = self._decomposed_flops(func, args, kwargs, name, layout)
        if layout is not None:
            self.unusual_layouts.add(layout)
            if flops or (entry is not None and counted):
                # Formulas assume dense strided tensors: a sparse op does work per stored
                # element, a nested op per sequence. List it as uncounted, never guess.
                flops, macs, counted = 0, 0, False
        traffic = self._traffic.measure(func, args, kwargs, out, tensors=(ins, outs))
        self.ops.append(_record_of(
            OpCost,
            op=name,
            module=scope[-1],
            scope=scope,
            phase=phase,
            flops=int(flops),
            macs=int(macs),
            bytes_read=traffic.bytes_read,
            bytes_written=traffic.bytes_written,
            compulsory_bytes_read=traffic.compulsory_bytes_read,
            compulsory_bytes_written=traffic.compulsory_bytes_written,
            dtype=compute_dtype(ins, outs, unit),
            unit=unit,
            counted=counted,
            index=len(self.ops),
            recompute=phase == "backward" and bool(self._stack),
        ))

    def _decomposed_flops(self, func: Any, args: Tuple, kwargs: Dict, name: str,
                          layout: Optional[str]) -> Tuple[int, int, str, bool]:
        """(FLOPs, MACs, unit, counted) of a call its formula declined (or that has none): its
        decomposition counted on meta copies, else uncounted with the reason."""
        if layout is None:
            result, reason = _decompose.meta_flops(func, args, kwargs, self.formulas, self._meta_counts)
            if result is not None:
                return result.flops, result.macs, result.unit, True
            self.reasons.setdefault(name, reason or f"{name}: no formula and no decomposition")
        return 0, 0, "vector", False

    def _record_parts(self, func: Any, args: Tuple, kwargs: Dict, out: Any, name: str, parts: List[OpCost],
                      where: Tuple[str, Tuple[str, ...]]) -> None:
        """One row for a composite op whose parts ran (and were counted) under the counter."""
        phase, scope = where
        ins, outs = _tensors(args, kwargs), _tensors(out)
        template = _record_of(
            OpCost, op=name, module=scope[-1], scope=scope, phase=phase, flops=0, macs=0, bytes_read=0,
            bytes_written=0, compulsory_bytes_read=0, compulsory_bytes_written=0,
            dtype=compute_dtype(ins, outs, "vector"), unit="vector", counted=True, index=len(self.ops),
            recompute=phase == "backward" and bool(self._stack))
        record = _decompose.merge_parts(name, parts, template)
        if not record.counted:
            missing = sorted({p.op for p in parts if not p.counted})
            self.reasons.setdefault(name, f"{name}: decomposed into {', '.join(missing)}, which "
                                          + ("is" if len(missing) == 1 else "are") + " uncounted")
        self.ops.append(record)


def _unusual_layout(ins: Sequence[torch.Tensor], outs: Sequence[torch.Tensor]) -> Optional[str]:
    """``"nested"`` or ``"sparse"`` when a tensor is not a dense tensor.

    oneDNN tensors (``torch._mkldnn`` layout, from ``to_mkldnn()``) are dense: their elements
    are only blocked differently in memory.
    """
    for t in (*ins, *outs):
        if t.is_nested:
            return "nested"
        if t.layout is not torch.strided and t.layout is not _MKLDNN:
            return "sparse"
    return None


_MKLDNN = getattr(torch, "_mkldnn", None)


def _record_of(cls: type, **fields: Any) -> Any:
    """:func:`~torch_roofline.records.frozen_record` with keyword fields (the counter's hot path)."""
    return frozen_record(cls, fields)


def _unpack(t: torch.Tensor) -> torch.Tensor:
    return t


def _is_marker(func: Any) -> bool:
    """Profiler range markers (``profiler._record_function_enter_new``): no work at all."""
    return getattr(func, "namespace", "") == "profiler"
