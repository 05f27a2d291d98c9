"""``run-summary.txt``: a human rendering of ``artifact-metadata.json``, and its parser.

The JSON is the single source of truth; :func:`render_summary` derives the text
from it and nothing else, so the two can only disagree when one was edited or a
writer has a bug. :func:`parse_summary` reads the text back (also hand-edited or
legacy files) without raising, so the validator can compare it field by field.

Format (stable; documented in ``docs/run-summary.md``)::

    # scene-telemetry run summary (format 1)
    # Rendered from artifact-metadata.json, the source of truth: edit that, not this file.
    RunId=<run id>
    ...run-level key=value lines...

    [scene <SceneId>]
    PromptId=<prompt id or n/a>
    pollLimit=unbounded
    SceneRetryBudget=1
    VramBeforeMB=1234 MiB
    ...one key=value line per SCENE_FIELDS entry, in that order...
    WARNING: fallback: <one line per System.FallbackNotes entry>

``n/a`` stands for JSON null. Values are escaped (``\\\\``, ``\\n``, ``\\r``) so
every field stays on one line. Units follow the value after one space (``s``,
``MiB``, ``bytes``); the parser accepts a value with or without its unit.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

SUMMARY_FORMAT = 1
"""Bumped only when a line changes meaning; adding a line keeps it."""

TITLE_LINE = f"# scene-telemetry run summary (format {SUMMARY_FORMAT})"
SOURCE_LINE = "# Rendered from artifact-metadata.json, the source of truth: edit that, not this file."
NULL_TEXT = "n/a"
WARNING_PREFIX = "WARNING: fallback: "
SCENE_HEADER_RE = re.compile(r"^\[scene (?P<id>.*)\]$")
KEY_VALUE_RE = re.compile(r"^(?P<key>[A-Za-z][A-Za-z0-9]*)=(?P<value>.*)$")

SECONDS_DECIMALS = 3
"""Seconds are rendered to the millisecond; comparisons allow half of that unit."""
SECONDS_TOLERANCE = 0.5 * 10**-SECONDS_DECIMALS

Kind = Literal["text", "int", "seconds", "mib", "delta_mib", "bytes", "bool", "timestamp", "derived"]
UNITS: dict[str, str] = {"seconds": "s", "mib": "MiB", "delta_mib": "MiB", "bytes": "bytes"}


@dataclass(frozen=True)
class SummaryField:
    """One ``key=value`` line: its key, where the value lives in the JSON, how it is written."""

    key: str
    path: tuple[str, ...]
    kind: Kind


def _f(key: str, path: str, kind: Kind) -> SummaryField:
    return SummaryField(key, tuple(path.split(".")) if path else (), kind)


RUN_FIELDS: tuple[SummaryField, ...] = (
    _f("RunId", "RunId", "text"),
    _f("Writer", "Writer", "text"),
    _f("SchemaVersion", "SchemaVersion", "text"),
    _f("CreatedAt", "CreatedAt", "timestamp"),
    _f("SceneCount", "SceneCount", "int"),
    _f("PackageVersion", "Versions.Package", "text"),
    _f("ComfyUIVersion", "Versions.ComfyUI", "text"),
)
"""Run-level lines before the first scene block."""

SCENE_FIELDS: tuple[SummaryField, ...] = (
    _f("PromptId", "PromptId", "text"),
    _f("Writer", "Writer", "text"),
    _f("CreatedAt", "CreatedAt", "timestamp"),
    _f("QueueStart", "QueueStart", "timestamp"),
    _f("ExecutionStartedAt", "ExecutionStartedAt", "timestamp"),
    _f("FramesDurableAt", "FramesDurableAt", "timestamp"),
    _f("QueueEnd", "QueueEnd", "timestamp"),
    _f("DurationSeconds", "DurationSeconds", "seconds"),
    # Queue policy, as the seed runner wrote it (pollLimit keeps its historical spelling).
    _f("pollLimit", "PollLimit", "text"),
    _f("HistoryAttemptLimit", "HistoryAttemptLimit", "int"),
    _f("MaxWaitSeconds", "MaxWaitSeconds", "seconds"),
    _f("PollIntervalSeconds", "PollIntervalSeconds", "seconds"),
    _f("PostExecutionTimeoutSeconds", "PostExecutionTimeoutSeconds", "seconds"),
    _f("SceneRetryBudget", "SceneRetryBudget", "int"),
    # What a headless runner observed (n/a for an editor run).
    _f("SceneAttempts", "SceneAttempts", "int"),
    _f("HistoryAttempts", "HistoryAttempts", "int"),
    _f("HistoryExitReason", "HistoryExitReason", "text"),
    _f("ExecutionSuccessDetected", "ExecutionSuccessDetected", "bool"),
    _f("ExecutionSuccessAt", "ExecutionSuccessAt", "timestamp"),
    _f("HistoryPostExecutionTimeoutReached", "HistoryPostExecutionTimeoutReached", "bool"),
    _f("DoneMarkerDetected", "DoneMarkerDetected", "bool"),
    _f("DoneMarkerWaitSeconds", "DoneMarkerWaitSeconds", "seconds"),
    _f("ForcedCopyTriggered", "ForcedCopyTriggered", "bool"),
    _f("ExitDetail", "ExitDetail", "text"),
    # Device and memory.
    _f("GpuName", "GPU.Name", "text"),
    _f("GpuType", "GPU.Type", "text"),
    _f("GpuIndex", "GPU.Index", "int"),
    _f("GpuUuid", "GPU.Uuid", "text"),
    _f("GpuDriverVersion", "GPU.DriverVersion", "text"),
    _f("GpuSource", "GPU.Source", "text"),
    _f("VramBasis", "GPU.VramBasis", "text"),
    _f("VramTotal", "GPU.VramTotal", "mib"),
    _f("VramBeforeMB", "GPU.VramBeforeMB", "mib"),
    _f("VramAfterMB", "GPU.VramAfterMB", "mib"),
    _f("VramDeltaMB", "GPU.VramDeltaMB", "delta_mib"),
    _f("VramFreeBefore", "GPU.VramFreeBefore", "mib"),
    _f("VramFreeAfter", "GPU.VramFreeAfter", "mib"),
    _f("TorchPeakAllocatedMB", "GPU.TorchPeakAllocatedMB", "mib"),
    _f("TorchPeakReservedMB", "GPU.TorchPeakReservedMB", "mib"),
    _f("RamUsedBeforeMB", "System.Before.RamUsedMB", "mib"),
    _f("RamUsedAfterMB", "System.After.RamUsedMB", "mib"),
    # Outputs and their marker.
    _f("FrameCount", "Frames.Count", "int"),
    _f("FrameWidth", "Frames.Width", "int"),
    _f("FrameHeight", "Frames.Height", "int"),
    _f("TotalBytes", "Frames.TotalBytes", "bytes"),
    _f("Subfolder", "Frames.Subfolder", "text"),
    _f("MarkerName", "Frames.MarkerName", "text"),
    _f("MarkerStatus", "", "derived"),
)
"""Scene lines, in render order. Every path is relative to one ``Scenes[]`` entry."""

MISSING: Any = object()
"""Sentinel: the JSON has no value at a field's path (a null object on the way counts as null)."""


