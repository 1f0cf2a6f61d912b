"""Files the package writes appear whole or not at all.

Every output (report JSON/CSV, the chart, the bench cache, CLI outputs) is written to a
temporary file next to its destination and renamed into place (``os.replace``, atomic on
POSIX and Windows within one file system). A full disk, a killed process or an exception
half-way leaves the previous file (if any) untouched and no partial file behind; the
temporary file is removed on failure.

Example::

    from torch_roofline._io import atomic_write

    atomic_write("out/report.json", text, caller="RooflineReport.to_json")
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from typing import IO, Iterator, Optional, Union

__all__ = ["atomic_open", "atomic_write", "check_writable_dir"]

PathLike = Union[str, "os.PathLike[str]"]


@contextlib.contextmanager
def atomic_open(path: PathLike, mode: str = "w", *, caller: str, encoding: Optional[str] = None,
                newline: Optional[str] = None) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on a clean exit it replaces ``path``.

    Args:
        path: the destination file.
        mode: ``"w"`` (text) or ``"wb"`` (bytes).
        caller: the public call that writes (``"RooflineReport.to_json"``), named in errors.
        encoding, newline: as for :func:`open` (text mode only).

    Yields:
        The open temporary file. If the block raises, the temporary file is removed and
        ``path`` is left as it was.

    Raises:
        OSError: the file could not be written (same ``errno``); the message names
            ``caller``, the destination, the reason and the fix, and says that nothing was
            written.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open(mode={mode!r}): expected 'w' or 'wb'")
    dest = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(dest))
    tmp = os.path.join(folder, f".{os.path.basename(dest)}.{secrets.token_hex(4)}.tmp")
    try:
        # O_EXCL: never follow or reuse someone else's file; 0o666: the umask applies, as for open().
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    except OSError as err:
        raise _write_error(caller, dest, err) from err
    try:
        with os.fdopen(fd, mode, encoding=encoding, newline=newline) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())  # the data is on disk before the name points at it
        os.replace(tmp, dest)
    except OSError as err:
        _remove(tmp)
        raise _write_error(caller, dest, err) from err
    except BaseException:
        _remove(tmp)
        raise


def atomic_write(path: PathLike, data: Union[str, bytes], *, caller: str, encoding: str = "utf-8",
                 newline: Optional[str] = None) -> None:
    """Write ``data`` (text or bytes) to ``path`` whole or not at all; see :func:`atomic_open`."""
    if isinstance(data, bytes):
        with atomic_open(path, "wb", caller=caller) as handle:
            handle.write(data)
    else:
        with atomic_open(path, "w", caller=caller, encoding=encoding, newline=newline) as handle:
            handle.write(data)


def check_writable_dir(path: PathLike, *, what: str) -> None:
    """Raise an OSError unless ``path`` is, or can become, a writable directory.

    Checked before any work: ``path`` must not be a file, and the deepest part of it that
    exists must be a directory this process can create files in (a probe file is created
    and removed; nothing is created when the check fails).

    Args:
        path: the output directory (created later, at write time, when missing).
        what: how the user named it (``"--out out/run1"``), named in the error.
    """
    target = os.path.abspath(os.fspath(path))
    probe_dir = target
    while not os.path.exists(probe_dir):
        parent = os.path.dirname(probe_dir)
        if parent == probe_dir:
            break
        probe_dir = parent
    if not os.path.isdir(probe_dir):
        where = "is a file" if probe_dir == target else f"lies under the file {probe_dir!r}"
        raise FileExistsError(
            errno.EEXIST,
            f"{what}: {os.fspath(path)!r} {where}; expected a directory (created if missing), "
            f"e.g. {os.path.join(os.path.dirname(target), 'roofline-out')!r}; pass another path",
        )
    probe = os.path.join(probe_dir, f".torch_roofline-probe-{secrets.token_hex(4)}")
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError as err:
        raise OSError(
            err.errno,
            f"{what}: cannot create files in {probe_dir!r} ({err.strerror}); expected a writable "
            "directory: pass a path on a writable disk, e.g. --out /tmp/roofline-out",
        ) from None
    _remove(probe)


def _write_error(caller: str, dest: str, err: OSError) -> OSError:
    reason = err.strerror or str(err)
    if err.errno == errno.ENOSPC:
        fix = "free disk space, or write to another disk"
    elif err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "write to a directory you can write to"
    elif err.errno == errno.ENOENT:
        fix = "create the directory first, or pass a path in an existing one"
    elif err.errno == errno.EISDIR:
        fix = "pass a file name, not a directory"
    else:
        fix = "check the path and the disk"
    return OSError(err.errno, f"{caller}: could not write {dest!r} ({reason}); nothing was written "
                              f"(an earlier file of that name is unchanged); {fix}")


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
