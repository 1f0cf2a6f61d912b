"""Deep models: no recursion limit of our own.

A model nested a few hundred modules deep runs without us; the package must handle it too
(issue 14). Two helpers:

* :func:`named_modules` walks the module tree with an explicit stack (``nn.Module.
  named_modules`` is a recursive generator: one frame per level, on top of the caller's).
* :func:`hooked_call_headroom` raises the interpreter's recursion limit while a step runs
  under our global module hooks. A plain ``Sequential`` level costs three Python frames
  (``_wrapped_call_impl``, ``_call_impl``, ``forward``); with any global forward hook torch
  adds a fourth (``inner``), so a hooked forward fits in 4/3 of the frames the plain one
  needs. The limit is raised by a third (plus room for the hooks, the dispatch mode and
  fake tensors at the deepest op) and restored on exit. A RecursionError raised inside
  torch's C++ dispatch (our ``__torch_dispatch__``, a hook under autograd) cannot unwind:
  the process aborts, which is why the room is made before the step, not after a failure.

Limits: the limit is process-wide (another thread running meanwhile sees it raised too);
a model that overflows the C stack without us (a limit set far above the default) still
does with us.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any, Iterator, List, Tuple

__all__ = ["named_modules", "hooked_call_headroom", "HOOK_FRAMES_PER_LEVEL", "HEADROOM_MARGIN_FRAMES"]

#: Frames a plain nested module call costs, and the one our global hooks add (torch's ``inner``).
PLAIN_FRAMES_PER_LEVEL = 3
HOOK_FRAMES_PER_LEVEL = 1
#: Frames used at the deepest op by our hooks, dispatch mode, formulas and fake tensors.
HEADROOM_MARGIN_FRAMES = 300


def named_modules(root: Any) -> List[Tuple[str, Any]]:
    """``list(root.named_modules())`` without recursion: same names, order and sharing.

    Pre-order, children in registration order, ``None`` children skipped, a module reachable
    twice listed once under its first name (as ``nn.Module.named_modules`` does).

    Example::

        >>> import torch
        >>> [n for n, _ in named_modules(torch.nn.Sequential(torch.nn.Linear(2, 2)))]
        ['', '0']
    """
    seen = set()
    out: List[Tuple[str, Any]] = []
    stack: List[Tuple[str, Any]] = [("", root)]
    while stack:
        prefix, module = stack.pop()
        if id(module) in seen:
            continue
        seen.add(id(module))
        out.append((prefix, module))
        children = [(f"{prefix}.{name}" if prefix else name, child)
                    for name, child in module._modules.items() if child is not None]
        stack.extend(reversed(children))
    return out


@contextlib.contextmanager
def hooked_call_headroom() -> Iterator[None]:
    """Raise the recursion limit while a step runs under our module hooks; restore it after.

    The new limit is the current one times (3 + 1) / 3 plus :data:`HEADROOM_MARGIN_FRAMES`:
    whatever nesting the plain forward fits in the current limit, the hooked one fits in the
    new one. Re-entrant; a limit changed by someone else meanwhile is left as they set it.
    """
    before = sys.getrecursionlimit()
    raised = before + before * HOOK_FRAMES_PER_LEVEL // PLAIN_FRAMES_PER_LEVEL + HEADROOM_MARGIN_FRAMES
    sys.setrecursionlimit(raised)
    try:
        yield
    finally:
        if sys.getrecursionlimit() == raised:
            sys.setrecursionlimit(before)
