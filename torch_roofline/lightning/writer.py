"""Rank zero's outputs, written in the background (:class:`_Writer`, one thread): the roofline
chart, the TensorBoard events and the files (``report.json`` by the report's own
:meth:`~torch_roofline.report.RooflineReport.to_json`, ``roofline.png``, ``trace.json``, the
per-rank reports and ``ranks.json``).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import threading
import warnings
from typing import Any, List, Mapping, Optional, Sequence




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

    from torch_roofline.report.tensorboard import write_image, write_report

    writer = SummaryWriter(log_dir=log_dir, filename_suffix=".roofline")
    try:
        write_report(writer, report, step=step, tag=tag, top_n=top_n, plot=False, report_dict=report_dict)
        if png is not None:
            write_image(writer, f"{tag}/chart", png, step)
    finally:
        writer.close()


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def _write_files(
    directory: str,
    report: Any,
    png: Optional[bytes],
    gathered: Sequence[Optional[Mapping[str, Any]]],
    summary: Optional[Mapping[str, Any]],
    trace_path: Optional[str] = None,
) -> List[str]:
    """Write report.json (``report``'s own :meth:`~torch_roofline.report.RooflineReport.to_json`),
    roofline.png, trace.json (a copy of ``trace_path``, when it holds a trace) and, for several
    ranks, each rank's report (as JSON from the gathered dicts, by the same method) and ranks.json."""
    from torch_roofline._io import atomic_open, atomic_write
    from torch_roofline.report import RooflineReport

    caller = "Roofline callback"
    os.makedirs(directory, exist_ok=True)
    written: List[str] = []
    if trace_path is not None and os.path.getsize(trace_path) > 0:
        written.append(os.path.join(directory, "trace.json"))
        with open(trace_path, "rb") as src, atomic_open(written[-1], "wb", caller=caller) as dst:
            shutil.copyfileobj(src, dst)
    if report is not None:
        written.append(os.path.join(directory, "report.json"))
        report.to_json(written[-1])
        if png is not None:
            written.append(os.path.join(directory, "roofline.png"))
            atomic_write(written[-1], png, caller=caller)
    if summary is not None:
        for rank, payload in enumerate(gathered):
            rep = payload.get("report") if payload is not None else None
            if rep is not None:
                written.append(os.path.join(directory, f"report-rank{rank}.json"))
                RooflineReport.from_dict(rep).to_json(written[-1])
        written.append(os.path.join(directory, "ranks.json"))
        atomic_write(written[-1], json.dumps(summary, sort_keys=True, allow_nan=False, indent=1), caller=caller)
    return written
