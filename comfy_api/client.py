"""A small typed client for a stock ComfyUI server (HTTP with ``urllib``, websocket with ``websockets``).

REST surface used (every route also exists under ``/api``)::

    GET  /system_stats            server + torch device facts (preflight, VRAM)
    GET  /object_info             every node class with its inputs (workflow validation)
    GET  /queue                   {"queue_running": [...], "queue_pending": [...]}, items
                                  [number, prompt_id, prompt, extra_data, outputs_to_execute]
    POST /prompt                  {prompt, client_id, prompt_id, extra_data} → 200 {prompt_id, number,
                                  node_errors} | 400 {error: {type, message, details, extra_info}, node_errors}
    GET  /history/{prompt_id}     {prompt_id: entry} once written, ``{}`` while unknown *or* unfinished
                                  (never the bare /history: it returns up to 10 000 entries)
    GET  /view?filename=&subfolder=&type=output   a file's bytes (remote done markers)
    POST /interrupt               {"prompt_id"} → interrupts that prompt only if it is running
    POST /queue                   {"delete": [prompt_id, ...]} → drops them from the pending queue

Websocket ``/ws?clientId=<client_id>``: JSON text frames ``{"type", "data"}``; the ones a
runner acts on are ``status``, ``execution_start``, ``execution_cached`` (cached node ids),
``executing`` (``node: null`` = the history entry is written), ``progress`` (``value``/``max``),
``executed``, ``execution_success``, ``execution_error`` and ``execution_interrupted``. Binary
frames (previews: 4-byte big-endian type, then the payload) are skipped. Per-prompt events go
only to the socket whose ``clientId`` equals the prompt's ``client_id``, and missed events are
not replayed, so :class:`EventStream` must be connected before the prompt is posted.

Errors: a refused connection raises :class:`ServerUnavailable` (the server is down or
restarting); a timeout raises :class:`ServerTimeout` (a busy server is not a dead one); an
unexpected HTTP status :class:`HttpStatusError`; a rejected prompt :class:`PromptRejected`; other
transport failures (reset, closed mid-reply) a plain :class:`ClientError`. All live in
``telemetry/_errors.py``. Requests are never
retried here: the caller owns the policy (``completion.py``), and ``POST /prompt`` stays
idempotent only because the caller chooses the ``prompt_id``.

Proxies from the environment are ignored on purpose: a ComfyUI server is on the same host or
LAN, and a corporate proxy in between turns "connection refused" into an HTTP 502.
"""

from __future__ import annotations

import errno
import http.client
import json
import logging
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from types import TracebackType
from typing import Any

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.sync.client import ClientConnection, connect

from ..telemetry import (
    ClientError,
    HttpStatusError,
    InvalidInputError,
    PromptRejected,
    ServerTimeout,
    ServerUnavailable,
)
from ._json import loads_reply
from ._limits import MAX_REPLY_BYTES, MAX_VIEW_BYTES, read_capped
from .server_url import parse_server_url

logger = logging.getLogger(__name__)

__all__ = [
    "ClientError",
    "ComfyClient",
    "EventStream",
    "HttpStatusError",
    "PromptRejected",
    "ServerTimeout",
    "ServerUnavailable",
    "loads_reply",
]

DEFAULT_REQUEST_TIMEOUT_S = 30.0
"""Per HTTP request, whole (connect, send, headers and body together: see :class:`_DeadlineConnection`).
Generous: while a model loads, ComfyUI's event loop can stall for seconds."""
WS_OPEN_TIMEOUT_S = 5.0
"""Websocket handshake limit; a failed open only delays the next reconnect, the runner polls meanwhile."""
WS_PING_INTERVAL_S = 20.0
"""Keep-alive ping period (websockets' default), so half-open sockets are noticed."""
WS_PING_TIMEOUT_S = 60.0
"""Pong deadline. Longer than websockets' 20 s: a loaded server answers late, and slow is not dead."""
WS_RECONNECT_INITIAL_S = 0.05
"""First reconnect delay after a drop: a ws-only drop usually reconnects at once."""
WS_RECONNECT_MAX_S = 2.0
"""Reconnect backoff cap; doubles from the initial delay. Matches the default history poll interval,
so a restarting server is retried about as often as it is polled (comfy-catapult: 20 s, too slow here)."""
WS_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
"""execution_error carries ``current_inputs`` reprs that can exceed websockets' 1 MiB default."""
_ERROR_BODY_CHARS = 300  # enough of an unexpected error body for a one-line message