def lookup(document: Any, path: tuple[str, ...]) -> Any:
    """Value at *path*: None when an object on the way is null, MISSING when the shape is wrong."""
    value = document
    for part in path:
        if value is None:
            return None
        if not isinstance(value, Mapping) or part not in value:
            return MISSING
        value = value[part]
    return value


def marker_status(scene: Mapping[str, Any]) -> str:
    """One word for the marker: missing, forced, verified, not-detected or committed.

    ``committed``: the graph wrote it (editor run; nobody waited on it);
    ``verified``/``not-detected``: what a headless runner saw; ``forced``: the runner
    wrote a ``runner-forced`` marker after checking frame stability.
    """
    if scene.get("Frames") is None:
        return "missing"
    if scene.get("ForcedCopyTriggered") is True:
        return "forced"
    detected = scene.get("DoneMarkerDetected")
    if detected is True:
        return "verified"
    if detected is False:
        return "not-detected"
    return "committed"


def _number(value: float) -> str:
    text = f"{value:.{SECONDS_DECIMALS}f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def format_value(kind: Kind, value: Any) -> str:
    """Text of one value (the unit after one space); JSON null is ``n/a``."""
    if value is None or value is MISSING:
        return NULL_TEXT
    if kind == "bool":
        return "true" if value is True else "false" if value is False else escape(str(value))
    if kind == "seconds" and isinstance(value, (int, float)):
        return f"{_number(value)} s"
    if kind == "delta_mib" and isinstance(value, int):
        return f"{value:+d} MiB"
    if kind in UNITS and isinstance(value, (int, float)):
        return f"{value} {UNITS[kind]}"
    return escape(str(value))


