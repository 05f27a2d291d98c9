"""Waiting for a verified done marker, event-driven with a polling fallback.

A watchdog observer on the marker's folder wakes the waiter as soon as the
marker is created or renamed into place; events about other files (the frames
beside it) are ignored, and in folder mode the waiter checks the marker the event
names instead of listing the folder, so a folder of 10,000 frames costs what an
empty one does. Events do not arrive on network shares
(NFS, SMB, SSHFS) and inotify can run out of watches, so the waiter also polls
every ``poll_interval`` seconds and degrades to polling alone when the observer
cannot start. Only a marker that validates *and* matches the files on disk ends
the wait.
"""

from __future__ import annotations

import fnmatch
import logging
import math
import os
import stat
import threading
import time
from pathlib import Path
from typing import Any

from ._errors import DoneTimeoutError, InvalidInputError, MarkerError

logger = logging.getLogger(__name__)

DEFAULT_POLL_INTERVAL_S = 0.5


def resolve_marker_path(path: str | os.PathLike[str]) -> Path:
    """A ``.done`` path as given, or the single ``*.done`` in a folder (one that may not exist yet).

    A path that is neither (a frame, a video) can never become a marker: :class:`MarkerError` at once.
    """
    target = Path(path)
    if target.suffix == ".done":
        return target
    if os.path.exists(target) and not target.is_dir():
        raise MarkerError("is a file, not a <name>.done marker or a folder: it can never become a marker", path=target)
    markers = sorted(target.glob("*.done"))
    if len(markers) > 1:
        names = ", ".join(m.name for m in markers[:5])
        raise MarkerError(f"folder holds several markers ({names}); name one", path=target)
    # No marker yet: wait for whichever appears first.
    return markers[0] if markers else target / "*.done"


def _is_pattern(marker: Path) -> bool:
    return "*" in marker.name


def never_a_marker(marker: Path) -> str | None:
    """Why the named marker path can never verify (a folder, a file over the marker cap), or None.

    Waiting out the timeout on these only hides the mistake: the caller fails at once.
    """
    from ._marker import MAX_MARKER_BYTES

    try:
        info = marker.stat()
    except OSError:
        return None  # not there (yet), or a dangling link: a marker may still land
    if stat.S_ISDIR(info.st_mode):
        return "is a folder, not a marker file: it can never become a marker"
    if stat.S_ISREG(info.st_mode) and info.st_size > MAX_MARKER_BYTES:
        return (
            f"is {info.st_size} bytes, over the {MAX_MARKER_BYTES // 1048576} MiB a marker can be: "
            "it can never verify (name the .done file or its folder)"
        )
    return None


def _check(
    marker: Path, prompt_id: str | None, named: list[Path] | None = None
) -> tuple[dict[str, Any] | None, str | None]:
    """Verify the marker; in folder mode (``*.done``) only the *named* candidates when given, else all of them.

    Listing a folder of 10,000 frames costs ~10 ms; a file event names the marker it is
    about, so only the polling fallback (``named`` None) lists the folder.
    """
    from ._marker import verify_marker

    if not _is_pattern(marker):
        candidates = [marker]
    elif named is not None:
        candidates = sorted(set(named))
    else:
        candidates = sorted(marker.parent.glob(marker.name))
    problem = None
    for candidate in candidates:
        if not candidate.exists():
            continue
        try:
            body = verify_marker(candidate)
        except MarkerError as exc:
            problem = f"{candidate.name}: {exc.message}"
            continue
        if prompt_id is not None and body.get("PromptId") != prompt_id:
            problem = f"{candidate.name} is from prompt {body.get('PromptId')}, waiting for {prompt_id}"
            continue
        return body, None
    return None, problem or f"{marker.name} does not exist yet"


