"""Filesystem mode: watch the output directory, mark each batch once it is quiet and complete.

Events (watchdog, recursive) or polling (``--poll``, or a network file system)
feed one loop on the caller's thread. Files named with ComfyUI's counter are
grouped by folder and prefix; a group's not-yet-marked files form the pending
batch. The batch is marked when every file has kept its size and mtime for the
quiet period and is closed for its format (:mod:`._formats`). The journal then
records it, so a restart neither loses nor repeats a batch.

Scale: the initial scan reads only directory entries and stats; afterwards the
event mode sleeps until an event or a due group, and the polling mode stats each
directory once per interval and re-lists only directories that changed.
"""

from __future__ import annotations

import logging
import os
import queue
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..telemetry import TelemetryError
from ._defaults import DEFAULT_QUIET_S
from ._formats import is_complete
from ._journal import Journal
from ._marking import BatchFile, MarkerListener, mark_batch, notify_marker
from ._mounts import is_network_filesystem
from ._naming import GroupKey, is_utf8_name, parse_name

logger = logging.getLogger(__name__)

MAX_POLL_INTERVAL_S = 2.0
"""Polling re-stats every directory once per interval (~5 us each): half the quiet period, at most this."""
RESCAN_INTERVAL_S = 60.0
"""Event mode re-checks directory mtimes this often: a safety net for dropped events (inotify queue overflow)."""
RECENT_DIR_S = 3.0
"""A directory modified this recently is re-listed on every poll (coarse mtimes can hide a second change)."""
STUCK_WARN_FACTOR = 12
"""Warn once when a quiet batch has stayed incomplete for this many quiet periods."""
IDLE_WAIT_S = 3600.0
RETRY_AFTER_ERROR_S = 5.0
"""A batch whose marker could not be written (permissions, a vanished file) is tried again after this."""
HEALTH_CHECK_S = 1.0
"""Event mode checks this often that the watcher threads still run (a wake-up costs microseconds)."""


@dataclass
class _Seen:
    counter: int
    size: int
    mtime_ns: int
    stable_since: float


@dataclass
class _Group:
    files: dict[str, _Seen] = field(default_factory=dict)
    next_check: float = 0.0
    incomplete_since: float | None = None
    warned: bool = False

    def due_at(self, quiet_s: float) -> float:
        newest = max(s.stable_since for s in self.files.values())
        return max(newest + quiet_s, self.next_check)


