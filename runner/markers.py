"""The scene's done marker after a successful prompt: waited for, verified, or forced.

Local output folder: :func:`telemetry.wait_for_done` (file events, polling fallback). Remote server:
``/view`` is polled for the marker, which is checked against the contract and its prompt id, and
every file it lists is fetched and its size compared; the verified copies land in the run folder.
Both get ``post_execution_timeout_seconds``. When no marker comes, :func:`forced.force_marker`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ..comfy_api.client import ComfyClient, loads_reply
from ..telemetry import (
    ClientError,
    Deadline,
    DoneTimeoutError,
    atomic_write_bytes,
    commit_marker,
    contract_errors,
    wait_for_done,
)
from .forced import copy_folder, force_marker, marker_location
from .options import RunOptions
from .outcomes import MarkerOutcome

logger = logging.getLogger(__name__)


class MarkerCollector:
    """Finds (or forces) the marker of one scene on one server."""

    def __init__(self, client: ComfyClient, options: RunOptions) -> None:
        self.client = client
        self.options = options

    def collect(self, scene_id: str, prompt_id: str, prefix: str | None, entry: dict[str, Any] | None) -> MarkerOutcome:
        """The verified marker within the post-execution window, else a forced one (logged, never silent)."""
        started = time.monotonic()
        outcome = self.wait(scene_id, prompt_id, prefix) if prefix else MarkerOutcome(problem="no WriteDoneMarker")
        outcome.wait_seconds = time.monotonic() - started
        if outcome.detected:
            return outcome
        logger.warning(
            "scene %s: no verified done marker within %g s (%s); checking frame stability for a forced marker",
            scene_id,
            self.options.policy.post_execution_timeout_seconds,
            outcome.problem,
        )
        forced = force_marker(self.client, self.options, scene_id, prompt_id, prefix, entry)
        forced.wait_seconds = outcome.wait_seconds
        if forced.forced:
            count = len((forced.body or {}).get("Files", []))
            logger.warning("scene %s: wrote a runner-forced marker for %d file(s)", scene_id, count)
        else:
            forced.problem = f"{outcome.problem}; forced copy impossible: {forced.problem}"
        return forced

    def wait(self, scene_id: str, prompt_id: str, prefix: str) -> MarkerOutcome:
        subfolder, name = marker_location(prefix)
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
        return self.wait_remote(scene_id, prompt_id, subfolder, name, Deadline.after(timeout))

    def wait_remote(
        self, scene_id: str, prompt_id: str, subfolder: str, name: str, deadline: Deadline
    ) -> MarkerOutcome:
        """Poll ``/view`` for the marker; verify it and every listed file's size through ``/view``.

        Every request is cut at *deadline*, so a stalled ``/view`` cannot stretch the window.
        """
        problem = f"{name} not served by /view yet"
        while True:
            body, problem = self._remote_marker_once(scene_id, prompt_id, subfolder, name, problem, deadline)
            if body is not None:
                return MarkerOutcome(detected=True, body=body)
            if deadline.expired():
                return MarkerOutcome(problem=problem)
            time.sleep(min(self.options.marker_poll_interval_s, deadline.left()))

    def _remote_marker_once(
        self, scene_id: str, prompt_id: str, subfolder: str, name: str, problem: str, deadline: Deadline
    ) -> tuple[dict[str, Any] | None, str]:
        try:
            body = loads_reply(self.client.view(name, subfolder, timeout_s=deadline.request_timeout()).decode("utf-8"))
        except ClientError:
            return None, problem
        except ValueError as exc:  # not UTF-8, not JSON, or nested too deeply
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
                data = self.client.view(filename, _join(subfolder, folder), timeout_s=deadline.request_timeout())
            except ClientError as exc:
                return None, f"{entry['Name']}: {exc}"
            if len(data) != entry["Bytes"]:
                return None, f"{entry['Name']}: {len(data)} bytes served, marker says {entry['Bytes']}"
            copies[entry["Name"]] = data
        self._save_copies(scene_id, copies, name, body)
        return body, ""

    def _save_copies(self, scene_id: str, copies: dict[str, bytes], name: str, body: dict[str, Any]) -> None:
        """Remote server: keep the verified frames and marker in ``<run_dir>/<scene id>/``."""
        folder = copy_folder(self.options.run_dir, scene_id, str(body.get("Subfolder", "")))
        for relative, data in copies.items():
            (folder / relative).parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(folder / relative, data)
        commit_marker(folder / name, body)


def _join(a: str, b: str) -> str:
    return "/".join(p for p in (a, b) if p)
