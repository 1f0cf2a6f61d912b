"""Module and phase ranges: profiler annotations that name where each op ran.

:class:`ModuleRanges` installs forward hooks on every module of a model that open a
``record_function`` range named ``"roofline::<fqn>"`` before the module's forward and
close it after (the root module is ``"roofline::"``). :func:`phase_range` wraps a region
we run ourselves (the optimizer step, the backward call) in ``"roofline::phase::<name>"``.
A profiler session records those ranges as ``user_annotation`` events; the attribution
stage (:mod:`torch_roofline.timing.attribution`) reads them back from the trace to tell
which module and which phase every op and kernel belongs to.

Backward time needs no hooks: the trace links every backward op to the forward op that
created it through the autograd sequence number, so the attribution stage puts backward
ops under the module whose forward range enclosed that forward op.

Limits:
    * One range per module call; a module shared under several names is hooked once,
      under the first name ``named_modules()`` yields.
    * Hooks are module hooks: code that bypasses ``Module.__call__`` (calling
      ``module.forward`` directly) is not ranged; its ops land on the enclosing module.
    * Ranges cost a few microseconds per module call (a ``record_function`` enter and exit);
      with the profiler off they are close to free.

Example::

    with ModuleRanges(model), torch.profiler.profile() as prof:
        model(x)
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any, Iterator, List, Optional, Tuple

import torch
from torch import nn

from torch_roofline.records import PHASES

__all__ = [
    "RANGE_PREFIX",
    "PHASE_PREFIX",
    "ModuleRanges",
    "phase_range",
    "module_range_name",
    "parse_range_name",
]

_log = logging.getLogger(__name__)

RANGE_PREFIX = "roofline::"
"""Prefix of every range this package records; a module range is ``RANGE_PREFIX + fqn``."""

PHASE_PREFIX = RANGE_PREFIX + "phase::"
"""Prefix of phase ranges: ``"roofline::phase::optimizer"``, ``"roofline::phase::backward"``."""


def module_range_name(fqn: str) -> str:
    """Range name of the module called ``fqn`` (``""`` for the root): ``"roofline::" + fqn``."""
    return RANGE_PREFIX + fqn


def parse_range_name(name: str) -> Optional[Tuple[str, str]]:
    """Classify a range name recorded in a trace.

    Returns:
        ``("phase", phase)`` for a phase range, ``("module", fqn)`` for a module range,
        ``None`` for a range this package did not record.

    Example::

        >>> parse_range_name("roofline::layer1.0")
        ('module', 'layer1.0')
        >>> parse_range_name("roofline::phase::optimizer")
        ('phase', 'optimizer')
    """
    if name.startswith(PHASE_PREFIX):
        return ("phase", name[len(PHASE_PREFIX):])
    if name.startswith(RANGE_PREFIX):
        return ("module", name[len(RANGE_PREFIX):])
    return None


@contextlib.contextmanager
def phase_range(name: str) -> Iterator[None]:
    """Record the enclosed region as the phase ``name`` (``"backward"`` or ``"optimizer"``).

    Ops inside a ``roofline::phase::optimizer`` range are attributed to the optimizer
    phase (module root ``""``); ops inside ``roofline::phase::backward`` that the trace
    cannot link to a forward op (the gradient seed, for example) land on the root's
    backward row, and the range's duration is the backward phase's wall time on the CPU.

    Example::

        with phase_range("optimizer"):
            optimizer.step()
    """
    if name not in PHASES:
        raise ValueError(
            f"phase_range(name={name!r}): expected one of {PHASES}, e.g. "
            f"phase_range('optimizer'); pass one of those names."
        )
    with torch.autograd.profiler.record_function(PHASE_PREFIX + name):
        yield


class ModuleRanges:
    """Context manager: a ``record_function`` range around every module's forward.

    Args:
        model: the model whose modules (``model.named_modules()``) get ranges.

    On exit every hook is removed and any range still open is closed, exceptions
    included. A forward that raises closes its range through the post hook
    (``always_call=True``), so no range outlives the call that opened it.

    Example::

        with ModuleRanges(model):
            with torch.profiler.profile() as prof:
                model(x)
    """

    def __init__(self, model: nn.Module) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(
                f"ModuleRanges(model=...): expected a torch.nn.Module, got "
                f"{type(model).__name__}; pass the model itself, e.g. ModuleRanges(net)."
            )
        self._model = model
        self._handles: List[Any] = []
        # Open ranges per thread (record_function ranges are thread-local), innermost last.
        self._local = threading.local()

    @property
    def _open(self) -> List[Tuple[int, Any]]:
        """This thread's open ranges: (module id, record_function object), innermost last."""
        stack = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        return stack

    @property
    def active(self) -> bool:
        """True while hooks are installed."""
        return bool(self._handles)

    def __enter__(self) -> "ModuleRanges":
        if self._handles:
            raise RuntimeError(
                "ModuleRanges is already active; use one instance per `with` block "
                "(create a new ModuleRanges(model) for a nested block)."
            )
        try:
            # named_modules() yields a shared module once, under its first name.
            for fqn, module in self._model.named_modules():
                self._handles.append(
                    module.register_forward_pre_hook(self._pre_hook(fqn), with_kwargs=True)
                )
                self._handles.append(
                    module.register_forward_hook(
                        self._post_hook(), with_kwargs=True, always_call=True
                    )
                )
        except BaseException:
            self._remove()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self._remove()

    def _pre_hook(self, fqn: str):
        name = module_range_name(fqn)

        def hook(module: nn.Module, args: Any, kwargs: Any) -> None:
            rf = torch.autograd.profiler.record_function(name)
            rf.__enter__()
            self._open.append((id(module), rf))

        return hook

    def _post_hook(self):
        def hook(module: nn.Module, args: Any, kwargs: Any, output: Any) -> None:
            key = id(module)
            stack = self._open
            if not any(k == key for k, _ in stack):
                # The pre hook did not run (hooks installed mid-call); nothing to close.
                return
            # Close ranges opened after ours that were never closed (logged, never raised
            # inside the user's step), then ours.
            while stack:
                k, rf = stack.pop()
                if k != key:
                    _log.warning("closing a module range left open by an inner module")
                _close(rf)
                if k == key:
                    break

        return hook

    def _remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        stack = self._open  # ranges of other threads close with their own post hooks
        while stack:
            _, rf = stack.pop()
            _close(rf)


def _close(rf: Any) -> None:
    try:
        rf.__exit__(None, None, None)
    except Exception:  # a range that cannot close must not break the user's step
        _log.warning("could not close a profiler range", exc_info=True)
