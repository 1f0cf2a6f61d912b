"""The report as text for people: :meth:`RooflineReport.table` and ``str(report)``.

Private to :mod:`torch_roofline.report`, whose ``table`` and ``__str__`` delegate here. Holds
the one-paragraph summary (:func:`summary_text`), the row filter and sort, the table itself
(:func:`format_table`, tabulate is imported when it runs), the "where the time goes",
uncounted-ops and notes sections, and the table's one choice of its own: a unit per column
(:func:`_pick_unit` over ``_TIME_UNITS``, ``_FLOP_UNITS``, ``_BYTE_UNITS``, ``_RATE_UNITS``).
Numbers are written by the package's one set of formatters (:mod:`torch_roofline._numbers`:
figures, SI prefixes, percent, ``"-"`` for unknown), shared with the TensorBoard text and the
Roofline tab; :func:`human_time` is its seconds, re-exported by ``torch_roofline.report``.
No torch import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, List, Optional, Sequence, Tuple

from torch_roofline._module_names import shown_name
from torch_roofline._numbers import UNKNOWN, fixed_text, percent_text, si_text
from torch_roofline.records import PHASES, OpRow

if TYPE_CHECKING:
    from torch_roofline.report import RooflineReport

__all__ = ["human_time", "format_table", "summary_text"]

_LEVELS = ("module", "op")
_SORTS = ("time", "self_time", "time_lost", "roofline_time", "flops", "bytes", "efficiency", "tree")

_TIME_UNITS = (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9))
_FLOP_UNITS = (("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6), ("kFLOP", 1e3), ("FLOP", 1.0))
_BYTE_UNITS = (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3), ("B", 1.0))
_RATE_UNITS = (("PFLOP/s", 1e15), ("TFLOP/s", 1e12), ("GFLOP/s", 1e9), ("MFLOP/s", 1e6), ("FLOP/s", 1.0))


def _pick_unit(values: Iterable[Optional[float]], units) -> Tuple[str, float]:
    """The largest unit in which the biggest value reads >= 1 (the smallest unit if none does;
    the middle one when every value is zero or unknown)."""
    big = max((abs(v) for v in values if v is not None), default=0.0)
    if big == 0:
        return units[len(units) // 2]
    for name, scale in units:
        if big >= scale:
            return name, scale
    return units[-1]


def _num(v: Optional[float], scale: float = 1.0) -> str:
    """A table cell: ``v`` in the column's unit (``scale``), :func:`fixed_text`'s figures."""
    return UNKNOWN if v is None else fixed_text(v / scale)


def human_time(seconds: Optional[float]) -> str:
    """``seconds`` as text for people: ``"6.10 µs"``, ``"12.3 ms"``; ``"-"`` when unknown
    (:func:`torch_roofline._numbers.si_text`)."""
    return si_text(seconds, "s")


def _pct(v: Optional[float]) -> str:
    """A cell of a column whose header says %."""
    return percent_text(v, sign=False)


def summary_text(report: RooflineReport) -> str:
    t = report.totals
    dev = report.device
    kind = "predicted" if report.predicted else f"measured, {report.steps} step(s) averaged"
    lines = [
        f"Roofline report: {report.model} on {dev.name or dev.id} ({dev.source} roofs; {kind}; "
        f"memory model {report.memory_model!r})",
    ]
    time_part = (
        f"step {human_time(t.time_s)}, roofline {human_time(t.roofline_time_s)}, "
        f"lost {human_time(t.time_lost_s)}, efficiency {percent_text(t.efficiency)}, coverage {percent_text(t.coverage)} "
        f"of op time; outside every op {human_time(None if t.op_time_s is None or t.time_s is None else t.time_s - t.op_time_s)}"
        if not report.predicted
        else f"roofline time {human_time(t.roofline_time_s)} (a lower bound, not a prediction of speed)"
    )
    lines.append("  " + time_part)
    fl, fs = _pick_unit([t.flops], _FLOP_UNITS)
    bl, bs = _pick_unit([t.bytes_read + t.bytes_written, t.compulsory_bytes], _BYTE_UNITS)
    peak = "-" if t.peak_memory_bytes is None else f"{t.peak_memory_bytes / 1e6:.1f} MB"
    lines.append(
        f"  {_num(t.flops, fs)} {fl}, {t.macs / 1e9:.3g} GMAC, {t.params / 1e6:.3g} M params, "
        f"traffic {_num(t.bytes_read + t.bytes_written, bs)} {bl} "
        f"(compulsory {_num(t.compulsory_bytes, bs)} {bl}), "
        f"peak memory {peak}"
    )
    share = t.bound_time_share
    if any(v is not None for v in (share.compute, share.memory, share.overhead)):
        lines.append(
            f"  {'roofline' if report.predicted else 'measured'} op time by bound: "
            f"compute {percent_text(share.compute)}, memory {percent_text(share.memory)}, "
            f"overhead {percent_text(share.overhead)}"
        )
    return "\n".join(lines)


def _sort_key(sort: str, predicted: bool):
    def time_of(r):
        v = r.roofline_time_s if predicted else r.time_s
        return v

    keys = {
        "time": lambda r: time_of(r),
        "self_time": lambda r: getattr(r, "self_roofline_time_s" if predicted else "self_time_s", None),
        "time_lost": lambda r: r.time_lost_s,
        "roofline_time": lambda r: r.roofline_time_s,
        "flops": lambda r: r.flops,
        "bytes": lambda r: r.bytes_read + r.bytes_written,
    }
    return keys.get(sort)


def _filter_sort(report: RooflineReport, rows: Sequence[Any], depth, top, sort, phase) -> List[Any]:
    if sort not in _SORTS:
        raise ValueError(
            f"RooflineReport.table: sort {sort!r} is not one of {list(_SORTS)}; e.g. sort='time_lost'"
        )
    valid_phases = ("all",) + PHASES
    if phase is not None and phase not in valid_phases:
        raise ValueError(
            f"RooflineReport.table: phase {phase!r} is not one of {list(valid_phases)} or None"
        )
    if depth is not None and depth < 0:
        raise ValueError(f"RooflineReport.table: depth must be >= 0 (root is 0), got {depth}")
    if top is not None and top < 1:
        raise ValueError(f"RooflineReport.table: top must be >= 1 or None, got {top}")
    out = [r for r in rows if depth is None or r.depth <= depth]

    if phase is not None and not (phase == "all" and rows and isinstance(rows[0], OpRow)):
        out = [r for r in out if r.phase == phase]
    if sort == "efficiency":
        out.sort(key=lambda r: (r.efficiency is None, r.efficiency if r.efficiency is not None else 0.0))
    elif sort != "tree":
        key = _sort_key(sort, report.predicted)
        out.sort(key=lambda r: (key(r) is None, -(key(r) or 0.0)))
    return out[:top] if top is not None else out


def format_table(report: RooflineReport, *, depth, top, sort, phase, level, extras) -> str:
    from tabulate import tabulate

    if level not in _LEVELS:
        raise ValueError(f"RooflineReport.table: level {level!r} is not one of {list(_LEVELS)}; e.g. level='op'")
    rows = _filter_sort(report, report.modules if level == "module" else report.ops, depth, top, sort, phase)
    pred = report.predicted
    tu, ts = _pick_unit(
        [v for r in rows for v in (r.time_s, r.roofline_time_s, r.time_lost_s)], _TIME_UNITS
    )
    fu, fs = _pick_unit([r.flops for r in rows], _FLOP_UNITS)
    bu, bs = _pick_unit([r.bytes_read + r.bytes_written for r in rows], _BYTE_UNITS)
    rate_values = [(r.attainable_flops_per_s if pred else r.achieved_flops_per_s) for r in rows]
    ru, rs = _pick_unit(rate_values, _RATE_UNITS)

    headers = ["module"]
    if level == "op":
        headers += ["op"]
    else:
        headers += ["type"]
    show_phase = phase is None or level == "op"
    if show_phase:
        headers += ["phase"]
    headers += ["calls"]
    if not pred:
        headers += [f"time ({tu})"]
        if level == "module":
            headers += [f"self ({tu})"]
    headers += [f"roofline ({tu})"]
    if not pred:
        headers += [f"lost ({tu})"]
    headers += [fu, f"traffic ({bu})", "FLOP/B", (f"attainable ({ru})" if pred else f"achieved ({ru})")]
    if not pred:
        headers += ["eff. (%)"]
    headers += ["bound", "roof"]

    body = []
    any_suspect = False
    for r in rows:
        line = [report.display_name(r.name)]
        line += [r.op if level == "op" else r.type]
        if show_phase:
            line += [r.phase]
        line += [r.calls]
        if not pred:
            line += [_num(r.time_s, ts)]
            if level == "module":
                line += [_num(r.self_time_s, ts)]
        line += [_num(r.roofline_time_s, ts)]
        if not pred:
            line += [_num(r.time_lost_s, ts)]
        line += [
            _num(r.flops, fs) if r.flops is not None else "?",
            _num(r.bytes_read + r.bytes_written, bs),
            _num(r.intensity),
            _num(r.attainable_flops_per_s if pred else r.achieved_flops_per_s, rs),
        ]
        if not pred:
            eff = _pct(r.efficiency)
            if r.suspect:
                eff += "!"
                any_suspect = True
            line += [eff]
        line += [r.bound or "-", f"{r.roof.dtype}/{r.roof.unit}" if r.roof else "-"]
        body.append(line)
    n_text = 3 if show_phase else 2  # name, type/op (and phase) read left-aligned
    colalign = ["left"] * n_text + ["right"] * (len(headers) - n_text - 2) + ["left", "left"]
    text = tabulate(body, headers=headers, tablefmt="simple", disable_numparse=True, colalign=colalign)
    parts = [text if body else f"(no {level} rows for phase={phase!r}, depth={depth!r})"]
    if any_suspect:
        parts.append("! above its roof (suspect: wrong roof, sparse peak, cache-resident data or a measurement error)")
    if extras:
        parts.append(_time_lost_text(report))
        parts.append(_fusion_traffic_text(report))
        parts.append(_uncounted_text(report))
        if report.notes:
            parts.append("Notes:\n" + "\n".join(f"  - {n}" for n in report.notes))
    return "\n\n".join(p for p in parts if p)


def _time_lost_text(report: RooflineReport) -> str:
    if not report.time_lost:
        return ""
    lines = ["Where the time goes (modules' own time lost to the roofline):"]
    for i, item in enumerate(report.time_lost, 1):
        lines.append(
            f"  {i:2d}. {report.display_name(item.name)} ({', '.join(x for x in (item.type, item.phase) if x)}): "
            f"{human_time(item.time_lost_s)} lost; {item.reason}"
        )
        lines.append(f"      hint: {item.hint}")
    return "\n".join(lines)


def _fusion_traffic_text(report: RooflineReport, top: int = 10) -> str:
    """The step and the modules inside torch.compile'd code: their traffic run as eager ops, as
    compiled, and compulsory (each storage once); what fusion saved and the headroom left.
    Empty without fused kernels."""
    from tabulate import tabulate

    from torch_roofline.timing.compiled import is_fused_kernel
    from torch_roofline.timing.kernel_sites import IN_COMPILED_CODE

    if not any(is_fused_kernel(o.op) for o in report.ops):
        return ""
    rows = []
    for m in report.modules:
        inside = m.type.endswith(IN_COMPILED_CODE)
        if m.phase != "all" or not (inside or m.eager_bytes is not None or m.name == ""):
            continue
        compiled = m.bytes_read + m.bytes_written
        # a module inside compiled code without fused kernels ran extern kernels only: as eager
        eager = m.eager_bytes if m.eager_bytes is not None or not inside else compiled
        rows.append((m, eager, compiled))
    rows.sort(key=lambda r: -r[2])
    shown = rows[:top]
    unit, scale = _pick_unit([r[2] for r in shown], _BYTE_UNITS)
    body = [[shown_name(m.name) if m.name else "(root)", _num(eager, scale), _num(compiled, scale),
             _num(m.compulsory_bytes, scale), f"{eager / compiled:.2f}x" if eager is not None and compiled else "-",
             f"{compiled / m.compulsory_bytes:.2f}x" if m.compulsory_bytes else "-"] for m, eager, compiled in shown]
    headers = ["module", f"eager ({unit})", f"compiled ({unit})", f"compulsory ({unit})", "saved", "headroom left"]
    table = tabulate(body, headers=headers, tablefmt="simple", disable_numparse=True,
                     colalign=["left"] + ["right"] * 5)
    more = f"\n  ... {len(rows) - top} more (report.modules, eager_bytes)" if len(rows) > top else ""
    unknown = ("; eager '-': a fused kernel's ops were not recorded (compile the model inside the profiled "
               "block or the fit)") if any(eager is None for _, eager, _ in shown) else ""
    return ("torch.compile traffic per module, one step (eager: the same ops run one by one as eager ops; "
            "compiled: the fused kernels' real traffic plus the other ops'; compulsory: each storage once; "
            f"saved = eager / compiled, headroom left = compiled / compulsory{unknown}):\n" + table + more)


def _uncounted_text(report: RooflineReport) -> str:
    if not report.uncounted:
        return ""
    lines = ["Uncounted ops (no FLOP formula; their time is outside coverage):"]
    for u in report.uncounted[:15]:
        timed = f", {human_time(u.time_s)}" if u.time_s is not None else ""
        lines.append(f"  {u.op}: {u.calls} call(s){timed}")
    if len(report.uncounted) > 15:
        lines.append(f"  ... {len(report.uncounted) - 15} more (report.uncounted)")
    return "\n".join(lines)
