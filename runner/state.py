"""``.runner-state.json``: each scene's prompt ids and finished document, which ``--resume`` reads.

Written atomically after every submission and every finished scene, so a killed runner leaves a
state that names the prompt to re-attach to.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..comfy_api.client import ComfyClient
from ..telemetry import Deadline, InvalidInputError, atomic_write_text, iso_utc, parse_json, read_bounded, utc_now
from .attempt import known_to_server
from .options import SIDE_REQUEST_TIMEOUT_S, STATE_FILE


class RunState:
    """The resume record of one run folder (``Scenes``: ``{scene id: {PromptIds, Document}}``)."""

    def __init__(self, run_dir: Path, data: dict[str, Any]) -> None:
        self.run_dir = run_dir
        self.data = data

    @classmethod
    def new(cls, run_dir: Path, run_id: str) -> RunState:
        return cls(run_dir, {"RunId": run_id, "Scenes": {}})

    @classmethod
    def load(cls, run_dir: Path, run_id: str) -> RunState:
        """The state of an earlier run *run_id* in *run_dir* (new when there is none).

        An unreadable state, or one of another run, is :class:`InvalidInputError` (``run`` exit 2).
        """
        path = run_dir / STATE_FILE
        if not os.path.lexists(path):
            return cls.new(run_dir, run_id)
        try:
            data = _read_state(path)
        except InvalidInputError as exc:
            raise InvalidInputError(f"cannot resume: runner state is unreadable: {exc.message}", path=path) from exc
        problem = _shape_problem(data)
        if problem is not None:
            raise InvalidInputError(f"cannot resume: runner state is unreadable: {problem}", path=path)
        if data.get("RunId") != run_id:
            raise InvalidInputError(f"cannot resume: state belongs to run {data.get('RunId')!r}", path=path)
        return cls(run_dir, data)

    @property
    def scenes(self) -> dict[str, Any]:
        scenes: dict[str, Any] = self.data["Scenes"]
        return scenes

    def finished_document(self, scene_id: str) -> dict[str, Any] | None:
        """The scene's document when an earlier run finished it with ``success``."""
        done = self.scenes.get(scene_id, {}).get("Document")
        if isinstance(done, dict) and done.get("HistoryExitReason") == "success":
            return done
        return None

    def prompt_ids(self, scene_id: str) -> list[str]:
        return list(self.scenes.get(scene_id, {}).get("PromptIds", []))

    def resumable_prompt(self, client: ComfyClient, scene_id: str) -> str | None:
        """The scene's last prompt from an earlier run, if the server still knows it (one bounded look-up)."""
        ids = self.prompt_ids(scene_id)
        if ids and known_to_server(client, ids[-1], Deadline.after(SIDE_REQUEST_TIMEOUT_S)):
            return str(ids[-1])
        return None

    def attempt_number(self, scene_id: str, prompt_id: str) -> int:
        ids = self.prompt_ids(scene_id)
        return ids.index(prompt_id) + 1 if prompt_id in ids else 1

    def record_attempt(self, scene_id: str, prompt_id: str) -> None:
        entry = self.scenes.setdefault(scene_id, {"PromptIds": [], "Document": None})
        if prompt_id not in entry["PromptIds"]:
            entry["PromptIds"].append(prompt_id)
            entry.setdefault("SubmittedAt", {})[prompt_id] = iso_utc(utc_now())
        self.save()

    def submitted_at(self, scene_id: str, prompt_id: str) -> str | None:
        """When *prompt_id* was first submitted (an earlier run's time for a prompt re-attached on resume)."""
        value = (self.scenes.get(scene_id, {}).get("SubmittedAt") or {}).get(prompt_id)
        return value if isinstance(value, str) else None

    def record_document(self, scene_id: str, document: dict[str, Any]) -> None:
        self.scenes.setdefault(scene_id, {"PromptIds": []})["Document"] = document
        self.save()

    def save(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.run_dir / STATE_FILE, json.dumps(self.data, indent=1) + "\n")


def read_state_run_id(run_dir: Path) -> str | None:
    """The run id recorded in a run folder (what ``--resume`` continues), or None."""
    try:
        state = _read_state(run_dir / STATE_FILE)
    except InvalidInputError:
        return None
    run_id = state.get("RunId") if isinstance(state, dict) else None
    return run_id if isinstance(run_id, str) else None


MAX_STATE_BYTES = 64 * 1024 * 1024
"""A 1,000-scene state (every finished document in it) is ~5 MB; the cap bounds a hostile file."""


def _shape_problem(data: Any) -> str | None:
    """What makes a parsed state unusable (the resume code indexes it without further checks), or None."""
    if not isinstance(data, dict):
        return "not a JSON object"
    if not isinstance(data.get("Scenes"), dict):
        return "'Scenes' is not an object"
    for scene_id, entry in data["Scenes"].items():
        if not isinstance(entry, dict):
            return f"scene {scene_id!r} is not an object"
        ids = entry.get("PromptIds", [])
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            return f"scene {scene_id!r} PromptIds is not a list of strings"
        if not isinstance(entry.get("SubmittedAt", {}), dict):
            return f"scene {scene_id!r} SubmittedAt is not an object"
    return None


def _read_state(path: Path) -> Any:
    """The parsed state file: read bounded (a FIFO or device is refused), strict JSON, never a RecursionError."""
    raw = read_bounded(path, MAX_STATE_BYTES)
    try:
        return parse_json(raw.decode("utf-8"))
    except ValueError as exc:
        raise InvalidInputError(f"not UTF-8 JSON: {exc}", path=path) from exc
