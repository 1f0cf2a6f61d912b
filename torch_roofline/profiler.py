"""RooflineProfiler: time a real step, count it, and place every module on the roofline.

Two passes that never disturb each other:

* **time**: the user's step runs under torch.profiler with a ``record_function`` range
  around every module's forward (:class:`~torch_roofline.timing.ranges.ModuleRanges`);
  the profiler's Chrome trace is read back by the same reader and attribution that
  read saved GPU traces (:mod:`torch_roofline.timing`), so CPU and CUDA share one path.
* **count**: the model's first call is captured (a reference to its arguments) and, when
  the report is asked for, replayed on fake tensors under the counter
  (:func:`torch_roofline.count.replay.count_replay`): the same aten ops, no arithmetic,
  no side effects, and none of the counter's Python work inside the timed step.

The two are joined per (module, phase, op) by :func:`torch_roofline.analysis.analyse`.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.optim.optimizer as _optim
from torch import nn

from torch_roofline.analysis import analyse
from torch_roofline.count import check_devices, model_device
from torch_roofline.count.replay import count_replay
from torch_roofline.count.result import CountResult
from torch_roofline.records import OpCost, Roof, check_memory_model
from torch_roofline.report import DeviceInfo, RooflineReport
from torch_roofline.timing.attribution import TraceTiming, attribute
from torch_roofline.timing.faults import NOTE_THRESHOLD_FAULTS, page_fault_note
from torch_roofline.timing.ranges import ModuleRanges
from torch_roofline.timing.session import ProfileSession

__all__ = ["RooflineProfiler", "schedule", "device_roofs", "device_info", "conv_tf32", "place"]

_ACTIVE = threading.local()


def schedule(*, wait: int = 0, warmup: int = 1, active: int = 1, repeat: int = 1, skip_first: int = 0) -> Callable[[int], Any]:
    """A torch.profiler-style step -> action function (``torch.profiler.schedule``).

    ``wait`` steps are ignored, ``warmup`` steps run the profiler without keeping results
    (first-call costs: allocator growth, oneDNN/cuDNN plan selection), ``active`` steps are
    recorded and their times averaged; ``repeat`` cycles (0 = until the block ends).
    """
    return torch.profiler.schedule(wait=wait, warmup=warmup, active=active, repeat=repeat, skip_first=skip_first)


_CONVOLUTIONS = frozenset({"aten.convolution", "aten.convolution_backward", "aten._convolution",
                           "aten.cudnn_convolution", "aten.convolution_overrideable"})


def conv_tf32(ops: Sequence[OpCost], device: Any) -> Tuple[OpCost, ...]:
    """fp32 convolutions relabelled ``tf32`` where cuDNN runs them on TF32 tensor cores.

    torch lets cuDNN use TF32 for fp32 convolutions by default
    (``torch.backends.cudnn.allow_tf32``), independently of the matmul setting that
    :meth:`Device.roof` follows; on a device with a TF32 matrix roof those convolutions are
    measured against it, not against the fp32 CUDA-core peak.
    """
    # Only a device with real TF32 matrix units (a "tf32:matrix" peak of its own, not a
    # fallback to another unit) runs cuDNN's TF32 convolutions.
    if not torch.backends.cudnn.allow_tf32 or "tf32:matrix" not in getattr(device, "peaks", {}):
        return tuple(ops)
    return tuple(
        dataclasses.replace(o, dtype="tf32") if o.op in _CONVOLUTIONS and o.dtype == "float32" else o
        for o in ops
    )


def device_roofs(device: Any, ops: Sequence[OpCost]) -> Dict[Tuple[Optional[str], str], Roof]:
    """The roof of every (dtype, unit) pair the counted ops use, on ``device``.

    A floating-point dtype the device has no roof for (fp8 on a V100) gets no entry: those
    ops are reported without a roof, never against another dtype's compute peak. Integer
    and bool ops other than int8 matrix work do no floating-point arithmetic (0 FLOPs), so
    only their bytes matter: they are placed against the device's memory roof, carried by
    its fp32 vector roof.
    """
    from torch_roofline.devices import UnsupportedDtypeError

    roofs: Dict[Tuple[Optional[str], str], Roof] = {}
    for op in ops:
        key = (op.dtype, op.unit)
        if key in roofs or op.dtype is None:
            continue
        try:
            roofs[key] = device.roof(op.dtype, op.unit)
        except (UnsupportedDtypeError, ValueError, KeyError):
            if _is_integer_dtype(op.dtype) and not (op.unit == "matrix" and op.dtype in ("int8", "uint8")):
                try:
                    roofs[key] = device.roof("float32", "vector")
                except (UnsupportedDtypeError, ValueError, KeyError):
                    pass
    return roofs


def place(ops: Sequence[OpCost], device: Any) -> Tuple[Tuple[OpCost, ...], Dict[Tuple[Optional[str], str], Roof]]:
    """The ops as the device runs them (:func:`conv_tf32`) and the roofs they are placed on."""
    ops = conv_tf32(ops, device)
    return ops, device_roofs(device, ops)


def _is_integer_dtype(name: str) -> bool:
    return name.startswith(("int", "uint")) or name == "bool"


def device_info(device: Any) -> DeviceInfo:
    """The report's device section for a :class:`~torch_roofline.devices.Device`."""
    return DeviceInfo(
        id=device.id,
        name=device.name,
        source=device.source,
        memory_bandwidth=device.memory_bandwidth,
        roofs=tuple(device.roofs()),
        kind=getattr(device, "kind", None),
    )


