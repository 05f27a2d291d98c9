"""RunSummaryValidator's engine: do a run folder's files agree with each other and the disk?

:func:`validate_run` never raises on bad input: every problem becomes a row of a
:class:`~._report.ValidationReport` (check, scene, field, summary value, metadata
value, verdict, message, file). Checks (``docs/run-summary.md`` lists them all):
files readable; both JSON documents valid against contract v1, unknown fields
reported; summary ↔ metadata per field (``_compare``); each scene's telemetry
file present and equal to its metadata entry; each marker present, owned by the
scene and matching Frames and the files on disk; timestamps in order.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._compare import compare_summary, instant, is_whole
from ._contract import DocumentKind, json_path, validator_for
from ._errors import MarkerError
from ._fast_contract import fast_accepts
from ._layout import ARTIFACT_METADATA_NAME, RUN_SUMMARY_NAME, telemetry_file_name
from ._marker import marker_mismatches, read_marker
from ._report import CheckRow, ValidationReport, Verdict, row, short
from ._safe_read import UNREADABLE, read_json, read_text

if TYPE_CHECKING:
    from jsonschema.exceptions import ValidationError

MAX_ROWS_PER_DOCUMENT = 50
"""Contract or difference rows reported per document: garbage must not produce a million rows."""

CLOCK_SKEW_TOLERANCE_S = 2.0
"""Slack for 'timestamps in order': a runner's clock and the server's may differ a little."""

TIMESTAMP_ORDER: tuple[str, ...] = ("QueueStart", "ExecutionStartedAt", "FramesDurableAt", "QueueEnd", "CreatedAt")
"""A scene's timestamps in the order they happen (nulls are skipped)."""
FORCED_TIMESTAMP_ORDER: tuple[str, ...] = (
    "QueueStart",
    "ExecutionStartedAt",
    "QueueEnd",
    "FramesDurableAt",
    "CreatedAt",
)
"""The order when ``ForcedCopyTriggered``: the runner writes its ``runner-forced`` marker after completion
(the marker wait, then the quiet period), so the frames are durable after ``QueueEnd`` by design."""

RUN_NOT_COMMITTED = (
    "file is missing: the run is not complete (not written yet, being re-written, or its writer stopped before "
    "committing it)"
)

SceneNamer = Callable[[list[Any]], "str | None"]


def validate_run(
    run_dir: str | os.PathLike[str], *, output_dir: str | os.PathLike[str] | None = None
) -> ValidationReport:
    """Check one run folder; *output_dir* (ComfyUI's) helps find markers of a headless run."""
    folder = Path(run_dir)
    report = ValidationReport(str(folder))
    if not folder.is_dir():
        report.rows.append(row("files", None, "RUN_DIR", "error", "not a folder", file=str(folder)))
        return report
    metadata_path, summary_path = folder / ARTIFACT_METADATA_NAME, folder / RUN_SUMMARY_NAME
    metadata = read_json(metadata_path, report.rows) if os.path.lexists(metadata_path) else _not_committed(report)
    summary = read_text(summary_path, report.rows)
    if metadata is UNREADABLE:
        return report
    scenes = _scene_list(metadata)
    report.rows += contract_rows(metadata, "artifact-metadata", str(metadata_path), _scene_namer(scenes))
    report.rows.append(_scene_count_row(metadata, scenes, str(metadata_path)))
    if summary is not None:
        report.rows += compare_summary(summary, metadata, file=str(summary_path))
    base = Path(output_dir) if output_dir is not None else None
    run_created = metadata.get("CreatedAt") if isinstance(metadata, Mapping) else None
    for scene in scenes:
        if isinstance(scene, Mapping) and isinstance(scene.get("SceneId"), str):
            report.rows += telemetry_rows(folder, scene)
            report.rows += marker_rows(folder, scene, base)
            report.rows += timestamp_rows(scene, run_created)
    return report


def _not_committed(report: ValidationReport) -> Any:
    """No artifact-metadata.json: the commit point of a run folder (``_runset``) is absent."""
    path = Path(report.run_dir) / ARTIFACT_METADATA_NAME
    report.rows.append(row("files", None, path.name, "error", RUN_NOT_COMMITTED, file=str(path)))
    return UNREADABLE