class FsSentinel:
    """The filesystem-mode service; :meth:`run` blocks until :meth:`stop` (or one pass with ``once``)."""

    def __init__(
        self,
        output_dir: str | os.PathLike[str],
        journal: Journal,
        *,
        quiet_s: float = DEFAULT_QUIET_S,
        poll: bool | None = None,
        poll_interval_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_marker: MarkerListener | None = None,
    ) -> None:
        self.output_dir = Path(os.path.abspath(output_dir))
        self.journal = journal
        self.quiet_s = quiet_s
        self.poll = is_network_filesystem(self.output_dir) if poll is None else poll
        self.poll_interval_s = (
            poll_interval_s if poll_interval_s is not None else min(MAX_POLL_INTERVAL_S, max(0.25, quiet_s / 2))
        )
        self.clock = clock
        self.on_marker = on_marker
        """Told of each marker written (``--webhook``/``--metrics-port``); its failures are logged only."""
        self.markers_written = 0
        self._groups: dict[GroupKey, _Group] = {}
        self._dirs: dict[str, int] = {}
        self._events: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._observer: Any | None = None
        self.ready = threading.Event()
        """Set once the initial scan is done and events (if any) flow: files written after it are seen."""

    # ------------------------------------------------------------------ control

    def stop(self) -> None:
        """Ask :meth:`run` to return (safe from a signal handler or another thread)."""
        self._stop.set()
        self._events.put(None)

    @property
    def parameters(self) -> dict[str, Any]:
        return {"Mode": "filesystem", "QuietSeconds": self.quiet_s, "Polling": self.poll}

    def run(self, *, once: bool = False) -> int:
        """Watch until stopped; with *once*, mark what is pending (waiting out the quiet period) and return.

        Returns the number of markers written.
        """
        observer = None
        if not once and not self.poll:
            observer = self._observer = self._start_observer()
            self.poll = observer is None
        mode = "once" if once else "polling" if self.poll else "events"
        logger.info("sentinel watching %s (%s, quiet %.3g s)", self.output_dir, mode, self.quiet_s)
        try:
            self._scan_all()
            self.ready.set()
            if once:
                self._run_once()
            else:
                self._loop(observer)
        finally:
            if observer is not None:
                observer.stop()
                observer.join(5.0)
            self.journal.try_save()
        return self.markers_written

    # ------------------------------------------------------------------ loops

    def _run_once(self) -> None:
        deadline = self.clock() + self.quiet_s + 0.5
        while not self._stop.is_set():
            self._check_due()
            waiting = [g.due_at(self.quiet_s) for g in self._groups.values() if g.files and g.incomplete_since is None]
            if not waiting or min(waiting) > deadline:
                return
            self._stop.wait(max(0.0, min(waiting) - self.clock()) + 0.01)
            self._poll_pending()

    def _loop(self, observer: Any | None) -> None:
        next_scan = self.clock() + (self.poll_interval_s if self.poll else RESCAN_INTERVAL_S)
        while not self._stop.is_set():
            if observer is not None and not self.poll and not _events_alive(observer):
                logger.warning("file events stopped for %s (a watcher thread died); polling instead", self.output_dir)
                self.poll = True
                next_scan = self.clock()
            now = self.clock()
            due = min((g.due_at(self.quiet_s) for g in self._groups.values() if g.files), default=now + IDLE_WAIT_S)
            timeout = max(0.0, min(due, next_scan, now + HEALTH_CHECK_S) - now)
            self._drain(timeout)
            if self._stop.is_set():
                return
            now = self.clock()
            if now >= next_scan:
                self._scan_changed_dirs()
                if self.poll:
                    self._poll_pending()
                next_scan = now + (self.poll_interval_s if self.poll else RESCAN_INTERVAL_S)
            self._check_due()

    def _drain(self, timeout: float) -> None:
        """Apply queued events; block up to *timeout* for the first one."""
        try:
            item = self._events.get(timeout=timeout) if timeout > 0 else self._events.get_nowait()
        except queue.Empty:
            return
        while True:
            if item is None:
                return
            self._observe_path(item)
            try:
                item = self._events.get_nowait()
            except queue.Empty:
                return

    # ------------------------------------------------------------------ events

    def _start_observer(self) -> Any | None:
        try:
            from watchdog.events import FileSystemEvent, FileSystemEventHandler
            from watchdog.observers import Observer
        except ImportError:  # pragma: no cover - watchdog is a dependency
            return None
        events = self._events

        class _Feed(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                if event.event_type in ("opened", "closed_no_write"):
                    return
                for path in (event.src_path, getattr(event, "dest_path", "")):
                    if path:
                        events.put(os.fsdecode(path))

        observer = Observer()
        try:
            observer.schedule(_Feed(), str(self.output_dir), recursive=True)
            observer.start()
        except OSError as exc:  # inotify watch/instance limits (ENOSPC, EMFILE)
            logger.warning("file events unavailable for %s (%s); polling instead", self.output_dir, exc)
            observer.stop()  # watchdog's inotify observer runs a reader thread from construction on
            if observer.is_alive():
                observer.join(5.0)
            return None
        return observer

    def _observe_path(self, path: str) -> None:
        folder, name = os.path.split(path)
        if parse_name(name) is not None:
            self._observe_file(folder, name)
        elif not name.startswith(".") and path not in self._dirs and os.path.isdir(path):
            self._scan_dir(path)  # a new (or moved-in) folder: its files may predate the watch

    # ------------------------------------------------------------------ scanning

    def _walk(self, top: str) -> Iterator[tuple[str, list[os.DirEntry[str]]]]:
        stack = [top]
        while stack:
            folder = stack.pop()
            try:
                with os.scandir(folder) as it:
                    entries = list(it)
            except OSError:
                self._dirs.pop(folder, None)
                continue
            for entry in entries:
                if not entry.name.startswith(".") and is_utf8_name(entry.name) and entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
            yield folder, entries

    def _scan_all(self) -> None:
        started = self.clock()
        self._scan_dir(str(self.output_dir))
        pending = sum(len(g.files) for g in self._groups.values())
        logger.info(
            "initial scan: %d folder(s), %d unmarked file(s) in %d group(s) (%.1f s)",
            len(self._dirs),
            pending,
            len(self._groups),
            self.clock() - started,
        )

    def _scan_dir(self, top: str) -> None:
        for folder, entries in self._walk(top):
            try:
                self._dirs[folder] = os.stat(folder).st_mtime_ns
            except OSError:
                continue
            for entry in entries:
                if parse_name(entry.name) is not None:
                    self._observe_file(folder, entry.name, entry)

    def _scan_changed_dirs(self) -> None:
        """Re-list directories whose mtime changed (or changed recently); drop vanished ones."""
        wall = time.time_ns()
        for folder, old in list(self._dirs.items()):
            try:
                mtime = os.stat(folder).st_mtime_ns
            except OSError:
                del self._dirs[folder]
                continue
            if mtime != old or wall - mtime < RECENT_DIR_S * 1e9:
                self._dirs[folder] = mtime
                self._relist(folder)

    def _relist(self, folder: str) -> None:
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError:
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir(follow_symlinks=False):
                if entry.path not in self._dirs:
                    self._scan_dir(entry.path)
            elif parse_name(entry.name) is not None:
                self._observe_file(folder, entry.name, entry)

    def _poll_pending(self) -> None:
        for key, group in list(self._groups.items()):
            folder = self._abs_folder(key)
            for name in list(group.files):
                self._observe_file(folder, name)

    # ------------------------------------------------------------------ files

    def _key(self, folder: str, prefix: str) -> GroupKey | None:
        rel = os.path.relpath(folder, self.output_dir)
        if rel == ".":
            return GroupKey("", prefix)
        if rel.startswith(".."):
            return None
        return GroupKey(Path(rel).as_posix(), prefix)

    def _abs_folder(self, key: GroupKey) -> str:
        return str(self.output_dir / key.folder) if key.folder else str(self.output_dir)

    def _observe_file(self, folder: str, name: str, entry: os.DirEntry[str] | None = None) -> None:
        parsed = parse_name(name)
        if parsed is None:
            return
        key = self._key(folder, parsed.prefix)
        if key is None:
            return
        path = os.path.join(folder, name)
        try:
            st = entry.stat(follow_symlinks=False) if entry is not None else os.stat(path, follow_symlinks=False)
        except OSError:
            st = None
        group = self._groups.get(key)
        if st is None or not _is_regular(st.st_mode):
            if group is not None:
                group.files.pop(name, None)
                if not group.files:
                    del self._groups[key]
            return
        if self.journal.is_marked(key, parsed.counter, st.st_mtime_ns):
            return
        now = self.clock()
        if group is None:
            group = self._groups[key] = _Group()
        seen = group.files.get(name)
        if seen is not None and (seen.size, seen.mtime_ns) == (st.st_size, st.st_mtime_ns):
            return
        # Quiet since the last write, not since we noticed it (events queue up, polls come late); a file
        # older than the quiet period (catch-up at start) is due at once. Clipped to [now - quiet, now]:
        # a network share's clock may be off.
        age_s = (time.time_ns() - st.st_mtime_ns) / 1e9
        since = now - min(self.quiet_s, max(0.0, age_s))
        group.files[name] = _Seen(parsed.counter, st.st_size, st.st_mtime_ns, since)
        group.next_check = 0.0
        group.incomplete_since = None

    # ------------------------------------------------------------------ marking

    def _check_due(self) -> None:
        now = self.clock()
        changed = False
        for key, group in list(self._groups.items()):
            if group.files and group.due_at(self.quiet_s) <= now:
                changed |= self._try_mark(key, group, now)
        if changed:
            self.journal.try_save()

    def _try_mark(self, key: GroupKey, group: _Group, now: float) -> bool:
        folder = self._abs_folder(key)
        if self.poll:
            self._relist(folder)  # files written since the last poll belong to this batch too
        for name in list(group.files):
            self._observe_file(folder, name)  # a last stat: sizes must not have moved
        if not group.files:
            self._groups.pop(key, None)
            return False
        if group.due_at(self.quiet_s) > now:
            return False
        incomplete = [n for n, s in group.files.items() if not is_complete(os.path.join(folder, n), s.size)]
        if incomplete:
            self._note_incomplete(key, group, incomplete, now)
            return False
        batch = [BatchFile(n, s.counter, s.size, s.mtime_ns) for n, s in group.files.items()]
        try:
            result = mark_batch(self.output_dir, key, batch, parameters=self.parameters)
        except (OSError, TelemetryError) as exc:  # unwritable folder, a file gone between check and fsync
            delay = max(self.quiet_s, RETRY_AFTER_ERROR_S)
            group.next_check = now + delay
            logger.warning("cannot mark %s yet (%s); retrying in %g s", key.relative_prefix, exc, delay)
            return False
        if result.marker is not None:
            self.markers_written += 1
            notify_marker(self.on_marker, result)
        elif result.already:
            logger.info("already marked: %s/%s.done lists %d file(s)", key.folder or ".", key.prefix, len(batch))
        self.journal.record_group(key, max(f.counter for f in batch), max(f.mtime_ns for f in batch))
        del self._groups[key]
        return True

    def _note_incomplete(self, key: GroupKey, group: _Group, names: list[str], now: float) -> None:
        group.next_check = now + min(self.quiet_s, 1.0) if self.quiet_s > 0 else now + 0.1
        if group.incomplete_since is None:
            group.incomplete_since = now
            logger.debug("%s: %d file(s) not closed yet (%s)", key.relative_prefix, len(names), names[0])
        elif not group.warned and now - group.incomplete_since >= STUCK_WARN_FACTOR * max(self.quiet_s, 1.0):
            group.warned = True
            logger.warning(
                "%s: %d file(s) stopped growing but are not complete (e.g. %s); not marked",
                key.relative_prefix,
                len(names),
                names[0],
            )


def _events_alive(observer: Any) -> bool:
    """The dispatcher and every emitter thread run (an emitter can die alone, e.g. on an exception in watchdog)."""
    return bool(observer.is_alive()) and all(e.is_alive() for e in observer.emitters)


def _is_regular(mode: int) -> bool:
    return stat.S_ISREG(mode)
