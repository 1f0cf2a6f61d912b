"""The roofline chart: a device's roofs and one dot per module (or op) of a report.

Log-log axes: arithmetic intensity (FLOP/B) across, performance (FLOP/s) up. Each roof the
report used is drawn as ``min(peak, intensity x bandwidth)`` (datasheet, estimated and user
roofs dashed, measured roofs solid) with its ridge point marked. Each dot is a module (leaf
modules by default, so parents do not repeat their children) or an op, placed at its
intensity and its achieved FLOP/s (attainable FLOP/s when the report is predicted), sized by
its time and coloured by its bound. Points above their roof are ringed in black (suspect).

Drawing uses matplotlib's object API with the Agg canvas: no display, no pyplot state.
The file format follows the path's extension (``.png``, ``.svg`` or ``.pdf``); the file is
written whole or not at all (a temporary file renamed into place).

Example::

    fig = plot_roofline(report, "roofline.png", level="module", top_n=8)
"""

from __future__ import annotations

import math
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from torch_roofline._io import atomic_open
from torch_roofline._module_names import parent_names
from torch_roofline.records import BOUNDS, Roof

__all__ = ["BOUND_COLORS", "plot_roofline", "plot_devices"]

BOUND_COLORS: Dict[Optional[str], str] = {
    "compute": "#d62728",
    "memory": "#1f77b4",
    "overhead": "#7f7f7f",
    None: "#c7c7c7",
}
_BOUND_MARKERS = {"compute": "o", "memory": "s", "overhead": "^", None: "D"}
_ROOF_COLORS = ("#000000", "#9467bd", "#8c564b", "#bcbd22", "#17becf", "#e377c2", "#2ca02c", "#ff7f0e")
_FORMATS = ("png", "svg", "pdf")
PathLike = Union[str, os.PathLike]


def plot_roofline(
    report: Any,
    path: Optional[PathLike] = None,
    level: str = "module",
    top_n: int = 8,
    ax: Any = None,
    *,
    phase: str = "all",
    leaves_only: bool = True,
    title: Optional[str] = None,
):
    """Draw ``report`` on its device's roofline; return the matplotlib ``Figure``.

    Args:
        report: a :class:`torch_roofline.report.RooflineReport`.
        path: where to save (``.png``, ``.svg`` or ``.pdf``); ``None``: do not save.
        level: ``"module"`` or ``"op"``.
        top_n: label this many dots, the largest by time (roofline time when predicted).
        ax: draw into this matplotlib ``Axes`` instead of a new figure.
        phase: module rows of this phase (``"all"`` sums the phases); for ops, ``"all"``
            keeps every phase.
        leaves_only: modules only: plot modules without children that did work, so parents
            do not repeat their children's points.
        title: chart title; default: model and device.

    Returns:
        The ``matplotlib.figure.Figure`` drawn into.
    """
    _check_path(path, "plot_roofline")
    fig, ax = _axes(ax)
    points = _points(report, level, phase, leaves_only)
    roofs = _used_roofs(report)
    xs = [p[0] for p in points] + [r.ridge for r in roofs]
    lo, hi = _x_range(xs)
    for i, roof in enumerate(roofs):
        _draw_roof(ax, roof, lo, hi, _ROOF_COLORS[i % len(_ROOF_COLORS)], label=_roof_label(roof))
    _draw_points(ax, report, points, top_n)
    for cls in BOUNDS:
        ax.scatter([], [], s=40, color=BOUND_COLORS[cls], label=f"{cls}-bound", alpha=0.8)
    device = report.device.name or report.device.id
    what = "predicted (attainable)" if report.predicted else "measured"
    _finish(ax, title or _literal(f"{report.model} on {device}: {level}s, {what}"))
    _save(fig, path)
    return fig


def plot_devices(
    reports: Sequence[Any],
    path: Optional[PathLike] = None,
    level: str = "module",
    ax: Any = None,
    *,
    phase: str = "all",
    leaves_only: bool = True,
    title: Optional[str] = None,
):
    """One chart with several devices' roofs and each report's dots (one colour per device).

    Meant for predicted reports of one model on several devices: where each layer lands,
    compute- or memory-bound, as the roofs move. Marker shape gives the bound.

    Returns:
        The ``matplotlib.figure.Figure``.
    """
    if not reports:
        raise ValueError("plot_devices: reports is empty; pass one RooflineReport per device")
    _check_path(path, "plot_devices")
    fig, ax = _axes(ax)
    per = [(r, _points(r, level, phase, leaves_only), _used_roofs(r)) for r in reports]
    lo, hi = _x_range([p[0] for _, pts, _ in per for p in pts] + [f.ridge for _, _, rs in per for f in rs])
    for i, (report, points, roofs) in enumerate(per):
        color = _ROOF_COLORS[i % len(_ROOF_COLORS)]
        device = report.device.name or report.device.id
        for j, roof in enumerate(roofs):
            label = _literal(f"{device}: {_roof_label(roof)}")
            _draw_roof(ax, roof, lo, hi, color, label=label, alpha=1.0 - 0.25 * min(j, 2))
        for cls, marker in _BOUND_MARKERS.items():
            sel = [p for p in points if p[3] == cls]
            if sel:
                ax.scatter([p[0] for p in sel], [p[1] for p in sel], s=[_size(p[2], points) for p in sel],
                           marker=marker, color=color, alpha=0.6, edgecolors="none")
    for cls in BOUNDS:
        ax.scatter([], [], s=40, marker=_BOUND_MARKERS[cls], color="#555555", label=f"{cls}-bound")
    model = reports[0].model
    _finish(ax, title or _literal(f"{model} on {len(reports)} device(s): {level}s"))
    _save(fig, path)
    return fig


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------

