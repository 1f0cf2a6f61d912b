"""The roofline arithmetic, one function per quantity: attainable FLOP/s, roofline time, efficiency,
the bound class, time lost and fusion headroom. Units: FLOPs, bytes, seconds, FLOP/s, B/s.
"""

from __future__ import annotations

from typing import Optional, Tuple

from torch_roofline.records import Roof


DEFAULT_OVERHEAD_THRESHOLD_S = 10e-6
DEFAULT_OVERHEAD_RATIO = 2.0
RoofKey = Tuple[Optional[str], str]


# --------------------------------------------------------------------------------------------
# The math
# --------------------------------------------------------------------------------------------


def attainable(intensity: float, roof: Roof) -> float:
    """Attainable FLOP/s at ``intensity`` FLOP/B under ``roof``: min(peak, intensity x bandwidth).

    >>> attainable(10.0, Roof("fp32", "vector", 1e12, 1e11))  # min(1e12, 10 * 1e11)
    1000000000000.0
    """
    return roof.attainable(intensity)


def roofline_time(flops: float, bytes_: float, roof: Roof) -> float:
    """Seconds the roofs allow for ``flops`` FLOPs and ``bytes_`` bytes: max(F/peak, B/bw).

    >>> roofline_time(2e9, 1e6, Roof("fp32", "matrix", 1e12, 1e11))  # max(2 ms, 10 µs)
    0.002
    """
    return max(flops / roof.peak_flops_per_s, bytes_ / roof.bandwidth_bytes_per_s)


def efficiency(roofline_time_s: Optional[float], time_s: Optional[float]) -> Optional[float]:
    """``roofline_time_s / time_s`` (0-1 normally; > 1 means suspect); ``None`` when either is
    unknown or ``time_s`` is not positive."""
    if roofline_time_s is None or time_s is None or time_s <= 0:
        return None
    return roofline_time_s / time_s


def is_suspect(roofline_time_s: Optional[float], time_s: Optional[float]) -> bool:
    """True when the point lies above its roof: measured faster than the roofs allow.

    A zero measured time against a positive roofline time is suspect too.
    """
    if roofline_time_s is None or time_s is None:
        return False
    return roofline_time_s > time_s


def bound(
    flops: float,
    bytes_: float,
    ridge: Optional[float],
    *,
    roofline_time_s: Optional[float] = None,
    time_s: Optional[float] = None,
    calls: int = 1,
    overhead_threshold_s: float = DEFAULT_OVERHEAD_THRESHOLD_S,
    overhead_ratio: float = DEFAULT_OVERHEAD_RATIO,
) -> Optional[str]:
    """The bound class of an op or row by the rule in this module's docstring.

    Args:
        flops: FLOPs of the row; bytes_: its bytes (report memory model).
        ridge: ridge point of its roof in FLOP/B; ``None`` (no roof) gives ``None``.
        roofline_time_s: the row's roofline time in seconds (all calls).
        time_s: its measured time in seconds (all calls); ``None`` when predicted.
        calls: calls summed into the row (roofline time per call = roofline_time_s / calls).
        overhead_threshold_s, overhead_ratio: the overhead rule's thresholds.

    Returns:
        ``"compute"``, ``"memory"``, ``"overhead"`` or ``None``.

    >>> bound(1e3, 1e3, 10.0, roofline_time_s=1e-8, time_s=5e-6)  # tiny op, 500x its roof
    'overhead'
    """
    if ridge is None:
        return None
    if time_s is not None and roofline_time_s is not None and calls > 0:
        if roofline_time_s / calls < overhead_threshold_s and time_s > overhead_ratio * roofline_time_s:
            return "overhead"
    if bytes_ > 0:
        return "compute" if flops / bytes_ >= ridge else "memory"
    return "compute" if flops > 0 else None


def time_lost(time_s: Optional[float], roofline_time_s: Optional[float]) -> Optional[float]:
    """``time_s - roofline_time_s`` in seconds (negative for suspect rows); ``None`` if unknown."""
    if time_s is None or roofline_time_s is None:
        return None
    return time_s - roofline_time_s


def fusion_headroom(op_bytes: float, compulsory_bytes: float) -> Optional[float]:
    """Op traffic / compulsory traffic (>= 1 normally); ``None`` when compulsory is 0."""
    return op_bytes / compulsory_bytes if compulsory_bytes > 0 else None
