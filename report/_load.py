"""Read a run folder into plain rows for the page, never raising on what is in the folder.

Everything is read through the telemetry library's public API. Four kinds of
folder are understood:

- a headless run (``Writer: runner``), farm runs included: ``artifact-metadata.json``
  lists the scenes, each scene's marker lies below the run folder (or under
  ``--output-dir``);
- an editor run: the collector's folder, one scene, marker beside it;
- a folder whose ``artifact-metadata.json`` is unreadable: the scenes come from the
  ``<scene>.telemetry.json`` files that are still readable;
- a folder with frames and markers only (the sentinel's): one row per marker.

What is missing or unreadable is collected in :attr:`RunView.missing`, in words.
Only a folder with nothing readable at all raises :class:`NothingReadable`.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ..telemetry import (
    ARTIFACT_METADATA_NAME,
    RUN_SUMMARY_NAME,
    UNREADABLE,
    CheckRow,
    InvalidInputError,
    MarkerError,
    marker_candidates,
    read_json,
    read_marker,
    telemetry_file_name,
)

logger = logging.getLogger(__name__)

MAX_SCENE_FILES = 20_000
"""Scenes on the page: telemetry files or markers looked at when there is no readable metadata, and scenes of
the metadata's list shown (the page stays openable in a browser)."""

MARKER_GLOBS: tuple[str, ...] = ("*.done", "*/*.done", "*/*/*.done")
"""Where a markers-only folder keeps its markers (the folder and two levels below)."""

SERVER_KEYS: tuple[str, ...] = ("ServerUrl", "ServerInstanceId", "Server", "InstanceId", "Instance", "Worker")
"""Per-scene fields that may name the server that ran a scene, the readable one first: a farm run records
``ServerUrl`` (credentials removed), ``ServerInstanceId`` and ``ServerDevice`` (contract 1.1). Read defensively:
older records, and scenes no server ran, have none of them."""

SERVER_SUBKEYS: tuple[str, ...] = ("Url", "URL", "Name", "InstanceId", "Instance")
"""Inside an object-valued server field, what names the server, most specific first."""


class NothingReadable(InvalidInputError):
    """The folder holds no readable metadata, telemetry file or done marker: there is nothing to report."""


@dataclass
class SceneRow:
    """One scene as the page shows it; None is 'not recorded'."""

    index: int
    scene_id: str
    writer: str | None = None
    exit_reason: str | None = None
    ok: bool | None = None
    attempts: int | None = None
    history_attempts: int | None = None
    duration_s: float | None = None
    queue_wait_s: float | None = None
    started: float | None = None
    """Epoch seconds the scene entered the queue (else started executing)."""
    ended: float | None = None
    basis: str | None = None
    """'device', 'process', 'none' (CPU: the RAM columns are filled instead), None without telemetry."""
    device: str | None = None
    vram_before: int | None = None
    vram_after: int | None = None
    vram_peak: int | None = None
    vram_total: int | None = None
    ram_before: int | None = None
    ram_after: int | None = None
    ram_peak: int | None = None
    """The ComfyUI process's peak RSS (``System.RssPeakMB``, contract 1.1): the CPU's peak."""
    ram_total: int | None = None
    server: str | None = None
    server_detail: str | None = None
    """Instance id and device of the server, for the tooltip."""
    frames: int | None = None
    frame_bytes: int | None = None
    marker_source: str | None = None
    marker_path: Path | None = None
    marker_files: list[str] = field(default_factory=list)
    telemetry_path: Path | None = None
    exit_detail: str | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def on_cpu(self) -> bool:
        return self.basis == "none"


@dataclass
class RunView:
    """The run folder as read; :attr:`missing` says what could not be read, in words."""

    run_dir: Path
    kind: str
    metadata: Mapping[str, Any] | None
    scenes: list[SceneRow]
    missing: list[str] = field(default_factory=list)
    metadata_path: Path | None = None
    summary_path: Path | None = None


# --- small, type-checked accessors -----------------------------------------------------------------------------------


