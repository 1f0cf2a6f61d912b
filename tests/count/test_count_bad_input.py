"""Bad and unusual input: a correct result, or a clear error naming the problem and the fix.

Decisions pinned here:
* a forward (or loss) that raises: the very same exception propagates, and no module
  hook, dispatch mode or optimizer hook is left installed;
* sparse and nested tensors: counted, but every op touching one that would need a FLOP
  formula is listed in ``uncounted`` (formulas assume dense tensors) with a note saying
  how to get the dense count; bytes are still counted. Never a silent zero.
* ``torch.compile``'d modules are counted through ``_orig_mod`` with a warning (nothing is
  compiled); scripted modules are counted with every op on the root, with a note;
* a model and inputs on different devices: ``ValueError`` naming both devices.
"""

import warnings

import pytest
import torch
import torch.optim.optimizer as optim_module
from torch import nn
from torch.utils._python_dispatch import _get_current_dispatch_mode

from torch_roofline.count import count


class _Boom(nn.Module):
    def forward(self, x):
        raise KeyError("boom")


def _assert_clean(model):
    for name, mod in model.named_modules():
        assert not mod._forward_hooks, name
        assert not mod._forward_pre_hooks, name
    assert _get_current_dispatch_mode() is None
    assert not optim_module._global_optimizer_pre_hooks
    assert not optim_module._global_optimizer_post_hooks


def test_forward_that_raises_propagates_and_leaves_nothing_behind():
    model = nn.Sequential(nn.Linear(3, 3), nn.Sequential(_Boom()))
    error = None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning from the counter on the way out either
        with pytest.raises(KeyError, match="boom") as info:
            count(model, torch.randn(2, 3))
        error = info.value
    assert type(error) is KeyError and error.args == ("boom",)
    _assert_clean(model)
    # and the counter works again afterwards: 2*2*3*3 = 36
    assert count(model[0], torch.randn(2, 3)).total.flops == 36


def test_loss_that_raises_in_backward_mode_leaves_nothing_behind():
    model = nn.Linear(3, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def bad_loss(out):
        raise ZeroDivisionError("bad loss")

    with pytest.raises(ZeroDivisionError, match="bad loss"):
        count(model, torch.randn(2, 3), backward=True, loss_fn=bad_loss, optimizer=opt)
    _assert_clean(model)


def test_nested_count_is_a_clear_error():
    model = nn.Linear(4, 5)
    with pytest.raises(RuntimeError, match="already running"):
        count(lambda x: count(model, x), (torch.randn(2, 4),))
    _assert_clean(model)


def test_bad_argument_values_name_the_argument():
    model, x = nn.Linear(4, 5), torch.randn(2, 4)
    with pytest.raises(ValueError, match="memory_model='fused'"):
        count(model, x, memory_model="fused")
    with pytest.raises(ValueError, match="backend='ptflops'"):
        count(model, x, backend="ptflops")
    with pytest.raises(TypeError, match="inputs"):
        count(model, "not a tensor")
    with pytest.raises(TypeError, match="model"):
        count(42, x)
    with pytest.raises(ValueError, match="loss_fn"):
        count(model, x, loss_fn=lambda y: y.sum())
    _assert_clean(model)


def test_non_module_callables():
    w = torch.randn(4, 5)
    r = count(lambda x: x @ w, (torch.randn(2, 4),))
    assert r.total.flops == 2 * 2 * 4 * 5  # 80
    assert [m.name for m in r.modules] == [""]
    assert r.by_module()[""].flops == 80

    lin = nn.Linear(4, 5)
    x = torch.randn(2, 4)
    r = count(lambda: torch.relu(lin(x)), modules=lin)  # a whole step, its modules named
    assert r.by_module()[""].flops == 80 + 10  # addmm 80 + relu 2*5 = 10


def test_empty_model_and_model_without_parameters():
    r = count(nn.Sequential(), torch.randn(3))
    assert r.total.flops == 0 and r.total.calls == 0
    assert any("no aten op ran" in n for n in r.notes)  # said, not silent

    r = count(nn.ReLU(), torch.randn(3, 4))
    assert r.total.flops == 12  # 3*4 elements
    assert r.module("").params == 0 and r.module("").param_bytes == 0


def test_integer_bool_and_complex_tensors():
    ints = torch.arange(6).reshape(2, 3)
    r = count(lambda a: a * 2 + a, (ints,))
    assert r.total.flops == 0 and r.uncounted == {}  # integer arithmetic: no FLOPs
    assert r.total.bytes_written == 2 * 6 * 8  # but it writes two int64 results
    bools = torch.tensor([True, False, True])
    r = count(torch.logical_and, (bools, bools))
    assert r.total.flops == 0 and r.uncounted == {}
    # complex: add x2 per element; exp has no honest count: listed, not zero
    c = torch.ones(2, 3, dtype=torch.cfloat)
    assert count(torch.add, (c, c + 1)).total.flops == 2 * 6
    r = count(torch.exp, (c,))
    assert r.uncounted == {"aten.exp": 1}


def test_sparse_tensors_are_listed_as_uncounted():
    a = torch.eye(4).to_sparse()
    r = count(torch.sparse.mm, (a, torch.randn(4, 3)))
    assert r.uncounted == {"aten._sparse_addmm": 1}
    assert any("sparse tensors" in n for n in r.notes)
    r = count(torch.add, (a, a))  # a dense count (16) would be wrong: 4 stored elements
    assert r.uncounted == {"aten.add": 1} and r.total.flops == 0
    assert r.total.bytes_read > 0


def test_nested_tensors_are_listed_as_uncounted():
    nt = torch.nested.nested_tensor([torch.randn(2, 4), torch.randn(3, 4)], layout=torch.jagged)
    r = count(nn.Linear(4, 5), nt)
    assert r.uncounted == {"aten.linear": 1}
    assert any("nested tensors" in n and "to_padded_tensor" in n for n in r.notes)


def test_compiled_module_is_counted_through_orig_mod():
    model = nn.Sequential(nn.Linear(4, 5))
    compiled = torch.compile(model)  # lazy: only calling it would compile
    with pytest.warns(UserWarning, match="_orig_mod"):
        r = count(compiled, torch.randn(2, 4))
    assert r.total.flops == 80  # 2*2*4*5
    assert r.by_module()["0"].flops == 80  # the eager module's names
    assert any("_orig_mod" in n for n in r.notes)


def test_scripted_module_is_counted_on_the_root():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script is deprecated
        scripted = torch.jit.script(nn.Sequential(nn.Linear(4, 5), nn.ReLU()))
    r = count(scripted, torch.randn(2, 4))
    assert r.total.flops == 80 + 10  # addmm 2*2*4*5 + relu 2*5
    assert {o.module for o in r.ops} == {""}
    assert any("scripted" in n for n in r.notes)


def test_inputs_on_another_device_than_the_model():
    with torch.device("meta"):
        model = nn.Linear(4, 5)
    with pytest.raises(ValueError, match="meta.*cpu"):
        count(model, torch.randn(2, 4))
    with pytest.raises(ValueError, match="cpu.*meta"):
        count(nn.Linear(4, 5), {"input": torch.randn(2, 4, device="meta")})
    _assert_clean(model)


def test_meta_device():
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(4, 5), nn.ReLU())
    r = count(model, torch.randn(2, 4, device="meta"))
    assert r.total.flops == 90  # addmm 80 + relu 10
    # read x 32 + W 80 + b 20 = 132 and write 40; relu reads 40, writes 40
    assert (r.total.bytes_read, r.total.bytes_written) == (172, 80)


