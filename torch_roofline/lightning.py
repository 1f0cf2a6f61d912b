"""The Lightning callback: ``Trainer(callbacks=[Roofline()])``.

A thin adapter over :class:`~torch_roofline.profiler.RooflineProfiler`: it opens a profiler
around a few real training steps, asks for the report once the window closes, and hands
the report to the trainer's loggers. All the measuring, counting and analysis happens in
the profiler; this module only decides *when* and *where to*.

Two namespaces, one logic. A Trainer accepts only callbacks derived from its own
namespace's ``Callback``, so the same logic is offered twice, each class built on first
use (importing Lightning is slow, and either namespace may be missing):

* ``torch_roofline.lightning.Roofline``: for ``lightning.pytorch`` (``import lightning``);
* ``torch_roofline.lightning.RooflinePL``: for ``pytorch_lightning``.

**Schedule** (torch.profiler-style; a *step* is an optimizer step, ``trainer.global_step``;
with ``accumulate_grad_batches=k`` one step is ``k`` batches)::

    steps:   0 .. wait-1 | wait .. wait+warmup-1 | .. +active-1 | (every_n_steps later: again)
    action:  nothing     | profiler on, discarded | recorded     |

``wait`` (default 2) skips first-step costs (allocator growth, cuDNN/oneDNN autotune,
``torch.compile``); ``warmup`` (1) runs the profiler without keeping its results (its own
start-up cost); ``active`` (2) steps are recorded and averaged. ``every_n_steps=None``
(default) profiles once; ``every_n_steps=N`` opens a new window every ``N`` steps after the
first.

**Validation** (``validation=True``; default off): the first ``warmup + active`` batches
of a validation run (sanity check excluded, first dataloader only) are profiled forward
only, into a separate report: ``val_reports``, tag ``<tag>_val``, files under
``roofline/val/step<N>/``. Validation windows follow the same schedule: window ``k`` is
the first validation run at or after training window ``k``'s start step.

**Logging** (rank zero only; every rank measures). For each logger in ``trainer.loggers``:
a ``TensorBoardLogger`` gets the full TensorBoard output of
:func:`~torch_roofline.tensorboard.summary.write_report` at the trainer's global step
(scalars under ``roofline/``, text, chart image, the Roofline tab's data); any other
logger gets the scalars through ``log_metrics``. Files always go to
``<log_dir>/roofline/step<N>/``: ``report.json``, ``roofline.png``, and under distributed
training ``report-rank<r>.json`` for every rank and ``ranks.json``, the cross-rank
summary. Without a logger the files go to ``<default_root_dir>/roofline/`` and one
warning says so.

**Overhead.** Outside a window the callback costs two integer comparisons per batch. At
the end of a window the training thread closes the profiler, counts the recorded calls
(once per distinct call signature) and analyses, and logs the scalars; the chart (drawn once per window, shared by
``roofline.png`` and the TensorBoard image), the TensorBoard events and the files are
written by a background thread while training goes on (matplotlib's object API, no
pyplot). That thread is joined before the next window's writes, at the end of training,
on an exception and at teardown, so ``fit`` returns only once everything is written.
``benchmarks/lightning_overhead.py`` measures the whole cost against a plain ``fit``.

**Distributed** (DDP, ``ddp_spawn``): each rank profiles its own steps; the reports are
gathered to rank 0 with ``torch.distributed.gather_object`` (a few kB each). Rank 0 writes
its own report as ``report.json`` (and to the loggers), every rank's as
``report-rank<r>.json``, and ``ranks.json``: the summary ``from_traces`` gives for a job's
saved traces (:class:`torch_roofline.traceset.RankSummary`): per (module, phase) the mean,
min and max time across ranks and the slowest rank, the straggler spread
``(max - min) / mean``, the straggler rank (busy longest) and each rank's wait; scalars
``roofline/ranks/step_time_s_mean``, ``…/step_time_s_max`` and
``…/straggler_spread_pct``.

**Collective communication** (DDP's gradient ``all_reduce``, and any ``all_gather``,
``reduce_scatter``, ``broadcast`` in the step) runs in C10D, which the op counter does not
see; under distributed training the window's trace is recorded with shapes and
:mod:`torch_roofline.timing.collectives` reads every ``gloo:``/``nccl:`` collective from
it: bytes per rank by NCCL's bus-bandwidth convention (ring all_reduce: ``2 (n - 1) / n``
x the message bytes), time, and the phase that issued it, placed against the interconnect
roof (``interconnect_bandwidth=`` in B/s per direction, else half the catalog's aggregate
bidirectional link figure; CPUs have none, and get no roof and a note). Each rank's
summary is in ``ranks.json`` under ``communication`` and in a note of its report; rank 0's
is logged as ``roofline/comm/time_s``, ``…/bus_bytes``, ``…/step_time_share_pct`` and
``…/efficiency_pct``. Collective time can overlap compute (``overlap_s`` and
``overlap_share`` in ``communication`` say how much), so its share of the step is not
additive with the module times.

**What is counted: what ran.** Every op of the window's recorded steps is counted from the
profiler's own record (:mod:`torch_roofline.profiler`): ``training_step`` and
``validation_step`` as written, whatever they call (submodules called directly, a loss
computed outside ``forward``, several models and optimizers, manual optimisation), every
micro-batch of ``accumulate_grad_batches``, activation-checkpoint recomputes, and the ops
Lightning itself runs in the step (precision plugins' casts, gradient clipping, metric
logging). Ops outside the LightningModule's submodules' ``forward`` (its own
``training_step`` code, Lightning's) are the ``"(outside modules)"`` row.

Limits, honestly:

* ``torch.compile``: module ranges are not recorded inside compiled code (they would make it
  compile again: see :mod:`torch_roofline.timing.ranges`), so its ops and fused kernels land on
  the module that calls it (submodules called from eager code, as the README example's
  ``training_step`` calls ``self.encoder(x)`` after ``self.compile()``, keep their ranges); on the CPU each fused kernel is a timed row costed from its
  compiled graph (see :mod:`torch_roofline.profiler`). A warning says so at setup; the fit
  goes on.
* FSDP (FSDP2 ``fully_shard`` and FSDP1, tested with ``RooflineProfiler`` and saved traces on
  2 CPU processes over gloo: ``tests/test_fsdp.py``): the unsharded compute ops are counted
  as they ran, on the modules that ran them; FSDP's parameter ``all_gather`` and gradient
  reduction are read as collectives with their bytes and phase. Lightning's FSDP strategy
  itself is untested here: it refuses ``accelerator="cpu"`` ("requires a GPU accelerator")
  and no GPU is lent to this project's tests. DeepSpeed: untested.

Example::

    import lightning.pytorch as L
    from torch_roofline.lightning import Roofline

    trainer = L.Trainer(max_steps=100, callbacks=[Roofline()])
    trainer.fit(model, loader)
    # then: tensorboard --logdir lightning_logs --samples_per_plugin=roofline=0
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
import tempfile
import threading
import warnings
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from torch_roofline.records import check_memory_model
from torch_roofline.scalars import finite as _finite, percent as _percent, totals_scalars
from torch_roofline.timing.compiled import recording_compiled_kernels
from torch_roofline.timing.ranges import compiled_modules, phase_range

__all__ = ["Roofline", "RooflinePL", "RooflineSchedule", "comm_scalars", "rank_summary", "report_scalars"]

_INSTALL_HINT = "pip install torch_roofline[lightning]"


# ----------------------------------------------------------------------------- schedule


@dataclasses.dataclass(frozen=True)
class RooflineSchedule:
    """When the callback profiles, in optimizer steps (``trainer.global_step``).

    Args:
        wait: steps skipped before the first window (first-step costs).
        warmup: steps run under the profiler, results discarded.
        active: steps recorded and averaged into the report.
        every_n_steps: distance between window starts; ``None``: one window only.

    Example:
        >>> s = RooflineSchedule(wait=2, warmup=1, active=2, every_n_steps=10)
        >>> [s.window_start(k) for k in range(3)]
        [2, 12, 22]
    """

    wait: int = 2
    warmup: int = 1
    active: int = 2
    every_n_steps: Optional[int] = None

    def __post_init__(self) -> None:
        for name, low in (("wait", 0), ("warmup", 0), ("active", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"Roofline({name}={value!r}): expected an int >= {low}, e.g. {name}=2")
        n = self.every_n_steps
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < self.length):
            raise ValueError(
                f"Roofline(every_n_steps={n!r}): expected None (profile once) or an int >= warmup + active "
                f"= {self.length}, so that windows do not overlap"
            )

    @property
    def length(self) -> int:
        """Steps in one window: ``warmup + active``."""
        return self.warmup + self.active

    def window_start(self, index: int) -> Optional[int]:
        """First step of window ``index`` (0-based); ``None`` when there is no such window."""
        if index == 0:
            return self.wait
        if self.every_n_steps is None:
            return None
        return self.wait + index * self.every_n_steps


# ----------------------------------------------------------------------------- pure helpers


def report_scalars(report_dict: Mapping[str, Any], tag: str = "roofline") -> Dict[str, float]:
    """The scalars a non-TensorBoard logger gets (:func:`torch_roofline.scalars.totals_scalars`).

    Example::

        >>> report_scalars({"totals": {"efficiency": 0.25, "time_s": 0.002}})
        {'roofline/efficiency_pct': 25.0, 'roofline/step_time_s/measured': 0.002}
    """
    return totals_scalars(report_dict, tag)


def rank_summary(reports: Sequence[Optional[Mapping[str, Any]]],
                 communication: Optional[Sequence[Optional[Mapping[str, Any]]]] = None,
                 collectives: Optional[Sequence[Sequence[Sequence[Any]]]] = None) -> Dict[str, Any]:
    """Cross-rank summary of per-rank report dicts (index = rank; ``None`` = no report):
    :class:`torch_roofline.traceset.RankSummary` as a dict (``to_dict()``), the summary
    ``from_traces`` gives for a job's saved traces.

    Keys: ``world_size``; ``ranks``; ``missing_ranks``; ``step_time_s`` per rank and its
    ``step_time_s_mean``/``step_time_s_max``; ``straggler_spread`` = ``(max - min) / mean`` of
    the step times (0 = all ranks equally fast); ``straggler_rank`` and ``straggler_reason``;
    ``busy_s`` and ``wait_s`` per rank; ``clock_offsets_s``; ``communication``; ``modules``:
    per (name, phase) the time per step on each rank (seconds, ``None`` where a rank has no
    time) with mean, min, max, spread and the slowest rank.

    ``communication``: each rank's ``CommSummary.to_dict()`` (or ``None``); ``collectives``:
    each rank's ``(name, completion time s, time s)`` per collective, for the wait and the
    clock offsets.

    Example (hand-computed: times 1 and 3 -> mean 2, spread (3 - 1) / 2 = 1):
        >>> r = lambda t: {"totals": {"time_s": t}, "modules": [{"name": "", "phase": "all", "time_s": t}]}
        >>> rank_summary([r(1.0), r(3.0)])["straggler_spread"]
        1.0
    """
    from torch_roofline.ranks import RankRecord, summarize_ranks

    comms = list(communication or []) + [None] * len(reports)
    colls = list(collectives or []) + [()] * len(reports)
    records = [RankRecord.of_dict(rank, rep, comms[rank], colls[rank] or ())
               for rank, rep in enumerate(reports) if rep is not None]
    return summarize_ranks(records, world_size=len(reports)).to_dict()


def _rank_scalars(summary: Mapping[str, Any], tag: str) -> Dict[str, float]:
    out = {
        f"{tag}/ranks/step_time_s_mean": summary.get("step_time_s_mean"),
        f"{tag}/ranks/step_time_s_max": summary.get("step_time_s_max"),
        f"{tag}/ranks/straggler_spread_pct": _percent(summary.get("straggler_spread")),
    }
    return {k: float(v) for k, v in out.items() if _finite(v) is not None}


# ----------------------------------------------------------------------------- distributed


def _gather_to_rank_zero(obj: Any) -> Optional[List[Any]]:
    """``[obj of rank 0, obj of rank 1, …]`` on rank 0, ``None`` elsewhere; ``[obj]`` alone."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [obj]
    rank = dist.get_rank()
    out: Optional[List[Any]] = [None] * dist.get_world_size() if rank == 0 else None
    dist.gather_object(obj, out, dst=0)
    return out


