"""torch_roofline: how close each module of a PyTorch model runs to the hardware's roofs.

Public entry points:

* :func:`count` — FLOPs (2 per multiply-accumulate), MACs and bytes per aten op, module and
  phase; works on meta and fake tensors.
* :class:`RooflineProfiler` — measure a real step with torch.profiler and place each module
  and op on the device's roofline (:class:`RooflineReport`).
* :func:`predict` — the roofline of a model on catalog devices you do not have.
* :func:`from_trace` — a roofline from a saved torch.profiler/Kineto trace (GPU traces too).
* :func:`from_traces` — a job's traces, one per rank: every rank's report and the summary
  across ranks, the straggler named (:class:`~torch_roofline.traceset.TraceSetReport`).
* :func:`analyse` — the report of costs and timings you gathered yourself (records), on given roofs.
* :mod:`torch_roofline.devices` — the device catalog, detection and measured roofs.
"""

from torch_roofline._version import __version__
from torch_roofline.count import CountResult, count, register_formula
from torch_roofline.records import Cost, ModuleInfo, ModuleTiming, OpCost, OpTiming, Roof
from torch_roofline.report import RooflineReport
from torch_roofline.report.build import analyse
from torch_roofline.profiler import RooflineProfiler, schedule
from torch_roofline.predict import predict
from torch_roofline.offline import from_trace
from torch_roofline.traceset import TraceSetReport, from_traces
from torch_roofline import devices

__all__ = [
    "__version__",
    "count",
    "CountResult",
    "register_formula",
    "RooflineProfiler",
    "schedule",
    "RooflineReport",
    "analyse",
    "predict",
    "from_trace",
    "from_traces",
    "TraceSetReport",
    "devices",
    "Cost",
    "OpCost",
    "OpTiming",
    "ModuleInfo",
    "ModuleTiming",
    "Roof",
]