def rejection_summary(error: dict[str, Any], node_errors: dict[str, Any]) -> str:
    """One line: the error type and message, then each node's first input problem."""
    parts = [f"{error.get('type', 'rejected')}: {error.get('message', '')}".rstrip(": ")]
    if error.get("details"):
        parts[0] += f" ({error['details']})"
    for node_id, info in node_errors.items():
        for problem in info.get("errors", [])[:1]:
            parts.append(
                f"node {node_id} ({info.get('class_type', '?')}): {problem.get('details') or problem.get('message')}"
            )
    return "; ".join(parts)


def ws_url(base_url: str, client_id: str) -> str:
    """``http://h:p`` → ``ws://h:p/ws?clientId=<id>`` (https → wss)."""
    parts = urllib.parse.urlsplit(base_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    path = parts.path.rstrip("/") + "/ws"
    return urllib.parse.urlunsplit((scheme, parts.netloc, path, urllib.parse.urlencode({"clientId": client_id}), ""))


class _DeadlineSocket(socket.socket):
    """A socket whose every receive is cut at one deadline: a server trickling bytes cannot stretch a request.

    A plain socket timeout restarts with each ``recv``; here each receive waits only for what is left.
    """

    deadline = float("inf")

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("request deadline passed")
        self.settimeout(left)
        return super().recv_into(buffer, nbytes, flags)


class _DeadlineConnection(http.client.HTTPConnection):
    """``http.client`` connection whose whole request ends within its ``timeout`` (counted from creation)."""

    def __init__(self, host: str, *, timeout: float | None = None, **kwargs: Any) -> None:
        # urllib always passes the timeout given to open(), which ComfyClient always sets.
        super().__init__(host, timeout=timeout, **kwargs)
        self._deadline = time.monotonic() + timeout if isinstance(timeout, (int, float)) else float("inf")

    def connect(self) -> None:
        super().connect()
        plain = self.sock
        sock = _DeadlineSocket(plain.family, plain.type, plain.proto, fileno=plain.detach())
        sock.deadline = self._deadline
        sock.settimeout(max(0.001, self._deadline - time.monotonic()) if self._deadline != float("inf") else None)
        self.sock = sock


class _DeadlineHTTPHandler(urllib.request.HTTPHandler):
    """Replaces urllib's HTTP handler (``build_opener`` drops the default for a subclass). HTTPS keeps the
    stock per-read timeout: ComfyUI servers are plain HTTP on the host or LAN."""

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_DeadlineConnection, req)


def _is_refused(exc: BaseException) -> bool:
    """True for 'nothing listens there' (the only failure that may mean the server is gone)."""
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, ConnectionRefusedError):
        return True
    return isinstance(reason, OSError) and reason.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH)


