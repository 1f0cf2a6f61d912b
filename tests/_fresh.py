"""A saved trace read back by ``from_trace`` in a fresh Python process (one that compiled
nothing and holds no compiled graph), for the tests of saved compiled-model traces."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Dict, List, Tuple

_SCRIPT = (
    "import json, sys\n"
    "from torch_roofline import from_trace\n"
    "from torch_roofline.devices import Device\n"
    "r = from_trace(sys.argv[1], roof=Device(name='flat', peak_flops={'fp32': 1e11}, bandwidth=1e10))\n"
    "print(json.dumps([[o.op, o.flops, o.bytes_read, o.bytes_written, o.counted] for o in r.ops] + [list(r.notes)]))\n"
)


def from_trace_elsewhere(path: str) -> Tuple[List[Dict[str, object]], List[str]]:
    """(one dict per op row: op, flops, bytes_read, bytes_written, counted; the notes) of
    ``from_trace(path)`` run in a fresh process."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", _SCRIPT, path], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = json.loads(out.stdout.strip().splitlines()[-1])
    keys = ("op", "flops", "bytes_read", "bytes_written", "counted")
    return [dict(zip(keys, r)) for r in rows[:-1]], rows[-1]
