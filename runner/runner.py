"""The headless runner: every scene of a list through a stock ComfyUI server, each within its budget.

Per scene (:meth:`Runner.run_scene`):

1. patch the workflow (mapping, the scene's own ``filename_prefix``, the collector's
   ``queue_policy``);
2. connect the websocket, then ``POST /prompt`` with a client-chosen ``prompt_id``
   (``uuid5(run id, scene id, attempt)``: deterministic, so ``--resume`` finds it again);
3. :func:`comfy_api.completion.wait_for_completion` → exit reason; an execution error or a
   prompt lost to a restart is resubmitted while the retry budget lasts; a validation
   error (HTTP 400 / ``node_errors``) is final and spends nothing;
4. on success, wait for the scene's ``.done`` (file events when the output folder is
   local, ``/view`` when remote) for ``post_execution_timeout_seconds``; when none comes,
   check the frames the history lists for stability and write a ``runner-forced``
   marker (:data:`FORCED_QUIET_PERIOD_S`), logged as a warning, never silently;
5. the scene document: the collector's (when the graph wrote one beside the frames)
   with the runner's fields set and Writer "runner", else built here with GPU figures
   from the server side.

At the end the run folder gets ``artifact-metadata.json`` + ``run-summary.txt``
(``telemetry._collect.write_run``) and the validator runs over it.
``.runner-state.json`` in the run folder records each scene's prompt ids and
finished documents, which is what ``--resume`` reads.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..comfy_api.client import ComfyClient, EventStream, PromptRejected
from ..comfy_api.completion import CompletionResult, locate_prompt, wait_for_completion
from ..telemetry._atomic import atomic_write_bytes, atomic_write_text
from ..telemetry._collect import build_run_metadata, frames_block, policy_fields, write_run
from ..telemetry._contract import SCHEMA_VERSION, contract_errors
from ..telemetry._errors import ClientError, DoneTimeoutError, MarkerError, ServerUnavailable
from ..telemetry._marker import MarkedFile, build_marker, commit_marker, verify_marker
from ..telemetry._meta import iso_from_epoch_ms, iso_utc, utc_now, versions
from ..telemetry._paths import marker_name
from ..telemetry._wait import wait_for_done
from .policy import QueuePolicy
from .scenes import FieldMapping, Scene, apply_runner_inputs, patch_workflow

logger = logging.getLogger(__name__)

STATE_FILE = ".runner-state.json"
COLLECTOR_METADATA = "artifact-metadata.json"

FORCED_QUIET_PERIOD_S = 2.0
"""Frames whose sizes do not change for this long are taken as complete (seed: 'stable' copy)."""
MARKER_POLL_INTERVAL_S = 0.5
"""Polling fallback for a local marker (file events usually wake the wait first) and /view polling."""
MIN_REQUEST_TIMEOUT_S = 0.05
"""A /view at the very end of the marker window still gets a chance (as completion.MIN_REQUEST_TIMEOUT_S)."""
SUBMIT_TRIES = 3
"""POST /prompt attempts when the reply is lost (timeout/5xx); the same prompt_id keeps it idempotent."""
_PROMPT_NAMESPACE = uuid.UUID("6c1f3a52-7f37-4d6a-9a55-2f4f8d1f0b6e")
"""uuid5 namespace of the runner's prompt ids (any fixed UUID: ids must only be stable across resumes)."""

SUCCESS = "success"
RETRYABLE = ("executionError",)
ABANDONED = ("maxWait", "attemptLimit")
"""Exit reasons that leave the prompt queued or running on the server: the runner stops it."""
GPU_SNAPSHOT_ALLOWANCE_S = 3.0
"""Per GPU snapshot (before and after a scene): one /system_stats try of at most 2 s, then the local
NVML / nvidia-smi fallback with what is left (comfy_api.gpu_remote.take_bounded_snapshot)."""
ABANDON_TIMEOUT_S = 5.0
"""Per request when stopping an abandoned prompt; a server that cannot answer that fast is noted, not awaited."""
SIDE_REQUEST_TIMEOUT_S = 5.0
"""Whole-request bound of the requests outside an attempt: the collector metadata beside remote frames, and
(all look-ups together) finding a scene's prompt again on ``--resume``."""