class ComfyClient:
    """Blocking ComfyUI API calls; one instance per server, safe to share across calls (not threads)."""

    def __init__(
        self,
        base_url: str,
        *,
        client_id: str | None = None,
        request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
    ) -> None:
        try:
            self.base_url = parse_server_url(base_url)
        except InvalidInputError as exc:
            raise ClientError(exc.message) from None
        self.client_id = client_id or uuid.uuid4().hex
        self.request_timeout_s = request_timeout_s
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _DeadlineHTTPHandler())

    # ------------------------------------------------------------------ endpoints

    def system_stats(self, *, timeout_s: float | None = None) -> dict[str, Any]:
        """The reply, with ``system`` always an object and ``devices`` a list of objects (each reader does
        ``reply["system"].get(…)`` and ``reply["devices"][0]``: a hostile or broken server must not crash them)."""
        reply = self._get_json("/system_stats", timeout_s=timeout_s)
        if not isinstance(reply.get("system"), dict):
            reply["system"] = {}
        devices = reply.get("devices")
        reply["devices"] = [d for d in devices if isinstance(d, dict)] if isinstance(devices, list) else []
        return reply

    def object_info(self, *, timeout_s: float | None = None) -> dict[str, Any]:
        return self._get_json("/object_info", timeout_s=timeout_s)

    def queue(self, *, timeout_s: float | None = None) -> dict[str, Any]:
        return self._get_json("/queue", timeout_s=timeout_s)

    def submit(
        self,
        prompt: dict[str, Any],
        *,
        prompt_id: str,
        extra_data: dict[str, Any] | None = None,
        timeout_s: float | None = None,
    ) -> dict[str, Any]:
        """Queue *prompt* under the caller's *prompt_id* and this client's ``client_id``."""
        body: dict[str, Any] = {"prompt": prompt, "client_id": self.client_id, "prompt_id": prompt_id}
        if extra_data:
            body["extra_data"] = extra_data
        status, data = self._request("POST", "/prompt", body=body, timeout_s=timeout_s)
        if status == 400:
            reply = self._decode(data, "/prompt")
            error, node_errors = reply.get("error") or {}, reply.get("node_errors") or {}
            if not isinstance(error, dict):
                error = {"type": "unknown", "message": str(error)}
            raise PromptRejected(
                rejection_summary(error, node_errors), status=400, error=error, node_errors=node_errors
            )
        self._check_status(status, data, "/prompt")
        reply = self._decode(data, "/prompt")
        if reply.get("node_errors"):
            node_errors = reply["node_errors"]
            raise PromptRejected(
                rejection_summary({"type": "node_errors", "message": "outputs failed validation"}, node_errors),
                status=status,
                node_errors=node_errors,
                prompt_id=str(reply.get("prompt_id", prompt_id)),
                queued=True,
            )
        return reply

    def history(self, prompt_id: str, *, timeout_s: float | None = None) -> dict[str, Any] | None:
        """The history entry of *prompt_id*, or None while ComfyUI answers ``{}``.

        *timeout_s* shortens the request timeout (a caller near the end of its budget).
        """
        reply = self._get_json(f"/history/{urllib.parse.quote(prompt_id, safe='')}", timeout_s=timeout_s)
        entry = reply.get(prompt_id)
        return entry if isinstance(entry, dict) else None

    def view(
        self, filename: str, subfolder: str, folder_type: str = "output", *, timeout_s: float | None = None
    ) -> bytes:
        """A file's bytes; *timeout_s* shortens the request timeout (a caller near the end of its budget)."""
        query = urllib.parse.urlencode({"filename": filename, "subfolder": subfolder, "type": folder_type})
        status, data = self._request("GET", f"/view?{query}", timeout_s=timeout_s)
        self._check_status(status, data, "/view")
        return data

    def interrupt(self, prompt_id: str | None = None, *, timeout_s: float | None = None) -> None:
        """Interrupt *prompt_id* if it is the running prompt (None: whatever runs)."""
        body = {"prompt_id": prompt_id} if prompt_id else {}
        status, data = self._request("POST", "/interrupt", body=body, timeout_s=timeout_s)
        self._check_status(status, data, "/interrupt")

    def delete_pending(self, prompt_ids: list[str], *, timeout_s: float | None = None) -> None:
        """Drop *prompt_ids* from the pending queue (a running prompt is not touched: see :meth:`interrupt`)."""
        status, data = self._request("POST", "/queue", body={"delete": prompt_ids}, timeout_s=timeout_s)
        self._check_status(status, data, "/queue")

    # ------------------------------------------------------------------ transport

    def _get_json(self, path: str, *, timeout_s: float | None = None) -> dict[str, Any]:
        status, data = self._request("GET", path, timeout_s=timeout_s)
        self._check_status(status, data, path)
        return self._decode(data, path)

    def _request(
        self, method: str, path: str, *, body: dict[str, Any] | None = None, timeout_s: float | None = None
    ) -> tuple[int, bytes]:
        """One request; HTTP error statuses are returned, transport failures raised as ClientError.

        The timeout bounds the whole request (connect, send, status, headers, body), not each socket read.
        """
        timeout = self.request_timeout_s if timeout_s is None else max(0.01, min(timeout_s, self.request_timeout_s))
        max_bytes = MAX_VIEW_BYTES if path.startswith("/view?") else MAX_REPLY_BYTES  # a file copy vs a JSON reply
        url = self.base_url + path
        payload = None if body is None else json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        request = urllib.request.Request(url, data=payload, method=method, headers=headers)
        try:
            with self._opener.open(request, timeout=timeout) as response:
                return int(response.status), read_capped(response, max_bytes, method=method, url=url)
        except urllib.error.HTTPError as exc:
            with exc:
                return int(exc.code), read_capped(exc, max_bytes, method=method, url=url)
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            raise self._transport_error(exc, method, url, timeout) from exc

    def _transport_error(self, exc: BaseException, method: str, url: str, timeout: float) -> ClientError:
        # The URL is the error's path, which str() appends: the message names only the method.
        if _is_refused(exc):
            return ServerUnavailable(f"connection refused: {method}", path=url)
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        if isinstance(reason, (TimeoutError, socket.timeout)):
            return ServerTimeout(f"no reply within {timeout:g} s: {method}", path=url)
        return ClientError(f"{method} failed: {reason!r}", path=url)

    def _check_status(self, status: int, data: bytes, path: str) -> None:
        if 200 <= status < 300:
            return
        text = data.decode("utf-8", "replace")[:_ERROR_BODY_CHARS]
        raise HttpStatusError(f"HTTP {status} from {path}: {text}", status=status, body=text, url=self.base_url + path)

    def _decode(self, data: bytes, path: str) -> dict[str, Any]:
        try:
            value = loads_reply(data)
        except ValueError as exc:
            raise ClientError(f"{path} answered with invalid JSON: {exc}", path=self.base_url + path) from exc
        if not isinstance(value, dict):
            raise ClientError(
                f"{path} answered with {type(value).__name__}, expected an object", path=self.base_url + path
            )
        return value


