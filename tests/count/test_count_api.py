"""The public surface of count(): module attribution, phases, extension, fvcore backend."""

import json
import warnings

import pytest
import torch
from torch import nn

from torch_roofline.count import count, register_formula

# --------------------------------------------------------------------------------------
# Module attribution
# --------------------------------------------------------------------------------------


class _Repeat(nn.Module):
    """One Linear called three times, and an op (add) in the root's own forward."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 8)

    def forward(self, x):
        for _ in range(3):
            x = self.lin(x)
        return x + 1


def test_module_called_n_times_sums_its_calls():
    r = count(_Repeat(), torch.randn(2, 8))
    inc, own = r.by_module(), r.self_by_module()
    # each call: addmm 2*2*8*8 = 256 FLOPs; three calls 768
    assert inc["lin"].calls == 3 and inc["lin"].flops == 768
    assert inc["lin"].bytes_read == 3 * (2 * 8 + 8 * 8 + 8) * 4  # x, W, b per call: 1056
    # the root: inclusive = its children + its own add (2*8 = 16); self = the add only
    assert inc[""].flops == 768 + 16 and inc[""].calls == 1
    assert own[""].flops == 16 and own["lin"].flops == 768
    assert r.by_module_and_op()[("", "aten.add")].flops == 16
    assert set(r.by_op(module="lin")) >= {"aten.addmm"} and "aten.add" not in r.by_op(module="lin")


class _Tied(nn.Module):
    """A module registered under two names, and an embedding tied to the output head."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 4)  # 40 parameters
        self.first = nn.Linear(4, 4)  # 16 + 4 = 20 parameters
        self.second = self.first  # the same module again
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.embed.weight  # tied: 40 parameters shared

    def forward(self, ids):
        return self.head(self.second(self.first(self.embed(ids))))


def test_shared_modules_appear_once_under_their_first_name_and_params_once():
    r = count(_Tied(), torch.tensor([[1, 2, 3]]))
    names = [m.name for m in r.modules]
    assert names == ["", "embed", "first", "head"]  # "second" is "first"
    inc = r.by_module()
    assert inc["first"].calls == 2
    assert inc["first"].flops == 2 * (2 * 3 * 4 * 4)  # 2 calls x 2*3*4*4 = 192
    # parameters: embed 40, first 20, head 40 (its weight, shared with embed); the root
    # counts the shared weight once: 40 + 20 = 60
    assert r.module("embed").params == 40
    assert r.module("first").params == 20 and r.module("first").param_bytes == 80
    assert r.module("head").params == 40
    assert r.module("").params == 60 and r.module("").param_bytes == 240
    assert r.module("").self_params == 0


# --------------------------------------------------------------------------------------
# Phases: backward and optimizer
# --------------------------------------------------------------------------------------


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))


def _matrix(r, phase, module=""):
    return sum(o.flops for o in r.ops if o.unit == "matrix" and o.phase == phase and module in o.scope)


def test_backward_matmuls_are_twice_the_forward():
    x = torch.randn(5, 8, requires_grad=True)  # so that the first layer computes grad_input
    r = count(_mlp(), x, backward=True)
    # forward: 2*5*8*16 + 2*5*16*4 = 1280 + 640 = 1920
    assert _matrix(r, "forward") == 1920
    # backward: grad_input and grad_weight, each the size of the forward matmul
    assert _matrix(r, "backward") == 2 * 1920
    # attributed to the module whose forward created the node
    for name in ("0", "2"):
        assert _matrix(r, "backward", name) == 2 * _matrix(r, "forward", name)
    assert r.by_module("backward")["0"].calls == 1


def test_backward_without_input_grad_skips_the_first_grad_input():
    r = count(_mlp(), torch.randn(5, 8), backward=True)
    # 2 * 1920 minus the first layer's grad_input 2*5*8*16 = 1280 -> 2560
    assert _matrix(r, "backward") == 2 * 1920 - 1280
    # the whole backward: layer 2 grad_input + grad_weight 2*640, grad_bias sum over [5,4] 20;
    # relu backward (threshold_backward) 5*16 = 80; layer 0 grad_weight 1280, grad_bias 80
    assert r.by_module("backward")[""].flops == 1280 + 20 + 80 + 1280 + 80  # 2740
    assert r.by_module("backward")["0"].flops == 1280 + 80


def test_optimizer_phase_is_counted_once_on_the_root():
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    r = count(model, torch.randn(5, 8), backward=True, optimizer=opt)
    params = sum(p.numel() for p in model.parameters())  # 8*16 + 16 + 16*4 + 4 = 212
    # plain SGD: p.add_(g, alpha=-lr): a multiply and an add per element -> 2*212 = 424
    assert r.by_module("optimizer")[""].flops == 2 * params == 424
    assert r.by_module("optimizer")[""].calls == 1
    assert r.by_module("optimizer")["0"].calls == 0


# --------------------------------------------------------------------------------------
# Extension: custom ops, register_formula, the per-call mapping, uncounted ops
# --------------------------------------------------------------------------------------


