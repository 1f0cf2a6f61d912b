"""Pausing Python's cyclic garbage collector around bulk post-processing, and keeping
torch's lazy imports from pinning our callers' memory.

Reading a trace, attributing it and analysing it build hundreds of thousands of small
objects (events, keys, rows) and no reference cycles. Each automatic collection walks every
tracked object built so far, so with the collector on these passes spend most of their time
in it: on a 50 MB trace the reader runs ~3x slower, and sorting 100,000 events ~6x slower.
The collector is paused only while such a pass runs, then restored to its previous state.
What these passes leave behind must then be freed by reference counting alone: no reference
cycles (tests/test_release.py checks it with the collector off).

Resuming has a cost of its own: every object allocated while paused sits in the youngest
generation, so the first collection after it walks them all (0.5-0.8 s after a report of a
50 MB trace). They are moved to the oldest generation first, unwalked (``gc.freeze()`` then
``gc.unfreeze()``), where they stay collectable by the full collections that come later.
That is skipped when the caller froze objects of their own (``gc.get_freeze_count()``):
unfreezing would undo it.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import sys
import threading
from typing import Iterator

__all__ = ["paused_gc", "import_off_stack"]


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector for the ``with`` block (restored on exit, exceptions
    included; nested uses are harmless)."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            _promote_young()
            gc.enable()


def _promote_young() -> None:
    """Move every tracked object to the oldest generation without walking them (see the
    module docstring); a no-op when the caller holds frozen objects of their own."""
    if gc.get_freeze_count() == 0:
        gc.freeze()
        gc.unfreeze()


def import_off_stack(module: str) -> None:
    """Import ``module`` on a thread of its own, unless it is imported already.

    torch imports some of its packages on first use, from deep inside the call that needs
    them (the first op overload called under a dispatch mode imports ``torch._dynamo``). One of
    them calls ``torch.fx.wrap`` at import time, whose frame keeps a reference to itself and,
    through its callers, to every frame below it: the locals of whatever called us (a whole
    trace, a user's model) then stay alive until Python's cyclic collector happens to run.
    Imported from a fresh thread, no frame of the caller's is on that stack. An import that
    fails is left to fail again, with its own message, where the caller needs it.
    """
    if module in sys.modules:
        return

    def run() -> None:
        try:
            importlib.import_module(module)
        except BaseException:  # noqa: BLE001 - it fails again, with its message, where it is needed
            pass

    thread = threading.Thread(target=run, name=f"torch_roofline-import-{module}", daemon=True)
    thread.start()
    thread.join()
