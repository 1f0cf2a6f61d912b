"""The step's totals, the uncounted ops, the report's notes and its device section
(:func:`~torch_roofline.analysis.analyse_step`).
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import replace
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from torch_roofline.records import BOUNDS, BoundShare, DeviceInfo, OpCost, OpRow, Roof, StepRecords, Totals, UncountedOp
from torch_roofline.analysis.roofline import RoofKey, efficiency, time_lost


def _totals(ops, rows, info, step: StepRecords, memory_model: str, predicted: bool) -> Totals:
    counted_costs = [c for c in step.costs if c.counted]
    step_time_s, steps = step.step_time_s, step.steps
    read = written = 0
    for c in counted_costs:
        r, w = c.bytes_under(memory_model)
        read += r
        written += w
    known_rt = [r.roofline_time_s for r in ops if r.roofline_time_s is not None]
    rt = sum(known_rt) if known_rt or not ops else None
    if predicted:
        time_s = None
    elif step_time_s is not None:
        time_s = step_time_s / steps
    else:
        root = next((r for r in rows if r.name == "" and r.phase == "all"), None)
        time_s = root.time_s if root is not None and root.time_s is not None else None
        if time_s is None:
            timed = [r.time_s for r in ops if r.time_s is not None]
            time_s = sum(timed) if timed else None
    counted_time = sum(r.time_s for r in ops if r.counted and r.time_s is not None)
    op_time = sum(r.time_s for r in ops if r.time_s is not None) if not predicted else None
    root_info = info.get("")
    return Totals(
        time_s=time_s,
        roofline_time_s=rt,
        time_lost_s=time_lost(time_s, rt),
        efficiency=efficiency(rt, time_s),
        coverage=counted_time / op_time if op_time else None,
        flops=sum(c.flops for c in counted_costs),
        macs=sum(c.macs for c in counted_costs),
        params=root_info.params if root_info else 0,
        param_bytes=root_info.param_bytes if root_info else 0,
        bytes_read=read,
        bytes_written=written,
        compulsory_bytes=sum(c.compulsory_bytes_read + c.compulsory_bytes_written for c in counted_costs),
        peak_memory_bytes=step.peak_memory_bytes,
        bound_time_share=_bound_share(ops, predicted),
        op_time_s=op_time,
        eager_bytes=_eager_total(counted_costs),
    )


def _eager_total(costs: Sequence[OpCost]) -> Optional[int]:
    """Eager bytes of the step's counted calls (a fused kernel's its ops' eager traffic, any
    other op's its op bytes); ``None`` without fused kernels or when one's is unknown."""
    if not any(c.fused for c in costs):
        return None
    total = 0
    for c in costs:
        if c.fused and c.eager_bytes is None:
            return None
        total += c.eager_bytes if c.fused else c.bytes_read + c.bytes_written
    return total


def _bound_share(ops: Sequence[OpRow], predicted: bool) -> BoundShare:
    weights = dict.fromkeys(BOUNDS, 0.0)
    for r in ops:
        w = r.roofline_time_s if predicted else r.time_s
        if r.bound is not None and w is not None:
            weights[r.bound] += w
    total = sum(weights.values())
    if total <= 0:
        return BoundShare()
    return BoundShare(**{k: v / total for k, v in weights.items()})


def _uncounted(ops: Sequence[OpRow]) -> Tuple[UncountedOp, ...]:
    calls: Counter = Counter()
    times: Dict[str, Optional[float]] = {}
    for r in ops:
        if r.counted:
            continue
        calls[r.op] += r.calls
        if r.time_s is not None:
            times[r.op] = (times.get(r.op) or 0.0) + r.time_s
        else:
            times.setdefault(r.op, None)
    items = [UncountedOp(op, calls[op], times[op]) for op in calls]
    items.sort(key=lambda u: (-(u.time_s or 0.0), -u.calls, u.op))
    return tuple(items)


# --------------------------------------------------------------------------------------------
# Notes and the device section
# --------------------------------------------------------------------------------------------


def _notes(costs, ops, roofs, predicted, measured) -> List[str]:
    notes = []
    missing: Counter = Counter()
    for c in costs:
        if c.counted and (c.dtype, c.unit) not in roofs and (c.flops or c.bytes_read or c.bytes_written):
            missing[(c.dtype, c.unit)] += 1
    for (dtype, unit), n in sorted(missing.items(), key=lambda kv: str(kv[0])):
        notes.append(
            f"no roof for dtype {dtype!r} on the {unit} unit: {n} op call(s) have no roofline time, "
            f"efficiency or bound (the device has no such roof; module sums leave them out)"
        )
    if measured and not predicted:
        # rows with no work (views, detach: 0 FLOPs, 0 bytes) have nothing to time: not worth a note
        untimed = [r for r in ops if r.counted and r.time_s is None and (r.flops or r.bytes_read or r.bytes_written)]
        if untimed:
            ex = ", ".join(f"{r.op} in {r.name or 'the root'!r}" for r in untimed[:3])
            notes.append(
                f"{len(untimed)} counted op row(s) have no measured time (not found in the "
                f"timings), e.g. {ex}"
            )
        suspect = [r for r in ops if r.suspect]
        if suspect:
            notes.append(_suspect_note(suspect))
    return notes


def _suspect_note(suspect: Sequence[OpRow]) -> str:
    """Why op rows can lie above their roof, with the causes that fit these rows only."""
    causes = ["check the roof (dtype, unit, measured vs datasheet) or the timing"]
    if any(r.bound == "memory" for r in suspect):
        causes.append("a memory-bound op whose data stayed in cache can beat the DRAM bandwidth roof")
    if any(r.roof is not None and r.roof.source == "measured" for r in suspect):
        causes.append(
            "a measured roof taken while the machine was busy is too low: measure it again "
            "(`torch-roofline bench --refresh`, `devices.measure(refresh=True)`)"
        )
    return (
        f"{len(suspect)} op row(s) lie above their roof (efficiency > 100%, flagged suspect): "
        + "; ".join(causes)
    )


def _complete_device(device: DeviceInfo, roofs: Mapping[RoofKey, Roof]) -> DeviceInfo:
    extra = tuple(r for r in dict.fromkeys(roofs.values()) if r not in device.roofs)
    return replace(device, roofs=tuple(device.roofs) + extra) if extra else device


def _device_from_roofs(roofs: Mapping[RoofKey, Roof]) -> DeviceInfo:
    unique = tuple(dict.fromkeys(roofs.values()))
    sources = {r.source for r in unique}
    bandwidths = {r.bandwidth_bytes_per_s for r in unique}
    return DeviceInfo(
        id="unknown",
        name="unknown device",
        source=sources.pop() if len(sources) == 1 else "mixed",
        memory_bandwidth=bandwidths.pop() if len(bandwidths) == 1 else None,
        roofs=unique,
    )


def _imported_torch_version() -> Optional[str]:
    torch = sys.modules.get("torch")
    return getattr(torch, "__version__", None) if torch is not None else None
