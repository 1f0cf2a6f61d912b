"""Which modules a torch.compile kernel's ops came from, read from torch's stack traces.

With provenance tracking on (``torch._inductor.config.trace.provenance_tracking_level = 1``)
a compiled graph keeps, for every kernel, the Python stack traces of the ops it computes
(``CompiledFxGraph.inductor_provenance_stack_traces_str``: JSON ``{"<kernel>:<debug handle>":
["  File \\"m.py\\", line 9, in forward\\n    return self.ln(x + self.fc(x))\\n
^^^^^^^^^^\\n", ...]}``), for forward and backward graphs alike (a backward op has its
forward op's trace). The first frame is the compiled module's ``forward``; the part of each
line the caret marks is the call that led to the next frame, or, in the last frame, the
expression that made the op.

A trace gives a module path by following the calls: a marked ``self.<attr>(...)`` (or
``self.layers[0](...)``) followed by a frame ``in forward`` enters the submodule ``<attr>``,
when the model's tree (:class:`ModuleTree`) confirms that the frame runs in the file of that
submodule's ``forward`` (not its lines: a graph from torch's compile cache keeps the line
numbers of the source it was first compiled from); a frame in another function (a method, a helper) stays in
the same module; anything else stops, leaving the op in the deepest module known to contain
it, an ancestor of the true one, never a wrong branch. That is where a call goes through a
container whose own frame torch leaves out (``self.layer1(x)`` of an ``nn.Sequential``: the
next frame is one of its blocks, which one is not said) or a loop variable (``block(x)``).
torch's own modules (``nn.Linear``) show no frame either: the last frame's marked
``self.fc(...)`` names them, taken when the tree says ``fc`` is a module (not
``self.weight.t()``). Without the tree (a saved trace), nothing is placed.

Where torch_roofline recorded the compile, each op's trace ends with a frame it added
(:data:`MODULE_FRAME`: ``in module:h.0.mlp.act``), the op's module as Dynamo traced it
(exact, loops over an ``nn.ModuleList`` included): that wins over following the frames.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

from torch_roofline.timing.ranges import original_module

__all__ = ["CallChain", "Frame", "ModuleTree", "read_stack_traces", "call_chain", "resolve_module", "common_parent", "json_object",
           "plain_name", "join_name", "MODULE_FRAME"]

#: The file name of the frame torch_roofline adds to an op's stack trace while it records a
#: compile (:func:`~torch_roofline.timing.inductor.remember_node_modules`): ``File
#: "<torch_roofline module>", line 0, in module:b1.fc``, the op's module as Dynamo traced it.
MODULE_FRAME = "<torch_roofline module>"

_FRAME = re.compile(r'^ *File "(?P<file>[^"]*)", line (?P<line>\d+), in (?P<func>\S+)\n'
                    r'(?P<code>[^\n]*)\n(?P<marks>[ ~^]*[~^][ ~^]*\n)?', re.M)
_SELF_CALL = re.compile(r"^self((?:\.[A-Za-z_]\w*|\[\d+\])+)\s*\(")


@dataclass(frozen=True)
class Frame:
    """Where a ``forward`` frame entered by a call runs: its file and line."""

    file: str
    line: int


@dataclass(frozen=True)
class CallChain:
    """One op's way down from the compiled module, read from its stack trace.

    Attributes:
        start: the first frame (the compiled module's ``forward``).
        entered: ``(attribute path, frame)`` of each submodule call followed into a ``forward``
            frame, each path relative to the module before (``(("b1", Frame(...)), ...)``).
        last_call: the last frame's marked ``self.<attr>(...)`` call (``"fc1"``), a module of
            torch's own when the module tree says so; ``None`` when the op was not made by
            such a call.
        complete: False when the chain stopped at a call it could not follow (the op lies
            somewhere below the module reached).
        module: the op's module relative to the compiled module, as Dynamo traced it (its
            ``nn_module_stack``), when torch_roofline recorded the compile
            (:data:`MODULE_FRAME`); ``None`` otherwise. It wins over the frames.
    """

    start: Frame
    entered: Tuple[Tuple[str, Frame], ...]
    last_call: Optional[str]
    complete: bool = True
    module: Optional[str] = None


def plain_name(name: str) -> str:
    """A module name without ``torch.compile``'s wrapper level (``"b1._orig_mod.fc"`` -> ``"b1.fc"``)."""
    return ".".join(part for part in name.split(".") if part != "_orig_mod") if "_orig_mod" in name else name


