"""The model-zoo sweep (issue 13): torchvision, timm and Hugging Face transformers models are
counted forward (and a training step for a subset) with ZERO uncounted ops, and every
Conv2d/Linear module's FLOPs equal fvcore's count x 2 (fvcore counts multiply-accumulates).

By default a representative sample runs (every torchvision task, one model per timm
family, every transformers architecture) to stay within CI's time budget; the whole zoo
runs with ``TORCH_ROOFLINE_FULL_ZOO=1``. The zoo itself (models, inputs, which run on meta)
is tests/_zoo.py; ``python tests/_zoo.py`` prints the whole zoo's result.
"""

import warnings

import pytest
import torch
from torch import nn

import _zoo

pytest.importorskip("torchvision")

_FULL = _zoo.full_zoo_requested()
_SPECS = [s for s in _zoo.zoo() if _FULL or s.sample]


@pytest.mark.parametrize("spec", _SPECS, ids=[s.name for s in _SPECS])
def test_every_op_is_counted(spec):
    model, _, r = _zoo.count_forward(spec)
    assert r.uncounted == {}, r.uncounted_reasons
    assert r.total.flops > 0
    if spec.train is not None and (_FULL or spec.sample_train):
        t = _zoo.count_training_step(spec, model)
        assert t.uncounted == {}, t.uncounted_reasons
        assert t.by_module("backward")[""].flops > t.by_module("forward")[""].flops


_FVCORE = [s for s in _SPECS if s.fvcore]


@pytest.mark.parametrize("spec", _FVCORE, ids=[s.name for s in _FVCORE])
def test_conv_and_linear_modules_are_twice_fvcore(spec):
    fvcore_nn = pytest.importorskip("fvcore.nn")
    from torch_roofline import count

    model = spec.build("cpu")
    x = torch.randn(*spec.fvcore_input, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = count(model, x).by_module(phase="forward")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            analysis = fvcore_nn.FlopCountAnalysis(model, (x,))
            analysis.unsupported_ops_warnings(False)
            analysis.uncalled_modules_warnings(False)
            fv = analysis.by_module()
    checked = 0
    for name, mod in model.named_modules():
        if isinstance(mod, (nn.Conv2d, nn.Linear)) and name in fv and fv[name]:
            assert ours[name].flops == 2 * fv[name], name
            checked += 1
    assert checked > 5
