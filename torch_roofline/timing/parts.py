"""Reading the parts of a big trace, in parallel processes where the platform allows.

Each part (a few steps: :func:`~torch_roofline.timing.segments.plan_parts`) is cut from the
file (:func:`~torch_roofline.timing.segments.part_trace`), attributed to modules and counted
from its recorded shapes exactly as a whole trace is, and summed
(:mod:`torch_roofline.timing.merge`) into a :class:`PartResult` that holds no event. The
parts are read by worker processes forked from this one (:data:`PART_WORKERS`), which start
with its cache of replayed calls and the file's scan, keep the calls they replay for their
next parts, and send back their results, which are added up in time order. Where ``fork``
is not available, with a single worker or a single part, or inside a worker process of a
pool (which may not start processes), every part is read here in turn.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Set, Tuple

from torch_roofline.records import OpCost
from torch_roofline.timing.attribution import SliceCarry, TraceTiming, attribute, root_forward_floor
from torch_roofline.timing.stack_traces import ModuleTree
from torch_roofline.timing.compiled import CompiledCode, scan_compiled
from torch_roofline.timing.inductor import module_tree_beside
from torch_roofline.timing.kernel_sites import KernelSite, place_kernels, settle_calls
from torch_roofline.timing.merge import BusyUnion, CallShare, PartCosts, ShapeSum, TimingSum, add_compiled, part_costs
from torch_roofline.timing.segments import (_SCAN_DECODER, PART_BYTES, StepMarker, TraceScan, join_scans, part_trace,
                                             scan_range, scan_trace)
from torch_roofline.timing.slices import slice_cuts, slice_trace, step_blocks, step_bytes
from torch_roofline.timing.shapes import has_recorded_shapes, shape_costs
from torch_roofline.timing.steps import _TOL_S
from torch_roofline.timing.trace import DeviceProperties

__all__ = ["PART_WORKERS", "RECORD_BYTES_PER_FILE_BYTE", "SLICE_BYTES", "SPLIT_SCAN_BYTES", "PartResult", "read_parts", "part_workers", "scan_while"]

#: Worker processes reading parts at once: this machine's usable CPUs, at most 4 (each holds
#: one part's records, about ten times :data:`~torch_roofline.timing.segments.PART_BYTES`).
PART_WORKERS = max(1, min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1),
                          4))


@dataclass(frozen=True)
class PartResult:
    """What one part of a trace measured and counted, without its events.

    Attributes:
        steps: ProfilerStep markers holding an op call in the part (0: none; the rest is empty).
        spans_s: their summed spans in seconds.
        timing: the part's timing with its op rows summed per (module, scope, phase, op)
            (:class:`~torch_roofline.timing.merge.TimingSum`).
        runs: module calls made by runs of op rows (a trace without module ranges), summed
            over the part's steps.
        device: the GPU the part's kernels ran on (``None``: a CPU trace).
        unfit: the part cannot be read this way (its steps are not the markers the
            attribution counts, or it holds hardware counters): read the trace whole.
        compiled: what it recorded of compiled code.
        shaped: whether its ops carry recorded shapes.
        costs: its op costs per step (with recorded shapes and no model).
        shapes: the counts behind its shape notes.
        slices: the slices its one long step was read in (0: read at once).
        sites: where its torch.compile kernels were put (:mod:`~torch_roofline.timing.kernel_sites`).
    """

    steps: int
    spans_s: float = 0.0
    timing: Optional[TraceTiming] = None
    runs: Counter = field(default_factory=Counter)
    device: Optional[DeviceProperties] = None
    unfit: bool = False
    compiled: Optional[CompiledCode] = None
    shaped: bool = False
    costs: Optional[PartCosts] = None
    shapes: Optional[ShapeSum] = None
    slices: int = 0
    sites: Tuple[KernelSite, ...] = ()


@dataclass(frozen=True)
class _Job:
    """What every part's reading needs (inherited by forked workers)."""

    scan: TraceScan
    plan: Tuple[Tuple[StepMarker, ...], ...]
    op_names: Optional[Set[str]]
    cache: Any
    slice_bytes: int = PART_BYTES
    tree: Optional[ModuleTree] = None  # the model's, saved beside the trace: kernel rows go under their modules


_JOB: Optional[_Job] = None  # set before the workers fork; read by _read_in_worker


