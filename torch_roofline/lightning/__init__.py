"""The Lightning callback: ``Trainer(callbacks=[Roofline()])``.

A thin adapter over :class:`~torch_roofline.profiler.RooflineProfiler`: it opens a profiler
around a few real training steps, asks for the report once the window closes, and hands
the report to the trainer's loggers. All the measuring, counting and analysis happens in
the profiler; this module only decides *when* and *where to*.

Two namespaces, one logic. A Trainer accepts only callbacks derived from its own
namespace's ``Callback``, so the same logic is offered twice, each class built on first
use (importing Lightning is slow, and either namespace may be missing):

* ``torch_roofline.lightning.Roofline``: for ``lightning.pytorch`` (``import lightning``);
* ``torch_roofline.lightning.RooflinePL``: for ``pytorch_lightning``.

**Schedule** (torch.profiler-style; a *step* is an optimizer step, ``trainer.global_step``;
with ``accumulate_grad_batches=k`` one step is ``k`` batches)::

    steps:   0 .. wait-1 | wait .. wait+warmup-1 | .. +active-1 | (every_n_steps later: again)
    action:  nothing     | profiler on, discarded | recorded     |

``wait`` (default 2) skips first-step costs (allocator growth, cuDNN/oneDNN autotune,
``torch.compile``); ``warmup`` (1) runs the profiler without keeping its results (its own
start-up cost); ``active`` (2) steps are recorded and averaged. ``every_n_steps=None``
(default) profiles once; ``every_n_steps=N`` opens a new window every ``N`` steps after the
first.

**Validation** (``validation=True``; default off): the first ``warmup + active`` batches
of a validation run (sanity check excluded, first dataloader only) are profiled forward
only, into a separate report: ``val_reports``, tag ``<tag>_val``, files under
``roofline/val/step<N>/``. Validation windows follow the same schedule: window ``k`` is
the first validation run at or after training window ``k``'s start step.

**Logging** (rank zero only; every rank measures). For each logger in ``trainer.loggers``:
a ``TensorBoardLogger`` gets the full TensorBoard output of
:func:`~torch_roofline.report.tensorboard.write_report` at the trainer's global step
(scalars under ``roofline/``, text, chart image, the Roofline tab's data); any other
logger gets the scalars through ``log_metrics``. Files always go to
``<log_dir>/roofline/step<N>/``: ``report.json``, ``roofline.png``, and under distributed
training ``report-rank<r>.json`` for every rank and ``ranks.json``, the cross-rank
summary. Without a logger the files go to ``<default_root_dir>/roofline/`` and one
warning says so.

**Overhead.** Outside a window the callback costs two integer comparisons per batch. At
the end of a window the training thread closes the profiler, counts the recorded calls
(once per distinct call signature) and analyses, and logs the scalars; the chart (drawn once per window, shared by
``roofline.png`` and the TensorBoard image), the TensorBoard events and the files are
written by a background thread while training goes on (matplotlib's object API, no
pyplot). That thread is joined before the next window's writes, at the end of training,
on an exception and at teardown, so ``fit`` returns only once everything is written.
``benchmarks/lightning_overhead.py`` measures the whole cost against a plain ``fit``.

**Distributed** (DDP, ``ddp_spawn``): each rank profiles its own steps; the reports are
gathered to rank 0 with ``torch.distributed.gather_object`` (a few kB each). Rank 0 writes
its own report as ``report.json`` (and to the loggers), every rank's as
``report-rank<r>.json``, and ``ranks.json``: the summary ``from_traces`` gives for a job's
saved traces (:class:`torch_roofline.traceset.RankSummary`): per (module, phase) the mean,
min and max time across ranks and the slowest rank, the straggler spread
``(max - min) / mean``, the straggler rank (busy longest) and each rank's wait; scalars
``roofline/ranks/step_time_s_mean``, ``…/step_time_s_max`` and
``…/straggler_spread_pct``.

**Collective communication** (DDP's gradient ``all_reduce``, and any ``all_gather``,
``reduce_scatter``, ``broadcast`` in the step) runs in C10D, which the op counter does not
see; under distributed training the window's trace is recorded with shapes and
:mod:`torch_roofline.timing.collectives` reads every ``gloo:``/``nccl:`` collective from
it: bytes per rank by NCCL's bus-bandwidth convention (ring all_reduce: ``2 (n - 1) / n``
x the message bytes), time, and the phase that issued it, placed against the interconnect
roof (``interconnect_bandwidth=`` in B/s per direction, else half the catalog's aggregate
bidirectional link figure; CPUs have none, and get no roof and a note). Each rank's
summary is in ``ranks.json`` under ``communication`` and in a note of its report; rank 0's
is logged as ``roofline/comm/time_s``, ``…/bus_bytes``, ``…/step_time_share_pct`` and
``…/efficiency_pct``. Collective time can overlap compute (``overlap_s`` and
``overlap_share`` in ``communication`` say how much), so its share of the step is not
additive with the module times.

**What is counted: what ran.** Every op of the window's recorded steps is counted from the
profiler's own record (:mod:`torch_roofline.profiler`): ``training_step`` and
``validation_step`` as written, whatever they call (submodules called directly, a loss
computed outside ``forward``, several models and optimizers, manual optimisation), every
micro-batch of ``accumulate_grad_batches``, activation-checkpoint recomputes, and the ops
Lightning itself runs in the step (precision plugins' casts, gradient clipping, metric
logging). Ops outside the LightningModule's submodules' ``forward`` (its own
``training_step`` code, Lightning's) are the ``"(outside modules)"`` row.

Limits, honestly:

* ``torch.compile``: module ranges are not recorded inside compiled code (they would make it
  compile again: see :mod:`torch_roofline.timing.ranges`), so its ops and fused kernels land on
  the module that calls it (submodules called from eager code, as the README example's
  ``training_step`` calls ``self.encoder(x)`` after ``self.compile()``, keep their ranges); on the CPU each fused kernel is a timed row costed from its
  compiled graph (see :mod:`torch_roofline.profiler`). A warning says so at setup; the fit
  goes on.
* FSDP (FSDP2 ``fully_shard`` and FSDP1, tested with ``RooflineProfiler`` and saved traces on
  2 CPU processes over gloo: ``tests/test_fsdp.py``): the unsharded compute ops are counted
  as they ran, on the modules that ran them; FSDP's parameter ``all_gather`` and gradient
  reduction are read as collectives with their bytes and phase. Lightning's FSDP strategy
  itself is untested here: it refuses ``accelerator="cpu"`` ("requires a GPU accelerator")
  and no GPU is lent to this project's tests. DeepSpeed: untested.

Example::

    import lightning.pytorch as L
    from torch_roofline.lightning import Roofline

    trainer = L.Trainer(max_steps=100, callbacks=[Roofline()])
    trainer.fit(model, loader)
    # then: tensorboard --logdir lightning_logs --samples_per_plugin=roofline=0
"""

