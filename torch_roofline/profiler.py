"""RooflineProfiler: time real steps, count what they ran, place every module on the roofline.

One record, two uses. The user's steps run under torch.profiler with shapes recorded
(``record_shapes=True``) and a range around every module call
(:class:`~torch_roofline.timing.ranges.ModuleRanges`). After the block, the profiler's trace
is read back by the same reader and attribution that read saved GPU traces
(:mod:`torch_roofline.timing`): each recorded op call is a row with its time, module and
phase. The *same* rows are counted: each call is rebuilt from its recorded shapes, dtypes,
strides and scalars on meta tensors and costed by the counter's formulas and traffic model,
once per distinct signature (:mod:`torch_roofline.timing.shapes`); the profiler's tensor
identities make the compulsory bytes exact (:mod:`torch_roofline.timing.identity`).

So whatever code ran in the profiled steps is counted, as it ran: a loss outside the model,
submodules called directly, the model called N times, several models, micro-batches,
recomputed checkpoints, ``torch.no_grad`` / ``inference_mode``, keyword arguments. Nothing
runs twice and nothing is replayed with the user's tensors. The rows are joined to the
device's roofs and analysed by :func:`torch_roofline.report.build.analyse_on`.

``torch.compile``: pass what ``torch.compile`` returned (or a module after ``module.compile()``).
The compiled call gets one module range and its submodules none inside it, and no hook is
added to it, so the profiler does not make it compile again (wrapping code Dynamo traced
changes what its guards check); its submodules called from eager code keep their ranges. On
the CPU each fused Inductor kernel is an op row of its own, timed, on the module whose range
called it. Its bytes (its arguments' sizes) and FLOPs (the ops it
fused) come from its compiled graph's generated code (:mod:`torch_roofline.timing.inductor`:
conventions, and why a backward kernel's FLOPs are unknown, which leaves it an uncounted row
with its bytes); the matrix work Inductor hands to extern ``mm`` / ``addmm`` calls is counted
as recorded. Inductor records a kernel's event when the model is compiled with
``torch._inductor.config.cpp.enable_kernel_profile = True`` and which ops it fused with
``torch._inductor.config.trace.provenance_tracking_level = 1``: the profiler sets both while
its block runs when the model has compiled parts (``recording_compiled_kernels``), so a model
that compiles inside the block (its first call) records them; a model compiled before keeps
what it was compiled with (set both before its first call), and without kernel events the
notes say so and the kernels' time is the calling module's self time. The notes list the compiled frames that ran (graph breaks,
recompilations): :mod:`torch_roofline.timing.compiled`.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any, Callable, Dict, List, Mapping, Optional, Set, Tuple, Union

import torch
from torch import nn

from torch_roofline._depth import hooked_call_headroom, named_modules
from torch_roofline._gc import paused_gc
from torch_roofline.analysis import AnalysisOptions
from torch_roofline.records import StepRecords
from torch_roofline.report.build import analyse_on
from torch_roofline.count import check_devices, model_device
from torch_roofline.count.mode import module_infos
from torch_roofline.devices.placement import conv_tf32, device_info, device_roofs, place, resolve_device
from torch_roofline.records import OUTSIDE, ModuleInfo, check_memory_model
from torch_roofline.report import RooflineReport
from torch_roofline.timing.attribution import TraceTiming, attribute
from torch_roofline.timing.compiled import (compiled_kernels_note, compiled_regions_note,
                                           recording_compiled_kernels, scan_compiled)
from torch_roofline.timing.faults import NOTE_THRESHOLD_FAULTS, page_fault_note
from torch_roofline.timing.identity import Identities
from torch_roofline.timing.stack_traces import ModuleTree, plain_name
from torch_roofline.timing.kernel_sites import IN_COMPILED_CODE, kernel_sites_note, place_kernels
from torch_roofline.timing.ranges import (LABELS_KEY, PHASE_PREFIX, RANGE_PREFIX, Models, ModuleRanges,
                                          labels_metadata, original_module, parse_range_name)
from torch_roofline.timing.session import ProfileSession
from torch_roofline.timing.shapes import ShapeCosts, per_step, shape_costs

__all__ = ["RooflineProfiler", "schedule", "device_roofs", "device_info", "conv_tf32", "place"]

_ACTIVE = threading.local()


def schedule(*, wait: int = 0, warmup: int = 1, active: int = 1, repeat: int = 1, skip_first: int = 0) -> Callable[[int], Any]:
    """A torch.profiler-style step -> action function (``torch.profiler.schedule``).

    ``wait`` steps are ignored, ``warmup`` steps run the profiler without keeping results
    (first-call costs: allocator growth, oneDNN/cuDNN plan selection), ``active`` steps are
    recorded and their times averaged; ``repeat`` cycles (0 = until the block ends).
    """
    return torch.profiler.schedule(wait=wait, warmup=warmup, active=active, repeat=repeat, skip_first=skip_first)


class RooflineProfiler:
    """Measure steps of a model, count what they ran, and place each module and op on the
    device's roofline.

    Args:
        model: the module tree the report attributes to: one ``nn.Module``; several, as a
            mapping ``{"generator": G, "discriminator": D}`` or a list (named by class); or
            ``None`` (op rows and top-level rows only). Any code may run in the block: ops
            outside every module of ``model`` (a loss, data movement) are counted in the row
            ``"(outside modules)"``; optimizer steps in the ``optimizer`` phase.
        device: the torch device the step runs on; default: the device of the model's
            parameters (CPU without a model).
        roof: which roofs to use: ``"auto"`` (default), ``"datasheet"``, ``"measured"``, a
            catalog name (``"h100-sxm"``), a roofs file, or a ``Device``.
        schedule: ``None`` records the whole block (one-shot); or a step -> action function
            (:func:`schedule`, ``torch.profiler.schedule``) and call :meth:`step` once per step.
        memory_model: ``"op"`` or ``"compulsory"`` bytes for the roofline.
        hardware_counters: on CUDA, also record CUPTI FLOP counters per kernel.
        profile_memory: record allocator events: the report's peak memory, exact compulsory
            bytes (tensor identities), and ops the meta device cannot rebuild (data-dependent
            outputs) counted from their allocations. Off: compulsory bytes per op, a note.
        export_trace: also keep the profiler's trace here (``.json`` or ``.json.gz``). For a
            model with ``torch.compile``'d parts, its compiled graphs are saved beside it
            (``<trace>.inductor.json.gz``), which ``from_trace`` reads to cost the fused kernels.
        record_shapes: record each op's shapes (default; the count is made from them). Off:
            a timing-only report, every op listed as uncounted.
        formulas: per-call FLOP formulas, as for :func:`torch_roofline.count`.
        overhead_threshold_s: the overhead bound's threshold (see :mod:`torch_roofline.analysis`).
        backward, loss_fn: ignored (kept for old callers): what ran is counted.

    Example::

        model, x = torchvision.models.resnet18(), torch.randn(8, 3, 224, 224)
        with RooflineProfiler(model) as prof:
            loss = F.cross_entropy(model(x), y)
            loss.backward()
        print(prof.report())

    Overhead: torch.profiler's own cost per recorded op (a few µs with shapes on this
    project's CPU), plus about a microsecond per module call for its range; counting happens
    in :meth:`report`, after the block, and scales with the distinct op signatures.
    """

    def __init__(
        self,
        model: Models = None,
        *,
        device: Union[str, torch.device, None] = None,
        roof: Any = "auto",
        schedule: Optional[Callable[[int], Any]] = None,
        backward: Optional[bool] = None,
        loss_fn: Optional[Callable[[Any], torch.Tensor]] = None,
        memory_model: str = "op",
        hardware_counters: bool = False,
        profile_memory: bool = True,
        export_trace: Optional[str] = None,
        formulas: Optional[Mapping[Any, Callable[..., Any]]] = None,
        overhead_threshold_s: Optional[float] = None,
        record_shapes: bool = True,
    ) -> None:
        if isinstance(model, torch.jit.RecursiveScriptModule):
            raise TypeError(
                "RooflineProfiler(model=...): a torch.jit.script'ed module has no Python forward to put a module "
                "range around; profile the eager module you scripted, or pass model=None to count and time its "
                "ops without module attribution"
            )
        if model is not None and not isinstance(model, (nn.Module, Mapping, list, tuple)):
            raise TypeError(
                f"RooflineProfiler(model=...): expected an nn.Module, a mapping of names to modules, a list of "
                f"modules or None, got {type(model).__name__}"
            )
        check_memory_model(memory_model, "RooflineProfiler")
        if device is not None:
            try:
                torch_device = torch.device(device)
            except (RuntimeError, TypeError) as exc:
                raise ValueError(f"RooflineProfiler(device={device!r}): not a torch device ({exc}); e.g. 'cpu' or 'cuda'") from None
            if torch_device.type == "cuda" and not torch.cuda.is_available():
                raise ValueError(
                    f"RooflineProfiler(device={device!r}): no CUDA GPU is available here "
                    "(torch.cuda.is_available() is False); profile on 'cpu', or read a trace recorded on a GPU "
                    "with torch_roofline.from_trace"
                )
        self._ranges = ModuleRanges(model)
        self.model = self._ranges.tree
        self.torch_device = torch.device(device) if device is not None else _model_device(self.model)
        self.roof = roof
        #: how :meth:`report` analyses the window (memory model, overhead rule)
        self.options = AnalysisOptions(memory_model=memory_model) if overhead_threshold_s is None else AnalysisOptions(
            memory_model=memory_model, overhead_threshold_s=overhead_threshold_s)
        self.formulas = formulas
        self.profile_memory = profile_memory
        self.record_shapes = record_shapes
        self._session = ProfileSession(
            schedule=schedule,
            profile_memory=profile_memory,
            hardware_counters=hardware_counters,
            export_path=export_trace,
            record_shapes=record_shapes,
            metadata={LABELS_KEY: labels_metadata(self._ranges.labels)} if self._ranges.labels else None,
            keep_results=profile_memory and record_shapes,
            capture_overload_names=True,
        )
        self._handles: List[Any] = []
        self._headroom: Any = None
        self._inductor: Any = None  # recording_compiled_kernels() while a compiled model is profiled
        self._device_obj: Any = None
        self._report: Optional[RooflineReport] = None
        self._costs: Optional[ShapeCosts] = None
        self._timing: Optional[TraceTiming] = None

    # ---- context ----------------------------------------------------------------------
    def __enter__(self) -> "RooflineProfiler":
        if getattr(_ACTIVE, "on", False):
            raise RuntimeError("RooflineProfiler is already running in this thread: profilers cannot nest")
        _ACTIVE.on = True
        try:
            self._report = self._costs = self._timing = None
            self._device_obj = None
            self._check_first_call()
            # module ranges add a frame per module level: keep the plain forward's depth limit
            self._headroom = hooked_call_headroom()
            self._headroom.__enter__()
            if self._ranges.compiled:  # compiles inside the block record their kernels
                self._inductor = recording_compiled_kernels()
                self._inductor.__enter__()
            self._ranges.__enter__()
            self._session.__enter__()
        except BaseException:
            self._cleanup(None, None, None)
            raise
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self._cleanup(exc_type, exc, tb)

    def _cleanup(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            self._session.__exit__(exc_type, exc, tb)
            if exc_type is None:
                self._save_compiled_beside()
        finally:
            self._ranges.__exit__(exc_type, exc, tb)
            self._remove_hooks()
            if self._headroom is not None:
                self._headroom.__exit__(None, None, None)
                self._headroom = None
            if self._inductor is not None:
                inductor, self._inductor = self._inductor, None
                inductor.__exit__(None, None, None)
            _ACTIVE.on = False

    def _save_compiled_beside(self) -> None:
        """Beside each exported trace of a model with compiled parts, its compiled graphs
        (``<trace>.inductor.json.gz``: :func:`~torch_roofline.timing.inductor.save_compiled_graphs`),
        so ``from_trace`` in another process costs and places the fused kernels as the live
        report does."""
        if not self._session.exported or not self._ranges.compiled:
            return
        from torch_roofline.timing.inductor import SIDECAR_SUFFIX, save_compiled_graphs

        for path in self._session.exported:
            save_compiled_graphs(path + SIDECAR_SUFFIX, self._ranges.tree)

    def _remove_hooks(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _check_first_call(self) -> None:
        """Check the devices of the first call of each top-level model, before it runs (a clear
        error instead of torch's from deep inside); the hooks remove themselves after it."""
        if self.model is None:
            return
        tops = [self.model] if self._ranges.root_type != "step" else list(self.model.children())

        def check(module: nn.Module, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> None:
            self._remove_hooks()
            meta = model_device(module) == torch.device("meta")
            check_devices(module, (tuple(args), dict(kwargs)), caller="RooflineProfiler", hint=(
                "; a model on 'meta' runs no arithmetic and cannot be timed: use torch_roofline.predict"
                if meta else ""))

        compiled = {id(m) for _, m in self._ranges.compiled}
        for top in tops:
            if self._ranges.compiled_root is not None and top is self.model or id(top) in compiled:
                continue  # a hook on compiled code would make it compile again (see timing.ranges)
            if not isinstance(top, torch.jit.ScriptModule):
                self._handles.append(top.register_forward_pre_hook(check, with_kwargs=True))

    def step(self) -> None:
        """Mark the end of one training/inference step (drives the schedule)."""
        self._session.step()

    # ---- results ----------------------------------------------------------------------
    @property
    def trace(self) -> Any:
        """The recorded trace (:class:`~torch_roofline.timing.trace.Trace`) of the last window."""
        return self._session.trace

    @property
    def timing(self) -> TraceTiming:
        """The measured times (per op and module, summed over the active steps); computed once."""
        if self._timing is None:
            self._timing = attribute(self._session.trace, outside=self.model is not None)
        return self._timing

    def costs(self) -> ShapeCosts:
        """The counted calls of the last window: one cost per timed op row (all its steps),
        rebuilt from the recorded shapes (:func:`~torch_roofline.timing.shapes.shape_costs`)."""
        if self._costs is None:
            timing = self.timing
            first, _ = self._session.window()
            if not timing.ops and first is not None and self._session.steps_taken < first + 1:
                raise RuntimeError(
                    f"RooflineProfiler: the schedule recorded no step: {self._session.steps_taken} step(s) ran "
                    f"(prof.step() calls), and it records from step {first + 1} on (its wait and warmup steps "
                    "come first); run more steps inside the block, or use a schedule with fewer wait/warmup steps"
                )
            if not timing.ops:
                raise RuntimeError(
                    "RooflineProfiler: no op ran inside the profiled block (or the schedule's active steps), so there "
                    "is nothing to count; run the step (e.g. model(inputs)) inside `with prof:` and call prof.step() "
                    "after each step when a schedule is set (a forward that returns a generator runs nothing "
                    "until it is iterated)"
                )
            results = self._session.results[-1] if self._session.results else None
            identities = Identities(results, self._session.trace) if results is not None else None
            params = list(self.model.parameters()) if self.model is not None else ()
            self._costs = shape_costs(self._session.trace, timing, identities=identities, formulas=self.formulas,
                                      parameters=params)
        return self._costs

    @property
    def memory_model(self) -> str:
        """``"op"`` or ``"compulsory"``: the bytes the report uses (``options.memory_model``)."""
        return self.options.memory_model

    def device(self) -> Any:
        """The :class:`~torch_roofline.devices.Device` whose roofs the report uses."""
        if self._device_obj is None:
            self._device_obj = resolve_device(self.roof, self.torch_device)
        return self._device_obj

    def report(self) -> RooflineReport:
        """The :class:`~torch_roofline.report.RooflineReport` of the profiled step(s)."""
        if self._report is not None:
            return self._report
        if getattr(_ACTIVE, "on", False) and self._ranges.active:
            raise RuntimeError("RooflineProfiler.report(): leave the `with` block first")
        with paused_gc():  # bulk post-processing, no reference cycles: see torch_roofline._gc
            self._report = self._build_report()
        return self._report

    def _build_report(self) -> RooflineReport:
        timing = self.timing
        op_timings, module_timings, sites = timing.ops, timing.modules, ()
        if not self.record_shapes:
            costs, notes = (), ["record_shapes=False: the trace has no shapes to count; a timing-only report"]
            shaped = None
        else:
            shaped = self.costs()
            tree = ModuleTree.of(named_modules(self.model)) if self.model is not None and shaped.kernels else None
            placed, shaped, sites = place_kernels(timing, shaped, tree)
            op_timings, module_timings = placed.ops, placed.modules
            costs, step_notes = per_step(shaped.costs, timing.steps, [row.step for row in op_timings])
            notes = list(shaped.summary()) + list(step_notes)
            if not self.profile_memory:
                notes.append("profile_memory=False: no tensor identities, so compulsory bytes are per op "
                              "(each op's own first-touch traffic)")
        dev = self.device()
        ranged_names = self._ranged_modules()
        step = StepRecords(
            costs, op_timings, module_timings, self._module_infos({m.name for m in module_timings}, ranged_names),
            steps=timing.steps,
            step_time_s=timing.step_time_s,
            peak_memory_bytes=timing.peak_memory_bytes,
            activation_bytes=shaped.activation_bytes or None if shaped is not None else None,
            model=self._ranges.root_type,
            predicted=False,
        )
        report = analyse_on(dev, step, self.options)
        faults = self._session.minor_faults_per_step
        if faults is not None and faults >= NOTE_THRESHOLD_FAULTS and getattr(dev, "kind", None) == "cpu":
            notes.append(page_fault_note(faults))
        _, planned = self._session.window()
        if planned is not None and timing.steps < planned:
            notes.append(f"the schedule's window was cut short: {timing.steps} of its {planned} active steps ran "
                         f"before the block ended; the report averages those {timing.steps}")
        compiled = scan_compiled(self._session.trace)  # one pass for the notes on compiled code
        kernels_note = compiled_kernels_note(compiled)
        if kernels_note is not None:
            notes.append(kernels_note)
        sites_note = kernel_sites_note(sites)
        if sites_note is not None:
            notes.append(sites_note)
        regions_note = compiled_regions_note(compiled, timing.steps, _graph_break_reasons())
        if regions_note is not None:
            notes.append(regions_note)
        if timing.compile_time_s > 0:
            notes.append(f"the profiled steps include torch.compile compiling ({timing.compile_time_s:.2f} s): the ops "
                         "its tracing ran are left out of the rows, but its time is in the step's; profile warm steps "
                         "(schedule(wait=1, ...)) for the compiled model's own roofline")
        ranged = bool(ranged_names)
        if self.model is not None and not ranged and compiled.region_calls:
            notes.append(f"the model ({self._ranges.root_type}) runs under torch.compile and got no module range: "
                         "ranges are not recorded inside compiled code (they would make it compile again), so its "
                         f"ops and fused kernels are under {OUTSIDE!r} (passing what torch.compile returned to "
                         "RooflineProfiler gives the compiled call one range of its own)")
        elif self.model is not None and not ranged:
            notes.append(f"the model ({self._ranges.root_type}) was never called inside the profiled steps: every op "
                         f"ran outside its modules ({OUTSIDE!r}); call it inside `with prof:`")
        return report.with_notes(*notes)

    def _ranged_modules(self) -> Set[str]:
        """Names of the modules whose ranges the trace holds (called outside compiled code)."""
        found: Set[str] = set()
        for e in self._session.trace.events:
            if e.name.startswith(RANGE_PREFIX) and not e.name.startswith(PHASE_PREFIX):
                found.add(e.name)
        labels = self._ranges.labels
        return {parsed[1] for parsed in (parse_range_name(name, labels) for name in found) if parsed is not None}

    def _module_infos(self, timed: Set[str], ranged: Set[str] = frozenset()) -> List[ModuleInfo]:
        """The report's modules: the model's, where modules inside compiled code are kept when
        they were also called from eager code (``ranged``: names with ranges in the trace), with
        their own type, or when fused kernels were placed in them (``timed``: module timings'
        names), typed ``(in compiled code)``."""
        infos = module_infos(self.model, root_type=self._ranges.root_type)
        if self.model is not None and self._ranges.root_type == "step":
            infos[0] = dataclasses.replace(infos[0], type="step")
        if self._ranges.compiled:  # compiled code runs no ranges: rows for the compiled parts only
            types = {name: f"{type(original_module(m)).__name__} (compiled)" for name, m in self._ranges.compiled}
            kept: List[ModuleInfo] = []
            for i in infos:
                if i.name in types:
                    kept.append(dataclasses.replace(i, type=types[i.name]))
                elif not self._ranges.in_compiled(i.name) or i.name in ranged:
                    kept.append(i)
                elif plain_name(i.name) in timed and plain_name(i.name) not in types:  # not the wrapper's level
                    kept.append(dataclasses.replace(i, name=plain_name(i.name), type=f"{i.type} {IN_COMPILED_CODE}"))
            infos = kept
        if any(op.module == OUTSIDE for op in self.timing.ops):
            infos.insert(1, ModuleInfo(OUTSIDE, "", 0, 0))
        return infos


def _graph_break_reasons() -> List[str]:
    """The first line of each graph-break reason Dynamo counted in this process (empty when
    Dynamo was never imported: nothing was compiled)."""
    import sys

    utils = sys.modules.get("torch._dynamo.utils")
    counters = getattr(utils, "counters", None) if utils is not None else None
    if counters is None:
        return []
    return [str(reason).strip().splitlines()[0] for reason in counters.get("graph_break", {}) if str(reason).strip()]


def _model_device(model: Optional[nn.Module]) -> torch.device:
    if model is None:
        return torch.device("cpu")
    return model_device(model) or torch.device("cpu")
