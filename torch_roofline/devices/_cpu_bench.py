"""The CPU measurement behind ``roof="auto"``: time-boxed, interleaved, cached.

The full bench (:func:`~torch_roofline.devices.bench.run_bench`) times each kernel for half
a second in turn: about 7 s per dtype plus STREAM, and a neighbour that is busy during one
kernel's half second spoils that kernel's number. This run instead visits every kernel in
turn, round after round, for a fixed time (:data:`KERNEL_BUDGET_S`): each kernel's samples
are spread over the whole window, and the roof is still the fastest sample (a neighbour
can slow a sample, never speed it up). Then STREAM copy and triad, interleaved the same way
for :data:`STREAM_BUDGET_S`.

Kernels: square GEMMs (n = :data:`SIZES`) with every library torch reaches
(:func:`~torch_roofline.devices.bench.gemm_libraries`: MKL/OpenBLAS via ``torch.mm``,
oneDNN) and the 3x3 convolution probes, in each dtype of :func:`fast_dtypes`: fp32, plus
bf16 / fp16 only where the CPU has a fast path for them (AMX, AVX512_BF16, AVX512_FP16,
Arm BF16). Elsewhere PyTorch computes those dtypes on the fp32 units, under the fp32 roof.

The result is a :class:`~torch_roofline.devices.bench.BenchResult` with ``mode="roofs"``,
cached next to the full bench's (:func:`~torch_roofline.devices.bench.cache_dir`), keyed by
CPU model, core count, torch threads and torch version. It records how busy the machine
was (``others_cpu_share``, from ``/proc/stat``): roofs measured on a busy machine are low.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
import types
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from torch_roofline.devices import bench
from torch_roofline.devices._cpu import CpuInfo, read_cpu_info
from torch_roofline.devices.bench import BenchResult, BenchStats

__all__ = ["KERNEL_BUDGET_S", "STREAM_BUDGET_S", "SIZES", "BUSY_SHARE", "MAX_MEASUREMENTS", "fast_dtypes",
           "roofs_cache_path", "load_roofs", "is_busy", "merge_results", "run_roofs_bench"]

#: Seconds of interleaved kernel timing (all dtypes together).
KERNEL_BUDGET_S = 8.0
#: Seconds of interleaved STREAM copy/triad timing.
STREAM_BUDGET_S = 1.5
#: Each visit to a kernel times calls for at least this long (so small kernels get many samples).
VISIT_S = 0.02
#: GEMM sides timed (the full bench's CPU sizes).
SIZES: Tuple[int, ...] = (512, 1024, 2048)
#: Every kernel gets at least this many visits, whatever the budget.
MIN_VISITS = 2
#: A measurement during which other processes used more than this share of the CPU is "busy":
#: its roofs may be low, so the next process measures again and keeps the fastest samples of both.
BUSY_SHARE = 0.15
#: ... at most this many measurements in all, then the merged result stands.
MAX_MEASUREMENTS = 3
#: Cache files measured by this process: a busy result is measured again by a later process,
#: not by every call of this one (a test session or a notebook calls auto() many times).
_MEASURED_HERE: set = set()

_FAST_PATHS = {
    "bf16": ("amx_bf16", "avx512_bf16", "bf16"),
    "fp16": ("amx_fp16", "avx512_fp16"),
}


def fast_dtypes(flags: Sequence[str]) -> Tuple[str, ...]:
    """The dtypes worth measuring: fp32, and bf16/fp16 where the ISA flags show a fast path.

    >>> fast_dtypes({"avx2", "fma"})
    ('fp32',)
    >>> fast_dtypes({"avx512f", "avx512_bf16", "amx_bf16"})
    ('fp32', 'bf16')
    """
    present = set(flags)
    return ("fp32",) + tuple(d for d, need in _FAST_PATHS.items() if present & set(need))


@dataclass
class _Kernel:
    """One timed kernel and its samples (FLOP/s or B/s per call)."""

    dtype: str
    kind: str  # "gemm", "conv", "copy" or "triad"
    library: str
    size: int
    call: Callable[[], object]
    work: float
    rates: List[float] = field(default_factory=list)

    @property
    def label(self) -> str:
        if self.kind == "gemm":
            return f"gemm {self.dtype} {self.library} n={self.size}"
        return f"{self.kind} {self.dtype}" if self.kind == "conv" else self.kind

    def visit(self, visit_s: float) -> float:
        """Time calls for at least ``visit_s`` seconds (at least one); the seconds spent."""
        spent = 0.0
        while True:
            start = time.perf_counter()
            self.call()
            seconds = time.perf_counter() - start
            spent += seconds
            self.rates.append(self.work / seconds)
            if spent >= visit_s:
                return spent


def _conv_call(dtype: str, shape: Tuple[int, int, int]) -> Tuple[Callable[[], object], float]:
    b, c, hw = shape
    dt = bench._TORCH_DTYPES[dtype]
    x = torch.randn(b, c, hw, hw, dtype=dt)
    w = torch.randn(c, c, 3, 3, dtype=dt)

    def call() -> object:
        with torch.no_grad():
            return torch.nn.functional.conv2d(x, w, padding=1)

    return call, 2.0 * b * c * c * 9 * hw * hw  # padding 1: output hw x hw


def _kernels(dtypes: Sequence[str]) -> List[_Kernel]:
    """Every kernel to time, each called once (warm-up); kernels that fail here are left out."""
    cpu = torch.device("cpu")
    out: List[_Kernel] = []
    for dtype in dtypes:
        candidates = [
            ("gemm", lib, n, lambda lib=lib, n=n: (bench._gemm_call(dtype, n, cpu, lib), 2.0 * n**3))
            for lib in bench.gemm_libraries(dtype, cpu) for n in SIZES
        ] + [("conv", "", 0, lambda s=s: _conv_call(dtype, s)) for s in bench._CONV_PROBES["cpu"]]
        for kind, lib, n, make in candidates:
            try:
                call, work = make()
                call()
            except RuntimeError:
                continue  # e.g. oneDNN without the ISA its bf16 kernels need
            out.append(_Kernel(dtype, kind, lib, n, call, work))
    return out


def _stream_kernels(llc_bytes: Optional[int]) -> Tuple[List[_Kernel], int]:
    """STREAM copy (``b = a``) and triad (``a = b + 3 c``) on float32 arrays >= 4x the LLC."""
    n = bench._stream_elements(torch.device("cpu"), llc_bytes, quick=False)
    a = torch.ones(n)
    b = torch.full((n,), 2.0)
    c = torch.full((n,), 0.5)
    kernels = [
        _Kernel("fp32", "copy", "", n, lambda: b.copy_(a), 2 * 4 * n),
        _Kernel("fp32", "triad", "", n, lambda: torch.add(b, c, alpha=3.0, out=a), 3 * 4 * n),
    ]
    for k in kernels:
        k.call()  # first touch: page faults are not bandwidth
    return kernels, n


def _interleave(kernels: List[_Kernel], deadline: float, bar: "_Bar") -> None:
    """Visit the kernels round-robin until ``deadline`` (a ``time.perf_counter()`` value),
    every kernel visited at least MIN_VISITS times first (so a slow machine overruns a little)."""
    rounds = 0
    while True:
        for kernel in kernels:
            if rounds >= MIN_VISITS and time.perf_counter() >= deadline:
                return
            kernel.visit(VISIT_S)
            bar.show(kernel.label)
        rounds += 1


# -- how busy the machine is -------------------------------------------------------------
def _busy_cpu_seconds() -> Optional[float]:
    """CPU-seconds all processes (and steal) used since boot, from /proc/stat; None elsewhere."""
    try:
        with open("/proc/stat", encoding="utf-8") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    # user nice system idle iowait irq softirq steal (guest time is inside user)
    ticks = [int(v) for v in fields[1:9]]
    busy = ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6] + ticks[7]
    return busy / os.sysconf("SC_CLK_TCK")


def others_share(busy_s: Optional[float], own_cpu_s: float, wall_s: float, cpus: int) -> Optional[float]:
    """Share of the machine's CPU time (0..1) that others used: (busy - ours) / (wall x cpus).

    >>> others_share(3.0, 2.0, 1.0, 2)   # 3 CPU-s busy, 2 of them ours, over 1 s x 2 CPUs
    0.5
    """
    if busy_s is None or wall_s <= 0 or cpus <= 0:
        return None
    return min(max((busy_s - own_cpu_s) / (wall_s * cpus), 0.0), 1.0)


# -- progress ------------------------------------------------------------------------------
class _Bar:
    """A one-line, time-based progress bar on stderr; silent when disabled."""

    #: Seconds between redraws (a log file gets a few dozen updates, not thousands).
    EVERY_S = 0.25

    def __init__(self, total_s: float, enabled: bool) -> None:
        self.total_s, self.enabled, self.start = total_s, enabled, time.perf_counter()
        self.drawn = -self.EVERY_S

    def show(self, label: str) -> None:
        elapsed = time.perf_counter() - self.start
        if not self.enabled or elapsed - self.drawn < self.EVERY_S:
            return
        self.drawn = elapsed
        filled = min(int(30 * elapsed / self.total_s), 30)
        sys.stderr.write(f"\rroofs [{'#' * filled}{'.' * (30 - filled)}] {elapsed:4.1f}/{self.total_s:.0f} s "
                         f"{label:<28}")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            self.drawn = -self.EVERY_S
            self.show("done")
            sys.stderr.write("\n")
            sys.stderr.flush()


# -- the measurement -------------------------------------------------------------------------
def roofs_cache_path(info: CpuInfo) -> str:
    """The cache file of this CPU's ``"roofs"`` measurement (model, cores, threads, torch)."""
    name, threads = bench._device_name(torch.device("cpu"), info)
    return bench._cache_path(torch.device("cpu"), name, threads, False, mode="roofs")


