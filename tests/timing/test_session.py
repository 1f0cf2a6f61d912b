"""The live path: ProfileSession -> exported trace -> load_trace -> attribute, quietly."""

from _paths import REPO_ROOT
import collections
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from torch_roofline.timing.attribution import attribute
from torch_roofline.timing.quiet import is_kineto_noise, quiet_native_stderr
from torch_roofline.records import OUTSIDE
from torch_roofline.timing.ranges import ModuleRanges, phase_range
from torch_roofline.timing.session import ProfileSession
from torch_roofline.timing.trace import load_trace

ROOT = REPO_ROOT


class TinyConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(4 * 8 * 8, 3)

    def forward(self, x):
        return self.fc(self.relu(self.conv1(x)).flatten(1))


def _train_step(model, opt, x):
    loss = model(x).square().mean()
    with phase_range("backward"):
        loss.backward()
    opt.step()
    opt.zero_grad()


@pytest.fixture()
def setup():
    torch.manual_seed(0)
    model = TinyConv()
    return model, torch.optim.SGD(model.parameters(), lr=0.1), torch.randn(2, 3, 8, 8)


# ----------------------------------------------------------------------------- quiet


def test_noise_filter():
    assert is_kineto_noise("ERROR:2026-11-22 02:37:25 5301:5301 DeviceProperties.cpp:56] "
                           "gpuGetDeviceCount failed with code 35\n")
    assert is_kineto_noise("USDT:2026-11-22 02:37:25 5301:5301 "
                           "SyncActivityProfilerHandler.cpp:39] profiler_start")
    assert not is_kineto_noise("ERROR:2026-11-22 02:37:25 1:1 Foo.cpp:1] disk full")
    assert not is_kineto_noise("Traceback (most recent call last):")


def test_quiet_keeps_real_errors(capfd):
    with quiet_native_stderr():
        os.write(2, b"ERROR:2026-11-22 02:37:25 1:1 DeviceProperties.cpp:56] "
                    b"gpuGetDeviceCount failed with code 35\n")
        os.write(2, b"a real problem\n")
    err = capfd.readouterr().err
    assert "a real problem" in err and "gpuGetDeviceCount" not in err


def test_session_prints_no_kineto_noise(capfd, setup):
    model, opt, x = setup
    # Control: the bare profiler does print Kineto lines to fd 2 on this machine.
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]):
        model(x)
    control = capfd.readouterr().err
    with ProfileSession() as session:
        model(x)
    assert session.trace.of_kind("cpu_op")
    err = capfd.readouterr().err
    assert "profiler_start" not in err and "gpuGetDeviceCount" not in err
    assert not any(is_kineto_noise(line) for line in err.splitlines())
    if torch.cuda.is_available():  # GPU machines may print nothing at all
        return
    assert "profiler_start" in control


def test_stepped_session_prints_no_kineto_noise(capfd, setup):
    # step() silences fd 2 only around the schedule's transitions (start, stop, export), not
    # on the steady steps in between: every transition of two cycles must still be quiet.
    model, opt, x = setup
    capfd.readouterr()
    sched = torch.profiler.schedule(wait=1, warmup=1, active=2, repeat=2)
    with ProfileSession(schedule=sched, profile_memory=False) as session:  # no session-wide filter
        for _ in range(9):
            model(x)
            session.step()
    assert session.trace.of_kind("cpu_op")
    err = capfd.readouterr().err
    assert not any(is_kineto_noise(line) for line in err.splitlines()), err


def test_fresh_process_shows_no_device_count_error():
    # gpuGetDeviceCount is printed once per process, at the first export: use a new one.
    # The block frees tensors allocated before the session: c10's allocator note about them
    # ("Memory block of unknown size ...") must not reach the user either.
    code = ("import torch\nfrom torch_roofline.timing.session import ProfileSession\n"
            "xs = [torch.randn(1000) for _ in range(3)]\n"
            "with ProfileSession() as s:\n    torch.ones(4) + 1\n    del xs[:]\nassert s.trace.events\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": ROOT})
    assert proc.returncode == 0, proc.stderr
    assert "gpuGetDeviceCount" not in proc.stderr and "profiler_st" not in proc.stderr
    assert "Memory block of unknown size" not in proc.stderr


# ----------------------------------------------------------------------------- live CPU step


def test_live_training_step_attribution(setup):
    model, opt, x = setup
    _train_step(model, opt, x)  # warm-up
    with ModuleRanges(model), ProfileSession(profile_memory=True) as session:
        _train_step(model, opt, x)
    timing = attribute(session.trace)
    modules = collections.defaultdict(set)
    for op in timing.ops:
        modules[(op.op, op.phase)].add(op.module)
    # rows are the calls under composites: conv2d -> convolution, linear -> addmm, square -> pow
    assert modules[("aten.convolution", "forward")] == {"conv1"}
    assert modules[("aten.addmm", "forward")] == {"fc"}
    assert modules[("aten.pow", "forward")] == {OUTSIDE}  # the loss: outside every range
    assert modules[("aten.convolution_backward", "backward")] == {"conv1"}
    assert modules[("aten.threshold_backward", "backward")] == {"relu"}
    assert modules[("aten.add_", "optimizer")] == {""}
    # phase_range("backward") puts the gradient seed in the backward phase.
    assert modules[("aten.ones_like", "backward")] == {""}
    total_self = sum(m.self_time_s for m in timing.modules)
    assert abs(total_self - timing.step_time_s) <= 0.03 * timing.step_time_s
    assert timing.module("conv1", "backward").calls == 1
    assert timing.peak_memory_bytes is not None and timing.peak_memory_bytes > 0


