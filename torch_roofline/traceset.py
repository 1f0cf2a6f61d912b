"""Roofline reports of a whole job: one saved trace per rank, read together.

A distributed job writes one trace per rank (``tensorboard_trace_handler`` names them
``<host>_<pid>.<time>.pt.trace.json.gz``; Kineto puts the rank in the trace's
``distributedInfo``). :func:`from_traces` reads a folder, a glob pattern or a list of them,
each with :func:`~torch_roofline.offline.from_trace` (in parallel worker processes), and returns a
:class:`TraceSetReport`: every rank's :class:`~torch_roofline.report.RooflineReport` and a
:class:`RankSummary` across ranks.

**Rank** of a file: ``distributedInfo.rank`` when the trace has it (HolisticTraceAnalysis
reads the same field), else a number after ``rank`` in the file name (``rank3.json``,
``trace_rank-3.json.gz``). A file with neither, or two files of one rank, is an error that
names them.

**Across ranks** (:class:`RankSummary`): each rank's step time and its mean and max; the
straggler spread ``(max - min) / mean`` (0: all ranks equally fast); per (module, phase)
the time on each rank with mean, min, max, spread and the slowest rank
(:class:`ModuleSpread`); each rank's communication (:class:`~torch_roofline.timing.collectives.CommSummary`,
bytes in NCCL's bus-bandwidth convention against the interconnect roof).

**The straggler** is the rank the others wait for: the one *busy* longest per step, busy
being the step time minus the collective time no compute overlapped (the time a rank spends
waiting for the others and moving bytes). Without collectives, busy is the step time. Each
rank's *wait* is also reported: a collective completes on every rank at the same moment (up
to the link's latency), so a rank that arrives early waits in it; summed over the
collectives every rank shares, a rank's time in the collective minus the shortest rank's.

**Clocks.** Ranks on different hosts have different clocks. Each rank's clock offset
against the lowest rank is the median difference of the completion times (start + time)
of the collectives they share, taken in order. Completion, not start: starts differ by each
rank's own wait, which is what the straggler analysis measures. The offsets are reported
(:attr:`RankSummary.clock_offsets_s`) and said in a note; step and module times do not
depend on them.

Example::

    job = from_traces("traces/")            # or "traces/*.pt.trace.json.gz", or a list
    print(job.table())
    print(job.summary.straggler_rank, job.summary.straggler_spread)
    job.to_json("job.json")
"""

from __future__ import annotations

import glob
import json
import os
import re
import sys
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from torch_roofline._progress import StageLine
from torch_roofline.report import RooflineReport
from torch_roofline.timing.collectives import CommSummary, collectives, interconnect_roof, summarize
from torch_roofline.ranks import ModuleSpread, RankRecord, RankSummary, spread, summarize_ranks
from torch_roofline._numbers import ms_text

__all__ = ["ModuleSpread", "RankSummary", "RankRecord", "TraceSetReport", "from_traces", "trace_files",
           "summarize_ranks", "spread"]

_RANK_IN_NAME = re.compile(r"rank[^0-9a-z]?(\d+)", re.IGNORECASE)
_TRACE_SUFFIXES = (".json", ".json.gz")


@dataclass(frozen=True)
class TraceSetReport:
    """Every rank's report of a job and the summary across them.

    Attributes:
        paths: the trace file of each rank, in :attr:`RankSummary.ranks` order.
        reports: each rank's :class:`RooflineReport`, same order.
        summary: the :class:`RankSummary`.
    """

    paths: Tuple[str, ...]
    reports: Tuple[RooflineReport, ...]
    summary: RankSummary

    def report(self, rank: int) -> RooflineReport:
        """The report of ``rank``; KeyError naming the ranks there are."""
        if rank in self.summary.ranks:
            return self.reports[self.summary.ranks.index(rank)]
        raise KeyError(f"TraceSetReport.report({rank!r}): no trace of that rank; ranks: {list(self.summary.ranks)}")

    def table(self, top: int = 10) -> str:
        """Per rank (step time, wait in collectives, communication), the straggler, and the
        ``top`` modules whose time differs most across ranks. Times in ms."""
        return _table(self, top)

    def to_dict(self) -> Dict[str, Any]:
        """``{"summary": RankSummary.to_dict(), "ranks": [{"rank", "path", "report"}]}``."""
        return {"summary": self.summary.to_dict(),
                "ranks": [{"rank": r, "path": p, "report": rep.to_dict()}
                          for r, p, rep in zip(self.summary.ranks, self.paths, self.reports)]}

    def to_tensorboard(self, logdir: Union[str, "os.PathLike[str]"], step: int = 0, tag: str = "roofline") -> List[str]:
        """Write each rank's report as a run of its own, ``<logdir>/rank<N>``, for the Roofline
        tab (pick two ranks in its compare mode to see them side by side) and the scalar tabs.
        Returns the run directories written."""
        runs = []
        for rank, report in zip(self.summary.ranks, self.reports):
            run = os.path.join(os.fspath(logdir), f"rank{rank}")
            report.to_tensorboard(run, step=step, tag=tag)
            runs.append(run)
        return runs

    def to_json(self, path: Union[str, "os.PathLike[str]"]) -> None:
        """Write :meth:`to_dict` as JSON (atomically: a failed write keeps the previous file)."""
        from torch_roofline._io import atomic_write

        atomic_write(path, json.dumps(self.to_dict(), indent=1, allow_nan=False), caller="TraceSetReport.to_json")


