"""Module and phase ranges: profiler annotations that name where each op ran.

:class:`ModuleRanges` wraps the ``forward`` of every module of one or several models (an
instance attribute, removed on exit) so that each call runs inside a profiler range named
``"roofline::<fqn>"`` (the root module is ``"roofline::"``). :func:`phase_range` wraps a
region we run ourselves (the optimizer step, Lightning's closure) in
``"roofline::phase::<name>"``. A profiler session records those ranges; the attribution
stage (:mod:`torch_roofline.timing.attribution`) reads them back from the trace to tell
which module and which phase every op and kernel belongs to.

**Cost.** A range is a ``torch._C._profiler._RecordFunctionFast`` (a C++ record function,
about a microsecond with the profiler on, a few hundred nanoseconds off) entered by a small
Python wrapper around ``forward``. Wrapping ``forward`` keeps ``Module.__call__`` on its fast
path: module hooks (``register_forward_pre_hook``, and above all the global ones) send every
module call through the slow path of ``Module._call_impl``, which cost ~10-17 % of a batch-1
efficientnet_b0 / mobilenet_v3_small forward on this project's CPU before the profiler
recorded anything; the wrapper costs ~1-5 %. (The first version used ``record_function``
objects from hooks: ~35 µs per module call.)

**Names.** A module name that the trace format keeps intact (ASCII letters, digits, ``_``,
``.``, ``-``) is its own label; any other (non-ASCII, spaces, quotes, newlines, ...) gets the
label ``"roofline::#<k>"`` and the table ``k -> name`` (:attr:`ModuleRanges.labels`) is written
into the trace's metadata (:data:`LABELS_KEY`), so every module keeps its time and is shown
as written.

Backward time needs no ranges: the trace links every backward op to the forward op that
created it through the autograd sequence number, so the attribution stage puts backward ops
under the module whose forward range enclosed that forward op.

Limits:
    * One range per module call; a module shared under several names is ranged once, under
      the first name ``named_modules()`` yields.
    * A module whose ``forward`` is replaced on the instance *during* the block (after we
      wrapped it) runs unranged until it is restored; its ops land on the enclosing module.
    * ``torch.jit.script``'ed modules cannot be wrapped (no Python forward): their ops land on
      the enclosing module.
    * ``torch.compile``: a compiled module (what ``torch.compile(module)`` returns, or a module
      after ``module.compile()``) gets one range around each compiled call, and its submodules
      none inside the compiled code: wrapping code that Dynamo traced would change what its
      guards check and make it compile again inside the profiled steps. The fused kernels it
      runs are fused across its submodules anyway. Its submodules called from eager code (a
      LightningModule's ``training_step`` calling ``self.encoder(x)`` after ``self.compile()``,
      which compiles only ``self(x)``) get their ranges, through ``_compiled_call_impl``, which
      Dynamo does not guard on. A LightningModule that Lightning compiled (``trainer.fit(torch.compile(m))``)
      gets no range at all: its compiled steps call ``forward`` from inside the traced code. A
      top-level ``torch.compile`` result is attributed under its
      original module's names (``fc1``, not ``_orig_mod.fc1``). A module compiled
      separately and passed uncompiled (``RooflineProfiler(m)`` while calling
      ``torch.compile(m)``) cannot be told apart: it is wrapped and compiles again (the
      report's notes say so).

Example::

    with ModuleRanges(model):
        with torch.profiler.profile() as prof:
            model(x)
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from torch_roofline._installed import Installed
from torch_roofline._depth import named_modules as _named_modules
from torch_roofline.records import PHASES

__all__ = [
    "RANGE_PREFIX",
    "PHASE_PREFIX",
    "LABELS_KEY",
    "Models",
    "ModuleRanges",
    "model_tree",
    "compiled_modules",
    "original_module",
    "phase_range",
    "module_range_name",
    "parse_range_name",
    "read_labels",
    "labels_metadata",
]

RANGE_PREFIX = "roofline::"
"""Prefix of every range this package records; a module range is ``RANGE_PREFIX + label``."""

PHASE_PREFIX = RANGE_PREFIX + "phase::"
"""Prefix of phase ranges: ``"roofline::phase::optimizer"``, ``"roofline::phase::backward"``."""

LABELS_KEY = "torch_roofline_module_labels"
"""Trace metadata key holding the names given a ``#<k>`` label (:func:`labels_metadata`)."""

#: What a profiler attributes to: one module, several (a mapping name -> module, or a
#: sequence named by class name), or nothing.
Models = Union[nn.Module, Mapping[str, nn.Module], Sequence[nn.Module], None]