def validate_metadata_file(path: str | os.PathLike[str]) -> list[CheckRow]:
    """Read one ``artifact-metadata.json`` safely and check it against contract v1 (no summary, no disk)."""
    rows: list[CheckRow] = []
    document = read_json(Path(path), rows)
    if document is UNREADABLE:
        return rows
    return rows + contract_rows(document, "artifact-metadata", str(path), _scene_namer(_scene_list(document)))


def _scene_list(metadata: Any) -> list[Any]:
    scenes = metadata.get("Scenes") if isinstance(metadata, Mapping) else None
    return scenes if isinstance(scenes, list) else []


def _scene_namer(scenes: list[Any]) -> SceneNamer:
    """Map a JSON path like ['Scenes', 0, 'GPU'] to that scene's SceneId (row labels)."""

    def name(parts: list[Any]) -> str | None:
        if len(parts) < 2 or parts[0] != "Scenes" or not isinstance(parts[1], int) or parts[1] >= len(scenes):
            return None
        scene = scenes[parts[1]]
        scene_id = scene.get("SceneId") if isinstance(scene, Mapping) else None
        return scene_id if isinstance(scene_id, str) else f"Scenes[{parts[1]}]"

    return name


def _scene_count_row(metadata: Any, scenes: list[Any], file: str) -> CheckRow:
    count = metadata.get("SceneCount") if isinstance(metadata, Mapping) else None
    shown = f"SceneCount {_dump(count)}, {len(scenes)} scene(s)"
    if is_whole(count) and count == len(scenes):
        return row("scene-set", None, "SceneCount", "pass", "equals len(Scenes)", metadata=shown, file=file)
    return row("scene-set", None, "SceneCount", "fail", "SceneCount is not len(Scenes)", metadata=shown, file=file)


# --- contract ------------------------------------------------------------------------------------------------------


def contract_rows(document: Any, kind: DocumentKind, file: str, scene_of: SceneNamer | None = None) -> list[CheckRow]:
    """One row per contract violation (unknown fields as 'unknown-field'), or one pass row.

    jsonschema (``validator_for``) writes the rows; it runs only when the compiled check does not accept.
    """
    rows: list[CheckRow] = []
    accepted = fast_accepts(document, kind)
    errors: Iterable[ValidationError] = () if accepted else validator_for(kind).iter_errors(document)
    for top in errors:
        for error in _leaf_errors(top):
            rows += _error_rows(error, file, scene_of)
        if len(rows) >= MAX_ROWS_PER_DOCUMENT:
            rows.append(row("contract", None, "…", "fail", "further violations not listed", file=file))
            break
    return rows or [row("contract", None, "<document>", "pass", f"valid {kind} (contract v1)", file=file)]


def _leaf_errors(error: ValidationError) -> Iterator[ValidationError]:
    """Descend into oneOf/anyOf so that an unknown field inside ``Frames`` is reported as one.

    A branch that failed only on its ``type`` is the wrong branch (``null`` for an
    object): report the errors of the branches of the right type instead.
    """
    if error.validator in ("oneOf", "anyOf") and error.context:
        relevant = [e for e in error.context if e.validator != "type"]
        if relevant:
            for sub in relevant:
                yield from _leaf_errors(sub)
            return
    yield error


def _error_rows(error: ValidationError, file: str, scene_of: SceneNamer | None) -> list[CheckRow]:
    parts = list(error.absolute_path)
    scene = scene_of(parts) if scene_of else None
    path = json_path(parts)
    if error.validator == "additionalProperties" and isinstance(error.instance, Mapping):
        known = set(error.schema.get("properties", {}))
        prefix = "" if path == "<root>" else f"{path}."
        return [
            row(
                "unknown-field",
                scene,
                f"{prefix}{key}",
                "fail",
                "field not in contract v1",
                metadata=short(_dump(error.instance[key])),
                file=file,
            )
            for key in sorted(set(error.instance) - known)
        ]
    value = short(_dump(error.instance))
    return [row("contract", scene, path, "fail", short(error.message, 200) or "", metadata=value, file=file)]


