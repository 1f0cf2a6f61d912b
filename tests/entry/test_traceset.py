"""A job's traces, one per rank: per-rank reports, the summary across ranks, the straggler,
clock offsets (torch_roofline.traceset).

The 8-rank set is generated from the two real FSDP2 rank traces in tests/data (recorded on
2 CPU processes over gloo, tests/data/record_multirank.py): rank r is a copy of real rank
r % 2 with its clock shifted by a known offset, rank 5 runs 1.5x slower (every timestamp and
duration stretched around its first event), and distributedInfo says rank r of 8. Oracles:
each rank's step time read alone (from_trace of that one file), the known offsets and
slowdown, and hand arithmetic.
"""

from __future__ import annotations

from _paths import REPO_ROOT, TESTS_DIR
import gzip
import json
import os

import pytest

from torch_roofline import from_trace
from torch_roofline.traceset import TraceSetReport, from_traces, spread, trace_files

DATA = os.path.join(TESTS_DIR, "data")
SLOW_RANK, SLOWDOWN = 5, 1.5


def _offset_us(rank):
    return 1700.0 * rank + (350.0 if rank % 3 == 0 else 0.0)  # clocks that differ, not in rank order


def _load(rank):
    with gzip.open(os.path.join(DATA, f"fsdp2_cpu_train_rank{rank}.kineto.json.gz"), "rt") as f:
        return json.load(f)


def _make_rank(rank, world=8):
    doc = _load(rank % 2)
    timed = [e for e in doc["traceEvents"] if isinstance(e.get("ts"), (int, float))]
    t0 = min(e["ts"] for e in timed)
    k = SLOWDOWN if rank == SLOW_RANK else 1.0
    for e in timed:
        e["ts"] = t0 + (e["ts"] - t0) * k + _offset_us(rank)
        if isinstance(e.get("dur"), (int, float)):
            e["dur"] = e["dur"] * k
    doc["distributedInfo"] = dict(doc["distributedInfo"], rank=rank, world_size=world)
    return doc


@pytest.fixture(scope="module")
def job_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("job")
    for rank in range(8):
        with gzip.open(out / f"host{rank % 3}_{1000 + rank}.pt.trace.json.gz", "wt") as f:  # names hold no rank
            json.dump(_make_rank(rank), f)
    return out


@pytest.fixture(scope="module")
def job(job_dir):
    return from_traces(job_dir, roof="i9-10980xe", processes=1)


def test_each_rank_matches_its_trace_read_alone(job, job_dir):
    s = job.summary
    assert s.ranks == tuple(range(8)) and s.world_size == 8 and s.missing_ranks == ()
    for rank, path in zip(s.ranks, job.paths):
        alone = from_trace(path, roof="i9-10980xe")
        assert job.report(rank).totals.time_s == alone.totals.time_s
        assert s.step_time_s[rank] == alone.totals.time_s
        assert job.report(rank).totals.flops == alone.totals.flops
    # the copies of one real rank take the same time; the slowed one 1.5x as long
    assert s.step_time_s[2] == pytest.approx(s.step_time_s[0])
    assert s.step_time_s[SLOW_RANK] == pytest.approx(SLOWDOWN * s.step_time_s[1])
    mean, lo, hi, sp = spread(s.step_time_s)
    assert (s.step_time_mean_s, s.step_time_max_s, s.straggler_spread) == (mean, hi, sp)
    assert hi == s.step_time_s[SLOW_RANK] and sp == pytest.approx((hi - lo) / mean)


def test_the_straggler_is_named(job):
    s = job.summary
    assert s.straggler_rank == SLOW_RANK
    assert s.straggler_reason.startswith(f"rank {SLOW_RANK} is busy longest")
    # busy = step time - collective time no compute overlapped (overlap is 0 on these traces)
    for rank in s.ranks:
        comm = s.communication[rank]
        assert s.busy_s[rank] == pytest.approx(s.step_time_s[rank] - comm.time_s + comm.overlap_s)
    assert job.report(SLOW_RANK).totals.time_s == max(s.step_time_s)
    linear = s.module("2", "forward")  # the middle Linear: slowest on the slowed rank
    assert linear.slowest_rank == SLOW_RANK and linear.spread > 0.3
    assert "straggler" in job.table() and f"rank {SLOW_RANK} is busy longest" in job.table()


def test_clock_offsets_recover_the_shifts(job):
    s = job.summary
    assert s.clock_offsets_s[0] == 0.0
    for rank in s.ranks:
        if rank == SLOW_RANK:
            continue
        # rank r is a shifted copy of real rank r % 2: the offset is the shift (real ranks 0 and 1
        # share one host clock; their collectives complete within ~0.1 ms of each other)
        expected = (_offset_us(rank) - _offset_us(0)) * 1e-6
        assert s.clock_offsets_s[rank] == pytest.approx(expected, abs=3e-4), rank
    assert [n for n in s.notes if n.startswith("clocks aligned on the completion of 9 collective(s)")]


def test_communication_per_rank_in_the_bus_convention(job):
    # Group size 8 now (distributedInfo), with the recorded tensors of the 2-rank run: each
    # all_gather's input is a 2-rank shard, U/2 bytes of a Linear's U unsharded parameter
    # bytes, so S = 8 x U/2 and a rank sends S x 7/8; each all_reduce's input is a whole
    # gradient, S = U, sent 2 x 7/8 x S. Per step: 2 gathers (forward, backward) and 1 reduce
    # per Linear.
    comm = job.summary.communication[0]
    assert comm.by_name == {"all_gather": 6.0, "all_reduce": 3.0}
    unsharded = 4 * (32 * 64 + 64) + 4 * (64 * 64 + 64) + 4 * (64 * 10 + 10)  # 27,688 bytes
    assert comm.bus_bytes == pytest.approx(2 * (8 * unsharded / 2) * 7 / 8 + unsharded * 2 * 7 / 8)


