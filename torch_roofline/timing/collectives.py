"""Collective communication in a profiler trace: bytes on the wire, time, phase.

Under DDP the gradient ``all_reduce`` runs in C10D, below the dispatcher the op counter
sees, so it has no FLOPs and no :class:`~torch_roofline.records.OpCost`. The profiler
trace does record it: every process-group backend wraps the work it runs in a range
named ``<backend>:<collective>`` (``gloo:all_reduce``, ``nccl:all_reduce``,
``gloo:all_gather``, ...). With ``record_shapes=True`` that range carries its tensors'
``Input Dims`` and ``Input type``; :func:`collectives` reads them into frozen
:class:`Collective` records and :func:`summarize` places them against an interconnect
roof (:class:`CommSummary`).

**Bytes** follow NCCL's performance notes (nccl-tests ``doc/PERFORMANCE.md``, "bus
bandwidth"): ``S`` is the message size of the collective (``all_reduce``, ``broadcast``,
``reduce``, ``all_to_all``, ``reduce_scatter``: the bytes of the input; ``all_gather``:
the bytes of the gathered output, ``n`` x the input), and the bytes each rank sends
(and, at the same time, receives) with a bandwidth-optimal ring algorithm are
``bus_bytes = S x factor(n)``::

    all_reduce                          2 (n - 1) / n    (reduce-scatter then all-gather)
    all_gather, reduce_scatter, all_to_all  (n - 1) / n
    broadcast, reduce, send, recv       1
    barrier                             0 (no payload)

so for ``n = 2`` a gradient all_reduce moves exactly the gradient bytes per rank.

**Time** is the backend range's duration. gloo runs each collective synchronously on its
own worker thread, so the range is the collective's wall time (waiting for the slowest
rank included). NCCL's range only enqueues the kernel: on GPU traces the time is that of
the ``nccl*`` kernels launched inside the range (matched by correlation id). Collectives
run asynchronously and overlap the backward: their time is *not* additive with the
compute time of the step, and :attr:`CommSummary.step_time_share` may overlap the rest.

**Phase** is the phase in which the collective was *issued*: the ``c10d::`` op that
started it (the last one on the host before the backend range began) lies inside an
autograd engine event or one of FSDP's backward ranges (``"backward"``: DDP's gradient
hooks; FSDP's ``FSDP::pre_backward`` all-gathers, its ``FSDP::post_backward_reduce``
reduce-scatters and the last ones, issued from ``FSDP::root_post_backward_callback`` after
the engine's last event), an optimizer range (``"optimizer"``), or none (``"forward"``).

**Roof**: ``interconnect_bandwidth`` in B/s *per direction*, as bus bandwidth is quoted.
The device catalog quotes links as aggregate bidirectional figures (NVLink), so
:func:`interconnect_roof` halves them. CPUs (gloo over loopback or Ethernet) have no
catalog figure: pass one you measured, or get no roof and a note saying so; never another
device's number.

Example::

    trace = load_trace("rank0.json")          # recorded with record_shapes=True
    calls = collectives(trace)
    summary = summarize(calls, steps=2, step_time_s=0.05, interconnect_bandwidth=None)
    print(summary.bus_bytes, summary.time_s, summary.note)
"""

from __future__ import annotations

import bisect
import math
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from torch_roofline.timing.timeline import _BACKWARD_PREFIX, merged_spans
from torch_roofline.timing.timeline import _OPTIMIZER_PREFIXES as _ATTRIBUTION_OPTIMIZER_PREFIXES
from torch_roofline.timing.ranges import PHASE_PREFIX
from torch_roofline.timing.steps import _outermost
from torch_roofline.timing.kineto_dtypes import KINETO_DTYPES
from torch_roofline.timing.trace import Trace, TraceEvent

__all__ = ["Collective", "CommSummary", "bus_factor", "collectives", "summarize", "interconnect_roof",
           "DTYPE_BYTES"]

