"""The one object a command uses for monitoring: metrics exposition and webhooks behind four calls."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

from ._events import (
    MARKER_WRITTEN,
    RUN_ENDED,
    SCENE_ENDED,
    SECRET_ENV,
    encode,
    envelope,
    marker_fields,
    redact_url,
    scene_fields,
)
from ._webhook import CLOSE_GRACE_S, WebhookSender, check_url

logger = logging.getLogger(__name__)


class Monitor:
    """Counts what a command does, serves it on ``--metrics-port`` and posts it to every ``--webhook``.

    Every method returns at once and never raises for a monitoring failure: metrics are
    in-process counters, webhook events go to bounded queues drained by worker threads.
    Call :meth:`close` (or use ``with``) at the end: it lets queued events go out for at
    most ``grace_s`` seconds, then stops the threads.
    """

    def __init__(
        self,
        *,
        metrics_port: int | None = None,
        webhooks: Sequence[str] = (),
        source: str = "run",
        secret: str | None = None,
        metrics_host: str = "127.0.0.1",
        **sender_options: Any,
    ) -> None:
        from ._metrics import RunMetrics  # prometheus_client loads only when a command monitors

        self.source = source
        self.metrics = RunMetrics()
        self._sequence = 0
        self._lock = threading.Lock()
        for url in webhooks:  # every URL is checked before any worker thread starts
            check_url(url)
        self._senders = [
            WebhookSender(url, secret=secret, on_outcome=self._count_outcome, **sender_options) for url in webhooks
        ]
        self.metrics_port: int | None = None
        if metrics_port is not None:
            try:
                self.metrics_port = self.metrics.serve(metrics_port, metrics_host)
            except BaseException:
                self.close(grace_s=0)
                raise

    @classmethod
    def from_options(cls, metrics_port: int | None, webhooks: Sequence[str] | None, *, source: str = "run") -> Monitor:
        """The usual constructor for ``--metrics-port`` / ``--webhook``; the secret comes from
        ``$SCENE_TELEMETRY_WEBHOOK_SECRET``. Raises ``OSError`` when the port cannot be bound and
        ``WebhookURLError`` (a ``ValueError``) for a URL that is not http(s): one line for the user."""
        return cls(
            metrics_port=metrics_port, webhooks=list(webhooks or ()), source=source, secret=os.environ.get(SECRET_ENV)
        )

    @property
    def webhook_urls(self) -> list[str]:
        """The receivers, redacted (safe to print)."""
        return [s.safe_url for s in self._senders]

    def scene_ended(self, scene: Mapping[str, Any], *, run_id: str | None = None) -> None:
        """A scene is final: *scene* is its contract ``scene-telemetry`` document (as written)."""
        reason = str(scene.get("HistoryExitReason") or "unknown")
        self.metrics.scenes.labels(exit_reason=reason).inc()
        duration = scene.get("DurationSeconds")
        if isinstance(duration, (int, float)) and duration >= 0:
            self.metrics.scene_duration.labels(exit_reason=reason).observe(float(duration))
        attempts = scene.get("SceneAttempts")
        if isinstance(attempts, int) and attempts > 1:
            self.metrics.retries.inc(attempts - 1)
        self._post(SCENE_ENDED, {"scene": scene_fields(scene, run_id)})

    def run_ended(
        self,
        *,
        run_id: str | None,
        exit_code: int,
        scenes: int,
        failed: int,
        duration_seconds: float | None,
        run_dir: str | None = None,
    ) -> None:
        """The run (or a sentinel/worker session) is over; *exit_code* is what the process will return."""
        self.metrics.runs.labels(exit_code=str(exit_code)).inc()
        run = {
            "run_id": run_id,
            "ok": exit_code == 0,
            "exit_code": exit_code,
            "scenes": scenes,
            "failed": failed,
            "duration_seconds": duration_seconds,
            "run_dir": run_dir,
        }
        self._post(RUN_ENDED, {"run": run})

    def marker_written(self, marker: Mapping[str, Any], *, path: str | None = None, post: bool | None = None) -> None:
        """A done marker appeared (*marker*: its contract document). Counted by Source; posted as an event
        when *post* is true (default: for the sentinel, whose unit of work is a marker)."""
        self.metrics.markers.labels(source=str(marker.get("Source") or "unknown")).inc()
        if post if post is not None else self.source == "sentinel":
            self._post(MARKER_WRITTEN, {"marker": marker_fields(marker, path)})

    def server_up(self, server: str, up: bool) -> None:
        """Record whether *server* (a ComfyUI base URL; exported redacted) answered its last check."""
        self.metrics.server_up.labels(server=redact_url(server)).set(1 if up else 0)

    def close(self, grace_s: float = CLOSE_GRACE_S) -> None:
        """Stop the exposition server; give queued webhook events up to *grace_s* seconds, then stop."""
        for sender in self._senders:
            sender.close(grace_s)
        self.metrics.close()

    def __enter__(self) -> Monitor:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _post(self, name: str, body: dict[str, Any]) -> None:
        if not self._senders:
            return
        with self._lock:
            self._sequence += 1
            sequence = self._sequence
        try:
            payload = encode(envelope(name, self.source, sequence, body))
        except (TypeError, ValueError) as exc:  # a NaN or an odd value in a document: log, never raise
            logger.warning("webhook %s event not sent: %s", name, exc)
            return
        for sender in self._senders:
            sender.submit(name, payload)

    def _count_outcome(self, outcome: str) -> None:
        self.metrics.webhooks.labels(outcome=outcome).inc()
