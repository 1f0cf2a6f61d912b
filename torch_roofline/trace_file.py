"""A roofline report from ONE saved torch.profiler / Kineto trace (GPU traces included): the
reading behind :func:`torch_roofline.offline.from_trace`, which also takes a folder of traces
(:mod:`torch_roofline.traceset`, which reads each rank's file here).

Where the work and the roofs come from: :mod:`torch_roofline.offline`.
"""

from __future__ import annotations

import dataclasses
import os
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple, Union

import torch
from torch import nn

from torch_roofline._gc import paused_gc
from torch_roofline._lazy_dynamo import prepare_meta_replays
from torch_roofline._progress import BIG_TRACE_BYTES, StageLine
from torch_roofline.analysis import AnalysisOptions
from torch_roofline.records import StepRecords
from torch_roofline.report.build import analyse_on
from torch_roofline.count.replay import count_without_compute
from torch_roofline.count.result import CountResult
from torch_roofline.records import OpCost
from torch_roofline.records.dtypes import dtype_of
from torch_roofline.report import RooflineReport
from torch_roofline.timing.attribution import TraceTiming, attribute
from torch_roofline.timing.compiled import CompiledCode, compiled_kernels_note, compiled_regions_note, scan_compiled
from torch_roofline.timing.counters import KernelCounters, kernel_counters
from torch_roofline.timing.inductor import module_tree_beside
from torch_roofline.timing.kernel_sites import KernelSite, kernel_sites_note, place_kernels
from torch_roofline.timing.merge import ShapeSum, StepCosts, TimingSum, add_compiled
from torch_roofline.timing import parts
from torch_roofline.timing.parts import part_workers, read_parts, scan_while
from torch_roofline.timing.segments import TraceScan, plan_parts
from torch_roofline.timing.shapes import has_recorded_shapes, per_step, replay_cache, shape_costs
from torch_roofline.timing.steps import split_steps, within
from torch_roofline.timing.trace import DeviceProperties, Trace, load_trace


__all__ = ["read_trace", "trace_device", "counter_costs", "CounterComparison", "compare_counters",
           "PARTS_BYTES", "PARTS_MEMORY_BYTES"]



@dataclass(frozen=True)
class CounterComparison:
    """Analytic and hardware-counter FLOPs of one (module, phase, op), side by side.

    Attributes:
        module: module name (``""`` root).
        phase: ``"forward"``, ``"backward"`` or ``"optimizer"``.
        op: aten op, dotted.
        analytic_flops: FLOPs from the counter's formulas (2 per MAC).
        counter_flops: FLOPs from SASS instruction counters (add + mul + 2 x fma, all precisions).
        kernels: kernels whose counters were summed.
    """

    module: str
    phase: str
    op: str
    analytic_flops: int
    counter_flops: int
    kernels: int

    @property
    def ratio(self) -> Optional[float]:
        """counter / analytic; ``None`` when the analytic count is 0. Tensor-core work is
        invisible to the SASS FP counters, so a ratio far below 1 on a GEMM is expected."""
        return self.counter_flops / self.analytic_flops if self.analytic_flops else None


def trace_device(trace: Trace, roof: Any = None) -> Any:
    """The :class:`~torch_roofline.devices.Device` for a trace: ``roof`` when given, else the
    catalog row of the GPU named in the trace header (SM count and memory disambiguate), else
    this machine's CPU (for CPU traces)."""
    from torch_roofline.devices.placement import resolve_device

    if roof is not None:
        return resolve_device(roof, None)
    return _device_of(trace.device())


def _device_of(props: Optional[DeviceProperties]) -> Any:
    """The catalog Device of a trace's GPU (``Trace.device()``), or this CPU's for ``None``."""
    from torch_roofline import devices

    if props is None:
        return devices.detect(torch.device("cpu"))
    try:
        return devices.get(props.name, multi_processor_count=props.num_sms, total_memory=props.total_memory_bytes)
    except KeyError as exc:
        raise KeyError(
            f"from_trace: the trace's GPU {props.name!r} is not in the catalog ({exc}); pass roof= a catalog "
            "name, a roofs file or a Device"
        ) from None


