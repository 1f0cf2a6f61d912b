"""Several ranks in one fit: the reports and communication gathered on rank zero, their summary
(:func:`rank_summary`) and the scalars logged for a report, its communication and the ranks.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence


from torch_roofline._numbers import finite as _finite
from torch_roofline.report.scalars import percent as _percent, totals_scalars


# ----------------------------------------------------------------------------- pure helpers


def report_scalars(report_dict: Mapping[str, Any], tag: str = "roofline") -> Dict[str, float]:
    """The scalars a non-TensorBoard logger gets (:func:`torch_roofline.report.scalars.totals_scalars`).

    Example::

        >>> report_scalars({"totals": {"efficiency": 0.25, "time_s": 0.002}})
        {'roofline/efficiency_pct': 25.0, 'roofline/step_time_s/measured': 0.002}
    """
    return totals_scalars(report_dict, tag)


def rank_summary(reports: Sequence[Optional[Mapping[str, Any]]],
                 communication: Optional[Sequence[Optional[Mapping[str, Any]]]] = None,
                 collectives: Optional[Sequence[Sequence[Sequence[Any]]]] = None) -> Dict[str, Any]:
    """Cross-rank summary of per-rank report dicts (index = rank; ``None`` = no report):
    :class:`torch_roofline.traceset.RankSummary` as a dict (``to_dict()``), the summary
    ``from_traces`` gives for a job's saved traces.

    Keys: ``world_size``; ``ranks``; ``missing_ranks``; ``step_time_s`` per rank and its
    ``step_time_s_mean``/``step_time_s_max``; ``straggler_spread`` = ``(max - min) / mean`` of
    the step times (0 = all ranks equally fast); ``straggler_rank`` and ``straggler_reason``;
    ``busy_s`` and ``wait_s`` per rank; ``clock_offsets_s``; ``communication``; ``modules``:
    per (name, phase) the time per step on each rank (seconds, ``None`` where a rank has no
    time) with mean, min, max, spread and the slowest rank.

    ``communication``: each rank's ``CommSummary.to_dict()`` (or ``None``); ``collectives``:
    each rank's ``(name, completion time s, time s)`` per collective, for the wait and the
    clock offsets.

    Example (hand-computed: times 1 and 3 -> mean 2, spread (3 - 1) / 2 = 1):
        >>> r = lambda t: {"totals": {"time_s": t}, "modules": [{"name": "", "phase": "all", "time_s": t}]}
        >>> rank_summary([r(1.0), r(3.0)])["straggler_spread"]
        1.0
    """
    from torch_roofline.ranks import RankRecord, summarize_ranks

    comms = list(communication or []) + [None] * len(reports)
    colls = list(collectives or []) + [()] * len(reports)
    records = [RankRecord.of_dict(rank, rep, comms[rank], colls[rank] or ())
               for rank, rep in enumerate(reports) if rep is not None]
    return summarize_ranks(records, world_size=len(reports)).to_dict()


def _rank_scalars(summary: Mapping[str, Any], tag: str) -> Dict[str, float]:
    out = {
        f"{tag}/ranks/step_time_s_mean": summary.get("step_time_s_mean"),
        f"{tag}/ranks/step_time_s_max": summary.get("step_time_s_max"),
        f"{tag}/ranks/straggler_spread_pct": _percent(summary.get("straggler_spread")),
    }
    return {k: float(v) for k, v in out.items() if _finite(v) is not None}


# ----------------------------------------------------------------------------- distributed


def _gather_to_rank_zero(obj: Any) -> Optional[List[Any]]:
    """``[obj of rank 0, obj of rank 1, …]`` on rank 0, ``None`` elsewhere; ``[obj]`` alone."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [obj]
    rank = dist.get_rank()
    out: Optional[List[Any]] = [None] * dist.get_world_size() if rank == 0 else None
    dist.gather_object(obj, out, dst=0)
    return out


def comm_scalars(comm: Optional[Mapping[str, Any]], tag: str = "roofline") -> Dict[str, float]:
    """Scalars of one rank's communication summary (``CommSummary.to_dict()``).

    Example (hand-computed: 1 ms of 10 ms in collectives -> 10 %)::

        >>> comm_scalars({"time_s": 0.001, "bus_bytes": 1040.0, "step_time_share": 0.1})
        {'roofline/comm/time_s': 0.001, 'roofline/comm/bus_bytes': 1040.0, 'roofline/comm/step_time_share_pct': 10.0}
    """
    if not comm:
        return {}
    out = {
        f"{tag}/comm/time_s": _finite(comm.get("time_s")),
        f"{tag}/comm/bus_bytes": _finite(comm.get("bus_bytes")),
        f"{tag}/comm/step_time_share_pct": _percent(comm.get("step_time_share")),
        f"{tag}/comm/efficiency_pct": _percent(comm.get("efficiency")),
    }
    return {k: v for k, v in out.items() if v is not None}