def test_round_trip_through_a_saved_file(tmp_path, setup):
    model, opt, x = setup
    path = tmp_path / "step.json.gz"
    with ModuleRanges(model), ProfileSession(export_path=str(path)) as session:
        _train_step(model, opt, x)
    assert path.exists()
    assert attribute(load_trace(path)) == attribute(session.trace)


def test_schedule_steps(setup):
    model, opt, x = setup
    sched = torch.profiler.schedule(wait=1, warmup=1, active=2, repeat=1)
    with ModuleRanges(model), ProfileSession(schedule=sched) as session:
        for _ in range(5):
            _train_step(model, opt, x)
            session.step()
    assert len(session.traces) == 1
    timing = attribute(session.trace)
    assert timing.steps == 2
    assert timing.module("conv1").calls == 2


# ----------------------------------------------------------------------------- errors, cleanup


def test_hardware_counters_need_cuda():
    if torch.cuda.is_available():
        pytest.skip("CUDA present: counters are allowed")
    with pytest.raises(ValueError, match="hardware counters are read by CUPTI"):
        ProfileSession(hardware_counters=True)


def test_exception_in_block_stops_the_profiler(setup):
    model, opt, x = setup
    with pytest.raises(ZeroDivisionError):
        with ModuleRanges(model), ProfileSession() as session:
            model(x)
            1 / 0
    assert not torch.autograd.profiler._is_profiler_enabled
    assert session.traces == []
    with pytest.raises(RuntimeError, match="recorded no trace"):
        session.trace
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    # The profiler can start again afterwards.
    with ProfileSession() as again:
        model(x)
    assert again.trace.of_kind("cpu_op")


def test_nested_profiler_is_refused():
    with ProfileSession():
        with pytest.raises(RuntimeError, match="cannot nest"):
            with ProfileSession():
                pass
    assert not torch.autograd.profiler._is_profiler_enabled


def test_step_outside_block():
    with pytest.raises(RuntimeError, match="outside its `with` block"):
        ProfileSession().step()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_kernels_attributed_live():
    model = TinyConv().cuda()
    x = torch.randn(2, 3, 8, 8, device="cuda")
    with ModuleRanges(model), ProfileSession() as session:
        model(x).sum().backward()
        torch.cuda.synchronize()
    timing = attribute(session.trace)
    assert timing.on_device and timing.device_name
    conv = [op for op in timing.ops if op.op == "aten.conv2d"]
    assert conv and all(op.module == "conv1" and op.kernels > 0 for op in conv)
    bwd = [op for op in timing.ops if op.op == "aten.convolution_backward"]
    assert bwd and all(op.module == "conv1" for op in bwd)


# ----------------------------------------------------------------------------- page faults


def test_page_faults_per_recorded_step(monkeypatch):
    # A fake fault counter: step i faults 100 * (i + 1) pages, so the schedule's choice of
    # steps is visible in the mean. wait=1, warmup=1, active=2: steps 2 and 3 are recorded.
    from torch_roofline.timing import faults

    counter = iter([0, 100, 300, 600, 1000, 1500, 2100])  # start, 5 step() marks, exit
    monkeypatch.setattr(faults, "minor_faults", lambda: next(counter))
    sched = torch.profiler.schedule(wait=1, warmup=1, active=2, repeat=1)
    with ProfileSession(schedule=sched, profile_memory=False) as session:  # no session-wide filter
        for _ in range(5):
            torch.ones(4).sum()
            session.step()
    assert session._faults.per_step == [100, 200, 300, 400, 500, 600]
    assert session.minor_faults_per_step == (300 + 400) / 2
    counter = iter([0, 4242])
    with ProfileSession() as one_shot:  # no schedule: the whole block is the step
        torch.ones(4).sum()
    assert one_shot.minor_faults_per_step == 4242


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mmap threshold is Linux behaviour")
def test_profiler_notes_a_step_that_faults_its_memory_in_again():
    # 64 MiB per call is above glibc's largest mmap threshold (32 MiB): malloc maps it fresh
    # and unmaps it on free, so every call touches 64 MiB / 4 KiB = 16,384 new pages.
    import platform

    from torch_roofline import RooflineProfiler
    from torch_roofline.devices import Device

    if platform.libc_ver()[0] != "glibc" or "jemalloc" in os.environ.get("LD_PRELOAD", "") \
            or "tcmalloc" in os.environ.get("LD_PRELOAD", "") or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        pytest.skip("needs glibc malloc with its default thresholds")

    class Alloc(nn.Module):
        def forward(self, x):
            return torch.ones(16 * 2**20).sum() + x  # 16 Mi float32 = 64 MiB, written whole

    cpu = Device(name="test-cpu", peak_flops={"fp32": 1e11}, bandwidth=1e10, kind="cpu")
    model, x = Alloc(), torch.zeros(())
    model(x)
    prof = RooflineProfiler(model, roof=cpu)
    with prof:
        model(x)
    assert prof._session.minor_faults_per_step >= 16 * 2**20 * 4 / 4096  # 16,384
    (note,) = [n for n in prof.report().notes if "minor page faults" in n]
    assert "jemalloc" in note and "MALLOC_MMAP_THRESHOLD_" in note


def test_filtered_stderr_drops_the_allocator_note_and_keeps_the_rest(capfd):
    import os

    from torch_roofline.timing.quiet import filtered_stderr

    note = ("[W1201 18:46:53.322080684 CPUAllocator.cpp:245] Memory block of unknown size was allocated before "
            "the profiling started, profiler results will not include the deallocation event\n")
    with filtered_stderr():
        os.write(2, b"user line 1\n")
        os.write(2, note.encode())
        os.write(2, b"user line 2 without newline")
    err = capfd.readouterr().err
    assert "user line 1\n" in err and "user line 2 without newline" in err
    assert "Memory block of unknown size" not in err