def resolve_device(roof: Any, torch_device: Optional[torch.device]) -> Any:
    """The :class:`~torch_roofline.devices.Device` whose roofs a report uses.

    ``roof``: ``"auto"`` (catalog row for a known GPU; computed peak and measured bandwidth
    for a CPU), ``"datasheet"`` (the catalog row; an error if the device has none),
    ``"measured"`` (micro-benchmarked on the spot, cached), a catalog id or name, a path to
    a TOML/YAML roofs file, or a ``Device``.
    """
    from torch_roofline import devices

    if isinstance(roof, devices.Device):
        return roof
    if not isinstance(roof, str):
        raise TypeError(f"roof={roof!r}: expected 'auto', 'datasheet', 'measured', a device name or a Device")
    kind = (torch_device or torch.device("cpu")).type
    if roof == "auto":
        return devices.detect(torch_device)
    if roof == "measured":
        return devices.measure(device=kind)
    if roof == "datasheet":
        dev = devices.detect(torch_device)
        if dev.source != "datasheet":
            raise ValueError(
                f"roof='datasheet': {dev.name!r} has no datasheet row in the catalog (its roofs are "
                f"{dev.source}); use roof='auto' or 'measured', or name a catalog device"
            )
        return dev
    if roof.endswith((".toml", ".yaml", ".yml")):
        loaded = devices.load_file(roof)
        return loaded[0] if isinstance(loaded, (list, tuple)) else loaded
    return devices.get(roof)