def as_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def as_float(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def as_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def as_map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def epoch(value: Any) -> float | None:
    """Epoch seconds of an ISO-8601 timestamp, None when absent or unparsable."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def server_label(scene: Mapping[str, Any]) -> str | None:
    """The farm server or instance of a scene, from whichever field records it."""
    for key in SERVER_KEYS:
        value = scene.get(key)
        if isinstance(value, str) and value:
            return value
        if isinstance(value, Mapping):
            for sub in SERVER_SUBKEYS:
                text = value.get(sub)
                if isinstance(text, str) and text:
                    return text
    return None


# --- reading ---------------------------------------------------------------------------------------------------------


def load_run(run_dir: str | os.PathLike[str], *, output_dir: str | os.PathLike[str] | None = None) -> RunView:
    """Read *run_dir*; raise :class:`NothingReadable` only when nothing in it can be reported on."""
    folder = Path(run_dir)
    if not folder.is_dir():
        raise NothingReadable("not a folder (or not readable)", path=folder)
    base = Path(output_dir) if output_dir is not None else None
    metadata_path, summary_path = folder / ARTIFACT_METADATA_NAME, folder / RUN_SUMMARY_NAME
    missing: list[str] = []
    metadata = _read_metadata(metadata_path, missing)
    if not _is_file(summary_path):
        missing.append(f"{RUN_SUMMARY_NAME}: file is missing")
    docs = _scene_documents(metadata, missing) if metadata is not None else _telemetry_files(folder, missing)
    scenes = [scene_row(i, doc, folder, base) for i, doc in enumerate(docs)]
    kind = _kind(metadata, scenes)
    lost = sum(1 for s in scenes if s.frames is not None and s.marker_path is None)
    if lost and base is None:
        missing.append(
            f"{lost} scene marker(s) not found below the run folder: for a headless run whose frames stayed in "
            "ComfyUI's output folder, pass --output-dir COMFYUI_OUTPUT"
        )
    if not scenes:
        scenes = _marker_rows(folder)
        kind = "markers only"
        if scenes:
            missing.append("no telemetry: durations, exit reasons and memory were not recorded for these scenes")
    if not scenes and metadata is None:
        reasons = "; ".join(missing) or "no files"
        raise NothingReadable(
            f"nothing to report: no readable {ARTIFACT_METADATA_NAME}, no <scene>.telemetry.json, no .done marker "
            f"({reasons})",
            path=folder,
        )
    return RunView(
        folder,
        kind,
        metadata,
        scenes,
        missing,
        metadata_path if metadata is not None else None,
        summary_path if _is_file(summary_path) else None,
    )


def _read_metadata(path: Path, missing: list[str]) -> Mapping[str, Any] | None:
    """The run's metadata object, or None after saying in *missing* why it cannot be used."""
    rows: list[CheckRow] = []
    document = read_json(path, rows)
    missing += [f"{r.field}: {r.message}" for r in rows if r.verdict == "error"]
    if isinstance(document, Mapping):
        return document
    if document is not UNREADABLE:
        missing.append(f"{ARTIFACT_METADATA_NAME}: not a JSON object")
    return None


def _kind(metadata: Mapping[str, Any] | None, scenes: list[SceneRow]) -> str:
    if metadata is None:
        return "telemetry files only"
    if len({s.server for s in scenes if s.server}) > 1:
        return "farm run"
    return "headless run" if metadata.get("Writer") == "runner" else "editor run"


def _scene_documents(metadata: Mapping[str, Any], missing: list[str]) -> list[Mapping[str, Any]]:
    scenes = metadata.get("Scenes")
    if not isinstance(scenes, list):
        missing.append(f"{ARTIFACT_METADATA_NAME}: Scenes is not a list")
        return []
    docs = [s for s in scenes if isinstance(s, Mapping) and isinstance(s.get("SceneId"), str)]
    if len(docs) != len(scenes):
        missing.append(f"{ARTIFACT_METADATA_NAME}: {len(scenes) - len(docs)} scene entry(ies) without a SceneId")
    if len(docs) > MAX_SCENE_FILES:  # a 7 MB list of 300,000 stub scenes made a 137 MB page in 22 s
        missing.append(
            f"{ARTIFACT_METADATA_NAME}: {len(docs):,} scenes listed; the page shows the first {MAX_SCENE_FILES:,} "
            "(the verdict covers them all)"
        )
        docs = docs[:MAX_SCENE_FILES]
    return docs


def _telemetry_files(folder: Path, missing: list[str]) -> list[Mapping[str, Any]]:
    """Scene documents from ``*.telemetry.json`` when the metadata cannot be used."""
    paths = sorted(folder.glob("*.telemetry.json"))[:MAX_SCENE_FILES]
    docs: list[Mapping[str, Any]] = []
    for path in paths:
        rows: list[CheckRow] = []
        document = read_json(path, rows)
        if isinstance(document, Mapping) and isinstance(document.get("SceneId"), str):
            docs.append(document)
        else:
            missing.append(f"{path.name}: " + ("; ".join(r.message for r in rows) or "not a scene document"))
    if paths:
        missing.append(f"scenes listed from {len(docs)} readable <scene>.telemetry.json file(s) instead")
    return docs


def scene_row(index: int, doc: Mapping[str, Any], folder: Path, output_dir: Path | None) -> SceneRow:
    """One scene document as a row (any field may be absent or of the wrong type)."""
    scene_id = str(doc["SceneId"])
    gpu, system = as_map(doc.get("GPU")), as_map(doc.get("System"))
    before, after = as_map(system.get("Before")), as_map(system.get("After"))
    exit_reason = as_str(doc.get("HistoryExitReason"))
    frames = doc.get("Frames")
    row = SceneRow(
        index=index,
        scene_id=scene_id,
        writer=as_str(doc.get("Writer")),
        exit_reason=exit_reason,
        ok=(exit_reason == "success") if exit_reason is not None else isinstance(frames, Mapping),
        attempts=as_int(doc.get("SceneAttempts")),
        history_attempts=as_int(doc.get("HistoryAttempts")),
        duration_s=as_float(doc.get("DurationSeconds")),
        queue_wait_s=_wait(doc),
        started=epoch(doc.get("QueueStart")) or epoch(doc.get("ExecutionStartedAt")),
        ended=epoch(doc.get("QueueEnd")) or epoch(doc.get("FramesDurableAt")),
        basis=as_str(gpu.get("VramBasis")),
        device=as_str(gpu.get("Name")),
        vram_before=as_int(gpu.get("VramBeforeMB")),
        vram_after=as_int(gpu.get("VramAfterMB")),
        vram_peak=as_int(gpu.get("VramPeakMB")),
        vram_total=as_int(gpu.get("VramTotal")),
        ram_before=as_int(before.get("RamUsedMB")),
        ram_after=as_int(after.get("RamUsedMB")),
        ram_peak=as_int(system.get("RssPeakMB")),
        ram_total=as_int(after.get("RamTotalMB")) or as_int(before.get("RamTotalMB")),
        server=server_label(doc),
        server_detail=" · ".join(t for t in (as_str(doc.get("ServerInstanceId")), as_str(doc.get("ServerDevice"))) if t)
        or None,
        exit_detail=as_str(doc.get("ExitDetail")),
        telemetry_path=_existing(folder / telemetry_file_name(scene_id)),
    )
    if isinstance(frames, Mapping):
        row.frames = as_int(frames.get("Count"))
        row.frame_bytes = as_int(frames.get("TotalBytes"))
        _attach_marker(row, folder, frames, output_dir)
    if doc.get("ForcedCopyTriggered") is True and row.marker_source is None:
        row.marker_source = "runner-forced"
    return row


def _wait(doc: Mapping[str, Any]) -> float | None:
    queued, started = epoch(doc.get("QueueStart")), epoch(doc.get("ExecutionStartedAt"))
    if queued is None or started is None:
        return None
    return round(max(0.0, started - queued), 3)


def _is_file(path: Path) -> bool:
    """``path.is_file()``, False where the OS refuses the name (too long, a NUL) instead of raising."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def _existing(path: Path) -> Path | None:
    return path if _is_file(path) else None


def _attach_marker(row: SceneRow, folder: Path, frames: Mapping[str, Any], output_dir: Path | None) -> None:
    try:
        candidates = marker_candidates(folder, frames, output_dir)
    except (ValueError, OSError) as exc:
        row.problems.append(f"marker location unusable: {exc}")
        return
    path = next((c for c in candidates if _is_file(c)), None)
    if path is None:
        row.problems.append(f"marker {as_str(frames.get('MarkerName')) or '?'} not found")
        return
    row.marker_path = path
    try:
        body = read_marker(path)
    except MarkerError as exc:
        row.problems.append(f"marker unreadable: {exc.message}")
        return
    row.marker_source = as_str(body.get("Source"))
    row.marker_files = [str(f["Name"]) for f in body.get("Files", []) if isinstance(f, Mapping) and "Name" in f]


def _marker_rows(folder: Path) -> list[SceneRow]:
    """One row per readable ``.done`` marker: a folder with frames and markers only."""
    paths: list[Path] = []
    for pattern in MARKER_GLOBS:
        paths += sorted(p for p in folder.glob(pattern) if _is_file(p))
        if len(paths) >= MAX_SCENE_FILES:
            break
    rows: list[SceneRow] = []
    for path in paths[:MAX_SCENE_FILES]:
        try:
            body = read_marker(path)
        except MarkerError as exc:
            logger.info("skipping %s: %s", path, exc)
            continue
        scene_id = as_str(body.get("SceneId")) or _marker_label(folder, path)
        files = [str(f["Name"]) for f in body.get("Files", []) if isinstance(f, Mapping) and "Name" in f]
        rows.append(
            SceneRow(
                index=len(rows),
                scene_id=scene_id,
                ok=True,
                frames=as_int(body.get("FrameCount")),
                frame_bytes=as_int(body.get("TotalBytes")),
                marker_source=as_str(body.get("Source")),
                marker_path=path,
                marker_files=files,
                started=epoch(body.get("CreatedAt")),
            )
        )
    return rows


def _marker_label(folder: Path, marker: Path) -> str:
    """``shot01/ComfyUI`` for ``RUN_DIR/shot01/ComfyUI.done``."""
    return marker.relative_to(folder).with_suffix("").as_posix()