_RANGE = re.compile(r"^(gloo|nccl|mpi|ucc|xccl|hccl):([a-z_]+)$")
_NCCL_KERNEL = ("ncclKernel", "ncclDevKernel")
# The phase markers attribution reads, plus our own phase ranges (collectives are placed by
# time, across threads, so a range counts here as well as a marker).
_OPTIMIZER_PREFIXES = _ATTRIBUTION_OPTIMIZER_PREFIXES + (PHASE_PREFIX + "optimizer",)
_FORWARD_RANGE = PHASE_PREFIX + "forward"

# Element sizes (bytes) of the dtype names the profiler writes into "Input type".
DTYPE_BYTES: Mapping[str, int] = {name: dtype.itemsize for name, dtype in KINETO_DTYPES.items()}

# Collective name -> (message size as a multiple of the input bytes, needs n?)
_GATHERED = frozenset({"all_gather", "allgather", "all_gather_into_tensor", "_allgather_base"})
_ALL_REDUCE = frozenset({"all_reduce", "allreduce", "all_reduce_coalesced", "allreduce_coalesced"})
_N_MINUS_1 = frozenset({"reduce_scatter", "reduce_scatter_tensor", "_reduce_scatter_base", "all_to_all",
                        "alltoall", "alltoall_base", "all_to_all_single"}) | _GATHERED
_ONE = frozenset({"broadcast", "reduce", "send", "recv", "gather", "scatter"})


def bus_factor(name: str, group_size: int) -> Optional[float]:
    """Bytes each rank sends per byte of message for collective ``name`` among ``group_size`` ranks.

    NCCL's bus-bandwidth factors (see the module docstring); ``None`` for an unknown
    collective. Example (hand-computed): all_reduce on 4 ranks, 2 x 3 / 4 = 1.5.

        >>> bus_factor("all_reduce", 4)
        1.5
    """
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"bus_factor(group_size={group_size!r}): expected an int >= 1 (the ranks in the group)")
    n = group_size
    if name in _ALL_REDUCE:
        return 2.0 * (n - 1) / n
    if name in _N_MINUS_1:
        return (n - 1) / n
    if name in _ONE:
        return 1.0
    if name == "barrier":
        return 0.0
    return None


@dataclass(frozen=True)
class Collective:
    """One collective call read from a trace.

    Attributes:
        name: collective (``"all_reduce"``, ``"all_gather"``, ...), as the backend names it.
        backend: ``"gloo"``, ``"nccl"``, ...
        phase: ``"forward"``, ``"backward"`` or ``"optimizer"`` (where it was issued).
        start_s: start, seconds from the trace origin.
        time_s: duration in seconds (see the module docstring).
        group_size: ranks in the process group.
        dtype: element type as the trace spells it (``"float"``), or ``None``.
        message_bytes: ``S``, the collective's message size in bytes; ``None`` when the
            trace has no shapes (record it with ``record_shapes=True``).
        bus_bytes: bytes each rank sends, ``S x bus_factor``; ``None`` when unknown.
        overlap_s: seconds of ``time_s`` during which compute ran at the same time (see
            :func:`collectives`): the communication the step hid behind work (FSDP's
            prefetch, DDP's bucketed all-reduce during the backward); ``None`` when unknown.
    """

    name: str
    backend: str
    phase: str
    start_s: float
    time_s: float
    group_size: int
    dtype: Optional[str]
    message_bytes: Optional[int]
    bus_bytes: Optional[float]
    overlap_s: Optional[float] = None

    @property
    def bus_bandwidth(self) -> Optional[float]:
        """This call's achieved bus bandwidth, ``bus_bytes / time_s`` in B/s (what nccl-tests prints
        as busbw); ``None`` when its bytes are unknown or it took no time."""
        if self.bus_bytes is None or not self.time_s > 0:
            return None
        return self.bus_bytes / self.time_s


