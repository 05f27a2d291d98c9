"""Reading ComfyUI's ``/history`` and ``/queue``: an entry's verdict, a trimmed error, where a prompt is.

Shared by the completion wait and the runner's look-ups (a lost ``POST /prompt`` reply, ``--resume``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..telemetry import Deadline, ExitReason, ServerTimeout, iso_from_epoch_ms
from .client import ComfyClient

__all__ = [
    "HistoryVerdict",
    "classify_history_entry",
    "error_detail",
    "locate_prompt",
    "stamp_from_epoch_ms",
    "trim_error",
]

TRACEBACK_KEEP_LINES = 6  # the innermost frames name the failing call; the rest is noise
TRACEBACK_LINE_CHARS = 400
_ERROR_KEYS = ("node_id", "node_type", "exception_type", "exception_message", "executed", "timestamp")


def trim_error(data: dict[str, Any]) -> dict[str, Any]:
    """execution_error/interrupted data without ``current_inputs``/``outputs`` (huge, may hold secrets)."""
    kept = {k: data[k] for k in _ERROR_KEYS if k in data}
    traceback = data.get("traceback")
    if isinstance(traceback, list):
        kept["traceback"] = [str(line)[:TRACEBACK_LINE_CHARS] for line in traceback[-TRACEBACK_KEEP_LINES:]]
    return kept


def error_detail(kind: str, error: dict[str, Any] | None) -> str:
    error = error or {}
    where = f"node {error.get('node_id', '?')} ({error.get('node_type', '?')})"
    if kind == "interrupted":
        return f"interrupted at {where}"
    message = str(error.get("exception_message", "")).strip().splitlines()
    first = message[0].strip("* ") if message else "no message"
    return f"{error.get('exception_type', 'Error')}: {first} at {where}"


@dataclass
class HistoryVerdict:
    reason: ExitReason
    error: dict[str, Any] | None
    started_at: str | None
    success_at: str | None


def classify_history_entry(entry: dict[str, Any]) -> HistoryVerdict:
    """Read a ``/history/{id}`` entry's ``status``: success, executionError or interrupted."""
    status = entry.get("status")
    if not isinstance(status, dict):
        # Servers before ComfyUI PR #2523 had no status block; an entry with outputs finished.
        return HistoryVerdict("success" if entry.get("outputs") else "executionError", None, None, None)
    verdict = HistoryVerdict("executionError", None, None, None)
    kinds: set[str] = set()
    messages = status.get("messages")
    for item in messages if isinstance(messages, list) else []:
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str) and isinstance(item[1], dict)):
            continue
        name, data = item
        kinds.add(name)
        stamp = stamp_from_epoch_ms(data.get("timestamp"))
        if name == "execution_start":
            verdict.started_at = stamp
        elif name == "execution_success":
            verdict.success_at = stamp
        elif name in ("execution_error", "execution_interrupted"):
            verdict.error = trim_error(data)
    if status.get("status_str") == "success" and status.get("completed") is True:
        verdict.reason = "success"
    elif "execution_interrupted" in kinds:
        verdict.reason = "interrupted"
    return verdict


def stamp_from_epoch_ms(epoch_ms: Any) -> str | None:
    """A message's ``timestamp`` (epoch ms) as ISO-8601; None when it is missing or no real time (NaN, 1e300)."""
    if not isinstance(epoch_ms, int | float) or isinstance(epoch_ms, bool):
        return None
    try:
        return iso_from_epoch_ms(epoch_ms)
    except (OverflowError, OSError, ValueError):
        return None


def locate_prompt(
    client: ComfyClient,
    prompt_id: str,
    *,
    timeout_s: float | None = None,
    deadline: Deadline | None = None,
) -> str:
    """Where *prompt_id* is now: ``history``, ``running``, ``pending`` or ``absent`` (for --resume).

    With *deadline* each of the up to three requests gets only the time left, and one with no time left is
    not made: :class:`ServerTimeout` instead.
    """

    def limit() -> float | None:
        if deadline is None:
            return timeout_s
        left = deadline.left()
        if left <= 0:
            raise ServerTimeout(f"no time left to look up prompt {prompt_id}")
        return left if timeout_s is None else min(timeout_s, left)

    if client.history(prompt_id, timeout_s=limit()) is not None:
        return "history"
    queue = client.queue(timeout_s=limit())
    for state in ("running", "pending"):
        items = queue.get(f"queue_{state}")
        for item in items if isinstance(items, list) else []:
            if isinstance(item, list) and len(item) > 1 and item[1] == prompt_id:
                return state
    # The prompt may have finished between the two reads.
    return "history" if client.history(prompt_id, timeout_s=limit()) is not None else "absent"