# ----------------------------------------------------------------------------- the window


def _world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1



class _Window:
    """One profiling window: the profiler, the closure range and the step count.

    ``kind``: ``"train"`` (optimizer steps; Lightning's closure gets a forward range) or
    ``"val"`` (validation batches, forward only).
    """

    def __init__(self, profiler: Any, start_step: int, length: int, kind: str = "train",
                 trace_path: Optional[str] = None) -> None:
        self.profiler = profiler
        self.trace_path = trace_path  # where the profiler exports its trace (export_trace=True)
        self.start_step = start_step
        self.length = length
        self.kind = kind
        self.steps_done = 0
        self._hook: Any = None

    def open(self) -> None:
        import torch.optim.optimizer as optim

        self.profiler.__enter__()
        try:
            if self.kind == "train":
                self._hook = optim.register_optimizer_step_pre_hook(_range_the_closure)
        except BaseException:
            self.profiler.__exit__(None, None, None)
            raise

    def step(self) -> bool:
        """Mark one optimizer step; ``True`` once the window is complete."""
        self.steps_done += 1
        self.profiler.step()
        return self.steps_done >= self.length

    def close(self, exc: Optional[BaseException] = None) -> None:
        try:
            if exc is None:
                self.profiler.__exit__(None, None, None)
            else:
                self.profiler.__exit__(type(exc), exc, exc.__traceback__)
        finally:
            if self._hook is not None:
                self._hook.remove()
                self._hook = None


