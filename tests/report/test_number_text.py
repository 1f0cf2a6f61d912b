"""One set of rules for numbers written for people: the report's table and summary, the
TensorBoard text (Python, torch_roofline._numbers) and the Roofline tab's labels
(JavaScript, tensorboard/static/index.js) write the same number the same way."""

from _paths import REPO_ROOT
import json
import os
import re
import shutil
import subprocess

import pytest

from torch_roofline._numbers import UNKNOWN, fixed_text, percent_text, si_text

INDEX_JS = os.path.join(REPO_ROOT,
                        "torch_roofline", "tensorboard", "static", "index.js")
NODE = shutil.which("node")

CASES = [
    (1.5e12, "FLOP/s"), (6.1e-6, "s"), (999.7e-6, "s"), (1234.0, "s"), (0.0123456, "s"), (None, "s"),
    (0, "B"), (3.3e9, "B/s"), (123456789, "FLOP"), (1e-15, "s"), (2.5e21, "FLOP"), (10.25, "B"),
    (100.5, "B"), (-4.2e-3, "s"), (999.96, "B"), (0.2534, "%"), (0.00125, "%"), (None, "%"), (1.0, "%"),
    (-0.05, "%"), (7e-10, "s"), (4.5e-13, "s"),
    # near ties: 1.005 and 2.675 are stored just below (1.00499..., 2.67499...), -10.25 and 100.5 exactly
    (1.005, "B"), (2.675, "B"), (-10.25, "B"), (100.5, "B"), (999.4e-6, "s"),
]


def test_rules_by_hand():
    # figures: three or more; whole and thousands-separated from 100 up; ties away from zero
    assert [fixed_text(x) for x in (0, 1.234, 12.34, 123.4, 12345.6, 10.25, -0.125)] == [
        "0", "1.23", "12.3", "123", "12,346", "10.3", "-0.13"]
    assert si_text(1.5e12, "FLOP/s") == "1.50 TFLOP/s"
    assert si_text(6.1e-6, "s") == "6.10 µs"
    assert si_text(999.7e-6, "s") == "1.00 ms"  # would print as 1,000 µs otherwise
    assert si_text(1234.0, "s") == "1,234 s"  # seconds take no prefix above one
    assert si_text(0, "B") == "0 B"
    assert si_text(6.1e-6, "s", significant=2) == "6.1 µs"
    assert percent_text(0.2534) == "25.3 %" and percent_text(0.2534, sign=False) == "25.3"
    for unknown in (None, float("nan"), float("inf"), "x"):
        assert si_text(unknown, "s") == UNKNOWN == percent_text(unknown) == "-"


@pytest.mark.skipif(NODE is None, reason="node is not installed")
def test_the_tab_writes_numbers_as_the_report_does():
    src = open(INDEX_JS, encoding="utf-8").read()
    num = re.search(r"^function num\(value\) \{.*?^\}\n", src, re.S | re.M).group(0)
    rules = src[src.index("const UNKNOWN"):src.index("function plain(")]
    script = (num + rules + f"const cases = {json.dumps(CASES)};\n"
              "console.log(JSON.stringify(cases.map(([v, u]) => u === '%' ? pct(v) : si(v, u))));\n")
    run = subprocess.run([NODE, "-e", script], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    expected = [percent_text(v) if unit == "%" else si_text(v, unit) for v, unit in CASES]
    assert json.loads(run.stdout) == expected
