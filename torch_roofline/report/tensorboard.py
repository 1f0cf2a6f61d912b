"""Write a roofline report to TensorBoard: scalars, text, image and the Roofline tab's data.

One call writes, for one step:

* scalars under ``<tag>/…`` (model efficiency %, measured and roofline step time,
  coverage %, share of time per bound class %, and per-module efficiency % and
  achieved FLOP/s of the ``top_n`` modules that take the most time);
* a text summary ``<tag>/summary``: the report table and the top time-lost list,
  as Markdown code blocks;
* the roofline chart as an image ``<tag>/chart``;
* the whole report as the Roofline plugin's summary under ``<tag>``: the schema
  JSON (``docs/report-schema.md``) in a rank-0 ``DT_STRING`` tensor, plugin name
  ``roofline``, data class tensor. NaN and infinities are written as ``null``.

It works with torch's ``SummaryWriter`` (also Lightning's
``TensorBoardLogger.experiment``, and the logger itself), with any object that has
``add_scalar``, ``add_text`` and a ``log_dir``, and with a plain log directory
(TensorBoard's own event writer; torch's writer is not needed).

Example:
    >>> from torch.utils.tensorboard import SummaryWriter   # doctest: +SKIP
    >>> write_report(SummaryWriter("runs/exp1"), report, step=100)  # doctest: +SKIP
    >>> write_report("runs/exp1", report, step=100)          # doctest: +SKIP

Limits: TensorBoard keeps only 10 (Python loader) or 100 (Rust data server) steps of
the plugin's tag unless started with ``--samples_per_plugin=roofline=0``. The module
set behind the per-module scalars is chosen at each :func:`write_report` call; a
:class:`TensorBoardSink` fixes it at its first write so the tag count stays at
``2 * top_n``.
"""

from __future__ import annotations

import json
import operator
import os
import re
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

from tensorboard.compat.proto import summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2

from torch_roofline._numbers import finite as _finite, json_safe, percent_text, si_text
from torch_roofline.report.scalars import BOUNDS as _BOUNDS, percent as _percent, totals_scalars
from torch_roofline.report.tensorboard_metadata import MAX_STEP, create_summary_metadata
from torch_roofline.report._tensorboard_events import _EventBackend, _WriterBackend, _backend, _image_summary

__all__ = ["write_report", "write_image", "TensorBoardSink", "report_summary_pb", "report_json"]

_MAX_TOP_N = 50  # per-module scalars: 2 tags per module; more than ~100 tags drowns the Scalars tab
_MAX_TAG_PART = 80  # characters of a module name kept in a tag (the tail: the most specific part)
_TAG_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]")


# ----------------------------------------------------------------------------- JSON


def report_json(report_dict: Mapping[str, Any]) -> str:
    """The report as the compact JSON text the plugin serves (keys sorted, NaN/inf as null)."""
    return json.dumps(json_safe(report_dict, "write_report"), sort_keys=True, allow_nan=False, separators=(",", ":"))


def report_summary_pb(report_dict: Mapping[str, Any], *, tag: str = "roofline") -> summary_pb2.Summary:
    """A ``Summary`` proto holding the whole report for the Roofline tab.

    Args:
        report_dict: the schema dict, as ``RooflineReport.to_dict()`` returns it.
        tag: the tag the tab lists the report under.

    Returns:
        One value, plugin ``roofline``, data class tensor, the JSON in a rank-0
        ``DT_STRING`` tensor (UTF-8).
    """
    tensor = tensor_pb2.TensorProto(
        dtype=types_pb2.DT_STRING,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(),
        string_val=[report_json(report_dict).encode("utf-8")],
    )
    metadata = create_summary_metadata("torch_roofline report (schema JSON); shown in the Roofline tab")
    return summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, metadata=metadata, tensor=tensor)])


# ----------------------------------------------------------------------------- pure selection


def _row_time_s(row: Mapping[str, Any]) -> Optional[float]:
    """Measured time of a row in seconds, or its roofline time for predicted reports."""
    measured = _finite(row.get("time_s"))
    return measured if measured is not None else _finite(row.get("roofline_time_s"))


