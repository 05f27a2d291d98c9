"""The command line's Prometheus metrics, in a registry of their own (never prometheus_client's global one)."""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

logger = logging.getLogger(__name__)

SCENE_DURATION_BUCKETS = (1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0)
"""Seconds: image scenes take seconds, video scenes minutes to hours."""


class RunMetrics:
    """Scenes by exit reason, scene durations, retries, markers by source, server up, webhook outcomes."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.scenes = Counter(
            "scene_telemetry_scenes", "Scenes ended, by HistoryExitReason.", ["exit_reason"], registry=r
        )
        self.scene_duration = Histogram(
            "scene_telemetry_scene_duration_seconds",
            "Scene DurationSeconds (execution start to frames durable).",
            ["exit_reason"],
            buckets=SCENE_DURATION_BUCKETS,
            registry=r,
        )
        self.retries = Counter("scene_telemetry_scene_retries", "Scene attempts beyond the first.", registry=r)
        self.markers = Counter(
            "scene_telemetry_markers", "Done markers seen or written, by marker Source.", ["source"], registry=r
        )
        self.server_up = Gauge(
            "scene_telemetry_server_up",
            "1 when the ComfyUI server answered its last check, else 0.",
            ["server"],
            registry=r,
        )
        self.runs = Counter("scene_telemetry_runs", "Runs ended, by exit code.", ["exit_code"], registry=r)
        self.webhooks = Counter(
            "scene_telemetry_webhook_deliveries",
            "Webhook events by outcome: delivered, failed (every try failed), dropped (queue full or exit).",
            ["outcome"],
            registry=r,
        )
        for outcome in ("delivered", "failed", "dropped"):
            self.webhooks.labels(outcome=outcome)
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def serve(self, port: int, host: str = "127.0.0.1") -> int:
        """Expose ``/metrics`` on *host*:*port* (0 = any free port) from a daemon thread; returns the port."""
        self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        bound = int(self._server.server_address[1])
        logger.info("metrics at http://%s:%d/metrics", host, bound)
        return bound

    def close(self) -> None:
        """Stop the exposition server and join its thread, at once: ``serve_forever`` looks at its shutdown
        flag only every 0.5 s, so a connection wakes it (a SIGTERM'd sentinel must be gone within 2 s)."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            stopper = threading.Thread(target=server.shutdown, name="scene-telemetry-metrics-stop", daemon=True)
            stopper.start()
            deadline = time.monotonic() + 5.0
            while stopper.is_alive() and time.monotonic() < deadline:
                _wake(server.server_address[:2])
                stopper.join(0.01)
            server.server_close()
        if thread is not None:
            thread.join(5.0)


def _wake(address: Any) -> None:
    """Connect and hang up (the handler sees an empty request); errors mean it is stopping anyway."""
    try:
        with socket.create_connection((str(address[0]), int(address[1])), timeout=0.2):
            pass
    except OSError:
        pass
