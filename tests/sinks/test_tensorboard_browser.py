"""The Roofline tab in a real browser: tensorboard on 127.0.0.1 + headless Chromium.

Needs Debian's ``chromium`` and ``npm install`` in tests/browser (``make browser-deps``);
skipped with the reason when either is missing. The node script
(tests/browser/roofline_tab.mjs) clicks through the tab and reports what it saw; this
test compares that with the reports it wrote. Screenshots go to tests/artifacts/.
"""

from __future__ import annotations

from _paths import REPO_ROOT
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import pytest

pytest.importorskip("tensorboard")

from _tensorboard_helpers import XSS_NAME, StandInReport, make_report_dict  # noqa: E402
from _tensorboard_helpers import PREFIX, _json, _write_raw, make_client  # noqa: E402
from torch_roofline.tensorboard import write_report  # noqa: E402

ROOT = REPO_ROOT
BROWSER_DIR = os.path.join(ROOT, "tests", "browser")
ARTIFACTS = os.path.join(ROOT, "tests", "artifacts")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
NODE = shutil.which("node")
BIG_MODULES = 10_000

# Starts TensorBoard with our plugin's loader added, whether or not the package is
# pip-installed (then the entry point already lists it).
_LAUNCHER = """
import sys
from tensorboard import default, program
from torch_roofline.tensorboard.plugin import RooflinePlugin
plugins = default.get_plugins()
if RooflinePlugin not in plugins:
    plugins.append(RooflinePlugin)
tb = program.TensorBoard(plugins=plugins)
tb.configure(argv=[""] + sys.argv[1:])
sys.exit(tb.main())
"""


def _missing_browser() -> str:
    if not os.path.exists(CHROMIUM):
        return "chromium is not installed (run `make browser-deps` or `apt-get install -y chromium`)"
    if NODE is None:
        return "node is not installed"
    if not os.path.isdir(os.path.join(BROWSER_DIR, "node_modules", "playwright-core")):
        return "playwright-core is not installed (run `cd tests/browser && npm install`)"
    return ""


pytestmark = pytest.mark.skipif(bool(_missing_browser()), reason=_missing_browser() or "ok")


def make_big_report_dict(n: int) -> dict:
    """The stand-in report with ``n`` forward-only leaf modules spread over the roofline."""
    report = make_report_dict()
    template = next(r for r in report["modules"] if r["name"] == "features.0" and r["phase"] == "forward")
    modules = [dict(next(r for r in report["modules"] if r["name"] == "" and r["phase"] == "forward"))]
    for i in range(n):
        flops = 1e6 * (1 + i % 997)
        nbytes = 1e5 * (1 + (i * 7) % 991)
        time_s = 1e-6 * (1 + (i * 13) % 983)
        modules.append({**template, "name": f"blocks.{i}.mlp", "type": "Linear", "depth": 1,
                        "flops": flops, "bytes_read": nbytes, "bytes_written": 0.0, "intensity": flops / nbytes,
                        "time_s": time_s, "achieved_flops_per_s": flops / time_s})
    report["modules"] = modules
    report["ops"] = []
    return report


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read().decode("utf-8"))


def _wait_for_runs(base: str, expected: dict, process: subprocess.Popen, timeout_s: float = 40.0) -> None:
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"tensorboard exited with {process.returncode}")
        try:
            last = _get_json(f"{base}/data/plugin/roofline/runs")
            if last == expected:
                return
        except OSError as exc:
            last = exc
        time.sleep(0.3)
    raise AssertionError(f"tensorboard did not list the runs {expected} in {timeout_s} s; last answer: {last!r}")


def _expected_dots(report: dict, level: str) -> int:
    """Rows drawn by the tab: module level shows phase "all" rows when present; points
    need FLOPs > 0, bytes > 0 and a time (the log-log chart cannot place zeros)."""
    rows = report["modules"] if level == "module" else report["ops"]
    if level == "module" and any(r["phase"] == "all" for r in rows):
        rows = [r for r in rows if r["phase"] == "all"]
    return sum(1 for r in rows if r["flops"] > 0 and r["intensity"] and r["time_s"])


