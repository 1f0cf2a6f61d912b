"""Roofs: the datasheet catalog, detection of this machine's device, and measured ceilings.

The rest of the package reads roofs only through :class:`Device`: ``id``, ``name``,
``source``, ``memory_bandwidth`` (B/s), ``peak_flops(dtype, unit)`` (FLOP/s),
``ridge(dtype, unit)`` (FLOP/B) and ``roof(dtype, unit)`` (the one place that picks the roof
an op is measured against: TF32, GeForce accumulate rates, matrix -> vector fallback).
:mod:`~torch_roofline.devices.placement` applies it to counted work for every report:
:func:`resolve_device` (what ``roof=`` names), :func:`place` (each op on its roof, cuDNN's TF32
convolutions included) and :func:`device_info` (the report's device section).

Where roofs come from (``Device.source``):

* ``"datasheet"``: :func:`get` / :func:`catalog`, rows of ``catalog.toml`` (dense peaks,
  provenance per number; ``Roof.source`` says ``"estimated"`` where a number is one);
* ``"estimated"``: :func:`detect` on an unlisted GPU or on a CPU (cores x clock x FLOP/cycle);
  :func:`estimate_cpu` (nothing measured: the core's FMA units and matrix extensions, the
  max clock, the platform's DRAM peak);
* ``"measured"``: :func:`measure` (GEMM sweep and STREAM copy/triad, cached); :func:`auto` on
  a CPU (a time-boxed measurement, cached per machine);
* ``"user"``: ``Device(name=..., peak_flops={...}, bandwidth=...)`` or :func:`load_file`.

:func:`auto` is what ``roof="auto"`` resolves to: the catalog row of a GPU, MEASURED roofs
of a CPU (the first call measures for about 10 s, progress on stderr, then the cache
answers), or the CPU estimate when measuring is refused (``measure=False`` or
``TORCH_ROOFLINE_NO_BENCH=1``). Every roof says how it was obtained:
``Device.provenance[key]`` and ``Roof.how`` (``"measured (fp32: fastest of 412 oneDNN GEMMs
n=512, ...); bandwidth: measured (...)"``).

Catalog ids are short and lower case: vendor dropped, form factor and memory kept where
they change the numbers: ``h100-sxm``, ``h100-pcie``, ``h100-nvl``, ``h200``, ``b200``,
``a100-sxm4-80gb``, ``a100-pcie-40gb``, ``a10``, ``a10g``, ``l4``, ``l40s``, ``t4``,
``v100-sxm2-16gb``, ``v100s-pcie``, ``gtx-1080-ti``, ``rtx-4090``, ``mi300x``, ``mi250x``,
``tpu-v4``, ``i9-10980xe``... (``torch-roofline devices`` lists them all).

Example::

    >>> from torch_roofline import devices
    >>> h100 = devices.get("NVIDIA H100 80GB HBM3")
    >>> h100.peak_flops("bf16") / 1e12           # dense, not the 2:4-sparse 1979
    989.4
    >>> devices.get("gtx-1080-ti").roof("fp32")  # no tensor cores: the vector roof
    Roof(dtype='fp32', unit='vector', peak_flops_per_s=11340000000000.0, ...)
"""

from __future__ import annotations

from torch_roofline.devices._auto import NO_BENCH_ENV, auto, estimate_cpu
from torch_roofline.devices._catalog import CatalogError, load_file
from torch_roofline.devices._cpu import cpu_peak_flops
from torch_roofline.devices._detect import detect
from torch_roofline.devices._device import (
    DTYPES,
    UNITS,
    Device,
    UnsupportedDtypeError,
    dtype_key,
    tf32_allowed,
)
from torch_roofline.devices._lookup import UnknownDeviceError, catalog, get
from torch_roofline.devices.bench import BenchResult, BenchStats, measure, run_bench
from torch_roofline.devices.placement import conv_tf32, device_info, device_roofs, place, resolve_device

__all__ = [
    "DTYPES",
    "UNITS",
    "Device",
    "UnknownDeviceError",
    "UnsupportedDtypeError",
    "CatalogError",
    "BenchResult",
    "BenchStats",
    "get",
    "catalog",
    "detect",
    "auto",
    "estimate_cpu",
    "NO_BENCH_ENV",
    "load_file",
    "measure",
    "run_bench",
    "cpu_peak_flops",
    "dtype_key",
    "tf32_allowed",
    "resolve_device",
    "place",
    "device_roofs",
    "device_info",
    "conv_tf32",
]
