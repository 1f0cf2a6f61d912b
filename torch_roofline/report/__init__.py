"""The roofline report: frozen rows, a table for people, JSON/CSV/DataFrame for programs.

:class:`RooflineReport` is what :func:`torch_roofline.report.analyse` returns and what
``RooflineProfiler.report()`` hands the user: the :class:`~torch_roofline.records.Analysis` of a
step (its fields) with its forms. It holds data only; the math lives in the ``analysis``
package, the text for people in :mod:`~torch_roofline.report.text`, the chart in
:mod:`~torch_roofline.report.plot` and the TensorBoard summaries in
:mod:`~torch_roofline.report.tensorboard`. Its JSON form is the public contract
``torch_roofline.report/1`` documented in ``docs/report-schema.md``; the field names of the
row records below are exactly that document's keys.

Units everywhere are SI and undecorated: FLOPs, bytes, seconds, FLOP/s, B/s. Unknown numbers
are ``None`` (``null`` in JSON), never NaN or infinity. Only the table scales numbers for
people (µs/ms/s, MFLOP/GFLOP, MB/GB), and every column header names its unit.

This module imports neither torch nor pandas nor matplotlib at import time: pandas and
matplotlib are loaded by the methods that need them.

Example::

    report = RooflineReport.from_json("report.json")
    print(report.table(depth=2, top=10, sort="time_lost"))
    report.to_csv("modules.csv")
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass, fields, replace
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from torch_roofline._io import atomic_write
from torch_roofline._numbers import json_safe
from torch_roofline._module_names import parent_names, shown_name
from torch_roofline.report.text import format_table, summary_text, human_time
from torch_roofline.records import rows as _rows
from torch_roofline.records import (BOUNDS, Analysis, BoundShare, DeviceInfo, ModuleRow, OpRow, Roof, RoofRef, TimeLostItem,
                                    Totals, UncountedOp)  # noqa: F401 (BOUNDS re-exported)

__all__ = ["SCHEMA", "RooflineReport", "human_time", "parent_names", "DeviceInfo", *_rows.__all__]  # rows re-exported

SCHEMA = "torch_roofline.report/1"


@dataclass(frozen=True)
class RooflineReport(Analysis):
    """Per-module and per-op roofline analysis of one (averaged) step.

    Views: :attr:`modules` and :attr:`ops` (row records), :attr:`totals`, :attr:`uncounted`
    (ops without a FLOP formula, with their time), :attr:`time_lost` ("where the time goes"),
    :attr:`device`. Exporters: :meth:`table`, :meth:`to_json`/:meth:`from_json` (exact round
    trip), :meth:`to_csv`, :meth:`to_dataframe`, :meth:`plot`, :meth:`to_tensorboard`.

    Conventions: numbers are per step (``steps`` profiled steps averaged); module sums are
    inclusive of children; ``predicted`` reports carry roofline times only (``time_s`` is
    ``None``). The root module ``""`` is shown as :attr:`model` (its class name).
    """

    @classmethod
    def from_analysis(cls, analysis: Analysis) -> "RooflineReport":
        """The report of what :func:`~torch_roofline.analysis.analyse_step` found (same fields)."""
        return cls(**{f.name: getattr(analysis, f.name) for f in fields(Analysis)})

    # ---------------------------------------------------------------- lookups

    def module(self, name: str, phase: str = "all") -> ModuleRow:
        """The row of module ``name`` in ``phase``; ``KeyError`` naming the known modules."""
        for row in self.modules:
            if row.name == name and row.phase == phase:
                return row
        known = sorted({r.name for r in self.modules})[:10]
        raise KeyError(
            f"RooflineReport.module: no row for module {name!r} in phase {phase!r}; "
            f"known modules include {known}"
        )

    def display_name(self, name: str) -> str:
        """``name`` as shown to people: the root ``""`` becomes the model's class name; a name a
        table cannot show as is (control characters, line breaks, tabs, leading or trailing
        spaces) becomes its quoted Python ``repr`` (see ``_module_names.shown_name``)."""
        return shown_name(name) if name else shown_name(self.model)

    def with_notes(self, *notes: str) -> "RooflineReport":
        """This report with ``notes`` appended to :attr:`notes` (the report itself when none)."""
        return replace(self, notes=tuple(self.notes) + tuple(notes)) if notes else self

    # ---------------------------------------------------------------- JSON

    def to_dict(self) -> Dict[str, Any]:
        """The report as the plain dict of schema ``torch_roofline.report/1`` (no NaN/inf)."""
        used = [r for r in self.device.roofs if any(_uses(row, r) for row in self.ops)]
        device = {
            "id": self.device.id,
            "name": self.device.name,
            "source": self.device.source,
            "kind": self.device.kind,
            "memory_bandwidth": self.device.memory_bandwidth,
            "roofs": [
                {
                    "dtype": r.dtype,
                    "unit": r.unit,
                    "peak_flops_per_s": r.peak_flops_per_s,
                    "bandwidth_bytes_per_s": r.bandwidth_bytes_per_s,
                    "ridge": r.ridge if r.bandwidth_bytes_per_s else None,
                    "source": r.source,
                    "how": r.how,
                    "used": r in used,
                }
                for r in self.device.roofs
            ],
        }
        out = {
            "schema": SCHEMA,
            "model": self.model,
            "predicted": self.predicted,
            "memory_model": self.memory_model,
            "steps": self.steps,
            "created": self.created,
            "torch_version": self.torch_version,
            "device": json_safe(device),
            "totals": _record_dict(self.totals),
            "modules": [_record_dict(r) for r in self.modules],
            "ops": [_record_dict(r) for r in self.ops],
            "uncounted": [_record_dict(r) for r in self.uncounted],
            "time_lost": [_record_dict(r) for r in self.time_lost],
            "notes": list(self.notes),
        }
        return out  # rows come NaN-free from _record_dict; the rest holds no float but the device's

    def to_json(self, path: Union[str, os.PathLike, None] = None) -> str:
        """The JSON text (compact, sorted keys, ``null`` for unknowns); also written to ``path``.

        Compact because the indenting encoder is pure Python and slow on 1,000-module models;
        ``python -m json.tool report.json`` pretty-prints it. The file is written whole or not
        at all (a temporary file renamed into place); a failed write raises an ``OSError``
        naming the path and leaves no partial file.
        """
        text = json.dumps(self.to_dict(), sort_keys=True, allow_nan=False)
        if path is not None:  # whole or not at all: a full disk leaves no truncated report
            atomic_write(path, text + "\n", caller="RooflineReport.to_json")
        return text

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RooflineReport":
        """Rebuild a report from :meth:`to_dict`'s output (unknown extra keys are ignored)."""
        if not isinstance(data, Mapping):
            raise ValueError(f"RooflineReport.from_dict: expected a JSON object, got {type(data).__name__}")
        schema = data.get("schema")
        if schema != SCHEMA:
            raise ValueError(
                f"RooflineReport.from_dict: schema {schema!r} is not {SCHEMA!r}; this version of "
                f"torch_roofline reads only {SCHEMA!r} reports (upgrade torch_roofline to read newer ones)"
            )
        try:
            return cls._from_dict(data)
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(
                f"RooflineReport.from_dict: malformed {SCHEMA} report ({type(exc).__name__}: {exc}); "
                f"expected the output of RooflineReport.to_json (see docs/report-schema.md)"
            ) from None

    @classmethod
    def _from_dict(cls, data: Mapping[str, Any]) -> "RooflineReport":
        dev = data.get("device") or {}
        device = DeviceInfo(
            id=dev.get("id", ""),
            name=dev.get("name", ""),
            source=dev.get("source", ""),
            memory_bandwidth=dev.get("memory_bandwidth"),
            roofs=tuple(
                Roof(
                    r["dtype"],
                    r["unit"],
                    r["peak_flops_per_s"],
                    r["bandwidth_bytes_per_s"],
                    r.get("source", "datasheet"),
                    r.get("how", ""),
                )
                for r in dev.get("roofs", ())
            ),
            kind=dev.get("kind"),
        )
        totals = dict(data["totals"])
        totals["bound_time_share"] = BoundShare(**_known(BoundShare, totals.get("bound_time_share") or {}))
        return cls(
            model=data.get("model", ""),
            predicted=bool(data.get("predicted", False)),
            memory_model=data.get("memory_model", "op"),
            steps=int(data.get("steps", 1)),
            device=device,
            totals=Totals(**_known(Totals, totals)),
            modules=tuple(_row_from_dict(ModuleRow, r) for r in data.get("modules", ())),
            ops=tuple(_row_from_dict(OpRow, r) for r in data.get("ops", ())),
            uncounted=tuple(UncountedOp(**_known(UncountedOp, r)) for r in data.get("uncounted", ())),
            time_lost=tuple(TimeLostItem(**_known(TimeLostItem, r)) for r in data.get("time_lost", ())),
            notes=tuple(data.get("notes", ())),
            created=data.get("created"),
            torch_version=data.get("torch_version"),
        )

    @classmethod
    def from_json(cls, path_or_text: Union[str, os.PathLike]) -> "RooflineReport":
        """Read a report written by :meth:`to_json`: a file path or the JSON text itself."""
        if isinstance(path_or_text, str) and path_or_text.lstrip().startswith("{"):
            text = path_or_text
        else:
            path = os.fspath(path_or_text)
            if not os.path.exists(path):
                raise FileNotFoundError(
                    f"RooflineReport.from_json: no file {path!r}; pass the path "
                    f"of a report.json written by to_json(path), or its JSON text"
                )
            if os.path.isdir(path):
                raise ValueError(f"RooflineReport.from_json: {path!r} is a directory; pass the report.json in it "
                                 f"(e.g. {os.path.join(path, 'report.json')!r})")
            try:
                with open(path, encoding="utf-8") as f:
                    text = f.read()
            except UnicodeDecodeError as exc:
                raise ValueError(f"RooflineReport.from_json: {path!r} is not UTF-8 text ({exc}); expected a "
                                 "report.json written by to_json(path)") from None
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise ValueError(f"RooflineReport.from_json: not valid JSON ({exc or 'nested too deeply'}); expected a "
                             "report.json written by to_json(path)") from None
        return cls.from_dict(data)

    # ---------------------------------------------------------------- tables for programs

    def records(self, level: str = "module") -> List[Dict[str, Any]]:
        """Flat dicts, one per row, in declared column order (``roof`` split into
        ``roof_dtype``, ``roof_unit``, ``roof_source``). ``level``: ``"module"``, ``"op"``,
        ``"uncounted"`` or ``"time_lost"``."""
        rows, cls = self._level_rows(level)
        names = _flat_columns(cls)
        out = []
        for row in rows:
            d = _record_dict(row)
            roof = d.pop("roof", None) if "roof" in d else None
            if cls in (ModuleRow, OpRow):
                roof = roof or {}
                d["roof_dtype"] = roof.get("dtype")
                d["roof_unit"] = roof.get("unit")
                d["roof_source"] = roof.get("source")
            out.append({k: d[k] for k in names})
        return out

    def to_csv(self, path: Union[str, os.PathLike, None] = None, level: str = "module") -> str:
        """CSV of the ``level`` rows (columns as :meth:`records`; empty cell = unknown).

        Returns the CSV text and writes it to ``path`` when given (whole or not at all). Rows
        end in CRLF, as RFC 4180 and the csv module write them, so a name holding a line break
        is quoted and stays one row for every reader.
        """
        _, cls = self._level_rows(level)
        buf = io.StringIO()
        # CRLF rows (RFC 4180, the csv module's default): a field holding "\r" or "\n" (a module
        # name can) is then quoted, so every reader sees one row per module.
        writer = csv.DictWriter(buf, fieldnames=_flat_columns(cls), lineterminator="\r\n")
        writer.writeheader()
        for d in self.records(level):
            writer.writerow({k: ("" if v is None else v) for k, v in d.items()})
        text = buf.getvalue()
        if path is not None:
            atomic_write(path, text, caller="RooflineReport.to_csv", newline="")
        return text

    def to_dataframe(self, level: str = "module"):
        """A pandas DataFrame of the ``level`` rows, columns as :meth:`records` (units in names).

        Needs pandas (``pip install torch_roofline[pandas]``).
        """
        try:
            import pandas as pd
        except ImportError as exc:
            raise ImportError(
                "RooflineReport.to_dataframe needs pandas, which is not installed; install it "
                "with `pip install torch_roofline[pandas]` (or use to_csv / records instead)"
            ) from exc
        _, cls = self._level_rows(level)
        return pd.DataFrame(self.records(level), columns=_flat_columns(cls))

    def _level_rows(self, level: str):
        table = {
            "module": (self.modules, ModuleRow),
            "op": (self.ops, OpRow),
            "uncounted": (self.uncounted, UncountedOp),
            "time_lost": (self.time_lost, TimeLostItem),
        }
        if level not in table:
            raise ValueError(
                f"RooflineReport: level {level!r} is not one of {sorted(table)}; e.g. level='op'"
            )
        return table[level]

    # ---------------------------------------------------------------- sinks

    def plot(self, path: Union[str, os.PathLike, None] = None, level: str = "module", **kwargs):
        """The roofline chart (matplotlib Figure); see :func:`torch_roofline.report.plot.plot_roofline`."""
        from torch_roofline.report.plot import plot_roofline

        return plot_roofline(self, path=path, level=level, **kwargs)

    def to_tensorboard(self, writer_or_logdir, step: int = 0, tag: str = "roofline", top_n: int = 10):
        """Write this report for TensorBoard's Roofline tab (and scalars) at ``step``.

        Delegates to :func:`torch_roofline.report.tensorboard.write_report`.
        """
        from torch_roofline.report.tensorboard import write_report

        return write_report(writer_or_logdir, self, step=step, tag=tag, top_n=top_n)

    # ---------------------------------------------------------------- tables for people

    def table(
        self,
        depth: Optional[int] = None,
        top: Optional[int] = None,
        sort: str = "time",
        phase: Optional[str] = "all",
        level: str = "module",
        extras: bool = True,
    ) -> str:
        """A table for people, units in the headers, numbers scaled (µs/ms/s, GFLOP, MB, ...).

        Args:
            depth: keep modules (and ops of modules) at most this deep (root 0); ``None``: all.
            top: keep the first ``top`` rows after sorting; ``None``: all.
            sort: ``"time"`` (measured, or roofline time when predicted), ``"self_time"``,
                ``"time_lost"``, ``"roofline_time"``, ``"flops"``, ``"bytes"``,
                ``"efficiency"`` (lowest first) or ``"tree"`` (model order).
            phase: ``"all"``, ``"forward"``, ``"backward"``, ``"optimizer"``; ``None``: every
                phase (op rows have no ``"all"``: it means every phase for them).
            level: ``"module"`` or ``"op"``.
            extras: append "where the time goes", the uncounted ops and the notes.
        """
        return format_table(self, depth=depth, top=top, sort=sort, phase=phase, level=level, extras=extras)

    def __str__(self) -> str:
        n = sum(1 for r in self.modules if r.phase == "all")
        head = summary_text(self)
        if n <= 60:
            return head + "\n\n" + self.table(sort="tree")
        return head + "\n\n" + self.table(sort="time", top=40)


