"""Webhook delivery off the main path: one bounded queue and one worker thread per receiver URL.

A receiver that is down, hangs or answers 500 must never slow a scene or change an
exit code. :meth:`WebhookSender.submit` never blocks (a full queue drops the event,
logged and counted); each event gets at most :data:`MAX_TRIES` tries with backoff,
all inside :data:`EVENT_BUDGET_S`; :meth:`WebhookSender.close` waits at most its
grace for queued events, then aborts the request in flight (its socket is shut
down, so even a receiver that never answers releases the worker at once).

Requests go out through ``http.client`` directly (no proxy environment), so the
connection in flight is reachable for that abort. URLs are logged only redacted.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from ..telemetry import PACKAGE_VERSION
from ._events import DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, redact_url, signature

logger = logging.getLogger(__name__)

MAX_TRIES = 3
EVENT_BUDGET_S = 30.0
"""All tries of one event, backoff included, end within this."""
TRY_TIMEOUT_S = 10.0
BACKOFF_S = (1.0, 3.0)
"""Waits before the 2nd and 3rd try."""
QUEUE_SIZE = 256
CLOSE_GRACE_S = 2.0
"""How long close() lets queued events (run.ended) go out to a receiver that is answering."""
SLOW_TRY_S = 1.0
"""A try unanswered for this long at close() marks the receiver as hanging: no grace for it."""

Outcome = Callable[[str], None]
"""Called with 'delivered', 'failed' (every try failed) or 'dropped' (queue full or closed)."""


class WebhookURLError(ValueError):
    """A --webhook value that is not an http(s) URL; the message never contains the URL's secrets."""


@dataclass(frozen=True)
class _Event:
    name: str
    body: bytes
    delivery_id: str


_STOP = object()