def _range_the_closure(optimizer: Any, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Optional[Tuple[Any, Any]]:
    """Optimizer-step pre-hook: run Lightning's closure inside a forward phase range.

    Lightning runs ``training_step`` and ``backward`` inside ``optimizer.step(closure)``,
    which torch records as ``Optimizer.step#…``; without this range every forward op of
    the step would be read as optimizer work.
    """
    closure = kwargs.get("closure")
    if closure is None and args:
        closure, args = args[0], args[1:]
    if closure is None:
        return None

    def ranged() -> Any:
        with phase_range("forward"):
            return closure()

    return tuple(args), {**kwargs, "closure": ranged}


# ----------------------------------------------------------------------------- the logic


class _Writer:
    """One background thread that writes a window's outputs while training goes on.

    Rendering the chart (matplotlib: ~0.5 s for the first figure of a process) and writing
    the TensorBoard events and files need nothing from the training thread, so they run
    here. :meth:`join` waits for the job: the callback joins before the next window's
    writes, at the end of training, on an exception and at teardown, so ``fit`` never
    returns before its outputs are on disk. An error in the job becomes a warning at the
    join (never an exception inside the user's training).
    """

    def __init__(self) -> None:
        self._thread: Optional[threading.Thread] = None
        self._error: Optional[BaseException] = None

    def submit(self, job: Any) -> None:
        self.join()

        def run() -> None:
            try:
                job()
            except BaseException as exc:  # reported at the join, on the training thread
                self._error = exc

        self._thread = threading.Thread(target=run, name="torch_roofline-writer", daemon=True)
        self._thread.start()

    def join(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()
        error, self._error = self._error, None
        if error is not None:
            warnings.warn(f"Roofline: writing the report failed: {type(error).__name__}: {error}", UserWarning,
                          stacklevel=3)


class _RooflineLogic:
    """The callback's logic, shared by both namespaces' classes (see the module docstring).

    Args:
        wait, warmup, active, every_n_steps: the schedule (:class:`RooflineSchedule`).
        roof: roofs to use, as for :class:`~torch_roofline.profiler.RooflineProfiler`
            (``"auto"``, ``"datasheet"``, ``"measured"``, a catalog name, a file, a Device).
        memory_model: ``"op"`` or ``"compulsory"`` bytes for the roofline.
        tag: TensorBoard tag and scalar prefix (validation: ``<tag>_val``).
        top_n: modules given per-module TensorBoard scalars (0-50).
        dirpath: where the files go (default: each logger's log dir, see above).
        profile_memory: record allocator events (peak memory).
        export_trace: also keep the profiler's Chrome trace next to the report (``trace.json``,
            rank zero's; other ranks' traces are not kept).
        plot: write ``roofline.png`` (and the TensorBoard image).
        validation: also profile validation batches (forward only) into a separate report
            (tag ``<tag>_val``, files under ``roofline/val/``); default off.
        interconnect_bandwidth: the interconnect roof for collectives in B/s per direction
            (e.g. a gloo loopback figure you measured); default: the device catalog's
            figure (half its aggregate bidirectional bandwidth), or no roof.
    """

    _namespace = "lightning.pytorch"

    def __init__(
        self,
        *,
        wait: int = 2,
        warmup: int = 1,
        active: int = 2,
        every_n_steps: Optional[int] = None,
        roof: Any = "auto",
        memory_model: str = "op",
        tag: str = "roofline",
        top_n: int = 10,
        dirpath: Optional[str] = None,
        profile_memory: bool = True,
        export_trace: bool = False,
        plot: bool = True,
        validation: bool = False,
        interconnect_bandwidth: Optional[float] = None,
    ) -> None:
        super().__init__()
        check_memory_model(memory_model, "Roofline")
        if not isinstance(tag, str) or not tag or tag.startswith("/"):
            raise ValueError(f"Roofline(tag={tag!r}): expected a non-empty string such as 'roofline'")
        if interconnect_bandwidth is not None and (
                _finite(interconnect_bandwidth) is None or interconnect_bandwidth <= 0):
            raise ValueError(f"Roofline(interconnect_bandwidth={interconnect_bandwidth!r}): expected B/s per "
                             "direction > 0, e.g. interconnect_bandwidth=10e9, or None")
        self.schedule = RooflineSchedule(wait=wait, warmup=warmup, active=active, every_n_steps=every_n_steps)
        self.roof = roof
        self.memory_model = memory_model
        self.tag = tag
        self.top_n = top_n
        self.dirpath = dirpath
        self.profile_memory = profile_memory
        self.export_trace = export_trace
        self.plot = plot
        self.validation = bool(validation)
        self.interconnect_bandwidth = None if interconnect_bandwidth is None else float(interconnect_bandwidth)
        self.reports: List[Any] = []  # this rank's training reports, one per completed window
        self.val_reports: List[Any] = []  # this rank's validation reports
        self.communication: List[Any] = []  # this rank's CommSummary per training window (distributed)
        self.files: List[str] = []  # files written by this process (rank zero only)
        self._windows_done: List[int] = []  # start steps of completed windows (checkpointed)
        self._val_windows_done: List[int] = []
        self._window: Optional[_Window] = None
        self._inductor: Any = None  # recording_compiled_kernels() during a fit of a compiled module
        self._last_global_step: Optional[int] = None
        self._warned_no_logger = False
        self._device: Any = None  # the roofs resolved for the first report, reused by later windows
        self._writer = _Writer()

    # ---- state ----------------------------------------------------------------------
    @property
    def state_key(self) -> str:
        return self._generate_state_key(tag=self.tag)

    def state_dict(self) -> Dict[str, Any]:
        state: Dict[str, Any] = {"windows_done": list(self._windows_done)}
        if self.validation:
            state["val_windows_done"] = list(self._val_windows_done)
        return state

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        self._windows_done = [int(s) for s in state_dict.get("windows_done", ())]
        self._val_windows_done = [int(s) for s in state_dict.get("val_windows_done", ())]

    def _next_start(self) -> Optional[int]:
        return self.schedule.window_start(len(self._windows_done))

    # ---- hooks ----------------------------------------------------------------------
    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        mine = [cb for cb in getattr(trainer, "callbacks", ()) if isinstance(cb, _RooflineLogic)]
        if len(mine) > 1:
            tags = ", ".join(f"{type(cb).__name__}(tag={cb.tag!r})" for cb in mine)
            raise ValueError(
                f"Trainer(callbacks=[...]) holds {len(mine)} Roofline callbacks ({tags}): torch.profiler cannot "
                "run two sessions at once, so their windows would collide. Keep one; for more windows use "
                "Roofline(every_n_steps=N), and validation=True for validation batches"
            )
        compiled = [name for name, _ in compiled_modules(pl_module)]
        if compiled:
            if self._inductor is None:  # the fit compiles at its first step: record the kernels
                self._inductor = recording_compiled_kernels()
                self._inductor.__enter__()
            names = ", ".join(repr(n) if n else "the LightningModule's forward" for n in compiled)
            warnings.warn(
                f"Roofline: {names} run(s) under torch.compile. Module ranges are not recorded inside compiled "
                "code (they would make it compile again), so its ops and fused kernels are attributed to the "
                "module that calls it. On the CPU each fused kernel is a timed row of its own, costed from its "
                "compiled graph; Inductor records them when the model is compiled with "
                "torch._inductor.config.cpp.enable_kernel_profile = True (and the ops each fused with "
                "torch._inductor.config.trace.provenance_tracking_level = 1). Profile without torch.compile for "
                "per-submodule attribution.",
                UserWarning,
                stacklevel=2,
            )

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if self._window is not None:
            return
        start = self._next_start()
        if start is None or trainer.global_step < start:
            return
        if batch_idx % max(int(trainer.accumulate_grad_batches), 1) != 0:
            return  # open at the first micro-batch of an optimizer step
        self._open(trainer, pl_module, "train")

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        window = self._window
        if window is None or window.kind != "train":
            return
        if trainer.global_step == self._last_global_step:
            return  # a micro-batch of gradient accumulation: the optimizer step is not over
        self._last_global_step = trainer.global_step
        if window.step():
            self._finish(trainer, pl_module)

    def on_validation_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int,
                                  dataloader_idx: int = 0) -> None:
        if not self.validation or self._window is not None or trainer.sanity_checking or dataloader_idx != 0:
            return
        start = self.schedule.window_start(len(self._val_windows_done))
        if start is None or trainer.global_step < start or batch_idx != 0:
            return  # a validation window covers the first batches of a validation run
        self._open(trainer, pl_module, "val")

    def on_validation_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int,
                                dataloader_idx: int = 0) -> None:
        window = self._window
        if window is not None and window.kind == "val" and dataloader_idx == 0 and window.step():
            self._finish(trainer, pl_module)

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        window = self._window
        if window is not None and window.kind == "val":
            self._abort(None)
            warnings.warn(
                f"Roofline(validation=True): the validation run ended {window.steps_done} batch(es) into a "
                f"{self.schedule.length}-batch window (warmup {self.schedule.warmup} + active "
                f"{self.schedule.active}); no validation report was made. Lower warmup/active or validate on "
                "more batches.",
                UserWarning,
                stacklevel=2,
            )

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        if self._window is not None and self._window.kind == "train":
            done = self._window.steps_done
            self._abort(None)
            warnings.warn(
                f"Roofline: training ended {done} step(s) into a {self.schedule.length}-step profiling window "
                f"(warmup {self.schedule.warmup} + active {self.schedule.active}); no report was made. Train "
                "longer or lower wait/warmup/active.",
                UserWarning,
                stacklevel=2,
            )
        self._writer.join()

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self._abort(exception)
        self._writer.join()

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        try:
            self._abort(None)
            self._writer.join()
        finally:
            if self._inductor is not None:
                inductor, self._inductor = self._inductor, None
                inductor.__exit__(None, None, None)

    # ---- window ---------------------------------------------------------------------
    def _open(self, trainer: Any, pl_module: Any, kind: str) -> None:
        from torch_roofline.profiler import RooflineProfiler, schedule

        trace_path = None
        if self.export_trace:
            fd, trace_path = tempfile.mkstemp(prefix="roofline-trace-", suffix=".json")
            os.close(fd)
        profiler = RooflineProfiler(
            pl_module,
            roof=self._device if self._device is not None else self.roof,
            schedule=schedule(wait=0, warmup=self.schedule.warmup, active=self.schedule.active, repeat=1),
            memory_model=self.memory_model,
            profile_memory=self.profile_memory,
            export_trace=trace_path,
        )
        window = _Window(profiler, trainer.global_step, self.schedule.length, kind, trace_path)
        window.open()
        self._window = window
        self._last_global_step = trainer.global_step

    def _abort(self, exc: Optional[BaseException]) -> None:
        window, self._window = self._window, None
        if window is not None:
            window.close(exc)

    def _finish(self, trainer: Any, pl_module: Any) -> None:
        window, self._window = self._window, None
        window.close()
        (self._windows_done if window.kind == "train" else self._val_windows_done).append(window.start_step)
        report = self._build_report(trainer, window)
        comm, ends = self._communication(window, report) if report is not None and _world_size() > 1 else (None, ())
        if comm is not None:
            report = report.with_notes(f"communication: {comm.note}")
            self.communication.append(comm)
        if report is not None:
            (self.reports if window.kind == "train" else self.val_reports).append(report)
            self._device = window.profiler.device()  # resolve "auto"/"measured" once per fit
        report_dict = report.to_dict() if report is not None else None
        payload = {"report": report_dict, "communication": comm.to_dict() if comm is not None else None,
                   "collectives": ends}
        gathered = _gather_to_rank_zero(payload)
        if trainer.is_global_zero and gathered is not None:
            self._write(trainer, report, report_dict, gathered, window.kind, window.trace_path)
        elif window.trace_path is not None:
            _remove(window.trace_path)

    def _build_report(self, trainer: Any, window: _Window) -> Any:
        """This rank's report, or ``None`` (with a warning) when it cannot be made."""
        # fork_rng: roof="measured"/"auto" may draw random benchmark data, which must not shift
        # the training's random stream.
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []
        try:
            with torch.random.fork_rng(devices=devices):
                report = window.profiler.report()
        except RuntimeError as exc:
            warnings.warn(
                f"Roofline: no report for the window starting at step {window.start_step}: {exc}",
                UserWarning,
                stacklevel=2,
            )
            return None
        first = window.start_step + self.schedule.warmup
        if window.kind == "train":
            note = (
                f"Lightning: steps {first}..{window.start_step + self.schedule.length - 1} (global_step) "
                "averaged; counted from what the steps ran (training_step, backward, optimizer)"
            )
        else:
            note = (
                f"Lightning validation: batches {self.schedule.warmup}..{self.schedule.length - 1} of the "
                f"validation run at global_step {window.start_step} averaged; counted from what validation_step ran"
            )
        return report.with_notes(note)

    def _communication(self, window: _Window, report: Any) -> Tuple[Any, Tuple[Tuple[str, float, float], ...]]:
        """This rank's collectives in the window (:class:`~torch_roofline.timing.collectives.CommSummary`)
        and each one's (name, completion time on this rank's clock in s, time s), for the
        cross-rank wait and clock offsets."""
        from torch_roofline.timing.collectives import collectives, interconnect_roof, summarize

        trace = window.profiler.trace
        calls = collectives(trace, group_size=_world_size())
        origin_s = trace.origin_us * 1e-6
        ends = tuple((c.name, origin_s + c.start_s + c.time_s, c.time_s) for c in calls)
        bandwidth, source = self.interconnect_bandwidth, "Roofline(interconnect_bandwidth=...)"
        if bandwidth is None:
            bandwidth = interconnect_roof(window.profiler.device())
            source = f"catalog {report.device.name or report.device.id}: half its aggregate bidirectional figure"
        return summarize(calls, steps=max(int(report.steps), 1), step_time_s=_finite(report.totals.time_s),
                         interconnect_bandwidth=bandwidth, bandwidth_source=source), ends

    # ---- sinks (rank zero) ----------------------------------------------------------
    def _write(self, trainer: Any, report: Any, report_dict: Optional[Mapping[str, Any]],
               gathered: List[Any], kind: str, trace_path: Optional[str] = None) -> None:
        """Log the scalars now; render the chart and write events and files in the background."""
        step = int(trainer.global_step)
        tag = self.tag if kind == "train" else f"{self.tag}_val"
        reports = [g.get("report") if g is not None else None for g in gathered]
        comms = [g.get("communication") if g is not None else None for g in gathered]
        ends = [g.get("collectives", ()) if g is not None else () for g in gathered]
        summary = rank_summary(reports, comms, ends) if len(gathered) > 1 else None
        scalars = report_scalars(report_dict, tag) if report_dict is not None else {}
        extra = _rank_scalars(summary, tag) if summary is not None else {}
        extra.update(comm_scalars(comms[0], tag) if comms and comms[0] is not None else {})
        tb_logger = self._tensorboard_logger_class()
        tb_writers = []
        for logger in trainer.loggers:
            if tb_logger is not None and isinstance(logger, tb_logger) and report is not None:
                tb_writers.append(logger.log_dir)  # our own event file there (see _write_tensorboard)
                if extra:
                    logger.log_metrics(extra, step=step)
            elif scalars or extra:
                logger.log_metrics({**scalars, **extra}, step=step)
            logger.save()
        subdir = f"step{step}" if kind == "train" else os.path.join("val", f"step{step}")
        dirs = [os.path.join(d, subdir) for d in self._output_dirs(trainer)]
        plot, top_n = self.plot, self.top_n

        def job() -> None:
            png = _render_png(report) if plot and report is not None else None
            for writer in tb_writers:
                _write_tensorboard(writer, report, report_dict, png, step=step, tag=tag, top_n=top_n)
            try:
                for directory in dirs:
                    self.files.extend(_write_files(directory, report_dict, png, gathered, summary, trace_path))
            finally:
                if trace_path is not None:
                    _remove(trace_path)

        self._writer.submit(job)

    def _output_dirs(self, trainer: Any) -> List[str]:
        if self.dirpath is not None:
            return [os.fspath(self.dirpath)]
        if not trainer.loggers:
            if not self._warned_no_logger:
                self._warned_no_logger = True
                warnings.warn(
                    f"Roofline: the trainer has no logger, so the roofline reports are written as files only, "
                    f"under {os.path.join(trainer.default_root_dir, 'roofline')}. Pass a TensorBoardLogger "
                    "to see them in TensorBoard's Roofline tab.",
                    UserWarning,
                    stacklevel=2,
                )
            return [os.path.join(trainer.default_root_dir, "roofline")]
        dirs: List[str] = []
        for logger in trainer.loggers:
            base = getattr(logger, "log_dir", None) or trainer.log_dir or trainer.default_root_dir
            path = os.path.join(base, "roofline")
            if path not in dirs:
                dirs.append(path)
        return dirs

    def _tensorboard_logger_class(self) -> Optional[type]:
        try:
            module = __import__(f"{self._namespace}.loggers", fromlist=["TensorBoardLogger"])
        except ImportError:
            return None
        return getattr(module, "TensorBoardLogger", None)


