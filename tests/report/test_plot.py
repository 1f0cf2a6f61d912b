"""The roofline chart: files by extension, log-log axes, roofs drawn as promised."""

import pytest

from torch_roofline.report.build import analyse
from torch_roofline.report.plot import BOUND_COLORS, plot_devices, plot_roofline
from torch_roofline.records import ModuleInfo, ModuleTiming, OpCost, OpTiming, Roof
from torch_roofline.report import DeviceInfo

MEASURED = Roof("fp32", "matrix", 1e12, 1e11, "measured")
DATASHEET = Roof("fp32", "vector", 2.5e11, 1e11, "datasheet")
DEVICE = DeviceInfo("dev", "Test Device", "mixed", 1e11, (MEASURED, DATASHEET))
ROOFS = {("float32", "matrix"): MEASURED, ("float32", "vector"): DATASHEET}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def cost(op, module, flops, nbytes, unit, index):
    return OpCost(op, module, ("", module), "forward", flops, 0, nbytes // 2, nbytes // 2,
                  nbytes // 2, nbytes // 2, "float32", unit, True, index)


def inputs():
    costs = [cost("aten.mm", "fc", 2 * 10**9, 2 * 10**6, "matrix", 0),
             cost("aten.relu", "act", 10**6, 8 * 10**6, "vector", 1),
             cost("aten.add", "tiny", 10**3, 8 * 10**3, "vector", 2)]
    timings = [OpTiming("aten.mm", "fc", ("", "fc"), "forward", 2.5e-3, 2.5e-3),
               OpTiming("aten.relu", "act", ("", "act"), "forward", 1.6e-4, 1.6e-4),
               OpTiming("aten.add", "tiny", ("", "tiny"), "forward", 6e-6, 6e-6)]
    mts = [ModuleTiming("", "forward", 1, 3e-3, 3e-4), ModuleTiming("fc", "forward", 1, 2.5e-3, 2.5e-3),
           ModuleTiming("act", "forward", 1, 1.6e-4, 1.6e-4), ModuleTiming("tiny", "forward", 1, 6e-6, 6e-6)]
    modules = [ModuleInfo("", "Net", 0, 0), ModuleInfo("fc", "Linear", 0, 0),
               ModuleInfo("act", "ReLU", 0, 0), ModuleInfo("tiny", "Add", 0, 0)]
    return costs, timings, mts, modules


@pytest.fixture(scope="module")
def report():
    return analyse(*inputs(), ROOFS, device=DEVICE)


def test_png_and_svg_by_extension(report, tmp_path):
    png, svg = tmp_path / "roofline.png", tmp_path / "roofline.svg"
    report.plot(png)
    plot_roofline(report, svg, level="op")
    assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 5_000
    head = svg.read_text()[:2000]
    assert "<svg" in head and svg.stat().st_size > 5_000


def test_chart_content(report):
    fig = plot_roofline(report, top_n=2)
    ax = fig.axes[0]
    assert (ax.get_xscale(), ax.get_yscale()) == ("log", "log")
    assert "FLOP/B" in ax.get_xlabel() and "FLOP/s" in ax.get_ylabel()
    lines = {l.get_label(): l for l in ax.get_lines() if not l.get_label().startswith("_")}
    (measured,) = [l for k, l in lines.items() if k.startswith("fp32 matrix (measured)")]
    (datasheet,) = [l for k, l in lines.items() if k.startswith("fp32 vector (datasheet)")]
    assert measured.get_linestyle() == "-" and datasheet.get_linestyle() == "--"
    # the roof line follows min(peak, I * bandwidth): at its right end, the peak
    assert max(measured.get_ydata()) == pytest.approx(1e12)
    # ridge points: markers at (10, 1e12) and (2.5, 2.5e11)
    markers = [(l.get_xdata()[0], l.get_ydata()[0]) for l in ax.get_lines() if l.get_marker() == "o"]
    assert (10.0, 1e12) in markers and (2.5, 2.5e11) in markers
    # one dot per leaf module: fc, act, tiny (the root repeats its children and is left out)
    offsets = [tuple(p) for c in ax.collections for p in c.get_offsets()]
    assert len(offsets) == 3
    # fc sits at intensity 1000 FLOP/B and 2e9 / 2.5e-3 = 8e11 FLOP/s
    assert any(x == pytest.approx(1000.0) and y == pytest.approx(8e11) for x, y in offsets)
    assert [t.get_text() for t in ax.texts] == ["fc", "act"]  # top 2 by time
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert {"compute-bound", "memory-bound", "overhead-bound"} <= set(legend)
    colors = {tuple(c.get_facecolor()[0][:3]) for c in ax.collections if len(c.get_offsets())}
    assert len(colors) == 3  # compute, memory and overhead dots
    assert set(BOUND_COLORS) >= {"compute", "memory", "overhead"}


def test_draws_into_a_given_axes(report):
    from matplotlib.figure import Figure

    fig = Figure()
    ax = fig.add_subplot()
    assert plot_roofline(report, ax=ax, level="op") is fig


def test_bad_extension_and_level(report, tmp_path):
    with pytest.raises(ValueError, match="end the path with one of"):
        plot_roofline(report, tmp_path / "roofline.bmp")
    with pytest.raises(ValueError, match="level 'layer'"):
        plot_roofline(report, level="layer")


def test_plot_devices_overlays_predicted_reports(tmp_path):
    costs, _, _, modules = inputs()
    slow_roofs = (Roof("fp32", "matrix", 2e11, 2e10, "datasheet"), Roof("fp32", "vector", 1e11, 2e10, "datasheet"))
    other = DeviceInfo("slow", "Slow Device", "datasheet", 2e10, slow_roofs)
    reports = [
        analyse(costs, modules=modules, roofs={("float32", r.unit): r for r in dev.roofs}, device=dev)
        for dev in (DEVICE, other)
    ]
    path = tmp_path / "devices.png"
    fig = plot_devices(reports, path)
    assert path.read_bytes()[:8] == PNG_MAGIC
    labels = [l.get_label() for l in fig.axes[0].get_lines() if not l.get_label().startswith("_")]
    assert sum(l.startswith("Test Device:") for l in labels) == 2
    assert sum(l.startswith("Slow Device:") for l in labels) == 2
    with pytest.raises(ValueError, match="reports is empty"):
        plot_devices([])
