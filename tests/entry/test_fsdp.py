"""FSDP training steps (FSDP2 ``fully_shard``, FSDP1 ``FullyShardedDataParallel``): counted from
what ran, collectives with their bytes.

The model: ``Sequential(Linear(32, 64), ReLU, Linear(64, 64), ReLU, Linear(64, 10))``, batch 16,
cross-entropy, SGD, 2 CPU processes over gloo, each Linear sharded on its own (FSDP1: wrapped
by ``ModuleWrapPolicy({Linear})``, module names then hold ``_fsdp_wrapped_module`` segments)
(``tests/data/record_multirank.py`` records the fixtures; the live test runs it again).

Oracles: the matrix FLOPs by hand (2 per multiply-add) and ``FlopCounterMode`` around the same
step; the collective bytes by hand from the parameter counts and NCCL's bus-bandwidth
convention (nccl-tests ``doc/PERFORMANCE.md``).
"""

from __future__ import annotations

from _paths import REPO_ROOT, TESTS_DIR
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from torch_roofline import from_trace
from torch_roofline.timing.collectives import collectives
from torch_roofline.timing.trace import load_trace

DATA = os.path.join(TESTS_DIR, "data")
ROOT = REPO_ROOT
LINEARS = {"0": (32, 64), "2": (64, 64), "4": (64, 10)}  # module name -> (in, out)
BATCH = 16


def _hand_matrix_flops():
    """(module, phase) -> FLOPs of addmm (forward) and mm (backward) of one step, by hand."""
    out = {}
    for name, (i, o) in LINEARS.items():
        out[(name, "forward")] = 2 * BATCH * i * o  # addmm: out = x W^T + b
        # backward: grad_weight = grad^T x (2 B i o) and, except for the first layer (its input
        # needs no gradient), grad_input = grad W (2 B o i)
        out[(name, "backward")] = 2 * BATCH * i * o * (1 if name == "0" else 2)
    return out


def _plain_name(name):
    """The Sequential's own name of a module under DDP (``module.2``) or FSDP1
    (``_fsdp_wrapped_module.2._fsdp_wrapped_module``): ``2``."""
    return ".".join(p for p in name.split(".") if p not in ("module", "_fsdp_wrapped_module"))


def _matrix_flops(report):
    got = {}
    for row in report.ops:
        if row.op in ("aten.mm", "aten.addmm") and row.flops:
            key = (_plain_name(row.name), row.phase)
            got[key] = got.get(key, 0) + row.flops
    return got


def _flop_counter_mode_matrix_flops():
    """FlopCounterMode around the same (unsharded) step: the same matrix work per rank."""
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64),
                                torch.nn.ReLU(), torch.nn.Linear(64, 10))
    x, y = torch.randn(BATCH, 32), torch.randint(0, 10, (BATCH,))
    with FlopCounterMode(display=False) as fcm:
        torch.nn.functional.cross_entropy(model(x), y).backward()
    counts = fcm.get_flop_counts()["Global"]
    return sum(v for k, v in counts.items() if k.__name__.split(".")[0] in ("mm", "addmm"))


@pytest.mark.parametrize("kind", ["fsdp2", "fsdp1"])
@pytest.mark.parametrize("rank", [0, 1])
def test_fsdp_trace_counts_the_unsharded_matrix_work_of_each_rank(kind, rank):
    report = from_trace(os.path.join(DATA, f"{kind}_cpu_train_rank{rank}.kineto.json.gz"), roof="i9-10980xe")
    assert report.steps == 1 and report.notes[0].startswith("steps: one step")  # FSDP's ranges are not steps
    hand = _hand_matrix_flops()
    assert _matrix_flops(report) == hand  # each backward mm on the Linear whose forward it differentiates
    assert sum(hand.values()) == _flop_counter_mode_matrix_flops()
    ddp = from_trace(os.path.join(DATA, f"ddp_cpu_train_rank{rank}.kineto.json.gz"), roof="i9-10980xe")
    assert _matrix_flops(ddp) == hand  # the same step under DDP: the same work


@pytest.mark.parametrize("kind", ["fsdp2", "fsdp1"])
@pytest.mark.parametrize("rank", [0, 1])
def test_fsdp_collectives_move_the_sharded_parameter_bytes(kind, rank):
    calls = collectives(load_trace(os.path.join(DATA, f"{kind}_cpu_train_rank{rank}.kineto.json.gz")))
    shard = {name: 4 * (i * o + o) // 2 for name, (i, o) in LINEARS.items()}  # float32 params / 2 ranks
    gathers = sorted((c.phase, c.bus_bytes) for c in calls if c.name == "all_gather")
    # forward: each Linear's parameters gathered once; S = the unsharded bytes, bus bytes =
    # S x (n - 1)/n = the shard. Backward: re-gathered before each Linear's backward (the last
    # one is prefetched, or kept: three gathers in all on this model, in FSDP1 and FSDP2 alike).
    assert sorted(b for p, b in gathers if p == "forward") == sorted(shard.values())
    assert sorted(b for p, b in gathers if p == "backward") == sorted(shard.values())
    # Gradients: gloo has no reduce_scatter, so FSDP all-reduces each gradient and keeps its
    # shard: S = the unsharded gradient bytes, bus bytes 2 (n - 1)/n x S = S for n = 2.
    reduces = [c for c in calls if c.name == "all_reduce"]
    assert sorted(c.bus_bytes for c in reduces) == sorted(2 * v for v in shard.values())
    assert {c.phase for c in reduces} == {"backward"}  # FSDP2's last one from its post-backward callback


LIVE = textwrap.dedent(
    '''
    import json, os, sys, warnings
    import torch
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard
    from torch.utils.flop_counter import FlopCounterMode
    from torch_roofline import RooflineProfiler

    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    rank = int(sys.argv[2])
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64),
                                torch.nn.ReLU(), torch.nn.Linear(64, 10))
    for layer in model:
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer)
    fully_shard(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(16, 32), torch.randint(0, 10, (16,))

    def step():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    step()
    with FlopCounterMode(display=False) as fcm:
        step()
    fcm_mm = sum(v for k, v in fcm.get_flop_counts()["Global"].items() if k.__name__.split(".")[0] in ("mm", "addmm"))
    prof = RooflineProfiler(model, roof="i9-10980xe")
    with prof:
        step()
    report = prof.report()
    ours = {}
    for row in report.ops:
        if row.op in ("aten.mm", "aten.addmm") and row.flops:
            ours[row.name + "/" + row.phase] = ours.get(row.name + "/" + row.phase, 0) + row.flops
    with open(os.path.join(sys.argv[1], f"rank{rank}.json"), "w") as f:
        json.dump({"fcm": fcm_mm, "ours": ours, "total": report.totals.flops}, f)
    dist.barrier()
    dist.destroy_process_group()
    '''
)


def test_fsdp2_live_two_processes_match_flop_counter_mode_on_each_rank(tmp_path):
    script = tmp_path / "fsdp_step.py"
    script.write_text(LIVE)
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(29600 + os.getpid() % 300), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path), str(r)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(2)]
    try:
        outs = [p.communicate(timeout=180) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    hand = {f"{name}/{phase}": v for (name, phase), v in _hand_matrix_flops().items()}
    for rank in (0, 1):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert got["ours"] == hand, got
        assert sum(got["ours"].values()) == got["fcm"]  # FlopCounterMode around the same real step