def load_roofs(info: CpuInfo) -> Optional[BenchResult]:
    """The cached ``"roofs"`` measurement of this CPU, ``None`` if there is none."""
    return bench._load(roofs_cache_path(info))


def is_busy(result: BenchResult) -> bool:
    """Whether other processes used more than :data:`BUSY_SHARE` of the CPU during ``result``."""
    return result.others_cpu_share is not None and result.others_cpu_share > BUSY_SHARE


def _faster(a: Optional[BenchStats], b: Optional[BenchStats]) -> Optional[BenchStats]:
    candidates = [s for s in (a, b) if s is not None]
    return max(candidates, key=lambda s: s.max) if candidates else None


def _merge_map(a: Mapping[str, BenchStats], b: Mapping[str, BenchStats]) -> types.MappingProxyType:
    return types.MappingProxyType({k: _faster(a.get(k), b.get(k)) for k in {**a, **b}})


def merge_results(old: BenchResult, new: BenchResult) -> BenchResult:
    """Two measurements of one machine as one: per kernel the stats with the fastest sample.

    Every sample is a rate the hardware reached, and a busy neighbour only slows samples, so
    the fastest of two runs is the better roof. ``others_cpu_share`` becomes the quieter run's.

    >>> a = BenchStats.of([1.0, 3.0], 512, "oneDNN"); b = BenchStats.of([2.0], 512, "oneDNN")
    >>> _faster(a, b).max
    3.0
    """
    libs = {k: _merge_map(old.gemm_by_library.get(k, {}), new.gemm_by_library.get(k, {}))
            for k in {**old.gemm_by_library, **new.gemm_by_library}}
    shares = [s for s in (old.others_cpu_share, new.others_cpu_share) if s is not None]
    return dataclasses.replace(
        new,
        gemm=_merge_map(old.gemm, new.gemm), conv=_merge_map(old.conv, new.conv),
        gemm_by_library=types.MappingProxyType(libs),
        copy=_faster(old.copy, new.copy), triad=_faster(old.triad, new.triad),
        others_cpu_share=min(shares) if shares else None,
        seconds=(old.seconds or 0.0) + (new.seconds or 0.0),
        measurements=old.measurements + new.measurements,
    )