# --------------------------------------------------------------------------------------------
# Helpers: dicts
# --------------------------------------------------------------------------------------------


def _uses(row: OpRow, roof: Roof) -> bool:
    return row.roof is not None and row.roof.matches(roof)


_FIELD_NAMES: Dict[type, Tuple[str, ...]] = {}


def _record_dict(obj: Any) -> Dict[str, Any]:
    """A frozen record as a plain dict (nested records as dicts), without deep copies, every
    NaN or infinite float already ``None`` (as :func:`~torch_roofline._numbers.json_safe` would make it): one pass."""
    names = _FIELD_NAMES.get(type(obj))
    if names is None:
        names = _FIELD_NAMES[type(obj)] = tuple(f.name for f in fields(obj))
    out = {}
    for name in names:
        v = getattr(obj, name)
        if isinstance(v, float):
            v = v if math.isfinite(v) else None
        elif hasattr(v, "__dataclass_fields__"):
            v = _record_dict(v)
        elif isinstance(v, (dict, list, tuple)):
            v = json_safe(v)
        out[name] = v
    return out


def _known(cls: type, d: Mapping[str, Any]) -> Dict[str, Any]:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in d.items() if k in names}


def _row_from_dict(cls: type, d: Mapping[str, Any]):
    kwargs = {}
    for f in fields(cls):
        v = d.get(f.name)
        if f.name == "roof" and v is not None:
            v = RoofRef(**_known(RoofRef, v))
        elif f.name == "suspect":
            v = bool(v)
        elif f.name == "counted":
            v = True if v is None else bool(v)
        elif f.name == "recompute_calls":
            v = int(v or 0)  # reports written before the field existed
        kwargs[f.name] = v
    if kwargs.get("name") is None:
        raise ValueError(f"RooflineReport.from_dict: a {cls.__name__} has no 'name': {dict(d)!r:.200}")
    return cls(**kwargs)


def _flat_columns(cls: type) -> List[str]:
    names = []
    for f in fields(cls):
        if f.name == "roof":
            names += ["roof_dtype", "roof_unit", "roof_source"]
        else:
            names.append(f.name)
    return names
