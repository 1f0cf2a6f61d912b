"""Resolve the CLI's MODEL argument and build its inputs.

MODEL is ``torchvision:resnet18`` (random weights: nothing is downloaded),
``package.module:factory`` (a class or function called with no arguments, or a module
instance), or a ``.py`` file defining ``model`` and ``inputs`` (and optionally ``loss_fn``).
"""

from __future__ import annotations

import importlib
import os
import runpy
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence, Tuple

import torch
from torch import nn

__all__ = ["ModelSpec", "load_model", "parse_shape", "DTYPES"]

DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
          "fp16": torch.float16, "float16": torch.float16, "fp64": torch.float64, "float64": torch.float64}


@dataclass(frozen=True)
class ModelSpec:
    """A model ready to run: the module, its inputs, and an optional loss."""

    model: nn.Module
    inputs: Any
    loss_fn: Optional[Callable[[Any], torch.Tensor]] = None
    label: str = ""


def parse_shape(text: str) -> Tuple[int, ...]:
    """``"1,3,224,224"`` -> ``(1, 3, 224, 224)``; a clear error for anything else."""
    try:
        shape = tuple(int(x) for x in text.replace("x", ",").split(",") if x.strip())
    except ValueError:
        raise ValueError(f"--input-shape {text!r}: expected comma-separated integers, e.g. 1,3,224,224") from None
    if not shape or any(s <= 0 for s in shape):
        raise ValueError(f"--input-shape {text!r}: expected positive sizes, e.g. 1,3,224,224")
    return shape


def _dtype(name: Optional[str]) -> Optional[torch.dtype]:
    if name is None:
        return None
    if name not in DTYPES:
        raise ValueError(f"--dtype {name!r}: expected one of {sorted(set(DTYPES))}")
    return DTYPES[name]


def load_model(spec: str, input_shapes: Sequence[str] = (), *, dtype: Optional[str] = None,
               device: str = "cpu", train: bool = False) -> ModelSpec:
    """Build the model named by ``spec`` on ``device`` with random inputs of ``input_shapes``.

    ``dtype`` (``fp32``/``bf16``/``fp16``) converts the model's floating parameters and the
    inputs. ``device="meta"`` builds without allocating weights.
    """
    dev = torch.device(device)
    loss_fn = None
    inputs: Any = None
    with dev:
        if spec.endswith(".py"):
            if not os.path.exists(spec):
                raise FileNotFoundError(f"MODEL {spec!r}: no such file")
            ns = runpy.run_path(spec)
            if "model" not in ns:
                raise ValueError(f"MODEL {spec!r}: the file must define `model` (and `inputs`)")
            model, inputs, loss_fn = ns["model"], ns.get("inputs"), ns.get("loss_fn")
        elif spec.startswith("torchvision:"):
            model = _torchvision(spec.split(":", 1)[1])
        elif ":" in spec:
            mod_name, attr = spec.split(":", 1)
            try:
                obj = getattr(importlib.import_module(mod_name), attr)
            except (ImportError, AttributeError) as exc:
                raise ValueError(f"MODEL {spec!r}: cannot import {attr!r} from {mod_name!r} ({exc})") from None
            model = obj if isinstance(obj, nn.Module) else obj()
        else:
            raise ValueError(
                f"MODEL {spec!r}: expected 'torchvision:NAME', 'package.module:factory' or a .py file"
            )
    if not isinstance(model, nn.Module):
        raise ValueError(f"MODEL {spec!r}: built a {type(model).__name__}, not a torch.nn.Module")
    model = model.to(dev)
    dt = _dtype(dtype)
    if dt is not None:
        model = model.to(dt)
    model.train(train)
    if input_shapes:
        tensors: List[torch.Tensor] = [torch.randn(parse_shape(s), device=dev, dtype=dt or torch.float32) for s in input_shapes]
        inputs = tensors[0] if len(tensors) == 1 else tuple(tensors)
    elif inputs is None:
        raise ValueError(f"MODEL {spec!r}: no inputs: pass --input-shape, e.g. --input-shape 1,3,224,224")
    elif isinstance(inputs, torch.Tensor):
        inputs = inputs.to(dev) if dt is None or not inputs.is_floating_point() else inputs.to(dev, dt)
    return ModelSpec(model, inputs, loss_fn, spec)


def _torchvision(name: str) -> nn.Module:
    try:
        import torchvision
    except ImportError:
        raise ValueError("MODEL torchvision:...: torchvision is not installed: pip install 'torch_roofline[vision]'") from None
    try:
        return torchvision.models.get_model(name, weights=None)
    except ValueError:
        names = torchvision.models.list_models()
        import difflib

        close = difflib.get_close_matches(name, names, n=5)
        raise ValueError(f"MODEL torchvision:{name}: unknown model; close matches: {close or names[:10]}") from None
