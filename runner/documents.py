"""A scene's contract document: the collector's (when the graph wrote one) or built here.

Either way the runner's own fields (queue times, exit reason, attempts, marker facts) are set on
it, ``Writer`` becomes ``runner``, and the result must validate against the contract: a document
that does not is a bug in the runner, raised as such.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from ..comfy_api.client import ComfyClient
from ..comfy_api.completion import CompletionResult
from ..comfy_api.history import classify_history_entry
from ..telemetry import (
    SCHEMA_VERSION,
    ClientError,
    InvalidInputError,
    contract_errors,
    frames_block,
    gpu_contract_fields,
    iso_utc,
    marker_name,
    parse_json,
    policy_fields,
    read_bounded,
    utc_now,
    versions,
)
from .options import COLLECTOR_METADATA, SIDE_REQUEST_TIMEOUT_S, RunOptions
from .outcomes import MarkerOutcome

logger = logging.getLogger(__name__)

MAX_COLLECTOR_METADATA_BYTES = 16 * 1024 * 1024
"""The validator's cap on artifact-metadata.json: the collector's one-scene file is a few kB."""

GpuSnapshot = Callable[[], "dict[str, Any] | None"]
"""Takes the 'after' snapshot when (and only when) the runner builds the document itself."""


def scene_document(
    client: ComfyClient,
    options: RunOptions,
    scene_id: str,
    prompt_id: str,
    completion: CompletionResult | None,
    marker: MarkerOutcome,
    gpu_before: dict[str, Any] | None,
    runner_fields: dict[str, Any],
    gpu_after: GpuSnapshot = lambda: None,
) -> dict[str, Any]:
    """The finished, contract-valid scene document."""
    graph = _graph_document(client, scene_id, prompt_id, marker) if marker.body is not None else None
    if graph is not None:
        document = dict(graph)
    else:
        document = _own_document(options, scene_id, completion, marker, gpu_before, gpu_after())
    document.update(policy_fields(options.policy.as_dict()))
    document.update(runner_fields)
    document["Writer"] = "runner"
    document["SceneId"] = scene_id
    document["CreatedAt"] = iso_utc(utc_now())
    if document.get("Frames") is None:
        document["Frames"] = frames_of(marker)
    errors = contract_errors(document, "scene-telemetry")
    if errors:  # a bug, not an input problem: say exactly which field
        raise AssertionError(f"runner built an invalid scene document for {scene_id}: {errors[:3]}")
    return document


def _graph_document(client: ComfyClient, scene_id: str, prompt_id: str, marker: MarkerOutcome) -> dict[str, Any] | None:
    """The collector's scene document beside the frames, when the graph has one for this prompt."""
    raw = _read_collector_metadata(client, marker)
    if raw is None:
        return None
    try:
        metadata = parse_json(raw.decode("utf-8"))
    except ValueError as exc:  # not UTF-8, malformed, duplicate keys, nested too deeply
        logger.warning("collector metadata beside scene %s is unreadable (%s); building the record here", scene_id, exc)
        return None
    for candidate in (metadata.get("Scenes") or []) if isinstance(metadata, dict) else []:
        if isinstance(candidate, dict) and candidate.get("PromptId") == prompt_id:
            problems = contract_errors(candidate, "scene-telemetry")
            if problems:
                logger.warning("collector record of scene %s is invalid (%s); building it here", scene_id, problems[0])
                return None
            return dict(candidate)
    return None


def _read_collector_metadata(client: ComfyClient, marker: MarkerOutcome) -> bytes | None:
    if marker.forced:
        return None
    if marker.folder is not None:
        path = marker.folder / COLLECTOR_METADATA
        if not os.path.lexists(path):
            return None
        try:
            return read_bounded(path, MAX_COLLECTOR_METADATA_BYTES)
        except InvalidInputError as exc:  # a FIFO or device in its place, over the cap: never block or buffer it
            logger.warning("collector metadata %s not read: %s", path, exc.message)
            return None
    subfolder = (marker.body or {}).get("Subfolder", "")
    try:
        return client.view(COLLECTOR_METADATA, subfolder, timeout_s=SIDE_REQUEST_TIMEOUT_S)
    except ClientError:
        return None


def _own_document(
    options: RunOptions,
    scene_id: str,
    completion: CompletionResult | None,
    marker: MarkerOutcome,
    gpu_before: dict[str, Any] | None,
    gpu_after: dict[str, Any] | None,
) -> dict[str, Any]:
    gpu, system = gpu_contract_fields(gpu_before, gpu_after)
    body = marker.body
    return {
        "SchemaVersion": SCHEMA_VERSION,
        "Document": "scene-telemetry",
        "SceneId": scene_id,
        "Versions": versions(options.comfyui_version),
        "ExecutionStartedAt": (completion.execution_started_at if completion else None)
        or execution_started_at(completion.history_entry if completion else None),
        "FramesDurableAt": body["CreatedAt"] if body else None,
        "GPU": gpu,
        "System": system,
        "Frames": frames_of(marker),
    }


def marker_name_of(marker: MarkerOutcome) -> str:
    body = marker.body or {}
    return marker_name(os.path.basename(str(body.get("FilenamePrefix") or "frame")))


def frames_of(marker: MarkerOutcome) -> dict[str, Any] | None:
    """The scene's Frames block from its marker; None when there is no marker or it lists no frame."""
    body = marker.body
    if not body or body["FrameCount"] <= 0:
        return None
    return frames_block(body, marker_name_of(marker))


def execution_started_at(entry: dict[str, Any] | None) -> str | None:
    """The server's ``execution_start`` time from a history entry's status messages (None if it has none)."""
    return classify_history_entry(entry).started_at if entry is not None else None
