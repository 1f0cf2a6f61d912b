"""The step every report runs, whatever its source: analyse the step's records and wrap what the
analysis finds as a :class:`~torch_roofline.report.RooflineReport`.

A live window (:class:`~torch_roofline.RooflineProfiler`), a saved trace
(:func:`~torch_roofline.from_trace`) and a count on meta tensors (:func:`~torch_roofline.predict`)
each build a :class:`~torch_roofline.records.StepRecords` and end in :func:`analyse_on`: the costs
placed on the device's roofs (:func:`~torch_roofline.devices.placement.place`), analysed
(:func:`~torch_roofline.analysis.analyse_step`), returned as a report. :func:`analyse` is the
same for costs and roofs you gathered yourself, with the records' fields as loose arguments.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional, Sequence

from torch_roofline.analysis import AnalysisOptions, analyse_step
from torch_roofline.records import DeviceInfo, ModuleInfo, ModuleTiming, OpCost, OpTiming, Roof, StepRecords
from torch_roofline.report import RooflineReport

__all__ = ["analyse", "analyse_on"]

_STEP_FIELDS = frozenset(f.name for f in dataclasses.fields(StepRecords))
_OPTION_FIELDS = frozenset(f.name for f in dataclasses.fields(AnalysisOptions))


def analyse(costs: Sequence[OpCost], op_timings: Sequence[OpTiming] = (), module_timings: Sequence[ModuleTiming] = (),
            modules: Sequence[ModuleInfo] = (), roofs: Optional[Mapping[Any, Roof]] = None, *,
            device: Optional[DeviceInfo] = None, **fields: Any) -> RooflineReport:
    """The :class:`~torch_roofline.report.RooflineReport` of one step's costs and timings on
    the given roofs: :func:`~torch_roofline.analysis.analyse_step` with its records' fields as
    keyword arguments, those of :class:`~torch_roofline.records.StepRecords` (``steps``,
    ``step_time_s``, ``peak_memory_bytes``, ``activation_bytes``, ``module_calls``,
    ``predicted``, ``model``, ``torch_version``) and of
    :class:`~torch_roofline.analysis.AnalysisOptions` (``memory_model``,
    ``overhead_threshold_s``, ``overhead_ratio``, ``time_lost_top``); units and defaults there.

    Raises:
        TypeError: a keyword that is neither's field.

    Example::

        report = analyse(costs, op_timings, module_timings, modules, roofs, steps=5)
        print(report.table(top=10))
    """
    unknown = sorted(set(fields) - _STEP_FIELDS - _OPTION_FIELDS)
    if unknown:
        raise TypeError(f"analyse() got unexpected keyword argument(s) {unknown}; expected fields of StepRecords "
                        f"({sorted(_STEP_FIELDS - {'costs', 'op_timings', 'module_timings', 'modules'})}) "
                        f"or AnalysisOptions ({sorted(_OPTION_FIELDS)})")
    step = StepRecords(costs, op_timings, module_timings, modules,
                       **{k: v for k, v in fields.items() if k in _STEP_FIELDS})
    options = AnalysisOptions(**{k: v for k, v in fields.items() if k in _OPTION_FIELDS})
    return RooflineReport.from_analysis(analyse_step(step, roofs, device=device, options=options))


def analyse_on(device: Any, step: StepRecords, options: AnalysisOptions = AnalysisOptions()) -> RooflineReport:
    """Place ``step``'s costs on ``device``'s roofs (:func:`~torch_roofline.devices.placement.place`:
    the ops as the device runs them, the roof of each) and analyse them, with the device's
    section in the report.

    Args:
        device: a :class:`~torch_roofline.devices.Device` (``resolve_device`` makes one).
        step: the step's costs and timings.
        options: the memory model, the overhead rule, the time-lost list's length.
    """
    from torch_roofline.devices.placement import device_info, place  # imports torch: not at import time

    ops, roofs = place(step.costs, device)
    analysis = analyse_step(dataclasses.replace(step, costs=ops), roofs, device=device_info(device), options=options)
    return RooflineReport.from_analysis(analysis)
