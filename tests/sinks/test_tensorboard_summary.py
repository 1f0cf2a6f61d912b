"""Writer side of the TensorBoard integration: torch_roofline.report.tensorboard.

The report here is a hand-built, schema-valid dict (docs/report-schema.md) held by a
stand-in class with RooflineReport's methods (to_dict, table, plot). Its numbers are
chosen by hand below; the tests compare what TensorBoard reads back with them.
The report and its stand-in are in ``_tensorboard_helpers.py``, shared with the other TensorBoard tests.
"""

from __future__ import annotations

import glob
import json
import math
import os

import pytest

pytest.importorskip("tensorboard")

from tensorboard.backend.event_processing import plugin_event_accumulator  # noqa: E402
from tensorboard.compat.proto import summary_pb2, types_pb2  # noqa: E402
from tensorboard.util import tensor_util  # noqa: E402

from _tensorboard_helpers import StandInReport, XSS_NAME, make_report_dict  # noqa: E402
from torch_roofline.tensorboard import PLUGIN_NAME, TensorBoardSink, report_json, write_report  # noqa: E402
from torch_roofline.report.tensorboard import _fence  # noqa: E402

# The XSS name made tag-safe by hand: < img ␣ src = x ␣ onerror = alert ( 1 ) >
XSS_TAG = "_img_src_x_onerror_alert_1__"

# ----------------------------------------------------------------------------- reading back


def _load(logdir: str):
    acc = plugin_event_accumulator.EventAccumulator(logdir, size_guidance={"tensors": 0})
    acc.Reload()
    return acc


def _scalar(acc, tag: str) -> float:
    (event,) = acc.Tensors(tag)
    return float(tensor_util.make_ndarray(event.tensor_proto).item())


def _plugin_of(acc, tag: str) -> str:
    return acc.SummaryMetadata(tag).plugin_data.plugin_name


def _check_written(logdir: str, report_dict: dict, *, step: int) -> plugin_event_accumulator.EventAccumulator:
    acc = _load(logdir)
    tags = set(acc.Tags()["tensors"])
    # Our plugin's summary: one rank-0 DT_STRING tensor, data class tensor, the JSON.
    (event,) = acc.Tensors("roofline")
    meta = acc.SummaryMetadata("roofline")
    assert meta.plugin_data.plugin_name == PLUGIN_NAME == "roofline"
    assert meta.data_class == summary_pb2.DATA_CLASS_TENSOR
    assert event.step == step
    assert event.tensor_proto.dtype == types_pb2.DT_STRING
    assert len(event.tensor_proto.tensor_shape.dim) == 0
    assert json.loads(event.tensor_proto.string_val[0].decode("utf-8")) == report_dict
    # Scalars, text and image, each under its standard plugin.
    assert _scalar(acc, "roofline/efficiency_pct") == pytest.approx(25.0)  # 0.25 -> 25 %
    assert _scalar(acc, "roofline/coverage_pct") == pytest.approx(97.0)
    assert _scalar(acc, "roofline/bound_time_share_pct/memory") == pytest.approx(70.0)
    assert _plugin_of(acc, "roofline/efficiency_pct") == "scalars"
    # torch's add_text appends "/text_summary" to the tag; tensorboard's own writer does not.
    (text_tag,) = [t for t in tags if t.startswith("roofline/summary")]
    assert _plugin_of(acc, text_tag) == "text"
    assert _plugin_of(acc, "roofline/chart") == "images"
    assert {"roofline/step_time_s/measured", "roofline/step_time_s/roofline"} <= tags
    return acc


# ----------------------------------------------------------------------------- tests


