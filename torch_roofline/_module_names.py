"""Module names: how a table shows one, the modules that enclose it, and module calls counted
from runs of ops. One place for each, shared by counting, timing, the analysis and the reports.

A module is named by its fully qualified name in the model (``"layer1.0.conv1"``; the root is
``""``). Its depth is the number of dotted parts (the root 0); its ancestry (a *scope*) runs
from the root to the module itself.

Example::

    >>> module_ancestry((), "layer1.0")
    ('', 'layer1', 'layer1.0')
    >>> module_depth("layer1.0"), shown_name(" pad")
    (2, "' pad'")
"""

from __future__ import annotations

from collections import Counter
from typing import Dict, Iterable, Optional, Set, Tuple

from torch_roofline.records import OpTiming

__all__ = ["shown_name", "module_depth", "module_ancestry", "parent_name", "parent_names", "count_runs", "op_runs"]


def shown_name(name: str) -> str:
    """A module name (or ModuleDict key) as a table shows it: as written when it is printable
    and has no leading or trailing space; otherwise its Python ``repr`` (quoted, control
    characters, line breaks and tabs escaped), so each module stays one row and ``" a"`` is
    not shown as ``"a"``. JSON, CSV and DataFrames keep names exactly as written.

    Example::

        >>> shown_name("layer1.0"), shown_name("new\\nline"), shown_name(" pad")
        ('layer1.0', "'new\\\\nline'", "' pad'")
    """
    if name.isprintable() and name == name.strip():
        return name
    return repr(name)


def module_depth(name: str) -> int:
    """How deep a module sits in the tree: the root ``""`` is 0, ``"layer1.0"`` is 2."""
    return 0 if name == "" else name.count(".") + 1


def module_ancestry(scope: Tuple[str, ...], module: str) -> Tuple[str, ...]:
    """A call's module stack with the root first and its own module last, each once.

    ``scope``: the stack as recorded (may lack the root or the module itself; empty: built
    from the dotted parts of ``module``)."""
    if not scope:
        parts = module.split(".") if module else []
        scope = ("",) + tuple(".".join(parts[: i + 1]) for i in range(len(parts)))
    if scope[0] != "":
        scope = ("",) + tuple(scope)
    if scope[-1] != module:
        scope = tuple(scope) + (module,)
    return tuple(dict.fromkeys(scope))


def parent_name(name: str) -> str:
    """The dotted module name's parent: ``"layer1.0"`` -> ``"layer1"``, ``"fc"`` -> ``""`` (the
    root; the root's own parent is the root)."""
    return name.rpartition(".")[0]


def parent_names(names: Iterable[str]) -> Set[str]:
    """Every proper ancestor of the dotted module ``names`` (``"a.b"`` -> ``""``, ``"a"``):
    a name not in the set is a leaf among ``names``."""
    parents: Set[str] = set()
    for name in names:
        while name:  # up to the first ancestor already known: linear in the names, at any depth
            name = parent_name(name)
            if name in parents:
                break
            parents.add(name)
    return parents


def count_runs(items: Iterable[Tuple[str, int, Tuple[str, ...], int]],
               prev: Optional[Dict[Tuple[str, int], frozenset]] = None) -> Counter:
    """Calls per (module, phase) as runs of consecutive ops whose scope holds the module; items
    are ``(phase, index, scope, step)``: a new step starts new runs. ``prev``: the modules of
    the last op of each (phase, step) before these items (a run they continue is not counted
    again), updated in place."""
    counts: Counter = Counter()
    prev = {} if prev is None else prev
    for phase, _, scope, step in sorted(items, key=lambda x: (x[0], x[1])):
        cur = frozenset(scope)
        for m in cur - prev.get((phase, step), frozenset()):
            counts[(m, phase)] += 1
        prev[(phase, step)] = cur
    return counts


def op_runs(op_timings: Iterable[OpTiming], prev: Optional[Dict[Tuple[str, int], frozenset]] = None) -> Counter:
    """``(module, phase) -> calls``, summed over the steps the rows cover: runs of consecutive
    op calls inside each module, each step's counted apart (the module calls of a trace
    without module ranges). ``prev``: where the rows continue earlier ones (the slices of one
    long step, read in order), the last rows' modules per (phase, step), updated in place:
    a run across the slices is one call."""
    return count_runs(((t.phase, t.index, module_ancestry(tuple(t.scope), t.module), t.step) for t in op_timings),
                      prev)
