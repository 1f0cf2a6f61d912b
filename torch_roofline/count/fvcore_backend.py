"""fvcore's FlopCountAnalysis mapped onto the same records, as a cross-check.

fvcore counts one per multiply-accumulate and calls it a "flop" (fvcore issues #69, #133):
we take its numbers as MACs and report FLOPs = 2 x MACs. It traces the forward only (no
backward, no optimizer) and counts no bytes: the result says so (``has_bytes=False``)
instead of pretending the traffic is zero. Ops fvcore skips are listed as uncounted.
Op names are fvcore's handle names, prefixed ``fvcore.`` (``fvcore.conv``) so they are not
mistaken for aten op names.
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

import torch
from torch import nn

from torch_roofline._module_names import parent_name
from torch_roofline.count.mode import module_infos
from torch_roofline.count.result import CountResult
from torch_roofline.records import OpCost

__all__ = ["count_fvcore"]


def _scope(name: str) -> Tuple[str, ...]:
    if name == "":
        return ("",)
    parts = name.split(".")
    return ("",) + tuple(".".join(parts[: i + 1]) for i in range(len(parts)))


def count_fvcore(model: nn.Module, inputs: Any, *, memory_model: str = "op") -> CountResult:
    """Run fvcore's FlopCountAnalysis on ``model(*inputs)`` and return a :class:`CountResult`.

    Raises ImportError with the install command when fvcore is missing.
    """
    try:
        from fvcore.nn import FlopCountAnalysis
    except ImportError as exc:  # pragma: no cover - exercised only without fvcore
        raise ImportError("count(backend='fvcore') needs fvcore: pip install 'torch_roofline[fvcore]'") from exc
    if not isinstance(model, nn.Module):
        raise TypeError("count(backend='fvcore') needs an nn.Module (fvcore traces modules with torch.jit)")
    if isinstance(inputs, dict):
        raise TypeError("count(backend='fvcore'): fvcore takes positional inputs only; pass a tuple")
    args = (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs or ())
    analysis = FlopCountAnalysis(model, args)
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    inclusive: Dict[str, Dict[str, int]] = analysis.by_module_and_operator()
    names = [n for n, _ in model.named_modules()]
    children: Dict[str, List[str]] = {n: [] for n in names}
    for n in names:
        if n:
            children.setdefault(parent_name(n), []).append(n)
    ops: List[OpCost] = []
    for name in names:
        own = dict(inclusive.get(name, {}))
        for child in children.get(name, []):
            for op, macs in inclusive.get(child, {}).items():
                own[op] = own.get(op, 0) - macs
        for op, macs in own.items():
            if macs:
                ops.append(_row(f"fvcore.{op}", name, int(macs), True, len(ops)))
    uncalled = analysis.uncalled_modules()
    unsupported = analysis.unsupported_ops("")
    for op, calls in unsupported.items():
        for _ in range(int(calls)):
            ops.append(_row(op.replace("::", "."), "", 0, False, len(ops)))
    return CountResult(
        ops=tuple(ops),
        modules=tuple(module_infos(model)),
        memory_model=memory_model,
        backend="fvcore",
        has_bytes=False,
        # NB: fvcore traces one forward; it knows which modules ran, not how often.
        module_calls={n: 0 if n in uncalled else 1 for n in names},
        notes=("fvcore backend: forward only; its 'flops' are MACs (FLOPs = 2 x MACs); no bytes counted",),
    )


def _row(op: str, module: str, macs: int, counted: bool, index: int) -> OpCost:
    return OpCost(
        op=op, module=module, scope=_scope(module), phase="forward", flops=2 * macs, macs=macs,
        bytes_read=0, bytes_written=0, compulsory_bytes_read=0, compulsory_bytes_written=0,
        dtype=None, unit="matrix" if counted else "vector", counted=counted, index=index,
    )
