"""Building and writing scene telemetry and the run-level artifact metadata.

An editor run is a run of one scene: :func:`build_scene_telemetry` (Writer
"graph") → :func:`build_run_metadata` → :func:`write_run` into the folder of the
frames. The headless runner calls the last two with its own Writer "runner"
scenes. Every document is validated against contract v1 before anything is
written; a document that does not validate is a bug and raises ContractError.

Files of a run folder (names are part of the stable format, see
``docs/run-summary.md``), written in this order so that ``artifact-metadata.json``
existing means the others are complete, across re-writes and crashes too
(``_runset``: the previous run's metadata and summary are withdrawn first):

0. the previous run withdrawn; dead writers' temp files of these names swept,
1. ``<scene file name>.telemetry.json`` per scene (:func:`telemetry_file_name`),
2. ``run-summary.txt`` rendered from the metadata,
3. ``artifact-metadata.json``.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ._atomic import atomic_write_text
from ._compare import compare_summary
from ._contract import SCHEMA_VERSION, validate_document
from ._done import check_scene_id
from ._errors import ContractError, InvalidInputError, MarkerError
from ._gpu import gpu_contract_fields
from ._layout import ARTIFACT_METADATA_NAME, RUN_SUMMARY_NAME, telemetry_file_name
from ._marker import verify_marker
from ._meta import iso_from_epoch_ms, iso_utc, parse_iso, utc_now, versions
from ._runset import begin_run
from ._summary import render_summary

POLICY_SECONDS_KEYS: dict[str, str] = {
    "max_wait_seconds": "MaxWaitSeconds",
    "history_poll_interval_seconds": "PollIntervalSeconds",
    "post_execution_timeout_seconds": "PostExecutionTimeoutSeconds",
}
POLICY_COUNT_KEYS: tuple[str, ...] = ("max_attempt_count", "scene_retry_budget")
POLICY_KEYS: tuple[str, ...] = (*POLICY_SECONDS_KEYS, *POLICY_COUNT_KEYS)
"""The five queue-policy knobs (runner/policy.py QueuePolicy field names)."""
POLICY_FIELDS: tuple[str, ...] = (
    "PollLimit",
    "HistoryAttemptLimit",
    "MaxWaitSeconds",
    "PollIntervalSeconds",
    "PostExecutionTimeoutSeconds",
    "SceneRetryBudget",
)
"""Contract fields the knobs fill (null when no runner patched them in)."""

RUNNER_ONLY_FIELDS: tuple[str, ...] = (
    "HistoryAttempts",
    "HistoryExitReason",
    "ExecutionSuccessDetected",
    "ExecutionSuccessAt",
    "HistoryPostExecutionTimeoutReached",
    "SceneAttempts",
    "DoneMarkerDetected",
    "DoneMarkerWaitSeconds",
    "ForcedCopyTriggered",
)
"""Null in a graph-written scene: only a headless runner observes them (contract x-null-when)."""

Writer = Literal["graph", "runner"]


@dataclass(frozen=True)
class RunFiles:
    """What :func:`write_run` wrote."""

    run_dir: Path
    metadata_path: Path
    summary_path: Path
    telemetry_paths: dict[str, Path] = field(default_factory=dict)
    """Per-scene telemetry file by SceneId, in run order."""


def policy_fields(policy: Mapping[str, Any] | None) -> dict[str, Any]:
    """Contract policy fields from the five queue-policy knobs; absent knobs stay null.

    ``max_attempt_count`` 0 means unbounded: PollLimit "unbounded", HistoryAttemptLimit 0.
    """
    fields: dict[str, Any] = dict.fromkeys(POLICY_FIELDS)
    if not policy:
        return fields
    unknown = sorted(str(k) for k in policy if k not in POLICY_KEYS)
    if unknown:
        raise InvalidInputError(
            f"unknown queue-policy key(s) {', '.join(unknown)}; expected {', '.join(POLICY_KEYS)}",
            field=f"queue_policy.{unknown[0]}",
        )
    for key, name in POLICY_SECONDS_KEYS.items():
        if policy.get(key) is not None:
            fields[name] = _positive_seconds(policy[key], key)
    if policy.get("max_attempt_count") is not None:
        attempts = _count(policy["max_attempt_count"], "max_attempt_count")
        fields["HistoryAttemptLimit"] = attempts
        fields["PollLimit"] = "unbounded" if attempts == 0 else str(attempts)
    if policy.get("scene_retry_budget") is not None:
        fields["SceneRetryBudget"] = _count(policy["scene_retry_budget"], "scene_retry_budget")
    return fields


MAX_POLICY_TEXT_CHARS = 4096
"""The five knobs as JSON fit in ~200 characters; anything longer is not a policy."""


def parse_policy_text(text: str | None) -> dict[str, Any] | None:
    """The collector's ``queue_policy`` widget: '' → None (editor run), else a JSON object of the knobs."""
    if text is None or not text.strip():
        return None
    if len(text) > MAX_POLICY_TEXT_CHARS:
        raise InvalidInputError(f"queue_policy is over {MAX_POLICY_TEXT_CHARS} characters", field="queue_policy")
    try:
        policy = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise InvalidInputError(f"queue_policy is not valid JSON: {exc}", field="queue_policy") from exc
    if not isinstance(policy, dict):
        raise InvalidInputError("queue_policy must be a JSON object of the policy knobs", field="queue_policy")
    policy_fields(policy)  # refuse bad keys and values now, with the knob's name
    return policy