def test_write_report_to_logdir_without_torch_writer(tmp_path):
    report_dict = make_report_dict()
    write_report(str(tmp_path), StandInReport(report_dict), step=7, top_n=10)
    acc = _check_written(str(tmp_path), report_dict, step=7)
    # features (all phases): 3 x (8 ms + 2 ms) = 30 ms -> the top module; the root is not a module scalar.
    # Its efficiency: roofline (3 x 4 ms conv + 3 x 0.8 ms relu) / 30 ms = 14.4 / 30 = 48 %.
    assert _scalar(acc, "roofline/module_efficiency_pct/features") == pytest.approx(48.0)
    # features.0 all phases: 3 x 2e9 FLOP / 24 ms = 2.5e11 FLOP/s.
    assert _scalar(acc, "roofline/module_achieved_flops_per_s/features.0") == pytest.approx(2.5e11, rel=1e-6)
    assert f"roofline/module_efficiency_pct/{XSS_TAG}" in acc.Tags()["tensors"]
    assert not any(t.endswith("/model") for t in acc.Tags()["tensors"])


def test_text_summary_holds_table_and_time_lost_in_code_blocks(tmp_path):
    report = StandInReport(make_report_dict())
    write_report(tmp_path, report, step=0)
    (event,) = _load(str(tmp_path)).Tensors("roofline/summary")
    text = event.tensor_proto.string_val[0].decode("utf-8")
    assert report.table() in text
    assert "Top 10 time lost" in text and "use channels_last" in text
    # Every user-controlled name sits inside a fence; the hint's ``` cannot close it (fence of 4).
    assert "````" in text
    before_xss = text[: text.index(XSS_NAME)]
    assert before_xss.count("````") % 2 == 1


def test_top_n_bounds_module_tags(tmp_path):
    write_report(str(tmp_path), StandInReport(make_report_dict()), top_n=2, plot=False)
    acc = _load(str(tmp_path))
    module_tags = sorted(t for t in acc.Tags()["tensors"] if "/module_" in t)
    # top 2 by time over all phases: features (30 ms), features.0 (24 ms).
    assert module_tags == [
        "roofline/module_achieved_flops_per_s/features",
        "roofline/module_achieved_flops_per_s/features.0",
        "roofline/module_efficiency_pct/features",
        "roofline/module_efficiency_pct/features.0",
    ]
    assert "roofline/chart" not in acc.Tags()["tensors"]


def test_nan_and_infinity_are_written_as_null(tmp_path):
    report_dict = make_report_dict()
    report_dict["totals"]["efficiency"] = float("nan")
    report_dict["modules"][0]["time_lost_s"] = float("inf")
    report_dict["modules"][0]["intensity"] = float("-inf")
    write_report(str(tmp_path), StandInReport(report_dict))
    acc = _load(str(tmp_path))
    text = acc.Tensors("roofline")[0].tensor_proto.string_val[0].decode("utf-8")
    assert "NaN" not in text and "Infinity" not in text
    stored = json.loads(text)
    assert stored["totals"]["efficiency"] is None
    assert stored["modules"][0]["time_lost_s"] is None and stored["modules"][0]["intensity"] is None
    # An unknown number gets no scalar at all rather than a NaN point.
    assert "roofline/efficiency_pct" not in acc.Tags()["tensors"]
    assert math.isfinite(_scalar(acc, "roofline/coverage_pct"))


def test_write_report_with_torch_summary_writer(tmp_path):
    torch_tb = pytest.importorskip("torch.utils.tensorboard")
    report_dict = make_report_dict()
    writer = torch_tb.SummaryWriter(log_dir=str(tmp_path))
    try:
        write_report(writer, StandInReport(report_dict), step=3)
        writer.add_scalar("user/loss", 1.0, 3)  # the user's writer stays open and usable
    finally:
        writer.close()
    # Everything went through the writer's own event file (its public file_writer).
    assert len(glob.glob(os.path.join(str(tmp_path), "events.out.tfevents.*"))) == 1
    acc = _check_written(str(tmp_path), report_dict, step=3)
    assert "user/loss" in acc.Tags()["tensors"]


