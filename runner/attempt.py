"""One attempt of one scene on one server: submit (or re-attach), then wait for completion.

:func:`run_attempt` is the single-scene execution step the runner (and a multi-server dispatcher)
calls: given a client, a patched prompt, its id and the attempt's :class:`Deadline`, it returns a typed
:class:`AttemptResult` and never raises for server trouble (that is an exit reason). The websocket is
connected before ``POST /prompt`` so no event is missed; connecting, posting (with its retries and
look-ups) and waiting all draw on the one deadline.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..comfy_api.client import ComfyClient, EventStream
from ..comfy_api.completion import CompletionResult, locate_prompt, wait_for_completion
from ..telemetry import (
    ClientError,
    Deadline,
    ExitReason,
    OutOfTimeError,
    PromptRejected,
    ServerError,
    ServerUnavailable,
)
from .options import ABANDON_TIMEOUT_S, SUBMIT_TRIES
from .policy import QueuePolicy

logger = logging.getLogger(__name__)

Notify = Callable[[dict[str, Any]], None]
"""Receives the runner's progress events (``submitted``, ``ws``, ``retry`` …)."""


@dataclass(frozen=True)
class AttemptResult:
    """How one submission ended: a completion, or the server's refusal of the graph."""

    prompt_id: str
    completion: CompletionResult | None
    rejection: PromptRejected | None = None

    @property
    def exit_reason(self) -> ExitReason:
        if self.rejection is not None:
            return "validationError"
        return self.completion.exit_reason if self.completion is not None else "serverLost"

    @property
    def queued(self) -> bool:
        """False only when ComfyUI refused the whole graph (nothing runs under the prompt id)."""
        return self.rejection is None or self.rejection.queued

    @property
    def rejection_detail(self) -> str | None:
        if self.rejection is None:
            return None
        return f"{'queued with node_errors' if self.rejection.queued else 'rejected'}: {self.rejection}"


def run_attempt(
    client: ComfyClient,
    prompt: dict[str, Any],
    prompt_id: str,
    policy: QueuePolicy,
    deadline: Deadline,
    *,
    attach: bool = False,
    server_grace_s: float = 60.0,
    notify: Notify | None = None,
    scene_id: str = "",
) -> AttemptResult:
    """Submit *prompt* as *prompt_id* (or, with *attach*, follow one already queued) and wait for it.

    *deadline* is the attempt's budget (``max_wait_seconds`` from its start); the wait may run
    ``post_execution_timeout_seconds`` past it once a final event arrived.
    """
    events = EventStream(client.base_url, client.client_id)
    try:
        events.connect(deadline.request_timeout())
        if attach:
            logger.info("re-attaching to prompt %s (--resume)", prompt_id)
        else:
            ended = _submit_or_end(client, prompt, prompt_id, policy, deadline)
            if ended is not None:
                return ended
        if notify is not None:
            notify({"event": "submitted", "prompt_id": prompt_id, "attached": attach})
        on_ws = None if notify is None else _ws_forwarder(notify, scene_id)
        result = wait_for_completion(
            client, prompt_id, policy, events=events, on_event=on_ws, server_grace_s=server_grace_s, deadline=deadline
        )
    finally:
        events.close()
    return AttemptResult(prompt_id, result)


def _ws_forwarder(notify: Notify, scene_id: str) -> Callable[[dict[str, Any]], None]:
    return lambda message: notify({"event": "ws", "scene": scene_id, "message": message})


def _submit_or_end(
    client: ComfyClient, prompt: dict[str, Any], prompt_id: str, policy: QueuePolicy, deadline: Deadline
) -> AttemptResult | None:
    """Post the prompt; None when it is queued, else the attempt's end."""
    try:
        submit_prompt(
            client,
            prompt,
            prompt_id,
            deadline,
            retry_pause_s=policy.history_poll_interval_seconds,
            budget=f"max_wait_seconds ({policy.max_wait_seconds:g} s)",
        )
    except PromptRejected as exc:
        if exc.queued:
            logger.warning("prompt %s: outputs failed validation; ComfyUI still runs the rest", prompt_id)
        return AttemptResult(prompt_id, None, exc)
    except ServerUnavailable as exc:
        return AttemptResult(prompt_id, CompletionResult.never_ran("serverLost", f"POST /prompt: {exc}"))
    except ServerError as exc:  # answered every try, never usably (HTTP 5xx, HTML): up, but broken
        return AttemptResult(prompt_id, CompletionResult.never_ran("serverError", str(exc)))
    except OutOfTimeError as exc:
        # The prompt may be queued: it is stopped like one that ran out of time.
        return AttemptResult(prompt_id, CompletionResult.never_ran("maxWait", str(exc)))
    return None


def submit_prompt(
    client: ComfyClient,
    prompt: dict[str, Any],
    prompt_id: str,
    deadline: Deadline,
    *,
    retry_pause_s: float,
    budget: str = "the attempt's budget",
) -> None:
    """POST /prompt; when the reply is lost, look before posting again (the id keeps it idempotent).

    Every request gets only the time left before *deadline*, and none is made after it:
    :class:`OutOfTimeError`, which the attempt reports as ``maxWait``.
    """
    last: ClientError | None = None
    for attempt in range(1, SUBMIT_TRIES + 1):
        if attempt > 1 and known_to_server(client, prompt_id, deadline):
            return
        if deadline.expired():
            break
        try:
            client.submit(prompt, prompt_id=prompt_id, timeout_s=deadline.left())
            return
        except (PromptRejected, ServerUnavailable):
            raise
        except ClientError as exc:
            last = exc
            logger.warning("POST /prompt try %d/%d for %s failed: %s", attempt, SUBMIT_TRIES, prompt_id, exc)
            pause = min(retry_pause_s, deadline.left())
            if attempt < SUBMIT_TRIES and pause > 0:
                time.sleep(pause)
    if deadline.expired():
        raise OutOfTimeError(f"POST /prompt did not complete within {budget}{f': {last}' if last else ''}")
    assert last is not None
    raise ServerError(f"POST /prompt failed {SUBMIT_TRIES} times: {last}")


def known_to_server(client: ComfyClient, prompt_id: str, deadline: Deadline | None = None) -> bool:
    """True when *prompt_id* is queued, running or in history (a lost reply to a POST that worked).

    With *deadline*, every look-up gets only the time left (none once it passed: then False).
    """
    try:
        return locate_prompt(client, prompt_id, deadline=deadline) != "absent"
    except ClientError:
        return False


def abandon(client: ComfyClient, scene_id: str, prompt_id: str) -> None:
    """Stop a prompt the runner gave up on, so the next scene does not queue behind a hung one."""
    try:
        client.delete_pending([prompt_id], timeout_s=ABANDON_TIMEOUT_S)
        client.interrupt(prompt_id, timeout_s=ABANDON_TIMEOUT_S)
    except ClientError as exc:
        logger.warning("scene %s: could not stop prompt %s on the server: %s", scene_id, prompt_id, exc)
        return
    logger.warning("scene %s: gave up on prompt %s; removed it from the queue / interrupted it", scene_id, prompt_id)