@dataclass(frozen=True)
class CommSummary:
    """Communication per step, against an interconnect roof.

    Attributes:
        steps: profiled steps the totals are divided by.
        calls: collectives per step (barriers included).
        time_s: seconds per step inside collectives (overlaps compute, see the module docstring).
        message_bytes: message bytes per step (``S`` summed); ``None`` when any is unknown.
        bus_bytes: bytes sent per rank per step; ``None`` when any is unknown.
        bus_bandwidth: achieved bus bandwidth, ``bus_bytes / time_s`` in B/s, or ``None``.
        interconnect_bandwidth: the roof in B/s per direction, or ``None`` (no roof).
        roofline_time_s: ``bus_bytes / interconnect_bandwidth`` per step, or ``None``.
        efficiency: ``roofline_time_s / time_s`` (0-1), or ``None``.
        step_time_s: measured step time in seconds, or ``None``.
        step_time_share: ``time_s / step_time_s`` (0-1), or ``None``.
        by_phase: phase -> (seconds per step, bus bytes per step or ``None``).
        by_name: collective name -> calls per step.
        note: what the figures mean and which are missing, in words.
        overlap_s: seconds per step of collective time during which compute ran too (hidden
            communication); ``None`` when any call's overlap is unknown.
        overlap_share: ``overlap_s / time_s`` (0-1), or ``None``.
    """

    steps: int
    calls: float
    time_s: float
    message_bytes: Optional[float]
    bus_bytes: Optional[float]
    bus_bandwidth: Optional[float]
    interconnect_bandwidth: Optional[float]
    roofline_time_s: Optional[float]
    efficiency: Optional[float]
    step_time_s: Optional[float]
    step_time_share: Optional[float]
    by_phase: Mapping[str, Tuple[float, Optional[float]]]
    by_name: Mapping[str, float]
    note: str
    overlap_s: Optional[float] = None
    overlap_share: Optional[float] = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "CommSummary":
        """The summary back from :meth:`to_dict` (a gathered or saved one)."""
        by_phase = {k: (v.get("time_s"), v.get("bus_bytes")) for k, v in (d.get("by_phase") or {}).items()}
        fields = {f: d.get(f) for f in ("steps", "calls", "time_s", "message_bytes", "bus_bytes", "bus_bandwidth",
                                         "interconnect_bandwidth", "roofline_time_s", "efficiency", "step_time_s",
                                         "step_time_share", "note", "overlap_s", "overlap_share")}
        return cls(**fields, by_phase=by_phase, by_name=dict(d.get("by_name") or {}))

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready dict (``None`` for unknown numbers, never NaN)."""
        return {
            "steps": self.steps, "calls": self.calls, "time_s": self.time_s,
            "message_bytes": self.message_bytes, "bus_bytes": self.bus_bytes,
            "bus_bandwidth": self.bus_bandwidth, "interconnect_bandwidth": self.interconnect_bandwidth,
            "roofline_time_s": self.roofline_time_s, "efficiency": self.efficiency,
            "step_time_s": self.step_time_s, "step_time_share": self.step_time_share,
            "by_phase": {k: {"time_s": t, "bus_bytes": b} for k, (t, b) in sorted(self.by_phase.items())},
            "by_name": dict(sorted(self.by_name.items())), "note": self.note,
            "overlap_s": self.overlap_s, "overlap_share": self.overlap_share,
        }


# ----------------------------------------------------------------------------- reading


def _group_size(trace: Trace) -> Optional[int]:
    info = trace.metadata.get("distributedInfo") if trace.metadata else None
    size = info.get("world_size") if isinstance(info, Mapping) else None
    return size if isinstance(size, int) and not isinstance(size, bool) and size >= 1 else None


def _message_bytes(name: str, ev: TraceEvent, n: int) -> Tuple[Optional[str], Optional[int]]:
    """(dtype, S) from the range's recorded inputs; (None, None) without shapes."""
    if name == "barrier":
        return None, 0  # no payload (gloo's barrier range records no tensors)
    dims, types = ev.args.get("Input Dims"), ev.args.get("Input type")
    if not isinstance(dims, list) or not isinstance(types, list) or not dims:
        return None, None
    total, dtype = 0, None
    for shape, type_name in zip(dims, types):
        size = DTYPE_BYTES.get(type_name) if isinstance(type_name, str) else None
        if size is None or not isinstance(shape, list) or not all(isinstance(d, int) for d in shape):
            continue
        dtype = dtype or type_name
        total += math.prod(shape) * size
    if dtype is None:
        return None, None
    return dtype, total * n if name in _GATHERED else total


