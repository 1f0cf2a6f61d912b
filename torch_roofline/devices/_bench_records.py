"""What a roofs micro-benchmark measured: :class:`BenchStats` (one peak's samples and how they
were taken) and :class:`BenchResult` (a device's peaks per dtype and its stream bandwidth).
Units: FLOP/s, B/s, seconds.
"""

from __future__ import annotations

import statistics
import time
import types
from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence

__all__ = ["BenchStats", "BenchResult"]


@dataclass(frozen=True)
class BenchStats:
    """Spread of one measured rate over repeats.

    Attributes:
        min, median, max: the rate in FLOP/s (GEMM) or B/s (copy, triad).
        samples: number of repeats.
        size: GEMM side n (0: the convolution probe), or array length in elements for
            copy/triad.
        library: the GEMM library (``"torch.mm"``, ``"oneDNN"``); ``""`` for the others.
    """

    min: float
    median: float
    max: float
    samples: int
    size: int
    library: str = ""

    @classmethod
    def of(cls, rates: Sequence[float], size: int, library: str = "") -> "BenchStats":
        return cls(min(rates), statistics.median(rates), max(rates), len(rates), int(size), library)


@dataclass(frozen=True)
class BenchResult:
    """A measurement of one device.

    Attributes:
        device: ``"cpu"`` or ``"cuda:0"``.
        device_name: CPU model or ``torch.cuda.get_device_name()``.
        torch_version: ``torch.__version__`` it was measured with.
        threads: torch intra-op threads (CPU) or 0.
        quick: whether it was the quick (few seconds) mode.
        gemm: dtype key -> GEMM FLOP/s stats at the best (library, size) (read-only mapping).
        gemm_by_library: dtype key -> library -> that library's best GEMM stats.
        conv: dtype key -> FLOP/s stats of the 3x3 convolution probe (read-only mapping).
        copy: STREAM copy B/s (2 x 4 bytes per element).
        triad: STREAM triad B/s (3 x 4 bytes per element).
        array_bytes: bytes of one copy/triad array.
        created_s: UNIX time of the measurement.
        mode: ``"quick"``, ``"full"`` (:func:`run_bench`) or ``"roofs"`` (the time-boxed,
            interleaved run behind ``roof="auto"``, :mod:`._cpu_bench`); ``""`` in caches
            written before the field existed (then ``quick`` tells).
        others_cpu_share: share of the machine's CPU time that other processes (and the
            hypervisor: steal) used while this ran, 0..1; ``None`` when unknown. A busy
            machine gives low roofs.
        seconds: wall-clock seconds the measurement took; ``None`` when unknown.
        measurements: how many runs this result merges (fastest samples of each kept).
    """

    device: str
    device_name: str
    torch_version: str
    threads: int
    quick: bool
    gemm: Mapping[str, BenchStats]
    copy: Optional[BenchStats]
    triad: Optional[BenchStats]
    array_bytes: int
    created_s: float = field(default_factory=time.time)
    conv: Mapping[str, BenchStats] = field(default_factory=lambda: types.MappingProxyType({}))
    gemm_by_library: Mapping[str, Mapping[str, BenchStats]] = field(
        default_factory=lambda: types.MappingProxyType({}))
    mode: str = ""
    others_cpu_share: Optional[float] = None
    seconds: Optional[float] = None
    measurements: int = 1

    @property
    def mode_name(self) -> str:
        """``mode``, or ``"quick"``/``"full"`` for results cached before it was recorded."""
        return self.mode or ("quick" if self.quick else "full")

    def matrix_peak(self, dtype: str) -> BenchStats:
        """The matrix roof's measurement: the better of the GEMM sweep and the conv probe."""
        candidates = [s for s in (self.gemm.get(dtype), self.conv.get(dtype)) if s is not None]
        return max(candidates, key=lambda s: s.max)

    def to_dict(self) -> dict:
        """JSON-ready dict (rates in FLOP/s and B/s)."""
        stats = lambda s: None if s is None else dict(s.__dict__)  # noqa: E731
        return {
            "device": self.device, "device_name": self.device_name,
            "torch_version": self.torch_version, "threads": self.threads, "quick": self.quick,
            "gemm_flops_per_s": {k: stats(v) for k, v in self.gemm.items()},
            "conv_flops_per_s": {k: stats(v) for k, v in self.conv.items()},
            "gemm_by_library_flops_per_s": {
                k: {lib: stats(v) for lib, v in libs.items()} for k, libs in self.gemm_by_library.items()},
            "copy_bytes_per_s": stats(self.copy), "triad_bytes_per_s": stats(self.triad),
            "array_bytes": self.array_bytes, "created_s": self.created_s,
            "mode": self.mode_name, "others_cpu_share": self.others_cpu_share, "seconds": self.seconds,
            "measurements": self.measurements,
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> "BenchResult":
        stats = lambda d: None if d is None else BenchStats(**d)  # noqa: E731
        return cls(
            device=data["device"], device_name=data["device_name"],
            torch_version=data["torch_version"], threads=int(data["threads"]),
            quick=bool(data["quick"]),
            gemm=types.MappingProxyType({k: stats(v) for k, v in data["gemm_flops_per_s"].items()}),
            copy=stats(data["copy_bytes_per_s"]), triad=stats(data["triad_bytes_per_s"]),
            array_bytes=int(data["array_bytes"]), created_s=float(data["created_s"]),
            conv=types.MappingProxyType({k: stats(v) for k, v in data.get("conv_flops_per_s", {}).items()}),
            gemm_by_library=types.MappingProxyType({
                k: types.MappingProxyType({lib: stats(v) for lib, v in libs.items()})
                for k, libs in data.get("gemm_by_library_flops_per_s", {}).items()}),
            mode=str(data.get("mode", "")),
            others_cpu_share=data.get("others_cpu_share"),
            seconds=data.get("seconds"),
            measurements=int(data.get("measurements", 1)),
        )
