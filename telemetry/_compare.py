"""run-summary.txt against artifact-metadata.json, field by field.

Values are compared normalised by kind (units stripped, seconds within half a
millisecond, timestamps as instants whatever their UTC spelling). The metadata
may itself violate the contract: every lookup here tolerates a wrong shape and
reports it as a disagreement instead of raising.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ._meta import parse_iso
from ._report import CheckRow, Verdict, row
from ._summary import (
    MISSING,
    RUN_FIELDS,
    SCENE_FIELDS,
    SECONDS_TOLERANCE,
    Kind,
    ParsedSummary,
    SummaryField,
    SummaryScene,
    format_value,
    lookup,
    marker_status,
    parse_summary,
    parse_value,
)

FIELD_CHECKS: dict[str, str] = {
    "pollLimit": "poll-limit",
    "SceneRetryBudget": "retry-budget",
    "HistoryAttemptLimit": "queue-policy",
    "MaxWaitSeconds": "queue-policy",
    "PollIntervalSeconds": "queue-policy",
    "PostExecutionTimeoutSeconds": "queue-policy",
    "VramBeforeMB": "vram-before",
    "VramAfterMB": "vram-delta",
    "VramDeltaMB": "vram-delta",
}
"""Summary lines that belong to a named check; every other line is 'summary-field'."""

VRAM_KEYS: tuple[str, str, str] = ("VramBeforeMB", "VramAfterMB", "VramDeltaMB")


def compare_summary(summary_text: str, metadata: Any, *, file: str = "run-summary.txt") -> list[CheckRow]:
    """Every check between a summary text and a metadata document, as rows."""
    parsed = parse_summary(summary_text)
    rows = [row("summary-syntax", p.scene, f"line {p.line}", "fail", p.message, file=file) for p in parsed.problems]
    rows += field_rows(RUN_FIELDS, parsed.header, metadata, None, file)
    rows += unknown_key_rows(parsed.header, RUN_FIELDS, None, file)
    scenes = lookup(metadata, ("Scenes",))
    if not isinstance(scenes, list):
        return [*rows, row("scene-set", None, "Scenes", "fail", "metadata has no Scenes list", file=file)]
    rows += scene_set_rows(parsed, scenes, file)
    blocks = {block.scene_id: block for block in parsed.scenes}
    for scene in scenes:
        scene_id = scene.get("SceneId") if isinstance(scene, Mapping) else None
        if isinstance(scene_id, str) and scene_id in blocks:
            rows += scene_rows(blocks[scene_id], scene, file)
    return rows


def scene_set_rows(parsed: ParsedSummary, scenes: list[Any], file: str) -> list[CheckRow]:
    """Each metadata scene has exactly one summary block, and each block a metadata scene."""
    ids = [s.get("SceneId") for s in scenes if isinstance(s, Mapping)]
    written = Counter(block.scene_id for block in parsed.scenes)
    rows = []
    for scene_id in (i for i in ids if isinstance(i, str)):
        if scene_id in written:
            rows.append(row("scene-set", scene_id, "[scene]", "pass", "block present", file=file))
        else:
            rows.append(row("scene-set", scene_id, "[scene]", "fail", "no [scene …] block in the summary", file=file))
    for scene_id, count in written.items():
        if scene_id not in ids:
            message = "summary block for a scene the metadata does not list"
            rows.append(row("scene-set", scene_id, "[scene]", "fail", message, summary="present", file=file))
        elif count > 1:
            rows.append(row("scene-set", scene_id, "[scene]", "fail", f"block written {count} times", file=file))
    return rows


def scene_rows(block: SummaryScene, scene: Mapping[str, Any], file: str) -> list[CheckRow]:
    """One scene: every summary line against the metadata, plus the named consistency checks."""
    rows = field_rows(SCENE_FIELDS, block.values, scene, block.scene_id, file)
    rows += unknown_key_rows(block.values, SCENE_FIELDS, block.scene_id, file)
    rows.append(poll_limit_row(scene, block.scene_id, file))
    rows += vram_rows(block, scene, file)
    rows += warning_rows(block, scene, file)
    return rows


def field_rows(
    specs: tuple[SummaryField, ...], values: Mapping[str, str], document: Any, scene: str | None, file: str
) -> list[CheckRow]:
    """One row per summary line: present, readable, and equal to the metadata value."""
    rows = []
    for spec in specs:
        expected = _expected(spec, document)
        check = FIELD_CHECKS.get(spec.key, "summary-field") if scene is not None else "summary-field"
        shown = None if expected is MISSING else format_value(spec.kind, expected)
        raw = values.get(spec.key)
        verdict, message = _judge(spec.kind, raw, expected)
        written = raw.strip() if raw is not None else None
        rows.append(row(check, scene, spec.key, verdict, message, summary=written, metadata=shown, file=file))
    return rows


def _expected(spec: SummaryField, document: Any) -> Any:
    if spec.kind == "derived":
        return marker_status(document) if isinstance(document, Mapping) else MISSING
    return lookup(document, spec.path)


def _judge(kind: Kind, raw: str | None, expected: Any) -> tuple[Verdict, str]:
    if raw is None:
        return "fail", "line missing from the summary"
    readable, value = parse_value(kind, raw)
    if not readable:
        return "fail", f"unreadable value: {value}"
    if expected is MISSING:
        return "fail", "no such value in the metadata"
    if same_value(kind, value, expected):
        return "pass", ""
    return "fail", "summary and metadata disagree"


def same_value(kind: Kind, written: Any, expected: Any) -> bool:
    """A parsed summary value equals a metadata value, normalised by kind."""
    if written is None or expected is None:
        return written is None and expected is None
    if kind == "seconds":
        return is_number(expected) and abs(float(written) - float(expected)) <= SECONDS_TOLERANCE
    if kind == "timestamp":
        first = instant(written)
        return first is not None and first == instant(expected)
    if kind == "bool":
        return bool(written is expected)
    if kind in ("int", "mib", "delta_mib", "bytes"):
        return is_number(expected) and isinstance(expected, int) and written == expected
    return str(written).strip() == str(expected).strip()


def is_number(value: Any) -> bool:
    """A JSON number (bool excluded: ``True == 1`` in Python)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def instant(value: Any) -> datetime | None:
    """A timezone-aware datetime from an ISO-8601 string, else None."""
    if not isinstance(value, str):
        return None
    try:
        moment = parse_iso(value.strip())
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def unknown_key_rows(
    values: Mapping[str, str], specs: tuple[SummaryField, ...], scene: str | None, file: str
) -> list[CheckRow]:
    """Lines the format does not define are reported, never ignored."""
    known = {spec.key for spec in specs}
    message = "line not in the summary format"
    return [
        row("unknown-field", scene, key, "fail", message, summary=value.strip(), file=file)
        for key, value in values.items()
        if key not in known
    ]


