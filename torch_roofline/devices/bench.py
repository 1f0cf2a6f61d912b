"""Measured roofs: achievable GEMM FLOP/s per dtype and STREAM-style memory bandwidth.

* GEMM: square ``n x n @ n x n`` products over a size sweep, ``2 n^3`` FLOPs each, with every
  GEMM library torch reaches on the device (``GEMM_LIBRARIES``): ``torch.mm`` everywhere
  (the BLAS on CPUs: MKL or OpenBLAS; cuBLAS on CUDA) and, on CPUs, oneDNN's inner product
  (``torch._C._nn.mkldnn_linear`` on ``to_mkldnn()`` tensors, the kernel behind
  ``torch.utils.mkldnn``). Every (library, size) is timed for at least ``repeats`` calls and
  at least ``_MIN_SECONDS`` (full mode); the (library, size) holding the best single sample
  is timed as long again, and its stats (min/median/max over its samples) are reported. A
  roof must lie above every kernel's rate, so the roof is that best sample, the fastest GEMM
  seen at any size with any library, never a median. Each library's best is kept too
  (:attr:`BenchResult.gemm_by_library`). They can differ twofold: on this project's AMD EPYC
  (Zen 5) test machine MKL's sgemm takes its AVX2 path (about 150-180 GFLOP/s on 2 cores)
  while oneDNN's fp32 GEMM uses AVX-512 (about 420).
* Convolution probe: 3x3 convolutions (``_CONV_PROBES``, the best shape counts). A roof must
  lie above every kernel, and convolution libraries can beat the GEMMs, so a measured
  Device's matrix peak is the better of the two (:meth:`BenchResult.matrix_peak`).
* Bandwidth: STREAM's copy (``b = a``) and triad (``a = b + s*c``) on float32 arrays of at
  least 4x the last-level cache, bytes counted as STREAM does: read + write (copy 2 x 4 B,
  triad 3 x 4 B per element), no write-allocate traffic.
* Results are cached per device + torch version + mode (quick/full; "roofs" for the
  time-boxed CPU run behind ``roof="auto"``, :mod:`._cpu_bench`) as JSON in
  ``$TORCH_ROOFLINE_CACHE_DIR``, else ``$XDG_CACHE_HOME/torch_roofline``, else
  ``~/.cache/torch_roofline``; a later call reuses them, ``refresh=True`` redoes them.

Honest limits: a busy machine gives low and spread-out numbers (min/median/max show it);
CPU runs use torch's intra-op threads (``torch.get_num_threads()``); the full run takes
about 7 s per dtype on a 2-core CPU, ``quick=True`` a few seconds (for tests, not for roofs).
"""

from __future__ import annotations

import json
import os
import sys
import time
import types
import warnings
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from torch_roofline._io import atomic_write
from torch_roofline.devices._cpu import CpuInfo, read_cpu_info
from torch_roofline.devices._device import Device, dtype_key
from torch_roofline.devices._bench_records import BenchResult, BenchStats
from torch_roofline.records.dtypes import DTYPE_TABLE

__all__ = ["BenchStats", "BenchResult", "GEMM_LIBRARIES", "gemm_libraries", "cache_dir", "run_bench", "measure",
           "result_to_device"]

# fp8 GEMMs are built by _time_fp8 (scaled_mm), not from a plain tensor of the dtype.
_TORCH_DTYPES = {d.key: getattr(torch, d.storage) for d in DTYPE_TABLE if d.key != "fp8"}
_SIZES = {"quick": (128, 256), "cpu": (512, 1024, 2048), "cuda": (1024, 2048, 4096, 8192)}
_REPEATS = {"quick": 3, "full": 7}
#: Seconds each timed kernel is repeated for at least (full mode; quick mode: ``repeats`` only).
#: On a shared machine a single sample can be slowed by other tenants, never sped up, so more
#: samples bring the best one closer to what the hardware does; half a second of each keeps
#: the CPU run under ten seconds.
_MIN_SECONDS = {"quick": 0.0, "full": 0.5}
#: Upper bound on samples per kernel (tiny kernels on fast devices).
_MAX_SAMPLES = 200


