"""Reading big traces: time and peak memory of ``from_trace`` by trace size (issue 16, point 1).

The traces are synthetic but made of real events: one resnet18 training step (batch 2,
64x64, forward, cross-entropy, backward, SGD) is recorded by ``RooflineProfiler`` with
module ranges, recorded shapes and memory events; then :func:`write_trace` writes that
step again and again, each copy shifted in time and wrapped in a ``ProfilerStep#k``
marker, with fresh external ids, sequence numbers and flow ids (torch.profiler's counters
grow from step to step), until the file holds the requested size.
The event mix is therefore a real training step's (aten ops with shapes, autograd engine
events, module ranges, memory events, forward/backward flows).

Each size is read in a fresh process (``from_trace(path, roof=...)``, recorded shapes,
no model), ``--rounds`` times up to 200 MB (best wall time, as every benchmark here, and the
median beside it), once above: wall seconds and the peak memory of that process and the workers it forks to read
parts of a big trace (the largest total PSS, sampled every 0.5 s: reading a process's PSS
walks its page tables, which slows it when done often; shared pages count once, so pages the workers share
with it count once), and how much of it ``from_trace`` added over the imported package
(``added``, also per byte of file); ``how`` says whether the trace was read whole or a few
steps at a time. Targets (issue 16): 50 MB in <= 3 s; 1 GB in <= 60 s with <= 2 GB peak
memory. Nothing is asserted. Run::

    python benchmarks/big_trace.py                    # 50 MB and 200 MB
    python benchmarks/big_trace.py --sizes 50 1000    # sizes in MB
    python benchmarks/big_trace.py --quick            # 10 MB
    python benchmarks/big_trace.py --write-only --sizes 1000 --dir /tmp/traces   # just the file
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from typing import Any, Dict, List, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

__all__ = ["record_step", "write_trace", "main"]

_ROOF = "i9-10980xe"
#: Sizes (MB) up to this are read ``--rounds`` times; bigger ones once (a 1 GB read takes ~45 s).
_ROUNDS_UP_TO_MB = 200


def record_step(path: str) -> None:
    """Record one resnet18 training step (random weights, batch 2, 64x64) to ``path``."""
    import torch
    import torchvision

    from torch_roofline import RooflineProfiler

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(2, 3, 64, 64), torch.randint(0, 10, (2,))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    step()
    with RooflineProfiler(model, roof=_ROOF, export_trace=path):
        step()


def _step_events(path: str) -> Tuple[Dict[str, Any], List[Dict[str, Any]], float, float]:
    """(header without events, the step's timed events, first ts, span in µs)."""
    with open(path, "rb") as f:
        doc = json.load(f)
    events = [e for e in doc.pop("traceEvents") if isinstance(e, dict) and isinstance(e.get("ts"), (int, float))
              and e.get("ph") != "M"]
    t0 = min(e["ts"] for e in events)
    t1 = max(e["ts"] + float(e.get("dur", 0) or 0) for e in events)
    return doc, events, t0, t1 - t0


def write_trace(step_path: str, out: str, size_bytes: int, per_step: int = 1) -> Tuple[int, int]:
    """Write ``out``: copies of the step in ``step_path`` until ``size_bytes``, ``per_step``
    copies inside each ``ProfilerStep#k`` marker (1: one copy per step; more: micro-batches
    of a step, and a step as big as the file when ``per_step`` copies fill it). Returns
    (steps, events). Streams the output: memory does not grow with the size."""
    import orjson

    header, events, t0, span = _step_events(step_path)
    gap = 50.0  # µs between steps
    max_ext = max((e.get("args", {}).get("External id", 0) for e in events if isinstance(e.get("args"), dict)),
                  default=0) + 1
    max_flow = max((int(e.get("id", 0)) for e in events if e.get("ph") in ("s", "f")), default=0) + 1
    max_seq = max((e["args"].get("Sequence number", 0) for e in events if isinstance(e.get("args"), dict)),
                  default=0) + 1
    steps = copies = n_events = 0
    meta = orjson.dumps(header)  # the step's own header: metadata, module labels, device properties
    with open(out, "wb") as f:
        f.write((meta[:-1] + b", " if len(meta) > 2 else b"{") + b'"traceEvents": [\n')
        written = 0
        first = True
        left = 0  # copies still due in the current step
        while written < size_bytes or left:
            shift = copies * (span + 2 * gap)
            chunk = []
            if not left:  # a step's first copy: its marker spans its copies
                n = left = min(per_step, max(1, -(-(size_bytes - written) // max(_copy_bytes(events), 1))))
                chunk.append({"ph": "X", "cat": "user_annotation", "name": f"ProfilerStep#{steps}",
                              "pid": events[0]["pid"], "tid": events[0]["tid"], "ts": t0 + shift - gap / 2,
                              "dur": n * (span + 2 * gap) - gap, "args": {"External id": steps * max_ext}})
                steps += 1
            for e in events:
                c = dict(e, ts=e["ts"] + shift)
                args = e.get("args")
                if isinstance(args, dict) and ("External id" in args or "Sequence number" in args):
                    c["args"] = dict(args)  # ids grow from copy to copy, as torch.profiler's counters do
                    for key, stride in (("External id", max_ext), ("Sequence number", max_seq)):
                        if isinstance(args.get(key), int):
                            c["args"][key] = args[key] + copies * stride
                if e.get("ph") in ("s", "f") and "id" in e:
                    c["id"] = int(e["id"]) + copies * max_flow
                chunk.append(c)
            data = b",\n".join(orjson.dumps(c) for c in chunk)
            f.write(data if first else b",\n" + data)
            first = False
            written += len(data)
            copies += 1
            left -= 1
            n_events += len(chunk)
        f.write(b"\n]}")
    return steps, n_events


def _copy_bytes(events: List[Dict[str, Any]], _memo: Dict[int, int] = {}) -> int:
    """Bytes one copy of the step's events takes in the file (about: orjson, no separators)."""
    key = id(events)
    if key not in _memo:
        import orjson

        _memo[key] = sum(len(orjson.dumps(e)) + 2 for e in events)
    return _memo[key]


def _read_one(path: str) -> None:
    """In a fresh process: from_trace, then print wall seconds, peak memory and the report's steps.

    Peak memory is the largest total PSS (proportional set size: shared pages split between
    the processes sharing them) of this process and its children (the workers reading parts
    of a big trace), sampled every 0.5 s (reading a process's PSS walks its page tables, which
    slows it when done often), and this process's own ``VmHWM``."""
    import threading

    warnings.simplefilter("ignore")
    from torch_roofline import from_trace

    before = _tree_pss()
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.5):
            peak[0] = max(peak[0], _tree_pss())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t = time.perf_counter()
    report = from_trace(path, roof=_ROOF)
    wall = time.perf_counter() - t
    done.set()
    sampler.join()
    print(json.dumps({"wall_s": wall, "peak_bytes": max(peak[0], _tree_pss()), "before_bytes": before,
                      "own_peak_bytes": _vm("VmHWM"), "steps": report.steps, "ops": len(report.ops),
                      "parts": any(n.startswith("read a few steps at a time") for n in report.notes)}))


def _tree_pss() -> int:
    """PSS in bytes of this process and its descendants (0 where /proc cannot say)."""
    pids, i = [os.getpid()], 0
    while i < len(pids):
        try:
            for task in os.listdir(f"/proc/{pids[i]}/task"):
                with open(f"/proc/{pids[i]}/task/{task}/children") as f:
                    pids += [int(x) for x in f.read().split()]
        except OSError:
            pass
        i += 1
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                total += next(int(line.split()[1]) * 1024 for line in f if line.startswith("Pss:"))
        except (OSError, StopIteration):
            pass
    return total


def _vm(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=float, nargs="+", default=[50, 200], help="trace sizes in MB (default 50 200)")
    p.add_argument("--dir", default=None, help="where to write the traces (default: a temporary folder)")
    p.add_argument("--write-only", action="store_true", help="write the traces, read nothing")
    p.add_argument("--quick", action="store_true", help="one 10 MB trace")
    p.add_argument("--rounds", type=int, default=3,
                   help=f"fresh-process reads per size up to {_ROUNDS_UP_TO_MB} MB (best and median; default 3)")
    p.add_argument("--per-step", type=int, default=1,
                   help="copies of the recorded step inside each ProfilerStep marker (default 1; e.g. 100000: "
                        "the whole file one step)")
    p.add_argument("--read", default=None, help=argparse.SUPPRESS)  # the child process
    args = p.parse_args(argv)
    if args.read:
        _read_one(args.read)
        return 0
    from count_overhead import machine_lines

    sizes = [10.0] if args.quick else args.sizes
    folder = args.dir or tempfile.mkdtemp(prefix="roofline-big-")
    os.makedirs(folder, exist_ok=True)
    print("\n".join(machine_lines(1)))
    step_path = os.path.join(folder, "step.json")
    record_step(step_path)
    print(f"one resnet18 training step: {os.path.getsize(step_path) / 1e6:.2f} MB")
    print(f"{'size':>9} {'steps':>6} {'events':>10} {'write':>7} {'from_trace':>11} {'peak memory':>12} "
          f"{'added':>8} {'added B/B':>9}  how")
    for mb in sizes:
        out = os.path.join(folder, f"trace_{mb:g}MB{'' if args.per_step == 1 else f'_x{args.per_step}'}.json")
        t = time.perf_counter()
        steps, n = write_trace(step_path, out, int(mb * 1e6), args.per_step)
        wrote = time.perf_counter() - t
        size = os.path.getsize(out)
        if args.write_only:
            print(f"{size / 1e6:7.0f}MB {steps:6d} {n:10,d} {wrote:6.1f}s")
            continue
        env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        reads: List[Dict[str, Any]] = []
        for _ in range(args.rounds if mb <= _ROUNDS_UP_TO_MB else 1):
            done = subprocess.run([sys.executable, os.path.abspath(__file__), "--read", out], capture_output=True,
                                  text=True, env=env)
            if done.returncode != 0:
                print(f"{size / 1e6:7.0f}MB {steps:6d} {n:10,d} {wrote:6.1f}s   failed: {done.stderr.strip()[-300:]}")
                break
            reads.append(json.loads(done.stdout.strip().splitlines()[-1]))
        else:
            walls = sorted(r["wall_s"] for r in reads)
            r = max(reads, key=lambda r: r["peak_bytes"])  # the largest peak of the rounds
            added = r["peak_bytes"] - r["before_bytes"]
            how = "in parts" if r["parts"] else "whole"
            spread = f"  (median {statistics.median(walls):.1f}s of {len(walls)})" if len(walls) > 1 else ""
            print(f"{size / 1e6:7.0f}MB {steps:6d} {n:10,d} {wrote:6.1f}s {walls[0]:10.1f}s "
                  f"{r['peak_bytes'] / 1e9:10.2f}GB {added / 1e9:6.2f}GB {added / size:9.1f}  {how}{spread}")
        if not args.dir:
            os.remove(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