from __future__ import annotations

from typing import Any, Dict

from torch_roofline.lightning.callback import _INSTALL_HINT, _RooflineLogic
from torch_roofline.lightning.ranks import comm_scalars, rank_summary, report_scalars
from torch_roofline.lightning.schedule import RooflineSchedule

__all__ = ["Roofline", "RooflinePL", "RooflineSchedule", "comm_scalars", "rank_summary", "report_scalars"]


# ----------------------------------------------------------------------------- the classes


_CLASSES: Dict[str, type] = {}
_NAMESPACES = {"Roofline": "lightning.pytorch", "RooflinePL": "pytorch_lightning"}


def _build(name: str) -> type:
    namespace = _NAMESPACES[name]
    try:
        module = __import__(namespace, fromlist=["Callback"])
    except ImportError as exc:
        raise ImportError(
            f"torch_roofline.lightning.{name} needs the {namespace!r} package, which is not installed "
            f"({exc}). Install it with `{_INSTALL_HINT}`"
            + (" (or `pip install pytorch-lightning`)." if namespace == "pytorch_lightning" else ".")
        ) from exc
    doc = (_RooflineLogic.__doc__ or "").replace(
        "The callback's logic, shared by both namespaces' classes",
        f"Roofline callback for ``{namespace}``: profiles a few training steps and logs the roofline report",
    )
    cls = type(name, (_RooflineLogic, module.Callback), {"__module__": __name__, "__doc__": doc,
                                                          "_namespace": namespace})
    return cls


def __getattr__(name: str) -> Any:
    """Build ``Roofline`` / ``RooflinePL`` on first use (PEP 562)."""
    if name in _NAMESPACES:
        if name not in _CLASSES:
            _CLASSES[name] = _build(name)
        globals()[name] = _CLASSES[name]
        return _CLASSES[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
