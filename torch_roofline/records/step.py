"""What every source of a report hands the analysis: one step's costs and timings.

A live window (:class:`~torch_roofline.RooflineProfiler`), a saved trace
(:func:`~torch_roofline.from_trace`) and a count on meta tensors (:func:`~torch_roofline.predict`)
each produce one :class:`StepRecords`; :func:`torch_roofline.analysis.analyse_step` places it
on a device's roofs. Units: FLOPs, bytes, seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Sequence, Tuple

from torch_roofline.records.costs import ModuleInfo, ModuleTiming, OpCost, OpTiming

__all__ = ["StepRecords"]


@dataclass(frozen=True)
class StepRecords:
    """One (averaged) step as counted and, when measured, as timed.

    Attributes:
        costs: every aten op call of ONE step (:class:`OpCost`).
        op_timings: measured op calls summed over ``steps`` steps (empty when predicting).
        module_timings: measured module ranges, per (name, phase), summed over ``steps``.
            When empty but ``op_timings`` are given, module times are the sums of their ops.
        modules: every module, ``named_modules()`` order, root ``""`` first.
        steps: profiled steps the timings are summed over (times are divided by it).
        step_time_s: measured wall time of the ``steps`` profiled steps in seconds, summed
            like the timings; default: the root module's time summed over phases (or the sum
            of op times when there are no module timings).
        peak_memory_bytes: the step's peak memory footprint in bytes, if known.
        activation_bytes: module name -> bytes of the outputs it keeps, if known.
        module_calls: (name, phase) -> calls per step; default: module timings' calls /
            ``steps``, else runs of consecutive op calls inside the module (a module called
            twice back to back, with no op in between, then counts once).
        predicted: default: True when there are no timings at all.
        model: class name of the root module; default: ``modules``' root type.
        torch_version: recorded in the report; default: the imported torch's, if any.
    """

    costs: Sequence[OpCost]
    op_timings: Sequence[OpTiming] = ()
    module_timings: Sequence[ModuleTiming] = ()
    modules: Sequence[ModuleInfo] = ()
    steps: int = 1
    step_time_s: Optional[float] = None
    peak_memory_bytes: Optional[int] = None
    activation_bytes: Optional[Mapping[str, int]] = None
    module_calls: Optional[Mapping[Tuple[str, str], int]] = None
    predicted: Optional[bool] = None
    model: Optional[str] = None
    torch_version: Optional[str] = None

    @property
    def measured(self) -> bool:
        """Whether any op or module was timed."""
        return bool(self.op_timings or self.module_timings)
