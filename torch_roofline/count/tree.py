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
                elif isinstance(y, (list, tuple)):
                    for z in y:  # aten's int lists (stride=[1, 1]) end here without a call
                        if isinstance(z, _Tensor):
                            out.append(z)
                        elif isinstance(z, (list, tuple, dict)):
                            out.extend(tensors(z))
                elif isinstance(y, dict):
                    out.extend(tensors(y))
        elif isinstance(x, dict):
            out.extend(tensors(*x.values()))
    return out


def shapes(x: Any) -> Any:
    """``x`` with every tensor replaced by its shape (containers rebuilt as list/tuple/dict).

    A list or tuple without tensors or nested containers (``stride=[1, 1]``) is returned as
    it is: nothing in it changes, and aten's int lists are the most common argument.
    """
    if isinstance(x, _Tensor):
        return x.shape
    if isinstance(x, (tuple, list)):
        for v in x:
            if isinstance(v, _CONTAINERS):
                break
        else:
            return x
        walked = [v.shape if isinstance(v, _Tensor) else shapes(v) if isinstance(v, _NESTED) else v for v in x]
        return walked if isinstance(x, list) else tuple(walked)
    if isinstance(x, dict):
        return {k: shapes(v) for k, v in x.items()}
    return x


_CONTAINERS = (_Tensor, list, tuple, dict)
_NESTED = (list, tuple, dict)
