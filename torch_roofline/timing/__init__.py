"""Timing stage: torch.profiler / Kineto traces → measured time per op and per module.

One code path for live sessions and saved traces: :class:`ProfileSession` runs
torch.profiler and exports its Chrome/Kineto trace, :func:`load_trace` reads it (or any
saved trace, GPU ones included) and :func:`attribute` turns it into :class:`TraceTiming`
(:class:`~torch_roofline.records.OpTiming` and
:class:`~torch_roofline.records.ModuleTiming` rows). :func:`kernel_counters` reads CUPTI
hardware counters, when a trace has them, into measured FLOPs per kernel. A trace that cannot
be read raises :class:`TraceError` (a ``ValueError`` naming the file, the event, the field,
what was expected and what arrived).

Example::

    from torch_roofline.timing import ModuleRanges, ProfileSession, attribute

    with ModuleRanges(model), ProfileSession() as session:
        model(x)
    timing = attribute(session.trace)
"""

from torch_roofline.timing.attribution import (
    DeviceActivity,
    TraceTiming,
    attribute,
    dotted_op_name,
)
from torch_roofline.timing.counters import KernelCounters, kernel_counters, sass_flops
from torch_roofline.timing.quiet import quiet_native_stderr
from torch_roofline.timing.ranges import RANGE_PREFIX, ModuleRanges, phase_range
from torch_roofline.timing.session import DEFAULT_COUNTER_METRICS, ProfileSession
from torch_roofline.timing.trace import DeviceProperties, Trace, TraceError, TraceEvent, load_trace

__all__ = [
    "RANGE_PREFIX",
    "ModuleRanges",
    "phase_range",
    "quiet_native_stderr",
    "ProfileSession",
    "DEFAULT_COUNTER_METRICS",
    "Trace",
    "TraceError",
    "TraceEvent",
    "DeviceProperties",
    "load_trace",
    "TraceTiming",
    "DeviceActivity",
    "attribute",
    "dotted_op_name",
    "KernelCounters",
    "kernel_counters",
    "sass_flops",
]
