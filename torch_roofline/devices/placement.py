"""Placing counted work on a device's roofs: the one place that decides which roof an op meets.

Every report (a live window, a saved trace, a prediction on meta tensors) goes through these:

* :func:`resolve_device`: what ``roof=`` names (``"auto"``, ``"measured"``, a catalog name, a
  roofs file, a :class:`~torch_roofline.devices.Device`) as a ``Device``;
* :func:`place`: the ops as the device runs them (:func:`conv_tf32`: cuDNN's TF32
  convolutions) and the roof of each (dtype, unit) they use (:func:`device_roofs`);
* :func:`device_info`: the report's device section.

Example::

    dev = resolve_device("h100-sxm", None)
    ops, roofs = place(costs, dev)   # roofs[("bfloat16", "matrix")].peak_flops_per_s, FLOP/s
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional, Sequence, Tuple

import torch

from torch_roofline.devices._auto import auto
from torch_roofline.devices._catalog import load_file
from torch_roofline.devices._detect import detect
from torch_roofline.devices._device import Device, UnsupportedDtypeError
from torch_roofline.devices._lookup import get
from torch_roofline.devices.bench import measure
from torch_roofline.records import DeviceInfo, OpCost, Roof

__all__ = ["conv_tf32", "device_roofs", "place", "device_info", "resolve_device"]

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

    ``roof``: ``"auto"`` (catalog row for a known GPU; on a CPU, roofs measured on the machine,
    cached, or labelled estimates where measuring is refused: :func:`torch_roofline.devices.auto`), ``"datasheet"`` (the catalog row; an error if the device has none),
    ``"measured"`` (micro-benchmarked on the spot, cached), a catalog id or name, a path to
    a TOML/YAML roofs file, or a ``Device``.
    """
    if isinstance(roof, Device):
        return roof
    if not isinstance(roof, str):
        raise TypeError(f"roof={roof!r}: expected 'auto', 'datasheet', 'measured', a device name or a Device")
    kind = (torch_device or torch.device("cpu")).type
    if roof == "auto":
        return auto(torch_device)
    if roof == "measured":
        return measure(device=kind)
    if roof == "datasheet":
        dev = detect(torch_device)
        if dev.source != "datasheet":
            raise ValueError(
                f"roof='datasheet': {dev.name!r} has no datasheet row in the catalog (its roofs are "
                f"{dev.source}); use roof='auto' or 'measured', or name a catalog device"
            )
        return dev
    if roof.endswith((".toml", ".yaml", ".yml")):
        loaded = load_file(roof)
        return loaded[0] if isinstance(loaded, (list, tuple)) else loaded
    return get(roof)
