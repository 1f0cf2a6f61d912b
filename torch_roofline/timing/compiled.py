"""What a trace says about ``torch.compile``'d code: fused kernels, compiled regions, graph
breaks and recompilations.

torch.profiler records, around compiled code (names as torch 2.x writes them):

* ``Torch-Compiled Region: F/C``: one call of Dynamo frame ``F`` in its compiled version
  ``C`` (``0/0``; a recompilation of frame 0 for new shapes or guards runs as ``0/1``). A
  function whose code Dynamo had to break into pieces (a graph break) runs one frame per
  piece: ``0/0``, then ``1/0``, ... with eager Python between them.
* ``graph_<g>_cpp_fused_<ops>_<k>``: one call of an Inductor C++ kernel on the CPU, when the
  model was compiled with ``torch._inductor.config.cpp.enable_kernel_profile = True``
  (``TORCHINDUCTOR_CPP_ENABLE_KERNEL_PROFILE=1``); without it the kernels leave no event.
* ``dynamo`` / ``entire_frame_compile`` and ``... (dynamo_timed)`` ranges, and
  ``dynamo_data: compile_id=F/C`` annotations: compiling inside the recorded steps.

The attribution stage makes each fused kernel an op row (:func:`is_fused_kernel`), costed
from its compiled graph by :mod:`torch_roofline.timing.inductor`; this module lists the
compiled regions (:func:`compiled_regions`) and words the report's notes.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections import defaultdict
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

from torch_roofline.timing.ranges import RANGE_PREFIX, parse_range_name, read_labels
from torch_roofline.timing.trace import DEVICE_KINDS, Trace, TraceEvent

__all__ = ["CompiledCode", "CompiledRegion", "compiled_calls", "scan_compiled", "compiled_kernels_note", "compiled_regions",
           "compiled_regions_note", "is_fused_kernel", "recording_compiled_kernels"]

#: Inductor's kernels as torch.profiler records them: a C++ kernel's range on the CPU
#: (``graph_0_cpp_fused_gelu_0``), a Triton kernel's launch range on the host
#: (``triton_poi_fused_gelu_0``, holding its device kernel of the same name).
_FUSED_KERNEL = re.compile(r"^(?:(?:(?:graph_\d+_)?cpp|triton_[a-z]+)_fused_\w+|graph_\d+_\w+_kernel)$")
_REGION = re.compile(r"^Torch-Compiled Region: (\d+)/(\d+)")
_COMPILE_ID = re.compile(r"compile_id=(\d+)/(\d+)")


#: Random per process: the recording pass's id holds it (:func:`_provenance_salt`).
_PROCESS_TOKEN = uuid.uuid4().hex


@contextlib.contextmanager
def recording_compiled_kernels() -> Iterator[None]:
    """While active, what Inductor compiles records a profiler event per fused CPU kernel
    (``cpp.enable_kernel_profile``) and which ops each kernel fused
    (``trace.provenance_tracking_level`` 1, also for backward graphs: :func:`_backward_provenance`);
    the previous settings come back on exit. torch leaves the trace settings out of its compile
    caches' keys, so a graph cached by a compile without provenance would come back without it:
    a post-grad pass that changes no computation (:func:`_provenance_salt`, when the user set
    none) gives what compiles here keys of its own and notes each op's module and the aten op
    it came from. That pass's id is new in each process: a graph loaded from a cache runs no
    pass, so what compiles here while recording is lowered again once per process (its C++
    kernels still come from the compiled-code cache) and cached under a key of its own. Code
    compiled before keeps what it was compiled with. The profiler and the Lightning callback
    enter it when the model has compiled parts (compilation is lazy: a model compiles at its
    first call, often inside the profiled block or the fit). Code compiled meanwhile keeps a
    profiler range per kernel call for good: with no profiler running it costs a few µs per
    kernel call (a 200-layer MLP of 64-wide layers at batch 8 on this project's CPU: 6.3 ->
    about 7.0 ms per forward, noisy), nothing for models with few, large kernels."""
    import torch._inductor.config as inductor_config

    level = max(int(inductor_config.trace.provenance_tracking_level or 0), 1)
    settings: Dict[str, object] = {"cpp.enable_kernel_profile": True, "trace.provenance_tracking_level": level}
    if inductor_config.post_grad_custom_post_pass is None:
        settings["post_grad_custom_post_pass"] = _provenance_salt()
    with inductor_config.patch(settings), _backward_provenance():
        yield


def _provenance_salt() -> object:
    """A post-grad pass that changes no computation and records each op's module and origin
    (:func:`~torch_roofline.timing.inductor.remember_node_modules`: where a kernel's ops came
    from, exactly, when Inductor's stack traces cannot say, e.g. a loop over an
    ``nn.ModuleList``; which aten op each came from, for its eager bytes); its id enters
    Inductor's cache keys, so graphs compiled while kernels are recorded are cached apart from
    the same graphs compiled without provenance, and, the id holding :data:`_PROCESS_TOKEN`,
    apart from those of other processes: a cache hit runs no pass, and what the pass records
    lives in this process. Bump the version when what is recorded changes."""
    from torch._inductor.custom_graph_pass import CustomGraphPass

    from torch_roofline.timing.inductor import remember_node_modules

    class _ProvenanceSalt(CustomGraphPass):
        def __call__(self, graph: object) -> None:
            try:
                remember_node_modules(graph)
            except Exception:  # noqa: BLE001 - bookkeeping only: never break the user's compile
                pass

        def uuid(self) -> str:
            return f"torch_roofline.recording_compiled_kernels/6/{_PROCESS_TOKEN}"

    return _ProvenanceSalt()


@contextlib.contextmanager
def _backward_provenance() -> Iterator[None]:
    """Let a backward graph keep which ops each kernel fused.

    torch writes a graph's kernel-to-op map only while ``torch._inductor.debug._pre_grad_graph_id``
    is set, which it sets around a model's forward compile and resets after; the backward graph,
    compiled lazily at the first backward, then keeps an empty map (torch 2.14: ``{"version":
    2.0}``), and its kernels could not be counted. While active, that marker is set outside the
    forward compile too (torch's own "no graph id" value, -1, only when it is unset) and put back
    on exit. Only the provenance text changes; the compiled code is the same."""
    import torch._inductor.debug as debug

    if not hasattr(debug, "_pre_grad_graph_id") or debug._pre_grad_graph_id is not None:
        yield
        return
    debug._pre_grad_graph_id = -1
    try:
        yield
    finally:
        if debug._pre_grad_graph_id == -1:
            debug._pre_grad_graph_id = None


def is_fused_kernel(name: str) -> bool:
    """True for a ``torch.compile`` (Inductor) fused kernel's host event name: a C++ kernel's
    (``"graph_0_cpp_fused_add_native_layer_norm_1"``; a C++ GEMM template's under
    ``max-autotune``: ``"graph_0_gemm_m8n256k64_kernel"``) or a Triton kernel's launch
    (``"triton_per_fused_native_layer_norm_1"``, timed by the device kernel it launches): an op
    row of its own, whose FLOPs and bytes come from its compiled graph, not from recorded
    shapes."""
    return name[:1] in "gct" and _FUSED_KERNEL.match(name) is not None


@dataclass(frozen=True)
class CompiledRegion:
    """The calls of one compiled Dynamo frame in the recorded steps.

    Attributes:
        frame: Dynamo's frame id (``"0"``; a graph break makes the code after it frame ``"1"``,
            and so on).
        versions: the compiled versions of the frame that ran (``("0/0",)``; ``("0/0", "0/1")``
            after a recompilation), in order of first call.
        calls: calls over all recorded steps.
        time_s: their summed wall time in seconds (host time of the region events).
        module: the innermost ``roofline::`` module range around the calls (``""`` = the root;
            ``None``: outside every range, or mixed).
    """

    frame: str
    versions: Tuple[str, ...]
    calls: int
    time_s: float
    module: Optional[str]


@dataclass(frozen=True)
class CompiledCode:
    """What one trace recorded of compiled code (:func:`scan_compiled`).

    Attributes:
        regions: the compiled frames that ran, in order of first call.
        region_calls: ``Torch-Compiled Region`` calls, all frames together.
        kernel_calls: fused CPU kernel calls (:func:`is_fused_kernel`).
        recompiled: compile ids (``"0/1"``) Dynamo compiled inside the recorded steps.
        on_device: whether the trace holds device activity (kernels, memcpys, memsets).
    """

    regions: Tuple[CompiledRegion, ...]
    region_calls: int
    kernel_calls: int
    recompiled: Tuple[str, ...]
    on_device: bool


def scan_compiled(trace: Trace) -> CompiledCode:
    """One pass over ``trace`` for everything this module reports (a second one over the
    module ranges only when compiled regions ran). The notes below take its result, so a
    report scans a trace once."""
    calls: Dict[str, List[TraceEvent]] = defaultdict(list)
    versions: Dict[str, List[str]] = defaultdict(list)
    recompiled: List[str] = []
    kernels = 0
    on_device = False
    for ev in trace.events:
        kind = ev.kind
        if kind == "cpu_op":
            name = ev.name
            first = name[:1]
            if first == "T":
                match = _REGION.match(name)
                if match is not None:
                    frame, version = match.group(1), f"{match.group(1)}/{match.group(2)}"
                    calls[frame].append(ev)
                    if version not in versions[frame]:
                        versions[frame].append(version)
            elif first in "gct" and is_fused_kernel(name):
                kernels += 1
        elif kind == "user_annotation":
            match = _COMPILE_ID.search(ev.name) if "compile_id=" in ev.name else None
            if match is not None and f"{match.group(1)}/{match.group(2)}" not in recompiled:
                recompiled.append(f"{match.group(1)}/{match.group(2)}")
        elif kind in DEVICE_KINDS:
            on_device = True
    regions: List[CompiledRegion] = []
    if calls:
        ranges: Dict[object, List[TraceEvent]] = defaultdict(list)
        for ev in trace.events:
            if ev.kind in ("cpu_op", "user_annotation") and ev.name.startswith(RANGE_PREFIX):
                ranges[ev.tid].append(ev)
        labels = read_labels(trace.metadata)
        for frame, events in calls.items():
            modules = {_innermost_module(ev, ranges.get(ev.tid, ()), labels) for ev in events}
            regions.append(CompiledRegion(frame, tuple(versions[frame]), len(events), sum(ev.dur_s for ev in events),
                                          modules.pop() if len(modules) == 1 else None))
    return CompiledCode(tuple(regions), sum(len(v) for v in calls.values()), kernels, tuple(recompiled), on_device)


def _scanned(source: Union[Trace, CompiledCode]) -> CompiledCode:
    return source if isinstance(source, CompiledCode) else scan_compiled(source)


def compiled_calls(source: Union[Trace, CompiledCode]) -> Tuple[int, int]:
    """``(compiled region calls, fused CPU kernel calls)`` recorded in a trace (or its scan)."""
    code = _scanned(source)
    return code.region_calls, code.kernel_calls


def compiled_kernels_note(source: Union[Trace, CompiledCode]) -> Optional[str]:
    """A note when ``torch.compile``'d code ran on the CPU but its fused kernels were not
    recorded (Inductor emits their profiler ranges only when asked at compile time), so their
    time is the calling module's self time; ``None`` otherwise. Takes a trace or its scan."""
    code = _scanned(source)
    if not code.region_calls or code.kernel_calls or code.on_device:
        return None
    return (f"torch.compile'd code ran ({code.region_calls} compiled region call(s)) but its fused kernels were not "
            "recorded: their time is the self time of the module that called it. Set "
            "torch._inductor.config.cpp.enable_kernel_profile = True (or TORCHINDUCTOR_CPP_ENABLE_KERNEL_PROFILE=1) "
            "before the model's first call, so each fused kernel is timed as a row of its own")