def scene_worst_case_s(options: RunOptions) -> float:
    """The longest one scene can take (plus a few scheduling milliseconds per request).

    Each attempt ends within ``max_wait + post_execution`` of its start; a scene makes at most
    ``1 + scene_retry_budget`` attempts. After the last one it either stops an abandoned prompt (maxWait,
    attemptLimit: two requests of ABANDON_TIMEOUT_S) or, on success, waits for the marker
    (``post_execution``) and may force one (quiet period; remote: the /view copies get another
    ``post_execution`` and the collector metadata SIDE_REQUEST_TIMEOUT_S). GPU snapshots add up to two
    allowances, ``--resume`` one look-up bound.
    """
    policy = options.policy
    attempts = (1 + policy.scene_retry_budget) * (policy.max_wait_seconds + policy.post_execution_timeout_seconds)
    marker = policy.post_execution_timeout_seconds + options.forced_quiet_period_s
    if options.comfy_output_dir is None:
        marker += policy.post_execution_timeout_seconds + SIDE_REQUEST_TIMEOUT_S
    after = max(2 * ABANDON_TIMEOUT_S, marker)
    gpu = 2 * options.gpu_snapshot_allowance_s if options.gpu_snapshots else 0.0
    resume = SIDE_REQUEST_TIMEOUT_S if options.resume else 0.0
    return attempts + after + gpu + resume


@dataclass(frozen=True)
class RunOptions:
    """How the runner reaches the server and where it writes."""

    server: str
    run_dir: Path
    policy: QueuePolicy
    run_id: str
    comfy_output_dir: Path | None = None
    """ComfyUI's output folder when it is on this machine (markers waited for with file events)."""
    resume: bool = False
    forced_quiet_period_s: float = FORCED_QUIET_PERIOD_S
    marker_poll_interval_s: float = MARKER_POLL_INTERVAL_S
    gpu_snapshots: bool = True
    """Take /system_stats GPU snapshots around scenes whose graph has no collector."""
    gpu_snapshot_allowance_s: float = GPU_SNAPSHOT_ALLOWANCE_S
    """The most each of those snapshots may take (a wedged server or driver becomes a FallbackNotes line)."""
    comfyui_version: str | None = None
    server_grace_s: float = 60.0
    """How long refused connections may last (a restart) before the server counts as lost."""


@dataclass
class MarkerOutcome:
    """How the scene's done marker was obtained."""

    detected: bool = False
    wait_seconds: float = 0.0
    forced: bool = False
    body: dict[str, Any] | None = None
    folder: Path | None = None
    """Local folder of the marker (None when it was only read through /view)."""
    problem: str | None = None


@dataclass
class SceneOutcome:
    """One scene's result: its exit reason and contract document."""

    scene_id: str
    prompt_id: str | None
    exit_reason: str
    document: dict[str, Any]

    @property
    def ok(self) -> bool:
        return self.exit_reason == SUCCESS and bool(self.document.get("Frames"))


@dataclass
class RunResult:
    """Every scene's outcome plus the validator's verdict on the run folder."""

    run_id: str
    run_dir: Path
    scenes: list[SceneOutcome] = field(default_factory=list)
    validation_ok: bool | None = None
    validation_report: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.scenes) and self.validation_ok is not False


@dataclass
class _Attempts:
    """Counters of one scene across its submissions."""

    scene_attempts: int = 0
    history_attempts: int = 0
    retries_used: int = 0
    prompt_ids: list[str] = field(default_factory=list)


def prompt_id_for(run_id: str, scene_id: str, attempt: int) -> str:
    """Deterministic prompt id of one submission: the same run, scene and attempt give the same id."""
    return str(uuid.uuid5(_PROMPT_NAMESPACE, f"{run_id}/{scene_id}/{attempt}"))