def _phase_intervals(trace: Trace) -> List[Tuple[float, float, str]]:
    """(start, end, phase) of the host ranges that decide a collective's phase."""
    out = []
    for ev in trace.of_kind("cpu_op", "user_annotation"):
        if ev.name.startswith(_BACKWARD_PREFIX) or (
                ev.name.startswith(("FSDP::", "FullyShardedDataParallel.")) and "backward" in ev.name):
            out.append((ev.start_s, ev.end_s, "backward"))
        elif ev.name.startswith(_OPTIMIZER_PREFIXES):
            out.append((ev.start_s, ev.end_s, "optimizer"))
        elif ev.name == _FORWARD_RANGE:
            out.append((ev.start_s, ev.end_s, "forward"))
    return out


def _phase_at(t: float, intervals: Sequence[Tuple[float, float, str]]) -> str:
    """Backward wins (DDP's hooks run inside engine events); else the innermost range."""
    inside = [iv for iv in intervals if iv[0] <= t <= iv[1]]
    if any(p == "backward" for _, _, p in inside):
        return "backward"
    if not inside:
        return "forward"
    return max(inside, key=lambda iv: iv[0])[2]


class _NcclKernels:
    """The trace's launches per thread and NCCL kernel times per correlation id, indexed once."""

    def __init__(self, trace: Trace) -> None:
        self.launches: Dict[Tuple[Any, Any], List[Tuple[float, int]]] = {}
        for e in trace.of_kind("cuda_runtime", "cuda_driver"):
            if e.correlation is not None:
                self.launches.setdefault((e.pid, e.tid), []).append((e.start_s, e.correlation))
        self.kernels: Dict[int, List[Tuple[float, float]]] = {}
        for k in trace.of_kind("kernel"):
            if k.correlation is not None and k.name.startswith(_NCCL_KERNEL):
                self.kernels.setdefault(k.correlation, []).append((k.start_s, k.end_s))

    def device_spans(self, ev: TraceEvent) -> List[Tuple[float, float]]:
        """(start, end) of the NCCL kernels launched from inside ``ev`` (seconds)."""
        wanted = {corr for start, corr in self.launches.get((ev.pid, ev.tid), ())
                  if ev.start_s <= start <= ev.end_s}
        return [span for corr in wanted for span in self.kernels.get(corr, ())]


def _covered(spans: Sequence[Tuple[float, float]], merged: Sequence[Tuple[float, float]],
             starts: Sequence[float]) -> float:
    """Seconds of ``spans`` (merged among themselves) inside the merged, sorted ``merged``."""
    total = 0.0
    for lo, hi in merged_spans(spans):
        i = max(bisect.bisect_right(starts, lo) - 1, 0)
        while i < len(merged) and merged[i][0] < hi:
            a, b = merged[i]
            total += max(0.0, min(b, hi) - max(a, lo))
            i += 1
    return total


def _compute_spans(trace: Trace, ranges: Sequence[TraceEvent]) -> List[Tuple[float, float]]:
    """When compute ran, merged: on GPU traces the kernels other than NCCL's; on CPU traces the
    outermost ``aten::`` calls outside communication (not inside a ``c10d::`` op or a backend
    range, where a process group's worker thread copies buffers)."""
    if trace.has_device_activity:
        return merged_spans([(k.start_s, k.end_s) for k in trace.of_kind("kernel") if not k.name.startswith(_NCCL_KERNEL)])
    comm: Dict[Any, List[Tuple[float, float]]] = {}
    for ev in list(ranges) + [e for e in trace.of_kind("cpu_op") if e.name.startswith("c10d::")]:
        comm.setdefault(ev.tid, []).append((ev.start_s, ev.end_s))
    ops = [ev for ev in trace.of_kind("cpu_op") if ev.name.startswith("aten::")
           and not any(lo <= ev.start_s <= hi for lo, hi in comm.get(ev.tid, ()))]
    return merged_spans([(ev.start_s, ev.end_s) for ev in _outermost(ops)])


