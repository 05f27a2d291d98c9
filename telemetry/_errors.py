"""One exception tree for the whole package.

::

    TelemetryError
    ├── ContractError          a document does not validate against contract v1
    ├── UnsafePathError        a prefix or path escapes the output directory
    ├── InvalidInputError      empty batch, NUL byte, absurd length, bad policy value
    ├── MarkerError            a done marker is malformed or does not match the files
    ├── DoneTimeoutError       wait_for_done gave up
    ├── OutOfTimeError         an attempt's deadline passed before a step could finish
    ├── ValidationFailed       RunSummaryValidator found disagreements
    └── ClientError            the headless runner could not talk to ComfyUI
        ├── ServerUnavailable  connection refused (lost once past the grace period)
        ├── ServerTimeout      no reply in time: slow, not dead
        ├── ServerError        the server answered, but never usably (HTTP 5xx, an HTML page) ``serverError``
        ├── HttpStatusError    an unexpected HTTP status (.status)
        └── PromptRejected     POST /prompt refused the graph (.error_type, .node_errors)

Every error keeps its keyword arguments as attributes so callers can report the
file and field without parsing the message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = [
    "ClientError",
    "ContractError",
    "DoneTimeoutError",
    "HttpStatusError",
    "InvalidInputError",
    "MarkerError",
    "OutOfTimeError",
    "PromptRejected",
    "ServerError",
    "ServerTimeout",
    "ServerUnavailable",
    "TelemetryError",
    "UnsafePathError",
    "ValidationFailed",
]


class TelemetryError(Exception):
    """Base class of every error this package raises on purpose."""

    def __init__(self, message: str, *, path: str | Path | None = None, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.path = None if path is None else str(path)
        self.field = field

    def __str__(self) -> str:
        where = []
        if self.path:
            where.append(self.path)
        if self.field:
            where.append(f"field {self.field}")
        return f"{self.message} ({', '.join(where)})" if where else self.message


class ContractError(TelemetryError):
    """A document does not validate against the telemetry contract."""


class UnsafePathError(TelemetryError):
    """A filename prefix or path would leave the output directory."""


class InvalidInputError(TelemetryError):
    """An input value is unusable (empty, too long, NUL byte, out of range)."""


class MarkerError(TelemetryError):
    """A done marker is malformed or does not match the files on disk."""


class DoneTimeoutError(TelemetryError):
    """No verified done marker appeared before the deadline."""

    def __init__(self, message: str, *, path: str | Path | None = None, last_problem: str | None = None):
        super().__init__(message, path=path)
        self.last_problem = last_problem


class OutOfTimeError(TelemetryError):
    """An attempt's :class:`Deadline` passed before a step (e.g. ``POST /prompt``) got an answer."""


class ValidationFailed(TelemetryError):
    """run-summary.txt and artifact-metadata.json disagree."""


class ClientError(TelemetryError):
    """The headless client could not complete a request to ComfyUI."""


class ServerUnavailable(ClientError):
    """The ComfyUI server refused the connection (the waiter declares it lost after a grace period)."""


class ServerTimeout(ClientError):
    """No reply within the request timeout: the server is slow, not necessarily dead."""


class ServerError(ClientError):
    """Every try of a request got an answer, but none usable (HTTP 5xx, an HTML or malformed body).

    Not :class:`ServerUnavailable`: the server (or a proxy in front of it) is up and answering; the
    runner records it as ``serverError``, keeping ``serverLost`` for refused connections and restarts.
    """


class HttpStatusError(ClientError):
    """ComfyUI answered with an unexpected HTTP status (5xx, 404 …)."""

    def __init__(self, message: str, *, status: int, body: str = "", url: str | None = None) -> None:
        super().__init__(message, path=url)
        self.status = status
        self.body = body


class PromptRejected(ClientError):
    """``POST /prompt`` refused the graph (HTTP 400) or dropped outputs (200 with ``node_errors``).

    ``queued`` is True for the 200 case: ComfyUI still runs the outputs that validated, under
    ``prompt_id``; interrupt it if a partial run is unwanted.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int,
        error: dict[str, Any] | None = None,
        node_errors: dict[str, Any] | None = None,
        prompt_id: str | None = None,
        queued: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error = error or {}
        self.error_type: str = str(self.error.get("type", "node_errors" if queued else "unknown"))
        self.node_errors = node_errors or {}
        self.prompt_id = prompt_id
        self.queued = queued
