"""Replaying a recorded call under the counter: one replay per call signature (name, recorded
arguments, aliasing), its FLOPs, bytes and storage accesses kept for every call that repeats
it; calls the meta device cannot run counted from the allocations the profiler saw.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from torch_roofline._lazy_dynamo import prepare_meta_replays, replays_prepared
from torch_roofline.records import OpCost
from torch_roofline.timing.timeline import dotted_op_name
from torch_roofline.timing.compiled import is_fused_kernel
from torch_roofline.timing.identity import CallIdentity
from torch_roofline.timing.trace import TraceEvent
from torch_roofline.timing._call_args import _Alias, _DTYPES, _STAND_INS, _Slot, _Unbuildable, _calls, _failure


def _signature(ev: Optional[TraceEvent]) -> Any:
    """What a call's cost depends on, as one hashable value: its name and recorded arguments."""
    if ev is None:
        return ""
    get = ev.args.get
    return ev.name, _dumps([get("Input type"), get("Input Dims"), get("Input Strides"), get("Concrete Inputs")])


try:
    from orjson import dumps as _dumps
except ImportError:  # pragma: no cover - orjson is in install_requires
    def _dumps(value: Any) -> Any:
        return json.dumps(value)


@dataclass(frozen=True)
class _Replayed:
    """One signature's replay: the dispatched ops' costs and their storage accesses."""

    subs: Tuple[OpCost, ...]
    reason: Optional[str]
    list_dtype_assumed: bool = False
    accesses: Tuple[Tuple[Any, ...], ...] = ()  # ("r", slot, bytes) / ("w", slot, bytes, whole)
    omitted: Tuple[str, ...] = ()  # arguments the profiler did not record, left out of the cost
    per_call: bool = False  # built for one call (from its allocations), not cached per signature
    why: Optional[str] = None  # the counter's reason when a dispatched op stayed uncounted

    @property
    def new_bytes(self) -> int:
        """Bytes written to storages the call creates (its fresh outputs)."""
        return sum(a[2] for a in self.accesses if a[0] == "w" and a[1][0] == "new")

    @property
    def writes_new(self) -> bool:
        """Whether the call writes bytes to a storage it creates (a fresh output)."""
        return self.new_bytes > 0

    def cost(self, op: str, ev: Optional[TraceEvent]) -> OpCost:
        """The row's cost: the dispatched ops merged (op-model bytes; compulsory per row)."""
        if self.reason is not None:
            return _uncounted(op, ev)
        if not self.subs:  # nothing dispatched (contiguous() of a contiguous tensor): no work
            return dataclasses.replace(_uncounted(op, ev), counted=True)
        subs = self.subs
        lead = subs[0] if len(subs) == 1 else max(subs, key=lambda c: (c.flops, c.bytes_read + c.bytes_written))
        missing = [c.op for c in subs if not c.counted]
        counted = not missing
        return OpCost(
            op=op, module="", scope=("",), phase="forward",
            flops=sum(c.flops for c in subs) if counted else 0,
            macs=sum(c.macs for c in subs) if counted else 0,
            bytes_read=sum(c.bytes_read for c in subs), bytes_written=sum(c.bytes_written for c in subs),
            compulsory_bytes_read=sum(c.compulsory_bytes_read for c in subs),
            compulsory_bytes_written=sum(c.compulsory_bytes_written for c in subs),
            dtype=lead.dtype, unit=lead.unit, counted=counted,
        )

    @property
    def uncounted_reason(self) -> Optional[str]:
        missing = sorted({c.op for c in self.subs if not c.counted})
        if not missing:
            return None
        return self.why or f"no FLOP formula for {', '.join(missing)}"


def replay_cache(formulas: Optional[Mapping[Any, Callable[..., Any]]] = None) -> "_Replayer":
    """A cache of replayed calls for :func:`shape_costs` (``cache=``), to share between the
    parts of one trace: each distinct call signature is replayed on meta tensors once."""
    return _Replayer(formulas)