def _best(kernels: Sequence[_Kernel]) -> BenchStats:
    best = max(kernels, key=lambda k: max(k.rates))
    return BenchStats.of(best.rates, best.size, best.library)


def _result(info: CpuInfo, kernels: List[_Kernel], stream: List[_Kernel], elements: int,
            share: Optional[float], seconds: float) -> BenchResult:
    gemm: Dict[str, BenchStats] = {}
    by_library: Dict[str, types.MappingProxyType] = {}
    conv: Dict[str, BenchStats] = {}
    for dtype in dict.fromkeys(k.dtype for k in kernels):
        gemms = [k for k in kernels if k.dtype == dtype and k.kind == "gemm"]
        if not gemms:
            continue
        libs = dict.fromkeys(k.library for k in gemms)
        by_library[dtype] = types.MappingProxyType(
            {lib: _best([k for k in gemms if k.library == lib]) for lib in libs})
        gemm[dtype] = _best(gemms)
        convs = [k for k in kernels if k.dtype == dtype and k.kind == "conv"]
        if convs:
            conv[dtype] = _best(convs)
    name, threads = bench._device_name(torch.device("cpu"), info)
    copy, triad = stream
    return BenchResult(
        device="cpu", device_name=name, torch_version=torch.__version__, threads=threads, quick=False,
        gemm=types.MappingProxyType(gemm), conv=types.MappingProxyType(conv),
        copy=BenchStats.of(copy.rates, elements), triad=BenchStats.of(triad.rates, elements),
        array_bytes=4 * elements, gemm_by_library=types.MappingProxyType(by_library),
        mode="roofs", others_cpu_share=share, seconds=seconds,
    )


