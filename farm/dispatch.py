"""Several ComfyUI servers from one process: pull-based, retries elsewhere, quarantine, one record per scene.

Each server has ``per_server`` slots (default 1), each a thread with its own client (its own websocket
client id). A slot takes the next scene only when it is free, so a fast GPU takes more scenes than a slow
one; nothing is assigned ahead. Each placement is one attempt through the run's scene-execution core
(:class:`runner.scene.SceneExecutor` with ``retry_here=False``): a scene that ends ``executionError`` or
``serverLost`` goes back to the front of the queue, marked as tried on that server, while the scene's
``scene_retry_budget`` lasts; a server it has not tried takes it first.

A server whose scenes fail ``quarantine_after`` times in a row is quarantined (a warning) and probed with
``/system_stats`` every ``probe_interval_s`` while the run lasts; when it answers it takes scenes again.
When every server is quarantined and none is running a scene, the run ends cleanly: the scenes left get a
``serverLost`` record saying no server was usable.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..comfy_api.client import ComfyClient
from ..runner.attempt import Notify
from ..runner.documents import scene_document
from ..runner.options import RunOptions
from ..runner.outcomes import MarkerOutcome, SceneOutcome
from ..runner.scene import SceneExecutor
from ..runner.scenes import FieldMapping, Scene
from ..runner.state import RunState
from ..telemetry import RETRYABLE_REASONS, ClientError, iso_utc, utc_now
from .pace import Busy, Pace, others_can_absorb
from .servers import FarmServer
from .stats import ServerStats

logger = logging.getLogger(__name__)

DEFAULT_QUARANTINE_AFTER = 3
DEFAULT_PROBE_INTERVAL_S = 30.0
PROBE_TIMEOUT_S = 3.0
_IDLE_WAIT_S = 0.5
"""A slot with nothing it may take re-checks this often (a quarantine may end, a probe may be due)."""

ClientFactory = Callable[[str], ComfyClient]


class SharedRunState(RunState):
    """The resume record, written from several slot threads: every change and save under one lock."""

    def __init__(self, run_dir: Path, data: dict[str, Any]) -> None:
        super().__init__(run_dir, data)
        self._lock = threading.RLock()

    def record_attempt(self, scene_id: str, prompt_id: str) -> None:
        with self._lock:
            super().record_attempt(scene_id, prompt_id)

    def record_document(self, scene_id: str, document: dict[str, Any]) -> None:
        with self._lock:
            super().record_document(scene_id, document)

    def record_server(self, scene_id: str, server: FarmServer) -> None:
        """Where the scene's latest prompt went (``--resume`` re-attaches there first); no credentials kept."""
        with self._lock:
            entry = self.scenes.setdefault(scene_id, {"PromptIds": [], "Document": None})
            entry["Server"], entry["ServerInstanceId"] = server.label, server.instance_id
            self.save()

    def server_of(self, scene_id: str) -> str | None:
        """The instance id of the server the scene's latest prompt went to."""
        with self._lock:
            value = self.scenes.get(scene_id, {}).get("ServerInstanceId")
        return value if isinstance(value, str) else None

    def save(self) -> None:
        with self._lock:
            super().save()


@dataclass
class _Job:
    scene: Scene
    next_attempt: int = 1
    retries_left: int = 0
    tried: set[str] = field(default_factory=set)
    prefer: str | None = None
    """Instance id of a server the scene should go to first (``--resume``: where its last prompt went)."""
    last: SceneOutcome | None = None
    """The outcome of its latest placement (kept when no server is left to retry it)."""
    started: float = 0.0


@dataclass
class _Slot:
    server: FarmServer
    stats: ServerStats
    consecutive_failures: int = 0
    quarantined_until: float | None = None
    pace: Pace = field(default_factory=Pace)
    started: list[float] = field(default_factory=list)
    """Start times of this server's scenes in flight."""


