"""Keep Kineto's native log noise away from users.

Kineto (the C++ side of torch.profiler) logs straight to file descriptor 2, bypassing
Python: on a machine without a GPU every session prints lines such as::

    ERROR:2026-11-22 02:37:25 5301:5301 DeviceProperties.cpp:56] gpuGetDeviceCount failed...
    USDT:2026-11-22 02:37:25 5301:5301 SyncActivityProfilerHandler.cpp:39] profiler_start

:func:`quiet_native_stderr` points fd 2 at a temporary file while the profiler starts,
steps, stops and exports, then writes back every line that is not known noise, so real
errors stay visible (a little later than they happened).

Limits: fd 2 is process-wide, so output other threads write to stderr inside the block is
filtered and delayed too (never lost unless it is Kineto noise).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from typing import Iterator, Tuple

__all__ = ["quiet_native_stderr", "is_kineto_noise"]

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
