"""Durable atomic file replacement.

The recipe (python-atomicwrites, SQLite, Git): write a hidden temp file in the
*same* directory (a cross-filesystem rename is not atomic), flush and fsync it,
``os.replace`` it over the target, then fsync the directory on POSIX so the
rename itself survives a crash. On any failure the temp file is removed and the
original exception propagates. Readers therefore see the old file or the new
one, never a torn one.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)

TEMP_SUFFIX = ".st-tmp"
"""Suffix of in-flight temp files: hidden (leading dot) and easy to sweep."""
_TEMP_NAME_RE = re.compile(r"^\.(.+)\.[0-9a-f]{12}" + re.escape(TEMP_SUFFIX) + "$", re.DOTALL)

# Windows: antivirus, indexers and sync clients briefly hold files open, which makes
# os.replace fail with a sharing violation. Retry ~2.5 s in total, then give up.
_WINDOWS_RETRY_ERRNOS = frozenset({errno.EACCES})
_WINDOWS_RETRY_WINERRORS = frozenset({5, 32, 33})
_WINDOWS_RETRY_ATTEMPTS = 25
_WINDOWS_RETRY_DELAY_S = 0.1


def temp_name_for(target: Path) -> Path:
    """Return a unique hidden temp path beside *target*."""
    return target.with_name(f".{target.name}.{os.urandom(6).hex()}{TEMP_SUFFIX}")


def fsync_directory(directory: Path) -> None:
    """fsync a directory so renames inside it are durable (no-op on Windows)."""
    if os.name == "nt":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(fd: int) -> None:
    """Flush a file descriptor to stable storage (F_FULLFSYNC on macOS)."""
    if sys.platform == "darwin":
        import fcntl

        fcntl.fcntl(fd, fcntl.F_FULLFSYNC)
    else:
        os.fsync(fd)


def _is_windows_sharing_violation(exc: OSError) -> bool:
    winerror = getattr(exc, "winerror", None)
    return winerror in _WINDOWS_RETRY_WINERRORS or (winerror is None and exc.errno in _WINDOWS_RETRY_ERRNOS)


def replace_with_retry(src: Path, dst: Path) -> None:
    """``os.replace``, retried on Windows while another process briefly holds *dst* open."""
    if os.name != "nt":
        os.replace(src, dst)
        return
    for attempt in range(_WINDOWS_RETRY_ATTEMPTS):
        try:
            os.replace(src, dst)
            return
        except PermissionError as exc:
            if not _is_windows_sharing_violation(exc) or attempt == _WINDOWS_RETRY_ATTEMPTS - 1:
                raise
            time.sleep(_WINDOWS_RETRY_DELAY_S)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Atomically and durably replace *path* with *data*; return the final path."""
    target = Path(path)
    temp = temp_name_for(target)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o644)
    try:
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            fsync_file(fd)
        finally:
            os.close(fd)
        replace_with_retry(temp, target)
    except BaseException:
        try:
            temp.unlink()
        except FileNotFoundError:
            pass
        raise
    fsync_directory(target.parent)
    return target


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Atomically replace *path* with UTF-8 *text* (``\\n`` line endings)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def temp_target(temp_name: str) -> str | None:
    """The target name of a temp file name (``.<name>.<hex>.st-tmp`` → ``<name>``); None for other names."""
    match = _TEMP_NAME_RE.match(temp_name)
    return match.group(1) if match else None


def sweep_stale_temps(
    directory: str | os.PathLike[str],
    *,
    older_than_s: float = 3600.0,
    own: Callable[[str], bool] | None = None,
) -> list[Path]:
    """Remove temp files left by a crashed writer.

    Only names this module creates (``.<name>.<hex>.st-tmp``) are touched, and only
    when older than *older_than_s*, so a writer that is still running is safe. Temps
    whose target name satisfies *own* are removed whatever their age: the caller is
    the only writer of those names in *directory*, so any such temp is a dead
    writer's (a run folder's files, a prefix's frames and marker).
    """
    removed: list[Path] = []
    now = time.time()
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return removed
    for entry in entries:
        target = temp_target(entry.name)
        if target is None:
            continue
        try:
            stale = (own is not None and own(target)) or now - entry.stat().st_mtime > older_than_s
            if entry.is_file(follow_symlinks=False) and stale:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except FileNotFoundError:
            continue
    if removed:
        logger.info("removed %d stale temp file(s) in %s", len(removed), directory)
    return removed