def compiled_regions(source: Union[Trace, CompiledCode]) -> List[CompiledRegion]:
    """Every compiled frame that ran in a trace (or its scan), in order of its first call."""
    return list(_scanned(source).regions)


def _innermost_module(ev: TraceEvent, ranges: Sequence[TraceEvent], labels: Dict[str, str]) -> Optional[str]:
    best: Optional[TraceEvent] = None
    best_module: Optional[str] = None
    for r in ranges:
        if r.start_s <= ev.start_s + 1e-9 and ev.end_s <= r.end_s + 1e-9:
            parsed = parse_range_name(r.name, labels)
            if parsed is not None and parsed[0] == "module" and (best is None or r.dur_s <= best.dur_s):
                best, best_module = r, parsed[1]
    return best_module


def compiled_regions_note(source: Union[Trace, CompiledCode], steps: int = 1,
                          graph_breaks: Sequence[str] = ()) -> Optional[str]:
    """The report's note on compiled code: the regions per step (graph breaks), where they
    ran, and what was (re)compiled inside the recorded steps; ``None`` without compiled code.

    Args:
        source: the recorded steps' trace, or its :func:`scan_compiled`.
        steps: how many steps the trace holds (times and calls are given per step).
        graph_breaks: the reasons Dynamo gave for graph breaks (live sessions: its counters for
            the whole process), listed when more than one frame ran.
    """
    code = _scanned(source)
    regions, recompiled = code.regions, code.recompiled
    if not regions and not recompiled:
        return None
    steps = max(steps, 1)
    parts = []
    for r in regions:
        where = "outside every module" if r.module is None else ("in the root" if r.module == "" else f"in {r.module!r}")
        versions = f", versions {', '.join(r.versions)}" if len(r.versions) > 1 else ""
        parts.append(f"frame {r.frame}: {r.calls / steps:g} call(s), {r.time_s / steps * 1e3:.3g} ms {where}{versions}")
    text = f"torch.compile: {len(regions)} compiled frame(s) ran per step ({'; '.join(parts)})"
    if len(regions) > 1:
        text += "; more than one frame means graph breaks split the compiled code, with eager Python between the pieces"
    if graph_breaks and len(regions) > 1:
        text += "; graph breaks Dynamo reported in this process: " + "; ".join(sorted(set(graph_breaks))[:5])
    if recompiled:
        text += (f". Compiled inside the recorded steps: {', '.join(recompiled)} (a version after /0 is a "
                 "recompilation: new shapes or failed guards); its compile time is in the step's time")
    return text