def test_from_trace_of_a_folder_or_glob_is_the_job(job_dir, job):
    by_folder = from_trace(job_dir, roof="i9-10980xe")
    assert isinstance(by_folder, TraceSetReport)
    assert by_folder.summary.step_time_s == job.summary.step_time_s
    by_glob = from_traces(str(job_dir / "host0_*.json.gz"), roof="i9-10980xe", processes=2)
    assert by_glob.summary.ranks == (0, 3, 6) and by_glob.summary.missing_ranks == (1, 2, 4, 5, 7)
    assert by_glob.summary.step_time_s == tuple(job.summary.step_time_s[r] for r in (0, 3, 6))
    with pytest.raises(ValueError, match=r"a folder or glob pattern is a job's traces.*drop model"):
        from_trace(job_dir, model=object())


def test_to_json_and_the_cli(job, job_dir, tmp_path, capsys):
    from torch_roofline.cli import main

    path = tmp_path / "job.json"
    job.to_json(path)
    doc = json.loads(path.read_text())
    assert doc["summary"]["straggler_rank"] == SLOW_RANK and len(doc["ranks"]) == 8
    assert doc["ranks"][3]["report"]["totals"]["time_s"] == job.report(3).totals.time_s
    out = tmp_path / "out"
    tb = tmp_path / "tb"
    assert main(["trace", str(job_dir), "--roof", "i9-10980xe", "--processes", "1", "--out", str(out),
                 "--tensorboard", str(tb)]) == 0
    printed = capsys.readouterr().out
    assert "8 rank(s) of 8" in printed and f"rank {SLOW_RANK} is busy longest" in printed
    assert sorted(os.listdir(out)) == ["ranks.json"] + [f"report-rank{r}.json" for r in range(8)]
    assert json.loads((out / "ranks.json").read_text())["straggler_rank"] == SLOW_RANK
    assert sorted(os.listdir(tb)) == [f"rank{r}" for r in range(8)]


def test_rank_from_the_file_name_and_bad_sets(tmp_path):
    for rank in (0, 1):
        doc = _load(rank)
        del doc["distributedInfo"]
        with open(tmp_path / f"trace_rank-{rank}.json", "w") as f:
            json.dump(doc, f)
    job = from_traces(tmp_path, roof="i9-10980xe", processes=1)
    assert job.summary.ranks == (0, 1) and job.summary.world_size == 2
    assert job.summary.communication[0].bus_bytes is not None  # group size: one rank per file
    with open(tmp_path / "other.json", "w") as f:
        json.dump(_load(0) | {"distributedInfo": None}, f)
    with pytest.raises(ValueError, match=r"no rank for \[.*other.json'\].*rename them rank0.json"):
        from_traces(tmp_path, roof="i9-10980xe", processes=1)
    os.remove(tmp_path / "other.json")
    with open(tmp_path / "again_rank1.json", "w") as f:
        json.dump(_load(1) | {"distributedInfo": None}, f)
    with pytest.raises(ValueError, match=r"2 traces of rank 1 .*one trace per rank"):
        from_traces(tmp_path, roof="i9-10980xe", processes=1)
    literal = tmp_path / "run[1]_rank0.json"  # a file name with glob characters is that file
    literal.write_text(json.dumps(_load(0)))
    assert trace_files(literal) == [str(literal)]
    os.remove(literal)
    (tmp_path / "empty").mkdir()
    for nothing in (tmp_path / "empty", str(tmp_path / "*.nothing")):
        with pytest.raises(ValueError, match=r"no trace file \(.json or .json.gz\) found there"):
            trace_files(nothing)
    with pytest.raises(FileNotFoundError, match=r"missing.json'\): no such file or folder"):
        from_traces([tmp_path / "trace_rank-0.json", tmp_path / "missing.json"])


def test_the_roofline_tab_shows_each_rank_as_a_run(job, tmp_path):
    pytest.importorskip("tensorboard")
    from _tensorboard_helpers import PREFIX, make_client

    runs = job.to_tensorboard(tmp_path / "tb")
    assert [os.path.basename(r) for r in runs] == [f"rank{r}" for r in range(8)]
    client = make_client(str(tmp_path / "tb"))
    listed = json.loads(client.get(f"{PREFIX}/runs").get_data(as_text=True))
    assert listed == {f"rank{r}": {"roofline": [0]} for r in range(8)}
    got = json.loads(client.get(f"{PREFIX}/report?run=rank{SLOW_RANK}&tag=roofline&step=0").get_data(as_text=True))
    assert got["totals"]["time_s"] == job.report(SLOW_RANK).totals.time_s


def test_identical_ranks_have_no_straggler_and_workers_need_no_main_guard(tmp_path):
    # Two copies of one rank's trace: equally busy, so nobody is waited for. Read by 2 worker
    # processes started from a script without an ``if __name__ == "__main__"`` guard (they
    # must not run the script again).
    import subprocess
    import sys

    for rank in (0, 1):
        doc = _load(0)
        doc["distributedInfo"] = dict(doc["distributedInfo"], rank=rank)
        with open(tmp_path / f"r{rank}.json", "w") as f:
            json.dump(doc, f)
    script = tmp_path / "user.py"
    script.write_text("from torch_roofline import from_traces\n"
                      f"job = from_traces({str(tmp_path)!r}, roof='i9-10980xe', processes=2)\n"
                      "print('RESULT', job.summary.straggler_rank, job.summary.straggler_reason)\n")
    root = REPO_ROOT
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=root))
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("RESULT") == 1  # the script ran once
    assert "RESULT None every rank is equally busy" in done.stdout
