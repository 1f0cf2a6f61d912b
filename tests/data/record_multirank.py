"""Record the multi-rank CPU fixtures: one training step per rank, two processes, gloo.

    python tests/data/record_multirank.py ddp   tests/data   # ddp_cpu_train_rank{0,1}.kineto.json.gz
    python tests/data/record_multirank.py fsdp2 tests/data   # fsdp2_cpu_train_rank{0,1}.kineto.json.gz
    python tests/data/record_multirank.py fsdp1 tests/data   # fsdp1_cpu_train_rank{0,1}.kineto.json.gz

Each rank runs a warm-up step, then one step under ``RooflineProfiler(model,
export_trace=...)`` (record_shapes and profile_memory on, as always): forward, cross-entropy,
backward (DDP's gradient all_reduce, or FSDP's parameter all_gather and gradient
reduction), SGD. Random weights and data, seed 0; nothing is downloaded.
"""

from __future__ import annotations

import os
import subprocess
import sys


def _model():
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


def _rank(kind: str, out: str, rank: int, world: int) -> None:
    import warnings

    import torch
    import torch.distributed as dist

    from torch_roofline import RooflineProfiler

    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    model = _model()
    if kind == "ddp":
        wrapped = torch.nn.parallel.DistributedDataParallel(model)
    elif kind == "fsdp1":
        from torch.distributed.fsdp import FullyShardedDataParallel
        from torch.distributed.fsdp.wrap import ModuleWrapPolicy

        wrapped = FullyShardedDataParallel(model, auto_wrap_policy=ModuleWrapPolicy({torch.nn.Linear}),
                                           use_orig_params=True, device_id=torch.device("cpu"))
    else:
        from torch.distributed.fsdp import fully_shard

        for layer in model:
            if isinstance(layer, torch.nn.Linear):
                fully_shard(layer)
        wrapped = fully_shard(model)
    opt = torch.optim.SGD(wrapped.parameters(), lr=0.1)
    torch.manual_seed(1 + rank)
    x, y = torch.randn(16, 32), torch.randint(0, 10, (16,))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(wrapped(x), y).backward()
        opt.step()

    step()
    path = os.path.join(out, f"{kind}_cpu_train_rank{rank}.kineto.json.gz")
    with RooflineProfiler(wrapped, roof="i9-10980xe", export_trace=path):
        step()
    dist.barrier()
    dist.destroy_process_group()


def main(argv) -> int:
    kind, out = argv[1], argv[2]
    if len(argv) > 3:  # a rank
        _rank(kind, out, int(argv[3]), 2)
        return 0
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ.get("MASTER_PORT", "29517"))
    procs = [subprocess.Popen([sys.executable, __file__, kind, out, str(r)], env=env) for r in range(2)]
    return max(p.wait(timeout=300) for p in procs)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
