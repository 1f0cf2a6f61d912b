"""The records the stages produce and consume: costs, timings, modules, roofs (see
:mod:`torch_roofline.records`)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Dict, Optional, Tuple

__all__ = [
    "PHASES",
    "OUTSIDE",
    "MEMORY_MODELS",
    "check_memory_model",
    "Cost",
    "OpCost",
    "ModuleInfo",
    "OpTiming",
    "ModuleTiming",
    "Roof",
    "DeviceInfo",
    "frozen_record",
]

PHASES: Tuple[str, ...] = ("forward", "backward", "optimizer")

#: Module name of the row holding the ops that ran outside every module of the profiled
#: model(s): a loss computed on the model's output, data movement, a training step's own
#: arithmetic. A child of the root ``""`` (the whole step); never a ``named_modules()`` name
#: (those hold no parentheses or spaces unless a ``ModuleDict`` key does, which is refused).
OUTSIDE = "(outside modules)"

#: The two memory models: ``"op"`` (every op reads its inputs and writes its outputs) and
#: ``"compulsory"`` (each storage moved once per step).
MEMORY_MODELS: Tuple[str, ...] = ("op", "compulsory")


def check_memory_model(memory_model: object, caller: str) -> None:
    """Raise a ValueError naming ``caller`` unless ``memory_model`` is one of :data:`MEMORY_MODELS`."""
    if memory_model not in MEMORY_MODELS:
        raise ValueError(
            f"{caller}(memory_model={memory_model!r}): the memory_model must be one of 'op' (every op reads its "
            "inputs and writes its outputs) or 'compulsory' (each storage moved once per step)"
        )


def frozen_record(cls: type, fields: Dict[str, Any]) -> Any:
    """A frozen dataclass record built without its ``__init__`` (for hot loops only).

    A frozen dataclass's ``__init__`` sets each field through ``object.__setattr__`` (about
    2.5 µs for a record of 14 fields, a measurable share of per-op and per-event costs); the
    record is filled directly instead. ``fields`` must name every field; the values are not
    validated. Same fields, same equality and hash as a record built normally.
    """
    record = cls.__new__(cls)
    record.__dict__.update(fields)
    return record


@dataclass(frozen=True)
class Cost:
    """Work and traffic of one op, module or step.

    Attributes:
        flops: floating-point operations (FLOPs, 2 per multiply-accumulate).
        macs: multiply-accumulates (matrix work only; 0 for elementwise ops).
        bytes_read: bytes read, under the memory model the result was built with.
        bytes_written: bytes written, under the same memory model.
        calls: number of op (or module) calls summed into this value.
    """

    flops: int = 0
    macs: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    calls: int = 0

    @property
    def bytes(self) -> int:
        """Bytes moved in total (read + written)."""
        return self.bytes_read + self.bytes_written

    @property
    def intensity(self) -> Optional[float]:
        """Arithmetic intensity in FLOP/B; ``None`` when no byte moved."""
        return self.flops / self.bytes if self.bytes else None

    def __add__(self, other: "Cost") -> "Cost":
        if not isinstance(other, Cost):
            return NotImplemented
        return Cost(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(Cost)))


@dataclass(frozen=True)
class OpCost:
    """One aten op call as counted by the dispatch-mode counter.

    Attributes:
        op: the aten overload packet, dotted (``"aten.convolution"``).
        module: fully qualified name of the innermost module running it (``""`` root).
        scope: the module call stack, outermost first (``("", "layer1", "layer1.0")``);
            inclusive module values sum every op whose scope contains the module.
        phase: ``"forward"``, ``"backward"`` or ``"optimizer"``.
        flops: FLOPs (2 per multiply-accumulate).
        macs: multiply-accumulates (matrix ops only).
        bytes_read: bytes read under the op model (every op reads its inputs).
        bytes_written: bytes written under the op model (every op writes its outputs).
        compulsory_bytes_read: bytes read the first time a storage is touched in the step.
        compulsory_bytes_written: bytes written the first time a storage is written.
        dtype: the dtype the op computes in (``"float32"``), ``None`` if no tensor.
        unit: ``"matrix"`` or ``"vector"``: the roof the op is measured against.
        counted: False when the op does arithmetic but has no formula (FLOPs unknown).
        index: position of the call in the step (0-based), for joining with timings.
        recompute: a forward op re-run during backward (activation checkpointing).
        fused: a ``torch.compile`` fused kernel's call (its bytes are the kernel's real
            traffic; its compulsory bytes, the buffers it is first to read or write in its
            graph's run: :mod:`torch_roofline.timing._fusion_traffic`).
        eager_bytes: for a fused kernel, the bytes (read + written) the aten ops it fused
            would move run one by one as eager ops; ``None`` when unknown. Not used for other
            ops (their eager bytes are their op bytes).
    """

    op: str
    module: str
    scope: Tuple[str, ...]
    phase: str
    flops: int
    macs: int
    bytes_read: int
    bytes_written: int
    compulsory_bytes_read: int
    compulsory_bytes_written: int
    dtype: Optional[str]
    unit: str
    counted: bool
    index: int = 0
    recompute: bool = False
    fused: bool = False
    eager_bytes: Optional[int] = None

    def bytes_under(self, memory_model: str = "op") -> Tuple[int, int]:
        """(bytes read, bytes written) of this call under ``memory_model``: ``"op"`` (the op's
        own inputs and outputs) or ``"compulsory"`` (each storage once per step). The one place
        the memory model picks bytes."""
        if memory_model == "compulsory":
            return self.compulsory_bytes_read, self.compulsory_bytes_written
        return self.bytes_read, self.bytes_written

    def cost(self, memory_model: str = "op") -> Cost:
        """This call as a :class:`Cost` under ``memory_model`` (``"op"`` or ``"compulsory"``)."""
        r, w = self.bytes_under(memory_model)
        return Cost(self.flops, self.macs, r, w, 1)


@dataclass(frozen=True)
class ModuleInfo:
    """Static facts about one module of the model.

    Attributes:
        name: fully qualified name (``""`` for the root).
        type: class name (``"Conv2d"``).
        params: parameters owned by the module and its children, shared ones once.
        param_bytes: bytes of those parameters.
        self_params: parameters owned directly by this module.
        self_param_bytes: bytes of those.
    """

    name: str
    type: str
    params: int
    param_bytes: int
    self_params: int = 0
    self_param_bytes: int = 0


@dataclass(frozen=True)
class OpTiming:
    """Measured time of one aten op call, from torch.profiler or a saved trace.

    Attributes:
        op: the aten op, dotted like :attr:`OpCost.op` (``"aten.convolution"``).
        module: innermost enclosing module range (``""`` root when outside every range;
            ``None`` never: unattributed work lands on the root or on ``UNATTRIBUTED``).
        scope: enclosing module ranges, outermost first.
        phase: ``"forward"``, ``"backward"`` or ``"optimizer"``.
        time_s: the op's time in seconds: device (kernel) time when kernels ran, otherwise
            the inclusive CPU time of the op event.
        cpu_time_s: inclusive host time of the op event in seconds.
        device_time_s: summed kernel time in seconds (0.0 when no kernel ran).
        kernels: number of kernels launched by the op.
        start_s: start time of the op event, seconds from the trace's origin.
        thread: host thread id.
        seq: autograd sequence number when recorded, else ``None``.
        index: position among this phase's ops in the trace (ordering for joins).
        step: which profiled step (0-based ``ProfilerStep`` span) the op ran in.
        recompute: a forward op re-run during backward (activation checkpointing).
        calls: op calls this row stands for: 1, except in the rows of a trace read a few steps
            at a time, where the calls of one (module, scope, phase, op) are summed into one
            row (times, kernels and calls added up; the other fields are its first call's).
    """

    op: str
    module: str
    scope: Tuple[str, ...]
    phase: str
    time_s: float
    cpu_time_s: float
    device_time_s: float = 0.0
    kernels: int = 0
    start_s: float = 0.0
    thread: int = 0
    seq: Optional[int] = None
    index: int = 0
    step: int = 0
    recompute: bool = False
    calls: int = 1


@dataclass(frozen=True)
class ModuleTiming:
    """Measured time of one module in one phase, summed over its calls.

    Attributes:
        name: fully qualified module name (``""`` root).
        phase: ``"forward"``, ``"backward"`` or ``"optimizer"``.
        calls: number of calls (ranges) summed.
        time_s: inclusive time in seconds.
        self_time_s: time in seconds not inside a child module's range.
    """

    name: str
    phase: str
    calls: int
    time_s: float
    self_time_s: float
    scope: Tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class Roof:
    """One roof of a device: a compute peak for one dtype on one unit, and a bandwidth.

    Attributes:
        dtype: short dtype key: ``"fp64"``, ``"fp32"``, ``"tf32"``, ``"fp16"``, ``"bf16"``,
            ``"fp8"``, ``"int8"``.
        unit: ``"matrix"`` (tensor cores, MFMA, AMX) or ``"vector"`` (CUDA cores, SIMD FMA).
        peak_flops_per_s: dense peak in FLOP/s (2 per FMA; never a 2:4-sparse figure).
        bandwidth_bytes_per_s: memory bandwidth in B/s (decimal: 1 TB/s = 1e12 B/s).
        source: ``"datasheet"``, ``"estimated"``, ``"measured"`` or ``"user"``.
        how: where the peak and the bandwidth come from, in words (``"measured (fp32:
            fastest of 412 oneDNN GEMMs n=512, ...); bandwidth: measured (...)"``); ``""``
            when unknown. Not part of equality: two roofs with the same numbers and source
            are the same roof.
    """

    dtype: str
    unit: str
    peak_flops_per_s: float
    bandwidth_bytes_per_s: float
    source: str = "datasheet"
    how: str = field(default="", compare=False)

    @property
    def ridge(self) -> float:
        """Ridge point in FLOP/B: the intensity where the two roofs meet."""
        return self.peak_flops_per_s / self.bandwidth_bytes_per_s

    def attainable(self, intensity: float) -> float:
        """Attainable FLOP/s at ``intensity`` FLOP/B: min(peak, intensity x bandwidth)."""
        return min(self.peak_flops_per_s, intensity * self.bandwidth_bytes_per_s)


@dataclass(frozen=True)
class DeviceInfo:
    """The device a report was made for: what the report's ``"device"`` section holds.

    Attributes:
        id: catalog id (``"nvidia-a100-sxm4-80gb"``, ``"cpu-detected"``).
        name: human-readable name.
        source: where the roofs come from: ``"datasheet"``, ``"estimated"``, ``"measured"``,
            ``"user"`` (or ``"mixed"``).
        memory_bandwidth: main memory bandwidth in B/s; ``None`` when unknown.
        roofs: every roof of the device (the JSON marks the ones the report used).
        kind: ``"cpu"``, ``"gpu"``, ``"tpu"``, ... (``Device.kind``); ``None`` when unknown.
    """

    id: str
    name: str
    source: str
    memory_bandwidth: Optional[float]
    roofs: Tuple[Roof, ...] = ()
    kind: Optional[str] = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "roofs", tuple(self.roofs))