class _Replayer:
    """Replays recorded calls on meta tensors, once per signature."""

    def __init__(self, formulas: Optional[Mapping[Any, Callable[..., Any]]]) -> None:
        self.formulas = formulas
        self._cache: Dict[Any, _Replayed] = {}
        self._costs: Dict[Tuple[int, str], OpCost] = {}
        self.signatures = 0

    def cost(self, replayed: _Replayed, op: str, ev: Optional[TraceEvent]) -> OpCost:
        """``replayed.cost(op, ev)``, computed once per replay and op name."""
        if replayed.per_call or replayed.reason is not None:
            return replayed.cost(op, ev)
        key = (id(replayed), op)  # cached replays live as long as this replayer: ids stay theirs
        found = self._costs.get(key)
        if found is None:
            found = self._costs[key] = replayed.cost(op, ev)
        return found

    def replay(self, ev: Optional[TraceEvent], identity: Optional[CallIdentity],
               aliases: Optional[Tuple[_Alias, ...]] = None, signature: Optional[str] = None) -> _Replayed:
        list_dtypes = _list_dtypes(identity)
        fresh = identity.fresh if identity is not None and any(identity.fresh) else None
        key = (signature if signature is not None else _signature(ev), aliases, list_dtypes, fresh)
        found = self._cache.get(key)
        if found is None:
            found = self._cache[key] = self._run(ev, aliases, list_dtypes, fresh)
            self.signatures += 1
        if found.reason is not None and identity is not None and ev is not None and not is_fused_kernel(ev.name):
            # The meta device cannot run it: count it from what the profiler saw it allocate.
            fallback = _from_allocations(ev, aliases, identity, self.formulas)
            if fallback is not None:
                return fallback
        return found

    def _run(self, ev: Optional[TraceEvent], aliases: Optional[Tuple[_Alias, ...]],
             list_dtypes: Optional[Tuple[Any, ...]], fresh: Optional[Tuple[bool, ...]] = None) -> _Replayed:
        """Replay one call, once what torch's Python meta kernels import at their first call
        is imported off the caller's stack or deferred
        (:func:`~torch_roofline._lazy_dynamo.prepare_meta_replays`): such an import can keep
        the frames below it alive (see :func:`torch_roofline._gc.import_off_stack`), which
        must not be the caller's (a whole trace). Where that could not be done, on a thread of
        its own."""
        if not replays_prepared():
            prepare_meta_replays()
        if replays_prepared():
            return self._run_here(ev, aliases, list_dtypes, fresh)
        box: List[_Replayed] = []
        thread = threading.Thread(target=lambda: box.append(self._run_here(ev, aliases, list_dtypes, fresh)),
                                  name="torch_roofline-replay", daemon=True)
        thread.start()
        thread.join()
        return box[0] if box else self._run_here(ev, aliases, list_dtypes, fresh)  # failed there: fail here

    def _run_here(self, ev: Optional[TraceEvent], aliases: Optional[Tuple[_Alias, ...]],
                  list_dtypes: Optional[Tuple[Any, ...]], fresh: Optional[Tuple[bool, ...]] = None) -> _Replayed:
        from torch_roofline.count.mode import OpCounter

        try:
            if ev is None:
                raise _Unbuildable("no trace event found for the row")
            # stand-ins only: a gather replayed on meta without its indices would cost another op
            omitted: Optional[List[str]] = [] if dotted_op_name(ev.name) in _STAND_INS else None
            candidates, assumed = _calls(ev, aliases, list_dtypes, omitted, fresh=fresh)
        except _Unbuildable as exc:
            return _Replayed((), str(exc))
        last = "no overload of the op matches the recorded arguments"
        for overload, kwargs, slots in candidates:
            counter = OpCounter(None, self.formulas, replay=True)
            counter._traffic.log = log = []
            try:
                with counter:
                    overload(**kwargs)
            except Exception as exc:  # noqa: BLE001 - any failure means this overload cannot replay it
                last = _failure(exc)
                outs = _shaped_outputs(overload, kwargs)
                shaped = _with_outputs(overload, kwargs, slots, outs, omitted, self.formulas, per_call=False) \
                    if outs is not None else None
                if shaped is not None:
                    return shaped
                continue
            why = "; ".join(counter.reasons[c.op] for c in counter.ops
                            if not c.counted and c.op in counter.reasons) or None
            return _Replayed(tuple(counter.ops), None, assumed, _slotted(log, slots), tuple(dict.fromkeys(omitted or ())),
                             why=why)
        return _Replayed((), last)


