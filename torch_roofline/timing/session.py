"""The live path: run torch.profiler, export its trace, read it back with :func:`load_trace`.

:class:`ProfileSession` is a thin, quiet wrapper around ``torch.profiler.profile``. Every
time the profiler has a trace ready (at exit for a one-shot session, at the end of each
active window for a scheduled one) the trace is exported to a temporary Chrome/Kineto
file and parsed by the same reader that reads saved GPU traces, so live timing and
``from_trace`` share one code path (:mod:`torch_roofline.timing.attribution`).

Activities: CPU, plus CUDA when ``torch.cuda.is_available()``. Stacks are never recorded
(``with_stack=False``): they cost a lot and attribution does not need them.

Hardware counters (``hardware_counters=True``, CUDA only) ask Kineto's CUPTI range
profiler for per-kernel metrics through ``torch._C._profiler._ExperimentalConfig(
profiler_metrics=[...], profiler_measure_per_kernel=True)``; the trace then carries one
``cuda_profiler_range`` event per kernel, read by :mod:`torch_roofline.timing.counters`.
Range profiling replays kernels, so timings from such a session are not representative;
record counters in a separate session from the one you time. Some torch builds (2.14 among
them) document ``profiler_metrics`` as deprecated and ignored: the session warns when the
exported trace holds no counter events.

Example::

    with ModuleRanges(model), ProfileSession() as session:
        model(x)
    timing = attribute(session.trace)

    # Stepped, with a torch.profiler schedule:
    sched = torch.profiler.schedule(wait=1, warmup=1, active=2)
    with ProfileSession(schedule=sched) as session:
        for batch in loader:
            train_step(batch)
            session.step()
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import tempfile
import warnings
import weakref
from typing import Any, Callable, Iterable, List, Mapping, Optional, Sequence, Tuple

import torch
from torch.profiler import ProfilerAction, ProfilerActivity

from torch_roofline._gc import import_off_stack
from torch_roofline.timing.faults import StepFaults
from torch_roofline.timing.quiet import filtered_stderr, quiet_native_stderr
from torch_roofline.timing.trace import Trace, load_trace

#: (current action, next action) pairs for which ``torch.profiler.profile.step`` runs no
#: transition (its action map lists nothing for them).
_STEADY = frozenset({
    (ProfilerAction.NONE, ProfilerAction.NONE),
    (ProfilerAction.WARMUP, ProfilerAction.WARMUP),
    (ProfilerAction.RECORD, ProfilerAction.RECORD),
    (ProfilerAction.RECORD, ProfilerAction.RECORD_AND_SAVE),
})
_kineto_stopped = getattr(torch.autograd, "_is_kineto_stopped", lambda: False)

__all__ = ["DEFAULT_COUNTER_METRICS", "ProfileSession"]

DEFAULT_COUNTER_METRICS: Sequence[str] = tuple(
    f"smsp__sass_thread_inst_executed_op_{p}{op}_pred_on.sum"
    for p in ("d", "f", "h")
    for op in ("add", "mul", "fma")
) + ("dram__bytes_read.sum", "dram__bytes_write.sum")
"""CUPTI metrics asked for by ``hardware_counters=True``: SASS FP instruction counts per
precision (for FLOPs, see :mod:`~torch_roofline.timing.counters`) and DRAM bytes."""


class ProfileSession:
    """A torch.profiler session whose traces come back as :class:`Trace` records.

    Args:
        activities: ``torch.profiler.ProfilerActivity`` values; default CPU, plus CUDA when
            available.
        schedule: a ``torch.profiler.schedule(...)`` step → action function for stepped
            use (call :meth:`step` once per step); ``None`` records the whole block.
        record_shapes: record input shapes (lets a saved trace be counted without the model).
        profile_memory: record allocator events (peak memory in
            :attr:`TraceTiming.peak_memory_bytes`).
        hardware_counters: ask CUPTI for :data:`DEFAULT_COUNTER_METRICS` (or
            ``counter_metrics``) per kernel; CUDA only.
        counter_metrics: metric names to ask for instead of the defaults.
        export_path: also keep each exported trace here (``.json`` or ``.json.gz``; with a
            schedule that repeats, ``{n}`` in the name is replaced by the cycle number).
        metadata: ``{key: JSON-serialisable value}`` written into every exported trace's
            header (the module-name table of :class:`~torch_roofline.timing.ranges.ModuleRanges`).
        keep_results: also keep each window's in-memory profiler results (``kineto_results``,
            for :class:`~torch_roofline.timing.identity.Identities`) in :attr:`results`.
        capture_overload_names: record op names with their overload (``aten::add.Tensor``),
            where this torch supports it.

    After the block, :attr:`traces` holds one :class:`Trace` per completed active window
    and :attr:`trace` the last one; :attr:`minor_faults_per_step` the page faults of the
    recorded steps (:mod:`torch_roofline.timing.faults`). The profiler is stopped on exit,
    exceptions included; a block that raises records no trace.
    """

    def __init__(
        self,
        *,
        activities: Optional[Iterable[ProfilerActivity]] = None,
        schedule: Optional[Callable[[int], Any]] = None,
        record_shapes: bool = False,
        profile_memory: bool = True,
        hardware_counters: bool = False,
        counter_metrics: Optional[Sequence[str]] = None,
        export_path: Optional[str] = None,
        metadata: Optional[Mapping[str, Any]] = None,
        keep_results: bool = False,
        capture_overload_names: bool = False,
    ) -> None:
        self._activities = _activities(activities)
        if hardware_counters and ProfilerActivity.CUDA not in self._activities:
            raise ValueError(
                "ProfileSession(hardware_counters=True): hardware counters are read by CUPTI "
                "on NVIDIA GPUs, but this session profiles "
                f"{sorted(a.name for a in self._activities)} only "
                f"(torch.cuda.is_available() is {torch.cuda.is_available()}); run on a CUDA "
                "machine or pass hardware_counters=False."
            )
        self._schedule = schedule
        self._record_shapes = record_shapes
        self._profile_memory = profile_memory
        self._hardware_counters = hardware_counters
        self._metrics = tuple(counter_metrics or DEFAULT_COUNTER_METRICS)
        self._export_path = export_path
        self._metadata = {k: json.dumps(v) for k, v in (metadata or {}).items()}
        self._keep_results = keep_results
        self._overload_names = capture_overload_names
        self._prof: Optional[torch.profiler.profile] = None
        self._primer: Optional[torch.Tensor] = None
        self._discard = False
        self._faults = StepFaults()
        self._filter: Optional[filtered_stderr] = None
        self._pending: List[_PendingTrace] = []
        self.results: List[Any] = []
        self.steps_taken = 0
        #: the paths the windows' traces were kept at (``export_path``), in order
        self.exported: List[str] = []

    # ----------------------------------------------------------------- context manager
    def __enter__(self) -> "ProfileSession":
        if self._prof is not None:
            raise RuntimeError("ProfileSession is already running; use one `with` per session.")
        if torch.autograd.profiler._is_profiler_enabled:
            raise RuntimeError(
                "ProfileSession: another torch.profiler session is already running in this "
                "thread; torch.profiler cannot nest. Stop the outer profiler first."
            )
        self._pending = []
        self.results = []
        self.steps_taken = 0
        self._discard = False
        prof = torch.profiler.profile(
            activities=sorted(self._activities, key=lambda a: a.name),
            schedule=self._schedule,
            on_trace_ready=self._on_trace_ready,
            record_shapes=self._record_shapes,
            profile_memory=self._profile_memory,
            with_stack=False,
            experimental_config=self._experimental_config(),
        )
        # With profile_memory, the first free of a block allocated before recording started
        # makes c10 print "Memory block of unknown size was allocated before the profiling
        # started" (once per process, straight to fd 2, usually mid-step). A block allocated
        # now is freed inside a quiet window as soon as the profiler records (at once, or at
        # the step() where a schedule starts it), so that warning never reaches the user.
        self._primer = torch.empty(1) if self._profile_memory else None
        # ... and later frees of such blocks make c10 print the note again every 1,000th time:
        # while the session records, fd 2 goes through a filter that drops it (quiet.py).
        self._filter = filtered_stderr() if self._profile_memory else None
        if self._filter is not None:
            self._filter.__enter__()
        # torch.profiler's start asks hasattr(torch, "_inductor"), which imports torch._inductor
        # (and torch._dynamo with it) at the first start in a process, from inside the caller's
        # frames, which that import then keeps alive (see torch_roofline._gc): import it first,
        # off the stack.
        import_off_stack("torch._inductor")
        try:
            with quiet_native_stderr():
                prof.__enter__()
                self._release_primer()
                self._add_metadata(prof)
        except BaseException:
            self._close_filter()
            raise
        self._prof = prof
        self._faults.start()
        return self

    def _add_metadata(self, prof: torch.profiler.profile) -> None:
        """Write :attr:`_metadata` into the recording trace (only a running recording keeps it:
        each schedule cycle starts a new one, so this runs again after every step)."""
        if self._metadata and torch.autograd.profiler._is_profiler_enabled:
            for key, value in self._metadata.items():
                prof.add_metadata_json(key, value)

    def _release_primer(self) -> None:
        if self._primer is not None and torch.autograd.profiler._is_profiler_enabled:
            self._primer = None

    def step(self) -> None:
        """Mark the end of a step (drives the schedule, like ``torch.profiler.profile.step``)."""
        if self._prof is None:
            raise RuntimeError("ProfileSession.step() called outside its `with` block.")
        self._faults.mark()
        self.steps_taken += 1
        prof = self._prof
        if self._steady(prof):
            # Nothing starts or stops: no native output to silence and no new recording to
            # write the metadata into. The redirection costs ~0.2 ms with caches cold after a
            # step, and it would fall inside the next step's ProfilerStep span.
            prof.step()
            self._release_primer()
            return
        with quiet_native_stderr():
            prof.step()
            self._release_primer()
            self._add_metadata(prof)

    def _steady(self, prof: torch.profiler.profile) -> bool:
        """Whether the coming ``prof.step()`` keeps the profiler as it is (torch's schedule
        moves from an action to one that needs no transition: no start, stop or export)."""
        if _kineto_stopped():  # torch then moves to DEVICE_STOPPED, a transition
            return False
        if self._schedule is None:
            return prof.current_action == ProfilerAction.RECORD
        return (prof.current_action, self._schedule(prof.step_num + 1)) in _STEADY

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        prof, self._prof = self._prof, None
        if prof is None:
            return
        # A failed block records nothing: parsing a partial trace could raise and hide
        # the user's exception.
        self._discard = exc_type is not None
        self._faults.mark()
        try:
            with quiet_native_stderr():
                prof.__exit__(exc_type, exc, tb)
        finally:
            # torch's profile object is a reference cycle of its own (its action map holds its
            # bound methods): left pointing at this session, it would keep the session and its
            # traces alive until the cyclic collector runs, long after the user let go of them.
            prof.on_trace_ready = None
            self._close_filter()

    def _close_filter(self) -> None:
        flt, self._filter = getattr(self, "_filter", None), None
        if flt is not None:
            flt.__exit__(None, None, None)

    @property
    def minor_faults_per_step(self) -> Optional[float]:
        """Minor page faults per recorded step (pages the step touched for the first time).

        One-shot sessions: the whole block (or the mean over its steps when :meth:`step`
        was called, as the trace's ``ProfilerStep`` spans are). Scheduled ones: the mean over the steps the
        schedule recorded (``RECORD``/``RECORD_AND_SAVE``). None where the OS gives no
        count, or before any step was recorded.
        """
        faults = self._faults.per_step
        if not faults:
            return None
        if self._schedule is None:
            # one step, unless step() split the block (the trace then has one ProfilerStep per call)
            return float(faults[0]) if len(faults) == 1 else sum(faults[:-1]) / (len(faults) - 1)
        active = (ProfilerAction.RECORD, ProfilerAction.RECORD_AND_SAVE)
        # per_step[i] is step i (step() marks its end); the entry after the last step() is
        # the tail of the block, which the schedule never recorded.
        recorded = [f for i, f in enumerate(faults[:-1]) if self._schedule(i) in active]
        return sum(recorded) / len(recorded) if recorded else None

    # ----------------------------------------------------------------- results
    @property
    def trace(self) -> Trace:
        """The last trace recorded (raises if the schedule never completed a window)."""
        if not self._pending:
            first, _ = self.window()
            if self._schedule is not None and first is not None and self.steps_taken < first + 1:
                raise RuntimeError(
                    f"ProfileSession recorded no trace: {self.steps_taken} step(s) ran (session.step() calls), and "
                    f"this schedule records from step {first + 1} on (its wait and warmup steps come first); "
                    "run more steps inside the block, or use a schedule with fewer wait/warmup steps"
                )
            raise RuntimeError(
                "ProfileSession recorded no trace: the block has not ended, it raised, or the "
                "schedule's active window never completed (call session.step() once per step "
                "for wait + warmup + active steps)."
            )
        return self._pending[-1].trace()

    def window(self) -> Tuple[Optional[int], Optional[int]]:
        """(first recorded step, 0-based; steps the first window records) of the schedule;
        ``(None, None)`` without a schedule."""
        if self._schedule is None:
            return None, None
        recording = (ProfilerAction.RECORD, ProfilerAction.RECORD_AND_SAVE)
        for first in range(10_000):
            if self._schedule(first) in recording:
                n = 1
                while n < 10_000 and self._schedule(first + n - 1) != ProfilerAction.RECORD_AND_SAVE:
                    n += 1
                return first, n
        return None, None

    # ----------------------------------------------------------------- internals
    def _experimental_config(self) -> Optional[Any]:
        options: dict = {}
        if self._hardware_counters:
            options.update(profiler_metrics=list(self._metrics), profiler_measure_per_kernel=True)
        if self._overload_names:
            options["capture_overload_names"] = True
        if not options:
            return None
        try:
            return torch._C._profiler._ExperimentalConfig(**options)
        except TypeError:  # an older torch without capture_overload_names
            options.pop("capture_overload_names", None)
            return torch._C._profiler._ExperimentalConfig(**options) if options else None

    def _on_trace_ready(self, prof: torch.profiler.profile) -> None:
        """Export the window's trace to a temporary file; it is read on first use (:attr:`traces`),
        so leaving the block costs torch.profiler's stop and export, not the reading."""
        if self._discard:
            return
        fd, tmp = tempfile.mkstemp(prefix="roofline-", suffix=".json")
        os.close(fd)
        try:
            with quiet_native_stderr():
                prof.export_chrome_trace(tmp)
            if self._export_path is not None:
                kept = self._export_path.replace("{n}", str(len(self._pending)))
                _keep(tmp, kept)
                self.exported.append(kept)
            counters = self._hardware_counters and _mentions(tmp, b"cuda_profiler_range")
        except BaseException:
            os.unlink(tmp)
            raise
        self._pending.append(_PendingTrace(tmp))
        if self._keep_results:
            self.results.append(prof.profiler.kineto_results if prof.profiler is not None else None)
        if self._hardware_counters and not counters:
            warnings.warn(
                "ProfileSession(hardware_counters=True): the trace holds no CUPTI counter "
                "events (cuda_profiler_range); this torch build may ignore "
                "_ExperimentalConfig.profiler_metrics. Record counters with a torch that "
                "supports the CUPTI range profiler, or with Nsight Compute.",
                RuntimeWarning,
                stacklevel=2,
            )

    @property
    def traces(self) -> List[Trace]:
        """One :class:`Trace` per completed active window, read from its file on first use."""
        return [pending.trace() for pending in self._pending]


class _PendingTrace:
    """An exported trace file, read once when first asked for, then removed."""

    def __init__(self, path: str) -> None:
        self.path: Optional[str] = path
        self._trace: Optional[Trace] = None
        self._cleanup = weakref.finalize(self, _unlink, path)

    def trace(self) -> Trace:
        if self._trace is None:
            try:
                self._trace = load_trace(self.path)
            finally:
                self._cleanup()  # removes the file, once
        return self._trace


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _mentions(path: str, needle: bytes) -> bool:
    """Whether the file at ``path`` holds ``needle`` (read in chunks)."""
    with open(path, "rb") as fh:
        tail = b""
        while True:
            chunk = fh.read(1 << 22)
            if not chunk:
                return False
            if needle in tail + chunk:
                return True
            tail = chunk[-len(needle):]


def _activities(activities: Optional[Iterable[ProfilerActivity]]) -> frozenset:
    if activities is None:
        chosen = {ProfilerActivity.CPU}
        if torch.cuda.is_available():
            chosen.add(ProfilerActivity.CUDA)
        return frozenset(chosen)
    chosen = frozenset(activities)
    bad = [a for a in chosen if not isinstance(a, ProfilerActivity)]
    if bad or not chosen:
        raise ValueError(
            f"ProfileSession(activities=...): expected torch.profiler.ProfilerActivity values, "
            f"e.g. [ProfilerActivity.CPU], got {list(activities) if not bad else bad}."
        )
    return chosen


def _keep(src: str, dest: str) -> None:
    """Copy the exported trace to ``dest`` (gzip-compressed for ``.gz``), whole or not at all."""
    from torch_roofline._io import atomic_open

    os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
    with open(src, "rb") as fin, atomic_open(dest, "wb", caller="ProfileSession(export_path=...)") as handle:
        if dest.endswith(".gz"):
            with gzip.GzipFile(fileobj=handle, mode="wb") as fout:
                shutil.copyfileobj(fin, fout)
        else:
            shutil.copyfileobj(fin, handle)
