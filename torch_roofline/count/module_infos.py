"""The module tree of a report: each module's name, class, depth and parameters (its own and,
shared parameters counted once, those of its subtree), in ``named_modules()`` order.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from torch import nn

from torch_roofline._depth import named_modules as _named_modules
from torch_roofline.records import ModuleInfo, frozen_record

__all__ = ["module_infos"]


def module_infos(model: Optional[nn.Module], root_type: Optional[str] = None,
                 named: Optional[Sequence[Tuple[str, nn.Module]]] = None) -> List[ModuleInfo]:
    """Static facts of every module (``named_modules`` order, shared modules once).

    Parameter counts are inclusive of children; a parameter shared by two modules is
    counted once per subtree. ``named``: ``model.named_modules()`` when the caller already
    has it.

    Computed bottom-up in one pass: a module's inclusive counts are its own plus its
    children's. That sum counts a shared parameter (or a module reachable twice) once per
    path, so the pass also counts parameter references; when they outnumber the distinct
    parameters, the sharing is resolved exactly with per-subtree parameter sets.
    """
    if model is None:
        return [ModuleInfo("", root_type or "step", 0, 0)]
    if named is None:
        named = _named_modules(model)
    sizes: Dict[int, Tuple[int, int]] = {}  # id(param) -> (elements, bytes)
    own: Dict[int, Tuple[int, int, int]] = {}  # id(module) -> own (elements, bytes, parameters)
    for _, mod in named:
        n = b = 0
        ids: List[int] = []
        for p in mod._parameters.values():
            if p is not None and id(p) not in ids:
                ids.append(id(p))
                size = sizes.get(id(p))
                if size is None:
                    elements = p.numel()
                    size = sizes[id(p)] = (elements, elements * p.element_size())
                n += size[0]
                b += size[1]
        own[id(mod)] = (n, b, len(ids))
    # id(module) -> (elements, bytes, references), children first, without recursion (any depth)
    inclusive = _bottom_up(model, lambda mod: own.get(id(mod), (0, 0, 0)), _add_totals)
    shared = inclusive[id(model)][2] != len(sizes)
    exact = _shared_parameter_totals(model, sizes) if shared else None
    infos = []
    for name, mod in named:
        n, b, _ = exact[id(mod)] if exact is not None else inclusive[id(mod)]
        mine = own[id(mod)]
        infos.append(frozen_record(ModuleInfo, dict(
            name=name,
            type=type(mod).__name__,
            params=n,
            param_bytes=b,
            self_params=mine[0],
            self_param_bytes=mine[1],
        )))
    return infos


def _shared_parameter_totals(model: nn.Module, sizes: Mapping[int, Tuple[int, int]]) -> Dict[int, Tuple[int, int, int]]:
    """id(module) -> (elements, bytes, distinct parameters) of its subtree, each parameter once."""
    sets = _bottom_up(model, lambda mod: {id(p) for p in mod._parameters.values() if p is not None},
                      lambda mine, child: mine | child)
    return {
        key: (sum(sizes[i][0] for i in ids), sum(sizes[i][1] for i in ids), len(ids))
        for key, ids in sets.items()
    }


def _add_totals(mine: Tuple[int, int, int], child: Tuple[int, int, int]) -> Tuple[int, int, int]:
    return mine[0] + child[0], mine[1] + child[1], mine[2] + child[2]


def _bottom_up(model: nn.Module, own: Callable[[nn.Module], Any], combine: Callable[[Any, Any], Any]) -> Dict[int, Any]:
    """id(module) -> ``own(module)`` combined with each child's value, children first.

    An explicit stack, not recursion: a model nested deeper than Python's recursion limit
    allows for our frames (the plain forward runs to ~250 ``Sequential`` levels) still counts.
    """
    done: Dict[int, Any] = {}
    opened: set = set()
    stack: List[Tuple[nn.Module, bool]] = [(model, False)]
    while stack:
        mod, children_done = stack.pop()
        if id(mod) in done or (not children_done and id(mod) in opened):
            continue
        children = [c for c in mod._modules.values() if c is not None]
        if not children_done:
            opened.add(id(mod))
            stack.append((mod, True))
            stack.extend((c, False) for c in reversed(children) if id(c) not in done)
            continue
        value = own(mod)
        for child in children:
            if id(child) in done:
                value = combine(value, done[id(child)])
        done[id(mod)] = value
    return done