def _tag_part(name: str) -> str:
    """A module name as a tag-safe string: root -> ``model``, unsafe characters -> ``_``."""
    safe = _TAG_UNSAFE.sub("_", name) if name else "model"
    return safe[-_MAX_TAG_PART:]


def _top_modules(report_dict: Mapping[str, Any], top_n: int) -> List[str]:
    """Names of the ``top_n`` non-root modules with the most time (phase ``all`` rows if any)."""
    rows = [r for r in report_dict.get("modules") or [] if isinstance(r, Mapping)]
    summed = [r for r in rows if r.get("phase") == "all"]
    candidates = summed or rows
    timed = [(t, str(r.get("name", ""))) for r in candidates if r.get("name") and (t := _row_time_s(r)) is not None]
    names: List[str] = []
    for _, name in sorted(timed, key=lambda pair: -pair[0]):
        if name not in names:
            names.append(name)
        if len(names) == top_n:
            break
    return names


def _module_tags(names: Sequence[str]) -> Dict[str, str]:
    """Module name -> unique tag part (collisions after sanitising get ``_2``, ``_3`` …)."""
    tags: Dict[str, str] = {}
    used: set = set()
    for name in names:
        base = candidate = _tag_part(name)
        n = 1
        while candidate in used:
            n += 1
            candidate = f"{base}_{n}"
        used.add(candidate)
        tags[name] = candidate
    return tags


def _scalars(report_dict: Mapping[str, Any], *, tag: str, modules: Mapping[str, str]) -> Dict[str, float]:
    """Scalar tag -> value for one report; unknown values are left out, never NaN.

    Percentages are 0-100; times in seconds; achieved in FLOP/s. ``modules`` maps
    module names to their tag parts.
    """
    pct = _percent
    out: Dict[str, Optional[float]] = dict(totals_scalars(report_dict, tag))
    rows = [r for r in report_dict.get("modules") or [] if isinstance(r, Mapping)]
    phase_all = any(r.get("phase") == "all" for r in rows)
    by_name: Dict[str, Mapping[str, Any]] = {}
    for row in rows:
        if (not phase_all or row.get("phase") == "all") and row.get("name") in modules:
            best = by_name.get(row["name"])
            if best is None or (_row_time_s(row) or 0.0) > (_row_time_s(best) or 0.0):
                by_name[row["name"]] = row
    for name, part in modules.items():
        row = by_name.get(name)
        if row is not None:
            out[f"{tag}/module_efficiency_pct/{part}"] = pct(row.get("efficiency"))
            out[f"{tag}/module_achieved_flops_per_s/{part}"] = _finite(row.get("achieved_flops_per_s"))
    return {k: v for k, v in out.items() if v is not None}


def _fmt_seconds(value: Any) -> str:
    return si_text(value, "s")


def _fmt_pct(value: Any) -> str:
    return percent_text(value)


def _markdown(report_dict: Mapping[str, Any], table: str, *, step: int, top_n: int) -> str:
    """The text summary: headline numbers, the table and the top time-lost list (Markdown).

    User-controlled strings (module names, the model name) only appear inside code
    blocks, which TensorBoard's Markdown renders as literal text.
    """
    totals = report_dict.get("totals") or {}
    device = report_dict.get("device") or {}
    share = totals.get("bound_time_share") or {}
    headline = [
        f"model: {report_dict.get('model', '?')}   device: {device.get('name', '?')} (roofs: {device.get('source', '?')})",
        f"efficiency: {_fmt_pct(totals.get('efficiency'))}   coverage: {_fmt_pct(totals.get('coverage'))}",
        f"step time: measured {_fmt_seconds(totals.get('time_s'))}, roofline {_fmt_seconds(totals.get('roofline_time_s'))}, "
        f"lost {_fmt_seconds(totals.get('time_lost_s'))}",
        "time share: " + ", ".join(f"{b} {_fmt_pct(share.get(b))}" for b in _BOUNDS),
    ]
    lost_lines = []
    for i, rec in enumerate((report_dict.get("time_lost") or [])[:top_n], start=1):
        if not isinstance(rec, Mapping):
            continue
        name = rec.get("name") or report_dict.get("model") or "model"
        lost_lines.append(
            f"{i:>2}. {name} ({rec.get('type', '?')}, {rec.get('phase', '?')}): {_fmt_seconds(rec.get('time_lost_s'))} lost, "
            f"{rec.get('bound', '?')}-bound: {rec.get('reason', '')}"
        )
        if rec.get("hint"):
            lost_lines.append(f"    hint: {rec['hint']}")
    fence = _fence(headline + [table] + lost_lines)
    parts = [
        f"**Roofline report, step {step}**",
        "",
        fence,
        *headline,
        fence,
        "",
        fence,
        table,
        fence,
        "",
        f"**Top {top_n} time lost**",
        "",
        fence,
        *(lost_lines or ["(no time lost recorded)"]),
        fence,
    ]
    return "\n".join(parts)