def collectives(trace: Trace, *, group_size: Optional[int] = None) -> Tuple[Collective, ...]:
    """The collective calls recorded in ``trace``, in start order.

    Args:
        trace: a trace from :func:`~torch_roofline.timing.trace.load_trace`, recorded with
            ``record_shapes=True`` for the byte counts.
        group_size: ranks per process group; default: the trace's ``distributedInfo``
            ``world_size`` (every collective is taken to run on the default group).

    Returns:
        One :class:`Collective` per ``<backend>:<collective>`` range.

    Raises:
        ValueError: the trace has collectives but no group size and none was given.
    """
    ranges = [ev for ev in trace.of_kind("user_annotation", "cpu_op") if _RANGE.match(ev.name)]
    if not ranges:
        return ()
    n = group_size if group_size is not None else _group_size(trace)
    if n is None:
        raise ValueError(
            f"collectives({trace.source!r}): the trace holds {len(ranges)} collective(s) but no "
            "distributedInfo.world_size; pass group_size=<ranks in the process group>, e.g. group_size=2"
        )
    issued = sorted((ev.start_s, ev.index) for ev in trace.of_kind("cpu_op") if ev.name.startswith("c10d::"))
    issue_times = [s for s, _ in issued]
    intervals = _phase_intervals(trace)
    nccl = _NcclKernels(trace) if trace.has_device_activity else None  # GPU traces only
    compute = _compute_spans(trace, ranges)
    compute_starts = [lo for lo, _ in compute]
    out = []
    for ev in sorted(ranges, key=lambda e: (e.start_s, e.index)):
        backend, name = _RANGE.match(ev.name).groups()  # type: ignore[union-attr]
        dtype, message = _message_bytes(name, ev, n)
        factor = bus_factor(name, n)
        at = bisect.bisect_right(issue_times, ev.start_s) - 1
        issued_at = issue_times[at] if at >= 0 else ev.start_s
        kernels = nccl.device_spans(ev) if nccl is not None else []
        spans = kernels or [(ev.start_s, ev.end_s)]
        out.append(Collective(
            name=name, backend=backend, phase=_phase_at(issued_at, intervals), start_s=ev.start_s,
            time_s=math.fsum(hi - lo for lo, hi in kernels) if kernels else ev.dur_s, group_size=n, dtype=dtype,
            message_bytes=message, bus_bytes=None if message is None or factor is None else message * factor,
            overlap_s=_covered(spans, compute, compute_starts),
        ))
    return tuple(out)


# ----------------------------------------------------------------------------- the roof


def interconnect_roof(device: Any) -> Optional[float]:
    """Per-direction interconnect bandwidth (B/s) of a Device, or ``None`` when it has none.

    The catalog's ``interconnect_bandwidth`` is the vendor's aggregate bidirectional figure
    (NVLink 4: 900 GB/s); a rank sends and receives its bus bytes at the same time, so the
    roof for bus bytes is half of it (450 GB/s), the figure nccl-tests' bus bandwidth
    approaches.
    """
    value = getattr(device, "interconnect_bandwidth", None)
    return None if value is None or not value > 0 else float(value) / 2.0


