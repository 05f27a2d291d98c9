"""Server mode: follow a ComfyUI server's finished prompts and mark their saved files.

The server is authoritative: its history says which files each output node saved.
The loop wakes on the websocket's broadcast ``status`` messages (sent on every
queue change, after the history entry is written) and polls as a fallback:

- list finished prompts: ``GET /api/jobs?status=completed,failed&sort_order=desc&limit=N``
  (ComfyUI 0.8.0, ``comfy_execution/jobs.py``), paging back while every id on a page
  is new (catch-up after downtime); details from ``GET /api/jobs/{id}``. A server
  without that route (404) is read through ``GET /history?max_items=N`` instead.
- each completed prompt's output nodes give batches (:mod:`._outputs`); a batch is
  marked once every file exists, is closed for its format and has kept its size;
- failed prompts, our own WriteDoneMarker's outputs and cached nodes are recorded,
  never marked; the journal keeps the handled prompt ids so restarts repeat nothing.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..comfy_api.client import ComfyClient, EventStream
from ..telemetry import ClientError, HttpStatusError, TelemetryError
from ._formats import is_complete
from ._journal import Journal
from ._marking import BatchFile, MarkerListener, mark_batch, notify_marker
from ._outputs import FinishedPrompt, NodeBatch, from_history, from_job, node_batches

logger = logging.getLogger(__name__)

DEFAULT_POLL_INTERVAL_S = 5.0
PAGE_SIZE = 100
MAX_PAGES = 100
"""ComfyUI keeps 10,000 history entries: 100 pages of 100."""
STABLE_S = 0.25
"""A listed file must keep its size and mtime this long (or be this old) before it is vouched for."""
MISSING_GRACE_S = 120.0
"""Files of a prompt finished this long ago that are still missing or open are given up (logged, recorded)."""
PENDING_CHECK_S = 0.1
RETRY_AFTER_ERROR_S = 5.0
"""A batch whose marker could not be written (permissions, a vanished file) is tried again after this."""
WAKE_S = 0.5
"""Longest blocking wait: SIGTERM/SIGINT are honoured within this."""
EVENT_SYNC_GAP_S = 0.2
"""Least time between two listings woken by ``status`` messages: a server flooding them (2,400 a second were
each a listing) is read five times a second, well inside the 1 s from finished files to marker."""
REQUEST_TIMEOUT_S = 1.5
"""Per request: a stalled server must not hold SIGTERM past 2 s (a timeout is an outage, retried next poll)."""


MAX_PROMPT_ID_CHARS = 256
"""Longest prompt id followed (ComfyUI's are 36-character UUIDs): the journal keeps 10,000 of them under its
64 MB cap, so a server listing megabyte-long ids cannot grow it past what the next start will read."""


def _usable_id(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_PROMPT_ID_CHARS


class JobsClient(ComfyClient):
    """The project's ComfyUI client plus the two list endpoints the sentinel reads."""

    def jobs(self, *, limit: int, offset: int = 0) -> dict[str, Any]:
        """``GET /api/jobs`` of finished prompts, newest first (raises HttpStatusError 404 on older servers)."""
        query = urllib.parse.urlencode(
            {"status": "completed,failed", "sort_order": "desc", "limit": limit, "offset": offset}
        )
        return self._get_json(f"/api/jobs?{query}")

    def job(self, prompt_id: str) -> dict[str, Any]:
        return self._get_json(f"/api/jobs/{urllib.parse.quote(prompt_id, safe='')}")

    def history_list(self, *, max_items: int) -> dict[str, Any]:
        """``GET /history?max_items=N``: the newest N entries, oldest first (never the bare /history)."""
        return self._get_json(f"/history?max_items={max_items}")


@dataclass
class _Pending:
    prompt: FinishedPrompt
    batches: list[NodeBatch]
    seen_at: float
    done: set[int] = field(default_factory=set)
    observed: dict[str, tuple[int, int, float]] = field(default_factory=dict)
    marked: int = 0
    retry_at: float = 0.0


class ServerSentinel:
    """The server-mode service; :meth:`run` blocks until :meth:`stop` (or one pass with ``once``)."""

    def __init__(
        self,
        server_url: str,
        output_dir: str | os.PathLike[str],
        journal: Journal,
        *,
        quiet_s: float | None = None,
        poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
        page_size: int = PAGE_SIZE,
        use_events: bool = True,
        clock: Callable[[], float] = time.monotonic,
        on_marker: MarkerListener | None = None,
        on_server: Callable[[bool], None] | None = None,
    ) -> None:
        self.server_url = server_url
        self.output_dir = Path(os.path.abspath(output_dir))
        self.journal = journal
        self.quiet_s = quiet_s
        self.poll_interval_s = poll_interval_s
        self.page_size = page_size
        self.use_events = use_events
        self.clock = clock
        self.on_marker = on_marker
        """Told of each marker written; ``on_server`` of each look at the server (True: it answered)."""
        self.on_server = on_server
        self.client = JobsClient(server_url, request_timeout_s=REQUEST_TIMEOUT_S)
        self.markers_written = 0
        self.ready = threading.Event()
        """Set after the first successful look at the server (the start-up catch-up is queued)."""
        self._stop = threading.Event()
        self._pending: dict[str, _Pending] = {}
        self._jobs_api: bool | None = None
        self._comfyui_version: str | None = None
        self._down_since: float | None = None

    def stop(self) -> None:
        """Ask :meth:`run` to return (safe from a signal handler or another thread)."""
        self._stop.set()

    @property
    def parameters(self) -> dict[str, Any]:
        return {"Mode": "server", "Server": self.server_url}

    # ------------------------------------------------------------------ loop

    def run(self, *, once: bool = False) -> int:
        """Follow the server until stopped; with *once*, mark what is finished now and return."""
        logger.info("sentinel following %s, marking under %s", self.server_url, self.output_dir)
        stream = None
        if self.use_events and not once:
            stream = EventStream(self.server_url, f"scene-telemetry-sentinel-{uuid.uuid4().hex[:12]}")
        try:
            if once:
                self._run_once()
            else:
                self._loop(stream)
        finally:
            if stream is not None:
                stream.close()
            self.journal.try_save()
        return self.markers_written

    def _run_once(self) -> None:
        if not self._sync():
            raise ClientError(f"cannot list finished prompts on {self.server_url}", path=self.server_url)
        deadline = self.clock() + max(2.0, STABLE_S * 4)
        while self._pending and not self._stop.is_set() and self.clock() < deadline:
            self._advance(once=True)
            if self._pending:
                self._stop.wait(PENDING_CHECK_S)
        for prompt_id in list(self._pending):
            logger.info("prompt %s: files not complete yet; the next run looks again", prompt_id)

    def _loop(self, stream: EventStream | None) -> None:
        next_sync = last_sync = self.clock()
        while not self._stop.is_set():
            if self.clock() >= next_sync:
                self._sync()
                last_sync = self.clock()
                next_sync = last_sync + self.poll_interval_s
            self._advance()
            wait = PENDING_CHECK_S if self._pending else max(0.0, min(WAKE_S, next_sync - self.clock()))
            if stream is None:
                self._stop.wait(wait)
                continue
            event = stream.next_event(wait)
            if event is not None and event.get("type") == "status":  # the queue changed: a prompt may have finished
                next_sync = min(next_sync, max(self.clock(), last_sync + EVENT_SYNC_GAP_S))

    # ------------------------------------------------------------------ listing

    def _sync(self) -> bool:
        """Queue every finished prompt not handled yet; False when the server cannot be read."""
        try:
            if self._comfyui_version is None:
                self._comfyui_version = self._server_version()
            prompts = self._new_prompts()
        except ClientError as exc:
            self._report_server(False)
            if self._down_since is None:
                self._down_since = self.clock()
                logger.warning("cannot read %s (%s); retrying every %g s", self.server_url, exc, self.poll_interval_s)
            return False
        if self._down_since is not None:
            logger.info("%s answers again", self.server_url)
            self._down_since = None
        self._report_server(True)
        for prompt in sorted(prompts, key=lambda p: p.create_time):
            self._accept(prompt)
        self.journal.try_save()
        self.ready.set()
        return True

    def _report_server(self, up: bool) -> None:
        if self.on_server is None:
            return
        try:
            self.on_server(up)
        except Exception:  # monitoring never stops the sentinel
            logger.warning("server listener failed", exc_info=True)

    def _server_version(self) -> str | None:
        stats = self.client.system_stats(timeout_s=REQUEST_TIMEOUT_S)
        system = stats.get("system") if isinstance(stats.get("system"), Mapping) else {}
        version = system.get("comfyui_version") if isinstance(system, Mapping) else None
        return str(version) if version else None

    def _known(self, prompt_id: str) -> bool:
        return prompt_id in self.journal.prompts or prompt_id in self._pending

    def _new_prompts(self) -> list[FinishedPrompt]:
        if self._jobs_api is not False:
            try:
                prompts = self._new_from_jobs()
                self._jobs_api = True
                return prompts
            except HttpStatusError as exc:
                if exc.status not in (404, 405) or self._jobs_api:
                    raise
                logger.info("%s has no /api/jobs (HTTP %d): reading /history instead", self.server_url, exc.status)
                self._jobs_api = False
        return self._new_from_history()

    def _new_from_jobs(self) -> list[FinishedPrompt]:
        new_ids: list[str] = []
        for page in range(MAX_PAGES):
            reply = self.client.jobs(limit=self.page_size, offset=page * self.page_size)
            listed = reply.get("jobs", [])
            if not isinstance(listed, list):  # a hostile or broken server: an outage, not a crash
                raise ClientError(f"/api/jobs answered with 'jobs' of type {type(listed).__name__}, expected a list")
            jobs = [j for j in listed if isinstance(j, Mapping) and _usable_id(j.get("id"))]
            fresh = [str(j["id"]) for j in jobs if not self._known(str(j["id"]))]
            new_ids += fresh
            pagination = reply.get("pagination")
            more = isinstance(pagination, Mapping) and pagination.get("has_more") is True
            if not more or len(fresh) < len(jobs) or not jobs:
                break  # a known id: everything older was handled before
        prompts = []
        for prompt_id in new_ids:
            try:
                job = self.client.job(prompt_id)
            except HttpStatusError as exc:
                if exc.status == 404:  # deleted from history meanwhile
                    continue
                raise
            prompt = from_job({**job, "id": prompt_id})  # the id asked for is the one recorded, whatever the reply says
            if prompt is not None:
                prompts.append(prompt)
        return prompts

    def _new_from_history(self) -> list[FinishedPrompt]:
        reply = self.client.history_list(max_items=self.page_size * MAX_PAGES)
        prompts = []
        for prompt_id, entry in reply.items():
            if isinstance(entry, Mapping) and _usable_id(prompt_id) and not self._known(prompt_id):
                prompt = from_history(prompt_id, entry)
                if prompt is not None:
                    prompts.append(prompt)
        return prompts

    def _accept(self, prompt: FinishedPrompt) -> None:
        if prompt.status != "completed":
            logger.info("prompt %s %s: nothing to mark", prompt.prompt_id, prompt.status or "has no status")
            self.journal.record_prompt(prompt.prompt_id, prompt.status or "unknown")
            return
        batches, skipped = node_batches(prompt)
        for line in skipped:
            logger.info("prompt %s: %s", prompt.prompt_id, line)
        if not batches:
            self.journal.record_prompt(prompt.prompt_id, "nothing")
            return
        self._pending[prompt.prompt_id] = _Pending(prompt, batches, self.clock())

    # ------------------------------------------------------------------ marking

    def _advance(self, *, once: bool = False) -> None:
        """Mark every batch whose files are complete; settle prompts whose batches are all done."""
        changed = False
        for prompt_id, pending in sorted(self._pending.items(), key=lambda kv: kv[1].prompt.create_time):
            if pending.retry_at > self.clock():
                continue
            for index, batch in enumerate(pending.batches):
                if index in pending.done:
                    continue
                files = self._ready_files(batch, pending)
                if files is None:
                    continue
                try:
                    self._mark(pending, batch, files)
                except (OSError, TelemetryError) as exc:  # unwritable folder, a file gone meanwhile: try again
                    pending.retry_at = self.clock() + RETRY_AFTER_ERROR_S
                    logger.warning(
                        "prompt %s: cannot mark %s yet (%s); retrying in %g s",
                        prompt_id,
                        batch.key.relative_prefix,
                        exc,
                        RETRY_AFTER_ERROR_S,
                    )
                    break
                pending.done.add(index)
                changed = True
            if len(pending.done) == len(pending.batches):
                self.journal.record_prompt(prompt_id, "marked" if pending.marked else "already")
                del self._pending[prompt_id]
                changed = True
            elif self._given_up(pending, once=once):
                missing = len(pending.batches) - len(pending.done)
                logger.warning(
                    "prompt %s: %d batch(es) still missing or incomplete after %g s; not marked",
                    prompt_id,
                    missing,
                    MISSING_GRACE_S,
                )
                self.journal.record_prompt(prompt_id, "incomplete")
                del self._pending[prompt_id]
                changed = True
        if changed:
            self.journal.try_save()

    def _given_up(self, pending: _Pending, *, once: bool = False) -> bool:
        """Live: the files stayed missing or open for the grace period. ``--once`` cannot wait: it gives up
        only on prompts queued longer ago than that (their files were deleted, or never reached this host)."""
        if not once:
            return self.clock() - pending.seen_at >= MISSING_GRACE_S
        created_ms = pending.prompt.create_time
        return created_ms > 0 and time.time() - created_ms / 1000 >= MISSING_GRACE_S

    def _ready_files(self, batch: NodeBatch, pending: _Pending) -> list[BatchFile] | None:
        folder = self.output_dir / batch.key.folder if batch.key.folder else self.output_dir
        now, wall = self.clock(), time.time_ns()
        ready = []
        for name, counter in batch.files:
            path = folder / name
            try:
                st = path.stat()
            except OSError:
                return None
            key = str(path)
            previous = pending.observed.get(key)
            if previous is None or previous[:2] != (st.st_size, st.st_mtime_ns):
                pending.observed[key] = (st.st_size, st.st_mtime_ns, now)
                previous = pending.observed[key]
            old_enough = (wall - st.st_mtime_ns) / 1e9 >= STABLE_S or now - previous[2] >= STABLE_S
            if not old_enough or not is_complete(path, st.st_size):
                return None
            ready.append(BatchFile(name, counter, st.st_size, st.st_mtime_ns))
        return ready

    def _mark(self, pending: _Pending, batch: NodeBatch, files: list[BatchFile]) -> None:
        parameters = {**self.parameters, "NodeClass": batch.class_type}
        result = mark_batch(
            self.output_dir,
            batch.key,
            files,
            parameters=parameters,
            prompt_id=pending.prompt.prompt_id,
            node_id=batch.node_id,
            comfyui_version=self._comfyui_version,
        )
        if result.marker is not None:
            self.markers_written += 1
            pending.marked += 1
            notify_marker(self.on_marker, result)
        else:
            logger.info(
                "prompt %s node %s: %s already vouched for by a marker",
                pending.prompt.prompt_id,
                batch.node_id,
                batch.key.relative_prefix,
            )
        self.journal.record_group(batch.key, max(f.counter for f in files), max(f.mtime_ns for f in files))
