"""Fast walks over aten op arguments.

An aten op's arguments and outputs are tensors, scalars, and lists/tuples (rarely dicts)
of them. torch's general pytree machinery costs several microseconds per call, which is
most of the counter's per-op overhead; these walks handle exactly the containers aten
uses and nothing else.
"""

from __future__ import annotations

from typing import Any, List

import torch

__all__ = ["tensors", "shapes"]

_Tensor = torch.Tensor


def tensors(*trees: Any) -> List[torch.Tensor]:
    """Every tensor in ``trees`` (lists, tuples and dict values are descended into), in order."""
    out: List[torch.Tensor] = []
    stack = list(reversed(trees))
    while stack:
        x = stack.pop()
        if isinstance(x, _Tensor):
            out.append(x)
        elif isinstance(x, (list, tuple)):
            stack.extend(reversed(x))
        elif isinstance(x, dict):
            stack.extend(reversed(list(x.values())))
    return out


def shapes(x: Any) -> Any:
    """``x`` with every tensor replaced by its shape (containers rebuilt as list/tuple/dict)."""
    if isinstance(x, _Tensor):
        return x.shape
    if isinstance(x, tuple):
        return tuple(shapes(v) for v in x)
    if isinstance(x, list):
        return [shapes(v) for v in x]
    if isinstance(x, dict):
        return {k: shapes(v) for k, v in x.items()}
    return x
