"""The Roofline TensorBoard plugin, in-process: TensorBoard's WSGI app over a werkzeug Client.

The log directory is written by write_report (and, for the robustness cases, by hand
with TensorBoard's own event writer); the app is built the way ``tensorboard`` builds
it, with our plugin's loader added explicitly (the package is not pip-installed here).
"""

from __future__ import annotations

from _paths import REPO_ROOT
import configparser
import json
import os

import pytest

pytest.importorskip("tensorboard")
pytest.importorskip("werkzeug")


from _tensorboard_helpers import PREFIX, StandInReport, _json, _write_raw, make_client, make_report_dict  # noqa: E402
from torch_roofline.tensorboard import write_report  # noqa: E402
from torch_roofline.tensorboard.plugin import RooflinePlugin  # noqa: E402

ROOT = REPO_ROOT
@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tb")
    write_report(str(root / "demo"), StandInReport(make_report_dict()), step=0)
    write_report(str(root / "demo"), StandInReport(make_report_dict(time_scale=0.6)), step=1, plot=False)
    _write_raw(str(root / "broken"), b"{not json", step=0)
    _write_raw(str(root / "broken"), json.dumps({"hello": "world"}).encode(), step=1)
    # json.dumps writes NaN by default: a payload from another writer that did not clean it.
    _write_raw(str(root / "nan"), json.dumps({"schema": "torch_roofline.report/1", "x": float("nan")}).encode(), 0)
    return str(root)


@pytest.fixture(scope="module")
def client(logdir):
    return make_client(logdir)


def test_plugin_is_listed_and_enabled(client):
    listing = _json(client.get("/data/plugins_listing"))
    entry = listing["roofline"]
    assert entry["enabled"] is True
    assert entry["tab_name"] == "Roofline"
    assert entry["loading_mechanism"] == {"type": "IFRAME", "module_path": "/data/plugin/roofline/index.js"}


def test_runs_lists_runs_tags_and_steps(client):
    runs = _json(client.get(f"{PREFIX}/runs"))
    assert runs == {"broken": {"roofline": [0, 1]}, "demo": {"roofline": [0, 1]}, "nan": {"roofline": [0]}}


def test_report_returns_the_written_report(client):
    for step, scale in ((0, 1.0), (1, 0.6)):
        response = client.get(f"{PREFIX}/report?run=demo&tag=roofline&step={step}")
        assert response.status_code == 200
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert _json(response) == make_report_dict(time_scale=scale)


@pytest.mark.parametrize(
    "query, message",
    [
        ("run=demo&tag=roofline", "missing query parameter(s) step"),
        ("", "missing query parameter(s) run, tag, step"),
        ("run=demo&tag=roofline&step=abc", "step='abc' is not a non-negative integer"),
        ("run=demo&tag=roofline&step=-1", "step='-1' is not a non-negative integer"),
    ],
)
def test_bad_parameters_get_400_with_a_message(client, query, message):
    response = client.get(f"{PREFIX}/report?{query}")
    assert response.status_code == 400
    assert message in _json(response)["error"]


@pytest.mark.parametrize(
    "query, message",
    [
        ("run=nope&tag=roofline&step=0", "no run 'nope'"),
        ("run=demo&tag=other&step=0", "run 'demo' has no roofline tag 'other'"),
        ("run=demo&tag=roofline&step=5", "has no step 5"),
    ],
)
def test_unknown_run_tag_or_step_get_404(client, query, message):
    response = client.get(f"{PREFIX}/report?{query}")
    assert response.status_code == 404
    assert message in _json(response)["error"]


def test_corrupt_payload_is_an_error_and_foreign_json_passes_through(client):
    response = client.get(f"{PREFIX}/report?run=broken&tag=roofline&step=0")
    assert response.status_code == 422
    assert "not UTF-8 JSON" in _json(response)["error"]
    # Valid JSON that is not a report: served as is; the tab checks the schema and says so.
    assert _json(client.get(f"{PREFIX}/report?run=broken&tag=roofline&step=1")) == {"hello": "world"}


def test_nan_in_a_stored_payload_reaches_the_browser_as_null(client):
    response = client.get(f"{PREFIX}/report?run=nan&tag=roofline&step=0")
    text = response.get_data(as_text=True)
    assert "NaN" not in text
    assert json.loads(text)["x"] is None


def test_static_files_are_served_from_the_allow_list(client):
    js = client.get(f"{PREFIX}/index.js")
    assert js.status_code == 200
    assert js.headers["Content-Type"].startswith("text/javascript")
    assert "export async function render" in js.get_data(as_text=True)
    assert client.get(f"{PREFIX}/style.css").headers["Content-Type"].startswith("text/css")


@pytest.mark.parametrize(
    "path",
    [
        "/..%2f..%2fsetup.cfg",
        "/..%2f..%2f..%2fsetup.cfg",
        "/static/../plugin.py",
        "/static/..%2fplugin.py",
        "/static/index.js",
        "/plugin.py",
        "/%2e%2e/%2e%2e/setup.cfg",
        "/index.js/../../../setup.cfg",
    ],
)
def test_static_path_traversal_is_refused(client, path):
    response = client.get(PREFIX + path)
    assert response.status_code != 200
    body = response.get_data(as_text=True)
    assert "[metadata]" not in body and "class RooflinePlugin" not in body


def test_scalars_text_and_image_appear_in_the_standard_tabs(client):
    scalars = _json(client.get("/data/plugin/scalars/tags"))["demo"]
    assert {"roofline/efficiency_pct", "roofline/coverage_pct", "roofline/module_efficiency_pct/features"} <= set(scalars)
    series = _json(client.get("/data/plugin/scalars/scalars?run=demo&tag=roofline/efficiency_pct"))
    # [wall_time, step, value]; each write_report(logdir) call wrote its own event file
    assert sorted((point[1], point[2]) for point in series) == [(0, 25.0), (1, 25.0)]
    assert "roofline/summary" in _json(client.get("/data/plugin/text/tags"))["demo"]
    images = _json(client.get("/data/plugin/images/tags"))["demo"]
    assert "roofline/chart" in images


def test_setup_cfg_entry_point_names_this_class():
    parser = configparser.ConfigParser()
    parser.read(os.path.join(ROOT, "setup.cfg"))
    entry = parser["options.entry_points"]["tensorboard_plugins"].strip()
    name, target = (part.strip() for part in entry.split("="))
    module, attribute = target.split(":")
    assert name == RooflinePlugin.plugin_name == "roofline"
    assert (module, attribute) == (RooflinePlugin.__module__, RooflinePlugin.__name__)
    assert "static/*" in parser["options.package_data"]["torch_roofline.tensorboard"]
