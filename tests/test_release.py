"""Memory is given back when the user lets go: no reference cycles through traces or reports.

A trace of a real step holds hundreds of thousands of objects. Held in a reference cycle, it
stays in memory until Python's cyclic collector runs, and that collection then walks every
object at once (about a second for a 50 MB trace, paid at some later, unrelated allocation).
These tests run with the collector off, so only reference counting frees anything: an event
of the trace must be gone as soon as the last user-held reference to it is.
"""

import gc
import os
import weakref

import pytest
import torch
from torch import nn

from torch_roofline import RooflineProfiler, from_trace
from torch_roofline.devices import Device
from torch_roofline.timing.attribution import attribute
from torch_roofline.timing.counters import kernel_counters
from torch_roofline.timing.trace import load_trace

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
FLAT = Device(name="release-flat", peak_flops={"fp32": 1e12}, bandwidth=1e11)


class _CollectorOff:
    def __enter__(self):
        gc.collect()
        self.was_on = gc.isenabled()
        gc.disable()
        return self

    def __exit__(self, *exc):
        if self.was_on:
            gc.enable()


def test_attribute_leaves_no_cycle_through_the_trace():
    with _CollectorOff():
        trace = load_trace(os.path.join(DATA, "tinyconv_cpu_train.kineto.json.gz"))
        first = weakref.ref(trace.events[0])
        timing = attribute(trace)
        assert timing.ops  # it did attribute something
        del trace, timing
        assert first() is None


def test_kernel_counters_leave_no_cycle_through_the_trace():
    with _CollectorOff():
        trace = load_trace(os.path.join(DATA, "alexnet_a100_forward_cupti_counters.kineto.json.gz"))
        first = weakref.ref(trace.events[0])
        assert kernel_counters(trace)
        del trace
        assert first() is None


def test_from_trace_frees_its_trace_on_return():
    with _CollectorOff():
        trace = load_trace(os.path.join(DATA, "convrelulinear_cpu_train_shapes.kineto.json.gz"))
        first = weakref.ref(trace.events[0])
        report = from_trace(trace, roof=FLAT)
        assert report.totals.flops
        del trace
        assert first() is None


def test_a_dropped_profiler_frees_its_trace():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    x = torch.randn(4, 8)
    with _CollectorOff():
        prof = RooflineProfiler(model, roof=FLAT)
        with prof:
            model(x).sum().backward()
        report = prof.report()
        first = weakref.ref(prof.trace.events[0])
        assert report.totals.flops
        del prof, report
        assert first() is None


_FIRST_CALL = r"""
import gc, sys, weakref
gc.disable()
from torch_roofline import from_trace
from torch_roofline import _lazy_dynamo
from torch_roofline.devices import Device
from torch_roofline.timing.trace import load_trace
assert "torch._dynamo" not in sys.modules, "imported already: this check would prove nothing"
deferred = sys.argv[2] == "deferred"
if not deferred:
    _lazy_dynamo._DONE = True  # as where torch's wrapper is not the one _lazy_dynamo knows
trace = load_trace(sys.argv[1])
first = weakref.ref(trace.events[0])
from_trace(trace, roof=Device(name="flat", peak_flops={"fp32": 1e12}, bandwidth=1e11))
# deferred: the replays ran torch's Python meta kernels without importing Dynamo; else they imported it
assert ("torch._dynamo" in sys.modules) is not deferred
del trace
print("freed" if first() is None else "held")
"""


@pytest.mark.parametrize("dynamo", ["deferred", "imported"])
def test_torchs_first_lazy_import_does_not_pin_the_callers_trace(dynamo):
    """The first replay in a process imports what torch's Python meta kernels need
    (``torch.fx.experimental.symbolic_shapes``; ``torch._dynamo`` where
    :mod:`torch_roofline._lazy_dynamo` cannot defer it, whose import-time ``torch.fx.wrap``
    keeps its own frame and so every caller's frame alive: ``torch_roofline._gc.import_off_stack``);
    a fresh process is the only place those imports are still to come."""
    import subprocess
    import sys

    path = os.path.join(DATA, "convrelulinear_cpu_train_shapes.kineto.json.gz")
    out = subprocess.run([sys.executable, "-c", _FIRST_CALL, path, dynamo], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "freed"


def test_resuming_the_collector_does_not_leave_the_pass_s_objects_to_the_next_collection():
    # Objects made while the collector was paused would all sit in the youngest generation
    # and be walked by the first collection after it; paused_gc moves them to the oldest.
    from torch_roofline._gc import paused_gc

    gc.collect()
    with paused_gc():
        made = [[i] for i in range(50_000)]
    young = len(gc.get_objects(generation=0)) + len(gc.get_objects(generation=1))
    assert young < 1_000, young
    assert len(made) == 50_000


def test_resuming_the_collector_keeps_the_caller_s_frozen_objects_frozen():
    from torch_roofline._gc import paused_gc

    gc.collect()
    gc.freeze()  # what a forking server does at start-up (copy-on-write friendly)
    try:
        frozen = gc.get_freeze_count()
        with paused_gc():
            made = [[i] for i in range(1_000)]
        # Still frozen (unfreezing would leave 0); frozen objects that died meanwhile leave it.
        assert gc.get_freeze_count() > 0.9 * frozen, (gc.get_freeze_count(), frozen)
        assert len(made) == 1_000
    finally:
        gc.unfreeze()