def _browse(logdir, tmp_path, runs: dict, script: str, config: dict) -> dict:
    """Serve ``logdir`` with TensorBoard (our plugin loaded), wait until it lists ``runs``, run
    the node ``script`` of tests/browser with ``config`` (plus the tab's URL and Chromium), and
    return what it printed (a JSON object with ``ok``)."""
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    log = open(tmp_path / "tensorboard.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-c", _LAUNCHER, "--logdir", str(logdir), "--host", "127.0.0.1", "--port", str(port),
         "--samples_per_plugin=roofline=0", "--reload_interval", "1"],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )
    try:
        _wait_for_runs(base, runs, server)
        os.makedirs(ARTIFACTS, exist_ok=True)
        config = {**config, "url": f"{base}/#roofline", "chromium": CHROMIUM,
                  "userDataDir": tempfile.mkdtemp(prefix="chromium-")}
        done = subprocess.run([NODE, os.path.join(BROWSER_DIR, script), json.dumps(config)],
                              cwd=BROWSER_DIR, capture_output=True, text=True, timeout=90)
        shutil.rmtree(config["userDataDir"], ignore_errors=True)
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
    lines = done.stdout.strip().splitlines()
    assert lines, f"the browser script printed nothing; stderr:\n{done.stderr[-3000:]}"
    seen = json.loads(lines[-1])
    assert seen.get("ok"), f"browser script failed: {seen.get('fatal')}\nobserved: {seen}"
    return seen


def test_roofline_tab_in_headless_chromium(tmp_path):
    logdir = tmp_path / "logs"
    step0, step1 = make_report_dict(), make_report_dict(time_scale=0.6)
    write_report(str(logdir / "demo"), StandInReport(step0), step=0)
    write_report(str(logdir / "demo"), StandInReport(step1), step=1, plot=False)
    big = make_big_report_dict(BIG_MODULES)
    write_report(str(logdir / "scale_10k"), StandInReport(big), step=0, plot=False)
    _write_raw(str(logdir / "zz_broken"), b"{not json", step=0)
    _write_raw(str(logdir / "zz_broken"), json.dumps({"hello": "world"}).encode(), step=1)

    seen = _browse(logdir, tmp_path, {"demo": {"roofline": [0, 1]}, "scale_10k": {"roofline": [0]},
                                      "zz_broken": {"roofline": [0, 1]}}, "roofline_tab.mjs", {
        "screenshot": os.path.join(ARTIFACTS, "roofline_tab.png"),
        "compareScreenshot": os.path.join(ARTIFACTS, "roofline_tab_compare.png"),
        "run": "demo", "bigRun": "scale_10k", "brokenRun": "zz_broken", "xssName": XSS_NAME, "timeoutMs": 75000,
    })
    print(f"\n10k-module report: rendered in {seen['bigRenderMs']:.0f} ms (browser, this machine)")

    assert "plugin_entry.html?name=roofline" in seen["frameUrl"]
    assert seen["runOptions"] == ["demo", "scale_10k", "zz_broken"]
    # One mark per module of the shown phase ("all") and level, at both steps: 6 modules.
    assert seen["steps"] == [{"step": 0, "dots": _expected_dots(step0, "module")},
                             {"step": 1, "dots": _expected_dots(step1, "module")}]
    assert _expected_dots(step0, "module") == 6
    # The tooltip names the hovered module and carries the promised fields.
    tooltip = seen["tooltip"]
    assert seen["hoveredName"] in tooltip
    for field in ("type", "calls", "FLOPs", "bytes", "intensity", "achieved", "attainable", "efficiency",
                  "bound", "time lost"):
        assert f"{field}:" in tooltip, (field, tooltip)
    # Linked selection, both ways.
    assert seen["rowToDot"]["row"] == seen["rowToDot"]["dot"]
    assert seen["dotToRow"]["row"] == seen["dotToRow"]["dot"] == seen["hoveredName"]
    assert seen["zoom"]["before"] != seen["zoom"]["after"]
    # XSS: rendered as text in the table and as an attribute value; nothing injected, no dialog.
    assert seen["xss"] == {"imgInFrame": 0, "cellsWithName": 1, "dotsWithName": 1, "onerrorAttributes": 0,
                           "imgInPage": 0}
    assert seen["dialogs"] == []
    assert seen["pageErrors"] == []
    # Compare step 1 against step 0: every module moved (all times x 0.6), so one arrow each.
    assert seen["compare"] == {"baselineDots": 6, "arrows": 6}
    # Op level: 9 op rows, the uncounted aten.foo (0 FLOPs) is listed but not drawn.
    assert seen["opDots"] == _expected_dots(step0, "op") == 8
    assert "not UTF-8 JSON" in seen["corruptMessage"]
    assert "not a torch_roofline report" in seen["foreignMessage"]
    assert seen["bigDots"] == seen["afterRefreshDots"] == BIG_MODULES + 1  # + the root row


