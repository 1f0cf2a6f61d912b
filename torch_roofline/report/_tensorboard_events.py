"""Where a report's summaries go: an event file of our own (``_EventBackend``, no torch needed)
or a writer the user passes (``torch.utils.tensorboard.SummaryWriter``, Lightning's logger's
experiment, tensorboardX): ``_backend`` picks one for a writer or a log folder.
"""

from __future__ import annotations

import io
import struct
import os
import sys
import time
from typing import Any, Optional

from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2


def _png_size(png: bytes) -> tuple:
    """(width, height) in pixels from a PNG's IHDR chunk."""
    return struct.unpack(">II", png[16:24])


def _image_summary(tag: str, png: bytes) -> summary_pb2.Summary:
    """An image summary (TensorBoard's Images tab) of PNG bytes."""
    width, height = _png_size(png)
    image = summary_pb2.Summary.Image(height=height, width=width, colorspace=4, encoded_image_string=png)
    return summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, image=image)])



# ----------------------------------------------------------------------------- backends


class _EventBackend:
    """TensorBoard's own ``EventFileWriter`` in a log directory (no torch needed)."""

    def __init__(self, logdir: str) -> None:
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self._writer = EventFileWriter(logdir)

    def _add(self, summary: summary_pb2.Summary, step: int) -> None:
        self._writer.add_event(event_pb2.Event(wall_time=time.time(), step=step, summary=summary))

    def scalar(self, tag: str, value: float, step: int) -> None:
        self._add(summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=value)]), step)

    def text(self, tag: str, text: str, step: int) -> None:
        metadata = summary_pb2.SummaryMetadata(
            plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="text"),
            data_class=summary_pb2.DATA_CLASS_TENSOR,
        )
        tensor = tensor_pb2.TensorProto(
            dtype=types_pb2.DT_STRING,
            tensor_shape=tensor_shape_pb2.TensorShapeProto(),
            string_val=[text.encode("utf-8")],
        )
        self._add(summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, metadata=metadata, tensor=tensor)]), step)

    def figure(self, tag: str, figure: Any, step: int) -> None:
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        _close_figure(figure)
        self._add(_image_summary(tag, buffer.getvalue()), step)

    def summary(self, summary: summary_pb2.Summary, step: int) -> None:
        self._add(summary, step)

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class _WriterBackend:
    """A ``SummaryWriter``-like object: its public ``add_*`` methods, its event file for ours."""

    def __init__(self, writer: Any) -> None:
        self._writer = writer
        self._own: Optional[_EventBackend] = None

    def scalar(self, tag: str, value: float, step: int) -> None:
        self._writer.add_scalar(tag, value, global_step=step)

    def text(self, tag: str, text: str, step: int) -> None:
        self._writer.add_text(tag, text, global_step=step)

    def figure(self, tag: str, figure: Any, step: int) -> None:
        if callable(getattr(self._writer, "add_figure", None)):
            self._writer.add_figure(tag, figure, global_step=step, close=True)
        else:
            self._event_backend().figure(tag, figure, step)

    def summary(self, summary: summary_pb2.Summary, step: int) -> None:
        file_writer = getattr(self._writer, "file_writer", None)  # torch / tensorboardX: public attribute
        if file_writer is None and callable(getattr(self._writer, "_get_file_writer", None)):
            # torch creates file_writer lazily after a close(); this private getter re-opens it.
            file_writer = self._writer._get_file_writer()
        if file_writer is not None and callable(getattr(file_writer, "add_summary", None)):
            file_writer.add_summary(summary, step, time.time())
        else:
            self._event_backend().summary(summary, step)

    def _event_backend(self) -> _EventBackend:
        if self._own is None:
            self._own = _EventBackend(_log_dir(self._writer))
        return self._own

    def flush(self) -> None:
        if callable(getattr(self._writer, "flush", None)):
            self._writer.flush()
        if self._own is not None:
            self._own.flush()

    def close(self) -> None:
        # The user's writer stays open: it is theirs. Only our own event file is closed.
        if self._own is not None:
            self._own.close()
            self._own = None


def _log_dir(writer: Any) -> str:
    for attribute in ("log_dir", "logdir"):
        value = getattr(writer, attribute, None)
        if value is None and callable(getattr(writer, "get_logdir", None)):
            value = writer.get_logdir()
        if value is not None:
            return os.fspath(value)
    raise TypeError(
        f"write_report: the writer {type(writer).__name__} has add_scalar/add_text but no add_figure, "
        "file_writer or log_dir; expected a torch.utils.tensorboard.SummaryWriter or an object with a "
        "log_dir attribute. Fix: pass the writer's log directory as a string instead."
    )


def _close_figure(figure: Any) -> None:
    """Release a pyplot-managed figure (a plain ``Figure`` needs nothing)."""
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        pyplot.close(figure)


def _backend(writer_or_logdir: Any):
    """The backend for a log directory or a writer object."""
    if isinstance(writer_or_logdir, (str, os.PathLike)):
        return _EventBackend(os.fspath(writer_or_logdir))
    target = writer_or_logdir
    if not callable(getattr(target, "add_scalar", None)) and hasattr(target, "experiment"):
        target = target.experiment  # Lightning's TensorBoardLogger: its experiment is a SummaryWriter
    if callable(getattr(target, "add_scalar", None)) and callable(getattr(target, "add_text", None)):
        return _WriterBackend(target)
    raise TypeError(
        f"write_report: writer_or_logdir is a {type(writer_or_logdir).__name__}; expected a log directory "
        "(str or path), a torch SummaryWriter, a Lightning TensorBoardLogger, or an object with add_scalar, "
        "add_text and log_dir. Example: write_report('runs/exp1', report, step=0)."
    )