def _slotted(log: Sequence[Tuple[Any, ...]], slots: Mapping[Any, _Slot]) -> Tuple[Tuple[Any, ...], ...]:
    """The replay's storage accesses with meta storage keys replaced by slots."""
    new: Dict[Any, _Slot] = {}
    out = []
    for access in log:
        key = access[1]
        slot = slots.get(key)
        if slot is None:
            slot = new.get(key)
            if slot is None:
                slot = new[key] = ("new", len(new))
        out.append((access[0], slot) + tuple(access[2:]))
    return tuple(out)


def _from_allocations(ev: TraceEvent, aliases: Optional[Tuple[_Alias, ...]], identity: CallIdentity,
                      formulas: Optional[Mapping[Any, Callable[..., Any]]]) -> Optional[_Replayed]:
    """The cost of a call the meta device cannot run, from the inputs' recorded shapes and the
    outputs the profiler saw it allocate (bytes kept when it returned).

    FLOPs: the op's formula on the inputs alone (no output), or 0 for an op without
    arithmetic; a formula that needs the output leaves the row uncounted.
    """
    # Leaving out an unrecorded list of index tensors only loses their own bytes for a gather
    # (its output, allocated, says what it read); an indexed write without its indices would be
    # costed as a different write, so it stays uncounted.
    omitted = _omissions(dotted_op_name(ev.name))
    try:
        candidates, _ = _calls(ev, aliases, _list_dtypes(identity), omitted, identity.fresh or None)
    except _Unbuildable:
        return None
    overload, kwargs, slots = candidates[0]
    outs = [torch.empty(nbytes, dtype=torch.uint8, device="meta") for _, nbytes in identity.kept]
    return _with_outputs(overload, kwargs, slots, outs, omitted, formulas, per_call=True)


#: Ops without a meta kernel whose output is shaped like one of their arguments (by name), or
#: is that argument (an in-place op): the oneDNN convolutions with a fused residual of a frozen
#: torch.compile model.
_OUTPUT_LIKE: Mapping[str, Tuple[str, bool]] = {
    "mkldnn::_convolution_pointwise.binary": ("other", False),
    "mkldnn::_convolution_pointwise_.binary": ("other", True),
}


def _shaped_outputs(overload: Any, kwargs: Mapping[str, Any]) -> Optional[List[torch.Tensor]]:
    """The outputs of a call of ``overload`` that the meta device cannot run, from
    :data:`_OUTPUT_LIKE`; ``None`` for other ops."""
    schema = overload._schema
    rule = _OUTPUT_LIKE.get(f"{schema.name}.{schema.overload_name or 'default'}")
    if rule is None or not isinstance(kwargs.get(rule[0]), torch.Tensor):
        return None
    like = kwargs[rule[0]]
    return [like if rule[1] else torch.empty_like(like)]