Point = Tuple[float, float, float, Optional[str], str, bool]  # x, y, time, bound, label, suspect


def _check_path(path: Optional[PathLike], fn: str) -> None:
    if path is None:
        return
    ext = os.path.splitext(os.fspath(path))[1].lower().lstrip(".")
    if ext not in _FORMATS:
        raise ValueError(
            f"{fn}: cannot tell the image format of {os.fspath(path)!r}; end the path with one of "
            f"{['.' + f for f in _FORMATS]} (e.g. 'roofline.png')"
        )


def _axes(ax):
    if ax is not None:
        return ax.figure, ax
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9.0, 6.0), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _points(report, level: str, phase: str, leaves_only: bool) -> List[Point]:
    if level not in ("module", "op"):
        raise ValueError(f"plot: level {level!r} is not 'module' or 'op'")
    if level == "module":
        rows = [r for r in report.modules if r.phase == phase]
        if leaves_only:
            busy = [r for r in rows if r.flops or r.bytes_read or r.bytes_written]
            parents = parent_names(r.name for r in busy)
            leaves = [r for r in busy if r.name not in parents]
            rows = leaves or rows
    else:
        rows = [r for r in report.ops if phase == "all" or r.phase == phase]
    points: List[Point] = []
    for r in rows:
        y = r.attainable_flops_per_s if report.predicted else r.achieved_flops_per_s
        t = r.roofline_time_s if report.predicted else r.time_s
        x = r.intensity
        if x is None or y is None or not (x > 0 and y > 0 and math.isfinite(x) and math.isfinite(y)):
            continue
        label = report.display_name(r.name) + (f" {r.op}" if level == "op" else "")
        points.append((x, y, t or 0.0, r.bound, label, bool(r.suspect)))
    return points


def _used_roofs(report) -> List[Roof]:
    roofs = [
        f for f in report.device.roofs
        if all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0
               for v in (f.peak_flops_per_s, f.bandwidth_bytes_per_s))
    ]
    used = [f for f in roofs if any(r.roof is not None and r.roof.matches(f) for r in report.ops)]
    return used or roofs


def _x_range(xs: Sequence[float]) -> Tuple[float, float]:
    xs = [x for x in xs if x and x > 0 and math.isfinite(x)]
    if not xs:
        return 1e-2, 1e4
    return 10 ** math.floor(math.log10(min(xs)) - 0.5), 10 ** math.ceil(math.log10(max(xs)) + 0.5)


def _roof_label(roof: Roof) -> str:
    return (
        f"{roof.dtype} {roof.unit} ({roof.source}): {roof.peak_flops_per_s / 1e12:.3g} TFLOP/s, "
        f"{roof.bandwidth_bytes_per_s / 1e9:.3g} GB/s, ridge {roof.ridge:.3g} FLOP/B"
    )


def _draw_roof(ax, roof: Roof, lo: float, hi: float, color: str, label: str, alpha: float = 1.0) -> None:
    n = 64
    xs = [lo * (hi / lo) ** (i / (n - 1)) for i in range(n)]
    if lo < roof.ridge < hi:
        xs = sorted(xs + [roof.ridge])
    ys = [roof.attainable(x) for x in xs]
    style = "-" if roof.source == "measured" else "--"
    ax.plot(xs, ys, style, color=color, lw=1.6, label=label, alpha=alpha)
    ax.plot([roof.ridge], [roof.peak_flops_per_s], "o", color=color, mfc="white", ms=6, alpha=alpha)


def _size(t: float, points: Sequence[Point]) -> float:
    big = max((p[2] for p in points), default=0.0)
    return 20.0 + 380.0 * (t / big if big > 0 else 0.0)


def _draw_points(ax, report, points: Sequence[Point], top_n: int) -> None:
    for cls, color in BOUND_COLORS.items():
        sel = [p for p in points if p[3] == cls]
        if not sel:
            continue
        ax.scatter([p[0] for p in sel], [p[1] for p in sel], s=[_size(p[2], points) for p in sel],
                   color=color, alpha=0.65, edgecolors="none")
    suspect = [p for p in points if p[5]]
    if suspect:  # ringed in black: above its roof
        ax.scatter([p[0] for p in suspect], [p[1] for p in suspect], s=[_size(p[2], points) for p in suspect],
                   facecolors="none", edgecolors="black", linewidths=1.2, label="above its roof (suspect)")
    placed: List[Tuple[float, float]] = []
    for p in sorted(points, key=lambda p: -p[2])[: max(top_n, 0)]:
        # dots that (nearly) coincide get their labels stacked instead of overprinted
        near = sum(1 for x, y in placed if abs(math.log10(x / p[0])) < 0.06 and abs(math.log10(y / p[1])) < 0.06)
        placed.append((p[0], p[1]))
        ax.annotate(_literal(p[4]), (p[0], p[1]), xytext=(5, 4 - 9 * near), textcoords="offset points", fontsize=7)


def _literal(text: str) -> str:
    """``text`` drawn as written: matplotlib reads ``$...$`` as math (and fails on bad math)."""
    return text.replace("$", r"\$")


def _finish(ax, title: str) -> None:
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP/B)")
    ax.set_ylabel("performance (FLOP/s)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")


def _save(fig, path: Optional[PathLike]) -> None:
    """Save ``fig`` to ``path`` (format from the extension) whole or not at all: a full disk
    leaves no truncated image behind."""
    if path is not None:
        fmt = os.path.splitext(os.fspath(path))[1].lower().lstrip(".")
        with atomic_open(path, "wb", caller="plot_roofline") as handle:
            fig.savefig(handle, format=fmt, dpi=120)