class ModuleTree:
    """The model's modules by name with the file of each one's ``forward``, to check a stack
    trace's calls against (module docstring).

    Args:
        files: module name (without ``torch.compile``'s ``_orig_mod`` level) -> the file its
            class's ``forward`` is defined in, ``None`` when it has none of its own.
    """

    def __init__(self, files: Mapping[str, Optional[str]]) -> None:
        self.files: Dict[str, Optional[str]] = dict(files)

    @classmethod
    def of(cls, named: Iterable[Tuple[str, Any]]) -> "ModuleTree":
        """The tree of ``(name, module)`` pairs (``named_modules()``)."""
        files: Dict[str, Optional[str]] = {}
        by_class: Dict[type, Optional[str]] = {}
        for name, module in named:
            kind = type(original_module(module))  # torch.compile's wrapper: the module it runs
            if kind not in by_class:
                code = getattr(getattr(kind, "forward", None), "__code__", None)
                by_class[kind] = code.co_filename if code is not None else None
            files.setdefault(plain_name(name), by_class[kind])
        return cls(files)

    def has(self, name: str) -> bool:
        """True when ``name`` is one of the model's modules."""
        return name in self.files

    def runs(self, name: str, frame: Frame) -> bool:
        """True when ``frame`` (a ``forward`` frame) lies in the file of module ``name``'s
        ``forward``: a call on an ``nn.Sequential`` whose own frame torch leaves out is
        followed by a frame in its block's file, not in torch's ``container.py``."""
        file = self.files.get(name)
        return file is not None and file == frame.file


def _attr_path(marked: str) -> Optional[str]:
    """``"self.layers[0].fc(x)"`` -> ``"layers.0.fc"``; ``None`` when not a call on ``self``."""
    match = _SELF_CALL.match(marked.strip())
    if match is None:
        return None
    path = match.group(1).replace("[", ".").replace("]", "").lstrip(".")
    return path[: -len(".forward")] if path.endswith(".forward") else path


def _marked(code: str, marks: Optional[str]) -> str:
    """The part of a source line its caret line marks (the whole line when unmarked)."""
    if not marks:
        return code.strip()
    start = len(marks) - len(marks.lstrip(" "))
    end = len(marks.rstrip(" \n"))
    return code[start:end]


def call_chain(trace: str) -> Optional[CallChain]:
    """The :class:`CallChain` of one stack trace; ``None`` when it has no frame or its first
    frame is not a ``forward`` (compiled code that is not a module's call)."""
    frames = [(m.group("func"), _marked(m.group("code"), m.group("marks")), Frame(m.group("file"), int(m.group("line"))))
              for m in _FRAME.finditer(trace)]
    marks = [func for func, _, frame in frames if frame.file == MODULE_FRAME and func.startswith("module:")]
    module = marks[-1][len("module:"):] if marks else None
    frames = [f for f in frames if f[2].file != MODULE_FRAME]
    if not frames or frames[0][0] != "forward":
        return None if module is None else CallChain(Frame("", 0), (), None, False, module)
    start = frames[0][2]
    entered: List[Tuple[str, Frame]] = []
    for (_, marked, _), (next_func, _, next_frame) in zip(frames, frames[1:]):
        if next_func != "forward":
            continue  # a method or helper of the same module
        path = _attr_path(marked)
        if path is None:
            return CallChain(start, tuple(entered), None, False, module)
        entered.append((path, next_frame))
    return CallChain(start, tuple(entered), _attr_path(frames[-1][1]), True, module)


def json_object(text: Optional[str]) -> Dict[str, Any]:
    """The JSON object in one of a compiled graph's provenance texts; ``{}`` when there is no
    text or it is not a JSON object."""
    if not text:
        return {}
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def read_stack_traces(text: Optional[str]) -> Dict[str, Tuple[CallChain, ...]]:
    """``"<kernel>:<debug handle>"`` -> the call chains of the ops it computes, from
    ``inductor_provenance_stack_traces_str``; ``{}`` without it or when it is not that JSON."""
    out: Dict[str, Tuple[CallChain, ...]] = {}
    for key, traces in json_object(text).items():
        if isinstance(traces, list):
            chains = [call_chain(t) for t in traces if isinstance(t, str)]
            out[str(key)] = tuple(c for c in chains if c is not None)
    return out


def join_name(*names: str) -> str:
    """Module names joined below each other, ``""`` (the root) left out: ``("", "b1") -> "b1"``."""
    return ".".join(n for n in names if n)


def resolve_module(root: str, chain: CallChain, tree: ModuleTree) -> str:
    """The fully qualified name of the deepest module known to hold the op: its recorded
    module (:attr:`CallChain.module`) when ``tree`` has it; else ``root`` (the compiled
    module's name, ``""`` for the root) when the chain does not start in its ``forward``, else
    followed down as far as ``tree`` confirms each step."""
    if chain.module is not None and tree.has(join_name(root, chain.module)):
        return join_name(root, chain.module)
    if not tree.runs(root, chain.start):
        return root
    name = root
    for path, frame in chain.entered:
        candidate = join_name(name, path)
        if not tree.runs(candidate, frame):
            # a module whose own frame torch left out (a container): the op is inside it
            return candidate if tree.has(candidate) else name
        name = candidate
    if chain.complete and chain.last_call is not None:
        candidate = join_name(name, chain.last_call)
        if tree.has(candidate):
            name = candidate
    return name


def common_parent(names: Tuple[str, ...]) -> str:
    """The deepest module containing all of ``names`` (``("b1.fc", "b1.act")`` -> ``"b1"``)."""
    if not names:
        return ""
    parts = [n.split(".") if n else [] for n in names]
    common: List[str] = []
    for level in zip(*parts):
        if any(p != level[0] for p in level):
            break
        common.append(level[0])
    return ".".join(common)