def test_write_report_with_lightning_logger(tmp_path):
    loggers = pytest.importorskip("lightning.pytorch.loggers")
    logger = loggers.TensorBoardLogger(save_dir=str(tmp_path), name="exp", version=0)
    report_dict = make_report_dict()
    write_report(logger, StandInReport(report_dict), step=1, plot=False)  # the logger itself...
    write_report(logger.experiment, StandInReport(report_dict), step=2, plot=False)  # ...or its SummaryWriter
    logger.finalize("success")
    acc = _load(logger.log_dir)
    assert [e.step for e in acc.Tensors("roofline")] == [1, 2]


class _RecordingWriter:
    """Only add_scalar, add_text and log_dir: no add_figure, no file_writer."""

    def __init__(self, log_dir):
        self.log_dir = log_dir
        self.calls = []

    def add_scalar(self, tag, value, global_step=None):
        self.calls.append(("scalar", tag, value, global_step))

    def add_text(self, tag, text, global_step=None):
        self.calls.append(("text", tag, global_step))


def test_minimal_writer_gets_scalars_and_text_plugin_data_goes_to_its_log_dir(tmp_path):
    writer = _RecordingWriter(str(tmp_path))
    report_dict = make_report_dict()
    write_report(writer, StandInReport(report_dict), step=5)
    assert ("scalar", "roofline/efficiency_pct", pytest.approx(25.0), 5) in writer.calls
    assert ("text", "roofline/summary", 5) in writer.calls
    acc = _load(str(tmp_path))
    assert json.loads(acc.Tensors("roofline")[0].tensor_proto.string_val[0]) == report_dict
    assert _plugin_of(acc, "roofline/chart") == "images"


def test_sink_keeps_the_module_set_of_its_first_write(tmp_path):
    first = make_report_dict()
    second = make_report_dict()
    # At the second step classifier becomes the slowest module; the sink keeps its first set.
    for row in second["modules"]:
        if row["name"] == "classifier":
            row["time_s"] = 1.0
    with TensorBoardSink(str(tmp_path), top_n=1, plot=False) as sink:
        sink.write(StandInReport(first), step=0)
        sink.write(StandInReport(second), step=1)
    acc = _load(str(tmp_path))
    assert sorted(t for t in acc.Tags()["tensors"] if "/module_efficiency_pct/" in t) == [
        "roofline/module_efficiency_pct/features"
    ]
    assert [e.step for e in acc.Tensors("roofline")] == [0, 1]


def test_bad_arguments_name_the_fix(tmp_path):
    report = StandInReport(make_report_dict())
    with pytest.raises(ValueError, match=r"top_n=99; expected an int from 0 to 50"):
        write_report(str(tmp_path), report, top_n=99)
    with pytest.raises(TypeError, match=r"writer_or_logdir is a int; expected a log directory"):
        write_report(42, report)
    with pytest.raises(TypeError, match=r"without table\(\), plot\(\); expected a torch_roofline RooflineReport"):
        write_report(str(tmp_path), type("R", (), {"to_dict": lambda self: {}})())
    assert not os.listdir(tmp_path)  # nothing was opened for the refused calls


def test_real_report_to_tensorboard_round_trips(tmp_path):
    """RooflineReport (report.py) -> to_tensorboard -> what the tab will be served."""
    report_module = pytest.importorskip("torch_roofline.report")
    if not hasattr(report_module.RooflineReport, "from_dict"):
        pytest.skip("RooflineReport.from_dict is not available yet")
    report = report_module.RooflineReport.from_dict(make_report_dict())
    report.to_tensorboard(str(tmp_path), step=2)
    acc = _load(str(tmp_path))
    (event,) = acc.Tensors("roofline")
    assert event.step == 2
    assert json.loads(event.tensor_proto.string_val[0]) == json.loads(report_json(report.to_dict()))
    assert _plugin_of(acc, "roofline/chart") == "images"
    (text,) = acc.Tensors("roofline/summary")
    assert report.table() in text.tensor_proto.string_val[0].decode("utf-8")


def test_fence_outgrows_backticks_in_names():
    assert _fence(["plain"]) == "```"
    assert _fence(["a ````` b"]) == "``````"