class _Inbox:
    """Marker paths named by file events, handed from the observer's thread to the waiter."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._paths: list[Path] = []
        self.ready = threading.Event()

    def put(self, path: Path) -> None:
        with self._lock:
            self._paths.append(path)
            self.ready.set()

    def take(self) -> list[Path]:
        with self._lock:
            paths, self._paths = self._paths, []
            self.ready.clear()
        return paths


def _marker_paths(event: Any, marker: Path) -> list[Path]:
    """The marker paths a file event names (the marker, or any ``*.done`` in folder mode); else none.

    The observer watches the marker's folder alone, so a name is enough (FSEvents on
    macOS reports resolved paths: ``/private/var/…`` for ``/var/…``). The folder's own
    events are ignored: inotify reports every file written into it twice, as the
    file's event and as a 'modified' event of the folder.
    """
    if event.is_directory:
        return []
    names = {os.path.basename(os.fsdecode(p)) for p in (event.src_path, getattr(event, "dest_path", "")) if p}
    if _is_pattern(marker):
        return [marker.parent / name for name in sorted(names) if fnmatch.fnmatchcase(name, marker.name)]
    return [marker] if marker.name in names else []


def _start_observer(marker: Path, inbox: _Inbox) -> Any | None:
    """Start a watchdog observer that posts events naming the marker to *inbox*; None if impossible."""
    try:
        from watchdog.events import FileSystemEvent, FileSystemEventHandler
        from watchdog.observers import Observer
    except ImportError:
        return None

    class _Wake(FileSystemEventHandler):
        def on_any_event(self, event: FileSystemEvent) -> None:
            for path in _marker_paths(event, marker):
                inbox.put(path)

    observer = Observer()
    try:
        observer.schedule(_Wake(), str(marker.parent), recursive=False)
        observer.start()
    except OSError as exc:  # inotify watch/instance limits (ENOSPC, EMFILE), vanished folder
        logger.warning("file events unavailable for %s (%s); polling instead", marker.parent, exc)
        observer.stop()  # a scheduled watch may already run its reader thread: never leave it behind
        if observer.is_alive():
            observer.join(5.0)
        return None
    return observer


def wait_for_done(
    path: str | os.PathLike[str],
    timeout: float,
    *,
    prompt_id: str | None = None,
    poll_interval: float = DEFAULT_POLL_INTERVAL_S,
    use_events: bool = True,
) -> dict[str, Any]:
    """Block until *path* (a ``.done`` file or a folder) holds a verified marker.

    Returns the marker body once the marker validates and every listed file has
    the listed size; with *prompt_id*, only a marker from that prompt counts.
    Raises :class:`DoneTimeoutError` (with the last problem seen) after *timeout*
    seconds, and :class:`MarkerError` at once for a path that can never become a
    marker (a file not named ``.done``, a folder named ``x.done``, a file over the
    marker cap).
    """
    if not math.isfinite(timeout) or timeout < 0 or not math.isfinite(poll_interval) or poll_interval <= 0:
        raise InvalidInputError(
            f"timeout must be a finite number >= 0 and poll_interval > 0 (got {timeout!r}, {poll_interval!r})"
        )
    marker = resolve_marker_path(path)
    deadline = time.monotonic() + timeout
    inbox = _Inbox()
    observer = None
    named: list[Path] | None = None  # None: check every candidate (start, poll); else the ones events named
    try:
        while True:
            body, problem = _check(marker, prompt_id, named)
            if body is not None:
                return body
            hopeless = None if _is_pattern(marker) else never_a_marker(marker)
            if hopeless is not None:
                raise MarkerError(hopeless, path=marker)
            if observer is None and use_events and marker.parent.is_dir():
                observer = _start_observer(marker, inbox)
                use_events = observer is not None
                named = None
                continue  # re-check: the marker may have landed before the observer started
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DoneTimeoutError(
                    f"no verified done marker after {timeout:g} s: {problem}",
                    path=marker,
                    last_problem=problem,
                )
            woke = inbox.ready.wait(min(poll_interval, remaining))
            named = inbox.take() if woke else None
    finally:
        if observer is not None:
            observer.stop()
            observer.join()