@torch.library.custom_op("roofline_test::scale_add", mutates_args=())
def _scale_add(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return 2 * x + y


@torch.library.custom_op("roofline_test::registered", mutates_args=())
def _registered(x: torch.Tensor) -> torch.Tensor:
    return x * x


def test_op_without_formula_is_uncounted_not_zero():
    x = torch.randn(3, 4)
    r = count(torch.ops.roofline_test.scale_add, (x, x))
    assert r.uncounted == {"roofline_test.scale_add": 1}
    assert not r.ops[0].counted
    assert "uncounted" in r.table() and "roofline_test.scale_add" in r.table()
    assert r.to_dict()["uncounted"] == {"roofline_test.scale_add": 1}


def test_per_call_formulas_do_not_mutate_the_registry():
    x, y = torch.randn(3, 4), torch.randn(3, 4)
    op = torch.ops.roofline_test.scale_add

    def scale_add_flops(x_shape, y_shape, *, out=None):
        return 2 * x_shape.numel()  # a multiply and an add per element

    r = count(op, (x, y), formulas={op: scale_add_flops})
    assert r.total.flops == 24 and r.uncounted == {}  # 2 * 3*4
    # the next call without the mapping: uncounted again
    assert count(op, (x, y)).uncounted == {"roofline_test.scale_add": 1}
    # per-call formulas also override a registered one (torch's addmm here): 1 per call
    r = count(nn.Linear(4, 5), x, formulas={torch.ops.aten.addmm: lambda *a, **k: 1})
    assert r.total.flops == 1
    assert count(nn.Linear(4, 5), x).total.flops == 2 * 3 * 4 * 5  # registry untouched: 120


def test_register_formula_decorator():
    x = torch.randn(3, 4)
    assert count(torch.ops.roofline_test.registered, (x,)).uncounted == {"roofline_test.registered": 1}

    @register_formula(torch.ops.roofline_test.registered)
    def registered_flops(x_shape, *, out=None):
        return x_shape.numel()  # one multiply per element

    r = count(torch.ops.roofline_test.registered, (x,))
    assert r.uncounted == {} and r.total.flops == 12 and r.total.macs == 0
    with pytest.raises(ValueError, match="unit='tensor'"):
        register_formula(torch.ops.roofline_test.registered, unit="tensor")


# --------------------------------------------------------------------------------------
# fvcore backend
# --------------------------------------------------------------------------------------


def _cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 10))


def test_fvcore_backend_is_fvcore_times_two():
    fvcore_nn = pytest.importorskip("fvcore.nn")
    model, x = _cnn(), torch.randn(2, 3, 6, 6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        analysis = fvcore_nn.FlopCountAnalysis(model, (x,))
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        macs, by_module = analysis.total(), analysis.by_module()
        r = count(model, x, backend="fvcore")
    # conv 2*8*6*6*3*3*3 = 15552 MACs + linear 2*288*10 = 5760 -> 21312
    assert macs == 21312
    assert r.total.macs == macs and r.total.flops == 2 * macs
    assert r.backend == "fvcore" and r.has_bytes is False
    assert r.total.bytes_read == 0 and r.total.bytes_written == 0
    inc = r.by_module()
    for name in ("", "0", "3"):
        assert inc[name].macs == by_module[name] and inc[name].flops == 2 * by_module[name]
    assert "n/a" in r.table() and "not counted by the fvcore backend" in r.table()
    # the dispatch backend agrees on the matrix work
    ours = count(model, x)
    assert sum(o.macs for o in ours.ops) == macs


def test_fvcore_backend_module_calls():
    pytest.importorskip("fvcore.nn")
    model = nn.ModuleDict({"used": nn.Linear(4, 5), "unused": nn.Linear(4, 5)})
    model.forward = lambda x: model["used"](x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = count(model, (torch.randn(2, 4),), backend="fvcore")
    inc = r.by_module()
    assert inc["used"].calls == 1 and inc["used"].flops == 2 * 2 * 4 * 5  # 80
    assert inc["unused"].calls == 0 and inc["unused"].flops == 0


def test_fvcore_backend_is_forward_only():
    model = _cnn()
    with pytest.raises(ValueError, match="forward only"):
        count(model, torch.randn(2, 3, 6, 6), backend="fvcore", backward=True)


# --------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------


def test_to_dict_is_plain_json_and_table_shows_the_root_class():
    r = count(_Repeat(), torch.randn(2, 8))
    data = json.loads(json.dumps(r.to_dict()))
    assert data["total"]["flops"] == 784 and data["has_bytes"] is True
    assert [m["name"] for m in data["modules"]] == ["", "lin"]
    assert data["modules"][0]["self"]["flops"] == 16
    assert r.table().splitlines()[2].startswith("_Repeat")
    with pytest.raises(ValueError, match="phase='forwards'"):
        r.by_module("forwards")
    with pytest.raises(KeyError, match="nope"):
        r.by_op(module="nope")


def test_module_parameter_counts_match_parameters_per_module():
    # Oracle: nn.Module.parameters() (which de-duplicates) for every module, self and inclusive.
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Sequential(nn.Flatten(), nn.LazyLinear(4)))
    x = torch.randn(2, 3, 8, 8)
    model(x)  # materialise the lazy layer
    r = count(model, x)
    infos = {m.name: m for m in r.modules}
    for name, mod in model.named_modules():
        assert infos[name].params == sum(p.numel() for p in mod.parameters()), name
        assert infos[name].param_bytes == sum(p.numel() * p.element_size() for p in mod.parameters()), name
        assert infos[name].self_params == sum(p.numel() for p in mod.parameters(recurse=False)), name