def cache_dir() -> str:
    """Where measurements are cached (see the module docstring for the order)."""
    if os.environ.get("TORCH_ROOFLINE_CACHE_DIR"):
        return os.environ["TORCH_ROOFLINE_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "torch_roofline")


# -- timing -------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_call(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds one call of ``fn`` takes (device work included)."""
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def _rates(call: Callable[[], object], work: float, device: torch.device, repeats: int,
           min_seconds: float) -> List[float]:
    """``work / seconds`` of each call: at least ``repeats`` calls and ``min_seconds`` of them.

    Args:
        call: the kernel, already warmed up.
        work: FLOPs (or bytes) one call does.
        repeats: minimum number of samples.
        min_seconds: minimum total seconds of timed calls (capped at ``_MAX_SAMPLES`` samples).
    """
    rates: List[float] = []
    spent = 0.0
    while len(rates) < repeats or (spent < min_seconds and len(rates) < _MAX_SAMPLES):
        seconds = _time_call(call, device)
        spent += seconds
        rates.append(work / seconds)
    return rates


#: GEMM libraries the sweep times. ``torch.mm`` is what ``@``, ``nn.Linear`` and ``bmm`` run
#: (the BLAS on CPUs); oneDNN's inner product is what ``torch.utils.mkldnn`` models and
#: oneDNN-backed paths run. CPU only, fp32 and bf16, where torch was built with oneDNN.
GEMM_LIBRARIES = ("torch.mm", "oneDNN")
_ONEDNN_DTYPES = ("fp32", "bf16")


def gemm_libraries(dtype: str, device: torch.device) -> Tuple[str, ...]:
    """The GEMM libraries the sweep times for ``dtype`` on ``device``."""
    onednn = device.type == "cpu" and dtype in _ONEDNN_DTYPES and torch.backends.mkldnn.is_available()
    return tuple(lib for lib in GEMM_LIBRARIES if lib != "oneDNN" or onednn)


def _gemm_call(dtype: str, n: int, device: torch.device, library: str = "torch.mm") -> Callable[[], object]:
    """A zero-argument closure running one n x n x n product in ``dtype`` with ``library``."""
    if dtype == "tf32" and device.type != "cuda":
        raise ValueError("tf32 GEMMs exist on CUDA only; measure 'fp32' on cpu")
    if library == "oneDNN":
        a = torch.randn(n, n, dtype=_TORCH_DTYPES[dtype]).to_mkldnn()
        w = torch.randn(n, n, dtype=_TORCH_DTYPES[dtype]).to_mkldnn()  # [out, in]: a @ w.T
        return lambda: torch._C._nn.mkldnn_linear(a, w, None)
    if dtype == "int8":
        a = torch.randint(-8, 8, (n, n), dtype=torch.int8, device=device)
        b = torch.randint(-8, 8, (n, n), dtype=torch.int8, device=device)
        return lambda: torch._int_mm(a, b)
    if dtype == "fp8":
        if device.type != "cuda":
            raise ValueError("fp8 GEMMs are measured on CUDA only (torch._scaled_mm); pick another dtype for cpu")
        a = torch.randn(n, n, device=device).to(torch.float8_e4m3fn)
        b = torch.randn(n, n, device=device).to(torch.float8_e4m3fn).t()
        one = torch.ones((), device=device)
        return lambda: torch._scaled_mm(a, b, scale_a=one, scale_b=one, out_dtype=torch.bfloat16)
    a = torch.randn(n, n, device=device, dtype=_TORCH_DTYPES[dtype])
    b = torch.randn(n, n, device=device, dtype=_TORCH_DTYPES[dtype])
    return lambda: torch.mm(a, b)


def _time_gemm(dtype: str, n: int, repeats: int, device: torch.device, library: str = "torch.mm",
               min_seconds: float = 0.0) -> List[float]:
    """FLOP/s of GEMMs of side ``n`` after one warm-up call (see :func:`_rates` for how many)."""
    call = _gemm_call(dtype, n, device, library)
    tf32 = dtype == "tf32"
    old = torch.backends.cuda.matmul.allow_tf32, torch.get_float32_matmul_precision()
    try:
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.set_float32_matmul_precision("high" if tf32 else "highest")
        call()
        return _rates(call, 2.0 * n**3, device, repeats, min_seconds)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old[0]
        torch.set_float32_matmul_precision(old[1])


def _sweep_library(dtype: str, library: str, sizes: Sequence[int], repeats: int, min_seconds: float,
                   device: torch.device, bar: "_Progress") -> Optional[BenchStats]:
    """The stats of one library's fastest GEMM size; None when the library cannot run them here.

    The size with the best single sample wins (a roof is the best rate seen at any size) and
    is timed as long again: on a shared machine more samples bring the best closer to what
    the hardware does.
    """
    rates: Dict[int, List[float]] = {}
    for n in sizes:
        bar.step(f"gemm {dtype} {library} n={n}")
        try:
            rates[n] = _time_gemm(dtype, n, repeats, device, library, min_seconds)
        except RuntimeError:
            if library == "torch.mm":
                raise
            break  # e.g. a CPU without the ISA oneDNN's bf16 GEMM needs
    if not rates:
        return None
    best = max(rates, key=lambda n: max(rates[n]))
    rates[best] += _time_gemm(dtype, best, repeats, device, library, min_seconds)
    return BenchStats.of(rates[best], best, library)


#: The convolution probes (batch, channels, height = width): 3x3, stride-1 convolutions; the
#: best one counts. Convolution libraries (oneDNN, cuDNN) can beat the BLAS GEMM on the same
#: machine, and a roof must be above every kernel's rate, so the measured matrix roof is the
#: best of both. Channel-heavy shapes run closest to the peak (on the project's 2-core AMD
#: machine: 256 channels at 14x14 about 385 GFLOP/s, 64 channels at 56x56 about 215).
_CONV_PROBES = {"cpu": ((8, 64, 56), (8, 256, 14)), "cuda": ((64, 256, 56), (64, 512, 28))}


def _time_conv(dtype: str, repeats: int, device: torch.device, min_seconds: float = 0.0) -> List[float]:
    """FLOP/s samples (2 x MACs) of the 3x3 convolution probe shape with the best sample."""
    best: List[float] = []
    for shape in _CONV_PROBES["cuda" if device.type == "cuda" else "cpu"]:
        rates = _time_conv_shape(dtype, shape, repeats, device, min_seconds)
        if rates and (not best or max(rates) > max(best)):
            best = rates
    return best


def _time_conv_shape(dtype: str, shape: Tuple[int, int, int], repeats: int, device: torch.device,
                     min_seconds: float = 0.0) -> List[float]:
    """FLOP/s of 3x3 convolutions of one shape after one warm-up call (:func:`_rates`: how many)."""
    if dtype not in ("fp32", "bf16", "fp16", "fp64"):
        return []
    b, c, hw = shape
    dt = _TORCH_DTYPES[dtype]
    x = torch.randn(b, c, hw, hw, device=device, dtype=dt)
    w = torch.randn(c, c, 3, 3, device=device, dtype=dt)
    flops = 2.0 * b * c * c * 9 * hw * hw  # padding 1: output hw x hw

    def call() -> object:
        return torch.nn.functional.conv2d(x, w, padding=1)

    old = torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = False  # an fp32 roof, not a TF32 one
        with torch.no_grad():
            call()
            return _rates(call, flops, device, repeats, min_seconds)
    finally:
        torch.backends.cudnn.allow_tf32 = old


def _stream_elements(device: torch.device, llc_bytes: Optional[int], quick: bool) -> int:
    """float32 elements per array: >= 4x the last-level cache (STREAM's rule)."""
    if device.type == "cuda":
        llc = torch.cuda.get_device_properties(device).L2_cache_size or 64 * 2**20
    else:
        llc = llc_bytes or 32 * 2**20
    return max(4 * llc, (16 if quick else 64) * 2**20) // 4


def _time_stream(n: int, repeats: int, device: torch.device,
                 min_seconds: float = 0.0) -> Tuple[List[float], List[float]]:
    """(copy B/s, triad B/s) samples on float32 arrays of ``n`` elements (:func:`_rates`)."""
    a = torch.ones(n, device=device)
    b = torch.full((n,), 2.0, device=device)
    c = torch.full((n,), 0.5, device=device)
    copy = lambda: b.copy_(a)  # noqa: E731
    triad = lambda: torch.add(b, c, alpha=3.0, out=a)  # noqa: E731
    copy(), triad()  # first touch: page faults are not bandwidth
    copies = _rates(copy, 2 * 4 * n, device, repeats, min_seconds)
    triads = _rates(triad, 3 * 4 * n, device, repeats, min_seconds)
    return copies, triads


# -- progress -----------------------------------------------------------------------------
class _Progress:
    """A one-line progress bar on stderr; silent when disabled."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.done, self.enabled = max(total, 1), 0, enabled

    def step(self, label: str) -> None:
        self.done += 1
        if self.enabled:
            filled = int(30 * self.done / self.total)
            sys.stderr.write(f"\rbench [{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total} {label:<28}")
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()


# -- the measurement ----------------------------------------------------------------------
def _device_name(device: torch.device, info: Optional[CpuInfo]) -> Tuple[str, int]:
    """(name for the cache and the report, torch threads or 0); ``info``: the CPU's, on CPUs."""
    if device.type == "cuda" or info is None:
        return torch.cuda.get_device_name(device), 0
    return f"{info.model} ({info.cores} cores)", torch.get_num_threads()


#: Bumped whenever what is measured changes, so older cached results are not reused.
_BENCH_VERSION = 6


def _cache_path(device: torch.device, name: str, threads: int, quick: bool, mode: Optional[str] = None) -> str:
    """The cache file of one device, torch version and mode (``mode`` overrides ``quick``)."""
    slug = "".join(c if c.isalnum() else "-" for c in f"{device.type}-{name}-t{threads}".lower())
    mode = mode or ("quick" if quick else "full")
    return os.path.join(cache_dir(), f"bench-v{_BENCH_VERSION}-{slug}-torch{torch.__version__}-{mode}.json")


def _load(path: str) -> Optional[BenchResult]:
    try:
        with open(path, encoding="utf-8") as f:
            return BenchResult.from_dict(json.load(f))
    except (OSError, ValueError, KeyError, TypeError):
        return None  # no cache, or a stale format: measure again


def run_bench(
    device: str = "cpu",
    dtypes: Sequence[str] = ("fp32",),
    *,
    quick: bool = False,
    refresh: bool = False,
    progress: bool = True,
    bandwidth: bool = True,
) -> BenchResult:
    """Measure (or reuse the cached measurement of) GEMM rates and STREAM bandwidth.

    Args:
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        dtypes: dtypes to measure GEMMs in (``"fp32"``, ``"bf16"``, ``torch.float16``,
            ``"tf32"`` on CUDA, ``"int8"`` via ``torch._int_mm``, ``"fp8"`` on CUDA).
        quick: a few seconds (small sizes, few repeats): for tests, not for roofs.
        refresh: measure again even if a cached result exists.
        progress: draw a progress bar on stderr.
        bandwidth: also measure copy/triad.

    Returns:
        The :class:`BenchResult`; dtypes already in the cache are not measured again.
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"run_bench(device={device!r}): expected 'cpu', 'cuda' or 'cuda:N'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("bench --device cuda: torch sees no CUDA device here; use --device cpu")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device={device!r}: expected 'cpu', 'cuda' or 'cuda:N'")
    keys = list(dict.fromkeys(dtype_key(d) for d in dtypes))
    cpu = read_cpu_info() if dev.type == "cpu" else None
    name, threads = _device_name(dev, cpu)
    path = _cache_path(dev, name, threads, quick)
    cached = None if refresh else _load(path)
    gemm: Dict[str, BenchStats] = dict(cached.gemm) if cached else {}
    by_library: Dict[str, Mapping[str, BenchStats]] = dict(cached.gemm_by_library) if cached else {}
    conv: Dict[str, BenchStats] = dict(cached.conv) if cached else {}
    todo = [k for k in keys if k not in gemm]
    need_stream = bandwidth and (cached is None or cached.copy is None)
    if cached is not None and not todo and not need_stream:
        return cached
    mode = "quick" if quick else ("cuda" if dev.type == "cuda" else "cpu")
    sizes, repeats = _SIZES[mode], _REPEATS["quick" if quick else "full"]
    min_seconds = _MIN_SECONDS["quick" if quick else "full"]
    total = sum(len(sizes) * len(gemm_libraries(k, dev)) + 1 for k in todo) + (1 if need_stream else 0)
    bar = _Progress(total, progress)
    try:
        for key in todo:
            libs = {}
            for library in gemm_libraries(key, dev):
                stats = _sweep_library(key, library, sizes, repeats, min_seconds, dev, bar)
                if stats is not None:
                    libs[library] = stats
            by_library[key] = types.MappingProxyType(libs)
            gemm[key] = max(libs.values(), key=lambda st: st.max)
            bar.step(f"conv {key}")
            rates = _time_conv(key, repeats, dev, min_seconds)
            if rates:
                conv[key] = BenchStats.of(rates, 0)
        copy = cached.copy if cached else None
        triad = cached.triad if cached else None
        elements = cached.array_bytes // 4 if cached else 0
        if need_stream:
            bar.step("stream copy/triad")
            llc = cpu.llc_bytes if cpu is not None else None
            elements = _stream_elements(dev, llc, quick)
            copies, triads = _time_stream(elements, repeats + 3, dev, min_seconds)
            copy, triad = BenchStats.of(copies, elements), BenchStats.of(triads, elements)
    finally:
        bar.close()
    result = BenchResult(
        device=str(dev), device_name=name, torch_version=torch.__version__, threads=threads,
        quick=quick, gemm=types.MappingProxyType(gemm), conv=types.MappingProxyType(conv), copy=copy, triad=triad,
        array_bytes=4 * elements, gemm_by_library=types.MappingProxyType(by_library),
        mode="quick" if quick else "full",
    )
    _save_cache(path, result)
    return result


def _save_cache(path: str, result: BenchResult) -> None:
    """Cache ``result`` at ``path``, whole or not at all. A cache that cannot be written (a
    full disk, a read-only home) costs a warning, never the measurement just made."""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_write(path, json.dumps(result.to_dict(), indent=1, sort_keys=True), caller="run_bench")
    except OSError as err:
        warnings.warn(
            f"run_bench: the measurement was not cached ({err}); it is used now and measured again next "
            "time. Set TORCH_ROOFLINE_CACHE_DIR to a writable directory to keep it.",
            RuntimeWarning,
            stacklevel=3,
        )


def stream_bandwidth(result: BenchResult) -> float:
    """The bandwidth roof from a measurement: the best copy or triad sample, B/s."""
    rates = [s.max for s in (result.copy, result.triad) if s is not None]
    if not rates:
        raise ValueError(f"the measurement of {result.device_name} has no copy/triad bandwidth")
    return max(rates)


def _peak_provenance(stats: BenchStats, mode: str) -> str:
    library = f"{stats.library} " if stats.library else ""
    what = "3x3 convolutions (the probe beat every GEMM)" if stats.size == 0 else f"{library}GEMMs, n={stats.size}"
    # NB: size 0 marks the convolution probe (BenchStats.size)
    return f"measured (best of {stats.samples} {what}, {mode})"


def result_to_device(result: BenchResult) -> Device:
    """A ``source="measured"`` Device from a measurement.

    Matrix peaks are the best GEMM samples per dtype. The fp32/fp64 GEMMs are timed with
    TF32 off, so they also stand for the vector units (CUDA cores / CPU FMA units) and are
    listed as vector peaks too (on GPUs with fp64 tensor cores, fp64 is a matrix figure).
    """
    peaks = {f"{k}:matrix": result.matrix_peak(k).max for k in result.gemm}
    for k in ("fp32", "fp64"):
        if k in result.gemm:
            peaks[f"{k}:vector"] = result.matrix_peak(k).max
    mode = result.mode_name
    provenance = {
        key: _peak_provenance(result.matrix_peak(key.split(":")[0]), mode)
        for key in peaks
    }
    provenance["memory_bandwidth"] = "measured (best STREAM copy/triad sample, bytes = read + write)"
    return Device(
        name=f"{result.device_name} (measured)",
        id=f"measured-{result.device.replace(':', '')}",
        source="measured",
        peaks=peaks,
        memory_bandwidth=stream_bandwidth(result),
        provenance=provenance,
        kind="gpu" if result.device.startswith("cuda") else "cpu",
        notes=f"torch {result.torch_version}, {result.threads or 'all'} threads, {mode} mode",
    )


def measure(device: str = "cpu", dtypes: Sequence[str] = ("fp32",), *, quick: bool = False, refresh: bool = False,
            progress: bool = True) -> Device:
    """Measured roofs of ``device`` as a ``source="measured"`` :class:`Device` (cached): the
    GEMM rates and bandwidth of :func:`run_bench`, whose arguments these are.

    Example::

        >>> roofs = measure("cpu", ("fp32", "bf16"))      # seconds per dtype the first time
        >>> roofs.roof("fp32").peak_flops_per_s          # FLOP/s actually reached
    """
    return result_to_device(run_bench(device, dtypes, quick=quick, refresh=refresh, progress=progress))