def counter_costs(counters: Iterable[KernelCounters]) -> Tuple[OpCost, ...]:
    """One :class:`OpCost` per kernel with counters: FLOPs measured, bytes from DRAM counters.

    The dtype is the precision holding most of the kernel's FLOPs. Bytes are 0 when the trace
    has no DRAM counters (then the roofline time is the compute time alone, a lower bound).
    """
    ops = []
    for i, k in enumerate(counters):
        total = sum(k.flops.values())
        precision = max(k.flops, key=lambda p: k.flops[p]) if total else "fp32"
        ops.append(OpCost(
            op=k.op or "unattributed", module=k.module, scope=k.scope or ("",), phase=k.phase,
            flops=int(total), macs=0, bytes_read=int(k.dram_bytes_read or 0),
            bytes_written=int(k.dram_bytes_written or 0), compulsory_bytes_read=int(k.dram_bytes_read or 0),
            compulsory_bytes_written=int(k.dram_bytes_written or 0), dtype=dtype_of(precision).storage,
            unit="vector", counted=k.op is not None, index=i,
        ))
    return tuple(ops)


def _has_module_ranges(timing: TraceTiming) -> bool:
    return any(m.name for m in timing.modules)


def compare_counters(trace: Union[str, Trace], costs: CountResult, *, steps: int = 1) -> List[CounterComparison]:
    """Analytic vs hardware-counter FLOPs per (module, phase, op) for a trace with counters.

    ``costs`` counts one step; the trace holds ``steps`` steps (counter FLOPs are divided by
    it). Without module ranges in the trace, both sides are compared on the root module.
    """
    trace = trace if isinstance(trace, Trace) else load_trace(trace)
    kcs = kernel_counters(trace, op_names={o.op for o in costs.ops})
    on_root = not any(k.module for k in kcs)
    analytic: Dict[Tuple[str, str, str], int] = defaultdict(int)
    for o in costs.ops:
        analytic[("" if on_root else o.module, o.phase, o.op)] += o.flops
    measured: Dict[Tuple[str, str, str], List[int]] = defaultdict(lambda: [0, 0])
    for k in kcs:
        if k.op is None:
            continue
        m = measured[(k.module, k.phase, k.op)]
        m[0] += sum(k.flops.values())
        m[1] += 1
    return [CounterComparison(mod, ph, op, analytic.get((mod, ph, op), 0), f // steps, n // steps)
            for (mod, ph, op), (f, n) in sorted(measured.items())]


#: Share of op calls that may differ between a model's count and a trace before the two are
#: taken for different models (a loss outside the model, a data-dependent branch).
MISMATCH_TOLERANCE = 0.10


def _check_model_matches(costs: Sequence[OpCost], timing: TraceTiming, steps: int, model_name: str) -> None:
    """Refuse to join a model's count with a trace of another model (or other inputs).

    The count holds one step's op calls per (module, phase, op); the trace ``steps`` steps'
    worth. When more than :data:`MISMATCH_TOLERANCE` of the calls on either side have no
    counterpart on the other, every efficiency would divide one model's time by another's
    work: a ValueError says so, with examples, instead of a confident report.
    """
    counted: Dict[Tuple[str, str, str], int] = defaultdict(int)
    for c in costs:
        counted[(c.module, c.phase, c.op)] += 1
    timed: Dict[Tuple[str, str, str], float] = defaultdict(float)
    for t in timing.ops:
        timed[(t.module, t.phase, t.op)] += t.calls / max(steps, 1)
    keys = set(counted) | set(timed)
    missing = sum(abs(counted.get(k, 0) - timed.get(k, 0.0)) for k in keys)
    total = sum(counted.values()) + sum(timed.values())
    if total and missing / total > MISMATCH_TOLERANCE:
        worst = sorted(keys, key=lambda k: -abs(counted.get(k, 0) - timed.get(k, 0.0)))[:3]
        examples = "; ".join(f"{op} in {module or 'the root'!r} ({phase}): counted {counted.get((module, phase, op), 0)}, "
                             f"timed {timed.get((module, phase, op), 0.0):g} per step" for module, phase, op in worst)
        raise ValueError(
            f"from_trace(model={model_name}): the trace's ops do not match the model's count ({missing / total:.0%} "
            f"of the op calls have no counterpart; e.g. {examples}). The trace was recorded with another model, other "
            "inputs, another backward=/loss_fn=, or holds another number of steps (steps=); pass the model and "
            "inputs it was recorded with, or drop model= to count the trace's own recorded shapes"
        )


def read_trace(path: Union[str, "os.PathLike[str]", Trace], model: Optional[nn.Module], inputs: Any, *, roof: Any,
               backward: bool, loss_fn: Optional[Callable[[Any], torch.Tensor]], memory_model: str,
               steps: Optional[int], counted: Optional[CountResult]) -> RooflineReport:
    """The report of one trace file (or loaded :class:`Trace`): :func:`~torch_roofline.offline.from_trace`
    without its folder case; the arguments are that function's."""
    with paused_gc(), _stages(path) as line:  # bulk post-processing, no reference cycles: see torch_roofline._gc
        return _from_trace(path, model, inputs, roof=roof, backward=backward, loss_fn=loss_fn,
                           memory_model=memory_model, steps=steps, counted=counted, line=line)



def _stages(path: Any) -> StageLine:
    """A progress line for a big trace file on a terminal (silent otherwise)."""
    size = os.path.getsize(path) if isinstance(path, (str, os.PathLike)) and os.path.isfile(path) else 0
    label = f"from_trace {os.path.basename(os.fspath(path))} ({size / 1e6:.0f} MB)" if size else "from_trace"
    return StageLine(label, enabled=None if size >= BIG_TRACE_BYTES else False)



def _from_trace(path: Any, model: Optional[nn.Module], inputs: Any, *, roof: Any, backward: bool,
                loss_fn: Optional[Callable[[Any], torch.Tensor]], memory_model: str, steps: Optional[int],
                counted: Optional[CountResult], line: StageLine) -> RooflineReport:
    if model is not None and inputs is None:
        raise ValueError("from_trace(model=...): pass inputs= too (the shapes the traced step ran with)")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ValueError(f"from_trace(steps={steps!r}): expected a positive number of steps, e.g. steps=2")
    if steps is None and not isinstance(path, Trace) and _file_bytes(path) >= PARTS_BYTES:
        line.stage("finding the steps")
        # meanwhile, what the replays of recorded calls need (torch's Python meta kernels)
        scan = scan_while(os.fspath(path), prepare_meta_replays if model is None else _nothing)
        workers = part_workers()
        plan = plan_parts(scan, at_least=workers) if scan is not None and scan.markers else ()
        # Parts pay when processes share them, or when a whole read would not fit (~10 bytes of
        # memory per byte of file), or to read a long step in slices (as fast, in less memory);
        # else one process reads faster whole.
        if (len(plan) >= 2 and workers >= 2) or (plan and scan.bytes >= PARTS_MEMORY_BYTES) or (
                len(plan) == 1 and scan.bytes > 2 * parts.SLICE_BYTES):
            report = _from_parts(scan, plan, model, inputs, roof=roof, backward=backward, loss_fn=loss_fn,
                                 memory_model=memory_model, counted=counted, line=line)
            if report is not None:
                return report
    line.stage("reading the trace")
    trace = path if isinstance(path, Trace) else load_trace(path)
    line.stage("finding the steps")
    notes: List[str] = []
    split = split_steps(trace)
    if steps is None:
        if split.spans:
            trace = within(trace, split.spans)
        steps = split.steps
        notes.append(f"steps: {split.how}")
    else:
        notes.append(f"steps: {steps}, as given (steps=)")
    modules: Tuple = ()
    if model is not None:
        if counted is None:
            line.stage("counting the model")
            counted = count_without_compute(model, inputs, backward=backward, loss_fn=loss_fn,
                                            memory_model=memory_model)
        costs, modules = counted.ops, counted.modules
        line.stage("attributing ops to modules")
        timing = attribute(trace, op_names={o.op for o in costs})
        if not _has_module_ranges(timing):
            costs = tuple(dataclasses.replace(o, module="", scope=("",)) for o in costs)
            notes.append("the trace has no torch_roofline module ranges: every op is joined on the root module")
        _check_model_matches(costs, timing, steps or timing.steps, type(model).__name__)
    else:
        line.stage("attributing ops to modules")
        timing = attribute(trace)
        compiled = scan_compiled(trace)  # one pass for the notes on compiled code
        if timing.ops and has_recorded_shapes(trace):
            line.stage("counting the recorded calls")
            shaped = shape_costs(trace, timing)
            # kernel rows under the modules whose ops they fused, where the model's tree was saved
            timing, shaped, sites = place_kernels(timing, shaped, module_tree_beside(trace.source)
                                                  if shaped.kernels else None)
            n_steps = max(steps or timing.steps, 1)
            step_of = [row.step for row in timing.ops] if n_steps == timing.steps else None
            costs, step_notes = per_step(shaped.costs, n_steps, step_of)
            notes.append("FLOPs and bytes from the trace's recorded shapes (record_shapes=True), each op "
                         "replayed on meta tensors; compulsory bytes per op (the trace records no tensor identities)")
            notes.extend(shaped.summary() + step_notes)
            notes.extend(n for n in (compiled_kernels_note(compiled), kernel_sites_note(sites)) if n is not None)
        else:
            has_counters = any(e.kind == "cuda_profiler_range" for e in trace.events)
            kcs = kernel_counters(trace, op_names={o.op for o in timing.ops}) if has_counters else ()
            costs = counter_costs(kcs)
            if costs:
                notes.append("FLOPs from CUPTI SASS counters (CUDA-core instructions; tensor-core work is not counted)")
            else:
                notes.append("no model, no recorded shapes and no hardware counters: timing only, every op uncounted")
        regions_note = compiled_regions_note(compiled, steps or timing.steps)
        if regions_note is not None:
            notes.append(regions_note)
    if split.spans and not timing.on_device and steps == split.steps:
        spans_s: Optional[float] = sum(hi - lo for lo, hi in split.spans)  # the steps' spans, not the gaps
    else:
        spans_s = None
    props = None if roof is not None else trace.device()
    line.stage("placing on the roofline")
    return _report(costs, timing, modules, notes, roof=roof, props=props, steps=steps or timing.steps,
                   spans_s=spans_s, memory_model=memory_model, model=model)


#: Trace files at least this big (bytes of JSON, decompressed) of two ``ProfilerStep#N`` steps
#: or more are read a few steps at a time (:mod:`torch_roofline.timing.segments`) by parallel
#: processes, where this machine has two CPUs or more: memory then grows with one part, not
#: with the file.
PARTS_BYTES = 16 << 20
#: ... and are always read in parts from this size on, however few their parts (a whole read
#: holds about ten bytes of memory per byte of file). A trace of one ``ProfilerStep#N`` step of
#: more than twice :data:`~torch_roofline.timing.parts.SLICE_BYTES` is read in slices of that
#: step, one after the other (:func:`~torch_roofline.timing.slices.slice_trace`).
PARTS_MEMORY_BYTES = 256 << 20


def _nothing() -> None:
    return None


def _file_bytes(path: Any) -> int:
    """Bytes of JSON in a trace file: its size, or a gzip file's decompressed size (from its
    trailer, modulo 4 GiB: taken as at least the compressed size); 0 when it is no file."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            if f.read(2) != b"\x1f\x8b":
                return size
            f.seek(-4, os.SEEK_END)
            return max(int.from_bytes(f.read(4), "little"), size)
    except (OSError, TypeError, ValueError):
        return 0


def _from_parts(scan: TraceScan, plan: Sequence[Sequence[Any]], model: Optional[nn.Module], inputs: Any, *, roof: Any, backward: bool,
                loss_fn: Optional[Callable[[Any], torch.Tensor]], memory_model: str,
                counted: Optional[CountResult], line: StageLine) -> Optional[RooflineReport]:
    """:func:`from_trace` of a big trace of many steps, read a few steps at a time
    (:mod:`~torch_roofline.timing.segments`, :mod:`~torch_roofline.timing.merge`): the same
    report as a whole read, in memory that grows with one part. ``None`` when a part does not
    fit that reading (its steps are not the ProfilerStep markers the attribution sees, parts
    with and without recorded shapes, hardware counters): the caller then reads it whole."""
    modules: Tuple = ()
    op_names = None
    if model is not None:
        if counted is None:
            line.stage("counting the model")
            counted = count_without_compute(model, inputs, backward=backward, loss_fn=loss_fn,
                                            memory_model=memory_model)
        modules, op_names = counted.modules, {o.op for o in counted.ops}
    timings, step_costs, shapes = TimingSum(), StepCosts(), ShapeSum()
    compiled: Optional[CompiledCode] = None
    shaped_parts: Set[bool] = set()
    props: Optional[DeviceProperties] = None
    spans_s = 0.0
    slices = sliced = 0
    sites: Dict[KernelSite, None] = {}
    line.stage(f"reading {len(plan)} parts of a few steps each")
    for k, part in enumerate(read_parts(scan, plan, op_names=op_names, cache=replay_cache())):
        line.stage(f"read {k + 1} of {len(plan)} parts of a few steps each")
        if part.unfit:
            return None
        if not part.steps or part.timing is None:
            continue
        timings.add(part.timing)
        timings.runs.update(part.runs)
        slices, sliced = slices + part.slices, sliced + bool(part.slices)
        spans_s += part.spans_s
        if props is None and roof is None:
            props = part.device
        if model is not None:
            continue
        compiled = add_compiled(compiled, part.compiled) if part.compiled is not None else compiled
        shaped_parts.add(part.shaped)
        if len(shaped_parts) > 1:
            return None
        if part.costs is not None:
            step_costs.add(part.costs)
        if part.shapes is not None:
            shapes.merge(part.shapes)
        sites.update(dict.fromkeys(part.sites))
    if timings.steps == 0:
        return None
    timing = timings.result()
    in_slices = (f"; {sliced} long step(s) read in {slices} slices of ~{parts.SLICE_BYTES / 1e6:.3g} MB, never cut "
                 "inside an op call: a module range or engine event open at a cut adds its time in each slice and "
                 "counts as one call") if sliced else ""
    notes: List[str] = [f"steps: {timing.steps} ProfilerStep marker(s); work outside them is left out",
                        f"read a few steps at a time ({len(plan)} part(s) of the {scan.bytes / 1e6:.0f} MB trace"
                        f"{in_slices}): op rows are summed per (module, phase, op)"]
    if model is not None:
        costs: Sequence[OpCost] = counted.ops
        if not _has_module_ranges(timing):
            costs = tuple(dataclasses.replace(o, module="", scope=("",)) for o in costs)
            notes.append("the trace has no torch_roofline module ranges: every op is joined on the root module")
        _check_model_matches(costs, timing, timing.steps, type(model).__name__)
    elif True in shaped_parts:
        costs, step_notes = step_costs.result()
        notes.append("FLOPs and bytes from the trace's recorded shapes (record_shapes=True), each op "
                     "replayed on meta tensors; compulsory bytes per op (the trace records no tensor identities)")
        notes.extend(shapes.summary() + step_notes)
    else:
        costs = ()
        notes.append("no model, no recorded shapes and no hardware counters: timing only, every op uncounted")
    if compiled is not None:
        kernels_note = compiled_kernels_note(compiled) if True in shaped_parts else None
        regions_note = compiled_regions_note(compiled, timing.steps)
        notes.extend(n for n in (kernels_note, kernel_sites_note(tuple(sites)), regions_note) if n is not None)
    line.stage("placing on the roofline")
    module_calls = None if _has_module_ranges(timing) or costs else {
        key: round(n / timing.steps) for key, n in timings.runs.items()}
    return _report(costs, timing, modules, notes, roof=roof, props=props, steps=timing.steps,
                   spans_s=None if timing.on_device else spans_s, memory_model=memory_model, model=model,
                   module_calls=module_calls)


def _report(costs: Sequence[OpCost], timing: TraceTiming, modules: Sequence[Any], notes: List[str], *, roof: Any,
            props: Optional[DeviceProperties], steps: int, spans_s: Optional[float], memory_model: str,
            model: Optional[nn.Module], module_calls: Optional[Mapping[Tuple[str, str], int]] = None
            ) -> RooflineReport:
    """Place the costs on the roofs and analyse them with the timing (both read paths).

    ``props``: the trace's GPU (``None``: a CPU trace), used when ``roof`` is ``None``;
    ``spans_s``: the steps' summed spans on a CPU trace cut to its steps (the step time),
    else ``None`` (the timing's step time or device busy time)."""
    if roof is not None:
        from torch_roofline.devices.placement import resolve_device

        dev = resolve_device(roof, None)
    else:
        dev = _device_of(props)
        if props is None:
            notes.append(f"CPU trace: roofs of this machine's CPU ({dev.name}) are used")
    step_time = timing.device_busy_s if timing.on_device and timing.device_busy_s else timing.step_time_s
    if spans_s is not None:
        step_time = spans_s
    # Without our ranges the module rows would only hold the host's wall span: let the analysis
    # derive module times from the op times instead.
    module_timings = timing.modules if _has_module_ranges(timing) else ()
    step = StepRecords(costs, timing.ops, module_timings, modules, steps=steps, step_time_s=step_time,
                       peak_memory_bytes=timing.peak_memory_bytes, module_calls=module_calls, predicted=False,
                       model=type(model).__name__ if model is not None else "trace")
    report = analyse_on(dev, step, AnalysisOptions(memory_model=memory_model))
    if timing.unattributed:
        notes.append(f"{len(timing.unattributed)} device activities reached no op (unattributed, "
                     f"{timing.unattributed_time_s * 1e3:.3f} ms)")
    return report.with_notes(*notes)
