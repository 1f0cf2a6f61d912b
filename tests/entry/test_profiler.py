"""RooflineProfiler end to end on this CPU (issue 4's acceptance points)."""

import math
import statistics
import time

import warnings

import pytest
import torch
from torch import nn

import torch_roofline
from torch_roofline import RooflineProfiler, schedule
from torch_roofline.devices import Device
from torch_roofline.records import OUTSIDE


def _small_net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
    )


# A user-defined device, so these tests never depend on the machine's measured roofs:
# 100 GFLOP/s for every dtype and unit, 10 GB/s.
FLAT = Device(name="flat-test-device", peak_flops={"fp32": 1e11, "fp64": 1e11}, bandwidth=1e10)


def _no_leftovers(model):
    from torch.utils._python_dispatch import _get_current_dispatch_mode

    assert _get_current_dispatch_mode() is None
    assert not torch.autograd.profiler._is_profiler_enabled
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks
        assert "forward" not in vars(m)  # the ranges' forward wrappers are gone
    import torch.optim.optimizer as optim_mod

    assert not optim_mod._global_optimizer_pre_hooks


@pytest.fixture(scope="module")
def resnet18_report():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    x = torch.randn(8, 3, 224, 224)
    prof = RooflineProfiler(model, roof="measured", schedule=schedule(wait=0, warmup=1, active=2))
    with torch.no_grad():
        model(x)  # warm-up: oneDNN plan selection, allocator growth
        with prof:
            for _ in range(3):
                model(x)
                prof.step()
    return prof.report(), model


def test_resnet18_coverage_and_self_times(resnet18_report):
    report, model = resnet18_report
    _no_leftovers(model)
    t = report.totals
    assert t.coverage >= 0.95  # share of the time measured in ops that is in ops with a formula
    assert 0 < t.op_time_s <= t.time_s  # the rest is Python, hooks and the loop: outside every op
    self_sum = sum(m.self_time_s for m in report.modules if m.phase == "forward" and m.self_time_s is not None)
    assert self_sum == pytest.approx(t.time_s, rel=0.10)


def test_resnet18_conv_efficiency_in_range_or_flagged(resnet18_report):
    report, model = resnet18_report
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 20
    for name in convs:
        row = report.module(name, "forward")
        assert row.efficiency is not None and row.efficiency > 0
        assert row.efficiency <= 1.0 or row.suspect, name


def test_resnet18_flops_match_independent_count(resnet18_report):
    # FlopCounterMode is the oracle for the matrix work (convs + the fc).
    from torch.utils.flop_counter import FlopCounterMode

    report, model = resnet18_report
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model(torch.randn(8, 3, 224, 224))
    matrix = sum(o.flops for o in report.ops if o.op in ("aten.convolution", "aten.addmm"))
    assert matrix == fc.get_total_flops()


def _profile_gemm(model, *inputs, roof):
    """One op per step, 3 active steps; the report's single matrix op row."""
    with torch.no_grad():
        model(*inputs)
        prof = RooflineProfiler(model, roof=roof, schedule=schedule(wait=0, warmup=1, active=3))
        with prof:
            for _ in range(4):
                model(*inputs)
                prof.step()
    report = prof.report()
    (op,) = [o for o in report.ops if o.flops]
    return op, report


def _plain_seconds(model, *inputs, calls=3):
    """Median wall time of ``calls`` unprofiled calls (seconds)."""
    times = []
    with torch.no_grad():
        for _ in range(calls):
            t0 = time.perf_counter()
            model(*inputs)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _profiled_beside_plain(model, *inputs, roof):
    """The profiled GEMM row and the same call's plain time, taken side by side. This machine
    is shared (its two vCPUs can be one core's two hyperthreads): a neighbour's load can halve
    a GEMM's rate for seconds, so the pair is measured once more if the two disagree twofold."""
    for attempt in range(2):
        op, report = _profile_gemm(model, *inputs, roof=roof)
        plain = _plain_seconds(model, *inputs)
        if 0.5 <= plain / op.time_s <= 2.0:
            break
    return op, report, plain


