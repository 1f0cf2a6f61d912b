"""Run every benchmark in sequence, each in a fresh Python process.

Run::

    python benchmarks/run_all.py            # a few minutes each on a 2-core machine
    python benchmarks/run_all.py --quick    # smoke run, about a minute each

Extra arguments after ``--`` go to every benchmark (``-- --threads 2``). Each benchmark
prints its machine line and its own table; nothing is asserted. The exit status is the
number of benchmarks that failed (0: all ran).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from typing import List, Optional

__all__ = ["BENCHMARKS", "main"]

HERE = os.path.dirname(os.path.abspath(__file__))

#: The benchmarks, in the order they run.
BENCHMARKS = ("count_overhead.py", "profile_overhead.py", "timing_fidelity.py", "count_what_ran.py", "report_scale.py",
              "predict_vs_measured.py")


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: List[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run (each benchmark's --quick)")
    p.add_argument("--only", nargs="+", choices=BENCHMARKS, help="run only these")
    args = p.parse_args(argv)
    env = dict(os.environ)
    root = os.path.dirname(HERE)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("MPLBACKEND", "Agg")
    failed = 0
    for name in args.only or BENCHMARKS:
        cmd = [sys.executable, os.path.join(HERE, name)] + (["--quick"] if args.quick else []) + extra
        print(f"\n===== {name} {'--quick ' if args.quick else ''}=====", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call(cmd, env=env)
        print(f"===== {name}: exit {rc}, {time.perf_counter() - t0:.0f} s =====", flush=True)
        failed += rc != 0
    return failed


if __name__ == "__main__":
    raise SystemExit(main())