def run_roofs_bench(
    info: Optional[CpuInfo] = None,
    *,
    dtypes: Optional[Sequence[str]] = None,
    refresh: bool = False,
    progress: bool = True,
    kernel_budget_s: Optional[float] = None,
    stream_budget_s: Optional[float] = None,
) -> BenchResult:
    """This CPU's roofs measurement: the cached one, or a new one (about 10 s) that is cached.

    Args:
        info: the CPU (default: :func:`read_cpu_info`).
        dtypes: dtypes to measure; default :func:`fast_dtypes` of the CPU's flags.
        refresh: measure again even if a cached result exists.
        progress: say what is happening and draw a progress bar on stderr.
        kernel_budget_s, stream_budget_s: seconds of interleaved timing; default
            :data:`KERNEL_BUDGET_S` and :data:`STREAM_BUDGET_S` (read at call time).

    Returns:
        A :class:`BenchResult` with ``mode="roofs"``: GEMM and convolution FLOP/s per dtype
        (fastest samples), STREAM copy/triad B/s, and how busy the machine was.
    """
    info = info or read_cpu_info()
    path = roofs_cache_path(info)
    keys = tuple(dtypes) if dtypes is not None else fast_dtypes(info.flags)
    cached = None if refresh else bench._load(path)
    complete = cached is not None and all(k in cached.gemm for k in keys) and cached.copy is not None
    if complete and (not is_busy(cached) or cached.measurements >= MAX_MEASUREMENTS or path in _MEASURED_HERE):
        return cached
    kernel_budget_s = KERNEL_BUDGET_S if kernel_budget_s is None else kernel_budget_s
    total_s = kernel_budget_s + (STREAM_BUDGET_S if stream_budget_s is None else stream_budget_s)
    if progress:
        if complete:
            why = (f"the cached roofs were measured while other processes used "
                   f"{100 * (cached.others_cpu_share or 0):.0f}% of the CPU, so they may be low: measuring again "
                   f"({cached.measurements + 1} of at most {MAX_MEASUREMENTS}), keeping the fastest samples of all")
        else:
            why = "once: cached"
        sys.stderr.write(
            f"torch_roofline: measuring this CPU's roofs ({', '.join(keys)} GEMMs and convolutions, "
            f"STREAM; about {total_s:.0f} s, {why} in {os.path.dirname(path)}; "
            f"TORCH_ROOFLINE_NO_BENCH=1 uses estimates instead)\n")
    bar = _Bar(total_s, progress)
    start, own0, busy0 = time.perf_counter(), time.process_time(), _busy_cpu_seconds()
    try:
        kernels = _kernels(keys)  # the warm-up calls count against the budget
        _interleave(kernels, start + kernel_budget_s, bar)
        stream, elements = _stream_kernels(info.llc_bytes)
        _interleave(stream, start + total_s, bar)
    finally:
        bar.close()
    wall = time.perf_counter() - start
    busy1 = _busy_cpu_seconds()
    share = others_share(None if busy0 is None or busy1 is None else busy1 - busy0,
                         time.process_time() - own0, wall, os.cpu_count() or 1)
    result = _result(info, kernels, stream, elements, share, wall)
    if complete:
        result = merge_results(cached, result)
    _MEASURED_HERE.add(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(result.to_dict(), f, indent=1, sort_keys=True)
    return result