def test_large_gemm_against_measured_roof():
    # Issue 4: a 2048^3 fp32 GEMM is placed on this CPU's measured roof: exact FLOPs, roofline
    # time F / pi, its measured time (the same call timed plain, side by side, agrees) and the
    # efficiency roofline time / measured time, flagged when a kernel beats its roof. How close to
    # the roof the GEMM runs is this machine's and its BLAS library's figure, not this code's: it
    # is measured in benchmarks/predict_vs_measured.py (a timed bound here failed under load: a
    # roof is the fastest sample of a quiet moment, a step runs at the pace of the moment it gets).
    # The GEMM runs through oneDNN (torch.utils.mkldnn's Linear), the library that reaches the
    # roof on this CPU; `a @ b` (MKL's sgemm) too, far below it, placed just as honestly.
    from torch.utils import mkldnn as mkldnn_utils

    from torch_roofline import devices

    n = 2048
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit deprecation inside torch.utils.mkldnn
        gemm = mkldnn_utils.to_mkldnn(nn.Linear(n, n, bias=False))
    x = torch.randn(n, n).to_mkldnn()
    dev = devices.measure(device="cpu", dtypes=("fp32",), progress=False)  # cached per machine
    roof = dev.roof("fp32").peak_flops_per_s

    class Gemm(nn.Module):
        def forward(self, a, b):
            return a @ b

    for model, inputs, name in ((gemm, (x,), "aten.mkldnn_linear"),
                                (Gemm(), (torch.randn(n, n), torch.randn(n, n)), "aten.mm")):
        op, report, plain = _profiled_beside_plain(model, *inputs, roof=dev)
        assert op.op == name
        assert op.flops == 2 * n ** 3  # 2 * 2048^3 = 17179869184
        assert op.roofline_time_s == pytest.approx(op.flops / roof)  # compute-bound: F / pi
        assert op.bound == "compute"
        assert 0.5 <= plain / op.time_s <= 2.0, (plain, op.time_s)  # the profiler timed the call
        assert op.efficiency == pytest.approx(op.roofline_time_s / op.time_s)
        if op.roofline_time_s > op.time_s:  # faster than the roof: flagged, with the remedy
            assert op.suspect and any("measure it again" in note for note in report.notes)
        else:
            assert not op.suspect and 0 < op.efficiency <= 1.0
        # mkldnn_linear has no meta kernel: the call is counted from its recorded input shapes
        # and the output the profiler saw it allocate (2048*2048*4 = 16777216 bytes).
        assert op.bytes_written == n * n * 4
        assert not any("uncounted" in note or "not counted" in note for note in report.notes)


def test_one_shot_and_stepped_training_give_same_flops():
    model = _small_net()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(4, 3, 16, 16)

    def train_step():
        opt.zero_grad()
        model(x).sum().backward()
        opt.step()

    with RooflineProfiler(model, roof=FLAT) as one:
        train_step()
    stepped = RooflineProfiler(model, roof=FLAT, schedule=schedule(wait=1, warmup=1, active=2))
    with stepped:
        for _ in range(4):
            train_step()
            stepped.step()
    r1, r2 = one.report(), stepped.report()
    assert r2.steps == 2
    f1 = {(m.name, m.phase): m.flops for m in r1.modules}
    f2 = {(m.name, m.phase): m.flops for m in r2.modules}
    assert f1 == f2
    # the counted step is the training step: forward + backward + optimizer
    phases = {m.phase for m in r1.modules if m.flops}
    assert {"forward", "backward", "optimizer"} <= phases
    # and agrees with count() on the same step: per module (the loss `sum`, outside the model,
    # is count()'s root's own work and our "(outside modules)" row, inside the root's total)
    direct = torch_roofline.count(_small_net(), x, backward=True,
                                  optimizer=torch.optim.SGD(_small_net().parameters(), lr=0.01))
    fwd = {m.name: m.flops for m in r1.modules if m.phase == "forward" and m.name != OUTSIDE}
    assert fwd == {k: v.flops for k, v in direct.by_module("forward").items()}
    _no_leftovers(model)


def test_forward_only_matches_count():
    model = _small_net().eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad(), RooflineProfiler(model, roof=FLAT) as prof:
        model(x)
    report = prof.report()
    expected = torch_roofline.count(model, x)
    assert report.totals.flops == expected.total.flops
    assert report.totals.macs == expected.total.macs


def test_counting_happens_outside_the_timed_block():
    # Counting must not distort timing: no dispatch mode is active while the step runs, and the
    # count is made from the recorded calls: nothing of the user's code runs again.
    from torch.utils._python_dispatch import _get_current_dispatch_mode

    model = _small_net()
    seen = []
    model[0].register_forward_hook(lambda *a: seen.append(_get_current_dispatch_mode()))
    with RooflineProfiler(model, roof=FLAT) as prof:
        model(torch.randn(2, 3, 16, 16))
    assert seen == [None]
    assert prof.report().totals.flops > 0
    assert seen == [None]  # the hook did not run again


def test_replay_leaves_model_and_optimizer_untouched():
    model = _small_net()
    opt = torch.optim.AdamW(model.parameters())
    x = torch.randn(2, 3, 16, 16)
    with RooflineProfiler(model, roof=FLAT) as prof:
        model(x).sum().backward()
        opt.step()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    grads = [p.grad.clone() for p in model.parameters()]
    state = {k: v.clone() for k, v in opt.state[model[0].weight].items()}
    prof.report()
    for k, v in model.state_dict().items():
        assert torch.equal(v, weights[k]), k
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads))
    assert all(torch.equal(opt.state[model[0].weight][k], v) for k, v in state.items())