def read_parts(scan: TraceScan, plan: Sequence[Sequence[StepMarker]], *, op_names: Optional[Set[str]],
               cache: Any, workers: Optional[int] = None, slice_bytes: Optional[int] = None) -> Iterator[PartResult]:
    """Each part's :class:`PartResult`, in time order (module docstring).

    Args:
        scan: the file's scan (:func:`~torch_roofline.timing.segments.scan_trace`).
        plan: its steps grouped into parts (:func:`~torch_roofline.timing.segments.plan_parts`).
        op_names: the ops a model's count holds (rows are made of them only), or ``None``:
            every outermost op is a row and is counted from its recorded shapes.
        cache: the replay cache (:func:`~torch_roofline.timing.shapes.replay_cache`).
        workers: processes reading at once; default :data:`PART_WORKERS`; fewer where the
            free memory holds fewer parts' records at once (about
            :data:`RECORD_BYTES_PER_FILE_BYTE` bytes per byte of file each), down to one.
        slice_bytes: a part of one step holding more than about twice this many bytes of
            file is read in slices of about this size, one after the other
            (:func:`~torch_roofline.timing.slices.slice_trace`); default :data:`SLICE_BYTES`.
    """
    global _JOB
    slice_bytes = SLICE_BYTES if slice_bytes is None else slice_bytes
    job = _Job(scan, tuple(tuple(p) for p in plan), op_names, cache, slice_bytes,
               module_tree_beside(scan.path) if op_names is None else None)
    n = min(PART_WORKERS if workers is None else workers, len(job.plan),
            _workers_that_fit(scan, job.plan, slice_bytes))
    if n < 2 or not _can_fork():
        for k in range(len(job.plan)):  # one worker, no fork, or inside a pool's worker (no children there)
            yield _read(job, k)
        return
    _JOB = job
    try:
        with _quiet_fork() as ctx:
            pool = ctx.Pool(n)
        with pool:
            yield from pool.imap(_read_in_worker, range(len(job.plan)))
    finally:
        _JOB = None


#: Bytes of file per slice of a step too long to be read at once (a part of one step holding more
#: than twice this is read in slices: :func:`read_parts`).
SLICE_BYTES = PART_BYTES

#: Memory a part's records take while it is read, per byte of file (measured: 8-10).
RECORD_BYTES_PER_FILE_BYTE = 10