def summarize(
    calls: Sequence[Collective],
    *,
    steps: int,
    step_time_s: Optional[float] = None,
    interconnect_bandwidth: Optional[float] = None,
    bandwidth_source: str = "",
) -> CommSummary:
    """Per-step communication totals and their place against the interconnect roof.

    Args:
        calls: the collectives of ``steps`` profiled steps (:func:`collectives`).
        steps: how many steps the trace covers (>= 1).
        step_time_s: measured time of one step in seconds, for the share.
        interconnect_bandwidth: roof in B/s per direction; ``None``: no roof.
        bandwidth_source: where the roof comes from, in words (for the note).

    Example (hand-computed: 2 steps, one 1040-byte all_reduce each on 2 ranks, 1 ms each
    -> 1040 bus bytes and 1 ms per step)::

        >>> c = Collective("all_reduce", "gloo", "backward", 0.0, 1e-3, 2, "float", 1040, 1040.0)
        >>> s = summarize([c, c], steps=2, step_time_s=0.01)
        >>> (s.bus_bytes, s.time_s, s.step_time_share)
        (1040.0, 0.001, 0.1)
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"summarize(steps={steps!r}): expected the number of profiled steps, an int >= 1")
    if interconnect_bandwidth is not None and not interconnect_bandwidth > 0:
        raise ValueError(f"summarize(interconnect_bandwidth={interconnect_bandwidth!r}): expected B/s > 0 or None")
    time_s = math.fsum(c.time_s for c in calls) / steps
    known = all(c.bus_bytes is not None for c in calls)
    bus = math.fsum(c.bus_bytes for c in calls) / steps if known else None  # type: ignore[misc]
    message = math.fsum(c.message_bytes for c in calls) / steps if known else None  # type: ignore[misc]
    by_phase: Dict[str, Tuple[float, Optional[float]]] = {}
    for phase in sorted({c.phase for c in calls}):
        mine = [c for c in calls if c.phase == phase]
        phase_bus = (math.fsum(c.bus_bytes for c in mine) / steps  # type: ignore[misc]
                     if all(c.bus_bytes is not None for c in mine) else None)
        by_phase[phase] = (math.fsum(c.time_s for c in mine) / steps, phase_bus)
    by_name: Dict[str, float] = {}
    for c in calls:
        by_name[c.name] = by_name.get(c.name, 0.0) + 1.0 / steps
    roof_time = bus / interconnect_bandwidth if bus is not None and interconnect_bandwidth else None
    notes = [f"{len(calls) / steps:g} collective(s) per step; bytes per rank follow NCCL's bus-bandwidth "
             "convention (all_reduce: 2(n-1)/n x message bytes); collectives can run while compute does, so their "
             "time is not additive with the ops'"]
    if not known:
        notes.append("some collectives have no recorded shapes (record_shapes=True), so bytes are unknown")
    if interconnect_bandwidth is None:
        notes.append("no interconnect roof: the device has no catalog interconnect figure (pass "
                     "interconnect_bandwidth= in B/s per direction, measured on your link)")
    elif bandwidth_source:
        notes.append(f"interconnect roof {interconnect_bandwidth / 1e9:.3g} GB/s per direction ({bandwidth_source})")
    share = time_s / step_time_s if step_time_s and step_time_s > 0 else None
    overlap = (math.fsum(c.overlap_s for c in calls) / steps  # type: ignore[misc]
               if calls and all(c.overlap_s is not None for c in calls) else None)
    if overlap is not None and time_s > 0:
        notes.append(f"{overlap / time_s:.0%} of the collective time overlapped compute (communication hidden "
                     "behind work: prefetch, bucketing)")
    return CommSummary(
        steps=steps, calls=len(calls) / steps, time_s=time_s, message_bytes=message, bus_bytes=bus,
        bus_bandwidth=bus / time_s if bus is not None and time_s > 0 else None,
        interconnect_bandwidth=interconnect_bandwidth, roofline_time_s=roof_time,
        efficiency=roof_time / time_s if roof_time is not None and time_s > 0 else None,
        step_time_s=step_time_s, step_time_share=share, by_phase=by_phase, by_name=by_name,
        note="; ".join(notes), overlap_s=overlap,
        overlap_share=overlap / time_s if overlap is not None and time_s > 0 else None,
    )