def test_fake_tensor_mode():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        model = nn.Linear(4, 5)
        x = torch.randn(2, 4)
        r = count(model, x, backward=True)
    forward = r.by_module("forward")[""]
    backward = r.by_module("backward")[""]
    assert forward.flops == 80 + 10  # addmm 80 + the default loss's sum over 10 elements
    # grad_weight mm 2*5*2*4 = 80 (x does not require grad: no grad_input);
    # grad_bias sum over 2*5 = 10
    assert backward.flops == 80 + 10
    assert r.uncounted == {}  # metadata queries (prim.device) are not arithmetic


def test_onednn_tensors_are_dense_and_counted():
    # torch.utils.mkldnn's Linear: to_mkldnn (copy), mkldnn_linear (the GEMM), _to_dense (copy).
    from torch.utils import mkldnn as mkldnn_utils

    if not torch.backends.mkldnn.is_available():
        pytest.skip("torch built without oneDNN")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit deprecation inside torch.utils.mkldnn
        lin = mkldnn_utils.to_mkldnn(nn.Linear(64, 32, bias=False))
    with torch.no_grad():
        r = count(lin, torch.randn(8, 64))
    assert r.uncounted == {} and not any("sparse" in n for n in r.notes)
    ops = {o.op: o for o in r.ops}
    assert set(ops) == {"aten.to_mkldnn", "aten.mkldnn_linear", "aten._to_dense"}
    gemm = ops["aten.mkldnn_linear"]
    assert (gemm.flops, gemm.macs) == (2 * 8 * 64 * 32, 8 * 64 * 32)  # 32768 FLOPs, 16384 MACs
    # reads x (8*64*4 = 2048 B), the weight (32*64*4 = 8192 B) and MkldnnLinear's zero bias
    # buffer (32*4 = 128 B); writes 8*32*4 = 1024 B
    assert (gemm.bytes_read, gemm.bytes_written) == (2048 + 8192 + 128, 1024)
    assert ops["aten.to_mkldnn"].flops == 0 and ops["aten.to_mkldnn"].bytes_written == 2048