# ----------------------------------------------------------------------------- files and ranks


def trace_files(source: Union[str, "os.PathLike[str]", Sequence[Union[str, "os.PathLike[str]"]]]) -> List[str]:
    """The trace files of ``source``: a folder (its ``.json`` / ``.json.gz`` files), a glob
    pattern, a file, or a list of any of these; sorted, each once. A ValueError when none is
    found, naming what was searched."""
    items = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    found: List[str] = []
    for item in items:
        path = os.fspath(item)
        if os.path.isdir(path):
            found += [os.path.join(path, n) for n in os.listdir(path) if n.endswith(_TRACE_SUFFIXES)]
        elif os.path.exists(path):  # a file, even one whose name holds glob characters ("run[1].json")
            found.append(path)
        elif glob.has_magic(path):
            found += [p for p in glob.glob(path) if os.path.isfile(p)]
        else:
            raise FileNotFoundError(f"from_traces({path!r}): no such file or folder; pass a folder of traces, a "
                                    "glob pattern (e.g. 'traces/*.pt.trace.json.gz') or a list of files")
    files = sorted(set(found))
    if not files:
        raise ValueError(f"from_traces({source!r}): no trace file (.json or .json.gz) found there; pass the folder "
                         "tensorboard_trace_handler wrote, or a glob pattern matching one trace per rank")
    return files


def _rank_of(path: str, info: Any) -> Tuple[Optional[int], Optional[int]]:
    """(rank, world size) from ``distributedInfo``, else (a number after 'rank' in the name, None)."""
    if isinstance(info, dict) and isinstance(info.get("rank"), int) and not isinstance(info.get("rank"), bool):
        size = info.get("world_size")
        return info["rank"], size if isinstance(size, int) and not isinstance(size, bool) else None
    match = _RANK_IN_NAME.search(os.path.basename(path))
    return (int(match.group(1)), None) if match else (None, None)


@dataclass(frozen=True)
class _RankResult:
    """What one worker returns for one file (picklable)."""

    path: str
    rank: Optional[int]
    world_size: Optional[int]
    report: RooflineReport
    comm: Optional[CommSummary]
    collectives: Tuple[Tuple[str, float, float], ...]  # (name, completion time in s on the trace's clock, time_s)


def _read_rank(path: str, roof: Any, memory_model: str, group_size: Optional[int],
               interconnect_bandwidth: Optional[float], files: int) -> _RankResult:
    """One rank's report, communication and collective completion times (runs in a worker)."""
    from torch_roofline.trace_file import read_trace, trace_device
    from torch_roofline.timing.quiet import quiet_native_stderr
    from torch_roofline.timing.steps import split_steps, within
    from torch_roofline.timing.trace import load_trace

    with quiet_native_stderr():
        trace = load_trace(path)
        info = trace.metadata.get("distributedInfo")
        rank, size = _rank_of(path, info)
        report = read_trace(trace, None, None, roof=roof, backward=False, loss_fn=None, memory_model=memory_model,
                            steps=None, counted=None)
        split = split_steps(trace)
        cut = within(trace, split.spans) if split.spans else trace
        # default group: distributedInfo's, else one rank per file (a lone file without it: ask)
        calls = collectives(cut, group_size=group_size or size or (files if files > 1 else None))
    comm = None
    if calls:
        bandwidth = interconnect_bandwidth
        if bandwidth is None:
            bandwidth = interconnect_roof(trace_device(trace, roof))
        comm = summarize(calls, steps=max(int(report.steps), 1), step_time_s=report.totals.time_s,
                         interconnect_bandwidth=bandwidth)
    origin_s = trace.origin_us * 1e-6
    ends = tuple((c.name, origin_s + c.start_s + c.time_s, c.time_s) for c in calls)
    return _RankResult(path, rank, size, report, comm, ends)