class RooflineProfiler:
    """Measure a model's step and place each module and op on the device's roofline.

    Args:
        model: the module to analyse.
        device: the torch device it runs on; default: the device of its parameters.
        roof: which roofs to use: ``"auto"`` (default), ``"datasheet"``, ``"measured"``, a
            catalog name (``"h100-sxm"``), a roofs file, or a ``Device``.
        schedule: ``None`` records the whole block (one-shot); or a step -> action function
            (:func:`schedule`, ``torch.profiler.schedule``) and call :meth:`step` once per step.
        backward: whether the step runs backward; default: detected from the trace.
        loss_fn: the loss the step uses (for counting its backward exactly; default
            ``output.sum()``, whose few root ops then differ from a real loss's).
        memory_model: ``"op"`` or ``"compulsory"`` bytes for the roofline.
        hardware_counters: on CUDA, also record CUPTI FLOP counters per kernel.
        profile_memory: record allocator events (the report's peak memory).
        export_trace: also keep the profiler's trace here (``.json`` or ``.json.gz``).
        record_shapes: record op input shapes in the trace (a saved trace can then be counted
            without the model, and collectives' message sizes can be read); a little cost per op.
        formulas: per-call FLOP formulas, as for :func:`torch_roofline.count`.

    Example::

        model, x = torchvision.models.resnet18(), torch.randn(8, 3, 224, 224)
        with RooflineProfiler(model) as prof:
            model(x).sum().backward()
        print(prof.report())

    Overhead: the profiler adds a few microseconds per op and per module (its ranges);
    counting happens after the block, on fake tensors, and never inside the timed step.
    Limits: the count replays the model's first call of the step; a step that calls the
    model several times is counted from that one call (a note says so).
    """

    def __init__(
        self,
        model: nn.Module,
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
        record_shapes: bool = False,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"RooflineProfiler(model=...): expected an nn.Module, got {type(model).__name__}")
        if isinstance(model, torch.jit.RecursiveScriptModule):
            raise TypeError(
                "RooflineProfiler(model=...): a torch.jit.script'ed module takes no Python hooks, so the profiler "
                "cannot see its calls or module ranges; profile the eager module you scripted (or a "
                "torch.jit.trace'd one), or time the scripted one with torch.profiler and read the trace with "
                "torch_roofline.from_trace"
            )
        check_memory_model(memory_model, "RooflineProfiler")
        self.model = model
        self.torch_device = torch.device(device) if device is not None else _model_device(model)
        self.roof = roof
        self.backward = backward
        self.loss_fn = loss_fn
        self.memory_model = memory_model
        self.formulas = formulas
        self.overhead_threshold_s = overhead_threshold_s
        self._session = ProfileSession(
            schedule=schedule,
            profile_memory=profile_memory,
            hardware_counters=hardware_counters,
            export_path=export_trace,
            record_shapes=record_shapes,
        )
        self._ranges = ModuleRanges(model)
        self._handles: List[Any] = []
        self._call: Optional[Tuple[Tuple[Any, ...], Dict[str, Any]]] = None
        self._grad_enabled = True
        self._grads_present = False
        self._calls_in_first_step = 0
        self._steps_seen = 0
        self._optimizer: Optional[torch.optim.Optimizer] = None
        self._device_obj: Any = None
        self._report: Optional[RooflineReport] = None
        self._costs: Optional[CountResult] = None
        self._timing: Optional[TraceTiming] = None

    # ---- context ----------------------------------------------------------------------
    def __enter__(self) -> "RooflineProfiler":
        if getattr(_ACTIVE, "on", False):
            raise RuntimeError("RooflineProfiler is already running in this thread: profilers cannot nest")
        _ACTIVE.on = True
        try:
            self._report = self._costs = self._timing = None
            self._handles.append(self.model.register_forward_pre_hook(self._capture, with_kwargs=True))
            self._handles.append(_optim.register_optimizer_step_pre_hook(self._capture_optimizer))
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
        finally:
            self._ranges.__exit__(exc_type, exc, tb)
            for h in self._handles:
                h.remove()
            self._handles.clear()
            _ACTIVE.on = False

    def step(self) -> None:
        """Mark the end of one training/inference step (drives the schedule)."""
        self._steps_seen += 1
        self._session.step()

    def _capture(self, module: nn.Module, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> None:
        if self._steps_seen == 0:
            self._calls_in_first_step += 1
        if self._call is None:
            call = (tuple(args), dict(kwargs))
            # before the forward runs, so a mismatch is this clear error, not torch's from deep inside
            meta = model_device(self.model) == torch.device("meta")
            check_devices(self.model, call, caller="RooflineProfiler", hint=(
                "; a model on 'meta' runs no arithmetic and cannot be timed: use torch_roofline.predict"
                if meta else ""))
            self._call = call
            self._grad_enabled = torch.is_grad_enabled()
            self._grads_present = any(p.grad is not None for p in self.model.parameters())

    def _capture_optimizer(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if self._optimizer is None:
            self._optimizer = optimizer

    # ---- results ----------------------------------------------------------------------
    @property
    def trace(self) -> Any:
        """The recorded trace (:class:`~torch_roofline.timing.trace.Trace`) of the last window."""
        return self._session.trace

    @property
    def timing(self) -> TraceTiming:
        """The measured times (per op and module, summed over the active steps); computed once."""
        if self._timing is None:
            names = {op.op for op in self.costs().ops} if self._call is not None else None
            self._timing = attribute(self._session.trace, op_names=names)
        return self._timing

    def costs(self) -> CountResult:
        """The counted step (FLOPs, MACs, bytes per op call), replayed on fake tensors."""
        if self._costs is None:
            if self._call is None:
                raise RuntimeError(
                    "RooflineProfiler: the model was never called inside the profiled block, so there "
                    "is no step to count; call model(inputs) inside `with prof:`"
                )
            backward = self.backward
            if backward is None:
                backward = self._trace_has_backward()
            args, kwargs = self._call
            try:
                self._costs = count_replay(
                    self.model, args, kwargs, backward=backward, loss_fn=self.loss_fn,
                    optimizer=self._optimizer if backward else None, memory_model=self.memory_model,
                    formulas=self.formulas, grad_enabled=self._grad_enabled, grads_present=self._grads_present,
                )
            except Exception as exc:
                if backward:
                    first = str(exc).splitlines()[0] if str(exc) else ""
                    raise RuntimeError(
                        f"RooflineProfiler: the profiled training step cannot be counted on fake tensors "
                        f"({type(exc).__name__}: {first}); a training step is never run twice to count it. "
                        "Count it separately with torch_roofline.count(model, inputs, backward=True) on a copy "
                        "of the model, or profile a forward-only step"
                    ) from exc
                self._costs = self._count_forward_again(args, kwargs, exc)
        return self._costs

    def _count_forward_again(self, args: Tuple[Any, ...], kwargs: Dict[str, Any], exc: Exception) -> CountResult:
        """Count a forward-only step by running it once more on the real tensors.

        For models fake tensors cannot run (the forward already ran for real, so the failure
        is the replay's): scripted modules (``torch.utils.mkldnn``'s), ops without a fake
        kernel (``mkldnn_linear``). Timing is done by then, so the extra forward does not
        distort it; it does have a forward's side effects (train-mode batch-norm statistics,
        RNG draws), which the result's note says. A training step is never run twice.
        """
        from torch_roofline.count import count

        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:200]
        with torch.set_grad_enabled(self._grad_enabled):
            if kwargs:
                result = count(lambda: self.model(*args, **kwargs), None, memory_model=self.memory_model,
                               formulas=self.formulas, modules=self.model)
            else:
                result = count(self.model, tuple(args), memory_model=self.memory_model, formulas=self.formulas)
        note = (f"counted by running the forward once more on the real tensors: the step cannot run on "
                f"fake tensors ({reason}); that forward's side effects (train-mode batch-norm statistics, "
                "random draws) happened twice")
        return dataclasses.replace(result, notes=tuple(result.notes) + (note,))

    def _trace_has_backward(self) -> bool:
        trace = self._session.trace
        return any(e.name.startswith("autograd::engine::evaluate_function") for e in trace.events)

    def device(self) -> Any:
        """The :class:`~torch_roofline.devices.Device` whose roofs the report uses."""
        if self._device_obj is None:
            self._device_obj = resolve_device(self.roof, self.torch_device)
        return self._device_obj

    def report(self) -> RooflineReport:
        """The :class:`~torch_roofline.report.RooflineReport` of the profiled step(s)."""
        if self._report is not None:
            return self._report
        if getattr(_ACTIVE, "on", False) and self._handles:
            raise RuntimeError("RooflineProfiler.report(): leave the `with` block first")
        costs = self.costs()
        timing = self.timing
        dev = self.device()
        kwargs = {}
        if self.overhead_threshold_s is not None:
            kwargs["overhead_threshold_s"] = self.overhead_threshold_s
        ops, roofs = place(costs.ops, dev)
        report = analyse(
            ops,
            timing.ops,
            timing.modules,
            costs.modules,
            roofs,
            device=device_info(dev),
            steps=timing.steps,
            memory_model=self.memory_model,
            step_time_s=timing.step_time_s,
            peak_memory_bytes=timing.peak_memory_bytes,
            activation_bytes=costs.activation_bytes or None,
            model=type(self.model).__name__,
            **kwargs,
        )
        # The count's own notes (sparse tensors, scripted modules, a forward counted again),
        # except the routine one saying it was replayed on fake tensors.
        notes = [n for n in costs.notes if n not in report.notes and not n.startswith("counted by replaying")]
        notes += costs.uncounted_notes()
        faults = self._session.minor_faults_per_step
        if faults is not None and faults >= NOTE_THRESHOLD_FAULTS and getattr(dev, "kind", None) == "cpu":
            notes.append(page_fault_note(faults))
        if self._calls_in_first_step > 1:
            notes.append(
                f"the model was called {self._calls_in_first_step} times in the first step; the count replays "
                "its first call only"
            )
        self._report = report.with_notes(*notes)
        return self._report


def _model_device(model: nn.Module) -> torch.device:
    return model_device(model) or torch.device("cpu")
