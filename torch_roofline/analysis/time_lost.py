"""Where the time goes: the "time lost" items of a report, with a reason and a hint each.

Part of :mod:`torch_roofline.analysis`, which calls :func:`time_lost_items` once its op and
module rows are built. Pure functions, no torch import. Holds the ranking of modules by their
own (self) time lost, the words for why their ops are slow (:func:`_reason`) and what usually
helps (:func:`_hint`, from the ``_HINTS`` table), and :func:`dominant`, the arg-max over
weights that analysis also uses to pick a row's roof and bound class.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from torch_roofline._numbers import si_text
from torch_roofline.records import BOUNDS, OpRow, Roof, RoofRef, TimeLostItem

__all__ = ["dominant", "time_lost_items"]


def dominant(weights: Mapping, order: Sequence = ()) -> Optional[object]:
    """The key with the largest weight (ties: first in ``order``, then insertion order)."""
    best, best_w = None, -1.0
    keys = [k for k in order if k in weights] + [k for k in weights if k not in order]
    for k in keys:
        if weights[k] > best_w:
            best, best_w = k, weights[k]
    return best


_HINTS = {
    "overhead": (
        "per-op launch and framework cost dominates: run larger batches, fuse small ops "
        "(torch.compile) or replay the step as a CUDA graph"
    ),
    "fuse": (
        "fuse elementwise chains (torch.compile, or into the preceding conv/matmul): each unfused "
        "op reads and writes the whole tensor again"
    ),
    "bn": (
        "keep Conv->BN->ReLU order so the BN folds into the conv and the ReLU fuses "
        "(Conv->ReLU->BN cannot fold); fold BN for inference"
    ),
    "low_precision": (
        "cut bytes moved: bf16/fp16 (or int8) activations halve the traffic; low precision saves "
        "bytes more than FLOPs here (avoid repeated quantise/dequantise)"
    ),
    "channels": (
        "runs below half of its roof: channel/feature counts in multiples of 8 (16-64 for tensor "
        "cores) let kernels fill their tiles; larger batches help too"
    ),
    "cpu_blas": (
        "fp32 matmuls below half of the roof: on CPUs torch runs them through the BLAS library "
        "(MKL or OpenBLAS), which can lag oneDNN (MKL's sgemm takes its AVX2 path on AMD CPUs); "
        "`torch-roofline bench` times both. For inference, torch.utils.mkldnn.to_mkldnn(model) "
        "runs Linear layers through oneDNN; bf16 matmuls go through oneDNN too"
    ),
    "precision": "near the {dtype} peak: a lower precision (bf16/tf32 matmuls) raises the roof",
    "flops": "near peak: only fewer FLOPs (smaller, pruned or factorised layers) makes it faster",
    "unknown": (
        "no counted op here: see the uncounted ops; framework overhead grows with the number "
        "of layers, so fewer, larger layers or torch.compile help"
    ),
}


def time_lost_items(rows, ops, roof_of, top, device_kind: Optional[str] = None) -> Tuple[TimeLostItem, ...]:
    """The modules with the largest self time lost (per phase), so parents never repeat children.

    ``device_kind``: ``"cpu"``, ``"gpu"``, ... or None; some hints only apply to one kind.
    """
    own: Dict[Tuple[str, str], List[OpRow]] = defaultdict(list)
    for r in ops:
        own[(r.name, r.phase)].append(r)
    candidates = [
        r for r in rows if r.phase != "all" and r.self_time_lost_s is not None and r.self_time_lost_s > 0
    ]
    candidates.sort(key=lambda r: -r.self_time_lost_s)
    items = []
    for r in candidates[:top]:
        mine = [o for o in own.get((r.name, r.phase), ()) if o.bound is not None and o.time_s is not None]
        weights: Dict[str, float] = {}
        for o in mine:
            weights[o.bound] = weights.get(o.bound, 0.0) + o.time_s
        cls = dominant(weights, BOUNDS) if weights else None
        chosen = [o for o in mine if o.bound == cls]
        items.append(
            TimeLostItem(
                name=r.name,
                type=r.type,
                phase=r.phase,
                time_lost_s=r.self_time_lost_s,
                self_time_s=r.self_time_s,
                bound=cls,
                reason=_reason(cls, chosen, roof_of),
                hint=_hint(cls, r.type, chosen, roof_of, device_kind),
            )
        )
    return tuple(items)


def _main_roof(ops: Sequence[OpRow], roof_of) -> Optional[Roof]:
    weights: Dict[RoofRef, float] = {}
    for o in ops:
        if o.roof is not None:
            weights[o.roof] = weights.get(o.roof, 0.0) + (o.time_s or 0.0)
    ref = dominant(weights)
    return roof_of.get(ref) if ref is not None else None


def _reason(cls: Optional[str], ops: Sequence[OpRow], roof_of) -> str:
    """Why the module's own ops are slow, in words: ``"memory-bound at 38% of bandwidth"``."""
    if cls is None:
        return "time outside counted ops (uncounted ops or framework code)"
    time_s = sum(o.time_s for o in ops)
    n = sum(o.calls for o in ops)
    if cls == "overhead":
        if n == 1:
            return f"overhead-bound: 1 small op of ~{_approx_time(time_s)}"
        return f"overhead-bound: {n} small ops of ~{_approx_time(time_s / n)} each"
    roof = _main_roof(ops, roof_of)
    if roof is None or time_s <= 0:
        return f"{cls}-bound"
    if cls == "memory":
        nbytes = sum(o.bytes_read + o.bytes_written for o in ops)
        pct = 100 * nbytes / time_s / roof.bandwidth_bytes_per_s
        text = f"memory-bound at {_pct(pct)} of bandwidth ({roof.bandwidth_bytes_per_s / 1e9:.3g} GB/s)"
    else:
        flops = sum(o.flops or 0 for o in ops)
        pct = 100 * flops / time_s / roof.peak_flops_per_s
        peak = f"{roof.dtype} {roof.unit}, {roof.peak_flops_per_s / 1e12:.3g} TFLOP/s"
        text = f"compute-bound at {_pct(pct)} of peak ({peak})"
    return text + (": above the roof, suspect" if pct > 100 else "")