def test_exception_inside_block_propagates_and_cleans_up():
    model = _small_net()

    class Boom(RuntimeError):
        pass

    with pytest.raises(Boom, match="inside the block"):
        with RooflineProfiler(model, roof=FLAT):
            model(torch.randn(1, 3, 8, 8))
            raise Boom("inside the block")
    _no_leftovers(model)


def test_nested_profilers_refused():
    model = _small_net()
    with RooflineProfiler(model, roof=FLAT):
        with pytest.raises(RuntimeError, match="cannot nest"):
            with RooflineProfiler(model, roof=FLAT):
                pass
    _no_leftovers(model)


def test_block_without_any_op_is_a_clear_error():
    model = _small_net()
    with RooflineProfiler(model, roof=FLAT) as prof:
        pass
    with pytest.raises(RuntimeError, match="no op ran inside the profiled block.*inside `with prof:`"):
        prof.report()


def test_block_without_model_call_counts_what_ran_and_says_so():
    model = _small_net()
    with RooflineProfiler(model, roof=FLAT) as prof:
        torch.randn(3) + 1
    report = prof.report()
    assert report.totals.flops == 3  # the add: 1 FLOP per element of (3,)
    assert {o.name for o in report.ops} == {OUTSIDE}
    assert any("never called" in n for n in report.notes)


def test_json_has_no_nan_and_round_trips(tmp_path):
    import json

    model = _small_net()
    with RooflineProfiler(model, roof=FLAT) as prof:
        model(torch.randn(2, 3, 16, 16))
    report = prof.report()
    path = tmp_path / "r.json"
    report.to_json(path)
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    data = json.loads(text)
    assert data["schema"] == "torch_roofline.report/1"
    assert data["device"]["id"] == FLAT.id
    again = torch_roofline.RooflineReport.from_json(path)
    assert again.totals.flops == report.totals.flops


def test_unsupported_roof_spec_is_a_clear_error():
    model = _small_net()
    with RooflineProfiler(model, roof="no-such-gpu-xyz") as prof:
        model(torch.randn(1, 3, 8, 8))
    with pytest.raises(KeyError, match="no-such-gpu-xyz"):
        prof.report()


def test_training_step_joins_every_timed_op():
    # A residual block accumulates two gradients into one tensor in backward (in place in the
    # real run, out of place in the fake replay) and SGD stores fresh gradients (grads are None
    # after zero_grad): every op the profiler timed must still find its counted twin.
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(8, 8, 3, padding=1)

        def forward(self, x):
            return x + torch.relu(self.conv(x))

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), Residual(), nn.Flatten(), nn.Linear(8 * 8 * 8, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(2, 3, 8, 8)

    def step():
        opt.zero_grad()
        model(x).sum().backward()
        opt.step()

    step()
    with RooflineProfiler(model, roof=FLAT) as prof:
        step()
    report = prof.report()
    assert report.uncounted == ()
    assert report.totals.coverage == pytest.approx(1.0)


def test_jit_modules_clear_error_or_counted_from_what_ran():
    lin = nn.Sequential(nn.Linear(8, 4))
    x = torch.randn(2, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit deprecation
        scripted = torch.jit.script(lin)
        traced = torch.jit.trace(lin, x)
    with pytest.raises(TypeError, match="script'ed module has no Python forward.*eager module.*model=None"):
        RooflineProfiler(scripted)
    # The TorchScript interpreter's ops are recorded like any others: counted as they ran.
    prof = RooflineProfiler(traced, roof=FLAT)
    with prof:
        traced(x)
    report = prof.report()
    assert sum(o.flops for o in report.ops if o.flops) == 2 * 2 * 8 * 4  # addmm: 2 * batch * in * out = 128
    # ... a training step too (it used to be refused: it could not be replayed)
    prof = RooflineProfiler(traced, roof=FLAT)
    with prof:
        traced(x).sum().backward()
    report = prof.report()
    # forward addmm 128 + backward mm for the weight grad 2*4*2*8 = 128 (x needs no grad) + sums
    assert sum(o.flops for o in report.ops if o.op in ("aten.addmm", "aten.mm")) == 128 + 128
    with pytest.raises(TypeError, match="script'ed module has no Python forward"):
        RooflineProfiler(scripted)
    prof = RooflineProfiler(None, roof=FLAT)  # a scripted module profiled without attribution
    with prof:
        scripted(x)
    assert sum(o.flops for o in prof.report().ops if o.flops) >= 128


def test_model_and_inputs_on_different_devices_is_a_clear_error():
    model = nn.Linear(4, 2).to("meta")
    with pytest.raises(ValueError, match=r"RooflineProfiler: the model's parameters are on meta but input "
                                         r"tensor #0 is on cpu.*torch_roofline.predict"):
        with RooflineProfiler(model, roof=FLAT):
            model(torch.randn(3, 4))
    _no_leftovers(model)
