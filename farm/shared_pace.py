"""Earliest finish for Celery workers: each worker's pace in a Redis hash, read before taking a scene.

The in-process dispatcher sees every server; Celery workers do not. So each worker publishes its pace
(moving average of its scene seconds) and whether it is busy since when, under ``scene-telemetry:pace`` on
the broker's Redis, and before running a fresh scene asks :func:`pace.others_can_absorb` whether the others
would finish every waiting scene first. If so it puts the scene back and pauses briefly. An entry not
refreshed for 3 paces + 10 s (a worker that died) is not counted on. Any Redis error means "take it".
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from .pace import Busy, Pace, others_can_absorb

logger = logging.getLogger(__name__)

KEY = "scene-telemetry:pace"
STALE_PACES = 3.0
STALE_GRACE_S = 10.0


class SharedPace:
    """This worker's pace, published; the others', read (wall clock: workers are on different machines)."""

    def __init__(self, broker_url: str, hostname: str, queue: str) -> None:
        import redis

        self.client = redis.Redis.from_url(broker_url, socket_timeout=2.0, socket_connect_timeout=2.0)
        self.hostname = hostname
        self.queue = queue
        self.mine = Pace()

    def begin(self) -> None:
        self._publish(time.time())

    def end(self, elapsed: float, ok: bool) -> None:
        if ok:
            self.mine.observe(elapsed)
        self._publish(None)

    def should_leave(self) -> bool:
        """True when faster workers would end every waiting scene (this one included) before this one would."""
        if self.mine.seconds is None:
            return False
        try:
            entries = self.client.hgetall(KEY)
            waiting = int(self.client.llen(self.queue)) + 1
        except Exception as exc:  # redis-py's errors: never block a scene on this
            logger.debug("pace not read: %s", exc)
            return False
        now = time.time()
        others = [busy for name, raw in entries.items() if (busy := _busy(name, raw, self.hostname, now)) is not None]
        return others_can_absorb(waiting, now + self.mine.seconds, now, others)

    def _publish(self, started: float | None) -> None:
        entry = {"seconds": self.mine.seconds, "started": started, "updated": time.time()}
        try:
            self.client.hset(KEY, self.hostname, json.dumps(entry))
        except Exception as exc:
            logger.debug("pace not published: %s", exc)


def _busy(name: Any, raw: Any, me: str, now: float) -> Busy | None:
    host = name.decode() if isinstance(name, bytes) else str(name)
    if host == me:
        return None
    try:
        entry = json.loads(raw)
        seconds, started, updated = entry.get("seconds"), entry.get("started"), float(entry["updated"])
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    if not isinstance(seconds, (int, float)) or seconds <= 0:
        return None
    if now - updated > STALE_PACES * seconds + STALE_GRACE_S:
        return None
    return Busy(float(seconds), (float(started),) if isinstance(started, (int, float)) else (), 1)