_SAFE = re.compile(r"^[A-Za-z0-9_.\-]*$")
_RecordFunctionFast = getattr(torch._C._profiler, "_RecordFunctionFast", None)
_is_compiling = getattr(getattr(torch, "compiler", None), "is_compiling", lambda: False)


def module_range_name(fqn: str) -> str:
    """Range name of the module called ``fqn`` (``""`` for the root): ``"roofline::" + fqn``."""
    return RANGE_PREFIX + fqn


def parse_range_name(name: str, labels: Optional[Mapping[str, str]] = None) -> Optional[Tuple[str, str]]:
    """Classify a range name recorded in a trace.

    Args:
        name: the event's name.
        labels: ``{"#<k>": module name}`` from the trace (:func:`read_labels`), for names that
            were recorded under a safe label.

    Returns:
        ``("phase", phase)`` for a phase range, ``("module", fqn)`` for a module range,
        ``None`` for a range this package did not record.

    Example::

        >>> parse_range_name("roofline::layer1.0")
        ('module', 'layer1.0')
        >>> parse_range_name("roofline::phase::optimizer")
        ('phase', 'optimizer')
        >>> parse_range_name("roofline::#0", {"#0": "encoder block"})
        ('module', 'encoder block')
    """
    if not name.startswith(RANGE_PREFIX):
        return None
    if name.startswith(PHASE_PREFIX):
        return ("phase", name[len(PHASE_PREFIX):])
    label = name[len(RANGE_PREFIX):]
    if labels and label.startswith("#") and label in labels:
        return ("module", labels[label])
    return ("module", label)


def labels_metadata(labels: Mapping[str, str]) -> Dict[str, Any]:
    """The trace-metadata value for ``{label: module name}``: each name as the hex of its UTF-8.

    Kineto writes metadata values into the trace verbatim except that it turns every backslash
    into a slash, which breaks any JSON escape (a quote or a newline inside a name); hex digits
    need none.
    """
    return {"encoding": "utf-8-hex", "labels": {k: v.encode("utf-8").hex() for k, v in labels.items()}}


def read_labels(metadata: Mapping[str, Any]) -> Dict[str, str]:
    """The ``{label: module name}`` table a trace carries under :data:`LABELS_KEY` (or ``{}``)."""
    raw = metadata.get(LABELS_KEY)
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return {}
    if not isinstance(raw, Mapping) or raw.get("encoding") != "utf-8-hex" or not isinstance(raw.get("labels"), Mapping):
        return {}
    out = {}
    for label, value in raw["labels"].items():
        try:
            out[str(label)] = bytes.fromhex(str(value)).decode("utf-8")
        except ValueError:
            continue
    return out