def _dump(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


def _exists(path: Path) -> bool:
    """``path.exists()``, False where the OS refuses the name (too long, a NUL) instead of raising."""
    try:
        return path.exists()
    except (OSError, ValueError):
        return False


# --- telemetry files -----------------------------------------------------------------------------------------------


def telemetry_rows(run_dir: Path, scene: Mapping[str, Any]) -> list[CheckRow]:
    """The scene's telemetry file exists, is contract-valid and equals its metadata entry."""
    scene_id = str(scene["SceneId"])
    path = run_dir / telemetry_file_name(scene_id)
    if not _exists(path):
        return [row("telemetry-file", scene_id, path.name, "fail", "telemetry file is missing", file=str(path))]
    rows: list[CheckRow] = []
    document = read_json(path, rows, check="telemetry-file", scene=scene_id)
    if document is UNREADABLE:
        return rows
    rows += [_for_scene(r, scene_id) for r in contract_rows(document, "scene-telemetry", str(path))]
    differences = _differences(document, scene)
    for where, in_file, in_metadata in differences[:MAX_ROWS_PER_DOCUMENT]:
        rows.append(
            row(
                "telemetry-file",
                scene_id,
                where,
                "fail",
                "telemetry file and metadata disagree",
                summary=short(in_file),
                metadata=short(in_metadata),
                file=str(path),
                labels=("telemetry", "metadata"),
            )
        )
    if not differences:
        rows.append(row("telemetry-file", scene_id, path.name, "pass", "equals the metadata entry", file=str(path)))
    return rows


def _for_scene(r: CheckRow, scene_id: str) -> CheckRow:
    return CheckRow(r.check, scene_id, r.field, r.verdict, r.message, r.summary, r.metadata, r.file)


_ABSENT: Any = object()


def _differences(left: Any, right: Any, path: str = "") -> list[tuple[str, str, str]]:
    """Leaf paths where two JSON values differ (type-strict: 1 ≠ 1.0 ≠ true)."""
    if isinstance(left, Mapping) and isinstance(right, Mapping):
        found: list[tuple[str, str, str]] = []
        for key in sorted(set(left) | set(right)):
            sub = f"{path}.{key}" if path else str(key)
            found += _differences(left.get(key, _ABSENT), right.get(key, _ABSENT), sub)
        return found
    if type(left) is type(right) and left == right:
        return []
    return [(path or "<document>", _show(left), _show(right))]


def _show(value: Any) -> str:
    return "(absent)" if value is _ABSENT else _dump(value)


# --- markers -------------------------------------------------------------------------------------------------------


def marker_candidates(run_dir: Path, frames: Mapping[str, Any], output_dir: Path | None = None) -> list[Path]:
    """Where a scene's marker may lie, most specific first.

    ``<output_dir>/<Subfolder>/<MarkerName>`` when ComfyUI's output directory is
    given, then ``<run_dir>/<tail of Subfolder>/<MarkerName>`` for every tail of
    Subfolder: whole, without its first part, …, empty. An editor run's folder
    holds its marker directly; a headless run folder may hold each scene below
    it. Candidates that leave their base folder are never considered.
    """
    parts = [p for p in str(frames.get("Subfolder", "")).split("/") if p]
    name = str(frames.get("MarkerName", ""))
    bases: list[tuple[Path, list[str]]] = [(output_dir, parts)] if output_dir is not None else []
    bases += [(run_dir, parts[i:]) for i in range(len(parts) + 1)]
    found: list[Path] = []
    for base, tail in bases:
        candidate = base.joinpath(*tail, name)
        root = os.path.abspath(base)
        if os.path.commonpath([root, os.path.abspath(candidate)]) == root and candidate not in found:
            found.append(candidate)
    return found


def _present(path: Path) -> bool:
    """Something other than a folder is at *path* (a FIFO marker is a row too)."""
    return _exists(path) and not path.is_dir()


def marker_rows(run_dir: Path, scene: Mapping[str, Any], output_dir: Path | None = None) -> list[CheckRow]:
    """The scene's marker exists, is valid, belongs to the scene, and matches Frames and the disk."""
    scene_id = str(scene["SceneId"])
    frames = scene.get("Frames")
    if not isinstance(frames, Mapping):
        return [row("marker", scene_id, "Frames", "skip", "Frames is null: the scene produced no marker")]
    candidates = marker_candidates(run_dir, frames, output_dir)
    path = next((c for c in candidates if _present(c)), None)  # a FIFO marker is a row too
    if path is None:
        tried = ", ".join(str(c) for c in candidates[:4])
        return [row("marker", scene_id, "Frames.MarkerName", "fail", f"marker not found (looked for {tried})")]
    try:
        body = read_marker(path)
    except MarkerError as exc:
        return [row("marker", scene_id, "Frames.MarkerName", "fail", exc.message, file=str(path))]
    return _marker_body_rows(path, body, scene_id, scene, frames)


def _marker_body_rows(
    path: Path, body: Mapping[str, Any], scene_id: str, scene: Mapping[str, Any], frames: Mapping[str, Any]
) -> list[CheckRow]:
    listed = body["Files"]
    pairs: list[tuple[str, Any, Any, bool]] = [
        ("SceneId", body["SceneId"], scene_id, body["SceneId"] is None),
        ("PromptId", body["PromptId"], scene.get("PromptId"), None in (body["PromptId"], scene.get("PromptId"))),
        ("FrameCount", len(listed), frames.get("Count"), False),
        ("TotalBytes", sum(f["Bytes"] for f in listed), frames.get("TotalBytes"), False),
        ("Width", body["Width"], frames.get("Width"), False),
        ("Height", body["Height"], frames.get("Height"), False),
    ]
    rows = []
    for name, in_marker, in_scene, unknown in pairs:
        same = unknown or (type(in_marker) is type(in_scene) and in_marker == in_scene)
        verdict: Verdict = "pass" if same else "fail"
        message = "" if same else "marker and scene telemetry disagree"
        rows.append(
            row(
                "marker",
                scene_id,
                f"marker.{name}",
                verdict,
                message,
                summary=_dump(in_marker),
                metadata=_dump(in_scene),
                file=str(path),
                labels=("marker", "scene"),
            )
        )
    problems = marker_mismatches(path, body)
    for problem in problems[:MAX_ROWS_PER_DOCUMENT]:
        rows.append(row("marker", scene_id, "marker.Files", "fail", f"on disk: {problem}", file=str(path)))
    if not problems:
        message = f"{len(listed)} listed file(s) on disk with the listed sizes"
        rows.append(row("marker", scene_id, "marker.Files", "pass", message, file=str(path)))
    return rows


# --- timestamps ----------------------------------------------------------------------------------------------------


def timestamp_rows(scene: Mapping[str, Any], run_created_at: Any) -> list[CheckRow]:
    """QueueStart ≤ ExecutionStartedAt ≤ FramesDurableAt ≤ QueueEnd ≤ CreatedAt ≤ run CreatedAt.

    A scene whose marker the runner forced (``ForcedCopyTriggered`` true) has
    FramesDurableAt after QueueEnd instead (:data:`FORCED_TIMESTAMP_ORDER`).
    ExecutionSuccessAt (a runner's) must lie between ExecutionStartedAt and QueueEnd.
    Null timestamps are skipped; :data:`CLOCK_SKEW_TOLERANCE_S` of slack is allowed.
    """
    scene_id = str(scene["SceneId"])
    order = FORCED_TIMESTAMP_ORDER if scene.get("ForcedCopyTriggered") is True else TIMESTAMP_ORDER
    chain = [(name, instant(scene.get(name))) for name in order]
    chain.append(("run CreatedAt", instant(run_created_at)))
    known = [(name, moment) for name, moment in chain if moment is not None]
    pairs = list(zip(known, known[1:], strict=False))
    success = instant(scene.get("ExecutionSuccessAt"))
    started, ended = instant(scene.get("ExecutionStartedAt")), instant(scene.get("QueueEnd"))
    if success is not None and started is not None:
        pairs.append((("ExecutionStartedAt", started), ("ExecutionSuccessAt", success)))
    if success is not None and ended is not None:
        pairs.append((("ExecutionSuccessAt", success), ("QueueEnd", ended)))
    rows = []
    for (first, at_first), (second, at_second) in pairs:
        in_order = (at_first - at_second).total_seconds() <= CLOCK_SKEW_TOLERANCE_S
        shown = f"{at_first.isoformat()} then {at_second.isoformat()}"
        verdict: Verdict = "pass" if in_order else "fail"
        message = "in order" if in_order else f"{first} is later than {second}"
        rows.append(row("timestamps", scene_id, f"{first} <= {second}", verdict, message, metadata=shown))
    return rows
