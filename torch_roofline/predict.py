"""What-if: a model's roofline on devices you do not have.

The counter runs on meta and fake tensors, so a model of any size is counted without
allocating it; the counts are then placed on each catalog device's roofs. The times in
these reports are roofline times — lower bounds, not forecasts — and the reports say so
(``predicted=True``, ``time_s`` null).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, Optional, Sequence, Union

import torch
from torch import nn

from torch_roofline.analysis import AnalysisOptions
from torch_roofline.records import StepRecords
from torch_roofline.report.build import analyse_on
from torch_roofline.count import Inputs
from torch_roofline.count.replay import count_without_compute
from torch_roofline.count.result import CountResult
from torch_roofline.devices.placement import resolve_device
from torch_roofline.records.dtypes import dtype_of, float_itemsize
from torch_roofline.report import RooflineReport

__all__ = ["predict", "retype", "WHAT_IF_DTYPES"]

#: dtype what-if targets: bytes per element and the dtype name the roofs are looked up by.
WHAT_IF_DTYPES = {k: (dtype_of(k).itemsize, dtype_of(k).storage) for k in ("fp32", "bf16", "fp16", "fp8", "int8")}


def retype(costs: CountResult, dtype: str) -> CountResult:
    """The same step with every floating-point tensor stored and computed in ``dtype``.

    Bytes of floating-point ops scale by the element-size ratio (weights and activations
    both at the new width) and each such op is looked up on the ``dtype`` roof; FLOPs are
    unchanged. NB: a what-if, not a quantisation recipe: scales, requantisation and
    higher-precision accumulators are not counted (seed 001 warns they cost time).
    """
    if dtype not in WHAT_IF_DTYPES:
        raise ValueError(f"dtype={dtype!r}: expected one of {sorted(WHAT_IF_DTYPES)}")
    size, name = WHAT_IF_DTYPES[dtype]
    ops = []
    for op in costs.ops:
        old = float_itemsize(op.dtype or "")
        if old is None:
            ops.append(op)
            continue

        def scale(b: int) -> int:
            return b * size // old

        ops.append(dataclasses.replace(
            op, dtype=name, bytes_read=scale(op.bytes_read), bytes_written=scale(op.bytes_written),
            compulsory_bytes_read=scale(op.compulsory_bytes_read),
            compulsory_bytes_written=scale(op.compulsory_bytes_written)))
    notes = costs.notes + (f"dtype what-if: floating-point tensors re-sized to {dtype} ({size} B/element)",)
    return dataclasses.replace(costs, ops=tuple(ops), notes=notes)


def predict(
    model: nn.Module,
    inputs: Inputs,
    on: Union[str, Sequence[Any]] = ("cpu",),
    *,
    dtype: Optional[str] = None,
    backward: bool = False,
    memory_model: str = "op",
    loss_fn: Optional[Callable[[Any], torch.Tensor]] = None,
) -> Dict[str, RooflineReport]:
    """Predicted (roofline) reports of one step of ``model`` on each device of ``on``.

    Args:
        model: an ``nn.Module``; on the meta device (``with torch.device("meta"): ...``) it
            is analysed without allocating weights; a real model is counted on fake copies.
        inputs: as for :func:`torch_roofline.count` (meta tensors for a meta model).
        on: catalog ids or names (``"h100-sxm"``), ``"cpu"`` (this machine), roofs files,
            or ``Device`` objects.
        dtype: what-if storage/compute dtype: ``fp32``, ``bf16``, ``fp16``, ``fp8``, ``int8``
            (see :func:`retype`); default: the dtypes the model really uses.
        backward: predict forward + backward.
        memory_model: ``"op"`` (unfused) or ``"compulsory"`` (each storage once).

    Returns:
        ``{device id: RooflineReport}`` with ``predicted=True``: ``time_s`` null,
        ``roofline_time_s`` the prediction, bound compute/memory by each op's ridge.

    Example::

        with torch.device("meta"):
            net = torchvision.models.vgg16()
            x = torch.empty(1, 3, 224, 224)
        reports = predict(net, x, on=["gtx-1080-ti", "h100-sxm"], memory_model="compulsory")
    """
    if isinstance(on, str):
        on = [on]
    if not on:
        raise ValueError("predict(on=[]): name at least one device, e.g. on=['h100-sxm']")
    devices = [_device(spec) for spec in on]  # resolve names first: a typo fails before counting
    costs = count_without_compute(model, inputs, backward=backward, loss_fn=loss_fn, memory_model=memory_model)
    if dtype is not None:
        costs = retype(costs, dtype)
    reports: Dict[str, RooflineReport] = {}
    for dev in devices:
        step = StepRecords(costs.ops, modules=costs.modules, predicted=True, model=type(model).__name__)
        reports[dev.id] = analyse_on(dev, step, AnalysisOptions(memory_model=memory_model)).with_notes(
            *costs.uncounted_notes())
    return reports


def _device(spec: Any) -> Any:
    if isinstance(spec, str) and spec.lower() in ("cpu", "this-cpu"):
        from torch_roofline import devices

        return devices.detect(torch.device("cpu"))
    return resolve_device(spec, None)