def _with_outputs(overload: Any, kwargs: Mapping[str, Any], slots: Mapping[Any, _Slot], outs: List[torch.Tensor],
                  omitted: Optional[List[str]], formulas: Optional[Mapping[Any, Callable[..., Any]]],
                  per_call: bool) -> Optional[_Replayed]:
    """The cost of a rebuilt call whose outputs are known without running it: bytes by the op
    memory model, FLOPs by the op's formula on the inputs alone (0 for an op without
    arithmetic); ``None`` when the formula needs the output or there is none."""
    from torch_roofline.count import formulas as _f
    from torch_roofline.count.mode import compute_dtype, op_name
    from torch_roofline.count.traffic import StepTraffic, is_view_op
    from torch_roofline.count.tree import tensors as _tensors

    traffic = StepTraffic()
    traffic.log = log = []
    measured = traffic.measure(overload, (), kwargs, outs)
    entry = _f.lookup(overload, formulas)
    flops = macs = 0
    unit = "vector"
    if entry is not None:
        try:
            result = _f.evaluate(entry, *_positional(overload, kwargs), None)
        except Exception:  # noqa: BLE001 - a formula that needs the output: not countable here
            result = None
        if result is None or result.flops is None:
            return None
        flops, macs, unit = result.flops, result.macs, result.unit
    elif not (_f.op_key(overload) in _f.NO_ARITHMETIC or is_view_op(overload)):
        return None
    ins = _tensors(kwargs)
    cost = OpCost(op=op_name(overload), module="", scope=("",), phase="forward", flops=int(flops), macs=int(macs),
                  bytes_read=measured.bytes_read, bytes_written=measured.bytes_written,
                  compulsory_bytes_read=measured.compulsory_bytes_read,
                  compulsory_bytes_written=measured.compulsory_bytes_written,
                  dtype=compute_dtype(ins, [], unit), unit=unit, counted=True)
    return _Replayed((cost,), None, False, _slotted(log, slots), tuple(dict.fromkeys(omitted or ())),
                     per_call=per_call)


def _beyond_allocated(replayed: _Replayed, identity: CallIdentity) -> int:
    """Bytes by which the replay's fresh outputs exceed what the profiler saw the call allocate
    and keep (0 when they do not). The meta device's shapes can be larger than a real kernel's:
    eval-mode ``native_batch_norm`` on the CPU returns empty ``save_mean``/``save_invstd``, its
    meta kernel ``[C]`` ones. Only ever a cut: a caching allocator rounds its blocks up."""
    kept = sum(nbytes for _, nbytes in identity.kept)
    return max(replayed.new_bytes - kept, 0)


_GATHERS_WITHOUT_INDICES = frozenset({"aten.index", "aten._unsafe_index"})


#: The stand-ins naming a post-op (corrected from a compiled graph's code when it is known).
_POST_OP_ARGS = frozenset({"attr", "binary_attr"})


def _omissions(name: str) -> Optional[List[str]]:
    """A list to collect the arguments a replay of op ``name`` goes without (or takes a stand-in
    for), for the ops allowed to; ``None`` for the others (a missing argument refuses them)."""
    return [] if name in _GATHERS_WITHOUT_INDICES or name in _STAND_INS else None


def _positional(overload: Any, kwargs: Mapping[str, Any]) -> Tuple[Tuple[Any, ...], Dict[str, Any]]:
    """``kwargs`` of a rebuilt call split as the dispatcher passes them: positional arguments in
    schema order (defaults filled in), keyword-only ones by name."""
    args: List[Any] = []
    kw: Dict[str, Any] = {}
    for arg in overload._schema.arguments:
        if arg.kwarg_only:
            if arg.name in kwargs:
                kw[arg.name] = kwargs[arg.name]
        elif arg.name in kwargs:
            args.append(kwargs[arg.name])
        else:
            args.append(arg.default_value if arg.has_default_value() else None)
    return tuple(args), kw


_NOTHING = _Replayed((), None)  # a call that did no work


def _list_dtypes(identity: Optional[CallIdentity]) -> Optional[Tuple[Any, ...]]:
    if identity is None or not any(d is not None for d in identity.list_dtypes):
        return None
    return tuple(identity.list_dtypes)


def _uncounted(op: str, ev: Optional[TraceEvent]) -> OpCost:
    types = ev.args.get("Input type", ()) if ev is not None else ()
    dtype = next((str(_DTYPES[t]).replace("torch.", "") for t in types if t in _DTYPES), None)
    return OpCost(op=op, module="", scope=("",), phase="forward", flops=0, macs=0, bytes_read=0,
                  bytes_written=0, compulsory_bytes_read=0, compulsory_bytes_written=0,
                  dtype=dtype, unit="vector", counted=False)
