"""One scene on one server, start to end: attempts within the retry budget, marker, document.

:class:`SceneExecutor` is what :class:`runner.Runner` calls per scene and what a multi-server
dispatcher calls per (scene, server): it needs a client for that server, the workflow, the mapping,
the options and a :class:`RunState`, and returns a :class:`SceneOutcome`. Each attempt gets its own
:class:`Deadline` (``max_wait_seconds`` from its start), created here and handed to
:func:`attempt.run_attempt` and from there into the completion wait.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..comfy_api.client import ComfyClient
from ..comfy_api.completion import CompletionResult
from ..telemetry import ABANDONED_REASONS, RETRYABLE_REASONS, Deadline, iso_utc, utc_now
from .attempt import AttemptResult, Notify, abandon, run_attempt
from .documents import scene_document
from .gpu import server_gpu_snapshot
from .markers import MarkerCollector
from .options import RunOptions, prompt_id_for
from .outcomes import MarkerOutcome, SceneOutcome
from .patching import apply_runner_inputs, patch_workflow
from .scenes import FieldMapping, Scene
from .state import RunState

logger = logging.getLogger(__name__)


@dataclass
class _Attempts:
    """Counters of one scene across its submissions."""

    scene_attempts: int = 0
    history_attempts: int = 0
    retries_used: int = 0
    prompt_ids: list[str] = field(default_factory=list)


class SceneExecutor:
    """Runs scenes of one run on one server; :meth:`run` does one scene."""

    def __init__(
        self,
        client: ComfyClient,
        workflow: Mapping[str, Any],
        mapping: FieldMapping,
        options: RunOptions,
        state: RunState,
        *,
        notify: Notify | None = None,
        fields: Mapping[str, Any] | None = None,
    ) -> None:
        self.client = client
        self.workflow = workflow
        self.mapping = mapping
        self.options = options
        self.state = state
        self.notify: Notify = notify or (lambda event: None)
        self.fields = dict(fields or {})
        """Extra runner fields of every scene this executor runs (a farm: which server ran it)."""

    def run(self, scene: Scene, *, first_attempt: int = 1, retry_here: bool = True) -> SceneOutcome:
        """Submit (and resubmit within the budget) one scene, then collect its marker and telemetry.

        A multi-server dispatcher passes *first_attempt* (the scene's attempt number across servers, so
        each submission keeps its own deterministic prompt id and ``SceneAttempts`` counts them all) and
        ``retry_here=False``: a retryable end then comes back to it, to be retried on another server.
        """
        policy = self.options.policy
        prompt = patch_workflow(self.workflow, scene, self.mapping)
        prefix = apply_runner_inputs(
            prompt, scene=scene, mapping=self.mapping, run_id=self.options.run_id, policy_json=policy.to_json()
        )
        self.notify({"event": "scene_start", "scene": scene.id})
        gpu_before = self._gpu_snapshot("before")
        queue_start, started = utc_now(), time.monotonic()
        counters = _Attempts(scene_attempts=first_attempt - 1)
        result = self._attempts(scene.id, prompt, counters, retry_here=retry_here)
        completion = result.completion
        if completion is not None and completion.exit_reason in ABANDONED_REASONS:
            abandon(self.client, scene.id, result.prompt_id)
        queue_end, duration = utc_now(), time.monotonic() - started
        exit_reason = result.exit_reason
        marker = MarkerOutcome()
        if exit_reason == "success" and completion is not None:
            marker = MarkerCollector(self.client, self.options).collect(
                scene.id, result.prompt_id, prefix, completion.history_entry
            )
        detail = result.rejection_detail or exit_detail(completion, marker)
        runner_fields: dict[str, Any] = {
            "PromptId": result.prompt_id if result.queued else None,
            "QueueStart": self._queue_start(scene.id, result.prompt_id, iso_utc(queue_start)),
            "QueueEnd": iso_utc(queue_end),
            "DurationSeconds": round(duration, 3),
            "HistoryAttempts": counters.history_attempts,
            "HistoryExitReason": exit_reason,
            "ExecutionSuccessDetected": bool(completion and completion.execution_success_detected),
            "ExecutionSuccessAt": completion.execution_success_at if completion else None,
            "HistoryPostExecutionTimeoutReached": bool(completion and completion.post_execution_timeout_reached),
            "SceneAttempts": counters.scene_attempts,
            "DoneMarkerDetected": marker.detected,
            "DoneMarkerWaitSeconds": round(marker.wait_seconds, 3),
            "ForcedCopyTriggered": marker.forced,
            "ExitDetail": detail,
            **self.fields,
        }
        document = scene_document(
            self.client,
            self.options,
            scene.id,
            result.prompt_id,
            completion,
            marker,
            gpu_before,
            runner_fields,
            gpu_after=lambda: self._gpu_snapshot("after"),
        )
        self.state.record_document(scene.id, document)
        outcome = SceneOutcome(scene.id, runner_fields["PromptId"], exit_reason, document)
        self.notify(
            {
                "event": "scene_end",
                "scene": scene.id,
                "prompt_id": outcome.prompt_id,
                "exit_reason": exit_reason,
                "ok": outcome.ok,
                "detail": detail,
                "forced_copy": marker.forced,
            }
        )
        return outcome

    def _attempts(
        self, scene_id: str, prompt: dict[str, Any], counters: _Attempts, *, retry_here: bool = True
    ) -> AttemptResult:
        """Attempts until one is final or the retry budget is spent; the last one's result."""
        resumable = self.state.resumable_prompt(self.client, scene_id) if self.options.resume else None
        while True:
            counters.scene_attempts += 1
            if resumable is not None:
                prompt_id, attach = resumable, True
                counters.scene_attempts = self.state.attempt_number(scene_id, prompt_id)
                resumable = None
            else:
                prompt_id, attach = prompt_id_for(self.options.run_id, scene_id, counters.scene_attempts), False
            counters.prompt_ids.append(prompt_id)
            self.state.record_attempt(scene_id, prompt_id)
            result = run_attempt(
                self.client,
                prompt,
                prompt_id,
                self.options.policy,
                Deadline.after(self.options.policy.max_wait_seconds),
                attach=attach,
                server_grace_s=self.options.server_grace_s,
                notify=self.notify,
                scene_id=scene_id,
            )
            if result.completion is None:
                return result
            counters.history_attempts += result.completion.history_attempts
            if not retry_here or not self._should_retry(scene_id, result.completion, counters):
                return result

    def _should_retry(self, scene_id: str, completion: CompletionResult, counters: _Attempts) -> bool:
        reason = completion.exit_reason
        if not (reason in RETRYABLE_REASONS or (reason == "serverLost" and completion.lost)):
            return False
        budget = self.options.policy.scene_retry_budget
        if counters.retries_used >= budget:
            logger.warning("scene %s: %s, retry budget (%d) spent", scene_id, reason, budget)
            return False
        counters.retries_used += 1
        logger.warning(
            "scene %s: %s (%s); resubmitting (retry %d of %d)",
            scene_id,
            reason,
            completion.detail,
            counters.retries_used,
            budget,
        )
        self.notify({"event": "retry", "scene": scene_id, "reason": reason, "retry": counters.retries_used})
        return True

    def _queue_start(self, scene_id: str, prompt_id: str, now: str) -> str:
        """This run's start, or the submission time of a prompt an earlier run queued and this one re-attached
        to (its execution may have started long before: a killed runner, a Celery redelivery)."""
        submitted = self.state.submitted_at(scene_id, prompt_id)
        return submitted if submitted is not None and submitted < now else now

    def _gpu_snapshot(self, label: str) -> dict[str, Any] | None:
        return server_gpu_snapshot(self.client, self.options, label)


def exit_detail(completion: CompletionResult | None, marker: MarkerOutcome) -> str | None:
    """The one-line ``ExitDetail`` of a scene that was queued."""
    if completion is None:
        return "no reply from the server"
    if completion.exit_reason != "success":
        return completion.detail or completion.exit_reason
    if not marker.detected and not marker.forced:
        return f"completed, but no done marker: {marker.problem}"
    if marker.forced:
        return f"no done marker in time ({marker.problem or 'timeout'}); runner-forced marker after a stability check"
    return None
