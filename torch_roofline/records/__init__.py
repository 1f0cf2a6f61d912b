"""Frozen records that cross stage boundaries: count -> time -> analyse -> report.

:mod:`~torch_roofline.records.costs`: what the stages produce (costs, timings, modules,
roofs, the device); :mod:`~torch_roofline.records.rows`: the report's rows. Both import
nothing else of the package.

Units everywhere: FLOPs, bytes, seconds, FLOP/s, B/s (plain SI numbers, decimal:
1 TB/s = 1e12 B/s). Scaling happens only when a number is formatted for people.

Conventions shared by every stage:

* ``flops`` counts 2 per multiply-accumulate for matrix work (what hardware peaks
  count); ``macs`` is reported alongside for users of fvcore, ptflops and thop.
* Module names are the fully qualified names of ``model.named_modules()``; the
  root module is ``""``.
* ``phase`` is one of ``"forward"``, ``"backward"``, ``"optimizer"``.
* ``unit`` says which roof an op is measured against: ``"matrix"`` (tensor cores,
  MFMA, AMX) for matmul-like ops, ``"vector"`` for everything else.
"""

from torch_roofline.records.costs import (  # noqa: F401
    PHASES,
    OUTSIDE,
    MEMORY_MODELS,
    check_memory_model,
    Cost,
    OpCost,
    ModuleInfo,
    OpTiming,
    ModuleTiming,
    Roof,
    DeviceInfo,
    frozen_record,
)
from torch_roofline.records.rows import (  # noqa: F401
    BOUNDS,
    RoofRef,
    ModuleRow,
    OpRow,
    BoundShare,
    Totals,
    UncountedOp,
    TimeLostItem,
)

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
    "BOUNDS",
    "RoofRef",
    "ModuleRow",
    "OpRow",
    "BoundShare",
    "Totals",
    "UncountedOp",
    "TimeLostItem",
]