def _render_png(report: Any) -> bytes:
    """The roofline chart as PNG bytes, drawn once per window (file and TensorBoard share it)."""
    figure = report.plot()  # matplotlib's object API and Agg canvas: safe off the main thread
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    return buffer.getvalue()


def _write_tensorboard(log_dir: str, report: Any, report_dict: Mapping[str, Any], png: Optional[bytes], *,
                       step: int, tag: str, top_n: int) -> None:
    """Scalars, text and the Roofline tab's data (:func:`write_report`), then the chart image, into
    an event file of our own in the TensorBoardLogger's run directory (TensorBoard reads every
    event file of a run).

    Our own file, opened and closed here on the writer thread: a full disk is a warning at the
    join, never data left in the logger's writer for its flush at teardown to raise inside
    ``fit()`` (where a run without the callback goes on).
    """
    from torch.utils.tensorboard import SummaryWriter

    from torch_roofline.tensorboard.summary import write_image, write_report

    writer = SummaryWriter(log_dir=log_dir, filename_suffix=".roofline")
    try:
        write_report(writer, report, step=step, tag=tag, top_n=top_n, plot=False, report_dict=report_dict)
        if png is not None:
            write_image(writer, f"{tag}/chart", png, step)
    finally:
        writer.close()


def comm_scalars(comm: Optional[Mapping[str, Any]], tag: str = "roofline") -> Dict[str, float]:
    """Scalars of one rank's communication summary (``CommSummary.to_dict()``).

    Example (hand-computed: 1 ms of 10 ms in collectives -> 10 %)::

        >>> comm_scalars({"time_s": 0.001, "bus_bytes": 1040.0, "step_time_share": 0.1})
        {'roofline/comm/time_s': 0.001, 'roofline/comm/bus_bytes': 1040.0, 'roofline/comm/step_time_share_pct': 10.0}
    """
    if not comm:
        return {}
    out = {
        f"{tag}/comm/time_s": _finite(comm.get("time_s")),
        f"{tag}/comm/bus_bytes": _finite(comm.get("bus_bytes")),
        f"{tag}/comm/step_time_share_pct": _percent(comm.get("step_time_share")),
        f"{tag}/comm/efficiency_pct": _percent(comm.get("efficiency")),
    }
    return {k: v for k, v in out.items() if v is not None}


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def _write_files(
    directory: str,
    report_dict: Optional[Mapping[str, Any]],
    png: Optional[bytes],
    gathered: Sequence[Optional[Mapping[str, Any]]],
    summary: Optional[Mapping[str, Any]],
    trace_path: Optional[str] = None,
) -> List[str]:
    """Write report.json, roofline.png, trace.json (a copy of ``trace_path``, when it holds a
    trace) and, for several ranks, per-rank JSON and ranks.json."""
    from torch_roofline._io import atomic_open, atomic_write

    caller = "Roofline callback"
    os.makedirs(directory, exist_ok=True)
    written: List[str] = []
    if trace_path is not None and os.path.getsize(trace_path) > 0:
        written.append(os.path.join(directory, "trace.json"))
        with open(trace_path, "rb") as src, atomic_open(written[-1], "wb", caller=caller) as dst:
            shutil.copyfileobj(src, dst)
    if report_dict is not None:
        written.append(os.path.join(directory, "report.json"))  # RooflineReport.to_json's format
        atomic_write(written[-1], json.dumps(report_dict, sort_keys=True, allow_nan=False) + "\n", caller=caller)
        if png is not None:
            written.append(os.path.join(directory, "roofline.png"))
            atomic_write(written[-1], png, caller=caller)
    if summary is not None:
        for rank, payload in enumerate(gathered):
            rep = payload.get("report") if payload is not None else None
            if rep is not None:
                written.append(os.path.join(directory, f"report-rank{rank}.json"))
                atomic_write(written[-1], json.dumps(rep, sort_keys=True, allow_nan=False), caller=caller)
        written.append(os.path.join(directory, "ranks.json"))
        atomic_write(written[-1], json.dumps(summary, sort_keys=True, allow_nan=False, indent=1), caller=caller)
    return written