def _fence(texts: Iterable[str]) -> str:
    """A code fence longer than any backtick run in ``texts`` (a name cannot close it)."""
    longest = max((len(run) for t in texts for run in re.findall(r"`+", t)), default=0)
    return "`" * max(3, longest + 1)


def write_image(writer: Any, tag: str, png: bytes, step: int) -> None:
    """Write PNG bytes (an already rendered chart) as an image summary to ``writer``.

    ``writer``: a ``SummaryWriter``-like object (torch, tensorboardX) or a log directory.
    ``step``: the global step the image is logged at (0 to ``MAX_STEP``).
    """
    step = _check_step(step, "write_image")
    backend = _EventBackend(os.fspath(writer)) if isinstance(writer, (str, os.PathLike)) else _WriterBackend(writer)
    try:
        backend.summary(_image_summary(tag, png), step)
        backend.flush()
    finally:
        if isinstance(backend, _EventBackend):
            backend.close()


# ----------------------------------------------------------------------------- public API


def _report_dict(report: Any) -> Mapping[str, Any]:
    _check_report(report)
    report_dict = report.to_dict()
    if not isinstance(report_dict, Mapping):
        raise TypeError(f"write_report: report.to_dict() returned a {type(report_dict).__name__}; expected a dict.")
    return report_dict


def _check_report(report: Any) -> None:
    missing = [f"{m}()" for m in ("to_dict", "table", "plot") if not callable(getattr(report, m, None))]
    if missing:
        raise TypeError(
            f"write_report: report is a {type(report).__name__} without {', '.join(missing)}; expected a "
            "torch_roofline RooflineReport (e.g. RooflineReport.from_json('report.json'))."
        )


def _check_step(step: Any, caller: str) -> int:
    """``step`` as an int from 0 to :data:`MAX_STEP` (TensorBoard's int64 steps, the range the
    Roofline tab serves); a ValueError naming ``caller`` otherwise, before anything is written."""
    try:
        value = operator.index(step) if not isinstance(step, bool) else None
    except TypeError:
        value = None
    if value is None or not 0 <= value <= MAX_STEP:
        raise ValueError(
            f"{caller}: step={step!r}; expected an integer from 0 to {MAX_STEP} (TensorBoard's int64 steps; "
            "the Roofline tab serves only those), e.g. step=trainer.global_step"
        )
    return value


def _check_top_n(top_n: int) -> int:
    if isinstance(top_n, bool) or not isinstance(top_n, int) or not 0 <= top_n <= _MAX_TOP_N:
        raise ValueError(
            f"write_report: top_n={top_n!r}; expected an int from 0 to {_MAX_TOP_N} (2 scalar tags per module). "
            "The Roofline tab shows every module whatever top_n is."
        )
    return top_n