def _pct(percent: float) -> str:
    """``38.2`` -> ``"38%"``, ``0.34`` -> ``"0.34%"``: small shares keep two digits."""
    return f"{percent:.0f}%" if percent >= 10 else f"{percent:.2g}%"


#: The ops torch runs through the BLAS library on CPUs (fp32, ``torch.mm`` and friends).
_BLAS_OPS = frozenset({"aten.mm", "aten.addmm", "aten.bmm", "aten.baddbmm"})


def _is_matmul_like(module_type: str) -> bool:
    return module_type.startswith(("Conv", "Linear", "Bilinear", "LazyConv", "LazyLinear", "MultiheadAttention"))


def _approx_time(seconds: float) -> str:
    """``6.1e-6`` -> ``"6.1 µs"``: two significant digits, for "about" figures."""
    return si_text(seconds, "s", significant=2)


def _hint(cls: Optional[str], module_type: str, ops: Sequence[OpRow], roof_of,
          device_kind: Optional[str] = None) -> str:
    """What usually helps, drawn from seed 001's advice (and, for CPU matmuls, the BLAS finding)."""
    if cls is None:
        return _HINTS["unknown"]
    if cls == "overhead":
        return _HINTS["overhead"]
    if cls == "memory":
        if module_type.startswith("BatchNorm"):
            return _HINTS["bn"]
        # Elementwise work (no matmul-like op) fuses; matmuls and convs starved of
        # bandwidth move fewer bytes in a smaller dtype instead.
        if all(o.roof is not None and o.roof.unit == "vector" for o in ops) and not _is_matmul_like(module_type):
            return _HINTS["fuse"]
        return _HINTS["low_precision"]
    time_s = sum(o.time_s for o in ops)
    roof = _main_roof(ops, roof_of)
    eff = sum(o.roofline_time_s or 0.0 for o in ops) / time_s if time_s > 0 else None
    if eff is not None and eff < 0.5:
        if device_kind == "cpu" and ops and all(o.op in _BLAS_OPS and o.dtype == "float32" for o in ops):
            return _HINTS["cpu_blas"]
        return _HINTS["channels"]
    if roof is not None and roof.dtype in ("fp32", "fp64"):
        return _HINTS["precision"].format(dtype=roof.dtype)
    return _HINTS["flops"]
