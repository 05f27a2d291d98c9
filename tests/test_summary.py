"""run-summary.txt: rendered from the JSON only, stable, and read back without raising."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from run_factory import NOTES, make_run
from scene_telemetry.telemetry import parse_summary, render_summary
from scene_telemetry.telemetry._compare import compare_summary
from scene_telemetry.telemetry._summary import (
    NULL_TEXT,
    SCENE_FIELDS,
    TITLE_LINE,
    format_value,
    marker_status,
    parse_value,
)


@pytest.fixture
def metadata(output_dir: Path) -> dict[str, Any]:
    """A real collector run's artifact-metadata document."""
    return make_run(output_dir).metadata()


def scene_block(text: str) -> list[str]:
    lines = text.splitlines()
    return lines[lines.index("[scene s01]") + 1 :]


def test_one_block_with_seed_style_policy_vram_and_warnings(metadata: dict[str, Any]) -> None:
    text = render_summary(metadata)
    assert text.splitlines()[0] == TITLE_LINE
    block = scene_block(text)
    for line in (
        "pollLimit=unbounded",
        "SceneRetryBudget=1",
        "MaxWaitSeconds=600 s",
        "VramBeforeMB=1000 MiB",
        "VramAfterMB=3000 MiB",
        "VramDeltaMB=+2000 MiB",
        "MarkerStatus=committed",
        "FrameCount=3",
    ):
        assert line in block
    assert block[-len(NOTES) :] == [f"WARNING: fallback: {note}" for note in NOTES]
    keys = [line.split("=", 1)[0] for line in block if not line.startswith("WARNING")]
    assert keys == [spec.key for spec in SCENE_FIELDS]


def test_rendering_is_a_pure_function_of_the_json(metadata: dict[str, Any]) -> None:
    assert render_summary(metadata) == render_summary(copy.deepcopy(metadata))
    changed = copy.deepcopy(metadata)
    changed["Scenes"][0]["GPU"]["VramAfterMB"] = 900
    changed["Scenes"][0]["GPU"]["VramDeltaMB"] = -100
    assert "VramDeltaMB=-100 MiB" in scene_block(render_summary(changed))


def test_round_trip_has_no_disagreement(metadata: dict[str, Any]) -> None:
    rows = compare_summary(render_summary(metadata), metadata)
    assert rows and all(r.verdict == "pass" for r in rows)


def test_editor_run_without_policy_writes_na(output_dir: Path) -> None:
    block = scene_block(render_summary(make_run(output_dir, policy=None, notes=()).metadata()))
    assert "pollLimit=n/a" in block and "SceneRetryBudget=n/a" in block
    assert not [line for line in block if line.startswith("WARNING")]


def test_one_block_per_scene_and_escaped_values(metadata: dict[str, Any]) -> None:
    second = copy.deepcopy(metadata["Scenes"][0])
    second.update(SceneId="two\nlines]", ExitDetail="RuntimeError: a\\b\nnode 7")
    second["System"]["FallbackNotes"] = ["torch: line one\nline two"]
    metadata["Scenes"].append(second)
    metadata["SceneCount"] = 2
    text = render_summary(metadata)
    assert "[scene two\\nlines]]" in text.splitlines()
    assert "ExitDetail=RuntimeError: a\\\\b\\nnode 7" in text.splitlines()
    parsed = parse_summary(text)
    assert [s.scene_id for s in parsed.scenes] == ["s01", "two\nlines]"]
    assert parsed.scenes[1].warnings == ["torch: line one\nline two"]
    assert parsed.problems == []
    assert all(r.verdict == "pass" for r in compare_summary(text, metadata))