class Runner:
    """Runs scenes one after another; construct, then :meth:`run`."""

    def __init__(
        self,
        client: ComfyClient,
        workflow: Mapping[str, Any],
        mapping: FieldMapping,
        options: RunOptions,
        *,
        on_event: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.client = client
        self.workflow = workflow
        self.mapping = mapping
        self.options = options
        self.on_event = on_event
        self.state = _load_state(options.run_dir, options.run_id) if options.resume else _new_state(options.run_id)

    # ------------------------------------------------------------------ run

    def run(self, scenes: list[Scene]) -> RunResult:
        """Run every scene, write the run folder, validate it."""
        self.options.run_dir.mkdir(parents=True, exist_ok=True)
        result = RunResult(self.options.run_id, self.options.run_dir)
        for scene in scenes:
            done = self.state["Scenes"].get(scene.id, {}).get("Document")
            if self.options.resume and done is not None and done.get("HistoryExitReason") == SUCCESS:
                logger.info("scene %s finished in an earlier run; kept", scene.id)
                outcome = SceneOutcome(scene.id, done.get("PromptId"), SUCCESS, done)
                self._notify({"event": "scene_skipped", "scene": scene.id, "reason": "finished before (--resume)"})
            else:
                outcome = self.run_scene(scene)
            result.scenes.append(outcome)
        metadata = build_run_metadata(
            [s.document for s in result.scenes],
            run_id=self.options.run_id,
            writer="runner",
            comfyui_version=self.options.comfyui_version,
        )
        write_run(self.options.run_dir, metadata)
        result.validation_ok, result.validation_report = self._validate()
        return result

    def _validate(self) -> tuple[bool | None, dict[str, Any] | None]:
        from ..telemetry._validate import validate_run

        report = validate_run(self.options.run_dir, output_dir=self.options.comfy_output_dir)
        as_dict: dict[str, Any] = report.to_dict()
        if not report.ok:
            logger.warning("run folder failed validation:\n%s", report.render_text())
        return bool(report.ok), as_dict

    # ------------------------------------------------------------------ one scene

    def run_scene(self, scene: Scene) -> SceneOutcome:
        """Submit (and resubmit within the budget) one scene, then collect its marker and telemetry."""
        policy = self.options.policy
        prompt = patch_workflow(self.workflow, scene, self.mapping)
        prefix = apply_runner_inputs(
            prompt, scene=scene, mapping=self.mapping, run_id=self.options.run_id, policy_json=policy.to_json()
        )
        self._notify({"event": "scene_start", "scene": scene.id})
        counters = _Attempts()
        gpu_before = self._gpu_snapshot("before")
        queue_start, started = utc_now(), time.monotonic()
        completion: CompletionResult | None = None
        rejection: str | None = None
        resumable = self._resumable_prompt(scene.id)
        while True:
            counters.scene_attempts += 1
            if resumable is not None:
                prompt_id, attach = resumable, True
                counters.scene_attempts = self._attempt_number(scene.id, prompt_id)
                resumable = None
            else:
                prompt_id, attach = prompt_id_for(self.options.run_id, scene.id, counters.scene_attempts), False
            counters.prompt_ids.append(prompt_id)
            self._record_attempt(scene.id, prompt_id)
            completion, rejection = self._attempt(scene.id, prompt, prompt_id, attach=attach)
            if rejection is not None:
                break
            assert completion is not None
            counters.history_attempts += completion.history_attempts
            if not self._should_retry(scene.id, completion, counters):
                break
        if completion is not None and completion.exit_reason in ABANDONED:
            self._abandon(scene.id, prompt_id)
        queue_end, duration = utc_now(), time.monotonic() - started
        exit_reason = (
            "validationError" if rejection is not None else completion.exit_reason if completion else "serverLost"
        )
        marker = MarkerOutcome()
        if exit_reason == SUCCESS and completion is not None:
            marker = self._collect_marker(scene, prompt_id, prefix, completion.history_entry)
        detail = rejection if rejection is not None else _exit_detail(completion, marker)
        runner_fields: dict[str, Any] = {
            "PromptId": prompt_id if rejection is None or _queued_anyway(rejection) else None,
            "QueueStart": iso_utc(queue_start),
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
        }
        document = self._scene_document(scene, prompt_id, completion, marker, gpu_before, runner_fields)
        self._record_document(scene.id, document)
        outcome = SceneOutcome(scene.id, runner_fields["PromptId"], exit_reason, document)
        self._notify(
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

    def _attempt(
        self, scene_id: str, prompt: dict[str, Any], prompt_id: str, *, attach: bool
    ) -> tuple[CompletionResult | None, str | None]:
        """One submission (or re-attachment); returns (completion, rejection summary).

        The attempt's budget starts here: connecting the websocket, ``POST /prompt`` (its retries and
        look-ups included) and the wait share one deadline, ``max_wait_seconds`` from now (plus
        ``post_execution_timeout_seconds`` once a final event arrived: :func:`wait_for_completion`).
        """
        started = time.monotonic()
        submit_deadline = started + self.options.policy.max_wait_seconds
        events = EventStream(self.client.base_url, self.client.client_id)
        try:
            events.connect(max(MIN_REQUEST_TIMEOUT_S, submit_deadline - time.monotonic()))
            if attach:
                logger.info("re-attaching to prompt %s (--resume)", prompt_id)
            else:
                try:
                    self._submit(prompt, prompt_id, submit_deadline)
                except PromptRejected as exc:
                    if exc.queued:
                        logger.warning("prompt %s: outputs failed validation; ComfyUI still runs the rest", prompt_id)
                    return None, f"{'queued with node_errors' if exc.queued else 'rejected'}: {exc}"
                except ServerUnavailable as exc:
                    return CompletionResult.never_ran("serverLost", f"POST /prompt: {exc}"), None
                except _OutOfTime as exc:
                    # The prompt may be queued: it is stopped like one that ran out of time.
                    return CompletionResult.never_ran("maxWait", str(exc)), None
            self._notify({"event": "submitted", "prompt_id": prompt_id, "attached": attach})
            result = wait_for_completion(
                self.client,
                prompt_id,
                self.options.policy,
                events=events,
                on_event=lambda message: self._notify({"event": "ws", "scene": scene_id, "message": message}),
                server_grace_s=self.options.server_grace_s,
                started=started,
            )
        finally:
            events.close()
        return result, None

    def _abandon(self, scene_id: str, prompt_id: str) -> None:
        """Stop a prompt the runner gave up on, so the next scene does not queue behind a hung one."""
        try:
            self.client.delete_pending([prompt_id], timeout_s=ABANDON_TIMEOUT_S)
            self.client.interrupt(prompt_id, timeout_s=ABANDON_TIMEOUT_S)
        except ClientError as exc:
            logger.warning("scene %s: could not stop prompt %s on the server: %s", scene_id, prompt_id, exc)
            return
        logger.warning(
            "scene %s: gave up on prompt %s; removed it from the queue / interrupted it", scene_id, prompt_id
        )

    def _submit(self, prompt: dict[str, Any], prompt_id: str, deadline: float) -> None:
        """POST /prompt; when the reply is lost, look before posting again (the id keeps it idempotent).

        Every request gets only the time left before *deadline* (the attempt's ``max_wait_seconds``), and
        none is made after it: :class:`_OutOfTime`, which the caller reports as ``maxWait``.
        """
        last: ClientError | None = None
        for attempt in range(1, SUBMIT_TRIES + 1):
            if attempt > 1 and self._known_to_server(prompt_id, deadline):
                return
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                self.client.submit(prompt, prompt_id=prompt_id, timeout_s=left)
                return
            except (PromptRejected, ServerUnavailable):
                raise
            except ClientError as exc:
                last = exc
                logger.warning("POST /prompt try %d/%d for %s failed: %s", attempt, SUBMIT_TRIES, prompt_id, exc)
                pause = min(self.options.policy.history_poll_interval_seconds, deadline - time.monotonic())
                if attempt < SUBMIT_TRIES and pause > 0:
                    time.sleep(pause)
        if time.monotonic() >= deadline:
            raise _OutOfTime(
                f"POST /prompt did not complete within max_wait_seconds "
                f"({self.options.policy.max_wait_seconds:g} s){f': {last}' if last else ''}"
            )
        assert last is not None
        raise ServerUnavailable(f"POST /prompt failed {SUBMIT_TRIES} times: {last}")

    def _known_to_server(self, prompt_id: str, deadline: float | None = None) -> bool:
        """True when *prompt_id* is queued, running or in history (a lost reply to a POST that worked).

        With *deadline*, every look-up gets only the time left (none once it passed: then False).
        """
        try:
            return locate_prompt(self.client, prompt_id, deadline=deadline) != "absent"
        except ClientError:
            return False

    def _should_retry(self, scene_id: str, completion: CompletionResult, counters: _Attempts) -> bool:
        retryable = completion.exit_reason in RETRYABLE or (completion.exit_reason == "serverLost" and completion.lost)
        if not retryable:
            return False
        if counters.retries_used >= self.options.policy.scene_retry_budget:
            logger.warning(
                "scene %s: %s, retry budget (%d) spent",
                scene_id,
                completion.exit_reason,
                self.options.policy.scene_retry_budget,
            )
            return False
        counters.retries_used += 1
        logger.warning(
            "scene %s: %s (%s); resubmitting (retry %d of %d)",
            scene_id,
            completion.exit_reason,
            completion.detail,
            counters.retries_used,
            self.options.policy.scene_retry_budget,
        )
        self._notify(
            {"event": "retry", "scene": scene_id, "reason": completion.exit_reason, "retry": counters.retries_used}
        )
        return True

    # ------------------------------------------------------------------ marker

    def _collect_marker(
        self, scene: Scene, prompt_id: str, prefix: str | None, entry: dict[str, Any] | None
    ) -> MarkerOutcome:
        started = time.monotonic()
        outcome = (
            self._wait_marker(scene.id, prompt_id, prefix, entry)
            if prefix
            else MarkerOutcome(problem="no WriteDoneMarker")
        )
        outcome.wait_seconds = time.monotonic() - started
        if outcome.detected:
            return outcome
        logger.warning(
            "scene %s: no verified done marker within %g s (%s); checking frame stability for a forced marker",
            scene.id,
            self.options.policy.post_execution_timeout_seconds,
            outcome.problem,
        )
        forced = self._forced_marker(scene, prompt_id, prefix, entry)
        forced.wait_seconds = outcome.wait_seconds
        if forced.forced:
            logger.warning(
                "scene %s: wrote a runner-forced marker for %d file(s)",
                scene.id,
                len((forced.body or {}).get("Files", [])),
            )
        else:
            forced.problem = f"{outcome.problem}; forced copy impossible: {forced.problem}"
        return forced

    def _wait_marker(self, scene_id: str, prompt_id: str, prefix: str, entry: dict[str, Any] | None) -> MarkerOutcome:
        subfolder, name = _marker_location(prefix)
        timeout = self.options.policy.post_execution_timeout_seconds
        if self.options.comfy_output_dir is not None:
            folder = self.options.comfy_output_dir / subfolder
            try:
                body = wait_for_done(
                    folder / name, timeout, prompt_id=prompt_id, poll_interval=self.options.marker_poll_interval_s
                )
            except DoneTimeoutError as exc:
                return MarkerOutcome(problem=exc.last_problem or str(exc))
            return MarkerOutcome(detected=True, body=body, folder=folder)
        return self._wait_remote_marker(scene_id, prompt_id, subfolder, name, timeout)

    def _wait_remote_marker(
        self, scene_id: str, prompt_id: str, subfolder: str, name: str, timeout: float
    ) -> MarkerOutcome:
        """Poll ``/view`` for the marker; verify it and every listed file's size through ``/view``.

        Every request is cut at the deadline, so a stalled ``/view`` cannot stretch the window.
        """
        deadline = time.monotonic() + timeout
        problem = f"{name} not served by /view yet"
        while True:
            body, problem = self._remote_marker_once(scene_id, prompt_id, subfolder, name, problem, deadline)
            if body is not None:
                return MarkerOutcome(detected=True, body=body)
            if time.monotonic() >= deadline:
                return MarkerOutcome(problem=problem)
            time.sleep(min(self.options.marker_poll_interval_s, max(0.0, deadline - time.monotonic())))

    def _remote_marker_once(
        self, scene_id: str, prompt_id: str, subfolder: str, name: str, problem: str, deadline: float
    ) -> tuple[dict[str, Any] | None, str]:
        def left() -> float:
            return max(MIN_REQUEST_TIMEOUT_S, deadline - time.monotonic())

        try:
            body = json.loads(self.client.view(name, subfolder, timeout_s=left()).decode("utf-8"))
        except ClientError:
            return None, problem
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return None, f"{name} is not JSON: {exc}"
        errors = contract_errors(body, "done-marker")
        if errors:
            return None, f"{name} violates contract v1: {errors[0]}"
        if body.get("PromptId") != prompt_id:
            return None, f"{name} is from prompt {body.get('PromptId')}, waiting for {prompt_id}"
        copies: dict[str, bytes] = {}
        for entry in body["Files"]:
            folder, _, filename = entry["Name"].rpartition("/")
            try:
                data = self.client.view(filename, _join(subfolder, folder), timeout_s=left())
            except ClientError as exc:
                return None, f"{entry['Name']}: {exc}"
            if len(data) != entry["Bytes"]:
                return None, f"{entry['Name']}: {len(data)} bytes served, marker says {entry['Bytes']}"
            copies[entry["Name"]] = data
        self._save_copies(scene_id, copies, name, body)
        return body, ""

    def _save_copies(self, scene_id: str, copies: dict[str, bytes], name: str, body: dict[str, Any]) -> None:
        """Remote server: keep the verified frames and marker in ``<run_dir>/<scene id>/`` (the validator looks there).

        The runner's own scene id, never the marker's ``SceneId``: a mapping may route ``scene_id`` to any text.
        """
        folder = self._copy_folder(scene_id, str(body.get("Subfolder", "")))
        for relative, data in copies.items():
            (folder / relative).parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(folder / relative, data)
        commit_marker(folder / name, body)

    def _copy_folder(self, scene_id: str, subfolder: str) -> Path:
        tail = scene_id or subfolder.rpartition("/")[2]
        folder = self.options.run_dir / tail if tail else self.options.run_dir
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def _forced_marker(
        self, scene: Scene, prompt_id: str, prefix: str | None, entry: dict[str, Any] | None
    ) -> MarkerOutcome:
        """The seed's fallback: stable frames → a local ``runner-forced`` marker."""
        files = _history_files(entry, _marker_location(prefix)[0] if prefix else None)
        if not files:
            return MarkerOutcome(problem="the history entry lists no output files")
        subfolder = files[0][0]
        if self.options.comfy_output_dir is not None:
            folder = self.options.comfy_output_dir / subfolder
            names = [f for s, f in files if s == subfolder]
            sizes, problem = _stable_sizes(folder, names, self.options.forced_quiet_period_s)
        else:  # remote server: copy the frames into the run folder, twice, a quiet period apart
            folder = self._copy_folder(scene.id, subfolder)
            names = [f for s, f in files if s == subfolder]
            sizes, problem = self._download_stable(subfolder, names, folder)
        if sizes is None:
            return MarkerOutcome(problem=problem)
        name = marker_name(os.path.basename(prefix)) if prefix else f"{scene.id}.done"
        body = build_marker(
            [MarkedFile(n, s) for n, s in zip(names, sizes, strict=True)],
            source="runner-forced",
            prefix=prefix or scene.id,
            subfolder=subfolder,
            width=None,
            height=None,
            prompt_id=prompt_id,
            scene_id=scene.id,
            parameters={
                "QuietPeriodSeconds": self.options.forced_quiet_period_s,
                "Copied": self.options.comfy_output_dir is None,
            },
        )
        path = commit_marker(folder / name, body)
        try:
            verified = verify_marker(path)
        except MarkerError as exc:  # the frames changed between the check and the commit
            return MarkerOutcome(problem=str(exc))
        return MarkerOutcome(detected=False, forced=True, body=verified, folder=folder)

    def _download_stable(self, subfolder: str, names: list[str], folder: Path) -> tuple[list[int] | None, str]:
        """Fetch every frame through /view, wait the quiet period, fetch again: sizes must not move.

        Both passes together get ``post_execution_timeout_seconds`` (plus the quiet period): every /view is
        cut at that deadline, and none is made after it.
        """
        quiet = self.options.forced_quiet_period_s
        deadline = time.monotonic() + self.options.policy.post_execution_timeout_seconds + quiet
        first = self._fetch_all(subfolder, names, folder, deadline - quiet)
        if first is None:
            return None, "the frames could not be fetched through /view in time"
        time.sleep(quiet)
        second = self._fetch_all(subfolder, names, folder, deadline)
        if second is None:
            return None, "the frames could not be fetched through /view in time"
        if second != first:
            return None, f"frames still changing after {quiet:g} s"
        if any(size == 0 for size in first):
            return None, "a listed frame is empty"
        return first, ""

    def _fetch_all(self, subfolder: str, names: list[str], folder: Path, deadline: float) -> list[int] | None:
        sizes = []
        for name in names:
            left = deadline - time.monotonic()
            if left <= 0:
                logger.warning("no time left to fetch %s/%s for the forced copy", subfolder, name)
                return None
            try:
                data = self.client.view(name, subfolder, timeout_s=left)
            except ClientError as exc:
                logger.warning("cannot fetch %s/%s for the forced copy: %s", subfolder, name, exc)
                return None
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(folder / name, data)
            sizes.append(len(data))
        return sizes

    # ------------------------------------------------------------------ telemetry

    def _scene_document(
        self,
        scene: Scene,
        prompt_id: str,
        completion: CompletionResult | None,
        marker: MarkerOutcome,
        gpu_before: dict[str, Any] | None,
        runner_fields: dict[str, Any],
    ) -> dict[str, Any]:
        graph = self._graph_document(scene, prompt_id, marker) if marker.body is not None else None
        if graph is not None:
            document = dict(graph)
        else:
            document = self._own_document(scene, completion, marker, gpu_before)
        document.update(policy_fields(self.options.policy.as_dict()))
        document.update(runner_fields)
        document["Writer"] = "runner"
        document["SceneId"] = scene.id
        document["CreatedAt"] = iso_utc(utc_now())
        if document.get("Frames") is None:
            document["Frames"] = _frames_of(marker)
        errors = contract_errors(document, "scene-telemetry")
        if errors:  # a bug, not an input problem: say exactly which field
            raise AssertionError(f"runner built an invalid scene document for {scene.id}: {errors[:3]}")
        return document

    def _graph_document(self, scene: Scene, prompt_id: str, marker: MarkerOutcome) -> dict[str, Any] | None:
        """The collector's scene document beside the frames, when the graph has one for this prompt."""
        raw = self._read_collector_metadata(marker)
        if raw is None:
            return None
        try:
            metadata = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            logger.warning(
                "collector metadata beside scene %s is unreadable (%s); building the record here", scene.id, exc
            )
            return None
        for candidate in (metadata.get("Scenes") or []) if isinstance(metadata, dict) else []:
            if isinstance(candidate, dict) and candidate.get("PromptId") == prompt_id:
                problems = contract_errors(candidate, "scene-telemetry")
                if problems:
                    logger.warning(
                        "collector record of scene %s is invalid (%s); building it here", scene.id, problems[0]
                    )
                    return None
                return candidate
        return None

    def _read_collector_metadata(self, marker: MarkerOutcome) -> bytes | None:
        if marker.forced:
            return None
        if marker.folder is not None:
            try:
                return (marker.folder / COLLECTOR_METADATA).read_bytes()
            except OSError:
                return None
        subfolder = (marker.body or {}).get("Subfolder", "")
        try:
            return self.client.view(COLLECTOR_METADATA, subfolder, timeout_s=SIDE_REQUEST_TIMEOUT_S)
        except ClientError:
            return None

    def _own_document(
        self,
        scene: Scene,
        completion: CompletionResult | None,
        marker: MarkerOutcome,
        gpu_before: dict[str, Any] | None,
    ) -> dict[str, Any]:
        from ..telemetry._gpu import gpu_contract_fields

        gpu, system = gpu_contract_fields(gpu_before, self._gpu_snapshot("after"))
        body = marker.body
        return {
            "SchemaVersion": SCHEMA_VERSION,
            "Document": "scene-telemetry",
            "SceneId": scene.id,
            "Versions": versions(self.options.comfyui_version),
            "ExecutionStartedAt": (completion.execution_started_at if completion else None)
            or _execution_started_at(completion.history_entry if completion else None),
            "FramesDurableAt": body["CreatedAt"] if body else None,
            "GPU": gpu,
            "System": system,
            "Frames": _frames_of(marker),
        }

    def _gpu_snapshot(self, label: str) -> dict[str, Any] | None:
        """A server-side snapshot within ``gpu_snapshot_allowance_s`` (its own short-timeout client)."""
        if not self.options.gpu_snapshots:
            return None
        try:
            from ..comfy_api.gpu_remote import BOUNDED_STATS_TIMEOUT_S, take_bounded_snapshot
        except ImportError:  # the remote probe is optional: the GPU block then says Source "none"
            logger.debug("comfy_api.gpu_remote unavailable; no server-side GPU snapshot")
            return None
        allowance = self.options.gpu_snapshot_allowance_s
        stats_client = ComfyClient(self.client.base_url, request_timeout_s=min(BOUNDED_STATS_TIMEOUT_S, allowance))
        snapshot: dict[str, Any] = take_bounded_snapshot(
            label, lambda timeout_s: stats_client.system_stats(timeout_s=timeout_s), allowance_s=allowance
        )
        return snapshot

    # ------------------------------------------------------------------ state (--resume)

    def _resumable_prompt(self, scene_id: str) -> str | None:
        """The last prompt of this scene from an earlier run, if the server still knows it."""
        if not self.options.resume:
            return None
        ids = self.state["Scenes"].get(scene_id, {}).get("PromptIds", [])
        if ids and self._known_to_server(ids[-1], time.monotonic() + SIDE_REQUEST_TIMEOUT_S):
            return str(ids[-1])
        return None

    def _attempt_number(self, scene_id: str, prompt_id: str) -> int:
        ids = self.state["Scenes"].get(scene_id, {}).get("PromptIds", [])
        return ids.index(prompt_id) + 1 if prompt_id in ids else 1

    def _record_attempt(self, scene_id: str, prompt_id: str) -> None:
        entry = self.state["Scenes"].setdefault(scene_id, {"PromptIds": [], "Document": None})
        if prompt_id not in entry["PromptIds"]:
            entry["PromptIds"].append(prompt_id)
        self._save_state()

    def _record_document(self, scene_id: str, document: dict[str, Any]) -> None:
        self.state["Scenes"].setdefault(scene_id, {"PromptIds": []})["Document"] = document
        self._save_state()

    def _save_state(self) -> None:
        self.options.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.options.run_dir / STATE_FILE, json.dumps(self.state, indent=1) + "\n")

    def _notify(self, event: dict[str, Any]) -> None:
        if self.on_event is not None:
            self.on_event(event)


# ---------------------------------------------------------------------- helpers


def _new_state(run_id: str) -> dict[str, Any]:
    return {"RunId": run_id, "Scenes": {}}


def _load_state(run_dir: Path, run_id: str) -> dict[str, Any]:
    path = run_dir / STATE_FILE
    try:
        state = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return _new_state(run_id)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        from ..telemetry._errors import InvalidInputError

        raise InvalidInputError(f"cannot resume: runner state is unreadable: {exc}", path=path) from exc
    if not isinstance(state, dict) or state.get("RunId") != run_id or not isinstance(state.get("Scenes"), dict):
        from ..telemetry._errors import InvalidInputError

        raise InvalidInputError(f"cannot resume: state belongs to run {state.get('RunId')!r}", path=path)
    return state


def read_state_run_id(run_dir: Path) -> str | None:
    """The run id recorded in a run folder (what ``--resume`` continues), or None."""
    try:
        state = json.loads((run_dir / STATE_FILE).read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    run_id = state.get("RunId") if isinstance(state, dict) else None
    return run_id if isinstance(run_id, str) else None


class _OutOfTime(Exception):
    """The attempt's deadline passed before ``POST /prompt`` got an answer."""


def _queued_anyway(rejection: str) -> bool:
    return rejection.startswith("queued with node_errors")


def _exit_detail(completion: CompletionResult | None, marker: MarkerOutcome) -> str | None:
    if completion is None:
        return "no reply from the server"
    if completion.exit_reason != SUCCESS:
        return completion.detail or completion.exit_reason
    if not marker.detected and not marker.forced:
        return f"completed, but no done marker: {marker.problem}"
    if marker.forced:
        return f"no done marker in time ({marker.problem or 'timeout'}); runner-forced marker after a stability check"
    return None


def _join(a: str, b: str) -> str:
    return "/".join(p for p in (a, b) if p)


def _marker_location(prefix: str) -> tuple[str, str]:
    """(subfolder, marker file name) of a WriteDoneMarker prefix (runner prefixes carry no %tokens%)."""
    normalised = os.path.normpath(prefix).replace(os.sep, "/")
    subfolder, _, filename = normalised.rpartition("/")
    return subfolder, marker_name(filename)


def marker_name_of(marker: MarkerOutcome) -> str:
    body = marker.body or {}
    return marker_name(os.path.basename(str(body.get("FilenamePrefix") or "frame")))


def _frames_of(marker: MarkerOutcome) -> dict[str, Any] | None:
    """The scene's Frames block from its marker; None when there is no marker or it lists no frame."""
    body = marker.body
    if not body or body["FrameCount"] <= 0:
        return None
    return frames_block(body, marker_name_of(marker))


def _history_files(entry: dict[str, Any] | None, subfolder: str | None) -> list[tuple[str, str]]:
    """(subfolder, filename) of every output file the history lists; the marker's folder first."""
    files: list[tuple[str, str]] = []
    for ui in ((entry or {}).get("outputs") or {}).values():
        for key in ("images", "gifs", "videos", "audio"):
            for item in ui.get(key, []) if isinstance(ui, dict) else []:
                if isinstance(item, dict) and item.get("type", "output") == "output" and item.get("filename"):
                    pair = (str(item.get("subfolder", "")), str(item["filename"]))
                    if pair not in files:
                        files.append(pair)
    if subfolder is not None:
        files.sort(key=lambda f: f[0] != subfolder)
    return files


def _stable_sizes(folder: Path, names: list[str], quiet_s: float) -> tuple[list[int] | None, str]:
    """Sizes of *names* if none is missing, empty or still changing across *quiet_s* seconds."""

    def sizes() -> list[int] | None:
        try:
            return [(folder / n).stat().st_size for n in names]
        except OSError:
            return None

    first = sizes()
    if first is None:
        return None, "a listed frame is missing"
    time.sleep(quiet_s)
    second = sizes()
    if second != first:
        return None, f"frames still changing after {quiet_s:g} s"
    if any(s == 0 for s in first):
        return None, "a listed frame is empty"
    return first, ""


def _execution_started_at(entry: dict[str, Any] | None) -> str | None:
    for name, data in ((entry or {}).get("status") or {}).get("messages") or []:
        if name == "execution_start" and isinstance(data, dict) and isinstance(data.get("timestamp"), (int, float)):
            return iso_from_epoch_ms(data["timestamp"])
    return None