def _read_all(files: Sequence[str], args: Tuple[Any, ...], processes: Optional[int],
              progress: Optional[Callable[[int, int, str], None]]) -> List[_RankResult]:
    n = len(files)
    workers = processes if processes is not None else min(n, os.cpu_count() or 1)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"from_traces(processes={processes!r}): expected a number of processes >= 1, or None")
    if workers == 1 or n == 1:
        results: List[_RankResult] = []
        for i, f in enumerate(files):
            results.append(_read_rank(f, *args))
            if progress:
                progress(i + 1, n, f)
        return results
    return _read_in_workers(files, args, min(workers, n), progress)


def _read_in_workers(files: Sequence[str], args: Tuple[Any, ...], workers: int,
                     progress: Optional[Callable[[int, int, str], None]]) -> List[_RankResult]:
    """Read the traces in ``workers`` fresh Python processes (``python -c``, not
    multiprocessing: a user's script without an ``if __name__ == "__main__":`` guard is
    not run again in them). Each worker reads every ``workers``-th file and writes one
    pickle per file; an error in a worker is raised here, naming its file."""
    import pickle
    import subprocess
    import tempfile
    import time

    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=package_root + (os.pathsep + os.environ["PYTHONPATH"]
                                                      if os.environ.get("PYTHONPATH") else ""))
    with tempfile.TemporaryDirectory(prefix="roofline-ranks-") as tmp:
        procs = []
        for w in range(workers):
            mine = [(i, f) for i, f in enumerate(files) if i % workers == w]
            job = os.path.join(tmp, f"job{w}.pkl")
            with open(job, "wb") as fh:
                pickle.dump((mine, args, tmp), fh)
            err = open(os.path.join(tmp, f"stderr{w}.txt"), "wb")
            procs.append((subprocess.Popen([sys.executable, "-c", "from torch_roofline.traceset import _worker; "
                                            "_worker()", job], env=env, stdout=subprocess.DEVNULL, stderr=err), err))
        try:
            done: set = set()
            while len(done) < len(files):
                for i, f in enumerate(files):
                    if i not in done and os.path.exists(os.path.join(tmp, f"out{i}.pkl")):
                        done.add(i)
                        if progress:
                            progress(len(done), len(files), f)
                if len(done) < len(files) and all(p.poll() is not None for p, _ in procs):
                    break
                time.sleep(0.05)
        finally:
            for p, err in procs:
                p.wait()
                err.close()
        results = []
        for i, f in enumerate(files):
            out = os.path.join(tmp, f"out{i}.pkl")
            if not os.path.exists(out):
                w = i % workers
                with open(os.path.join(tmp, f"stderr{w}.txt"), "rb") as fh:
                    tail = fh.read().decode("utf-8", "replace").strip().splitlines()[-5:]
                raise RuntimeError(f"from_traces: the worker reading {f!r} exited with code {procs[w][0].returncode} "
                                   f"before finishing it: {' | '.join(tail) or 'no message'}; try processes=1")
            with open(out, "rb") as fh:
                ok, value = pickle.load(fh)
            if not ok:
                raise value  # the worker's own error (a TraceError names its file)
            results.append(value)
    return results


def _worker() -> None:
    """A worker process: read its files, one pickle of (ok, result or error) per file."""
    import pickle
    import warnings

    warnings.simplefilter("ignore")
    with open(sys.argv[1], "rb") as fh:
        mine, args, tmp = pickle.load(fh)
    for i, f in mine:
        try:
            value: Tuple[bool, Any] = (True, _read_rank(f, *args))
        except (ValueError, KeyError, OSError, RuntimeError) as exc:  # a user's input: passed on as raised
            value = (False, exc)
        part = os.path.join(tmp, f"out{i}.pkl.part")
        with open(part, "wb") as fh:
            pickle.dump(value, fh)
        os.replace(part, os.path.join(tmp, f"out{i}.pkl"))


