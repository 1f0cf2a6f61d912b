"""Context managers that install something (hooks, module wrappers, dispatch modes) and leave
nothing behind: on exit, and also when installing fails half-way through.

A subclass writes :meth:`Installed._begin` (checks made before anything is installed: an error
there has nothing to undo), :meth:`Installed._install` and :meth:`Installed._remove`, which
must undo whatever part of ``_install`` ran.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, TypeVar

__all__ = ["Installed"]

_Self = TypeVar("_Self", bound="Installed")


class Installed(ABC):
    """Base of the package's context managers that install hooks (see the module docstring)."""

    def __enter__(self: _Self) -> _Self:
        self._begin()
        try:
            self._install()
        except BaseException:
            self._remove()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self._remove()

    def _begin(self) -> None:
        """Checks before anything is installed (nothing to undo when they raise)."""

    @abstractmethod
    def _install(self) -> None:
        """Install everything (hooks, wrappers, modes); may fail half-way."""

    @abstractmethod
    def _remove(self) -> None:
        """Undo whatever part of :meth:`_install` ran (also called after a failed install)."""
