"""Put each torch.compile kernel under the module whose ops it fused.

Compiled code runs no module ranges (they would make it compile again), so a fused kernel's
event lies in the range of the compiled module only. Where its ops came from is known from the
module Dynamo traced each op in, recorded while the profiler watched the compile
(:attr:`~torch_roofline.timing.inductor.KernelCost.split`, or the frame it writes into each op's
stack trace), else from the ops' stack traces (:mod:`torch_roofline.timing.stack_traces`): the
kernel row moves to the deepest module holding all of them (their common parent), and the
modules inside compiled code that hold kernels get rows of their own, timed by their kernels.

* A kernel whose ops all come from one module (the GELU of ``b1.act``) is that module's op.
* A kernel fusing ops of several modules (``b1.ln``'s normalisation and ``b1``'s residual
  add) is an op of their common parent (``b1``); :class:`KernelSite` keeps the modules it
  fused for the report's note.
* A module inside compiled code is timed by the kernels placed in it and its children
  (inclusive time), its self time by its own kernels; the compiled module's self time loses
  what moved down. Its calls are the compiled module's calls in that phase. Ops Inductor hands
  to extern kernels (matrix multiplications, convolutions) are recorded as aten ops with
  shapes and stay on the compiled module: the trace does not say which of the graph's extern
  calls each one is.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from torch_roofline._module_names import parent_name
from torch_roofline.records import ModuleTiming, OpCost, OpTiming
from torch_roofline.timing.stack_traces import ModuleTree, common_parent, join_name, resolve_module

__all__ = ["KernelSite", "place_fused_kernels", "place_kernels", "settle_calls", "kernel_sites_note", "IN_COMPILED_CODE"]

#: What a module row's type says of a module inside compiled code (``"GELU (in compiled code)"``).
IN_COMPILED_CODE = "(in compiled code)"


@dataclass(frozen=True)
class KernelSite:
    """Where one fused kernel's row was put.

    Attributes:
        op: the kernel's row name (``"graph_0_cpp_fused_add_native_layer_norm_1"``).
        phase: ``"forward"`` or ``"backward"``.
        module: the module its row is under (the common parent of :attr:`fused`).
        fused: the modules whose ops it computes, sorted.
        compiled: the compiled module whose range it ran in (where it was before).
        flops: FLOPs of each module's ops in it, aligned with :attr:`fused`, when known (empty:
            which op came from which module was not recorded; ``None``: its FLOPs are unknown).
    """

    op: str
    phase: str
    module: str
    fused: Tuple[str, ...]
    compiled: str = ""
    flops: Tuple[Optional[int], ...] = ()


def _scope_below(scope: Tuple[str, ...], top: str, name: str) -> Tuple[str, ...]:
    """``scope`` (ending at ``top``) extended down to ``name``, one entry per module."""
    if name == top:
        return scope
    below = name[len(top) + 1:] if top else name
    parts = below.split(".")
    return scope + tuple(".".join(filter(None, (top, *parts[: k + 1]))) for k in range(len(parts)))


def place_fused_kernels(
    ops: Sequence[OpTiming],
    costs: Sequence[OpCost],
    modules: Sequence[ModuleTiming],
    kernels: Mapping[int, Any],
    tree: Optional[ModuleTree] = None,
) -> Tuple[Tuple[OpTiming, ...], Tuple[OpCost, ...], Tuple[ModuleTiming, ...], Tuple[KernelSite, ...]]:
    """Move each fused kernel's row (timing and cost) under the module whose ops it fused.

    Args:
        ops: the op rows' timings; ``costs`` is aligned with them (one cost per row).
        costs: the rows' costs (:attr:`ShapeCosts.costs`).
        modules: the module timings (ranges).
        kernels: row position -> the kernel call's
            :class:`~torch_roofline.timing.inductor.KernelCost` (:attr:`ShapeCosts.kernels`):
            its ops' modules (``split``), else their stack traces (``chains``).
        tree: the model's modules, to check each step down against; ``None`` (a saved trace,
            no model): nothing moves.

    Returns:
        ``(ops, costs, modules, sites)``: the rows with the kernels moved, the module timings
        with the modules inside compiled code added (times in seconds, summed like ``modules``),
        and one :class:`KernelSite` per distinct (kernel, phase, module).
    """
    if not kernels or tree is None:
        return tuple(ops), tuple(costs), tuple(modules), ()
    ops, costs = list(ops), list(costs)
    moved: Dict[Tuple[str, str], float] = defaultdict(float)  # (compiled module, phase) -> seconds
    self_s: Dict[Tuple[str, str], float] = defaultdict(float)  # (new module, phase) -> own kernels' seconds
    total_s: Dict[Tuple[str, str], float] = defaultdict(float)  # inclusive
    new_scope: Dict[Tuple[str, str], Tuple[Tuple[str, ...], str]] = {}  # (module, phase) -> (scope, top)
    sites: Dict[Tuple[str, str, str], KernelSite] = {}
    for position, kernel in kernels.items():
        op = ops[position]
        top = op.module
        if top.startswith("("):  # outside every module: no module tree to go down
            continue
        split = {join_name(top, m): f for m, f in kernel.split}
        if split and all(tree.has(name) for name in split):
            fused = tuple(sorted(split))
            flops = tuple(split[name] for name in fused)
        else:
            fused, flops = tuple(sorted({resolve_module(top, c, tree) for c in kernel.chains})), ()
        if not fused:
            continue
        target = common_parent(fused)  # each name is ``top`` or below it
        sites.setdefault((op.op, op.phase, target), KernelSite(op.op, op.phase, target, fused, top, flops))
        if target == top:
            continue
        scope = _scope_below(tuple(op.scope), top, target)
        ops[position] = dataclasses.replace(op, module=target, scope=scope)
        costs[position] = dataclasses.replace(costs[position], module=target, scope=scope)
        moved[(top, op.phase)] += op.time_s
        self_s[(target, op.phase)] += op.time_s
        for k in range(len(op.scope), len(scope)):
            total_s[(scope[k], op.phase)] += op.time_s
            new_scope.setdefault((scope[k], op.phase), (scope[: k + 1], top))
    if not moved:
        return tuple(ops), tuple(costs), tuple(modules), tuple(sites.values())
    by_key = {(m.name, m.phase): m for m in modules}
    out: List[ModuleTiming] = []
    for m in modules:
        taken = moved.get((m.name, m.phase), 0.0)
        out.append(dataclasses.replace(m, self_time_s=max(m.self_time_s - taken, 0.0)) if taken else m)
    for (name, phase), time_s in total_s.items():
        if (name, phase) in by_key:
            continue  # a module with a range of its own (not inside compiled code)
        scope, top = new_scope[(name, phase)]
        parent = by_key.get((top, phase))
        out.append(ModuleTiming(name, phase, parent.calls if parent is not None else 1, time_s,
                                self_s.get((name, phase), 0.0), scope))
    return tuple(ops), tuple(costs), tuple(out), tuple(sites.values())


def place_kernels(timing: Any, shaped: Any, tree: Optional[ModuleTree]) -> Tuple[Any, Any, Tuple[KernelSite, ...]]:
    """:func:`place_fused_kernels` on a :class:`~torch_roofline.timing.attribution.TraceTiming`
    and the :class:`~torch_roofline.timing.shapes.ShapeCosts` of its rows: ``(timing, shaped,
    sites)`` with the kernel rows moved (the timing's ``row_events`` stay aligned with its rows)."""
    if not shaped.kernels or tree is None:
        return timing, shaped, ()
    ops, costs, modules, sites = place_fused_kernels(timing.ops, shaped.costs, timing.modules, shaped.kernels, tree)
    return (dataclasses.replace(timing, ops=ops, modules=modules), dataclasses.replace(shaped, costs=costs),
            sites)


def settle_calls(modules: Sequence[ModuleTiming], sites: Sequence[KernelSite]) -> Tuple[ModuleTiming, ...]:
    """Module timings where each module inside compiled code has its compiled module's calls in
    that phase. For a long step read in slices, whose calls are settled at the step's end, after
    the slices' kernels were placed (each slice saw no call of the module it began before)."""
    inner: Dict[Tuple[str, str], str] = {}  # (module inside compiled code, phase) -> its compiled module
    for site in sites:
        name = site.module
        while name != site.compiled and name:
            inner[(name, site.phase)] = site.compiled
            name = parent_name(name)
    if not inner:
        return tuple(modules)
    calls: Dict[Tuple[str, str], int] = defaultdict(int)
    for m in modules:
        calls[(m.name, m.phase)] += m.calls
    return tuple(dataclasses.replace(m, calls=calls[(inner[(m.name, m.phase)], m.phase)]) if (m.name, m.phase) in inner
                 else m for m in modules)


def kernel_sites_note(sites: Sequence[KernelSite], limit: int = 8) -> Optional[str]:
    """The report's note on kernels that fuse ops of several modules (``None`` when none do)."""
    shared = [s for s in sites if len(s.fused) > 1]
    if not shared:
        return None
    listed = "; ".join(f"{s.op} ({s.phase}) under {s.module or '(root)'!s}: ops of {_modules(s)}" for s in shared[:limit])
    more = f"; and {len(shared) - limit} more" if len(shared) > limit else ""
    return (f"{len(shared)} torch.compile fused kernel(s) compute ops of several modules and are shown under "
            f"their common parent: {listed}{more}")


def _modules(site: KernelSite) -> str:
    """``"b1 (64 FLOPs), b1.ln (2,560 FLOPs)"``, or the names alone when the split is unknown."""
    if not site.flops:
        return ", ".join(f or "(root)" for f in site.fused)
    return ", ".join(f"{f or '(root)'} ({'FLOPs unknown' if n is None else f'{n:,} FLOPs'})"
                     for f, n in zip(site.fused, site.flops))