def _positive_seconds(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise InvalidInputError(
            f"{key} must be a positive number of seconds, got {value!r}", field=f"queue_policy.{key}"
        )
    return float(value)


def _count(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInputError(f"{key} must be a whole number >= 0, got {value!r}", field=f"queue_policy.{key}")
    return value


def execution_start(gpu_before: Mapping[str, Any] | None, marker_body: Mapping[str, Any]) -> tuple[str, float | None]:
    """The earliest reliable instant of this prompt's execution seen from inside the graph.

    Rule: the 'before' GPU snapshot's TakenAt (and its MonotonicS, for DurationSeconds)
    when one is wired; otherwise the marker's CreatedAt (the first pack node that left a
    timestamp), with no monotonic start, so DurationSeconds stays null.
    """
    if gpu_before is None:
        return str(marker_body["CreatedAt"]), None
    try:
        taken = parse_iso(str(gpu_before["TakenAt"]))
    except (KeyError, ValueError) as exc:
        raise InvalidInputError("gpu_before is not a GPU_SNAPSHOT: no valid TakenAt", field="gpu_before") from exc
    if taken.tzinfo is None:
        raise InvalidInputError("gpu_before TakenAt has no UTC offset", field="gpu_before")
    monotonic = gpu_before.get("MonotonicS")
    if isinstance(monotonic, (int, float)) and not isinstance(monotonic, bool) and math.isfinite(monotonic):
        return iso_utc(taken), float(monotonic)
    return iso_utc(taken), None


def _verified_marker(marker: Mapping[str, Any]) -> tuple[Path, dict[str, Any]]:
    """Re-verify the DONE_MARKER on disk and make sure it is still the one WriteDoneMarker committed."""
    try:
        path = Path(str(marker["marker_path"]))
        given = marker["body"]
    except (KeyError, TypeError) as exc:
        raise InvalidInputError("done_marker is not a DONE_MARKER value", field="done_marker") from exc
    body = verify_marker(path)
    if isinstance(given, Mapping) and (given.get("CreatedAt"), given.get("PromptId")) != (
        body["CreatedAt"],
        body["PromptId"],
    ):
        raise MarkerError("the marker on disk was replaced by another run since WriteDoneMarker wrote it", path=path)
    return path, body


def _scene_id(scene_id: str | None, body: Mapping[str, Any], marker_path: Path) -> str:
    """scene_id as given, else the marker's SceneId, else the marker's stem ('frame' for frame.done)."""
    given = check_scene_id(scene_id)
    recorded = body.get("SceneId")
    if given and recorded and given != recorded:
        raise InvalidInputError(
            f"scene_id {given!r} differs from the marker's SceneId {recorded!r}; wire the same scene_id to both",
            field="scene_id",
        )
    return given or recorded or marker_path.stem


def build_scene_telemetry(
    *,
    marker: Mapping[str, Any],
    scene_id: str | None,
    gpu_before: Mapping[str, Any] | None,
    gpu_after: Mapping[str, Any] | None,
    policy: Mapping[str, Any] | None,
    prompt_id: str | None,
    queue_start_ms: float | None,
    execution_started_at: str | None,
    started_monotonic: float | None,
    comfyui_version: str | None,
) -> dict[str, Any]:
    """A contract-valid scene-telemetry document written by the graph (Writer "graph").

    *marker* is WriteDoneMarker's DONE_MARKER output; it is re-verified on disk.
    Runner-only fields are null; policy fields are filled from *policy* when a runner
    patched it in. QueueEnd and CreatedAt are now; DurationSeconds runs from
    *started_monotonic* (same process's monotonic clock) to now, null when unknown.
    """
    marker_path, body = _verified_marker(marker)
    if prompt_id is not None and body["PromptId"] not in (None, prompt_id):
        raise MarkerError(f"the marker was written by prompt {body['PromptId']}, not {prompt_id}", path=marker_path)
    gpu, system = gpu_contract_fields(
        dict(gpu_before) if gpu_before is not None else None, dict(gpu_after) if gpu_after is not None else None
    )
    duration = None if started_monotonic is None else round(max(0.0, time.monotonic() - started_monotonic), 3)
    now = iso_utc(utc_now())
    document: dict[str, Any] = {
        "SchemaVersion": SCHEMA_VERSION,
        "Document": "scene-telemetry",
        "SceneId": _scene_id(scene_id, body, marker_path),
        "PromptId": prompt_id if prompt_id is not None else body["PromptId"],
        "Writer": "graph",
        "CreatedAt": now,
        "Versions": versions(comfyui_version),
        "ExecutionStartedAt": execution_started_at,
        "FramesDurableAt": body["CreatedAt"],
        "DurationSeconds": duration,
        "QueueStart": iso_from_epoch_ms(queue_start_ms) if queue_start_ms is not None else None,
        "QueueEnd": now,
        **policy_fields(policy),
        **dict.fromkeys(RUNNER_ONLY_FIELDS),
        "ExitDetail": None,
        "GPU": gpu,
        "System": system,
        "Frames": frames_block(body, marker_path.name),
    }
    validate_document(document, "scene-telemetry")
    return document


def frames_block(body: Mapping[str, Any], marker_name: str) -> dict[str, Any]:
    """The contract's ``Frames`` object of a scene from its done-marker *body* and the marker's file name."""
    return {
        "Count": body["FrameCount"],
        "Width": body["Width"],
        "Height": body["Height"],
        "TotalBytes": body["TotalBytes"],
        "Subfolder": body["Subfolder"],
        "MarkerName": marker_name,
    }


def collect_scene(
    *,
    marker: Mapping[str, Any],
    scene_id: str | None,
    gpu_before: Mapping[str, Any] | None,
    gpu_after: Mapping[str, Any] | None,
    policy: Mapping[str, Any] | None,
    prompt_id: str | None,
    queue_start_ms: float | None,
    comfyui_version: str | None,
) -> tuple[dict[str, Any], RunFiles]:
    """An editor run end to end: the scene, a one-scene run (RunId = prompt_id), written beside the frames.

    ExecutionStartedAt and the DurationSeconds start follow :func:`execution_start`.
    """
    body = marker.get("body") if isinstance(marker, Mapping) else None
    if not isinstance(body, Mapping) or "CreatedAt" not in body or "marker_path" not in marker:
        raise InvalidInputError("done_marker is not a DONE_MARKER value", field="done_marker")
    started_at, started_monotonic = execution_start(gpu_before, body)
    scene = build_scene_telemetry(
        marker=marker,
        scene_id=scene_id,
        gpu_before=gpu_before,
        gpu_after=gpu_after,
        policy=policy,
        prompt_id=prompt_id,
        queue_start_ms=queue_start_ms,
        execution_started_at=started_at,
        started_monotonic=started_monotonic,
        comfyui_version=comfyui_version,
    )
    metadata = build_run_metadata(
        [scene], run_id=prompt_id or new_run_id(), writer="graph", comfyui_version=comfyui_version
    )
    return scene, write_run(Path(str(marker["marker_path"])).parent, metadata)


def new_run_id() -> str:
    """Run id when there is no prompt_id (demo, outside ComfyUI): ``local-<uuid4 hex>``."""
    return f"local-{uuid.uuid4().hex}"


def build_run_metadata(
    scenes: Sequence[Mapping[str, Any]],
    *,
    run_id: str,
    writer: Writer,
    comfyui_version: str | None = None,
) -> dict[str, Any]:
    """A contract-valid artifact-metadata document listing *scenes* in run order."""
    document: dict[str, Any] = {
        "SchemaVersion": SCHEMA_VERSION,
        "Document": "artifact-metadata",
        "RunId": run_id,
        "Writer": writer,
        "CreatedAt": iso_utc(utc_now()),
        "Versions": versions(comfyui_version),
        "SceneCount": len(scenes),
        "Scenes": [dict(scene) for scene in scenes],
    }
    validate_document(document, "artifact-metadata")
    return document


def write_run(run_dir: str | Path, metadata: Mapping[str, Any]) -> RunFiles:
    """Validate *metadata*, then withdraw the folder's previous run and write the telemetry, summary and metadata.

    Each file is replaced atomically and the metadata comes last, so a reader (or a
    crash) sees the previous complete run, no metadata ("not complete"), or this one.
    """
    folder = Path(run_dir)
    metadata_path = folder / ARTIFACT_METADATA_NAME
    validate_document(metadata, "artifact-metadata", path=str(metadata_path))
    names = _checked_file_names(metadata, metadata_path)
    summary = render_summary(metadata)
    _check_round_trip(summary, metadata, folder / RUN_SUMMARY_NAME)
    folder.mkdir(parents=True, exist_ok=True)
    begin_run(folder)
    telemetry_paths = {}
    for scene, name in zip(metadata["Scenes"], names, strict=True):
        telemetry_paths[scene["SceneId"]] = atomic_write_text(folder / name, _json(scene))
    summary_path = atomic_write_text(folder / RUN_SUMMARY_NAME, summary)
    atomic_write_text(metadata_path, _json(metadata))
    return RunFiles(folder, metadata_path, summary_path, telemetry_paths)


def _checked_file_names(metadata: Mapping[str, Any], metadata_path: Path) -> list[str]:
    """Per-scene file names; SceneCount, SceneIds and file names must be consistent and unique."""
    scenes = metadata["Scenes"]
    if metadata["SceneCount"] != len(scenes):
        raise ContractError(
            f"SceneCount is {metadata['SceneCount']} but Scenes lists {len(scenes)}",
            path=str(metadata_path),
            field="SceneCount",
        )
    names = [telemetry_file_name(scene["SceneId"]) for scene in scenes]
    for index, name in enumerate(names):
        if name in names[:index]:
            raise ContractError(
                f"two scenes share the telemetry file name {name} (SceneIds must differ after sanitising)",
                path=str(metadata_path),
                field=f"Scenes[{index}].SceneId",
            )
    return names


def _check_round_trip(summary: str, metadata: Mapping[str, Any], summary_path: Path) -> None:
    """A summary the validator would reject is a renderer bug: fail before writing anything."""
    failures = [row for row in compare_summary(summary, metadata) if row.verdict in ("fail", "error")]
    if failures:
        first = failures[0]
        raise ContractError(f"rendered summary does not round-trip: {first.message}", path=str(summary_path))


def _json(document: Mapping[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
