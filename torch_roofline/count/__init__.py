"""Count: exact FLOPs, MACs and bytes per aten op, attributed to modules and phases."""

from __future__ import annotations

import warnings
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from torch.utils._pytree import tree_flatten

from torch_roofline._depth import hooked_call_headroom, named_modules
from torch_roofline.count.formulas import NO_ARITHMETIC, FlopCount, register_formula
from torch_roofline.count.mode import OpCounter, module_infos
from torch_roofline.count.result import CountResult
from torch_roofline.records import check_memory_model

__all__ = ["count", "CountResult", "register_formula", "FlopCount", "NO_ARITHMETIC", "Inputs", "run_step",
           "check_devices", "model_device"]

#: What a model is called with: a tensor, a tuple of positional arguments, or a dict of
#: keyword arguments.
Inputs = Union[torch.Tensor, Tuple[Any, ...], list, Dict[str, Any], None]



def count(
    model: Union[nn.Module, Callable[..., Any]],
    inputs: Inputs = None,
    *,
    backward: bool = False,
    loss_fn: Optional[Callable[[Any], torch.Tensor]] = None,
    optimizer: Optional[torch.optim.Optimizer] = None,
    memory_model: str = "op",
    backend: str = "dispatch",
    formulas: Optional[Mapping[Any, Callable[..., Any]]] = None,
    modules: Optional[nn.Module] = None,
) -> CountResult:
    """Count the FLOPs, MACs and bytes of one step of ``model`` on ``inputs``.

    Args:
        model: an ``nn.Module``, or any callable. A callable with ``inputs=None`` is a whole
            step (``count(step_fn)``): it runs as is, and ``modules=`` names the modules it uses.
        inputs: a tensor, a tuple of positional arguments, or a dict of keyword arguments.
        backward: also run ``loss_fn(output).backward()`` (default loss: ``output.sum()``,
            or of the first tensor of a tuple/dict output); backward ops are attributed to
            the module whose forward created them (phase ``"backward"``).
        loss_fn: maps the model's output to a scalar loss (needs ``backward=True``).
        optimizer: run and count one ``optimizer.step()`` after backward (phase
            ``"optimizer"``). It really updates the weights: count a copy if that matters.
        memory_model: ``"op"`` (every op reads its inputs and writes its outputs; the
            unfused cost) or ``"compulsory"`` (each storage moved once per step).
        backend: ``"dispatch"`` (ours: FLOPs, MACs and bytes, forward and backward) or
            ``"fvcore"`` (fvcore's FlopCountAnalysis mapped onto the same records: forward
            only, no bytes).
        formulas: per-call FLOP formulas ``{op: fn}`` taking precedence over the registry
            (see :func:`register_formula` for the calling convention).
        modules: the module tree to attribute to when ``model`` is a step function.

    Returns:
        A :class:`CountResult` (``.total``, ``.by_module()``, ``.by_op()``, ``.uncounted`` ...).

    Works on the meta device and under FakeTensorMode: build a model too big for this
    machine with ``with torch.device("meta"): model = Net()`` and count it with meta inputs.

    Example::

        >>> import torch, torch_roofline
        >>> r = torch_roofline.count(torch.nn.Linear(64, 32), torch.randn(8, 64))
        >>> r.total.flops  # 2 * 8 * 64 * 32
        32768
    """
    check_memory_model(memory_model, "count")
    if backend not in ("dispatch", "fvcore"):
        raise ValueError(f"count(backend={backend!r}): expected 'dispatch' or 'fvcore'")
    if loss_fn is not None and not backward:
        raise ValueError("count(loss_fn=...) needs backward=True: the loss only matters for the backward pass")
    if optimizer is not None and not backward:
        raise ValueError("count(optimizer=...) needs backward=True: without gradients the step does nothing")
    if not callable(model):
        raise TypeError(f"count(model=...): expected an nn.Module or a callable, got {type(model).__name__}")
    notes = []
    model, note = _unwrap(model)
    if note:
        notes.append(note)
    if backend == "fvcore":
        from torch_roofline.count.fvcore_backend import count_fvcore

        if backward:
            raise ValueError("count(backend='fvcore') counts the forward only: use backend='dispatch' for backward=True")
        return count_fvcore(model, inputs, memory_model=memory_model)

    tree = modules if modules is not None else (model if isinstance(model, nn.Module) else None)
    if isinstance(model, nn.Module):
        check_devices(model, inputs, hint=" (use 'meta' for both to count a model too big to allocate)")
    named = named_modules(tree) if tree is not None else None  # no recursion: any depth
    infos = module_infos(tree, root_type=getattr(model, "__name__", None), named=named)
    on_meta = _any_meta(named, inputs)
    with OpCounter(tree, formulas, meta_attention=on_meta, named_modules=named) as counter:
        run_step(model, inputs, backward=backward, loss_fn=loss_fn, optimizer=optimizer)
    if not counter.ops:
        notes.append("no aten op ran in the step: every count is zero because nothing was computed")
    for layout in sorted(counter.unusual_layouts):
        notes.append(
            f"{layout} tensors: FLOP formulas assume dense tensors, so ops on {layout} tensors are "
            "listed as uncounted (their bytes are counted); densify the inputs (to_dense(), "
            "to_padded_tensor()) to count the dense equivalent"
        )
    if isinstance(model, torch.jit.ScriptModule):
        notes.append("scripted module: forward hooks do not run in TorchScript, so every op is attributed to the root")
    return counter.result(infos, memory_model, notes)


