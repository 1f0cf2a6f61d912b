"""Helpers of the TensorBoard tests (writer, tab, browser) and of the tests that open the tab:
a hand-built, schema-valid report dict (docs/report-schema.md) held by a stand-in class with
RooflineReport's methods (to_dict, table, plot), its numbers chosen by hand; and a werkzeug
client over TensorBoard's app with our plugin (as ``tensorboard`` builds it; the package is not
pip-installed here)."""

from __future__ import annotations

import json
import time

import pytest

pytest.importorskip("tensorboard")  # a test importing these helpers is skipped where these are missing
pytest.importorskip("werkzeug")

from tensorboard import default, program  # noqa: E402
from tensorboard.backend import application  # noqa: E402
from tensorboard.backend.event_processing import data_ingester  # noqa: E402
from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2  # noqa: E402
from tensorboard.summary.writer.event_file_writer import EventFileWriter  # noqa: E402
from werkzeug.test import Client  # noqa: E402

from torch_roofline.report.tensorboard_metadata import create_summary_metadata  # noqa: E402
from torch_roofline.tensorboard.plugin import RooflinePlugin  # noqa: E402

XSS_NAME = "<img src=x onerror=alert(1)>"

# ----------------------------------------------------------------------------- the stand-in report

# Roofs of an invented test device (B/s, FLOP/s); ridge = peak / bandwidth.
_BW = 1e10
_ROOFS = {
    ("fp32", "matrix"): 1e12,  # ridge 100 FLOP/B
    ("fp32", "vector"): 2e11,  # ridge 20 FLOP/B
}
# Leaf modules: name, type, depth, forward FLOPs, forward bytes, forward seconds, roof, op.
# Backward rows are 2x FLOPs, 2x bytes, 2x time of the forward ones.
_LEAVES = [
    ("features.0", "Conv2d", 2, 2e9, 4e7, 8e-3, ("fp32", "matrix"), "aten.convolution"),
    ("features.1", "ReLU", 2, 1e6, 8e6, 2e-3, ("fp32", "vector"), "aten.relu"),
    ("classifier", "Linear", 1, 4e8, 1e6, 1e-3, ("fp32", "matrix"), "aten.addmm"),
    (XSS_NAME, "Scale", 1, 1e5, 1e5, 5e-4, ("fp32", "vector"), "aten.mul"),
]
_CONTAINERS = [("features", "Sequential", 1, ("features.0", "features.1")), ("", "Net", 0, None)]


def _row(name, typ, phase, depth, flops, nbytes, time_s, roofline_time_s, roof, **extra):
    """One schema row; derived fields from the hand formulas of docs/report-schema.md."""
    bound_roof = _ROOFS[roof]
    intensity = flops / nbytes
    bound = "compute" if intensity >= bound_roof / _BW else "memory"
    if roofline_time_s / time_s < 0.05:
        bound = "overhead"
    row = {
        "name": name, "type": typ, "phase": phase, "depth": depth, "calls": 1,
        "flops": flops, "macs": flops / 2 if roof[1] == "matrix" else 0,
        "params": 0, "param_bytes": 0,
        "bytes_read": nbytes * 0.75, "bytes_written": nbytes * 0.25, "compulsory_bytes": nbytes * 0.5,
        "intensity": intensity, "time_s": time_s, "self_time_s": time_s,
        "achieved_flops_per_s": flops / time_s, "achieved_bytes_per_s": nbytes / time_s,
        "attainable_flops_per_s": flops / roofline_time_s, "roof": {"dtype": roof[0], "unit": roof[1]},
        "efficiency": roofline_time_s / time_s, "suspect": roofline_time_s > time_s, "bound": bound,
        "roofline_time_s": roofline_time_s, "time_lost_s": time_s - roofline_time_s,
        "fusion_headroom": 2.0, "activation_bytes": None,
    }
    row.update(extra)
    return row


def _roofline_time(flops, nbytes, roof):
    """max(F / peak, B / bandwidth) in seconds."""
    return max(flops / _ROOFS[roof], nbytes / _BW)


