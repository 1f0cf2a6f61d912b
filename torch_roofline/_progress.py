"""One line of progress on a terminal's stderr for long work (reading big traces).

Silent unless stderr is a terminal and the work is big enough to be worth a line, so logs,
pipes and tests see nothing. Example::

    with StageLine("from_trace trace.json (200 MB)", enabled=big) as line:
        line.stage("reading")
        ...
        line.stage("attributing ops to modules")
"""

from __future__ import annotations

import sys
import time
from typing import Any, Optional

__all__ = ["StageLine", "BIG_TRACE_BYTES"]

#: Traces at least this big (bytes) get a progress line while ``from_trace`` reads them.
BIG_TRACE_BYTES = 20_000_000


class StageLine:
    """``label: stage... (elapsed s)`` redrawn in place on stderr, then the total on exit.

    Args:
        label: what is being done, e.g. ``"from_trace trace.json (200 MB)"``.
        enabled: draw at all; ``None``: when stderr is a terminal.
    """

    def __init__(self, label: str, enabled: Optional[bool] = None) -> None:
        stream = sys.stderr
        self.enabled = bool(enabled if enabled is not None else getattr(stream, "isatty", lambda: False)())
        self.label = label
        self.t0 = time.perf_counter()

    def stage(self, name: str) -> None:
        """Say that the stage ``name`` has begun."""
        if self.enabled:
            sys.stderr.write(f"\r{self.label}: {name}... ({time.perf_counter() - self.t0:.1f} s)\033[K")
            sys.stderr.flush()

    def __enter__(self) -> "StageLine":
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if self.enabled:
            state = "failed" if exc_type is not None else "done"
            sys.stderr.write(f"\r{self.label}: {state} in {time.perf_counter() - self.t0:.1f} s\033[K\n")
            sys.stderr.flush()
