"""Resolve the CLI's MODEL argument and build its inputs.

MODEL is ``torchvision:resnet18`` (random weights: nothing is downloaded),
``package.module:factory`` (a class or function called with no arguments, or a module
instance), or a ``.py`` file defining ``model`` and ``inputs`` (and optionally ``loss_fn``).

A MODEL that cannot be built (a module, a class that needs arguments, a file with a syntax
error), a device torch cannot use and a model that fails on the given inputs raise a
ValueError naming MODEL and the fix, which the CLI prints as one line.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import os
import runpy
import types
from dataclasses import dataclass
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import nn

from torch_roofline.records.dtypes import DTYPE_TABLE

__all__ = ["ModelSpec", "load_model", "parse_shape", "running", "DTYPES"]

#: What ``--dtype`` builds a model in, by roof key or torch name.
DTYPES = {name: getattr(torch, d.storage) for d in DTYPE_TABLE if d.key in ("fp32", "bf16", "fp16", "fp64")
          for name in (d.key, d.storage)}


@dataclass(frozen=True)
class ModelSpec:
    """A model ready to run: the module, its inputs, and an optional loss."""

    model: nn.Module
    inputs: Any
    loss_fn: Optional[Callable[[Any], torch.Tensor]] = None
    label: str = ""


def parse_shape(text: str) -> Tuple[int, ...]:
    """``"1,3,224,224"`` (or ``"1x3x224x224"``) -> ``(1, 3, 224, 224)``; a clear error for
    anything else (an empty part, as in ``"2,,8"`` or ``"2,x"``, included)."""
    try:
        shape = tuple(int(x) for x in text.replace("x", ",").split(","))
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
    # Every argument is checked before the model is built (which can take long).
    dev = _device(device)
    shapes = [parse_shape(s) for s in input_shapes]
    dt = _dtype(dtype)
    if not shapes and not spec.endswith(".py"):
        raise ValueError(f"MODEL {spec!r}: no inputs: pass --input-shape, e.g. --input-shape 1,3,224,224")
    loss_fn = None
    inputs: Any = None
    with dev:
        if spec.endswith(".py"):
            model, inputs, loss_fn = _from_file(spec)
        elif spec.startswith("torchvision:"):
            model = _torchvision(spec.split(":", 1)[1])
        elif ":" in spec:
            model = _from_factory(spec)
        else:
            raise ValueError(
                f"MODEL {spec!r}: expected 'torchvision:NAME', 'package.module:factory' or a .py file"
            )
    if not isinstance(model, nn.Module):
        raise ValueError(f"MODEL {spec!r}: built a {type(model).__name__}, not a torch.nn.Module")
    model = model.to(dev)
    if dt is not None:
        model = model.to(dt)
    model.train(train)
    if shapes:
        tensors: List[torch.Tensor] = [_random_input(s, dev, dt or torch.float32) for s in shapes]
        inputs = tensors[0] if len(tensors) == 1 else tuple(tensors)
    elif inputs is None:
        raise ValueError(f"MODEL {spec!r}: no inputs: pass --input-shape, e.g. --input-shape 1,3,224,224")
    elif isinstance(inputs, torch.Tensor):
        inputs = inputs.to(dev) if dt is None or not inputs.is_floating_point() else inputs.to(dev, dt)
    return ModelSpec(model, inputs, loss_fn, spec)


def _random_input(shape: Tuple[int, ...], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    try:
        return torch.randn(shape, device=device, dtype=dtype)
    except RuntimeError as exc:  # too large to allocate, or an overflowing size
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"--input-shape {','.join(map(str, shape))}: cannot make a {dtype} tensor of that shape "
                         f"on {device} ({first}); pass a smaller shape, or --device meta to count without "
                         "allocating") from None


def _device(device: str) -> torch.device:
    """``--device`` as a torch.device torch can use here; a ValueError naming the fix otherwise."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"--device {device!r}: expected cpu, cuda, cuda:N or meta") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device!r}: torch sees no CUDA GPU here (torch.cuda.is_available() is False); "
                         "use --device cpu, or --device meta to count without allocating")
    return dev


def _from_file(spec: str) -> Tuple[Any, Any, Any]:
    """``model``, ``inputs`` and ``loss_fn`` of a model file (the last two may be None)."""
    if not os.path.isfile(spec):
        raise FileNotFoundError(f"MODEL {spec!r}: no such file; pass a .py file defining `model` and `inputs`")
    try:
        ns = runpy.run_path(spec)
    except SyntaxError as exc:
        raise ValueError(f"MODEL {spec!r}: syntax error at line {exc.lineno}: {exc.msg}; fix the file "
                         f"(python {spec} shows the same error)") from exc
    if "model" not in ns:
        raise ValueError(f"MODEL {spec!r}: the file must define `model` (and `inputs`), e.g. "
                         "model = torch.nn.Linear(8, 4); inputs = torch.randn(2, 8)")
    return ns["model"], ns.get("inputs"), ns.get("loss_fn")


def _from_factory(spec: str) -> Any:
    """The object named by ``package.module:attr``: a module instance, or what calling it returns."""
    mod_name, attr = spec.split(":", 1)
    try:
        obj = getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError, ValueError, SyntaxError) as exc:
        raise ValueError(f"MODEL {spec!r}: cannot import {attr!r} from {mod_name!r} ({exc}); expected "
                         "package.module:factory, e.g. torchvision.models:resnet18") from None
    if isinstance(obj, nn.Module):
        return obj
    if isinstance(obj, types.ModuleType) or not callable(obj):
        raise ValueError(f"MODEL {spec!r}: {attr!r} is a {type(obj).__name__}, not a model class or factory; "
                         "expected package.module:factory, e.g. torchvision.models:resnet18")
    needed = _required_parameters(obj)
    if needed:
        raise ValueError(f"MODEL {spec!r}: {attr}() needs arguments ({', '.join(needed)}); MODEL must be callable "
                         f"with none: write a .py file defining model = {attr}(...) and inputs, and pass its path")
    return obj()


def _required_parameters(obj: Callable[..., Any]) -> List[str]:
    """Names of the parameters ``obj()`` would be missing ([] when unknown: builtins)."""
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return []
    return [name for name, p in signature.parameters.items()
            if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


@contextlib.contextmanager
def running(spec: ModelSpec) -> Iterator[None]:
    """Turn a failure of the user's model on its inputs (torch's shape, dtype and device errors)
    into a ValueError naming MODEL, the input shapes and the fix; the original is chained."""
    try:
        yield
    except (RuntimeError, TypeError, IndexError) as exc:
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise ValueError(f"MODEL {spec.label!r} failed on inputs of shape {_shapes(spec.inputs)}: {first}; "
                         "fix: pass --input-shape as the model's forward expects (repeat it for several "
                         "inputs), or --debug for the traceback") from exc


def _shapes(inputs: Any) -> str:
    if isinstance(inputs, torch.Tensor):
        return str(tuple(inputs.shape))
    if isinstance(inputs, (tuple, list)):
        return ", ".join(_shapes(x) for x in inputs) or "()"
    if isinstance(inputs, dict):
        return "{" + ", ".join(f"{k}: {_shapes(v)}" for k, v in inputs.items()) + "}"
    return type(inputs).__name__


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