def make_report_dict(time_scale: float = 1.0) -> dict:
    """A schema-valid report: 6 modules x (forward, backward, all), 9 op rows, 1 uncounted op.

    ``time_scale`` multiplies every measured time (another step of the same model).
    """
    phases = {"forward": 1.0, "backward": 2.0}
    leaf_rows = {}  # (name, phase) -> (flops, bytes, time, roofline time, roof)
    modules, ops = [], []
    for name, typ, depth, f, b, t, roof, op in _LEAVES:
        for phase, k in phases.items():
            flops, nbytes, time_s = f * k, b * k, t * k * time_scale
            rt = _roofline_time(flops, nbytes, roof)
            leaf_rows[(name, phase)] = (flops, nbytes, time_s, rt, roof)
            modules.append(_row(name, typ, phase, depth, flops, nbytes, time_s, rt, roof))
            op_name = op if phase == "forward" else op + "_backward"
            ops.append(_row(name, typ, phase, depth, flops, nbytes, time_s, rt, roof, op=op_name, counted=True))
    # An op without a FLOP formula: listed, not plottable (no FLOPs).
    ops.append({**_row("features.0", "Conv2d", "forward", 2, 1.0, 1.0, 1e-4, 1e-9, ("fp32", "vector")),
                "op": "aten.foo", "flops": 0, "intensity": 0.0, "achieved_flops_per_s": 0.0, "counted": False})
    leaves_of = {"features": ["features.0", "features.1"], "": [n for n, *_ in _LEAVES]}
    for name, typ, depth, _ in _CONTAINERS:
        for phase in phases:
            parts = [leaf_rows[(leaf, phase)] for leaf in leaves_of[name]]
            flops, nbytes, time_s, rt = (sum(p[i] for p in parts) for i in range(4))
            leaf_rows[(name, phase)] = (flops, nbytes, time_s, rt, ("fp32", "matrix"))
            modules.append(_row(name, typ, phase, depth, flops, nbytes, time_s, rt, ("fp32", "matrix")))
    for name, typ, depth, *_ in [*_LEAVES, *_CONTAINERS]:
        parts = [leaf_rows[(name, phase)] for phase in phases]
        flops, nbytes, time_s, rt = (sum(p[i] for p in parts) for i in range(4))
        modules.append(_row(name, typ, "all", depth, flops, nbytes, time_s, rt, parts[0][4]))
    root_all = next(r for r in modules if r["name"] == "" and r["phase"] == "all")
    return {
        "schema": "torch_roofline.report/1", "predicted": False, "model": "Net", "memory_model": "op",
        "steps": 1, "created": "2026-11-22T02:40:00Z", "torch_version": "2.14.1",
        "device": {
            "id": "test-cpu", "name": "Test CPU", "source": "measured", "memory_bandwidth": _BW,
            "roofs": [
                {"dtype": "fp32", "unit": "matrix", "peak_flops_per_s": 1e12, "bandwidth_bytes_per_s": _BW,
                 "ridge": 100.0, "source": "measured", "used": True},
                {"dtype": "fp32", "unit": "vector", "peak_flops_per_s": 2e11, "bandwidth_bytes_per_s": _BW,
                 "ridge": 20.0, "source": "datasheet", "used": True},
                {"dtype": "bf16", "unit": "matrix", "peak_flops_per_s": 4e12, "bandwidth_bytes_per_s": _BW,
                 "ridge": 400.0, "source": "datasheet", "used": False},
            ],
        },
        "totals": {
            "time_s": root_all["time_s"], "roofline_time_s": root_all["roofline_time_s"],
            "time_lost_s": root_all["time_lost_s"],
            "efficiency": 0.25,  # chosen by hand (not derived) so the scalar test has a plain oracle
            "coverage": 0.97, "flops": root_all["flops"], "macs": root_all["macs"], "params": 0, "param_bytes": 0,
            "bytes_read": root_all["bytes_read"], "bytes_written": root_all["bytes_written"],
            "compulsory_bytes": root_all["compulsory_bytes"], "peak_memory_bytes": 1e8,
            "bound_time_share": {"compute": 0.1, "memory": 0.7, "overhead": 0.2},
        },
        "modules": modules,
        "ops": ops,
        "uncounted": [{"op": "aten.foo", "calls": 3, "time_s": 1e-4}],
        "time_lost": [
            {"name": "features.0", "type": "Conv2d", "phase": "backward", "time_lost_s": 8e-3, "self_time_s": 1.6e-2, "bound": "memory",
             "reason": "memory-bound at 50% of bandwidth", "hint": "use channels_last"},
            {"name": XSS_NAME, "type": "Scale", "phase": "forward", "time_lost_s": 4.9e-4, "self_time_s": 5e-4, "bound": "overhead",
             "reason": "tiny op, launch cost dominates", "hint": "fuse ```it``` away"},
        ],
    }


class StandInReport:
    """Test double with RooflineReport's writer-facing methods (to_dict, table, plot, time_lost)."""

    def __init__(self, report_dict: dict) -> None:
        self._dict = report_dict
        self.time_lost = report_dict["time_lost"]

    def to_dict(self) -> dict:
        return self._dict

    def table(self) -> str:
        lines = ["module | phase | time_s"]
        lines += [f"{r['name'] or 'Net'} | {r['phase']} | {r['time_s']}" for r in self._dict["modules"]]
        return "\n".join(lines)

    def plot(self):
        from matplotlib.figure import Figure

        figure = Figure(figsize=(2, 1.5), dpi=40)
        figure.add_subplot().loglog([1, 100], [1e9, 1e11])
        return figure



# ----------------------------------------------------------------------------- the tab in-process

PREFIX = "/data/plugin/roofline"


def _write_raw(logdir: str, payload: bytes, step: int) -> None:
    """A roofline summary holding arbitrary bytes (corrupt and foreign payloads)."""
    tensor = tensor_pb2.TensorProto(
        dtype=types_pb2.DT_STRING, tensor_shape=tensor_shape_pb2.TensorShapeProto(), string_val=[payload]
    )
    value = summary_pb2.Summary.Value(tag="roofline", metadata=create_summary_metadata(), tensor=tensor)
    writer = EventFileWriter(logdir)
    writer.add_event(event_pb2.Event(wall_time=time.time(), step=step, summary=summary_pb2.Summary(value=[value])))
    writer.close()


def make_client(logdir: str) -> Client:
    """A werkzeug Client over TensorBoard's app for ``logdir``, built as ``tensorboard`` builds it."""
    loaders = default.get_plugins()
    if RooflinePlugin not in loaders:  # present already when the package is pip-installed
        loaders = loaders + [RooflinePlugin]
    tb = program.TensorBoard(plugins=loaders)
    tb.configure(
        argv=["", "--logdir", logdir, "--samples_per_plugin", "roofline=0", "--reload_interval", "0",
              "--reload_task", "blocking", "--load_fast", "false"]
    )
    ingester = data_ingester.LocalDataIngester(tb.flags)
    ingester.start()
    app = application.TensorBoardWSGIApp(
        tb.flags, tb.plugin_loaders, ingester.data_provider, tb.assets_zip_provider, ingester.deprecated_multiplexer
    )
    return Client(app)


def _json(response):
    assert response.headers["Content-Type"].startswith("application/json"), response.headers
    return json.loads(response.get_data(as_text=True))


