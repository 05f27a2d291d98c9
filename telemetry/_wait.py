"""Waiting for a verified done marker, event-driven with a polling fallback.

A watchdog observer on the marker's folder wakes the waiter as soon as the
marker is created or renamed into place. Events do not arrive on network shares
(NFS, SMB, SSHFS) and inotify can run out of watches, so the waiter also polls
every ``poll_interval`` seconds and degrades to polling alone when the observer
cannot start. Only a marker that validates *and* matches the files on disk ends
the wait.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from pathlib import Path
from typing import Any

from ._errors import DoneTimeoutError, InvalidInputError, MarkerError

logger = logging.getLogger(__name__)

DEFAULT_POLL_INTERVAL_S = 0.5


def resolve_marker_path(path: str | os.PathLike[str]) -> Path:
    """A ``.done`` path as given, or the single ``*.done`` in a folder."""
    target = Path(path)
    if target.suffix == ".done" or not target.is_dir():
        return target
    markers = sorted(target.glob("*.done"))
    if len(markers) > 1:
        names = ", ".join(m.name for m in markers[:5])
        raise MarkerError(f"folder holds several markers ({names}); name one", path=target)
    # No marker yet: wait for whichever appears first.
    return markers[0] if markers else target / "*.done"


def _check(marker: Path, prompt_id: str | None) -> tuple[dict[str, Any] | None, str | None]:
    from ._marker import verify_marker

    candidates = sorted(marker.parent.glob(marker.name)) if "*" in marker.name else [marker]
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


def _start_observer(folder: Path, wake: threading.Event) -> Any | None:
    """Start a watchdog observer that sets *wake* on any event in *folder*; None if impossible."""
    try:
        from watchdog.events import FileSystemEvent, FileSystemEventHandler
        from watchdog.observers import Observer
    except ImportError:
        return None

    class _Wake(FileSystemEventHandler):
        def on_any_event(self, event: FileSystemEvent) -> None:
            wake.set()

    observer = Observer()
    try:
        observer.schedule(_Wake(), str(folder), recursive=False)
        observer.start()
    except OSError as exc:  # inotify watch/instance limits (ENOSPC, EMFILE), vanished folder
        logger.warning("file events unavailable for %s (%s); polling instead", folder, exc)
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
    seconds.
    """
    if not math.isfinite(timeout) or timeout < 0 or not math.isfinite(poll_interval) or poll_interval <= 0:
        raise InvalidInputError(
            f"timeout must be a finite number >= 0 and poll_interval > 0 (got {timeout!r}, {poll_interval!r})"
        )
    marker = resolve_marker_path(path)
    deadline = time.monotonic() + timeout
    wake = threading.Event()
    observer = None
    try:
        while True:
            body, problem = _check(marker, prompt_id)
            if body is not None:
                return body
            if observer is None and use_events and marker.parent.is_dir():
                observer = _start_observer(marker.parent, wake)
                use_events = observer is not None
                continue  # re-check: the marker may have landed before the observer started
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DoneTimeoutError(
                    f"no verified done marker after {timeout:g} s: {problem}",
                    path=marker,
                    last_problem=problem,
                )
            wake.wait(min(poll_interval, remaining))
            wake.clear()
    finally:
        if observer is not None:
            observer.stop()
            observer.join()
