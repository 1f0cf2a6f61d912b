"""The result of :func:`torch_roofline.count`: the op list and its views."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Tuple

from torch_roofline._io import atomic_write
from torch_roofline._module_names import module_depth, shown_name
from torch_roofline.records import PHASES, Cost, ModuleInfo, OpCost

__all__ = ["CountResult"]


def _sum(ops: Iterable[OpCost], memory_model: str) -> Cost:
    """The ops' :meth:`OpCost.cost` summed (one Cost at the end, not one per op)."""
    flops = macs = read = written = calls = 0
    for op in ops:
        r, w = op.bytes_under(memory_model)
        flops += op.flops
        macs += op.macs
        read += r
        written += w
        calls += 1
    return Cost(flops, macs, read, written, calls)


@dataclass(frozen=True)
class CountResult:
    """FLOPs, MACs and bytes of one step, per op call, with views by module and by op.

    Conventions: FLOPs count 2 per multiply-accumulate (MACs alongside); bytes follow
    ``memory_model`` (``"op"``: every op reads its inputs and writes its outputs;
    ``"compulsory"``: each storage moved once per step). Module names are those of
    ``model.named_modules()``, the root being ``""``. Module values are inclusive of their
    children (``self_by_module`` gives exclusive values); ``calls`` of a module value is
    the number of times the module ran in that phase, of an op value the number of op
    calls. All views are computed from :attr:`ops` on demand.

    Attributes:
        ops: every op call of the step, in execution order.
        modules: static facts per module (type, parameters and parameter bytes).
        memory_model: ``"op"`` or ``"compulsory"``.
        backend: ``"dispatch"`` or ``"fvcore"``.
        has_bytes: False when the backend does not count bytes (fvcore): byte fields are 0
            and must not be read as "no traffic".
        module_calls: forward calls per module.
        optimizer_steps: optimizer steps counted.
        notes: caveats collected while counting (e.g. a compiled module was unwrapped).
        activation_bytes: module name -> bytes of the tensors autograd saved for backward during
            the module's forward (children included; each storage once): its activation memory.
            Empty when the step ran without autograd (``torch.no_grad()``, a meta model without
            grad-requiring inputs still saves tensors when its parameters require grad).
        uncounted_reasons: op -> why it stayed uncounted (no formula and no decomposition, a
            part of its decomposition without a formula, a formula that declined the call).
    """

    ops: Tuple[OpCost, ...]
    modules: Tuple[ModuleInfo, ...]
    memory_model: str = "op"
    backend: str = "dispatch"
    has_bytes: bool = True
    module_calls: Dict[str, int] = field(default_factory=dict)
    optimizer_steps: int = 0
    notes: Tuple[str, ...] = ()
    activation_bytes: Dict[str, int] = field(default_factory=dict)
    uncounted_reasons: Dict[str, str] = field(default_factory=dict)

    # ---- views ------------------------------------------------------------------------
    @property
    def total(self) -> Cost:
        """The whole step: FLOPs, MACs, bytes read and written, op calls."""
        return _sum(self.ops, self.memory_model)

    def by_module(self, phase: Optional[str] = None) -> Dict[str, Cost]:
        """Inclusive cost per module name (every module, ``""`` root first), optionally one phase."""
        _check_phase(phase)
        grouped: Dict[str, List[OpCost]] = defaultdict(list)
        for op in self.ops:
            if phase is None or op.phase == phase:
                for name in set(op.scope):
                    grouped[name].append(op)
        return {m.name: self._module_cost(m.name, phase, grouped.get(m.name, [])) for m in self.modules}

    def self_by_module(self, phase: Optional[str] = None) -> Dict[str, Cost]:
        """Exclusive cost per module: ops run by the module itself, not by a child."""
        _check_phase(phase)
        grouped: Dict[str, List[OpCost]] = defaultdict(list)
        for op in self.ops:
            if phase is None or op.phase == phase:
                grouped[op.module].append(op)
        return {m.name: self._module_cost(m.name, phase, grouped.get(m.name, [])) for m in self.modules}

    def _module_cost(self, name: str, phase: Optional[str], ops: List[OpCost]) -> Cost:
        c = _sum(ops, self.memory_model)
        calls = self.module_calls.get(name, 0)
        if phase == "optimizer":
            calls = self.optimizer_steps if (name == "" and ops) else 0
        elif phase == "backward" and not ops:
            calls = 0
        return Cost(c.flops, c.macs, c.bytes_read, c.bytes_written, calls)

    def by_op(self, module: Optional[str] = None, phase: Optional[str] = None) -> Dict[str, Cost]:
        """Cost per aten op (``"aten.convolution"``); with ``module``, only ops inside it."""
        _check_phase(phase)
        if module is not None and module not in {m.name for m in self.modules}:
            raise KeyError(f"by_op(module={module!r}): no such module; known: {_names(self.modules)}")
        grouped: Dict[str, List[OpCost]] = defaultdict(list)
        for op in self.ops:
            if (phase is None or op.phase == phase) and (module is None or module in op.scope):
                grouped[op.op].append(op)
        return {k: _sum(v, self.memory_model) for k, v in sorted(grouped.items(), key=lambda kv: -sum(o.flops for o in kv[1]))}

    def by_module_and_op(self, phase: Optional[str] = None) -> Dict[Tuple[str, str], Cost]:
        """Exclusive cost per (module, op): the ops each module runs itself."""
        _check_phase(phase)
        grouped: Dict[Tuple[str, str], List[OpCost]] = defaultdict(list)
        for op in self.ops:
            if phase is None or op.phase == phase:
                grouped[(op.module, op.op)].append(op)
        return {k: _sum(v, self.memory_model) for k, v in grouped.items()}

    @property
    def uncounted(self) -> Dict[str, int]:
        """Ops that do arithmetic but have no FLOP formula: op -> calls (their FLOPs are unknown)."""
        out: Dict[str, int] = defaultdict(int)
        for op in self.ops:
            if not op.counted:
                out[op.op] += 1
        return dict(out)

    def uncounted_notes(self) -> Tuple[str, ...]:
        """One report note per uncounted op, saying why it is uncounted (for the reports' notes)."""
        return tuple(f"{op} is uncounted: {reason}" for op, reason in sorted(self.uncounted_reasons.items()))

    def module(self, name: str) -> ModuleInfo:
        """Static facts of one module (type, parameters, parameter bytes)."""
        for m in self.modules:
            if m.name == name:
                return m
        raise KeyError(f"module({name!r}): no such module; known: {_names(self.modules)}")

    # ---- output -----------------------------------------------------------------------
    def table(self, depth: Optional[int] = None, phase: Optional[str] = None) -> str:
        """A per-module table (inclusive values) with units in the headers.

        Each row shows the last part of a module's name, as written, or quoted with escapes
        when it holds control characters, line breaks, tabs or edge spaces (JSON keeps it exactly).
        """
        from tabulate import tabulate

        inc = self.by_module(phase)
        rows = []
        root_type = self.modules[0].type if self.modules else "model"
        for m in self.modules:
            d = module_depth(m.name)
            if depth is not None and d > depth:
                continue
            c = inc[m.name]
            label = ("  " * d) + shown_name(m.name.rsplit(".", 1)[-1] if m.name else root_type)
            rows.append([
                label, m.type, c.calls, _fmt(m.params / 1e6, 3), _fmt(c.flops / 1e9, 3), _fmt(c.macs / 1e9, 3),
                _fmt(c.bytes_read / 1e6, 2) if self.has_bytes else "n/a",
                _fmt(c.bytes_written / 1e6, 2) if self.has_bytes else "n/a",
                _fmt(c.intensity, 2) if self.has_bytes and c.intensity is not None else "-",
            ])
        headers = ["module", "type", "calls", "params [M]", "FLOPs [G]", "MACs [G]",
                   "read [MB]", "written [MB]", "intensity [FLOP/B]"]
        text = tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True)
        t = self.total
        foot = (f"\ntotal: {t.flops / 1e9:.3f} GFLOPs ({t.macs / 1e9:.3f} GMACs), "
                f"{(t.bytes_read + t.bytes_written) / 1e6:.2f} MB moved ({self.memory_model} memory model), "
                f"{t.calls} op calls")
        if not self.has_bytes:
            foot += f"\nbytes: not counted by the {self.backend} backend"
        uncounted = self.uncounted
        if uncounted:
            foot += "\nuncounted ops (no FLOP formula; FLOPs unknown): " + ", ".join(
                f"{k} x{v}" for k, v in sorted(uncounted.items()))
            for op, reason in sorted(self.uncounted_reasons.items()):
                foot += f"\n  {op}: {reason}"
        for note in self.notes:
            foot += f"\nnote: {note}"
        return text + foot

    def __str__(self) -> str:
        return self.table()

    def to_dict(self) -> Dict:
        """Plain-data form (the CLI's ``--json``): totals, per-module and per-op values, uncounted."""
        def cost(c: Cost) -> Dict:
            return {"flops": c.flops, "macs": c.macs, "bytes_read": c.bytes_read,
                    "bytes_written": c.bytes_written, "calls": c.calls}

        inc = self.by_module()
        own = self.self_by_module()
        return {
            "schema": "torch_roofline.count/1",
            "backend": self.backend,
            "memory_model": self.memory_model,
            "has_bytes": self.has_bytes,
            "total": cost(self.total),
            "modules": [
                {"name": m.name, "type": m.type, "params": m.params, "param_bytes": m.param_bytes,
                 **cost(inc[m.name]), "self": cost(own[m.name])}
                for m in self.modules
            ],
            "ops": [{"op": k, **cost(v)} for k, v in self.by_op().items()],
            "uncounted": self.uncounted,
            "uncounted_reasons": dict(self.uncounted_reasons),
            "notes": list(self.notes),
        }

    def to_json(self, path: Optional[str] = None) -> str:
        """JSON text of :meth:`to_dict`; also written to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True)
        if path:  # whole or not at all
            atomic_write(path, text, caller="CountResult.to_json")
        return text


def _fmt(x: Optional[float], digits: int) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _names(modules: Iterable[ModuleInfo], n: int = 8) -> str:
    names = [repr(m.name) for m in modules]
    return ", ".join(names[:n]) + (" ..." if len(names) > n else "")


def _check_phase(phase: Optional[str]) -> None:
    if phase is not None and phase not in PHASES:
        raise ValueError(f"phase={phase!r}: expected one of {PHASES} or None")