def from_traces(
    source: Union[str, "os.PathLike[str]", Sequence[Union[str, "os.PathLike[str]"]]],
    *,
    roof: Any = None,
    memory_model: str = "op",
    processes: Optional[int] = None,
    group_size: Optional[int] = None,
    interconnect_bandwidth: Optional[float] = None,
    progress: Optional[Callable[[int, int, str], None]] = None,
) -> TraceSetReport:
    """Read one trace per rank and report each rank and the job across ranks.

    Args:
        source: a folder of traces, a glob pattern, a file, or a list of these (:func:`trace_files`).
        roof: roofs for every rank (catalog name, roofs file, ``Device``); default: each
            trace's GPU, as :func:`~torch_roofline.offline.from_trace` does.
        memory_model: ``"op"`` or ``"compulsory"``.
        processes: worker processes (default: one per trace, at most the CPU count; 1: read
            in this process).
        group_size: ranks per process group for the collectives' bytes; default: each
            trace's ``distributedInfo.world_size``, else the number of traces.
        interconnect_bandwidth: the interconnect roof in B/s per direction; default: half the
            catalog device's aggregate link figure (none for CPUs).
        progress: called ``(done, total, path)`` after each trace; default: a line on a
            terminal's stderr.

    Raises:
        ValueError: no trace found, a file without a rank, two files of one rank (each names
            the files and the fix); TraceError (a ValueError) for an unreadable file.
    """
    from torch_roofline.records import check_memory_model

    check_memory_model(memory_model, "from_traces")
    files = trace_files(source)
    with StageLine(f"from_traces ({len(files)} traces)") as line:
        def on_terminal(done: int, total: int, path: str) -> None:
            line.stage(f"{done}/{total} read ({os.path.basename(path)})")

        results = _read_all(files, (roof, memory_model, group_size, interconnect_bandwidth, len(files)), processes,
                            progress if progress is not None else on_terminal)
    unranked = [r.path for r in results if r.rank is None]
    if unranked and len(results) > 1:
        raise ValueError(f"from_traces: no rank for {unranked[:3]} (no distributedInfo.rank in the trace, no "
                         "'rank<N>' in the file name); rename them rank0.json, rank1.json, ... or record them with "
                         "torch.distributed initialised")
    if len(results) == 1 and results[0].rank is None:
        results = [_RankResult(results[0].path, 0, results[0].world_size, results[0].report, results[0].comm,
                               results[0].collectives)]
    by_rank: Dict[int, List[str]] = {}
    for r in results:
        by_rank.setdefault(r.rank, []).append(r.path)  # type: ignore[arg-type]
    twice = {k: v for k, v in by_rank.items() if len(v) > 1}
    if twice:
        rank, paths = next(iter(sorted(twice.items())))
        raise ValueError(f"from_traces: {len(paths)} traces of rank {rank} ({paths[:3]}); pass one trace per rank "
                         "(one step window of one run), e.g. a glob matching one run's files")
    results = sorted(results, key=lambda r: r.rank)  # type: ignore[arg-type,return-value]
    sizes = {r.world_size for r in results if r.world_size is not None}
    summary = summarize_ranks([RankRecord.of_report(r.rank, r.report, r.comm, r.collectives)  # type: ignore[arg-type]
                               for r in results], max(sizes) if sizes else None)
    return TraceSetReport(paths=tuple(r.path for r in results), reports=tuple(r.report for r in results),
                          summary=summary)


# ----------------------------------------------------------------------------- text



def _table(job: TraceSetReport, top: int) -> str:
    from tabulate import tabulate

    s = job.summary
    rows = []
    for i, rank in enumerate(s.ranks):
        comm = s.communication[i]
        rows.append([rank, ms_text(s.step_time_s[i]), ms_text(s.busy_s[i]), ms_text(s.wait_s[i]),
                     ms_text(comm.time_s if comm else None),
                     "-" if comm is None or comm.bus_bytes is None else f"{comm.bus_bytes / 1e6:.3f}",
                     "straggler" if rank == s.straggler_rank else ""])
    lines = [f"{len(s.ranks)} rank(s) of {s.world_size}" + (f"; missing: {list(s.missing_ranks)}" if s.missing_ranks
                                                            else ""),
             tabulate(rows, headers=["rank", "step ms", "busy ms", "wait ms", "comm ms", "bus MB", ""], tablefmt="simple"),
             f"straggler: {s.straggler_reason}",
             "straggler spread (max - min) / mean of the step times: "
             + ("-" if s.straggler_spread is None else f"{s.straggler_spread:.1%}")]
    varied = sorted((m for m in s.modules if m.spread and m.name and m.phase != "all"),
                    key=lambda m: -(m.max_s or 0.0) * (m.spread or 0.0))[:top]
    if varied:
        lines.append("\nmodules whose time differs most across ranks (ms per step):")
        lines.append(tabulate([[m.name, m.phase, ms_text(m.mean_s), ms_text(m.min_s), ms_text(m.max_s),
                                f"{m.spread:.1%}",
                                m.slowest_rank] for m in varied],
                              headers=["module", "phase", "mean", "min", "max", "spread", "slowest"],
                              tablefmt="simple"))
    lines += [f"note: {n}" for n in s.notes]
    return "\n".join(lines)
