"""A roofline from a saved torch.profiler / Kineto trace (GPU traces included).

The trace gives the times (the same reader and attribution the live profiler uses:
:mod:`torch_roofline.timing`); the work comes from one of:

1. ``model`` and ``inputs``: the counter's analytic FLOPs and bytes, joined to the trace's
   ops by (module, phase, op);
2. the trace's recorded shapes (``record_shapes=True``): each op row's call rebuilt with
   meta tensors and counted (:mod:`torch_roofline.timing.shapes`);
3. CUPTI hardware counters in the trace (``cuda_profiler_range`` events): measured FLOPs per
   kernel, summed per op (bytes from DRAM counters where recorded, else unknown);
4. none of these: a timing-only report, every op listed as uncounted.

The roofs come from the trace header's GPU name (``deviceProperties``) looked up in the
catalog, or from ``roof=``; a CPU trace uses this machine's CPU roofs, with a note.

A folder of traces (one per rank) goes to :mod:`torch_roofline.traceset`; one file is read by
:mod:`torch_roofline.trace_file`, which holds the reading itself.
"""

from __future__ import annotations

import glob
import os
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

import torch
from torch import nn

from torch_roofline.count.result import CountResult
from torch_roofline.report import RooflineReport
from torch_roofline.trace_file import CounterComparison, compare_counters, counter_costs, read_trace, trace_device
from torch_roofline.timing.trace import Trace

if TYPE_CHECKING:  # pragma: no cover
    from torch_roofline.traceset import TraceSetReport

__all__ = ["from_trace", "trace_device", "counter_costs", "CounterComparison", "compare_counters"]


def from_trace(
    path: Union[str, "os.PathLike[str]", Trace],
    model: Optional[nn.Module] = None,
    inputs: Any = None,
    *,
    roof: Any = None,
    backward: bool = False,
    loss_fn: Optional[Callable[[Any], torch.Tensor]] = None,
    memory_model: str = "op",
    steps: Optional[int] = None,
    counted: Optional[CountResult] = None,
) -> Union[RooflineReport, "TraceSetReport"]:
    """The roofline report of a saved trace (a :class:`RooflineReport`), or of a job's traces.

    Args:
        path: a Chrome/Kineto trace (``.json`` or ``.json.gz``) or a loaded :class:`Trace`.
        model, inputs: the traced model and its inputs (a meta model with meta inputs is fine):
            FLOPs and bytes then come from the counter. Without them, from the trace's recorded
            shapes when present (ops named as the trace's outermost aten ops: ``aten.conv2d``,
            ``aten.linear``), else its CUPTI counters, else the report is timing-only.
        roof: roofs to use (catalog name, roofs file, ``Device``); default: the trace's GPU.
        backward: the traced step ran backward too (for counting with ``model``).
        loss_fn: the loss the traced step used (for counting its backward exactly).
        memory_model: ``"op"`` or ``"compulsory"``.
        steps: how many model steps the trace holds; default: found by
            :func:`~torch_roofline.timing.steps.split_steps` (``ProfilerStep`` markers, optimizer
            steps, sibling annotations, backward passes; the report's notes say which); times are
            divided by it, so per-step counts and times line up.
        counted: ``model``'s step already counted
            (:func:`~torch_roofline.count.replay.count_without_compute` with the same
            ``backward``, ``loss_fn`` and ``memory_model``), used instead of counting it again.

    A trace without our module ranges (recorded without :class:`RooflineProfiler`) has no
    module structure: the counted ops are then joined on the root. On GPU traces the step
    time is the device's busy time (kernels, memcpys, memsets), not the host's wall span.

    A folder or a glob pattern (one trace per rank of a distributed job) is read by
    :func:`torch_roofline.traceset.from_traces` (``roof`` and ``memory_model`` passed on):
    the result is then a :class:`~torch_roofline.traceset.TraceSetReport`, every rank's
    report and the summary across ranks.

    Example::

        report = from_trace("trace.json.gz", torchvision.models.alexnet(), torch.randn(128, 3, 224, 224))
        job = from_trace("traces/")  # one trace per rank
    """
    if isinstance(path, (str, os.PathLike)) and (os.path.isdir(path) or (
            glob.has_magic(os.fspath(path)) and not os.path.exists(path))):
        return _from_trace_set(path, model, backward, loss_fn, steps, counted, roof=roof, memory_model=memory_model)
    return read_trace(path, model, inputs, roof=roof, backward=backward, loss_fn=loss_fn,
                      memory_model=memory_model, steps=steps, counted=counted)


def _from_trace_set(path: Any, model: Any, backward: bool, loss_fn: Any, steps: Any, counted: Any, *, roof: Any,
                    memory_model: str) -> Any:
    given = [n for n, v in (("model", model), ("backward", backward or None), ("loss_fn", loss_fn), ("steps", steps),
                            ("counted", counted)) if v is not None]
    if given:
        raise ValueError(f"from_trace({os.fspath(path)!r}, {'=..., '.join(given)}=...): a folder or glob pattern is a "
                         "job's traces, one per rank, each counted from its own recorded shapes; drop "
                         f"{', '.join(given)}, or pass one trace file")
    from torch_roofline.traceset import from_traces

    return from_traces(path, roof=roof, memory_model=memory_model)

