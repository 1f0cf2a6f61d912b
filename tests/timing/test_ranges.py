"""Module and phase ranges: names, nesting, and no hooks or ranges left behind."""

import pytest
import torch
from torch import nn

from torch_roofline.timing.quiet import quiet_native_stderr
from torch_roofline.timing.ranges import (
    RANGE_PREFIX,
    ModuleRanges,
    module_range_name,
    parse_range_name,
    phase_range,
)


class _Boom(nn.Module):
    def forward(self, x):
        raise RuntimeError("boom in forward")


def _net():
    return nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Sequential(nn.Linear(4, 2)))


def _hook_count(model):
    return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules())


def _wrapped_count(model):
    """Modules whose forward is an instance attribute (our wrapper while ranges are on)."""
    return sum("forward" in vars(m) for m in model.modules())


def _profiled_ranges(fn):
    """Names of roofline ranges recorded while running fn(), in start order."""
    with quiet_native_stderr():
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            fn()
    events = [e for e in prof.events() if e.name.startswith(RANGE_PREFIX)]
    return [e.name for e in sorted(events, key=lambda e: e.time_range.start)], events


def test_range_names_and_parse():
    assert RANGE_PREFIX == "roofline::"
    assert module_range_name("") == "roofline::"
    assert module_range_name("layer1.0") == "roofline::layer1.0"
    assert parse_range_name("roofline::layer1.0") == ("module", "layer1.0")
    assert parse_range_name("roofline::") == ("module", "")
    assert parse_range_name("roofline::phase::optimizer") == ("phase", "optimizer")
    assert parse_range_name("ProfilerStep#3") is None


def test_every_module_gets_one_nested_range():
    model = _net()
    x = torch.randn(2, 4)
    with ModuleRanges(model):
        names, events = _profiled_ranges(lambda: model(x))
    # named_modules(): "", "0", "1", "2", "2.0" -> one range each, in call order.
    assert names == ["roofline::", "roofline::0", "roofline::1", "roofline::2", "roofline::2.0"]
    by_name = {e.name: e.time_range for e in events}
    outer, inner = by_name["roofline::2"], by_name["roofline::2.0"]
    assert outer.start <= inner.start and inner.end <= outer.end


def test_wrappers_removed_on_exit():
    # Ranges wrap each module's forward (no module hooks: they would put every module call on
    # Module._call_impl's slow path) and restore it on exit.
    model = _net()
    before = _hook_count(model)
    with ModuleRanges(model) as ranges:
        assert ranges.active
        assert _wrapped_count(model) == len(list(model.modules()))
        assert _hook_count(model) == before
    assert not ranges.active
    assert _wrapped_count(model) == 0 and _hook_count(model) == before


def test_instance_forward_is_restored_and_signature_kept():
    import inspect

    model = _net()
    own = model[0].forward  # a user's instance-level forward stays theirs
    model[0].forward = lambda x: own(x) * 1
    mine = model[0].forward
    with ModuleRanges(model):
        assert model[0].forward is not mine
        assert list(inspect.signature(model[2].forward).parameters) == ["input"]
    assert model[0].forward is mine and "forward" not in vars(model[2])


def test_shared_module_is_hooked_once():
    shared = nn.Linear(3, 3)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    with ModuleRanges(model):
        assert "forward" in vars(shared)
        names, _ = _profiled_ranges(lambda: model(torch.randn(1, 3)))
    # The shared Linear is called twice, both times under its first name "0".
    assert names.count("roofline::0") == 2 and "roofline::2" not in names


def test_forward_that_raises_closes_its_range_and_leaves_no_wrappers():
    model = nn.Sequential(nn.Linear(4, 4), _Boom())
    with pytest.raises(RuntimeError, match="boom in forward"):
        with ModuleRanges(model):
            names, events = [], []
            try:
                with quiet_native_stderr(), torch.profiler.profile(
                        activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                    model(torch.randn(1, 4))
            finally:
                # the wrapper's `with` closed the failing call's ranges as the exception passed
                ranges = [e for e in prof.events() if e.name.startswith(RANGE_PREFIX)]
                assert {e.name for e in ranges} == {"roofline::", "roofline::0", "roofline::1"}
                assert all(e.time_range.end >= e.time_range.start for e in ranges)
    assert _wrapped_count(model) == 0
    # A later profiled call sees no stale range around it.
    names, _ = _profiled_ranges(lambda: nn.Linear(4, 4)(torch.randn(1, 4)))
    assert names == []


def test_exception_in_block_removes_wrappers():
    model = _net()
    with pytest.raises(KeyError):
        with ModuleRanges(model):
            raise KeyError("user error")
    assert _wrapped_count(model) == 0


def test_unsafe_names_get_labels_and_parse_back():
    # Kineto renames or mangles range names with non-ASCII characters, quotes, newlines:
    # such modules are recorded under "#<k>" and the table maps them back.
    model = nn.ModuleDict({"ok": nn.Linear(2, 2), "naïve \"x\"\n\t\\": nn.Linear(2, 2)})
    with ModuleRanges(model) as ranges:
        names, _ = _profiled_ranges(lambda: [m(torch.randn(1, 2)) for m in model.values()])
    assert names == ["roofline::ok", "roofline::#0"]
    assert ranges.labels == {"#0": "naïve \"x\"\n\t\\"}
    assert parse_range_name("roofline::#0", ranges.labels) == ("module", "naïve \"x\"\n\t\\")


def test_several_models_and_none():
    g, d = nn.Linear(2, 2), nn.Linear(2, 1)
    with ModuleRanges({"gen": g, "disc": d}):
        names, _ = _profiled_ranges(lambda: d(g(torch.randn(1, 2))))
    assert names == ["roofline::gen", "roofline::disc"]  # the step root has no range
    with ModuleRanges([g, nn.Linear(2, 2)]) as ranges:
        assert [n for n, _ in ranges.tree.named_children()] == ["Linear", "Linear_2"]
    with ModuleRanges(None) as ranges:
        assert ranges.tree is None
    with pytest.raises(TypeError, match="every value must be an nn.Module"):
        ModuleRanges({"gen": g, "bad": 3})


def test_phase_range_records_and_validates():
    names, _ = _profiled_ranges(lambda: _phase_body())
    assert names == ["roofline::phase::optimizer"]
    with pytest.raises(ValueError, match="expected one of"):
        with phase_range("optimiser"):
            pass


def _phase_body():
    with phase_range("optimizer"):
        torch.ones(2) + 1


def test_bad_model_argument():
    with pytest.raises(TypeError, match="expected a torch.nn.Module"):
        ModuleRanges(lambda x: x)