def _workers_that_fit(scan: TraceScan, plan: Sequence[Sequence[StepMarker]], slice_bytes: int = PART_BYTES) -> int:
    """How many parts of ``plan`` can be read at once in the memory this machine has free
    (``MemAvailable``; at least 1): a part of several steps holds them all at once, a part of
    one long step a slice of it (about twice ``slice_bytes`` of file at most)."""
    available = _memory_available()
    if available is None or not plan or not scan.markers:
        return len(plan) or 1
    largest = max(len(p) for p in plan) * scan.bytes / len(scan.markers)
    if max(len(p) for p in plan) == 1:
        largest = min(largest, 2 * slice_bytes)
    return max(1, min(len(plan), int(available // max(RECORD_BYTES_PER_FILE_BYTE * largest, 1))))


def _memory_available() -> Optional[int]:
    """``MemAvailable`` of ``/proc/meminfo`` in bytes; ``None`` where it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def part_workers() -> int:
    """How many processes :func:`read_parts` reads parts with here: :data:`PART_WORKERS`, or 1
    where it cannot fork them."""
    return PART_WORKERS if _can_fork() else 1


def _can_fork() -> bool:
    """Whether worker processes can be forked here (not where ``fork`` is missing, nor inside
    a pool's worker, which may not start processes)."""
    return "fork" in multiprocessing.get_all_start_methods() and not multiprocessing.current_process().daemon


@contextlib.contextmanager
def _quiet_fork() -> Iterator[Any]:
    """The ``fork`` context, for starting processes without Python 3.12+'s warning about
    forking a threaded process (the children take no lock a parent thread may hold)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*fork.*", category=DeprecationWarning)
        yield multiprocessing.get_context("fork")


#: Plain trace files at least this big are scanned by two processes, half each.
SPLIT_SCAN_BYTES = 16 << 20


def scan_while(path: str, meanwhile: Callable[[], None]) -> Optional[TraceScan]:
    """:func:`~torch_roofline.timing.segments.scan_trace` of ``path`` in forked processes
    while this one runs ``meanwhile`` (what the parts' replays need:
    :func:`~torch_roofline._lazy_dynamo.prepare_meta_replays`): a plain file of
    :data:`SPLIT_SCAN_BYTES` or more in two halves, one process each
    (:func:`split_point`), else in one. Both
    here, one after the other, where a process cannot be forked or a child died. An error of
    the scan is raised here."""
    if not _can_fork():
        meanwhile()
        return scan_trace(path)
    size = os.path.getsize(path)
    cut = split_point(path, size // 2) if size >= SPLIT_SCAN_BYTES else None
    ranges = [(None, None)] if cut is None else [(None, cut), (cut, None)]
    children = []
    with _quiet_fork() as ctx:
        for start, end in ranges:
            receive, send = ctx.Pipe(duplex=False)
            child = ctx.Process(target=_scan_to, args=(path, start, end, send), name="torch_roofline-scan",
                                daemon=True)
            child.start()
            send.close()
            children.append((child, receive))
    results = []
    try:
        meanwhile()
        for child, receive in children:
            try:
                results.append(receive.recv())
            except (EOFError, OSError):  # the child died: scan here
                results.append(None)
    finally:
        for child, receive in children:
            receive.close()
            child.join()
    for result in results:
        if result is not None and result[0] == "error":
            raise result[1]
    if any(result is None for result in results):
        return scan_trace(path)
    scans = [value for _, value in results]
    if any(scan is None for scan in scans):  # not a layout read in pieces (or a range that was not)
        return scan_trace(path) if len(scans) > 1 else None
    return join_scans(path, scans)


def _scan_to(path: str, start: Optional[int], end: Optional[int], send: Any) -> None:
    try:
        result: Tuple[str, Any] = ("ok", scan_range(path, start, end))
    except BaseException as exc:  # noqa: BLE001 - sent to the parent, which raises it
        result = ("error", exc)
    send.send(result)
    send.close()


#: A worker's last part, freed when it starts the next one rather than before its result is
#: sent back (freeing a part's events takes ~10 % of reading it; a pool's workers are ended
#: without freeing what they hold).
_LAST: list = []


def _read_in_worker(k: int) -> PartResult:
    assert _JOB is not None, "read_parts sets the job before its workers fork"
    _LAST.clear()
    return _read(_JOB, k, keep=_LAST)


def _after(job: _Job, k: int) -> Optional[float]:
    """The time (seconds) up to which part ``k`` leaves events to the part before it."""
    if k == 0:
        return None
    return job.plan[k - 1][-1].end_s(job.scan.origin_us) + _TOL_S


def _read(job: _Job, k: int, keep: Optional[list] = None) -> PartResult:
    """Cut, attribute and count part ``k``; ``keep``: a list to hold its records (freed by
    whoever clears it). A part of one step bigger than twice the job's ``slice_bytes`` is
    read in slices (:func:`_read_slices`)."""
    if len(job.plan[k]) == 1 and step_bytes(job.scan, job.plan[k][0]) > 2 * job.slice_bytes:
        cuts = slice_cuts(job.scan, job.plan[k][0], job.slice_bytes)
        if cuts:
            return _read_slices(job, k, cuts, keep)
    cut = part_trace(job.scan, job.plan[k], _after(job, k))
    if cut is None:
        return PartResult(0)
    part, spans = cut
    timing = attribute(part, op_names=job.op_names)
    if keep is not None:
        keep.append((part, timing))
    if timing.steps != len(spans) or any(e.kind == "cuda_profiler_range" for e in part.events):
        return PartResult(0, unfit=True)
    ranged = any(m.name for m in timing.modules)
    shaped = job.op_names is None and has_recorded_shapes(part)
    counted = shape_costs(part, timing, cache=job.cache) if shaped and timing.ops else None
    sites: Tuple[KernelSite, ...] = ()
    if counted is not None:  # kernel rows under the modules whose ops they fused, before summing
        timing, counted, sites = place_kernels(timing, counted, job.tree)
    summed = TimingSum()
    summed.add(timing, runs=not ranged)
    result = dict(steps=timing.steps, spans_s=sum(hi - lo for lo, hi in spans), timing=summed.result(),
                  runs=summed.runs, device=part.device())
    if job.op_names is not None:
        return PartResult(**result)
    costs, shapes = None, None
    if shaped:
        shapes = ShapeSum()
        if counted is not None:
            costs = part_costs(CallShare().shared(counted.costs), [row.step for row in timing.ops], timing.steps)
            shapes.add(counted)
        else:
            costs = part_costs((), (), timing.steps)
    return PartResult(**result, compiled=scan_compiled(part), shaped=shaped, costs=costs, shapes=shapes, sites=sites)


def _read_slices(job: _Job, k: int, cuts: Sequence[float], keep: Optional[list] = None) -> PartResult:
    """Part ``k``, one long step, read slice by slice in time order (cut near ``cuts``:
    :func:`~torch_roofline.timing.slices.slice_trace`), each attributed after the ones
    before it (:class:`~torch_roofline.timing.attribution.SliceCarry`) and counted; their
    timings and costs added up are the step's. Memory holds one slice's records, the step's
    forward op calls (an entry each) and module ranges, and one cost record per distinct call
    (:class:`~torch_roofline.timing.merge.CallShare`)."""
    step = job.plan[k][0]
    # ops outside every module range are the OUTSIDE row where the step has module ranges (as
    # a whole read decides), whether or not the slice holds one
    outside = any(b.ranged for b in step_blocks(job.scan, step))
    carry = SliceCarry()
    summed = TimingSum()
    runs_state: dict = {}
    costs: List[OpCost] = []
    share = CallShare()  # a call repeated in the step (micro-batches, layers) is one record
    busy = BusyUnion()  # the device's busy time over the slices, counted once where they overlap
    offsets: Counter = Counter()  # op rows per phase in the slices before: call indices go on
    shapes: Optional[ShapeSum] = None
    compiled: Optional[CompiledCode] = None
    shaped = False
    sites: Dict[KernelSite, None] = {}  # the kernels placed in the step's slices, in order
    device = None
    carried: Tuple = ()
    start: Optional[float] = None
    n = 0
    while True:
        n += 1
        end = next((c for c in cuts if start is None or c > start), None)
        piece = slice_trace(job.scan, step, start, end, carried, _after(job, k))
        if keep is not None:
            keep.clear()
        trace = piece.trace
        timing = attribute(trace, op_names=job.op_names, carry=carry, outside=outside)
        if keep is not None:
            keep.append((trace, timing))
        if any(e.kind == "cuda_profiler_range" for e in trace.events):
            return PartResult(0, unfit=True)
        counted = None
        if job.op_names is None and has_recorded_shapes(trace) and timing.ops:
            counted = shape_costs(trace, timing, cache=job.cache)
            timing, counted, placed = place_kernels(timing, counted, job.tree)
            sites.update(dict.fromkeys(placed))
        summed.add(timing, runs=not outside, continues=runs_state)  # module calls from op runs: no ranges
        busy.add((a.start_s, a.start_s + a.dur_s) for a in timing.activities)
        device = device or trace.device()
        if job.op_names is None:
            compiled = add_compiled(compiled, scan_compiled(trace))
            if has_recorded_shapes(trace):
                shaped = True
                shapes = shapes or ShapeSum()
                if counted is not None:
                    costs.extend(share.shared(dataclasses.replace(c, index=c.index + offsets[c.phase])
                                              if offsets[c.phase] else c for c in counted.costs))
                    shapes.add(counted)
        offsets.update(row.phase for row in timing.ops)
        carried, start = piece.open, piece.end_s
        if start is not None:
            busy.settle(start)
        del piece, trace, timing
        if start is None:  # the step's last slice
            break
    if summed.steps != 1:
        return PartResult(0, unfit=True)
    summed.add_calls(carry.calls())
    lo, hi = step.span_s(job.scan.origin_us)
    timing = summed.result()
    timing = dataclasses.replace(timing, modules=settle_calls(root_forward_floor(timing.modules), tuple(sites)),
                                 device_busy_s=busy.result() if timing.device_busy_s is not None else None)
    result = dict(steps=1, spans_s=hi - lo, timing=timing, runs=summed.runs,
                  device=device, slices=n)
    if job.op_names is not None:
        return PartResult(**result)
    step_costs = part_costs(costs, [0] * len(costs), 1) if shaped else None
    return PartResult(**result, compiled=compiled, shaped=shaped, costs=step_costs, shapes=shapes, sites=tuple(sites))


def split_point(path: str, at: int) -> Optional[int]:
    """A byte offset near ``at`` where an event of the plain file ``path`` begins, just after
    the comma ending the one before (where :func:`scan_range` can split the file between two
    processes); ``None`` when none is found in the 4 MB after ``at`` or the file is gzip. A
    candidate ``},`` counts when the events after it decode (one inside a string does not)."""
    with open(path, "rb") as f:
        if f.read(2) == b"\x1f\x8b":
            return None
        f.seek(at)
        window = f.read(4 << 20)
    pos = 0
    for _ in range(32):
        c = window.find(b"},", pos)
        if c < 0:
            return None
        ends = []
        d = c + 2
        while len(ends) < 3:
            d = window.find(b"},", d)
            if d < 0:
                break
            ends.append(d)
            d += 2
        for e in reversed(ends):
            try:
                if _SCAN_DECODER.decode(b"[" + window[c + 2:e + 1] + b"]"):
                    return at + c + 2
            except ValueError:
                continue
        pos = c + 2
    return None