def _tab_rows(report: dict, level: str) -> dict:
    """key -> (log10 intensity, log10 achieved FLOP/s) of the rows the tab plots at ``level``
    (module level: the phase "all" rows where the report has them), by index.js's rules: a
    row is drawn when its intensity and achieved rate are both known and positive."""
    rows = report["modules"] if level == "module" else report["ops"]
    if level == "module" and any(r["phase"] == "all" for r in rows):
        rows = [r for r in rows if r["phase"] == "all"]
    out = {}
    for r in rows:
        flops, time_s = r.get("flops"), r.get("time_s")
        nbytes = (r.get("bytes_read") or 0) + (r.get("bytes_written") or 0)
        intensity = r.get("intensity")
        if intensity is None and flops is not None and nbytes > 0:
            intensity = flops / nbytes
        achieved = r.get("achieved_flops_per_s")
        if achieved is None:
            achieved = flops / time_s if flops is not None and time_s else r.get("attainable_flops_per_s")
        if intensity and intensity > 0 and achieved and achieved > 0:
            out[(r["name"], r["phase"], r.get("op", "") if level == "op" else "")] = (
                math.log10(intensity), math.log10(achieved))
    return out


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                    reason="torch.compile's CPU backend needs a C++ compiler")
def test_compare_mode_shows_a_compiled_run_against_its_eager_baseline(tmp_path):
    # Issue 15: a compiled run and the eager run of the same model on one roofline, in the
    # tab's compare mode (examples/compiled_vs_eager.py writes the pair).
    env = {**os.environ, "PYTHONPATH": ROOT, "MPLBACKEND": "Agg"}
    done = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "compiled_vs_eager.py"), "--batch", "8",
                           "--width", "64", "--logdir", str(tmp_path / "tb")], cwd=tmp_path, capture_output=True,
                          text=True, timeout=400, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    client = make_client(str(tmp_path / "tb"))
    compiled = _json(client.get(f"{PREFIX}/report?run=compiled&tag=roofline&step=0"))
    eager = _json(client.get(f"{PREFIX}/report?run=eager&tag=roofline&step=0"))

    seen = _browse(tmp_path / "tb", tmp_path, {"compiled": {"roofline": [0]}, "eager": {"roofline": [0]}},
                   "compare_runs.mjs", {"run": "compiled", "baselineRun": "eager", "timeoutMs": 60000,
                                        "screenshot": os.path.join(ARTIFACTS, "roofline_tab_compiled_vs_eager.png")})
    assert "baseline eager · step 0" in seen["legend"]
    assert not seen["pageErrors"] and not seen["consoleErrors"], seen
    for level in ("module", "op"):
        current, baseline = _tab_rows(compiled, level), _tab_rows(eager, level)
        moved = [k for k, (x, y) in current.items()
                 if k in baseline and (abs(baseline[k][0] - x) > 1e-3 or abs(baseline[k][1] - y) > 1e-3)]
        assert len(seen[level]["dots"]) == len(current), (level, seen[level])
        assert len(seen[level]["baselineDots"]) == len(baseline), (level, seen[level])
        assert seen[level]["arrows"] == len(moved), (level, seen[level])
    # The compiled run draws its fused kernels; the eager baseline, the aten ops they replaced.
    assert any("cpp_fused" in k[2] for k in _tab_rows(compiled, "op"))
    assert not any("cpp_fused" in k[2] for k in _tab_rows(eager, "op"))
    assert len(_tab_rows(eager, "module")) > len(_tab_rows(compiled, "module"))  # compiled code: no inner rows