@contextlib.contextmanager
def phase_range(name: str) -> Iterator[None]:
    """Record the enclosed region as the phase ``name`` (``"forward"``, ``"backward"`` or
    ``"optimizer"``).

    Ops inside a ``roofline::phase::optimizer`` range are attributed to the optimizer
    phase (module root ``""``); ``roofline::phase::forward`` marks work run inside an
    optimizer step (Lightning's closure) as the step's forward and backward, not optimizer
    work.

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


def model_tree(models: Models, caller: str = "ModuleRanges") -> Tuple[Optional[nn.Module], str]:
    """The one module tree whose names the report uses, and the root's type name.

    One module: itself. Several: an ``nn.ModuleDict`` holding them (names from the mapping's
    keys, or the class names of a sequence, ``_2``, ``_3`` ... for repeats), whose root
    ``""`` is the step (type ``"step"``). ``None``: no tree (ops attributed to the root).
    """
    if models is None:
        return None, "step"
    if isinstance(models, nn.Module):
        tree = original_module(models)
        return tree, type(tree).__name__
    if isinstance(models, Mapping):
        items = list(models.items())
    elif isinstance(models, (list, tuple)):
        items, seen = [], {}
        for m in models:
            base = type(m).__name__
            seen[base] = seen.get(base, 0) + 1
            items.append((base if seen[base] == 1 else f"{base}_{seen[base]}", m))
    else:
        raise TypeError(
            f"{caller}(model=...): expected an nn.Module, a mapping of names to modules, a list of modules or "
            f"None, got {type(models).__name__}"
        )
    bad = [name for name, m in items if not isinstance(m, nn.Module)]
    if bad or not items:
        raise TypeError(
            f"{caller}(model=...): every value must be an nn.Module ({'none given' if not items else bad[:3]}); "
            "e.g. RooflineProfiler({'generator': G, 'discriminator': D})"
        )
    for name, _ in items:
        if not isinstance(name, str) or not name or "." in name:
            raise ValueError(
                f"{caller}(model=...): module names must be non-empty strings without '.', got {name!r}"
            )
    tree = nn.ModuleDict()
    for name, m in items:
        tree._modules[name] = m  # not add_module: no name checks beyond ours, no re-registration
    return tree, "step"


def original_module(module: nn.Module) -> nn.Module:
    """The module ``torch.compile`` wrapped (``OptimizedModule._orig_mod``), else ``module``."""
    inner = module
    while _is_optimized(inner):
        inner = inner._orig_mod
    return inner


def _is_optimized(module: Any) -> bool:
    return isinstance(getattr(module, "_orig_mod", None), nn.Module) and type(module).__name__ == "OptimizedModule"


def compiled_modules(root: Optional[nn.Module]) -> List[Tuple[str, nn.Module]]:
    """``(name, module)`` of the parts of ``root`` that run under ``torch.compile``: modules
    compiled in place (``module.compile()``) and ``torch.compile`` results held as submodules;
    the outermost of each, in ``named_modules()`` order (``""`` = the root)."""
    if root is None:
        return []
    found: List[Tuple[str, nn.Module]] = []
    for fqn, module in _named_modules(root):
        if any(_within(fqn, name) for name, _ in found):
            continue
        if _is_optimized(module) or getattr(module, "_compiled_call_impl", None) is not None or _lightning_compiled(module):
            found.append((fqn, module))
    return found


def _within(fqn: str, name: str) -> bool:
    """True when module ``fqn`` is module ``name`` or inside it (``""`` holds every module)."""
    return not name or fqn == name or fqn.startswith(name + ".")


def _lightning_compiled(module: nn.Module) -> bool:
    """A LightningModule that Lightning's ``from_compiled`` (``trainer.fit(torch.compile(m))``)
    gave compiled ``forward`` and ``*_step`` methods: Dynamo guards on its ``forward``."""
    ctx = getattr(module, "_compiler_ctx", None)
    return isinstance(ctx, dict) and ctx.get("compiler") == "dynamo"


class ModuleRanges(Installed):
    """Context manager: a profiler range around every module call of ``models``.

    Args:
        models: one ``nn.Module``, a mapping ``{name: module}`` or a list of modules
            (:func:`model_tree`), or ``None`` (no ranges).

    On exit every wrapper is removed (the instance attribute ``forward`` is restored to what
    it was), exceptions included; a forward that raises closes its range as the exception
    passes (the range is a ``with`` block inside the wrapper).

    Attributes:
        tree: the module tree whose names the ranges carry (``None`` without models).
        labels: ``{"#<k>": module name}`` for names recorded under a safe label.

    Example::

        with ModuleRanges(model):
            with torch.profiler.profile() as prof:
                model(x)
    """

    def __init__(self, models: Models) -> None:
        if models is not None and not isinstance(models, (nn.Module, Mapping, list, tuple)):
            raise TypeError(
                f"ModuleRanges(model=...): expected a torch.nn.Module (or a mapping / list of them, or None), "
                f"got {type(models).__name__}; pass the model itself, e.g. ModuleRanges(net)."
            )
        self.tree, self.root_type = model_tree(models)
        #: what ``torch.compile`` returned for the root (the module given), when given that way
        self.compiled_root = models if isinstance(models, nn.Module) and _is_optimized(models) else None
        #: ``(name, module)`` of the compiled parts of the tree (see :func:`compiled_modules`);
        #: the root ``""`` when the root was given as a ``torch.compile`` result
        self.compiled: List[Tuple[str, nn.Module]] = (
            [("", self.compiled_root)] if self.compiled_root is not None else compiled_modules(self.tree))
        self.labels: Dict[str, str] = {}
        self._label_of: Dict[str, str] = {}
        self._wrapped: List[Tuple[Any, ...]] = []  # (module, had, previous, wrapper[, attribute])
        self._active = False
        if self.tree is not None:  # labels known up front: the session writes them into the trace
            for fqn, _ in _named_modules(self.tree):
                self.label_of(fqn)

    @property
    def active(self) -> bool:
        """True while the wrappers are installed."""
        return self._active

    def in_compiled(self, fqn: str) -> bool:
        """True for a module strictly inside a compiled part (it gets no range of its own)."""
        return any(_within(fqn, name) and fqn != name for name, _ in self.compiled)

    def label_of(self, fqn: str) -> str:
        """The range label of the module ``fqn``: the name itself when the trace keeps it
        intact, else ``"#<k>"`` (recorded in :attr:`labels`)."""
        if _SAFE.match(fqn):
            return fqn
        label = self._label_of.get(fqn)
        if label is None:
            label = self._label_of[fqn] = f"#{len(self.labels)}"
            self.labels[label] = fqn
        return label

    def _begin(self) -> None:
        if self._active:
            raise RuntimeError(
                "ModuleRanges is already active; use one instance per `with` block "
                "(create a new ModuleRanges(model) for a nested block)."
            )

    def _install(self) -> None:
        self._active = True
        if self.tree is None:
            return
        compiled = self.compiled
        # named_modules() yields a shared module once, under its first name; the
        # synthetic ModuleDict of several models is never called: no range of its own.
        for fqn, module in _named_modules(self.tree):
            if fqn == "" and self.root_type == "step":
                continue
            if any(_within(fqn, name) for name, _ in compiled):
                if not any(fqn == name for name, _ in compiled):
                    self._wrap_inside_compiled(module, RANGE_PREFIX + self.label_of(fqn))
                continue  # compiled: one range around the compiled call, below
            self._wrap(module, RANGE_PREFIX + self.label_of(fqn))
        for fqn, module in compiled:
            self._wrap_compiled(module, RANGE_PREFIX + self.label_of(fqn))

    def _wrap(self, module: nn.Module, name: str) -> None:
        if isinstance(module, torch.jit.ScriptModule):
            return  # no Python forward to wrap
        had = "forward" in module.__dict__
        previous = module.__dict__.get("forward")
        inner = module.forward
        forward = _ranged(inner, name)
        module.forward = forward
        self._wrapped.append((module, had, previous, forward))

    def _wrap_compiled(self, module: nn.Module, name: str) -> None:
        """One range around each call of compiled code, outside what Dynamo traced: the
        ``forward`` of a ``torch.compile`` result, or the compiled call of ``module.compile()``.
        A LightningModule compiled by Lightning gets none: its compiled steps call ``forward``
        from inside the traced code."""
        if _lightning_compiled(module) and not _is_optimized(module):
            return
        attr = "forward" if _is_optimized(module) else "_compiled_call_impl"
        had = attr in module.__dict__
        previous = module.__dict__.get(attr)
        wrapper = _ranged(getattr(module, attr), name)
        object.__setattr__(module, attr, wrapper)  # not nn.Module.__setattr__: a plain attribute
        self._wrapped.append((module, had, previous, wrapper, attr))

    def _wrap_inside_compiled(self, module: nn.Module, name: str) -> None:
        """A range around the calls of ``module`` made from eager code (a LightningModule's
        ``training_step`` calling ``self.encoder(x)`` after ``self.compile()``), none inside
        compiled code: the wrapper goes in ``module._compiled_call_impl``, which ``nn.Module``
        calls instead of ``_call_impl`` when set and which Dynamo neither traces nor guards on
        (no recompile: tests/timing/test_compile.py), while ``forward`` stays untouched for Dynamo's
        guards. A module compiled in place itself keeps its compiled call unranged."""
        attr = "_compiled_call_impl"
        if isinstance(module, torch.jit.ScriptModule) or getattr(module, attr, 0) is not None:
            return  # no such attribute (an old torch), or compiled itself
        had, previous = attr in module.__dict__, module.__dict__.get(attr)
        wrapper = _ranged(module._call_impl, name)
        object.__setattr__(module, attr, wrapper)
        self._wrapped.append((module, had, previous, wrapper, attr))

    def _remove(self) -> None:
        wrapped, self._wrapped = self._wrapped, []
        for module, had, previous, forward, *attr in reversed(wrapped):
            key = attr[0] if attr else "forward"
            if module.__dict__.get(key) is not forward:
                continue  # replaced by someone else meanwhile: theirs stays
            if had:
                object.__setattr__(module, key, previous)
            else:
                delattr(module, key)
        self._active = False


def _ranged(inner: Any, name: str) -> Any:
    """``inner`` run inside a profiler range called ``name`` (signature and name kept)."""
    record = _RecordFunctionFast if _RecordFunctionFast is not None else torch.autograd.profiler.record_function
    compiling = _is_compiling

    def forward(*args: Any, **kwargs: Any) -> Any:
        if compiling():  # torch.compile traces through: no range inside a compiled graph
            return inner(*args, **kwargs)
        with record(name):
            return inner(*args, **kwargs)

    functools.update_wrapper(forward, inner)  # name, doc; __wrapped__ for inspect.signature
    return forward
