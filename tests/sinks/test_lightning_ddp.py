"""The callback under DDP: two CPU processes (gloo), one fit, only rank 0 writes.

The fit runs in a subprocess (Lightning's DDP launcher re-runs the script for rank 1),
with a timeout so a hang in a collective fails the test instead of the suite.
"""

from __future__ import annotations

from _paths import REPO_ROOT
import json
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("lightning.pytorch")

ROOT = REPO_ROOT

SCRIPT = textwrap.dedent(
    '''
    import json, os, sys, warnings
    import torch
    from torch import nn
    import lightning.pytorch as L
    from torch_roofline.lightning import Roofline

    warnings.filterwarnings("ignore")

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                     nn.Flatten(), nn.Linear(8, 4))

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return nn.functional.cross_entropy(self(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    if __name__ == "__main__":
        out = sys.argv[1]
        torch.manual_seed(0)
        ds = torch.utils.data.TensorDataset(torch.randn(64, 3, 8, 8), torch.randint(0, 4, (64,)))
        callback = Roofline(roof="i9-10980xe", plot=False)
        trainer = L.Trainer(
            max_steps=6, accelerator="cpu", devices=2, strategy="ddp", default_root_dir=out, callbacks=[callback],
            logger=L.loggers.CSVLogger(out, name="ddp", version=0), enable_progress_bar=False,
            enable_model_summary=False, enable_checkpointing=False,
        )
        trainer.fit(Module(), torch.utils.data.DataLoader(ds, batch_size=8))
        with open(os.path.join(out, f"files-rank{trainer.global_rank}.json"), "w") as f:
            json.dump({"files": callback.files, "reports": len(callback.reports)}, f)
    '''
)


def test_ddp_two_cpu_processes_rank_zero_writes_once(tmp_path):
    script = tmp_path / "fit_ddp.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "MASTER_ADDR": "127.0.0.1", "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    env.pop("MASTER_PORT", None)
    done = subprocess.run([sys.executable, str(script), str(tmp_path)], cwd=str(tmp_path), env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    rank0 = json.loads((tmp_path / "files-rank0.json").read_text())
    rank1 = json.loads((tmp_path / "files-rank1.json").read_text())
    assert rank0["reports"] == 1 and rank1["reports"] == 1  # every rank measures
    assert rank1["files"] == []  # ... only rank 0 writes
    step_dir = os.path.join(str(tmp_path), "ddp", "version_0", "roofline", "step5")
    assert sorted(os.path.relpath(p, step_dir) for p in rank0["files"]) == [
        "ranks.json", "report-rank0.json", "report-rank1.json", "report.json"]
    ranks = json.loads(open(os.path.join(step_dir, "ranks.json")).read())
    assert ranks["world_size"] == 2 and ranks["ranks"] == [0, 1] and ranks["missing_ranks"] == []
    assert len(ranks["step_time_s"]) == 2 and all(t > 0 for t in ranks["step_time_s"])
    assert ranks["straggler_rank"] in (0, 1) and ranks["straggler_reason"].startswith(f"rank {ranks['straggler_rank']}")
    assert len(ranks["busy_s"]) == 2 and len(ranks["wait_s"]) == 2 and ranks["clock_offsets_s"][0] == 0.0
    conv = next(m for m in ranks["modules"] if m["name"] == "net.0" and m["phase"] == "forward")
    assert conv["time_s_min"] <= conv["time_s_mean"] <= conv["time_s_max"]
    with open(os.path.join(str(tmp_path), "ddp", "version_0", "metrics.csv")) as f:
        header, *rows = f.read().splitlines()
    assert "roofline/ranks/straggler_spread_pct" in header.split(",")
    assert sum(1 for r in rows if r.split(",")[header.split(",").index("roofline/efficiency_pct")]) == 1
    # Communication: DDP all-reduces every gradient once per step. Parameters: conv 8*3*3*3 + 8 = 224,
    # linear 4*8 + 4 = 36 -> 260 float32 = 1040 bytes; ring all_reduce on n = 2 ranks sends
    # 2*(n-1)/n = 1 x the message per rank (NCCL's bus-bandwidth convention) -> 1040 bytes per step.
    param_bytes = 4 * ((8 * 3 * 3 * 3 + 8) + (4 * 8 + 4))
    comms = ranks["communication"]
    assert len(comms) == 2
    for comm in comms:
        assert comm["by_name"]["all_reduce"] == 1.0, comm
        assert comm["by_phase"]["backward"]["bus_bytes"] == param_bytes, comm  # DDP's gradient bucket
        # Lightning also broadcasts a small flag each step (8 bytes, outside the backward): counted too.
        assert comm["bus_bytes"] >= param_bytes and comm["time_s"] > 0
        assert comm["interconnect_bandwidth"] is None and "no interconnect roof" in comm["note"]
    column = header.split(",").index("roofline/comm/bus_bytes")
    assert [float(r.split(",")[column]) for r in rows if r.split(",")[column]] == [comms[0]["bus_bytes"]]


def test_ranks_json_is_the_trace_set_summary(tmp_path):
    # The summary the callback writes under DDP is the one from_traces gives: same builder.
    from torch_roofline.lightning import rank_summary
    from torch_roofline.traceset import RankRecord, summarize_ranks

    def rep(step, conv):
        return {"steps": 2, "totals": {"time_s": step}, "modules": [{"name": "net.0", "phase": "forward",
                                                                       "time_s": conv}]}

    comm = {"steps": 2, "calls": 1.0, "time_s": 0.001, "overlap_s": 0.0, "by_phase": {}, "by_name": {}, "note": ""}
    got = rank_summary([rep(0.010, 0.004), rep(0.012, 0.006)], [comm, comm],
                       [[("all_reduce", 5.0, 0.002)], [("all_reduce", 5.5, 0.001)]])
    want = summarize_ranks([RankRecord.of_dict(0, rep(0.010, 0.004), comm, [("all_reduce", 5.0, 0.002)]),
                            RankRecord.of_dict(1, rep(0.012, 0.006), comm, [("all_reduce", 5.5, 0.001)])])
    assert got == want.to_dict()
    # by hand: busy = step - (comm time - overlap) = 9 and 11 ms -> rank 1 the straggler; its
    # clock runs 0.5 s ahead; each rank's wait is its collective time over the shortest, per step
    assert got["straggler_rank"] == 1 and got["busy_s"] == pytest.approx([0.009, 0.011])
    assert got["clock_offsets_s"] == [0.0, 0.5] and got["wait_s"] == pytest.approx([0.0005, 0.0])
