"""The report's headline numbers as flat scalar tags, for loggers (TensorBoard, Lightning).

Pure functions over the report's JSON dict (``RooflineReport.to_dict()``): no torch, no
tensorboard. Unknown values are left out, never NaN.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

from torch_roofline._numbers import finite  # re-exported
from torch_roofline.records import BOUNDS  # re-exported: the bound classes, defined once

__all__ = ["finite", "percent", "totals_scalars", "BOUNDS"]


def percent(share: Any) -> Optional[float]:
    """A 0-1 share as a percentage (0-100), or ``None`` when unknown."""
    value = finite(share)
    return None if value is None else 100.0 * value


def totals_scalars(report_dict: Mapping[str, Any], tag: str = "roofline") -> Dict[str, float]:
    """Scalar tag -> value for the step as a whole.

    Efficiency, coverage and bound shares in percent (0-100); times in seconds.

    Example::

        >>> totals_scalars({"totals": {"efficiency": 0.25, "time_s": 0.002}})
        {'roofline/efficiency_pct': 25.0, 'roofline/step_time_s/measured': 0.002}
    """
    totals = report_dict.get("totals") or {}
    out: Dict[str, Optional[float]] = {
        f"{tag}/efficiency_pct": percent(totals.get("efficiency")),
        f"{tag}/step_time_s/measured": finite(totals.get("time_s")),
        f"{tag}/step_time_s/roofline": finite(totals.get("roofline_time_s")),
        f"{tag}/time_lost_s": finite(totals.get("time_lost_s")),
        f"{tag}/coverage_pct": percent(totals.get("coverage")),
    }
    share = totals.get("bound_time_share") or {}
    for bound in BOUNDS:
        out[f"{tag}/bound_time_share_pct/{bound}"] = percent(share.get(bound))
    return {k: v for k, v in out.items() if v is not None}