# ----------------------------------------------------------------------------- the classes


_CLASSES: Dict[str, type] = {}
_NAMESPACES = {"Roofline": "lightning.pytorch", "RooflinePL": "pytorch_lightning"}


def _build(name: str) -> type:
    namespace = _NAMESPACES[name]
    try:
        module = __import__(namespace, fromlist=["Callback"])
    except ImportError as exc:
        raise ImportError(
            f"torch_roofline.lightning.{name} needs the {namespace!r} package, which is not installed "
            f"({exc}). Install it with `{_INSTALL_HINT}`"
            + (" (or `pip install pytorch-lightning`)." if namespace == "pytorch_lightning" else ".")
        ) from exc
    doc = (_RooflineLogic.__doc__ or "").replace(
        "The callback's logic, shared by both namespaces' classes",
        f"Roofline callback for ``{namespace}``: profiles a few training steps and logs the roofline report",
    )
    cls = type(name, (_RooflineLogic, module.Callback), {"__module__": __name__, "__doc__": doc,
                                                          "_namespace": namespace})
    return cls


def __getattr__(name: str) -> Any:
    """Build ``Roofline`` / ``RooflinePL`` on first use (PEP 562)."""
    if name in _NAMESPACES:
        if name not in _CLASSES:
            _CLASSES[name] = _build(name)
        globals()[name] = _CLASSES[name]
        return _CLASSES[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
