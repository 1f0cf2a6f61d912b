"""CUPTI hardware counters in a trace → measured FLOPs and DRAM bytes per kernel.

A trace recorded with the CUPTI range profiler (``ProfileSession(hardware_counters=True)``
or ``_ExperimentalConfig(profiler_metrics=[...], profiler_measure_per_kernel=True)``)
holds one ``cuda_profiler_range`` event per kernel whose ``args`` are the metric values.

FLOPs are counted the way Nsight Compute's roofline sections count them: executed SASS
floating-point instructions, predicated-on threads only, one FLOP per add and per
multiply and two per fused multiply-add, separately for each precision::

    flops_<p> = smsp__sass_thread_inst_executed_op_<p>add_pred_on.sum
              + smsp__sass_thread_inst_executed_op_<p>mul_pred_on.sum
              + 2 * smsp__sass_thread_inst_executed_op_<p>fma_pred_on.sum      p in {d, f, h}

Sources: Nsight Compute's ``SpeedOfLight_RooflineChart.section`` (the FMA count ×2
derived metric, explained by NVIDIA at
https://forums.developer.nvidia.com/t/about-the-flops-in-ncu-report/215350/6) and the
NERSC "Roofline on NVIDIA GPUs" methodology (Yang, Kurth, Williams, "Hierarchical Roofline
analysis for GPUs", CCPE 2020; https://gitlab.com/NERSC/roofline-on-nvidia-gpus), which
use the same weights. DRAM bytes are ``dram__bytes_read.sum`` and ``dram__bytes_write.sum``
when the trace has them.

NB: these counters see CUDA-core instructions only: tensor-core (HMMA/IMMA) work is not
counted, so a tensor-core GEMM or a TF32 convolution shows far fewer FLOPs than the
analytic count. That gap is information, not an error; show both.

Joining: range events carry no correlation id, so the k-th range (in time order) is the
k-th kernel launch (``cudaLaunchKernel``-family calls, in time order), as Holistic Trace
Analysis does; the launch then goes through the same attribution as kernel times (op row,
module, phase). When the counts differ the counters are reported without an op, with a
warning.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Iterable, List, Mapping, Optional, Tuple

from torch_roofline.timing.attribution import _check_op_names
from torch_roofline.timing.timeline import HostTimeline, dotted_op_name
from torch_roofline.timing.trace import Trace, TraceEvent

__all__ = ["KernelCounters", "kernel_counters", "sass_flops"]

_log = logging.getLogger(__name__)

_SASS = "smsp__sass_thread_inst_executed_op_{}{}_pred_on.sum"
_PRECISIONS = (("fp64", "d"), ("fp32", "f"), ("fp16", "h"))
_DRAM_READ = "dram__bytes_read.sum"
_DRAM_WRITE = "dram__bytes_write.sum"
_LAUNCH_NAMES = ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchCooperativeKernel",
                 "cuLaunchCooperativeKernel")


@dataclass(frozen=True)
class KernelCounters:
    """Hardware-counter measurements of one kernel.

    Attributes:
        name: kernel name as the range profiler wrote it (``"__missing__"`` when CUPTI did
            not name it).
        index: position among the trace's counter ranges (0-based, time order).
        flops: FLOPs per precision that has counters: ``{"fp32": ..., "fp16": ..., "fp64": ...}``
            (2 per FMA; see the module docstring).
        dram_bytes_read: bytes read from DRAM, ``None`` without that counter.
        dram_bytes_written: bytes written to DRAM, ``None`` without that counter.
        op: dotted op row that launched it (``"aten.conv2d"``), ``None`` when unattributed.
        cpu_op: innermost ``cpu_op`` around the launch (``"aten::cudnn_convolution"``).
        module: module of the launch (``""`` root).
        scope: enclosing modules, outermost first.
        phase: ``"forward"``, ``"backward"`` or ``"optimizer"``.
        metrics: every metric of the range, as recorded.
    """

    name: str
    index: int
    flops: Mapping[str, int]
    dram_bytes_read: Optional[int]
    dram_bytes_written: Optional[int]
    op: Optional[str]
    cpu_op: Optional[str]
    module: str
    scope: Tuple[str, ...]
    phase: str
    metrics: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}),
                                       compare=False, repr=False)

    @property
    def total_flops(self) -> int:
        """FLOPs summed over precisions."""
        return sum(self.flops.values())

    @property
    def dram_bytes(self) -> Optional[int]:
        """DRAM bytes read + written; ``None`` unless both counters are present."""
        if self.dram_bytes_read is None or self.dram_bytes_written is None:
            return None
        return self.dram_bytes_read + self.dram_bytes_written


def _count(value: Any) -> int:
    return int(round(float(value)))


def sass_flops(metrics: Mapping[str, Any]) -> Mapping[str, int]:
    """FLOPs per precision from SASS instruction counters: add + mul + 2 × fma.

    Only precisions whose three counters are all present appear in the result.

    Example::

        >>> sass_flops({"smsp__sass_thread_inst_executed_op_fadd_pred_on.sum": 10,
        ...             "smsp__sass_thread_inst_executed_op_fmul_pred_on.sum": 5,
        ...             "smsp__sass_thread_inst_executed_op_ffma_pred_on.sum": 100})
        {'fp32': 215}
    """
    result = {}
    for label, p in _PRECISIONS:
        names = [_SASS.format(p, op) for op in ("add", "mul", "fma")]
        if all(n in metrics for n in names):
            add, mul, fma = (_count(metrics[n]) for n in names)
            result[label] = add + mul + 2 * fma
    return result


def _is_launch(ev: TraceEvent) -> bool:
    return ev.kind in ("cuda_runtime", "cuda_driver") and ev.name.startswith(_LAUNCH_NAMES)


def kernel_counters(trace: Trace, *, op_names: Optional[Iterable[str]] = None
                    ) -> Tuple[KernelCounters, ...]:
    """Per-kernel FLOPs and DRAM bytes from a trace's CUPTI counter ranges.

    Args:
        trace: a trace recorded with CUPTI range profiling.
        op_names: as in :func:`~torch_roofline.timing.attribution.attribute`.

    Returns:
        One record per ``cuda_profiler_range`` event, in time order; empty when the trace
        has no counters.

    Example::

        for k in kernel_counters(load_trace("counters.json.gz")):
            print(k.op, k.flops.get("fp32"))
    """
    ranges = sorted(trace.of_kind("cuda_profiler_range"), key=lambda e: (e.start_s, e.index))
    if not ranges:
        return ()
    timeline = HostTimeline(trace, _check_op_names(op_names))
    try:
        launches = sorted((e for e in trace.events if _is_launch(e)),
                          key=lambda e: (e.start_s, e.index))
        joined = len(launches) == len(ranges)
        if not joined:
            _log.warning(
                "trace %s: %d counter ranges but %d kernel launches; counters are reported "
                "without their ops.", trace.source, len(ranges), len(launches))
        records: List[KernelCounters] = []
        for k, ev in enumerate(ranges):
            op = cpu_op = None
            module, scope, phase = "", ("",), "forward"
            node = timeline.nodes.get(launches[k].index) if joined else None
            if node is not None:
                phase, scope, _ = timeline.context(node)
                module = scope[-1]
                cpu_op = node.cpu_op.event.name if node.cpu_op is not None else None
                op = dotted_op_name(node.row.event.name) if node.row is not None else None
            args = ev.args
            records.append(KernelCounters(
                name=ev.name,
                index=k,
                flops=MappingProxyType(dict(sass_flops(args))),
                dram_bytes_read=_count(args[_DRAM_READ]) if _DRAM_READ in args else None,
                dram_bytes_written=_count(args[_DRAM_WRITE]) if _DRAM_WRITE in args else None,
                op=op,
                cpu_op=cpu_op,
                module=module,
                scope=scope,
                phase=phase,
                metrics=args,
            ))
        return tuple(records)
    finally:
        timeline.release()
