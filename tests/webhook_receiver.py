"""A real local webhook receiver for the monitoring tests (library, ``run`` and ``sentinel`` alike).

One HTTP server on 127.0.0.1 records each POST; its mode decides the answer, so a test can make a receiver that
fails, hangs or comes back. Used as a context manager, it shuts its server and thread down on exit (the suite
fails on leaked threads).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

SIGNATURE = "X-Scene-Telemetry-Signature"


def free_port() -> int:
    """A port nothing listens on right now (for --metrics-port, or a receiver that is down)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape(port: int) -> str:
    """The Prometheus text a metrics port serves now."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        return str(reply.read().decode())


class WebhookReceiver:
    """'ok' records each event (204), '500' fails every try, '500-twice' fails the first two tries, 'hang' never
    answers until closed. With *secret*, each recorded body whose signature does not match counts in
    ``bad_signatures``. A subclass's ``received`` runs in the handler thread after an event is recorded, before
    the answer (the sender is still waiting, so e.g. its metrics port is still up)."""

    def __init__(
        self,
        mode: str = "ok",
        secret: str | None = None,
        path: str = "/hook",
    ) -> None:
        self.mode = mode
        self.secret = secret
        self.events: list[tuple[dict[str, str], bytes]] = []
        self.hits = 0
        self.bad_signatures = 0
        self.release = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    @property
    def bodies(self) -> list[bytes]:
        return [body for _, body in self.events]

    def payloads(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.events]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.hits += 1
                if receiver.mode == "hang":
                    receiver.release.wait(15)
                    return
                if receiver.mode == "500" or (receiver.mode == "500-twice" and receiver.hits <= 2):
                    self.send_response(500)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                receiver._record(dict(self.headers.items()), body)
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def _record(self, headers: dict[str, str], body: bytes) -> None:
        if self.secret is not None:
            expected = "sha256=" + hmac.new(self.secret.encode(), body, hashlib.sha256).hexdigest()
            got = next((v for k, v in headers.items() if k.lower() == SIGNATURE.lower()), "")
            if not hmac.compare_digest(got, expected):
                self.bad_signatures += 1
        self.events.append((headers, body))
        self.received(body)

    def received(self, body: bytes) -> None:
        """Called after each recorded event; nothing here."""

    def close(self) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        time.sleep(0.05)  # let a released handler thread finish

    def __enter__(self) -> WebhookReceiver:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()
