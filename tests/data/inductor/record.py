"""Write the Inductor fixtures of tests/timing/test_compile.py: the generated code of real compiles.

For each model, every compiled graph's wrapper source (``CompiledFxGraph.source_code``), its
post-grad graph (``inductor_post_grad_graph_str``), its kernel provenance
(``inductor_provenance_mapping_str``) and its kernels' stack traces
(``inductor_provenance_stack_traces_str``), gzipped, as
``<name>_<k>.{wrapper,graph,provenance,stacks}.txt.gz``.
Compiled on the CPU with kernel profiling and provenance tracking on, torch 2.14.1::

    python tests/data/inductor/record.py tests/data/inductor

Models (random weights): the test's Linear(64, 256)-GELU-Linear(256, 64)-LayerNorm(64) block
with a residual, batch 8, one training step (graph 0 forward, 1 backward); torchvision's
resnet18 (10 classes) in eval mode under no_grad, batch 1, 64x64 (graph 0).
"""

import gc
import gzip
import os
import sys

import torch
import torch._inductor.config as inductor_config
from torch import nn


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2, self.ln = nn.Linear(64, 256), nn.GELU(), nn.Linear(256, 64), nn.LayerNorm(64)

    def forward(self, x):
        return self.ln(x + self.fc2(self.act(self.fc1(x))))


def _graphs():
    from torch._inductor.output_code import CompiledFxGraph

    return [o for o in gc.get_objects() if type(o) is CompiledFxGraph]


def _save(out: str, name: str, before) -> None:
    new = [g for g in _graphs() if all(g is not b for b in before)]
    new.sort(key=lambda g: "backward" in g.source_code)  # forward first
    for k, g in enumerate(new):
        for part, text in (("wrapper", g.source_code), ("graph", g.inductor_post_grad_graph_str),
                           ("provenance", g.inductor_provenance_mapping_str or ""),
                           ("stacks", g.inductor_provenance_stack_traces_str or "")):
            with gzip.open(os.path.join(out, f"{name}_{k}.{part}.txt.gz"), "wt") as f:
                f.write(text)


def main(out: str) -> None:
    import torchvision

    torch.manual_seed(0)
    with inductor_config.patch({"cpp.enable_kernel_profile": True, "trace.provenance_tracking_level": 1,
                                "force_disable_caches": True}):
        before = _graphs()
        block = torch.compile(Block())
        block(torch.randn(8, 64)).sum().backward()
        _save(out, "block", before)
        before = _graphs()
        resnet = torch.compile(torchvision.models.resnet18(num_classes=10).eval())
        with torch.no_grad():
            resnet(torch.randn(1, 3, 64, 64))
        _save(out, "resnet18_eval", before + [])


if __name__ == "__main__":
    main(sys.argv[1])
