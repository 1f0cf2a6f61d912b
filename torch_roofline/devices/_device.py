"""The :class:`Device` record: a device's roofs, and the one rule that picks a roof for an op.

Units: peaks in FLOP/s (2 per fused multiply-add, dense, never 2:4-sparse), bandwidths in
B/s, sizes in bytes; all SI decimal except sizes, which are plain byte counts.

Dtype keys are short: ``fp64 fp32 tf32 fp16 bf16 fp8 int8``. Units are ``"matrix"``
(tensor cores, MFMA, AMX) and ``"vector"`` (CUDA cores, SIMD FMA units).

How a roof is chosen (:meth:`Device.roof`, the only place this happens):

1. fp32 matrix work uses the tf32 roof when TF32 is allowed (argument, else torch's
   settings) and the device has tf32 matrix units.
2. A listed ``(dtype, unit)`` peak is used as is.
3. Vector work in fp16/bf16/tf32 uses the fp32 vector peak unless a vector peak for that
   dtype is listed: PyTorch's elementwise kernels load low-precision values and compute in
   fp32 (``at::opmath_type``). fp8 vector work does the same, but only on a device that has
   fp8 at all (fp8 matrix units): elsewhere fp8 is a dtype the device lacks.
4. Matrix work in a dtype without matrix units runs on the vector units (a GTX 1080 Ti
   fp32 GEMM is measured against its CUDA-core peak); the returned roof says ``"vector"``.
5. Anything else raises :class:`UnsupportedDtypeError`, naming the device, the dtype and
   the dtypes it has. Never zero, never another device's number.
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Tuple, Union

import torch

from torch_roofline.records import Roof
from torch_roofline.records.dtypes import DTYPE_KEYS, key_of_name

__all__ = [
    "DTYPES",
    "UNITS",
    "SOURCES",
    "Device",
    "UnsupportedDtypeError",
    "dtype_key",
    "tf32_allowed",
]

DTYPES: Tuple[str, ...] = DTYPE_KEYS  # the package's one dtype table: torch_roofline.records.dtypes
UNITS: Tuple[str, ...] = ("matrix", "vector")
SOURCES: Tuple[str, ...] = ("datasheet", "estimated", "measured", "user")

# Vector work in these dtypes computes in fp32 in PyTorch's kernels (at::opmath_type).
_OPMATH_FP32 = ("fp16", "bf16", "tf32", "fp8")


class UnsupportedDtypeError(ValueError):
    """A dtype the device has no roof for (fp8 on a V100), or a dtype name we do not know."""


def dtype_key(dtype: Union[str, torch.dtype]) -> str:
    """The short dtype key (``"bf16"``) of a ``torch.dtype`` or a dtype name.

    Accepts ``torch.bfloat16``, ``"torch.bfloat16"``, ``"bfloat16"``, ``"bf16"``; every
    ``float8_*`` variant maps to ``"fp8"``; ``int8`` and ``uint8`` map to ``"int8"``.

    >>> dtype_key(torch.float8_e4m3fn)
    'fp8'
    """
    key = key_of_name(str(dtype))
    if key is None:
        raise UnsupportedDtypeError(
            f"dtype {dtype!r} has no roof: expected one of {', '.join(DTYPES)} "
            f"(or a torch.dtype / name such as torch.bfloat16, 'float32', 'float8_e4m3fn')"
        )
    return key


def _unit_key(unit: str) -> str:
    if unit not in UNITS:
        raise ValueError(f"unit={unit!r}: expected 'matrix' (tensor cores, MFMA, AMX) or 'vector'")
    return unit


def tf32_allowed() -> bool:
    """Whether torch's current settings let fp32 matmuls run in TF32.

    True when ``torch.backends.cuda.matmul.allow_tf32`` is set or the float32 matmul
    precision is not ``"highest"`` (``torch.set_float32_matmul_precision("high")``).
    """
    if torch.get_float32_matmul_precision() != "highest":
        return True
    try:
        return bool(torch.backends.cuda.matmul.allow_tf32)
    except (AttributeError, RuntimeError):  # pragma: no cover - builds without the flag
        return False


def _parse_peaks(peak_flops: Mapping[str, float]) -> Dict[str, float]:
    """``{"bf16": x, "fp32:vector": y}`` -> ``{"bf16:matrix": x, "bf16:vector": x, ...}``.

    A plain dtype key sets both units; ``"dtype:unit"`` sets one and wins over a plain key.
    """
    plain: Dict[str, float] = {}
    explicit: Dict[str, float] = {}
    for key, value in peak_flops.items():
        name, _, unit = str(key).partition(":")
        dtype = dtype_key(name)
        value = float(value)
        if not value > 0 or value != value or value == float("inf"):
            raise ValueError(
                f"peak_flops[{key!r}] = {value!r}: expected a positive finite FLOP/s number "
                f"(e.g. 1e14); leave the dtype out if the device lacks it"
            )
        if unit:
            explicit[f"{dtype}:{_unit_key(unit)}"] = value
        else:
            for u in UNITS:
                plain[f"{dtype}:{u}"] = value
    return {**plain, **explicit}


def _freeze(mapping: Optional[Mapping]) -> Mapping:
    return types.MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True, init=False)
class Device:
    """A device's roofs: dense peak FLOP/s per (dtype, unit) and memory bandwidth.

    Attributes:
        id: short catalog id (``"h100-sxm"``); for user devices, derived from the name.
        name: human name (``"NVIDIA H100 SXM5 80GB"``).
        source: ``"datasheet"``, ``"estimated"``, ``"measured"`` or ``"user"``.
        memory_bandwidth: DRAM bandwidth in B/s (decimal: 1 TB/s = 1e12 B/s).
        peaks: ``{"bf16:matrix": FLOP/s, ...}``: the peaks the source lists (read-only);
            read them through :meth:`peak_flops` / :meth:`roof`, which apply the fallbacks.
        memory_bytes: device memory in bytes, ``None`` if unknown.
        l2_bytes: last-level on-chip cache (L2 on GPUs, L3 on CPUs) in bytes, or ``None``.
        interconnect_bandwidth: the device's link bandwidth in B/s as the vendor quotes it
            (NVLink: aggregate, both directions), ``None`` if unknown.
        provenance: field -> where the number comes from (``"read [source] ..."``,
            ``"derived (...)"``, ``"estimated (...)"`` or ``"measured (...)"``); keys are
            ``"memory_bandwidth"``, ``"memory_bytes"``, ``"l2_bytes"``,
            ``"interconnect_bandwidth"`` and ``"dtype:unit"``.
        vendor, kind, arch: ``"nvidia"``/``"amd"``/..., ``"gpu"``/``"cpu"``/``"tpu"``, and
            the architecture name; informational.
        notes: caveats in words.

    Custom devices (source ``"user"``)::

        Device(name="my-gpu", peak_flops={"fp32": 1e13, "bf16:matrix": 1e14}, bandwidth=1e12)

    A plain dtype key sets both units, ``"dtype:unit"`` one of them. (The record has a
    ``peaks`` field and a ``peak_flops()`` method: a frozen dataclass cannot have both
    under one name, so the constructor takes ``peak_flops=`` and stores ``peaks``.)
    """

    id: str
    name: str
    source: str
    memory_bandwidth: float
    peaks: Mapping[str, float]
    memory_bytes: Optional[int]
    l2_bytes: Optional[int]
    interconnect_bandwidth: Optional[float]
    provenance: Mapping[str, str]
    vendor: str
    kind: str
    arch: str
    notes: str

    def __init__(
        self,
        name: str,
        peak_flops: Optional[Mapping[str, float]] = None,
        bandwidth: Optional[float] = None,
        *,
        id: Optional[str] = None,
        source: str = "user",
        memory_bandwidth: Optional[float] = None,
        peaks: Optional[Mapping[str, float]] = None,
        memory_bytes: Optional[int] = None,
        l2_bytes: Optional[int] = None,
        interconnect_bandwidth: Optional[float] = None,
        provenance: Optional[Mapping[str, str]] = None,
        vendor: str = "",
        kind: str = "",
        arch: str = "",
        notes: str = "",
    ) -> None:
        if memory_bandwidth is None:
            memory_bandwidth = bandwidth
        elif bandwidth is not None and float(bandwidth) != float(memory_bandwidth):
            raise ValueError(f"Device({name!r}): give bandwidth= or memory_bandwidth=, not both")
        if memory_bandwidth is None or not float(memory_bandwidth) > 0:
            raise ValueError(
                f"Device({name!r}): bandwidth={memory_bandwidth!r}: expected the memory "
                f"bandwidth in B/s, e.g. bandwidth=1e12 for 1 TB/s"
            )
        if source not in SOURCES:
            raise ValueError(f"Device({name!r}): source={source!r}: expected one of {SOURCES}")
        table: Dict[str, float] = {}
        if peaks:
            table.update(_parse_peaks(peaks))
        if peak_flops:
            table.update(_parse_peaks(peak_flops))
        if not table:
            raise ValueError(
                f"Device({name!r}): no peaks: pass peak_flops={{'fp32': 1e13, 'bf16': 1e14}} "
                f"(FLOP/s; a plain dtype sets both units, 'bf16:matrix' one)"
            )
        set_ = object.__setattr__
        set_(self, "id", id or _slug(name))
        set_(self, "name", name)
        set_(self, "source", source)
        set_(self, "memory_bandwidth", float(memory_bandwidth))
        set_(self, "peaks", _freeze(dict(sorted(table.items(), key=_peak_order))))
        set_(self, "memory_bytes", None if memory_bytes is None else int(memory_bytes))
        set_(self, "l2_bytes", None if l2_bytes is None else int(l2_bytes))
        set_(self, "interconnect_bandwidth",
             None if interconnect_bandwidth is None else float(interconnect_bandwidth))
        set_(self, "provenance", _freeze(provenance))
        set_(self, "vendor", vendor)
        set_(self, "kind", kind)
        set_(self, "arch", arch)
        set_(self, "notes", notes)

    def __hash__(self) -> int:  # the mappings are read-only views: hash their items
        return hash((self.id, self.name, self.source, self.memory_bandwidth,
                     tuple(self.peaks.items())))

    # -- roofs ---------------------------------------------------------------------------
    def dtypes(self) -> List[str]:
        """Dtype keys the device has a listed peak for, in :data:`DTYPES` order."""
        listed = {k.split(":")[0] for k in self.peaks}
        return [d for d in DTYPES if d in listed]

    def _resolve(self, dtype: str, unit: str) -> Tuple[str, str]:
        """(unit actually used, key of the listed peak used) for ``dtype`` work, rules 2-5."""
        for key in (f"{dtype}:{unit}", f"{dtype}:vector"):
            if key in self.peaks:
                return key.split(":")[1], key
        has_dtype = dtype in ("fp16", "bf16", "tf32") or (
            dtype == "fp8" and "fp8:matrix" in self.peaks
        )
        if dtype in _OPMATH_FP32 and has_dtype and "fp32:vector" in self.peaks:
            return "vector", "fp32:vector"
        raise UnsupportedDtypeError(
            f"device {self.id!r} ({self.name}) has no {dtype} roof for {unit} work: it lists "
            f"{', '.join(self.dtypes()) or 'no dtypes'}. Compute in one of those dtypes, or "
            f"give your own roofs, e.g. Device(name='{self.id}-custom', "
            f"peak_flops={{'{dtype}': ...}}, bandwidth={self.memory_bandwidth:.3g})"
        )

    def peak_flops(self, dtype: Union[str, torch.dtype], unit: str = "matrix") -> float:
        """Dense peak in FLOP/s for ``dtype`` work on ``unit``, with the fallbacks above.

        Raises:
            UnsupportedDtypeError: the device lacks the dtype (fp8 on a V100).
        """
        return self.peaks[self._resolve(dtype_key(dtype), _unit_key(unit))[1]]

    def has_peak(self, dtype: Union[str, torch.dtype], unit: str = "matrix") -> bool:
        """Whether :meth:`peak_flops` has an answer for ``(dtype, unit)``."""
        try:
            self.peak_flops(dtype, unit)
        except UnsupportedDtypeError:
            return False
        return True

    def ridge(self, dtype: Union[str, torch.dtype], unit: str = "matrix") -> float:
        """Ridge point in FLOP/B: peak FLOP/s over memory bandwidth B/s."""
        return self.peak_flops(dtype, unit) / self.memory_bandwidth

    def roof(
        self,
        dtype: Union[str, torch.dtype],
        unit: str = "matrix",
        *,
        allow_tf32: Optional[bool] = None,
    ) -> Roof:
        """The roof that work of ``dtype`` on ``unit`` is measured against.

        Args:
            dtype: the dtype the op computes in (``torch.float32``, ``"bf16"``, ...).
            unit: ``"matrix"`` for matmul-like ops, ``"vector"`` for the rest.
            allow_tf32: whether fp32 matrix work may use TF32; ``None`` reads torch's
                settings (:func:`tf32_allowed`).

        Returns:
            A :class:`~torch_roofline.records.Roof` whose ``dtype``/``unit`` say which
            roof was used (``"tf32"``; ``"vector"`` when there is no matrix unit), and
            whose ``source`` is ``"estimated"`` where the peak or bandwidth is an estimate.

        Raises:
            UnsupportedDtypeError: the device lacks the dtype (fp8 on a V100).

        Example::

            >>> get("gtx-1080-ti").roof("fp32").unit   # no tensor cores
            'vector'
        """
        key = dtype_key(dtype)
        unit = _unit_key(unit)
        if key == "fp32" and unit == "matrix" and "tf32:matrix" in self.peaks:
            if tf32_allowed() if allow_tf32 is None else allow_tf32:
                key = "tf32"
        used_unit, peak_key = self._resolve(key, unit)
        return Roof(
            dtype=key,
            unit=used_unit,
            peak_flops_per_s=self.peaks[peak_key],
            bandwidth_bytes_per_s=self.memory_bandwidth,
            source=self._roof_source(peak_key),
            how=self.how(peak_key),
        )

    def roofs(self) -> List[Roof]:
        """Every listed ``(dtype, unit)`` roof, in dtype then unit order (no fallbacks)."""
        return [
            Roof(dtype=k.split(":")[0], unit=k.split(":")[1], peak_flops_per_s=v,
                 bandwidth_bytes_per_s=self.memory_bandwidth, source=self._roof_source(k),
                 how=self.how(k))
            for k, v in self.peaks.items()
        ]

    def how(self, peak_key: str) -> str:
        """Where the ``"dtype:unit"`` peak and the bandwidth come from, in words (``Roof.how``).

        ``"<peak provenance>; bandwidth: <bandwidth provenance>"``; the device's source
        where a provenance is missing (user devices).
        """
        peak = self.provenance.get(peak_key) or self.source
        bandwidth = self.provenance.get("memory_bandwidth") or self.source
        return f"{peak}; bandwidth: {bandwidth}"

    def _roof_source(self, peak_key: str) -> str:
        """The device's source, or ``"estimated"`` where this peak or the bandwidth is one.

        A measured CPU Device lists the dtypes it did not measure as estimates, and a
        datasheet row may hold an estimated number: their roofs say ``"estimated"``.
        """
        for field in (peak_key, "memory_bandwidth"):
            if self.provenance.get(field, "").startswith("estimated"):
                return "estimated"
        return self.source


def _peak_order(item: Tuple[str, float]) -> Tuple[int, int]:
    dtype, unit = item[0].split(":")
    return DTYPES.index(dtype), UNITS.index(unit)


def _slug(name: str) -> str:
    out = "".join(c if c.isalnum() else "-" for c in name.lower())
    return "-".join(p for p in out.split("-") if p) or "device"
