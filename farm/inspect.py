"""``farm status``: what is queued on the broker, and what each worker runs and has finished."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

from .celery_app import QUEUE, make_app

INSPECT_TIMEOUT_S = 1.0


@dataclass
class WorkerState:
    name: str
    running: list[str] = field(default_factory=list)
    finished: int = 0

    def line(self) -> str:
        running = ", ".join(self.running) if self.running else "idle"
        return f"worker {self.name}: running {running}; {self.finished} scene task(s) finished"


@dataclass
class FarmStatus:
    queued: list[str] = field(default_factory=list)
    workers: list[WorkerState] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "queued": self.queued,
            "workers": [{"name": w.name, "running": w.running, "finished": w.finished} for w in self.workers],
        }


def _scene_of(task_id: str) -> str:
    """``run:scene:attempt`` → ``run/scene``."""
    parts = task_id.rsplit(":", 2)
    return f"{parts[0]}/{parts[1]}" if len(parts) == 3 else task_id


PAGE = 100
"""Messages read per LRANGE: each carries the whole workflow, so a long queue is never read at once."""


def _task_id(raw: bytes | str) -> str | None:
    """The task id of one queued kombu message; None for anything else (a foreign or hostile message)."""
    try:
        message = json.loads(raw)
        headers = message.get("headers") if isinstance(message, dict) else None
        task_id = headers.get("id") if isinstance(headers, dict) else None
        if task_id is None and isinstance(message, dict):
            task_id = json.loads(base64.b64decode(message["body"]))[0]
    except (ValueError, KeyError, TypeError, IndexError, RecursionError):
        return None
    return None if task_id is None else str(task_id)


def queued_scenes(broker_url: str) -> list[str]:
    """The scenes waiting on the broker's queue, oldest first (Redis list of kombu messages)."""
    import redis

    client = redis.Redis.from_url(broker_url, socket_timeout=2.0, socket_connect_timeout=2.0)
    found = []
    for start in range(0, int(client.llen(QUEUE)), PAGE):
        for raw in client.lrange(QUEUE, start, start + PAGE - 1):
            task_id = _task_id(raw)
            if task_id is not None:
                found.append(_scene_of(task_id))
    found.reverse()  # kombu pushes on the left, pops on the right
    return found


def farm_status(broker_url: str, *, visibility_timeout_s: float) -> FarmStatus:
    """Queued scenes and, per worker that answers within a second, its running scene and finished count."""
    status = FarmStatus(queued=queued_scenes(broker_url))
    app = make_app(broker_url, visibility_timeout_s=visibility_timeout_s)
    try:
        inspector = app.control.inspect(timeout=INSPECT_TIMEOUT_S)
        active = inspector.active() or {}
        stats = inspector.stats() or {}
    finally:
        app.close()
    for name in sorted(set(active) | set(stats)):
        state = WorkerState(name)
        state.running = [_scene_of(str(task.get("id"))) for task in active.get(name, [])]
        worker_stats = stats.get(name)
        totals = worker_stats.get("total") if isinstance(worker_stats, dict) else None
        counts = [v for v in totals.values() if isinstance(v, int)] if isinstance(totals, dict) else []
        state.finished = max(0, sum(counts) - len(state.running))
        status.workers.append(state)
    return status
