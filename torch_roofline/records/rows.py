"""The report's rows: one module or op placed on the roofline, the step's totals, and the
lists of uncounted ops and time lost (:class:`~torch_roofline.report.RooflineReport` holds
them; ``docs/report-schema.md`` documents every field).

Units: FLOPs, bytes, seconds, FLOP/s, B/s, per step (plain SI numbers); percentages 0-100.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Tuple

from torch_roofline.records.costs import DeviceInfo, Roof

__all__ = ["BOUNDS", "RoofRef", "WorkSums", "ModuleRow", "OpRow", "BoundShare", "Totals", "UncountedOp", "TimeLostItem", "Analysis"]

#: The bound classes, in the order tables and plots list them.
BOUNDS: Tuple[str, ...] = ("compute", "memory", "overhead")


@dataclass(frozen=True)
class RoofRef:
    """Which roof a row was placed against.

    Attributes:
        dtype: short dtype key of the roof (``"fp32"``).
        unit: ``"matrix"`` or ``"vector"``.
        source: ``"datasheet"``, ``"estimated"``, ``"measured"`` or ``"user"``.
    """

    dtype: str
    unit: str
    source: str = "datasheet"

    @classmethod
    def of(cls, roof: Roof) -> "RoofRef":
        """The reference to ``roof``."""
        return cls(roof.dtype, roof.unit, roof.source)

    def matches(self, roof: Roof) -> bool:
        """True when this reference names ``roof``."""
        return (self.dtype, self.unit, self.source) == (roof.dtype, roof.unit, roof.source)


@dataclass(frozen=True)
class WorkSums:
    """The counted work of a module or of the step, per step: FLOPs (2 per multiply-add),
    MACs, parameters and their bytes, bytes read and written under the report's memory
    model, and compulsory bytes (each tensor once). Part of :class:`ModuleRow` and
    :class:`Totals`; ``docs/report-schema.md`` documents each key."""

    flops: int
    macs: int
    params: int
    param_bytes: int
    bytes_read: int
    bytes_written: int
    compulsory_bytes: int


@dataclass(frozen=True)
class _ModuleKey:
    """Which module row: name, type, phase, depth, calls (the first columns of a module row)."""

    name: str
    type: str
    phase: str
    depth: int
    calls: int


# The fields of a dataclass run base by base from the last base of the MRO: _ModuleKey's, then
# WorkSums', then ModuleRow's own, the column order of the module CSV.
@dataclass(frozen=True)
class ModuleRow(WorkSums, _ModuleKey):
    """One module in one phase (``"all"`` sums the phases); numbers per step, SI units.

    Sums (``flops``, ``bytes_*``, ``roofline_time_s``) cover the module's counted ops,
    inclusively (every op whose scope holds the module). See ``docs/report-schema.md``.
    """

    intensity: Optional[float]
    time_s: Optional[float]
    self_time_s: Optional[float]
    achieved_flops_per_s: Optional[float]
    achieved_bytes_per_s: Optional[float]
    attainable_flops_per_s: Optional[float]
    roof: Optional[RoofRef]
    efficiency: Optional[float]
    suspect: bool
    bound: Optional[str]
    roofline_time_s: Optional[float]
    time_lost_s: Optional[float]
    self_roofline_time_s: Optional[float]
    self_time_lost_s: Optional[float]
    fusion_headroom: Optional[float]
    activation_bytes: Optional[int]
    eager_bytes: Optional[int] = None


@dataclass(frozen=True)
class OpRow:
    """One aten op in one module and phase, summed over its calls in one step.

    ``flops`` and ``macs`` are ``None`` for uncounted ops (no FLOP formula). See
    ``docs/report-schema.md``.
    """

    name: str
    op: str
    type: str
    phase: str
    depth: int
    calls: int
    flops: Optional[int]
    macs: Optional[int]
    params: int
    param_bytes: int
    bytes_read: int
    bytes_written: int
    compulsory_bytes: int
    intensity: Optional[float]
    time_s: Optional[float]
    achieved_flops_per_s: Optional[float]
    achieved_bytes_per_s: Optional[float]
    attainable_flops_per_s: Optional[float]
    roof: Optional[RoofRef]
    dtype: Optional[str]
    efficiency: Optional[float]
    suspect: bool
    bound: Optional[str]
    roofline_time_s: Optional[float]
    time_lost_s: Optional[float]
    fusion_headroom: Optional[float]
    counted: bool
    recompute_calls: int = 0
    eager_bytes: Optional[int] = None


@dataclass(frozen=True)
class BoundShare:
    """Share (0-1) of the step's bounded op time per bound class (roofline time when predicted)."""

    compute: Optional[float] = None
    memory: Optional[float] = None
    overhead: Optional[float] = None


@dataclass(frozen=True)
class Totals(WorkSums):
    """The step as a whole (its work, then its times); see ``docs/report-schema.md`` for each key."""

    time_s: Optional[float]
    roofline_time_s: Optional[float]
    time_lost_s: Optional[float]
    efficiency: Optional[float]
    coverage: Optional[float]
    peak_memory_bytes: Optional[int]
    bound_time_share: BoundShare = field(default_factory=BoundShare)
    op_time_s: Optional[float] = None
    eager_bytes: Optional[int] = None


@dataclass(frozen=True)
class UncountedOp:
    """An op with no FLOP formula (or timed but never counted), summed over modules and phases.

    Attributes:
        op: aten op, dotted.
        calls: calls in one step.
        time_s: measured seconds per step; ``None`` when predicted or not timed.
    """

    op: str
    calls: int
    time_s: Optional[float]


@dataclass(frozen=True)
class TimeLostItem:
    """One entry of "where the time goes": a module's own (self) time lost, why, and a hint.

    Attributes:
        name: module name (``""`` root).
        type: module class name.
        phase: ``"forward"``, ``"backward"`` or ``"optimizer"``.
        time_lost_s: self time minus self roofline time, seconds per step.
        self_time_s: measured self time, seconds per step.
        bound: bound class holding most of the module's own op time (``None``: no counted op).
        reason: e.g. ``"memory-bound at 38% of bandwidth"``.
        hint: what usually helps, after seed 001's advice.
    """

    name: str
    type: str
    phase: str
    time_lost_s: float
    self_time_s: Optional[float]
    bound: Optional[str]
    reason: str
    hint: str


@dataclass(frozen=True)
class Analysis:
    """What the analysis stage finds for one (averaged) step: the content of a report.

    :func:`torch_roofline.analysis.analyse_step` returns it; the report layer wraps it as a
    :class:`~torch_roofline.report.RooflineReport` (same fields, plus the table, JSON, CSV,
    plot and TensorBoard forms), which is what users get. Field meanings, units and
    conventions: ``RooflineReport`` and ``docs/report-schema.md``.
    """

    model: str
    predicted: bool
    memory_model: str
    steps: int
    device: DeviceInfo
    totals: Totals
    modules: Tuple[ModuleRow, ...]
    ops: Tuple[OpRow, ...]
    uncounted: Tuple[UncountedOp, ...] = ()
    time_lost: Tuple[TimeLostItem, ...] = ()
    notes: Tuple[str, ...] = ()
    created: Optional[str] = None
    torch_version: Optional[str] = None

    def __post_init__(self) -> None:
        for name in ("modules", "ops", "uncounted", "time_lost", "notes"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
