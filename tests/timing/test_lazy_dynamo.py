"""torch_roofline._lazy_dynamo: replays of recorded calls without importing torch._dynamo.

Each check runs in a fresh process: ``torch._dynamo`` cannot be un-imported, and the test
session imports it early."""

from _paths import TESTS_DIR
import json
import os
import subprocess
import sys

DATA = os.path.join(TESTS_DIR, "data")
TRACE = os.path.join(DATA, "convrelulinear_cpu_train_shapes.kineto.json.gz")

_TOTALS = r"""
import json, sys
if sys.argv[2] == "imported":
    import torch._dynamo
from torch_roofline import from_trace
from torch_roofline.devices import Device
report = from_trace(sys.argv[1], roof=Device(name="flat", peak_flops={"fp32": 1e12}, bandwidth=1e11))
rows = sorted((o.name, o.phase, o.op, o.calls, o.flops, o.bytes_read, o.bytes_written) for o in report.ops)
print(json.dumps({"dynamo": "torch._dynamo" in sys.modules, "flops": report.totals.flops, "rows": rows}))
"""

_UPGRADE = r"""
import sys, torch
from torch._compile import _disable_dynamo
from torch_roofline._lazy_dynamo import _Deferred, defer_dynamo_import

def double(x):
    return x * 2

wrapped = _disable_dynamo(double)  # as torch wraps its Python kernels
assert "torch._dynamo" not in sys.modules
assert defer_dynamo_import() > 0
assert isinstance(getattr(double, "__dynamo_disable"), _Deferred)
assert wrapped(torch.ones(2)).tolist() == [2.0, 2.0]
assert "torch._dynamo" not in sys.modules, "the call imported Dynamo"
assert defer_dynamo_import() == 0  # once per process

import torch._dynamo
assert wrapped(torch.ones(2)).tolist() == [2.0, 2.0]
real = getattr(double, "__dynamo_disable")
assert not isinstance(real, _Deferred) and real._torchdynamo_disable, "torch's own disabled version, built"

@torch.compile(backend="eager", fullgraph=False)
def outer(x):
    return wrapped(x) + 1

assert outer(torch.ones(2)).tolist() == [3.0, 3.0]
print("ok")
"""


def _run(code: str, *args: str) -> str:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip().splitlines()[-1]


def test_replays_count_the_same_without_importing_dynamo():
    # Oracle: the same trace counted in a process where Dynamo was imported first (torch's
    # wrappers then run their Dynamo-disabled versions, as before this module existed).
    deferred = json.loads(_run(_TOTALS, TRACE, "deferred"))
    imported = json.loads(_run(_TOTALS, TRACE, "imported"))
    assert deferred["dynamo"] is False and imported["dynamo"] is True
    assert deferred["flops"] > 0
    assert deferred["rows"] == imported["rows"]


def test_a_deferred_wrapper_calls_the_plain_function_then_torchs_disabled_version_once_dynamo_is_imported():
    assert _run(_UPGRADE) == "ok"
