"""The callback's hooks (:class:`_RooflineLogic`, shared by ``Roofline`` and ``RooflinePL``): open a
window on the schedule's steps, close it, ask the profiler for the report, and hand it to the
loggers and the writer.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch

from torch_roofline.records import check_memory_model
from torch_roofline._numbers import finite as _finite
from torch_roofline.timing.compiled import recording_compiled_kernels
from torch_roofline.timing.ranges import compiled_modules
from torch_roofline.lightning.ranks import (_gather_to_rank_zero, _rank_scalars, comm_scalars, rank_summary,
                                           report_scalars)
from torch_roofline.lightning.schedule import RooflineSchedule, _Window, _world_size
from torch_roofline.lightning.writer import _Writer, _remove, _render_png, _write_files, _write_tensorboard

_INSTALL_HINT = "pip install torch_roofline[lightning]"


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
                    self.files.extend(_write_files(directory, report, png, gathered, summary, trace_path))
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