def check_url(url: str) -> str:
    """Return *url* if it is an absolute http(s) URL with a host, else raise :class:`WebhookURLError`."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        _ = parts.port
    except ValueError as exc:
        raise WebhookURLError(f"webhook URL {redact_url(url)} is invalid: {exc}") from None
    if parts.scheme not in ("http", "https") or not host:
        raise WebhookURLError(f"webhook URL {redact_url(url)} must be http:// or https:// with a host")
    target = parts.path + parts.query
    if not target.isascii() or any(ord(c) <= 0x20 or ord(c) == 0x7F for c in target):
        # http.client cannot send these (a UnicodeEncodeError used to kill the sender thread, and its
        # InvalidURL message repeated the query, tokens included)
        raise WebhookURLError(
            f"webhook URL {redact_url(url)}: its path and query must be percent-encoded ASCII (no spaces)"
        )
    return url


class WebhookSender:
    """Delivers events to one URL in submission order from one daemon worker thread."""

    def __init__(
        self,
        url: str,
        *,
        secret: str | None,
        on_outcome: Outcome,
        try_timeout_s: float = TRY_TIMEOUT_S,
        backoff_s: tuple[float, ...] = BACKOFF_S,
        budget_s: float = EVENT_BUDGET_S,
        queue_size: int = QUEUE_SIZE,
    ) -> None:
        self.url = check_url(url)
        self.safe_url = redact_url(url)
        self._secret = secret
        self._on_outcome = on_outcome
        self._try_timeout_s = try_timeout_s
        self._backoff_s = backoff_s
        self._budget_s = budget_s
        self._queue: queue.Queue[object] = queue.Queue(maxsize=queue_size)
        self._stopping = threading.Event()
        self._closed = False
        self._conn_lock = threading.Lock()
        self._last_ok: bool | None = None  # outcome of the last finished try
        self._try_started: float | None = None  # monotonic start of the try in flight
        self._conn: Any = None  # the http.client connection in flight (http.client loads on first delivery)
        self._thread = threading.Thread(target=self._work, name="scene-telemetry-webhook", daemon=True)
        self._thread.start()

    def submit(self, name: str, body: bytes) -> bool:
        """Queue one event; never blocks. False (logged, counted 'dropped') when the queue is full or closed."""
        if self._closed:
            self._drop(name, "the sender is closed")
            return False
        try:
            self._queue.put_nowait(_Event(name, body, str(uuid.uuid4())))
        except queue.Full:
            self._drop(name, f"its queue is full ({self._queue.maxsize} events waiting)")
            return False
        return True

    def close(self, grace_s: float = CLOSE_GRACE_S) -> None:
        """Let queued events go out for up to *grace_s*, then abort the one in flight and drop the rest."""
        if self._closed:
            return
        self._closed = True
        try:
            self._queue.put_nowait(_STOP)
        except queue.Full:
            self._stopping.set()
        deadline = time.monotonic() + max(0.0, grace_s)
        while self._thread.is_alive() and self._answering() and time.monotonic() < deadline:
            self._thread.join(0.05)
        if self._thread.is_alive():
            self._stopping.set()
            self._abort_in_flight()
            self._thread.join(2.0)
        dropped = 0
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, _Event):
                dropped += 1
                self._on_outcome("dropped")
        if dropped:
            logger.warning("webhook %s: %d event(s) not delivered before exit", self.safe_url, dropped)

    def _answering(self) -> bool:
        """False once the last try failed or the try in flight has gone unanswered for SLOW_TRY_S: close()
        stops waiting then, so a dead receiver adds nothing to the command's exit and a hanging one at most
        SLOW_TRY_S."""
        started = self._try_started
        hanging = started is not None and time.monotonic() - started > SLOW_TRY_S
        return self._last_ok is not False and not hanging

    def _drop(self, name: str, why: str) -> None:
        logger.warning("webhook %s: %s event dropped: %s", self.safe_url, name, why)
        self._on_outcome("dropped")

    def _work(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=0.1)
            except queue.Empty:
                if self._stopping.is_set():  # closed with a full queue: no _STOP could be queued
                    return
                continue
            if item is _STOP:
                return
            assert isinstance(item, _Event)
            if self._stopping.is_set():
                self._on_outcome("dropped")
                continue
            self._on_outcome(self._deliver(item))

    def _deliver(self, event: _Event) -> str:
        deadline = time.monotonic() + self._budget_s
        last = "not tried"
        for attempt in range(1, MAX_TRIES + 1):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._stopping.is_set():
                break
            retry, last = self._try(event, min(self._try_timeout_s, remaining))
            self._last_ok = retry is None
            if retry is None:
                return "delivered"
            if not retry or attempt == MAX_TRIES:
                break
            wait = self._backoff_s[min(attempt - 1, len(self._backoff_s) - 1)]
            if self._stopping.wait(min(wait, max(0.0, deadline - time.monotonic()))):
                break
        logger.warning("webhook %s: %s event not delivered (%s)", self.safe_url, event.name, last)
        return "failed"

    def _try(self, event: _Event, timeout: float) -> tuple[bool | None, str]:
        """(None, '') when delivered; (retry?, reason) otherwise. 4xx other than 408/429 is not retried."""
        import http.client

        try:
            status = self._post(event, timeout)
        except (OSError, http.client.HTTPException) as exc:
            if self._stopping.is_set():
                return False, "aborted at exit: the receiver had not answered"
            if isinstance(exc, http.client.InvalidURL):  # its text repeats the path and query: tokens
                return False, "InvalidURL"
            return True, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        except ValueError as exc:  # an encoding error: this sender thread must outlive any one event
            return False, type(exc).__name__
        if 200 <= status < 300:
            return None, ""
        return (status >= 500 or status in (408, 429)), f"HTTP {status}"

    def _post(self, event: _Event, timeout: float) -> int:
        import http.client

        parts = urlsplit(self.url)
        factory = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        conn = factory(parts.hostname or "", parts.port, timeout=timeout)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"scene-telemetry/{PACKAGE_VERSION}",
            EVENT_HEADER: event.name,
            DELIVERY_HEADER: event.delivery_id,
        }
        if parts.username or parts.password:
            import base64

            userinfo = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
            headers["Authorization"] = "Basic " + base64.b64encode(userinfo.encode()).decode()
        if self._secret:
            headers[SIGNATURE_HEADER] = signature(self._secret, event.body)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        with self._conn_lock:
            self._conn = conn
        self._try_started = time.monotonic()
        # the socket timeout bounds each read, not the try: a receiver that trickles its reply a byte at a
        # time would hold this thread (and every queued event) for ever, so the whole try is cut at *timeout*
        watchdog = threading.Timer(timeout, self._abort_in_flight)
        watchdog.daemon = True
        watchdog.start()
        try:
            conn.request("POST", target, body=event.body, headers=headers)
            response = conn.getresponse()
            response.read(65536)
            return int(response.status)
        finally:
            watchdog.cancel()
            watchdog.join()
            self._try_started = None
            with self._conn_lock:
                self._conn = None
            conn.close()

    def _abort_in_flight(self) -> None:
        import socket

        with self._conn_lock:
            sock = self._conn.sock if self._conn is not None else None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