def run_step(
    model: Callable[..., Any],
    inputs: Inputs,
    *,
    backward: bool = False,
    loss_fn: Optional[Callable[[Any], torch.Tensor]] = None,
    optimizer: Optional[torch.optim.Optimizer] = None,
) -> Any:
    """Run one step: forward (``model(*inputs)``), optionally backward and optimizer step.

    Shared by the counter and the profiler so both run exactly the same step. It runs with
    the recursion headroom our module hooks need (:func:`~torch_roofline._depth.
    hooked_call_headroom`), so a model as deep as the plain forward handles runs here too.
    Returns the model's output.
    """
    with hooked_call_headroom():
        return _run_step(model, inputs, backward=backward, loss_fn=loss_fn, optimizer=optimizer)


def _run_step(
    model: Callable[..., Any],
    inputs: Inputs,
    *,
    backward: bool,
    loss_fn: Optional[Callable[[Any], torch.Tensor]],
    optimizer: Optional[torch.optim.Optimizer],
) -> Any:
    if inputs is None:
        output = model()
    elif isinstance(inputs, torch.Tensor):
        output = model(inputs)
    elif isinstance(inputs, dict):
        output = model(**inputs)
    elif isinstance(inputs, (tuple, list)):
        output = model(*inputs)
    else:
        raise TypeError(
            f"inputs: expected a tensor, a tuple of arguments or a dict of keyword arguments, "
            f"got {type(inputs).__name__}; wrap a single non-tensor argument as (arg,)"
        )
    if backward:
        loss = loss_fn(output) if loss_fn is not None else _default_loss(output)
        if not isinstance(loss, torch.Tensor) or not loss.requires_grad:
            raise ValueError(
                "backward=True: the loss does not require grad (is the model in torch.no_grad(), "
                "or are its parameters frozen?); pass loss_fn= returning a differentiable scalar"
            )
        loss.backward()
        if optimizer is not None:
            optimizer.step()
    return output


def _any_meta(named: Optional[Sequence[Tuple[str, nn.Module]]], inputs: Inputs) -> bool:
    """Whether an input tensor, or a parameter or buffer of the ``named`` modules, is on meta."""
    if any(isinstance(x, torch.Tensor) and x.is_meta for x in tree_flatten(inputs)[0]):
        return True
    for _, mod in named or ():
        for t in (*mod._parameters.values(), *mod._buffers.values()):
            if t is not None and t.is_meta:
                return True
    return False


def _default_loss(output: Any) -> torch.Tensor:
    if hasattr(output, "loss") and isinstance(getattr(output, "loss"), torch.Tensor):
        return output.loss
    for leaf in tree_flatten(output)[0]:
        if isinstance(leaf, torch.Tensor) and (leaf.is_floating_point() or leaf.is_complex()):
            return leaf.sum() if not leaf.is_complex() else leaf.abs().sum()
    raise ValueError(
        f"backward=True: the model returned {type(output).__name__} with no floating-point tensor; "
        "pass loss_fn= mapping the output to a scalar loss"
    )


def _unwrap(model: Any) -> Tuple[Any, Optional[str]]:
    orig = getattr(model, "_orig_mod", None)
    if isinstance(orig, nn.Module):
        warnings.warn(
            "torch_roofline.count: a torch.compile'd module is counted through its eager module "
            "(model._orig_mod): compiled kernels fuse ops, so the op-model bytes are the unfused "
            "cost; the compulsory model approximates the fused one.",
            UserWarning,
            stacklevel=3,
        )
        return orig, "torch.compile'd module counted through its eager module (_orig_mod)"
    return model, None


def model_device(model: nn.Module) -> Optional[torch.device]:
    """The device of the model's first parameter (else first buffer); None when it has neither."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return None


def check_devices(model: nn.Module, inputs: Inputs, caller: str = "count()", hint: str = "") -> None:
    """Raise a ValueError naming both devices when an input tensor is on another device type
    than the model's parameters (or buffers). ``caller`` opens the message, ``hint`` ends it."""
    dev = model_device(model)
    if dev is None:
        return
    for i, t in enumerate(x for x in tree_flatten(inputs)[0] if isinstance(x, torch.Tensor)):
        if t.device.type != dev.type:
            raise ValueError(
                f"{caller}: the model's parameters are on {dev} but input tensor #{i} is on {t.device}; "
                f"move them to one device, e.g. inputs.to({str(dev)!r}){hint}"
            )
