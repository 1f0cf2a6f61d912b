"""Keep Kineto's native log noise away from users.

Kineto (the C++ side of torch.profiler) logs straight to file descriptor 2, bypassing
Python: on a machine without a GPU every session prints lines such as::

    ERROR:2026-11-22 02:37:25 5301:5301 DeviceProperties.cpp:56] gpuGetDeviceCount failed...
    USDT:2026-11-22 02:37:25 5301:5301 SyncActivityProfilerHandler.cpp:39] profiler_start

:func:`quiet_native_stderr` points fd 2 at a temporary file while the profiler starts,
steps, stops and exports, then writes back every line that is not known noise, so real
errors stay visible (a little later than they happened).

While a session records, :func:`filtered_stderr` keeps fd 2 on a pipe whose reader thread
forwards every line at once, except the same noise: c10's allocator prints a note each
1,000th time a block allocated before profiling started is freed while it records (a large
model's step frees thousands of them), in the middle of the user's own output.

Limits: fd 2 is process-wide, so output other threads write to stderr inside the block is
filtered and delayed too (never lost unless it is Kineto noise).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import threading
from typing import Iterator, List, Optional, Tuple

__all__ = ["quiet_native_stderr", "filtered_stderr", "is_kineto_noise"]

# Kineto's log prefix: LEVEL:YYYY-MM-DD HH:MM:SS pid:tid File.cpp:line] message
_KINETO_LINE = re.compile(
    r"^(?P<level>[A-Z]+):\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \d+:\d+ \S+:\d+\] (?P<msg>.*)$"
)

# Informational levels: never useful to a user of this package.
_QUIET_LEVELS = frozenset({"USDT", "INFO", "STAGE", "VERBOSE"})

# Warning/error messages known to be harmless on machines without a (profiled) GPU.
_NOISE_MESSAGES: Tuple[re.Pattern, ...] = (
    re.compile(r"gpuGetDeviceCount failed"),
    re.compile(r"cudaGetDeviceCount|cuDeviceGetCount"),
    re.compile(r"CUPTI.*(not (be )?(available|initiali[sz]ed|supported)|initiali[sz]ation failed)",
               re.IGNORECASE),
    re.compile(r"No CUDA (device|driver)|CUDA driver version is insufficient", re.IGNORECASE),
)


# c10's own log format: Wmmdd hh:mm:ss.ns File.cpp:line] message. Only the allocator's note
# that a block allocated before profiling was freed during it (the profiler's memory records
# then miss that free) is dropped: the session provokes it on purpose at start (session.py).
_C10_ALLOCATOR_NOTE = re.compile(
    r"^\[W\d{4} [\d:.]+ CPUAllocator\.cpp:\d+\] Memory block of unknown size was allocated before "
    r"the profiling started"
)


def is_kineto_noise(line: str) -> bool:
    """True when ``line`` is a Kineto log line known to be noise (see module docstring), or
    c10's allocator note about blocks allocated before profiling started."""
    if _C10_ALLOCATOR_NOTE.match(line.strip()):
        return True
    match = _KINETO_LINE.match(line.strip())
    if match is None:
        return False
    if match.group("level") in _QUIET_LEVELS:
        return True
    return any(p.search(match.group("msg")) for p in _NOISE_MESSAGES)


def _flush_python_stderr() -> None:
    stream = sys.stderr
    if stream is not None:
        try:
            stream.flush()
        except (OSError, ValueError):
            pass


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Silence Kineto noise written to fd 2 inside the block; re-emit everything else.

    Example::

        with quiet_native_stderr():
            prof.start()
    """
    _flush_python_stderr()
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 to redirect (daemonised process): nothing to silence
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            _flush_python_stderr()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", errors="replace")
            kept = [ln for ln in text.splitlines(keepends=True) if not is_kineto_noise(ln)]
            if kept:
                os.write(2, "".join(kept).encode("utf-8"))


class filtered_stderr:
    """Context manager: fd 2 goes through a pipe whose reader drops Kineto and c10 noise lines.

    Everything else is forwarded to the real stderr as soon as its line is complete (a line
    still open when the block ends is forwarded then). Nothing is filtered when fd 2 cannot be
    redirected (no fd 2, no pipes).

    Example::

        with filtered_stderr():
            train_steps()  # the allocator's periodic note never reaches the terminal
    """

    def __init__(self) -> None:
        self._saved: Optional[int] = None
        self._write_end: Optional[int] = None
        self._thread: Optional[threading.Thread] = None

    def __enter__(self) -> "filtered_stderr":
        _flush_python_stderr()
        try:
            saved = os.dup(2)
        except OSError:
            return self
        try:
            read_end, write_end = os.pipe()
        except OSError:
            os.close(saved)
            return self
        self._saved, self._write_end = saved, write_end
        self._thread = threading.Thread(target=_forward, args=(read_end, saved), name="torch_roofline-stderr",
                                        daemon=True)
        self._thread.start()
        os.dup2(write_end, 2)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._saved is None:
            return
        _flush_python_stderr()
        os.dup2(self._saved, 2)  # fd 2 back first: nothing new reaches the pipe
        os.close(self._write_end)  # the reader then sees the end of the stream
        self._thread.join(timeout=5.0)
        os.close(self._saved)
        self._saved = self._write_end = self._thread = None


def _forward(read_end: int, out: int) -> None:
    """Copy ``read_end`` to ``out`` line by line, dropping noise (see :func:`is_kineto_noise`)."""
    pending = b""
    try:
        while True:
            try:
                chunk = os.read(read_end, 65536)
            except OSError:
                break
            if not chunk:
                break
            pending += chunk
            lines: List[bytes] = pending.split(b"\n")
            pending = lines.pop()
            kept = [ln + b"\n" for ln in lines if not is_kineto_noise(ln.decode("utf-8", errors="replace"))]
            if kept:
                _write_all(out, b"".join(kept))
        if pending and not is_kineto_noise(pending.decode("utf-8", errors="replace")):
            _write_all(out, pending)
    finally:
        os.close(read_end)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        try:
            data = data[os.write(fd, data):]
        except OSError:
            return
