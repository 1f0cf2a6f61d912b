"""Replaying recorded calls on meta tensors without importing ``torch._dynamo``.

Many of torch's meta kernels are Python functions (``torch._refs``, ``torch._decomp``), and
torch wraps some of them with ``torch._compile._disable_dynamo``: at its first call such a
wrapper imports ``torch._dynamo`` (1.5-2.5 s on a laptop-class CPU: sympy and
``torch.distributed.tensor`` come with it) to build a version of the function Dynamo will not
trace, and caches that version on the function as ``__dynamo_disable``. A replay of one
recorded ``relu`` or ``addmm`` call on meta tensors pays that import, which is most of what a
first read of a 50 MB trace costs (issue 16).

Until ``torch._dynamo`` is imported nothing can be traced by Dynamo (torch.compile imports it
first), so calling the plain function does what the Dynamo-disabled version would.
:func:`defer_dynamo_import` therefore sets, on each such function that has no cached version
yet, a :class:`_Deferred` stand-in: while ``torch._dynamo`` is not imported it calls the plain
function; from the first call after it is imported, it builds torch's own disabled version
(``torch._dynamo.disable(fn, recursive, wrapping=False)``, exactly what the wrapper builds),
caches that in its own place and calls it. Code compiled later in the process therefore sees
what torch would have built; the stand-ins only delay the import to whoever needs Dynamo.

Wrappers are found among live objects by their code (the ``inner`` function of
``_disable_dynamo``); where torch's wrapper is not the one this knows (another torch
version), nothing is changed and the import happens as before. Wrappers made after the
search (modules imported later) are left as they are.
"""

from __future__ import annotations

import gc
import sys
import threading
import types
from typing import Any, Callable, Optional

__all__ = ["defer_dynamo_import", "prepare_meta_replays", "replays_prepared"]

_LOCK = threading.Lock()
_DONE = False
_DEFERRED = False  # torch's wrappers were found (the imports they make are deferred)


class _Deferred:
    """Stands in for the Dynamo-disabled version of ``fn`` until ``torch._dynamo`` is imported."""

    __slots__ = ("fn", "recursive")

    def __init__(self, fn: Callable[..., Any], recursive: bool) -> None:
        self.fn = fn
        self.recursive = recursive

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        dynamo = sys.modules.get("torch._dynamo")
        disable = getattr(dynamo, "disable", None) if dynamo is not None else None
        if disable is None:  # not imported (or still importing): Dynamo traces nothing yet
            return self.fn(*args, **kwargs)
        real = disable(self.fn, self.recursive, wrapping=False)
        setattr(self.fn, "__dynamo_disable", real)  # what torch's wrapper caches
        return real(*args, **kwargs)


def _inner_code() -> Optional[types.CodeType]:
    """The code of ``_disable_dynamo``'s wrapper, when it is the one this module knows."""
    try:
        from torch._compile import _disable_dynamo

        code = _disable_dynamo(lambda: None).__code__
    except Exception:  # noqa: BLE001 - another torch: leave its wrappers alone
        return None
    if set(code.co_freevars) != {"fn", "recursive"} or "__dynamo_disable" not in code.co_names:
        return None
    return code


def defer_dynamo_import() -> int:
    """Let torch's Dynamo-disabled Python kernels run without importing ``torch._dynamo``
    (module docstring); once per process, and not at all once it is imported.

    Returns:
        how many wrapped functions got a stand-in (0: none, or done before).
    """
    global _DONE, _DEFERRED
    with _LOCK:
        if _DONE or "torch._dynamo" in sys.modules:
            return 0
        _DONE = True
        code = _inner_code()
        if code is None:
            return 0
        _DEFERRED = True
        deferred = 0
        for obj in gc.get_objects():
            if type(obj) is not types.FunctionType or obj.__code__ is not code or obj.__closure__ is None:
                continue
            cells = dict(zip(code.co_freevars, obj.__closure__))
            try:
                fn, recursive = cells["fn"].cell_contents, cells["recursive"].cell_contents
            except ValueError:  # an empty cell
                continue
            if getattr(fn, "__dynamo_disable", None) is None:
                try:
                    setattr(fn, "__dynamo_disable", _Deferred(fn, bool(recursive)))
                except (AttributeError, TypeError):  # not a function that takes attributes
                    continue
                deferred += 1
        return deferred


_PREPARED = False
_TRIED = False


def prepare_meta_replays() -> None:
    """What replays of recorded calls on meta tensors need, done ahead (while a trace is
    scanned): :func:`defer_dynamo_import`, and ``torch.fx.experimental.symbolic_shapes``
    (0.5-0.8 s with sympy), which ``torch._check`` imports at its first call in every meta
    kernel. Both imported off the caller's stack (:func:`torch_roofline._gc.import_off_stack`);
    once per process."""
    global _PREPARED, _TRIED
    from torch_roofline._gc import import_off_stack

    if _TRIED:  # once per process (an import that failed is not tried for every call)
        return
    _TRIED = True
    defer_dynamo_import()
    import_off_stack("torch.fx.experimental.symbolic_shapes")
    _PREPARED = _DEFERRED and "torch.fx.experimental.symbolic_shapes" in sys.modules


def replays_prepared() -> bool:
    """Whether the imports a replay could start from the caller's stack are done: Dynamo
    imported, or deferred with the rest prepared (:func:`prepare_meta_replays`)."""
    return "torch._dynamo" in sys.modules or _PREPARED