class EventStream:
    """The websocket ``/ws?clientId=…`` as a pull-based stream that reconnects by itself.

    No background thread of our own: :meth:`next_event` receives with a timeout, and while the
    socket is down it retries the connection with a capped exponential backoff, sleeping at
    most until its own deadline. ``connects`` counts successful opens, so a caller can tell a
    reconnect happened (events may have been missed: re-check ``/history``). Use as a context
    manager, or call :meth:`close`; connect *before* posting the prompt.
    """

    def __init__(self, base_url: str, client_id: str, *, open_timeout_s: float = WS_OPEN_TIMEOUT_S) -> None:
        self.url = ws_url(base_url, client_id)
        self.client_id = client_id
        self.open_timeout_s = open_timeout_s
        self.connects = 0
        self.drops = 0
        self.last_error: str | None = None
        self._ws: ClientConnection | None = None
        self._backoff_s = WS_RECONNECT_INITIAL_S
        self._next_attempt = 0.0
        self._closed = False

    @property
    def connected(self) -> bool:
        return self._ws is not None

    def __enter__(self) -> EventStream:
        self.connect()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def connect(self, timeout_s: float | None = None) -> bool:
        """Open the socket now; False (and a scheduled retry) when the server refuses or stalls."""
        if self._ws is not None:
            return True
        limit = self.open_timeout_s if timeout_s is None else max(0.01, min(timeout_s, self.open_timeout_s))
        try:
            # __enter__ opts out of websockets' "use connect() as a context manager" warning (17.1+)
            # on every version; the connection is closed in _drop().
            self._ws = connect(
                self.url,
                open_timeout=limit,
                ping_interval=WS_PING_INTERVAL_S,
                ping_timeout=WS_PING_TIMEOUT_S,
                close_timeout=1.0,
                max_size=WS_MAX_MESSAGE_BYTES,
                proxy=None,
            ).__enter__()
        except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            self._next_attempt = time.monotonic() + self._backoff_s
            self._backoff_s = min(self._backoff_s * 2, WS_RECONNECT_MAX_S)
            logger.debug("websocket connect failed (%s); next try in %.2f s", self.last_error, self._backoff_s)
            return False
        self.connects += 1
        self._backoff_s = WS_RECONNECT_INITIAL_S
        logger.debug("websocket connected (%d) to %s", self.connects, self.url)
        return True

    def close(self) -> None:
        self._closed = True
        self._drop()

    def next_event(self, timeout: float) -> dict[str, Any] | None:
        """The next JSON message within *timeout* seconds, or None (timeout, or still disconnected)."""
        deadline = time.monotonic() + max(0.0, timeout)
        while not self._closed:
            remaining = deadline - time.monotonic()
            if self._ws is None:
                if not self._wait_and_reconnect(deadline):
                    return None
                continue
            try:
                raw = self._ws.recv(timeout=max(0.0, remaining))
            except TimeoutError:
                return None
            except ConnectionClosed as exc:
                self._on_drop(f"closed: {exc}")
                continue
            event = self._parse(raw)
            if event is not None:
                return event
            if time.monotonic() >= deadline:
                return None
        return None

    def _wait_and_reconnect(self, deadline: float) -> bool:
        """Sleep until the next connection attempt, then try once; False once *deadline* has passed."""
        wake = min(self._next_attempt, deadline)
        now = time.monotonic()
        if wake > now:
            time.sleep(wake - now)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        self.connect(remaining)
        return True

    def _on_drop(self, why: str) -> None:
        self.drops += 1
        self.last_error = why
        logger.info("websocket dropped (%s); reconnecting", why)
        self._drop()
        self._next_attempt = time.monotonic() + self._backoff_s

    def _drop(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            ws.close()

    @staticmethod
    def _parse(raw: str | bytes) -> dict[str, Any] | None:
        if isinstance(raw, bytes):
            return None  # binary preview frame
        try:
            value = loads_reply(raw)
        except ValueError:
            logger.warning("skipping a websocket text frame that is not JSON: %.80s", raw)
            return None
        return value if isinstance(value, dict) and isinstance(value.get("type"), str) else None
