"""A job's ranks side by side: one :class:`RankRecord` per rank (its step time, communication,
straggler wait and clock offset) and :func:`summarize_ranks`, the spread across ranks that
:class:`~torch_roofline.traceset.TraceSetReport` and the Lightning callback report.
Units: seconds, bytes, B/s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from torch_roofline.report import RooflineReport
from torch_roofline._numbers import finite as _finite
from torch_roofline.timing.collectives import CommSummary

__all__ = ["ModuleSpread", "RankSummary", "RankRecord", "spread", "summarize_ranks"]


@dataclass(frozen=True)
class ModuleSpread:
    """One (module, phase) across ranks.

    Attributes:
        name: module name (``""``: the whole model).
        phase: ``"forward"``, ``"backward"``, ``"optimizer"`` or ``"all"``.
        time_s: seconds per step on each rank, in :attr:`RankSummary.ranks` order (``None``
            where that rank has no time for it).
        mean_s, min_s, max_s: over the ranks that have a time (seconds), else ``None``.
        spread: ``(max - min) / mean`` (0 = equal on every rank), ``None`` without a time.
        slowest_rank: the rank with ``max_s``; ``None`` without a time or when every rank
            has the same time.
    """

    name: str
    phase: str
    time_s: Tuple[Optional[float], ...]
    mean_s: Optional[float]
    min_s: Optional[float]
    max_s: Optional[float]
    spread: Optional[float]
    slowest_rank: Optional[int]


@dataclass(frozen=True)
class RankSummary:
    """A job across its ranks (rules in the module docstring).

    Attributes:
        world_size: ranks in the job (from ``distributedInfo``, else the highest rank + 1).
        ranks: the ranks that have a report, ascending; per-rank tuples follow this order.
        missing_ranks: ranks of the job without a trace.
        step_time_s: each rank's measured time per step (seconds).
        step_time_mean_s, step_time_max_s: over the ranks (seconds).
        straggler_spread: ``(max - min) / mean`` of the step times.
        straggler_rank: the rank the others wait for, or ``None`` for a single rank.
        straggler_reason: how it was found, in words.
        busy_s: each rank's busy time per step (seconds; the module docstring says how).
        wait_s: each rank's wait in collectives per step (seconds; ``None`` without collectives).
        clock_offsets_s: each rank's clock minus the lowest rank's (seconds; ``None`` when
            they share no collective).
        communication: each rank's :class:`CommSummary` (``None``: no collective).
        modules: per (module, phase), the times across ranks.
        notes: what was done, in words.
    """

    world_size: int
    ranks: Tuple[int, ...]
    missing_ranks: Tuple[int, ...]
    step_time_s: Tuple[Optional[float], ...]
    step_time_mean_s: Optional[float]
    step_time_max_s: Optional[float]
    straggler_spread: Optional[float]
    straggler_rank: Optional[int]
    straggler_reason: str
    busy_s: Tuple[Optional[float], ...]
    wait_s: Tuple[Optional[float], ...]
    clock_offsets_s: Tuple[Optional[float], ...]
    communication: Tuple[Optional[CommSummary], ...]
    modules: Tuple[ModuleSpread, ...]
    notes: Tuple[str, ...]

    def module(self, name: str, phase: str = "all") -> ModuleSpread:
        """The :class:`ModuleSpread` of ``name`` in ``phase``; KeyError naming the known ones."""
        for m in self.modules:
            if m.name == name and m.phase == phase:
                return m
        known = sorted({m.name for m in self.modules})[:5]
        raise KeyError(f"RankSummary.module({name!r}, {phase!r}): no such module/phase; modules: {known} ...")

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready dict (``None`` for unknown numbers, never NaN)."""
        return {
            "world_size": self.world_size, "ranks": list(self.ranks), "missing_ranks": list(self.missing_ranks),
            "step_time_s": list(self.step_time_s), "step_time_s_mean": self.step_time_mean_s,
            "step_time_s_max": self.step_time_max_s, "straggler_spread": self.straggler_spread,
            "straggler_rank": self.straggler_rank, "straggler_reason": self.straggler_reason,
            "busy_s": list(self.busy_s), "wait_s": list(self.wait_s), "clock_offsets_s": list(self.clock_offsets_s),
            "communication": [c.to_dict() if c is not None else None for c in self.communication],
            "modules": [{"name": m.name, "phase": m.phase, "time_s": list(m.time_s), "time_s_mean": m.mean_s,
                         "time_s_min": m.min_s, "time_s_max": m.max_s, "spread": m.spread,
                         "slowest_rank": m.slowest_rank} for m in self.modules],
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class RankRecord:
    """What the summary across ranks needs of one rank (from a report or its JSON dict).

    Attributes:
        rank: the rank.
        step_time_s: measured time per step (seconds), or ``None``.
        steps: steps the rank's times are averaged over.
        module_times: ``(name, phase, seconds per step or None)`` of each module row.
        comm: the rank's :class:`CommSummary`, or ``None`` (no collective).
        collectives: ``(name, completion time in seconds on the rank's clock, time_s)`` of
            each collective, in order (for the wait and the clock offsets).
    """

    rank: int
    step_time_s: Optional[float]
    steps: int
    module_times: Tuple[Tuple[str, str, Optional[float]], ...]
    comm: Optional[CommSummary] = None
    collectives: Tuple[Tuple[str, float, float], ...] = ()

    @classmethod
    def of_report(cls, rank: int, report: RooflineReport, comm: Optional[CommSummary] = None,
                  collectives: Sequence[Tuple[str, float, float]] = ()) -> "RankRecord":
        """From a :class:`RooflineReport`."""
        return cls(rank, _finite(report.totals.time_s), max(int(report.steps), 1),
                   tuple((m.name, m.phase, _finite(m.time_s)) for m in report.modules), comm, tuple(collectives))

    @classmethod
    def of_dict(cls, rank: int, report: Mapping[str, Any], comm: Optional[Mapping[str, Any]] = None,
                collectives: Sequence[Sequence[Any]] = ()) -> "RankRecord":
        """From a report's JSON dict (``RooflineReport.to_dict()``) and a ``CommSummary.to_dict()``."""
        rows = tuple((str(m.get("name", "")), str(m.get("phase", "all")), _finite(m.get("time_s")))
                     for m in report.get("modules") or ())
        steps = report.get("steps")
        return cls(rank, _finite((report.get("totals") or {}).get("time_s")),
                   steps if isinstance(steps, int) and steps >= 1 else 1, rows,
                   CommSummary.from_dict(comm) if comm is not None else None,
                   tuple((str(n), float(end), float(t)) for n, end, t in collectives))


# ----------------------------------------------------------------------------- the summary


def spread(values: Sequence[Optional[float]]) -> Tuple[Optional[float], Optional[float], Optional[float],
                                                       Optional[float]]:
    """(mean, min, max, (max - min) / mean) of the known values; ``None`` for each when none
    is known (the spread is also ``None`` when the mean is 0)."""
    known = [v for v in values if v is not None]
    if not known:
        return None, None, None, None
    mean = math.fsum(known) / len(known)
    lo, hi = min(known), max(known)
    return mean, lo, hi, (hi - lo) / mean if mean > 0 else None


def _waits_and_offsets(results: Sequence[RankRecord]) -> Tuple[List[Optional[float]], List[Optional[float]], int]:
    """Each rank's wait per step and clock offset (rules in the module docstring), and how
    many collectives every rank shares."""
    shared = min((len(r.collectives) for r in results), default=0)
    # match collectives by position while their names agree on every rank
    k = 0
    while k < shared and len({r.collectives[k][0] for r in results}) == 1:
        k += 1
    if k == 0:
        return [None] * len(results), [None] * len(results), 0
    base = results[0].collectives
    offsets: List[Optional[float]] = []
    for r in results:
        diffs = sorted(r.collectives[i][1] - base[i][1] for i in range(k))
        offsets.append(diffs[len(diffs) // 2] if len(diffs) % 2 else 0.5 * (diffs[len(diffs) // 2 - 1] + diffs[len(diffs) // 2]))
    waits: List[Optional[float]] = []
    shortest = [min(r.collectives[i][2] for r in results) for i in range(k)]
    for r in results:
        waits.append(math.fsum(r.collectives[i][2] - shortest[i] for i in range(k)) / r.steps)
    return waits, offsets, k


def _busy(step_s: Optional[float], comm: Optional[CommSummary]) -> Optional[float]:
    """Step time minus the collective time no compute overlapped (seconds per step)."""
    if step_s is None or comm is None:
        return step_s
    hidden = comm.overlap_s or 0.0
    return max(step_s - (comm.time_s - hidden), 0.0)


def summarize_ranks(records: Sequence[RankRecord], world_size: Optional[int] = None) -> RankSummary:
    """The :class:`RankSummary` of one record per rank (any order; rules in the module docstring).

    ``world_size``: ranks in the job; default: the highest rank + 1. Used by
    :func:`from_traces` and by the Lightning callback under DDP.
    """
    results = sorted(records, key=lambda r: r.rank)
    ranks = tuple(r.rank for r in results)
    size = world_size or (max(ranks) + 1 if ranks else 0)
    steps = tuple(r.step_time_s for r in results)
    mean, _, hi, spread_ = spread(steps)
    per_module: Dict[Tuple[str, str], List[Optional[float]]] = {}
    for slot, r in enumerate(results):
        for name, phase, time_s in r.module_times:
            per_module.setdefault((name, phase), [None] * len(results))[slot] = time_s
    modules = []
    for (name, phase), times in sorted(per_module.items()):
        m_mean, m_lo, m_hi, m_spread = spread(times)
        # the slowest rank, when one is (equal times on every rank: none)
        slowest = ranks[times.index(m_hi)] if m_hi is not None and (m_hi > m_lo or len(ranks) == 1) else None
        modules.append(ModuleSpread(name, phase, tuple(times), m_mean, m_lo, m_hi, m_spread, slowest))
    waits, offsets, shared = _waits_and_offsets(results)
    busy = tuple(_busy(t, r.comm) for t, r in zip(steps, results))
    notes: List[str] = []
    known = [(b, rank) for b, rank in zip(busy, ranks) if b is not None]
    if len(results) < 2 or not known:
        straggler, reason = None, "one rank: no straggler" if len(results) < 2 else "no rank has a step time"
    else:
        most, straggler = max(known)
        others = [b for b, rank in known if rank != straggler]
        if others and most - max(others) <= 1e-9 * max(most, 1e-12):
            straggler, reason = None, f"every rank is equally busy ({most * 1e3:.3f} ms per step): no straggler"
        else:
            lead = f", {(most - max(others)) * 1e3:.3f} ms more than the next rank" if others else ""
            reason = (f"rank {straggler} is busy longest: {most * 1e3:.3f} ms per step outside collectives{lead}; "
                      "the others wait for it")
    if shared:
        notes.append(f"clocks aligned on the completion of {shared} collective(s) every rank shares: offsets "
                     f"against rank {ranks[0]}: " + ", ".join(f"rank {r} {o * 1e3:+.3f} ms"
                                                              for r, o in zip(ranks, offsets) if o is not None))
    return RankSummary(
        world_size=size, ranks=ranks, missing_ranks=tuple(r for r in range(size) if r not in ranks),
        step_time_s=steps, step_time_mean_s=mean, step_time_max_s=hi, straggler_spread=spread_,
        straggler_rank=straggler, straggler_reason=reason, busy_s=busy, wait_s=tuple(waits), clock_offsets_s=tuple(offsets),
        communication=tuple(r.comm for r in results), modules=tuple(modules), notes=tuple(notes),
    )
