"""Waiting for one queued prompt: websocket events first, ``/history/{id}`` as the confirmation.

The websocket is an accelerator, the history entry is the truth:

1. ``execution_success`` / ``execution_error`` / ``execution_interrupted`` for our prompt id
   (or ``executing`` with ``node: null``) trigger an immediate ``GET /history/{id}``. ComfyUI
   sends the final event *before* it writes the history entry (comfyui-facts §5), so an empty
   reply is retried with a short doubling backoff until ``post_execution_timeout_seconds``
   after the event; the attempt limit does not apply in that window.
2. Independently, ``/history/{id}`` is polled every ``history_poll_interval_seconds`` (first poll
   at once: a resumed prompt may be finished). While the websocket is down, this is the only
   signal; :class:`EventStream` keeps reconnecting in the gaps.
3. Liveness: only a refused connection counts against the server, and only once refusals have
   lasted ``server_grace_s`` (a restart). Timeouts, HTTP 5xx and resets are a slow or sick
   server: logged and retried at the poll interval. After any sign of a restart (a websocket
   reconnect, or HTTP answering again after refusals) the prompt is looked up in ``/queue``;
   one that is in neither queue nor history is lost (``serverLost``, ``lost=True``).

Exit reasons (``HistoryExitReason``): ``success`` only when the history entry says so;
``executionError`` / ``interrupted`` from the entry or, when no entry comes within the
post-execution window, from the websocket event; ``postExecution`` when ``execution_success``
was seen but no entry came; ``maxWait`` when ``max_wait_seconds`` passed without a final status;
``attemptLimit`` when ``max_attempt_count`` (> 0) polls answered without an entry; ``serverLost``.
The attempt's budget is therefore its :class:`telemetry.Deadline` (``max_wait_seconds`` from its start)
plus, once a final event arrived, ``post_execution_timeout_seconds``: at most ``max_wait + post_execution``
after the attempt began.
Every request (history polls and the lost-prompt lookups) gets only the time left, a request in flight
is cut at the deadline (whole-request timeouts, :mod:`comfy_api.client`), and none is made once it passed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ..telemetry import EXIT_REASONS, Deadline, ExitReason
from .client import ClientError, ComfyClient, EventStream, HttpStatusError, ServerUnavailable
from .history import classify_history_entry, error_detail, locate_prompt, stamp_from_epoch_ms, trim_error

logger = logging.getLogger(__name__)


class WaitPolicy(Protocol):
    """The four queue-policy knobs the wait reads (``runner.policy.QueuePolicy`` has them)."""

    @property
    def max_wait_seconds(self) -> float: ...
    @property
    def history_poll_interval_seconds(self) -> float: ...
    @property
    def max_attempt_count(self) -> int: ...
    @property
    def post_execution_timeout_seconds(self) -> float: ...


__all__ = [
    "EXIT_REASONS",
    "CompletionResult",
    "EventStream",
    "classify_history_entry",
    "locate_prompt",
    "trim_error",
    "wait_for_completion",
    "WaitPolicy",
]

DEFAULT_SERVER_GRACE_S = 60.0
"""How long refused connections may last before the server counts as lost: comfy-cli's
lost-after-restart grace. A ComfyUI restart (custom-node imports) takes 10-40 s."""
CONFIRM_BACKOFF_INITIAL_S = 0.005
"""First re-read of an empty history after the final event. The recorded gap between
``execution_success`` and a readable entry is about 1 ms; 5 ms avoids spinning."""
CONFIRM_BACKOFF_MAX_S = 0.25
"""Cap of the post-execution backoff: a 30 s window costs at most ~130 requests."""
REFUSED_RETRY_S = 0.5
"""Probe interval while connections are refused (never longer than the poll interval), so a
restarted server is found quickly and the lost-prompt check runs early."""
DRAIN_MAX_MESSAGES = 10_000  # bound on buffered messages handed to on_event when the wait ends


@dataclass
class CompletionResult:
    """How waiting for one prompt ended (the runner-owned telemetry fields come from here)."""

    exit_reason: ExitReason
    history_attempts: int
    execution_success_detected: bool
    execution_success_at: str | None
    post_execution_timeout_reached: bool
    history_entry: dict[str, Any] | None
    error: dict[str, Any] | None
    lost: bool
    detail: str | None
    execution_started_at: str | None = None
    """Server timestamp of execution_start (``ExecutionStartedAt``)."""
    ws_reconnects: int = 0
    """Websocket reconnects while waiting (drops survived)."""

    @property
    def succeeded(self) -> bool:
        return self.exit_reason == "success"

    @classmethod
    def never_ran(cls, exit_reason: ExitReason, detail: str) -> CompletionResult:
        """An attempt that ended before any completion was observed (e.g. while submitting)."""
        return cls(
            exit_reason=exit_reason,
            history_attempts=0,
            execution_success_detected=False,
            execution_success_at=None,
            post_execution_timeout_reached=False,
            history_entry=None,
            error=None,
            lost=False,
            detail=detail,
        )


class _Waiter:
    """State of one wait; each method is one step of the loop in :func:`wait_for_completion`."""

    def __init__(
        self,
        client: ComfyClient,
        prompt_id: str,
        policy: WaitPolicy,
        events: EventStream | None,
        on_event: Callable[[dict[str, Any]], None] | None,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
        server_grace_s: float,
        deadline: Deadline | None = None,
    ) -> None:
        self.client, self.prompt_id, self.policy = client, prompt_id, policy
        self.events, self.on_event, self.clock, self.sleep = events, on_event, clock, sleep
        self.server_grace_s = server_grace_s
        self.deadline = Deadline.after(policy.max_wait_seconds, clock) if deadline is None else deadline
        self.next_poll = clock()
        self.attempts = 0
        self.empty_polls = 0
        self.success_seen = False
        self.success_at: str | None = None
        self.started_at: str | None = None
        self.final_reason: ExitReason | None = None
        self.final_error: dict[str, Any] | None = None
        self.final_at: float | None = None
        self.confirm_delay = CONFIRM_BACKOFF_INITIAL_S
        self.refused_since: float | None = None
        self.check_presence = False
        self.connects_seen = events.connects if events is not None else 0
        self.reconnects = 0

    # ---------------------------------------------------------------- loop

    def run(self) -> CompletionResult:
        while True:
            now = self.clock()
            ended = self._budget_over(now)
            if ended is not None:
                return ended
            if now >= self.next_poll:
                result = self._poll(now)
                if result is not None:
                    return result
                continue
            self._wait(min(self.next_poll, self._active_deadline()) - now)

    def _active_deadline(self) -> float:
        if self.final_at is not None:
            return self.final_at + self.policy.post_execution_timeout_seconds
        return self.deadline.at

    def _budget_over(self, now: float) -> CompletionResult | None:
        if now < self._active_deadline():
            return None
        if self.final_at is None:
            return self._result("maxWait", f"no final status within {self.policy.max_wait_seconds:g} s")
        window = f"{self.policy.post_execution_timeout_seconds:g} s"
        if self.final_reason == "success":
            return self._result("postExecution", f"execution_success seen, no history entry within {window}", True)
        reason = self.final_reason or "executionError"
        return self._result(reason, error_detail(reason, self.final_error), True, error=self.final_error)

    def _wait(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        if self.events is None:
            self.sleep(seconds)
            return
        event = self.events.next_event(seconds)
        connects = self.events.connects
        if connects > self.connects_seen:
            if self.connects_seen > 0:
                self.reconnects += connects - self.connects_seen
                self._suspect_restart("websocket reconnected")
            self.connects_seen = connects
        if event is not None:
            self._on_event(event)

    def _suspect_restart(self, why: str) -> None:
        logger.info("prompt %s: %s; checking it is still queued", self.prompt_id, why)
        self.check_presence = True
        self.next_poll = self.clock()

    # ---------------------------------------------------------------- websocket events

    def _on_event(self, event: dict[str, Any]) -> None:
        data = event.get("data")
        data = data if isinstance(data, dict) else {}
        ours = data.get("prompt_id") == self.prompt_id
        if self.on_event is not None and (ours or "prompt_id" not in data):
            self.on_event(event)
        if not ours:
            return
        kind = event["type"]
        when = stamp_from_epoch_ms(data.get("timestamp"))
        if kind == "execution_start":
            self.started_at = when
        elif kind == "execution_success":
            self.success_seen, self.success_at = True, when
            self._final("success", None)
        elif kind == "execution_error":
            self._final("executionError", trim_error(data))
        elif kind == "execution_interrupted":
            self._final("interrupted", trim_error(data))
        elif kind == "executing" and data.get("node") is None:
            self.next_poll = self.clock()  # sent after the history write: read it now

    def _drain_events(self) -> None:
        """Hand already-received messages to on_event (a prompt confirmed by the first poll has a full buffer)."""
        if self.events is None or self.on_event is None:
            return
        for _ in range(DRAIN_MAX_MESSAGES):
            event = self.events.next_event(0)
            if event is None:
                return
            data = event.get("data")
            if not isinstance(data, dict) or data.get("prompt_id", self.prompt_id) == self.prompt_id:
                self.on_event(event)

    def _final(self, reason: ExitReason, error: dict[str, Any] | None) -> None:
        if self.final_at is None:
            self.final_at = self.clock()
        self.final_reason, self.final_error = reason, error
        self.next_poll = self.clock()

    # ---------------------------------------------------------------- history polling

    def _poll(self, now: float) -> CompletionResult | None:
        timeout = Deadline(self._active_deadline(), self.clock).request_timeout()
        self.attempts += 1
        try:
            entry = self.client.history(self.prompt_id, timeout_s=timeout)
        except ServerUnavailable as exc:
            return self._on_refused(now, exc)
        except ClientError as exc:  # timeout, HTTP 5xx, reset: a sick or slow server, not a dead one
            logger.warning("prompt %s: history poll failed (%s); retrying", self.prompt_id, exc)
            self._recovered()
            self.empty_polls += isinstance(exc, HttpStatusError)
            return self._schedule_next(now)
        self._recovered()
        if entry is not None:
            return self._from_entry(entry)
        self.empty_polls += 1
        if self.check_presence:
            lost = self._lost_check()
            if lost is not None:
                return lost
        return self._schedule_next(now)

    def _schedule_next(self, now: float) -> CompletionResult | None:
        if self.final_at is not None:
            self.next_poll = now + self.confirm_delay
            self.confirm_delay = min(self.confirm_delay * 2, CONFIRM_BACKOFF_MAX_S)
            return None
        limit = self.policy.max_attempt_count
        if limit > 0 and self.empty_polls >= limit:
            return self._result("attemptLimit", f"{self.empty_polls} history polls answered without an entry")
        self.next_poll = now + self.policy.history_poll_interval_seconds
        return None

    def _on_refused(self, now: float, exc: ClientError) -> CompletionResult | None:
        if self.refused_since is None:
            self.refused_since = now
            logger.warning("prompt %s: %s; waiting up to %g s for the server", self.prompt_id, exc, self.server_grace_s)
        self.check_presence = True
        if now - self.refused_since >= self.server_grace_s:
            return self._result("serverLost", f"connection refused for {now - self.refused_since:.1f} s")
        self.next_poll = now + min(REFUSED_RETRY_S, self.policy.history_poll_interval_seconds)
        return None

    def _recovered(self) -> None:
        if self.refused_since is not None:
            self.refused_since = None
            self._suspect_restart("server answers again after refusing connections")

    def _lost_check(self) -> CompletionResult | None:
        try:  # each lookup is cut at the budget's end (timing them from before the poll overran it)
            where = locate_prompt(self.client, self.prompt_id, deadline=Deadline(self._active_deadline(), self.clock))
        except ClientError as exc:
            logger.warning("prompt %s: queue check failed (%s); retrying", self.prompt_id, exc)
            return None
        self.check_presence = False
        if where == "absent":
            detail = f"prompt {self.prompt_id} is in neither the queue nor the history (server restarted)"
            return self._result("serverLost", detail, lost=True)
        if where == "history":
            self.next_poll = self.clock()
        return None

    def _from_entry(self, entry: dict[str, Any]) -> CompletionResult:
        verdict = classify_history_entry(entry)
        self.started_at = self.started_at or verdict.started_at
        if verdict.success_at is not None:
            self.success_seen, self.success_at = True, self.success_at or verdict.success_at
        error = verdict.error if verdict.error is not None else self.final_error
        detail = None if verdict.reason == "success" else error_detail(verdict.reason, error)
        return self._result(verdict.reason, detail, entry=entry, error=error)

    def _result(
        self,
        reason: ExitReason,
        detail: str | None,
        post_timeout: bool = False,
        *,
        entry: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
        lost: bool = False,
    ) -> CompletionResult:
        if reason != "success":
            logger.info("prompt %s ended: %s (%s)", self.prompt_id, reason, detail)
        self._drain_events()
        return CompletionResult(
            exit_reason=reason,
            history_attempts=self.attempts,
            execution_success_detected=self.success_seen,
            execution_success_at=self.success_at,
            post_execution_timeout_reached=post_timeout,
            history_entry=entry,
            error=error,
            lost=lost,
            detail=detail,
            execution_started_at=self.started_at,
            ws_reconnects=self.reconnects,
        )


def wait_for_completion(
    client: ComfyClient,
    prompt_id: str,
    policy: WaitPolicy,
    *,
    events: EventStream | None = None,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    server_grace_s: float = DEFAULT_SERVER_GRACE_S,
    deadline: Deadline | None = None,
) -> CompletionResult:
    """Wait until *prompt_id* has a confirmed final status or its budget is spent; never raises
    for server trouble (that is an exit reason).

    *events* should be connected before the prompt was posted; without it the wait polls
    ``/history/{id}`` only. *on_event* receives every websocket message about this prompt and
    every one without a prompt id (``status``), for progress display. *deadline* is the attempt's
    budget, created once when the attempt began (the runner: before ``POST /prompt``, so the time spent
    submitting counts against it); default: ``max_wait_seconds`` from now on *clock*.
    """
    waiter = _Waiter(client, prompt_id, policy, events, on_event, clock, sleep, server_grace_s, deadline)
    return waiter.run()
