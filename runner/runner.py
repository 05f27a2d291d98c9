"""The headless runner: every scene of a list through a stock ComfyUI server, each within its budget.

Per scene (:class:`scene.SceneExecutor`, one job per module):

1. patch the workflow (mapping, the scene's own ``filename_prefix``, the collector's
   ``queue_policy``) — ``scenes``;
2. connect the websocket, then ``POST /prompt`` with a client-chosen ``prompt_id``
   (``uuid5(run id, scene id, attempt)``: deterministic, so ``--resume`` finds it again), and wait
   with :func:`comfy_api.completion.wait_for_completion` — ``attempt`` (one :class:`telemetry.Deadline`
   per attempt); an execution error or a prompt lost to a restart is resubmitted while the retry
   budget lasts; a validation error (HTTP 400 / ``node_errors``) is final and spends nothing;
3. on success, wait for the scene's ``.done`` (file events when the output folder is local, ``/view``
   when remote) for ``post_execution_timeout_seconds`` — ``markers``; when none comes, check the frames
   the history lists for stability and write a ``runner-forced`` marker — ``forced``;
4. the scene document: the collector's (when the graph wrote one beside the frames) with the runner's
   fields set and Writer "runner", else built here with GPU figures from the server side —
   ``documents``, ``gpu``.

At the end the run folder gets ``artifact-metadata.json`` + ``run-summary.txt``
(:func:`telemetry.write_run`) and the validator runs over it. ``.runner-state.json`` in the run
folder records each scene's prompt ids and finished documents, which is what ``--resume`` reads
(``state``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from ..comfy_api.client import ComfyClient
from ..telemetry import begin_run, build_run_metadata, validate_run, write_run
from .attempt import Notify
from .options import STATE_FILE, RunOptions, prompt_id_for, scene_worst_case_s
from .outcomes import MarkerOutcome, RunResult, SceneOutcome
from .scene import SceneExecutor
from .scenes import FieldMapping, Scene
from .state import RunState, read_state_run_id

logger = logging.getLogger(__name__)

__all__ = [
    "STATE_FILE",
    "MarkerOutcome",
    "RunOptions",
    "RunResult",
    "Runner",
    "SceneOutcome",
    "prompt_id_for",
    "read_state_run_id",
    "scene_worst_case_s",
]


class Runner:
    """Runs scenes one after another on one server; construct, then :meth:`run`."""

    def __init__(
        self,
        client: ComfyClient,
        workflow: Mapping[str, Any],
        mapping: FieldMapping,
        options: RunOptions,
        *,
        on_event: Notify | None = None,
    ) -> None:
        self.client = client
        self.workflow = workflow
        self.mapping = mapping
        self.options = options
        self.on_event = on_event
        self.state = (
            RunState.load(options.run_dir, options.run_id)
            if options.resume
            else RunState.new(options.run_dir, options.run_id)
        )

    def run(self, scenes: list[Scene]) -> RunResult:
        """Run every scene, write the run folder, validate it."""
        self.options.run_dir.mkdir(parents=True, exist_ok=True)
        begin_run(self.options.run_dir, own_names=(STATE_FILE,))  # a re-run's folder is 'not complete' until the end
        result = RunResult(self.options.run_id, self.options.run_dir)
        for scene in scenes:
            done = self.state.finished_document(scene.id) if self.options.resume else None
            if done is not None:
                logger.info("scene %s finished in an earlier run; kept", scene.id)
                outcome = SceneOutcome(scene.id, done.get("PromptId"), "success", done)
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

    def run_scene(self, scene: Scene) -> SceneOutcome:
        """One scene on this runner's server (see :class:`SceneExecutor`)."""
        executor = SceneExecutor(
            self.client, self.workflow, self.mapping, self.options, self.state, notify=self.on_event
        )
        return executor.run(scene)

    def _validate(self) -> tuple[bool | None, dict[str, Any] | None]:
        report = validate_run(self.options.run_dir, output_dir=self.options.comfy_output_dir)
        as_dict: dict[str, Any] = report.to_dict()
        if not report.ok:
            logger.warning("run folder failed validation:\n%s", report.render_text())
        return bool(report.ok), as_dict

    def _notify(self, event: dict[str, Any]) -> None:
        if self.on_event is not None:
            self.on_event(event)