class TensorBoardSink:
    """Writes one report per step to TensorBoard; reused by the Lightning callback.

    Args:
        writer_or_logdir: a log directory (str or path; opens TensorBoard's own event
            writer, closed by :meth:`close`), a torch ``SummaryWriter``, a Lightning
            ``TensorBoardLogger`` (or its ``.experiment``), or an object with
            ``add_scalar``, ``add_text`` and ``log_dir``. A writer you pass stays open.
        tag: tag of the plugin summary and prefix of the scalars, text and image.
        top_n: modules with per-module scalars (0-50). The set is chosen at the first
            :meth:`write`, so the scalar tag count stays bounded over a run.
        plot: also write the roofline chart image (``report.plot()``).

    Example:
        >>> with TensorBoardSink("runs/exp1") as sink:   # doctest: +SKIP
        ...     sink.write(report, step=0)
    """

    def __init__(self, writer_or_logdir: Any, *, tag: str = "roofline", top_n: int = 10, plot: bool = True) -> None:
        if not isinstance(tag, str) or not tag or tag.startswith("/"):
            raise ValueError(f"TensorBoardSink: tag={tag!r}; expected a non-empty string such as 'roofline'.")
        self._top_n = _check_top_n(top_n)
        self._tag = tag
        self._plot = plot
        self._backend = _backend(writer_or_logdir)
        self._modules: Optional[Dict[str, str]] = None

    def write(self, report: Any, step: int = 0) -> None:
        """Write ``report`` at ``step`` (0 to ``MAX_STEP``): scalars, text, image and the tab's summary."""
        self._write(report, _check_step(step, "TensorBoardSink.write"), fixed_modules=True)

    def _write(self, report: Any, step: int, *, fixed_modules: bool,
               report_dict: Optional[Mapping[str, Any]] = None) -> None:
        if report_dict is None:
            report_dict = _report_dict(report)
        if not fixed_modules or self._modules is None:
            self._modules = _module_tags(_top_modules(report_dict, self._top_n))
        summary = report_summary_pb(report_dict, tag=self._tag)  # fails on bad values before anything is written
        for tag, value in _scalars(report_dict, tag=self._tag, modules=self._modules).items():
            self._backend.scalar(tag, value, step)
        self._backend.text(f"{self._tag}/summary", _markdown(report_dict, report.table(), step=step, top_n=self._top_n), step)
        if self._plot:
            self._backend.figure(f"{self._tag}/chart", report.plot(), step)
        self._backend.summary(summary, step)
        self._backend.flush()

    def flush(self) -> None:
        self._backend.flush()

    def close(self) -> None:
        """Flush; close the event file this sink opened (never a writer you passed)."""
        self._backend.flush()
        self._backend.close()  # a passed writer's backend only closes its fallback event file

    def __enter__(self) -> "TensorBoardSink":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def write_report(
    writer_or_logdir: Any,
    report: Any,
    *,
    step: int = 0,
    tag: str = "roofline",
    top_n: int = 10,
    plot: bool = True,
    report_dict: Optional[Mapping[str, Any]] = None,
) -> None:
    """Write one roofline report to TensorBoard at ``step`` (see the module docstring).

    Args:
        writer_or_logdir: a log directory (str or path), a torch ``SummaryWriter``,
            a Lightning ``TensorBoardLogger`` or its ``.experiment``, or an object with
            ``add_scalar``, ``add_text`` and ``log_dir``.
        report: a ``RooflineReport`` (``to_dict()``, ``table()``, ``plot()``).
        step: global step of the summaries, an integer from 0 to ``MAX_STEP`` (2**63 - 1): the
            steps the Roofline tab can serve; others raise a ValueError before anything is written.
        tag: tag of the Roofline tab's data and prefix of the scalars/text/image.
        top_n: modules (by time, root excluded) given per-module scalars, 0-50.
        plot: also write the roofline chart as an image.
        report_dict: ``report.to_dict()`` when the caller already has it (not computed again).

    Example:
        >>> write_report("runs/exp1", report, step=0)  # doctest: +SKIP
        then ``tensorboard --logdir runs --samples_per_plugin=roofline=0``.

    Each call with a log directory opens and closes one event file; to write many
    steps, keep a :class:`TensorBoardSink` (or a ``SummaryWriter``) open instead.
    """
    _check_report(report)  # before an event file is created
    step = _check_step(step, "write_report")
    sink = TensorBoardSink(writer_or_logdir, tag=tag, top_n=top_n, plot=plot)
    try:
        sink._write(report, step, fixed_modules=False, report_dict=report_dict)
    finally:
        sink.close()