@pytest.mark.parametrize(
    ("scene_id", "note"),
    [
        ("line\u2028separator", "nvml: RuntimeError: "),  # an exception without a message leaves a trailing space
        ("form\x0cfeed", "torch: a\x85b"),
        ("group\x1dseparator", "amdsmi: tab at the end\t"),
    ],
)
def test_collector_writes_values_str_splitlines_would_break(output_dir: Path, scene_id: str, note: str) -> None:
    # write_run refuses a summary that does not round-trip, so before the fix these runs wrote nothing.
    run = make_run(output_dir, scene_id=scene_id, notes=(note,))
    text = run.summary_path.read_text("utf-8")
    parsed = parse_summary(text)
    assert parsed.problems == []
    assert [s.scene_id for s in parsed.scenes] == [scene_id]
    assert parsed.scenes[0].warnings == [note]
    assert all(r.verdict == "pass" for r in compare_summary(text, run.metadata()))


def test_parser_tolerates_crlf_and_trailing_blanks_after_a_header() -> None:
    parsed = parse_summary("RunId=x\r\n[scene a]  \r\nPromptId=1 \r\nWARNING: fallback: n\r\n")
    assert parsed.problems == []
    assert parsed.header == {"RunId": "x"}
    assert (parsed.scenes[0].scene_id, parsed.scenes[0].warnings) == ("a", ["n"])
    assert parse_value("text", parsed.scenes[0].values["PromptId"]) == (True, "1")


@pytest.mark.parametrize(
    ("kind", "value", "text"),
    [
        ("seconds", 12.3456, "12.346 s"),
        ("seconds", 600.0, "600 s"),
        ("seconds", None, NULL_TEXT),
        ("mib", 81559, "81559 MiB"),
        ("delta_mib", 0, "+0 MiB"),
        ("delta_mib", -12, "-12 MiB"),
        ("bytes", 1092, "1092 bytes"),
        ("bool", True, "true"),
        ("bool", False, "false"),
        ("int", 0, "0"),
        ("text", "a=b", "a=b"),
    ],
)
def test_format_and_parse_values(kind: Any, value: Any, text: str) -> None:
    assert format_value(kind, value) == text
    ok, parsed = parse_value(kind, text)
    assert ok
    assert parsed == (round(value, 3) if kind == "seconds" and value is not None else value)


@pytest.mark.parametrize(
    ("kind", "text", "reason"),
    [
        ("mib", "12.5 MiB", "expected a whole number of MiB"),
        ("bool", "yes", "expected true, false or n/a"),
        ("seconds", "soon", "expected a number of seconds"),
        ("seconds", "inf", "expected a finite number of seconds"),
    ],
)
def test_unreadable_values(kind: Any, text: str, reason: str) -> None:
    assert parse_value(kind, text) == (False, reason)


def test_values_without_units_are_accepted() -> None:
    assert parse_value("mib", "1000") == (True, 1000)
    assert parse_value("seconds", " 2.5 ") == (True, 2.5)


def test_parser_reports_what_it_cannot_place() -> None:
    text = "RunId=x\nWARNING: fallback: early\n[scene a]\nPromptId=1\nPromptId=2\n!!! junk\n\n# comment\n"
    parsed = parse_summary(text)
    assert parsed.header == {"RunId": "x"}
    assert parsed.scenes[0].values == {"PromptId": "1"}
    assert [(p.line, p.scene, p.message) for p in parsed.problems] == [
        (2, None, "warning line before the first [scene …] block"),
        (5, "a", "duplicate line for PromptId"),
        (6, "a", "unreadable line: '!!! junk'"),
    ]


@pytest.mark.parametrize(
    ("fields", "status"),
    [
        ({"Frames": None}, "missing"),
        ({"Frames": {}, "ForcedCopyTriggered": True, "DoneMarkerDetected": True}, "forced"),
        ({"Frames": {}, "DoneMarkerDetected": True}, "verified"),
        ({"Frames": {}, "DoneMarkerDetected": False}, "not-detected"),
        ({"Frames": {}, "DoneMarkerDetected": None}, "committed"),
    ],
)
def test_marker_status(fields: dict[str, Any], status: str) -> None:
    assert marker_status(fields) == status
