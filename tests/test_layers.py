"""The package's import structure: stages import only earlier stages, and nothing imports in a circle.

The order (docs/architecture: issue 17): records and small helpers -> the stages (count, timing,
devices) -> analysis -> report -> entry points (profiler, offline, predict, traceset, the command
line) -> sinks (lightning, tensorboard). Every ``import`` of the package's own modules counts,
those inside functions too (an import deferred to call time is still a dependency).

``KNOWN_UPWARD`` / ``KNOWN_CYCLES`` list the exceptions, if any (none now): the test fails on
any other, and on a listed one that is gone (so the lists only shrink). Imports under
``if TYPE_CHECKING:`` are left out: only a type checker reads them.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections import defaultdict
from typing import Dict, Iterator, List, Optional, Set, Tuple

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "torch_roofline")

#: Module name prefixes per layer, earliest first (the longest matching prefix decides).
LAYERS: Tuple[Tuple[str, Tuple[str, ...]], ...] = (
    ("records", ("torch_roofline.records", "torch_roofline._module_names", "torch_roofline._numbers",
                 "torch_roofline._depth",
                 "torch_roofline._gc", "torch_roofline._io", "torch_roofline._progress", "torch_roofline._version",
                 "torch_roofline._lazy_dynamo", "torch_roofline._installed")),
    ("stages", ("torch_roofline.count", "torch_roofline.timing", "torch_roofline.devices")),
    ("analysis", ("torch_roofline.analysis",)),
    ("report", ("torch_roofline.report", "torch_roofline.plot", "torch_roofline.scalars")),
    ("entry points", ("torch_roofline", "torch_roofline.profiler", "torch_roofline.offline", "torch_roofline.trace_file", "torch_roofline.predict",
                      "torch_roofline.traceset", "torch_roofline.ranks", "torch_roofline.cli",
                      "torch_roofline.__main__")),
    ("sinks", ("torch_roofline.lightning", "torch_roofline.tensorboard")),
)

KNOWN_UPWARD: Set[Tuple[str, str]] = set()
KNOWN_CYCLES: Set[frozenset] = set()


def _module_name(path: str) -> str:
    rel = os.path.relpath(path, os.path.dirname(PACKAGE))[:-3].replace(os.sep, ".")
    return rel[: -len(".__init__")] if rel.endswith(".__init__") else rel


def _modules() -> Dict[str, str]:
    out = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                out[_module_name(path)] = path
    return out


def _type_checking_only(tree: ast.AST) -> Set[int]:
    """ids of the import nodes under ``if TYPE_CHECKING:`` (annotations only: never run)."""
    out: Set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING":
            out.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return out


def _imports(path: str, modules: Set[str]) -> Iterator[str]:
    """The package's modules that the file imports (``from pkg import sub`` names the submodule),
    at import time or inside functions; not those only a type checker reads."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    skip = _type_checking_only(tree)
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("torch_roofline"):
            subs = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules]
            yield from subs
            if len(subs) < len(node.names):
                yield node.module
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.startswith("torch_roofline"))


def _graph() -> Dict[str, Set[str]]:
    modules = _modules()
    graph: Dict[str, Set[str]] = defaultdict(set)
    for name, path in modules.items():
        graph[name].update(t for t in _imports(path, set(modules)) if t != name)
    return graph


def _layer(name: str) -> Optional[int]:
    best: Optional[Tuple[int, int]] = None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (name == p or name.startswith(p + ".")) and (best is None or len(p) > best[1]):
                best = (i, len(p))
    return None if best is None else best[0]


def _cycles(graph: Dict[str, Set[str]]) -> List[Set[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on: Set[str] = set()
    found: List[Set[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = set()
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.add(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    found.append(comp)
    return found


def test_every_module_has_a_layer():
    assert [m for m in _modules() if _layer(m) is None] == []


def test_no_module_imports_a_later_stage():
    graph = _graph()
    upward = {(src, dst) for src, targets in graph.items() for dst in targets
              if _layer(dst) is not None and _layer(dst) > _layer(src)}
    names = [n for n, _ in LAYERS]
    new = sorted(upward - KNOWN_UPWARD)
    assert not new, "imports from a later stage: " + "; ".join(
        f"{s} ({names[_layer(s)]}) imports {d} ({names[_layer(d)]})" for s, d in new)
    assert KNOWN_UPWARD <= upward, f"gone, take them off KNOWN_UPWARD: {sorted(KNOWN_UPWARD - upward)}"


def test_no_import_cycles():
    cycles = {frozenset(c) for c in _cycles(_graph())}
    assert not cycles - KNOWN_CYCLES, f"import cycles: {[sorted(c) for c in cycles - KNOWN_CYCLES]}"
    assert KNOWN_CYCLES <= cycles, f"gone, take them off KNOWN_CYCLES: {[sorted(c) for c in KNOWN_CYCLES - cycles]}"


def test_the_checks_see_a_cycle_and_an_upward_import():
    # The walker itself: a made-up graph with one circle, and a stage module importing the CLI.
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
    assert _layer("torch_roofline.cli.trace") > _layer("torch_roofline.timing.trace")
    assert _layer("torch_roofline.devices.placement") < _layer("torch_roofline.analysis")


def _import_each_alone(names: List[str]) -> "subprocess.Popen[str]":
    script = (
        "import importlib, sys, traceback\n"
        "import torch\n"
        "bad = []\n"
        f"for name in {names!r}:\n"
        "    for loaded in [m for m in sys.modules if m == 'torch_roofline' or m.startswith('torch_roofline.')]:\n"
        "        del sys.modules[loaded]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception:\n"
        "        bad.append(name + ': ' + traceback.format_exc().splitlines()[-1])\n"
        "print('\\n'.join(bad))\n"
    )
    return subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_every_module_imports_alone():
    # Each module imported first, in a package state where nothing of ours was imported before
    # (our modules dropped from sys.modules between imports; torch and the rest stay loaded so
    # the loop takes seconds): an import that only works after another module ran fails here.
    # Two processes, half the modules each (the rest of the suite runs on one core).
    names = sorted(m for m in _modules() if m != "torch_roofline.__main__")  # __main__ runs the CLI
    procs = [_import_each_alone(names[k::2]) for k in range(2)]
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
        assert out.strip() == "", "modules that do not import alone:\n" + out
