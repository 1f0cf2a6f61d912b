"""The step every report runs, whatever its source: analyse the costs (and timings) and wrap
what the analysis finds as a :class:`~torch_roofline.report.RooflineReport`.

A live window (:class:`~torch_roofline.RooflineProfiler`), a saved trace
(:func:`~torch_roofline.from_trace`) and a count on meta tensors (:func:`~torch_roofline.predict`)
all end in :func:`analyse_on`: the costs placed on the device's roofs
(:func:`~torch_roofline.devices.placement.place`), analysed
(:func:`~torch_roofline.analysis.analyse_step`), returned as a report.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

from torch_roofline.analysis import analyse_step
from torch_roofline.records import ModuleInfo, ModuleTiming, OpCost, OpTiming, Roof
from torch_roofline.report import RooflineReport

__all__ = ["analyse", "analyse_on"]


def analyse(costs: Sequence[OpCost], op_timings: Sequence[OpTiming] = (), module_timings: Sequence[ModuleTiming] = (),
            modules: Sequence[ModuleInfo] = (), roofs: Optional[Mapping[Any, Roof]] = None,
            **options: Any) -> RooflineReport:
    """The :class:`~torch_roofline.report.RooflineReport` of one step's costs and timings on
    the given roofs: :func:`~torch_roofline.analysis.analyse_step`, whose arguments (units,
    defaults, errors) these are, with the report's forms.

    Example::

        report = analyse(costs, op_timings, module_timings, modules, roofs, steps=5)
        print(report.table(top=10))
    """
    return RooflineReport.from_analysis(analyse_step(costs, op_timings, module_timings, modules, roofs, **options))


def analyse_on(device: Any, costs: Sequence[OpCost], op_timings: Sequence[OpTiming] = (),
               module_timings: Sequence[ModuleTiming] = (), modules: Sequence[ModuleInfo] = (),
               **options: Any) -> RooflineReport:
    """Place ``costs`` on ``device``'s roofs (:func:`~torch_roofline.devices.placement.place`:
    the ops as the device runs them, the roof of each) and :func:`analyse` them, with the
    device's section in the report.

    Args:
        device: a :class:`~torch_roofline.devices.Device` (``resolve_device`` makes one).
        costs, op_timings, module_timings, modules: as for :func:`analyse`.
        **options: :func:`~torch_roofline.analysis.analyse_step`'s keyword arguments
            (``steps``, ``memory_model``, ...).
    """
    from torch_roofline.devices.placement import device_info, place  # imports torch: not at import time

    ops, roofs = place(costs, device)
    return analyse(ops, op_timings, module_timings, modules, roofs, device=device_info(device), **options)