def poll_limit_row(scene: Mapping[str, Any], scene_id: str, file: str) -> CheckRow:
    """PollLimit is HistoryAttemptLimit as text: 'unbounded' for 0, the number otherwise; both null together."""
    limit, attempts = scene.get("PollLimit"), scene.get("HistoryAttemptLimit")
    expected: Any = MISSING
    if limit is None and attempts is None:
        expected = None
    elif is_whole(attempts):
        expected = "unbounded" if attempts == 0 else str(attempts)
    shown = f"PollLimit {format_value('text', limit)}, HistoryAttemptLimit {format_value('int', attempts)}"
    if limit == expected:
        return row("poll-limit", scene_id, "PollLimit", "pass", "consistent", metadata=shown, file=file)
    message = "PollLimit does not spell HistoryAttemptLimit ('unbounded' for 0)"
    return row("poll-limit", scene_id, "PollLimit", "fail", message, metadata=shown, file=file)


def vram_rows(block: SummaryScene, scene: Mapping[str, Any], file: str) -> list[CheckRow]:
    """VramBeforeMB is present (or null for a reason), and VramDeltaMB = after − before on both sides."""
    gpu = scene.get("GPU")
    if not isinstance(gpu, Mapping):
        return [row("vram-delta", block.scene_id, "GPU", "fail", "metadata has no GPU object", file=file)]
    rows = [vram_before_row(gpu, block.scene_id, file)]
    rows.append(delta_row("metadata", [gpu.get(k) for k in VRAM_KEYS], block.scene_id, file))
    parsed = [parse_value("mib", block.values[k]) if k in block.values else (False, None) for k in VRAM_KEYS]
    if all(ok for ok, _ in parsed):
        rows.append(delta_row("summary", [value for _, value in parsed], block.scene_id, file))
    return rows