class Dispatcher:
    """Runs a scene list over several servers; construct, then :meth:`run` (returns outcomes in scene order)."""

    def __init__(
        self,
        servers: Sequence[FarmServer],
        workflow: Mapping[str, Any],
        mapping: FieldMapping,
        options: RunOptions,
        state: SharedRunState,
        *,
        per_server: int = 1,
        quarantine_after: int = DEFAULT_QUARANTINE_AFTER,
        probe_interval_s: float = DEFAULT_PROBE_INTERVAL_S,
        notify: Notify | None = None,
        client_factory: ClientFactory = ComfyClient,
    ) -> None:
        if not servers:
            raise ValueError("a farm needs at least one server")
        self.workflow = workflow
        self.mapping = mapping
        self.options = options
        self.state = state
        self.per_server = max(1, per_server)
        self.quarantine_after = max(1, quarantine_after)
        self.probe_interval_s = probe_interval_s
        self.notify: Notify = notify or (lambda event: None)
        self.client_factory = client_factory
        self.slots = {s.url: _Slot(s, ServerStats(s.label, s.instance_id, s.device)) for s in servers}
        self._cond = threading.Condition()
        self._pending: list[_Job] = []
        self._running = 0
        self._outcomes: dict[str, SceneOutcome] = {}
        self._ended_reason: str | None = None

    @property
    def stats(self) -> list[ServerStats]:
        return [slot.stats for slot in self.slots.values()]

    def run(self, scenes: Sequence[Scene]) -> list[SceneOutcome]:
        """Every scene to an end (success, a final failure, or no usable server), in scene order."""
        budget = self.options.policy.scene_retry_budget
        for scene in scenes:
            ids = self.state.prompt_ids(scene.id) if self.options.resume else []
            prefer = self.state.server_of(scene.id) if self.options.resume else None
            self._pending.append(_Job(scene, len(ids) + 1 if ids else 1, budget, prefer=prefer))
        threads = [
            threading.Thread(target=self._serve, args=(slot,), name=f"farm-{slot.stats.instance_id}-{n}", daemon=True)
            for slot in self.slots.values()
            for n in range(self.per_server)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for job in self._pending:  # no usable server was left for them
            self._outcomes[job.scene.id] = job.last or self._unplaced(job)
        return [self._outcomes[scene.id] for scene in scenes]

    # ------------------------------------------------------------------ one slot

    def _serve(self, slot: _Slot) -> None:
        client = self.client_factory(slot.server.url)
        executor = SceneExecutor(
            client,
            self.workflow,
            self.mapping,
            self.options,
            self.state,
            notify=self._server_notify(slot.server),
            fields=slot.server.record_fields(),
        )
        while True:
            job = self._take(slot)
            if job is None:
                return
            self.state.record_server(job.scene.id, slot.server)
            started = time.monotonic()
            try:
                outcome = executor.run(job.scene, first_attempt=job.next_attempt, retry_here=False)
            except ClientError as exc:  # the core reports server trouble as exit reasons; this is a last guard
                logger.warning("scene %s on %s: %s", job.scene.id, slot.server.label, exc)
                outcome = self._unplaced(job, f"{slot.server.label}: {exc}")
            self._finish(slot, job, outcome, time.monotonic() - started)

    def _server_notify(self, server: FarmServer) -> Notify:
        def notify(event: dict[str, Any]) -> None:
            if event.get("event") in ("scene_start", "scene_end", "retry"):
                event = {**event, "server": server.label, "instance_id": server.instance_id}
            self.notify(event)

        return notify

    def _take(self, slot: _Slot) -> _Job | None:
        """The next scene this slot may run, waiting while there is none; None when the run is over."""
        with self._cond:
            while True:
                if not self._pending and self._running == 0:
                    self._cond.notify_all()
                    return None
                if not self._pending:
                    self._cond.wait(_IDLE_WAIT_S)
                    continue
                if self._nobody_usable():
                    self._end_unusable()
                    return None
                if slot.quarantined_until is not None:
                    if time.monotonic() < slot.quarantined_until:
                        self._cond.wait(min(_IDLE_WAIT_S, slot.quarantined_until - time.monotonic()))
                        continue
                    slot.quarantined_until = time.monotonic() + self.probe_interval_s  # one probe at a time
                    self._cond.release()
                    try:
                        back = self._probe(slot.server)
                    finally:
                        self._cond.acquire()
                    if not back:
                        continue
                    logger.warning("server %s answers again; it takes scenes again", slot.server.label)
                    slot.quarantined_until, slot.consecutive_failures = None, 0
                job = self._pick(slot)
                if job is not None:
                    self._pending.remove(job)
                    self._running += 1
                    job.started = time.monotonic()
                    slot.started.append(job.started)
                    return job
                self._cond.wait(_IDLE_WAIT_S)

    def _pick(self, slot: _Slot) -> _Job | None:
        """The first scene this server has not tried (and no other server is preferred for); else a scene no
        usable server is left to try elsewhere."""
        url, me = slot.server.url, slot.server.instance_id
        usable = [u for u, s in self.slots.items() if s.quarantined_until is None]
        usable_ids = {self.slots[u].server.instance_id for u in usable}
        for job in self._pending:
            if url in job.tried:
                continue
            if job.prefer is not None and job.prefer != me and job.prefer in usable_ids:
                continue
            if not job.tried and self._leave_to_faster(slot):
                return None
            return job
        for job in self._pending:
            if not [u for u in usable if u not in job.tried]:
                return job
        return None

    def _leave_to_faster(self, slot: _Slot) -> bool:
        """Earliest finish (:mod:`farm.pace`): the others would run every waiting scene before this slot ends one."""
        if slot.pace.seconds is None:
            return False
        now = time.monotonic()
        others = [
            Busy(s.pace.seconds, tuple(s.started), self.per_server)
            for s in self.slots.values()
            if s is not slot and s.quarantined_until is None
        ]
        waiting = sum(1 for job in self._pending if not job.tried)
        return others_can_absorb(waiting, now + slot.pace.seconds, now, others)

    def _nobody_usable(self) -> bool:
        return self._running == 0 and all(s.quarantined_until is not None for s in self.slots.values())

    def _end_unusable(self) -> None:
        if self._ended_reason is None:
            self._ended_reason = "no usable server: every server is quarantined"
            logger.warning("%s; %d scene(s) not run", self._ended_reason, len(self._pending))
        self._cond.notify_all()

    def _probe(self, server: FarmServer) -> bool:
        try:
            self.client_factory(server.url).system_stats(timeout_s=PROBE_TIMEOUT_S)
        except ClientError as exc:
            logger.info("server %s still quarantined: %s", server.label, exc)
            return False
        return True

    # ------------------------------------------------------------------ after a placement

    def _finish(self, slot: _Slot, job: _Job, outcome: SceneOutcome, elapsed: float) -> None:
        stats = slot.stats
        with self._cond:
            self._running -= 1
            slot.started.remove(job.started)
            if outcome.ok:
                slot.pace.observe(elapsed)
            stats.scenes += 1
            stats.busy_s += elapsed
            job.tried.add(slot.server.url)
            job.prefer = None
            if outcome.ok or outcome.exit_reason == "validationError":
                slot.consecutive_failures = 0
            else:
                stats.failures += 1
                slot.consecutive_failures += 1
                if slot.consecutive_failures >= self.quarantine_after and slot.quarantined_until is None:
                    self._quarantine(slot)
            retryable = outcome.exit_reason in RETRYABLE_REASONS or outcome.exit_reason == "serverLost"
            if not outcome.ok and retryable and job.retries_left > 0:
                job.retries_left -= 1
                job.last = outcome
                job.next_attempt = int(outcome.document.get("SceneAttempts") or job.next_attempt) + 1
                self._pending.insert(0, job)
                self.notify(
                    {
                        "event": "retry",
                        "scene": job.scene.id,
                        "reason": outcome.exit_reason,
                        "retry": self.options.policy.scene_retry_budget - job.retries_left,
                        "server": slot.server.label,
                        "elsewhere": True,
                    }
                )
            else:
                self._outcomes[job.scene.id] = outcome
            self._cond.notify_all()

    def _quarantine(self, slot: _Slot) -> None:
        slot.quarantined_until = time.monotonic() + self.probe_interval_s
        slot.stats.quarantines += 1
        logger.warning(
            "server %s quarantined after %d failed scene(s) in a row; probing it again in %g s",
            slot.server.label,
            slot.consecutive_failures,
            self.probe_interval_s,
        )
        self.notify({"event": "warning", "message": f"server {slot.server.label} quarantined"})

    def _unplaced(self, job: _Job, reason: str | None = None) -> SceneOutcome:
        """The record of a scene that no server ran to an end (``serverLost``, nothing queued by it here)."""
        detail = reason or self._ended_reason or "no usable server"
        now = iso_utc(utc_now())
        fields = {
            "PromptId": None,
            "QueueStart": now,
            "QueueEnd": now,
            "DurationSeconds": 0.0,
            "HistoryAttempts": 0,
            "HistoryExitReason": "serverLost",
            "ExecutionSuccessDetected": False,
            "ExecutionSuccessAt": None,
            "HistoryPostExecutionTimeoutReached": False,
            "SceneAttempts": max(0, job.next_attempt - 1),
            "DoneMarkerDetected": False,
            "DoneMarkerWaitSeconds": 0.0,
            "ForcedCopyTriggered": False,
            "ExitDetail": detail,
            "ServerUrl": None,
            "ServerInstanceId": None,
            "ServerDevice": None,
        }
        any_client = self.client_factory(next(iter(self.slots)))
        document = scene_document(any_client, self.options, job.scene.id, "", None, MarkerOutcome(), None, fields)
        self.state.record_document(job.scene.id, document)
        self.notify(
            {"event": "scene_end", "scene": job.scene.id, "exit_reason": "serverLost", "ok": False, "detail": detail}
        )
        return SceneOutcome(job.scene.id, None, "serverLost", document)