def parse_value(kind: Kind, text: str) -> tuple[bool, Any]:
    """Inverse of :func:`format_value`: ``(True, value)``, or ``(False, reason)`` when unreadable."""
    text = unescape(text.strip())
    if text == NULL_TEXT:
        return True, None
    unit = UNITS.get(kind)
    if unit and text.endswith(f" {unit}"):
        text = text[: -len(unit) - 1].strip()
    if kind == "bool":
        return (True, text == "true") if text in ("true", "false") else (False, "expected true, false or n/a")
    if kind in ("int", "mib", "delta_mib", "bytes"):
        if re.fullmatch(r"[+-]?\d+", text):
            return True, int(text)
        return False, "expected a whole number" + (f" of {unit}" if unit else "")
    if kind == "seconds":
        try:
            number = float(text)
        except ValueError:
            return False, "expected a number of seconds"
        return (True, number) if math.isfinite(number) else (False, "expected a finite number of seconds")
    return True, text


def escape(text: str) -> str:
    """Keep a value on one line."""
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")


def unescape(text: str) -> str:
    """Inverse of :func:`escape`."""
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "r": "\r"}.get(m.group(1), m.group(1)), text)


def render_summary(metadata: Mapping[str, Any]) -> str:
    """Render a (contract-valid) artifact-metadata document as ``run-summary.txt`` text."""
    lines = [TITLE_LINE, SOURCE_LINE]
    lines += [f"{f.key}={format_value(f.kind, lookup(metadata, f.path))}" for f in RUN_FIELDS]
    lines += [server_line(server) for server in metadata.get("Servers") or []]
    for scene in metadata["Scenes"]:
        lines += ["", f"[scene {escape(str(scene['SceneId']))}]"]
        for spec in SCENE_FIELDS:
            value = marker_status(scene) if spec.kind == "derived" else lookup(scene, spec.path)
            lines.append(f"{spec.key}={format_value(spec.kind, value)}")
        lines += [f"{WARNING_PREFIX}{escape(note)}" for note in scene["System"]["FallbackNotes"]]
    return "\n".join(lines) + "\n"


def server_line(server: Mapping[str, Any]) -> str:
    """One ``# server …`` line of a farm run (``Servers``): a comment, so format-1 readers skip it."""
    device = f" ({escape(str(server['Device']))})" if server.get("Device") else ""
    where = f"# server {escape(str(server['InstanceId']))} {escape(str(server['Url']))}{device}: "
    if server.get("LeftOut"):
        return where + f"left out: {escape(str(server['LeftOut']))}"
    quarantined = f", quarantined {server['Quarantines']}x" if server.get("Quarantines") else ""
    return where + (
        f"{server['Scenes']} scene(s), {server['Failures']} failure(s), "
        f"{float(server['BusySeconds']):.{SECONDS_DECIMALS}f} s busy{quarantined}"
    )


@dataclass
class SummaryScene:
    """One ``[scene …]`` block as written: raw value texts by key, and its warning lines."""

    scene_id: str
    line: int
    values: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SummaryProblem:
    """A line the parser could not place (1-based line number)."""

    line: int
    scene: str | None
    message: str


@dataclass
class ParsedSummary:
    """Everything :func:`parse_summary` read; problems never raise."""

    header: dict[str, str] = field(default_factory=dict)
    scenes: list[SummaryScene] = field(default_factory=list)
    problems: list[SummaryProblem] = field(default_factory=list)


def parse_summary(text: str) -> ParsedSummary:
    """Read ``run-summary.txt`` text back into raw per-scene values; unplaceable lines become problems."""
    parsed = ParsedSummary()
    current: SummaryScene | None = None
    # Lines end at "\n" only, the one break :func:`escape` keeps out of values (with "\r" of a
    # CRLF file): str.splitlines would also split at U+2028, \x0c, \x85 … inside a value. Only
    # the "\r" goes: trailing spaces can be part of a value (a note like "OSError: ").
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.removesuffix("\r")
        if not line.strip() or line.startswith("#"):
            continue
        header = SCENE_HEADER_RE.match(line.rstrip())
        if header:
            current = SummaryScene(unescape(header.group("id")), number)
            parsed.scenes.append(current)
            continue
        scene_id = current.scene_id if current else None
        if line.startswith(WARNING_PREFIX):
            if current is None:
                parsed.problems.append(SummaryProblem(number, None, "warning line before the first [scene …] block"))
            else:
                current.warnings.append(unescape(line[len(WARNING_PREFIX) :]))
            continue
        match = KEY_VALUE_RE.match(line)
        if match is None:
            parsed.problems.append(SummaryProblem(number, scene_id, f"unreadable line: {line[:80]!r}"))
            continue
        target = current.values if current else parsed.header
        key = match.group("key")
        if key in target:
            parsed.problems.append(SummaryProblem(number, scene_id, f"duplicate line for {key}"))
            continue
        target[key] = match.group("value")
    return parsed