def vram_before_row(gpu: Mapping[str, Any], scene_id: str, file: str) -> CheckRow:
    before = gpu.get("VramBeforeMB")
    shown = format_value("mib", before)
    if is_whole(before):
        verdict: Verdict = "pass"
        message = "present"
    elif before is None and gpu.get("VramBasis") == "none":
        verdict, message = "pass", "null: no accelerator answered"
    elif before is None:
        verdict, message = "warn", "null: no usable 'before' GPU snapshot (see the fallback notes)"
    else:
        verdict, message = "fail", "not a whole number of MiB"
    return row("vram-before", scene_id, "VramBeforeMB", verdict, message, metadata=shown, file=file)


def delta_row(side: str, values: list[Any], scene_id: str, file: str) -> CheckRow:
    """VramDeltaMB is exactly VramAfterMB − VramBeforeMB, or null when either is null (*values*: VRAM_KEYS)."""
    before, after, delta = values
    expected: Any = MISSING
    if is_whole(before) and is_whole(after):
        expected = after - before
    elif before is None or after is None:
        expected = None
    ok = expected is not MISSING and (delta is None if expected is None else is_whole(delta) and delta == expected)
    arithmetic = f"{format_value('mib', after)} - {format_value('mib', before)}"
    text = f"VramDeltaMB {format_value('delta_mib', delta)}; {arithmetic}"
    message = f"{side}: delta = after - before" if ok else f"{side}: VramDeltaMB is not VramAfterMB - VramBeforeMB"
    verdict: Verdict = "pass" if ok else "fail"
    if side == "summary":
        return row("vram-delta", scene_id, "VramDeltaMB", verdict, message, summary=text, file=file)
    return row("vram-delta", scene_id, "VramDeltaMB", verdict, message, metadata=text, file=file)


def warning_rows(block: SummaryScene, scene: Mapping[str, Any], file: str) -> list[CheckRow]:
    """Every FallbackNotes entry has its own WARNING line, and every WARNING line its note."""
    scene_id = block.scene_id
    notes = lookup(scene, ("System", "FallbackNotes"))
    if not isinstance(notes, list):
        return [row("fallback-warnings", scene_id, "FallbackNotes", "fail", "metadata has no notes list", file=file)]
    rows = []
    unmatched = Counter(block.warnings)
    for index, note in enumerate(notes):
        text = note if isinstance(note, str) else json.dumps(note)
        field = f"FallbackNotes[{index}]"
        if unmatched[text] > 0:
            unmatched[text] -= 1
            rows.append(row("fallback-warnings", scene_id, field, "pass", "", summary=text, metadata=text, file=file))
        else:
            message = "no matching 'WARNING: fallback:' line in the summary"
            rows.append(row("fallback-warnings", scene_id, field, "fail", message, metadata=text, file=file))
    for warning in unmatched.elements():
        message = "summary warning with no matching FallbackNotes entry"
        rows.append(row("fallback-warnings", scene_id, "WARNING", "fail", message, summary=warning, file=file))
    if not rows:
        message = "no fallback notes, no warnings"
        rows.append(row("fallback-warnings", scene_id, "FallbackNotes", "pass", message, file=file))
    return rows
