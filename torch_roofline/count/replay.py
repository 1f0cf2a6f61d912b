"""Count a step again on fake copies: the same ops, no compute, no side effects.

The profiler times the user's real step and counts it by replaying the captured call on
FakeTensors (``torch._subclasses.fake_tensor``): parameters, buffers, inputs and optimizer
state are fake copies, so the replay allocates nothing, does no arithmetic and leaves the
real weights, gradients, running statistics and optimizer state untouched, while the
dispatch-mode counter sees the same aten ops the real step ran.

NB: optimizers read their step counter with ``.item()``, which a fake tensor cannot answer;
the replay answers it with the real counter's value.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import torch
from torch import nn
from torch.utils._pytree import tree_map

from torch_roofline._depth import named_modules as _named_modules
from torch_roofline.count.mode import OpCounter, module_infos
from torch_roofline.count.result import CountResult

__all__ = ["count_replay", "count_without_compute"]


def count_replay(
    model: nn.Module,
    args: Tuple[Any, ...] = (),
    kwargs: Optional[Mapping[str, Any]] = None,
    *,
    backward: bool = False,
    loss_fn: Optional[Callable[[Any], torch.Tensor]] = None,
    optimizer: Optional[torch.optim.Optimizer] = None,
    memory_model: str = "op",
    formulas: Optional[Mapping[Any, Callable[..., Any]]] = None,
    grad_enabled: bool = True,
    grads_present: bool = True,
) -> CountResult:
    """Count ``model(*args, **kwargs)`` (+ backward, + one optimizer step) on fake copies.

    Same arguments and result as :func:`torch_roofline.count`; the model, its gradients
    and the optimizer are left exactly as they were. ``grad_enabled``: the autograd mode the
    real step ran in (a step under ``torch.no_grad()`` runs different ops, e.g. no saved
    clones, and must be replayed the same way). ``grads_present``: whether the parameters had
    gradients when the real step began; without them backward stores each gradient (a free
    ``detach``) instead of accumulating it (an ``add_``), so the replay starts the same way.
    """
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.func import functional_call

    from torch_roofline.count import run_step

    fake_mode = FakeTensorMode(allow_non_fake_inputs=True)
    fake: Dict[int, torch.Tensor] = {}

    def to_fake(t: Any) -> Any:
        if not isinstance(t, torch.Tensor):
            return t
        if id(t) not in fake:
            fake[id(t)] = fake_mode.from_tensor(t)
        return fake[id(t)]

    state = {n: to_fake(p) for n, p in model.named_parameters(remove_duplicate=False)}
    if not grads_present:
        for fp in state.values():
            fp.grad = None
    state.update({n: to_fake(b) for n, b in model.named_buffers(remove_duplicate=False)})
    fargs = tree_map(to_fake, tuple(args))
    fkwargs = tree_map(to_fake, dict(kwargs or {}))
    scalars: Dict[int, Any] = {}
    fopt = _fake_optimizer(optimizer, to_fake, scalars) if optimizer is not None else None

    def step() -> Any:
        return functional_call(model, state, fargs, fkwargs, strict=False, tie_weights=True)

    named = _named_modules(model)
    with fake_mode, torch.set_grad_enabled(grad_enabled or backward):
        with OpCounter(model, formulas, scalar_values=scalars, named_modules=named) as counter:
            run_step(step, None, backward=backward, loss_fn=loss_fn, optimizer=fopt)
    return counter.result(module_infos(model, named=named), memory_model,
                          ("counted by replaying the step on fake tensors",))


def _fake_optimizer(optimizer: torch.optim.Optimizer, to_fake: Callable[[Any], Any], scalars: Dict[int, Any]) -> Optional[torch.optim.Optimizer]:
    """A new optimizer of the same class and settings over the fake parameters and state."""
    groups = [
        {**{k: v for k, v in g.items() if k != "params"}, "params": [to_fake(p) for p in g["params"]]}
        for g in optimizer.param_groups
    ]
    accepted = inspect.signature(type(optimizer).__init__).parameters
    defaults = {k: v for k, v in optimizer.defaults.items() if k in accepted}
    fopt = type(optimizer)(groups, **defaults)
    for p, st in optimizer.state.items():
        fst = {}
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                fst[k] = to_fake(v)
                if v.dim() == 0 and not v.is_meta:
                    scalars[id(fst[k])] = v.item()
            else:
                fst[k] = v
        fopt.state[to_fake(p)] = fst
    return fopt


def count_without_compute(
    model: nn.Module,
    inputs: Any,
    *,
    backward: bool = False,
    loss_fn: Optional[Callable[[Any], torch.Tensor]] = None,
    memory_model: str = "op",
) -> CountResult:
    """Count one step of ``model`` without running its arithmetic.

    A model on the meta device (or without parameters) is counted directly; a real model is
    counted on fake copies (:func:`count_replay`), so nothing is computed or changed either way.
    ``inputs`` as for :func:`torch_roofline.count`.

    Raises:
        RuntimeError: the model needs real data (``.item()``, data-dependent shapes); the
            message names the op and suggests counting with real inputs on the CPU.
    """
    from torch_roofline.count import count

    on_meta = any(p.is_meta for p in model.parameters()) or any(b.is_meta for b in model.buffers())
    try:
        if on_meta or not any(True for _ in model.parameters()):
            return count(model, inputs, backward=backward, loss_fn=loss_fn, memory_model=memory_model)
        if isinstance(inputs, dict):
            args, kwargs = (), inputs
        elif isinstance(inputs, torch.Tensor):
            args, kwargs = (inputs,), {}
        else:
            args, kwargs = tuple(inputs or ()), {}
        return count_replay(model, args, kwargs, backward=backward, loss_fn=loss_fn, memory_model=memory_model)
    except Exception as exc:  # data-dependent ops cannot run on meta/fake tensors
        text = f"{type(exc).__name__}: {exc}"
        if "DataDependent" in type(exc).__name__ or "meta" in str(exc).lower() or "data-dependent" in str(exc).lower():
            raise RuntimeError(
                "the model cannot run on meta/fake tensors (an op needs real data: "
                f"{text.splitlines()[0]}). Run it with real inputs on the CPU instead: "
                "torch_roofline.count(model, inputs) or RooflineProfiler"
            ) from exc
        raise
