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
    """Every tensor in ``trees`` (lists, tuples and dict values are descended into), in order.

    Called several times per op: the common shapes (a flat tuple of tensors and scalars, one
    level of lists) are walked inline, deeper nesting recursively.
    """
    out: List[torch.Tensor] = []
    for x in trees:
        if isinstance(x, _Tensor):
            out.append(x)
        elif isinstance(x, (list, tuple)):
            for y in x:
                if isinstance(y, _Tensor):
                    out.append(y)
                elif isinstance(y, (list, tuple, dict)):
                    out.extend(tensors(y))
        elif isinstance(x, dict):
            out.extend(tensors(*x.values()))
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
