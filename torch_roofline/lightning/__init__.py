"""The Lightning callback: ``Trainer(callbacks=[Roofline()])``.

A thin adapter over :class:`~torch_roofline.profiler.RooflineProfiler`: it opens a profiler
around a few real training steps (:class:`RooflineSchedule`), asks for the report once the
window closes, and hands it to the trainer's loggers (TensorBoard: the full output of
:func:`~torch_roofline.report.tensorboard.write_report`; others: the scalars) and to files
under ``<log_dir>/roofline/step<N>/``. The hooks are in :mod:`.callback`, the window and
schedule in :mod:`.schedule`, the ranks' gather and scalars in :mod:`.ranks`, the background
writer in :mod:`.writer`.

Two namespaces, one logic (a Trainer accepts only its own namespace's ``Callback``; each class
is built on first use): ``Roofline`` for ``lightning.pytorch``, ``RooflinePL`` for
``pytorch_lightning``.

The schedule, validation windows, what is logged and written, the overhead, distributed
training and collectives, what is counted and the limits (``torch.compile``, FSDP):
``docs/lightning.md``.

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
