"""validate_run: one purpose-built bad pair per check, each failing for its own reason; bad inputs never raise."""

from __future__ import annotations

import codecs
import copy
import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from referencing import Registry, Resource
from run_factory import NOTES, Run, edited, make_run, replace_line, write_pair
from scene_telemetry.telemetry import validate_run
from scene_telemetry.telemetry._contract import (
    DOCUMENT_KINDS,
    SCHEMA_FILES,
    DocumentKind,
    _inline,
    load_schema,
    validator_for,
)
from scene_telemetry.telemetry._report import ValidationReport
from scene_telemetry.telemetry._safe_read import MAX_INPUT_BYTES
from scene_telemetry.telemetry._validate import validate_metadata_file


@pytest.fixture
def run(output_dir: Path) -> Run:
    """A good editor run (collector output, two fallback notes, seed-default policy)."""
    return make_run(output_dir)


def failing(report: ValidationReport) -> set[tuple[str, str]]:
    """(check, field) of every failed or unreadable row."""
    return {(r.check, r.field) for r in report.failures}


def rows_of(report: ValidationReport, check: str) -> list[tuple[str, str]]:
    return [(r.field, r.verdict) for r in report.rows if r.check == check]


# --- the good pair ---------------------------------------------------------------------------------------------------


def test_good_pair_passes_every_check(run: Run) -> None:
    report = validate_run(run.run_dir)
    assert report.ok, report.render_text(problems_only=True)
    assert report.counts()["warn"] == 0
    checks = {r.check for r in report.rows}
    for check in ("contract", "telemetry-file", "poll-limit", "retry-budget", "queue-policy", "vram-before",
                  "vram-delta", "fallback-warnings", "marker", "timestamps", "scene-set", "summary-field"):  # fmt: skip
        assert check in checks, check
    assert ("marker.Files", "pass") in rows_of(report, "marker")


def test_check_5_passes_when_warnings_and_metadata_agree(run: Run) -> None:
    report = validate_run(run.run_dir)
    rows = [r for r in report.rows if r.check == "fallback-warnings"]
    assert [(r.field, r.verdict, r.summary) for r in rows] == [
        (f"FallbackNotes[{i}]", "pass", note) for i, note in enumerate(NOTES)
    ]


# --- one bad pair per check ------------------------------------------------------------------------------------------


def test_check_1_2_missing_telemetry_fails(run: Run) -> None:
    assert ("s01.telemetry.json", "pass") in rows_of(validate_run(run.run_dir), "telemetry-file")
    run.telemetry_path.unlink()
    report = validate_run(run.run_dir)
    assert failing(report) == {("telemetry-file", "s01.telemetry.json")}
    assert not report.unreadable


def test_telemetry_file_that_disagrees_with_metadata_fails(run: Run) -> None:
    scene = json.loads(run.telemetry_path.read_text("utf-8"))
    scene["GPU"]["VramAfterMB"] += 1
    run.telemetry_path.write_text(json.dumps(scene), "utf-8")
    assert failing(validate_run(run.run_dir)) == {("telemetry-file", "GPU.VramAfterMB")}


def test_check_3_poll_limit_text_must_match(run: Run) -> None:
    run.summary_path.write_text(replace_line(run.summary(), "pollLimit=unbounded", "pollLimit=5"), "utf-8")
    report = validate_run(run.run_dir)
    assert failing(report) == {("poll-limit", "pollLimit")}
    (bad,) = report.failures
    assert (bad.summary, bad.metadata, bad.scene) == ("5", "unbounded", "s01")


def test_poll_limit_must_spell_the_attempt_limit_in_metadata(run: Run) -> None:
    write_pair(run, edited(run.metadata(), PollLimit="7", HistoryAttemptLimit=0))
    assert failing(validate_run(run.run_dir)) == {("poll-limit", "PollLimit")}


def test_check_4_every_fallback_note_needs_its_warning_line(run: Run) -> None:
    text = replace_line(run.summary(), f"WARNING: fallback: {NOTES[1]}", None)
    run.summary_path.write_text(text, "utf-8")
    report = validate_run(run.run_dir)
    assert failing(report) == {("fallback-warnings", "FallbackNotes[1]")}


def test_check_4_a_warning_without_its_note_fails(run: Run) -> None:
    run.summary_path.write_text(run.summary() + "WARNING: fallback: torch: made up\n", "utf-8")
    report = validate_run(run.run_dir)
    assert failing(report) == {("fallback-warnings", "WARNING")}
    assert report.failures[0].summary == "torch: made up"


def test_check_6_scene_retry_budget_text_must_match(run: Run) -> None:
    run.summary_path.write_text(replace_line(run.summary(), "SceneRetryBudget=1", "SceneRetryBudget=2"), "utf-8")
    assert failing(validate_run(run.run_dir)) == {("retry-budget", "SceneRetryBudget")}


def test_check_7_vram_before_line_must_be_present(run: Run) -> None:
    run.summary_path.write_text(replace_line(run.summary(), "VramBeforeMB=1000 MiB", None), "utf-8")
    report = validate_run(run.run_dir)
    assert failing(report) == {("vram-before", "VramBeforeMB")}
    assert report.failures[0].message == "line missing from the summary"


def test_check_7_null_vram_before_on_a_gpu_is_a_warning(run: Run) -> None:
    metadata = run.metadata()
    gpu = metadata["Scenes"][0]["GPU"]
    gpu.update(VramBeforeMB=None, VramFreeBefore=None, VramDeltaMB=None)
    write_pair(run, metadata)
    report = validate_run(run.run_dir)
    assert report.ok
    assert ("VramBeforeMB", "warn") in rows_of(report, "vram-before")


def test_check_8_vram_delta_must_equal_after_minus_before(run: Run) -> None:
    metadata = run.metadata()
    metadata["Scenes"][0]["GPU"]["VramDeltaMB"] = 1999  # after 3000 - before 1000 = 2000
    write_pair(run, metadata)
    report = validate_run(run.run_dir)
    assert failing(report) == {("vram-delta", "VramDeltaMB")}
    assert {r.message for r in report.failures} == {
        "metadata: VramDeltaMB is not VramAfterMB - VramBeforeMB",
        "summary: VramDeltaMB is not VramAfterMB - VramBeforeMB",
    }


def test_check_8_tampered_summary_after_value(run: Run) -> None:
    run.summary_path.write_text(replace_line(run.summary(), "VramAfterMB=3000 MiB", "VramAfterMB=2500 MiB"), "utf-8")
    report = validate_run(run.run_dir)
    assert failing(report) == {("vram-delta", "VramAfterMB"), ("vram-delta", "VramDeltaMB")}


@pytest.mark.parametrize(
    ("line", "tampered", "field"),
    [
        ("MaxWaitSeconds=600 s", "MaxWaitSeconds=900 s", "MaxWaitSeconds"),
        ("PollIntervalSeconds=2 s", "PollIntervalSeconds=2.5", "PollIntervalSeconds"),
        ("PostExecutionTimeoutSeconds=30 s", "PostExecutionTimeoutSeconds=n/a", "PostExecutionTimeoutSeconds"),
        ("HistoryAttemptLimit=0", "HistoryAttemptLimit=3", "HistoryAttemptLimit"),
    ],
)
def test_check_9_queue_policy_values_must_match(run: Run, line: str, tampered: str, field: str) -> None:
    run.summary_path.write_text(replace_line(run.summary(), line, tampered), "utf-8")
    assert failing(validate_run(run.run_dir)) == {("queue-policy", field)}


def test_values_are_compared_normalised(run: Run) -> None:
    text = replace_line(run.summary(), "MaxWaitSeconds=600 s", "MaxWaitSeconds=600.0000")
    created = run.scene["CreatedAt"]
    # The run and the scene may share the same millisecond: rewrite every such line.
    text = text.replace(f"CreatedAt={created}\n", f"CreatedAt={created.replace('Z', '+00:00')}\n")
    assert f"CreatedAt={created.replace('Z', '+00:00')}" in text
    run.summary_path.write_text(text, "utf-8")
    assert validate_run(run.run_dir).ok


def test_schema_violating_metadata_is_reported_per_field(run: Run) -> None:
    metadata = edited(run.metadata(), DurationSeconds=-3)
    write_pair(run, metadata)
    report = validate_run(run.run_dir)
    contract = {(r.field, r.file and Path(r.file).name) for r in report.failures if r.check == "contract"}
    assert contract == {
        ("Scenes[0].DurationSeconds", "artifact-metadata.json"),
        ("DurationSeconds", "s01.telemetry.json"),
    }
    assert all(r.scene == "s01" for r in report.failures)


def test_wrong_types_in_metadata_never_raise(run: Run) -> None:
    metadata = run.metadata()
    metadata["Scenes"][0]["GPU"].update(VramBeforeMB="lots", VramAfterMB=True)
    metadata["Scenes"][0]["System"]["FallbackNotes"] = "nvml: gone"
    metadata["Scenes"][0]["Frames"] = {"Subfolder": 7}
    write_pair(run, metadata)
    report = validate_run(run.run_dir)
    assert not report.ok
    assert "Scenes[0].GPU.VramBeforeMB" in {r.field for r in report.failures if r.check == "contract"}


def test_unknown_fields_are_reported_not_ignored(run: Run) -> None:
    metadata = run.metadata()
    metadata["Scenes"][0]["Frames"]["Fps"] = 24
    metadata["Colour"] = "blue"
    write_pair(run, metadata, summary=render_summary_with_extra(metadata))
    report = validate_run(run.run_dir)
    unknown = {(r.field, r.file and Path(r.file).name) for r in report.failures if r.check == "unknown-field"}
    assert unknown == {
        ("Colour", "artifact-metadata.json"),
        ("Scenes[0].Frames.Fps", "artifact-metadata.json"),
        ("Frames.Fps", "s01.telemetry.json"),
        ("Seed", "run-summary.txt"),
    }
    assert {r.check for r in report.failures} == {"unknown-field"}


def render_summary_with_extra(metadata: dict[str, object]) -> str:
    from scene_telemetry.telemetry import render_summary

    return render_summary(metadata).replace("MarkerStatus=committed\n", "MarkerStatus=committed\nSeed=42\n")


def test_marker_must_exist(run: Run) -> None:
    Path(run.marker["marker_path"]).unlink()
    report = validate_run(run.run_dir)
    assert failing(report) == {("marker", "Frames.MarkerName")}
    assert "marker not found" in report.failures[0].message


def test_a_marker_nested_past_the_recursion_limit_is_a_row_not_a_crash(run: Run) -> None:
    Path(run.marker["marker_path"]).write_bytes(b"[" * 100_000)
    report = validate_run(run.run_dir)
    assert failing(report) == {("marker", "Frames.MarkerName")}
    assert report.failures[0].message == "marker is not valid UTF-8 JSON: JSON nested too deeply"


def test_marker_must_match_the_files_on_disk(run: Run) -> None:
    frame = run.run_dir / "frame_00002_.png"
    with frame.open("ab") as handle:
        handle.write(b"x")
    (run.run_dir / "frame_00003_.png").unlink()
    report = validate_run(run.run_dir)
    assert failing(report) == {("marker", "marker.Files")}
    messages = sorted(r.message for r in report.failures)
    assert messages[0].startswith("on disk: frame_00002_.png: ") and "marker says" in messages[0]
    assert messages[1] == "on disk: frame_00003_.png: missing"


def test_marker_count_and_bytes_must_match_frames(run: Run) -> None:
    metadata = run.metadata()
    frames = metadata["Scenes"][0]["Frames"]
    frames.update(Count=frames["Count"] + 1, TotalBytes=frames["TotalBytes"] + 10)
    write_pair(run, metadata)
    assert failing(validate_run(run.run_dir)) == {("marker", "marker.FrameCount"), ("marker", "marker.TotalBytes")}


def test_marker_of_another_prompt_fails(run: Run) -> None:
    write_pair(run, edited(run.metadata(), PromptId="prompt-2"))
    assert failing(validate_run(run.run_dir)) == {("marker", "marker.PromptId")}


def test_timestamps_must_be_in_order(run: Run) -> None:
    write_pair(run, edited(run.metadata(), QueueStart="2099-01-01T00:00:00.000Z"))
    report = validate_run(run.run_dir)
    assert failing(report) == {("timestamps", "QueueStart <= ExecutionStartedAt")}


def test_scene_count_and_scene_blocks_must_agree(run: Run) -> None:
    metadata = run.metadata()
    metadata["SceneCount"] = 2
    write_pair(run, metadata)
    assert failing(validate_run(run.run_dir)) == {("scene-set", "SceneCount")}
    metadata["SceneCount"] = 1
    write_pair(run, metadata, summary=render_summary_with_extra(metadata).replace("[scene s01]", "[scene s02]"))
    report = validate_run(run.run_dir)
    assert ("scene-set", "[scene]") in failing(report)
    assert {r.scene for r in report.failures if r.check == "scene-set"} == {"s01", "s02"}


def test_runner_scenes_with_failed_scene_validate(output_dir: Path) -> None:
    """A headless run: Writer 'runner', runner fields filled, one scene without a marker."""
    first, second = make_run(output_dir, scene_id="a"), make_run(output_dir, scene_id="b")
    scenes = []
    for scene in (first.scene, copy.deepcopy(second.scene)):
        scene.update(
            Writer="runner", HistoryAttempts=4, HistoryExitReason="success", ExecutionSuccessDetected=True,
            ExecutionSuccessAt=scene["QueueEnd"], HistoryPostExecutionTimeoutReached=False, SceneAttempts=1,
            DoneMarkerDetected=True, DoneMarkerWaitSeconds=0.25, ForcedCopyTriggered=False,
        )  # fmt: skip
        scenes.append(scene)
    scenes[1].update(Frames=None, FramesDurableAt=None, HistoryExitReason="executionError", ExitDetail="boom")
    from scene_telemetry.telemetry import build_run_metadata, write_run

    metadata = build_run_metadata(scenes, run_id="run-1", writer="runner")
    files = write_run(output_dir / "run-1", metadata)
    report = validate_run(files.run_dir, output_dir=output_dir)
    assert report.ok, report.render_text(problems_only=True)
    assert ("Frames", "skip") in rows_of(report, "marker")
    assert "MarkerStatus=verified" in files.summary_path.read_text("utf-8")
    assert "MarkerStatus=missing" in files.summary_path.read_text("utf-8")
    # Without the output directory the markers are found below the run folder's parent tails only.
    assert not validate_run(files.run_dir).ok


# --- bad input: a clear row naming the file, never a traceback --------------------------------------------------------


def only_error(report: ValidationReport) -> str:
    errors = [r for r in report.rows if r.verdict == "error"]
    assert len(errors) == 1, report.render_text()
    assert report.unreadable and not report.ok
    return f"{errors[0].file}: {errors[0].message}"


def test_missing_run_folder(tmp_path: Path) -> None:
    assert only_error(validate_run(tmp_path / "nope")).endswith("nope: not a folder")


@pytest.mark.parametrize("name", ["artifact-metadata.json", "run-summary.txt"])
def test_missing_file(run: Run, name: str) -> None:
    (run.run_dir / name).unlink()
    assert only_error(validate_run(run.run_dir)).startswith(f"{run.run_dir / name}: file is missing")


def test_malformed_json_names_line_and_column(run: Run) -> None:
    run.metadata_path.write_text('{\n  "RunId": "x",\n  oops\n}', "utf-8")
    message = only_error(validate_run(run.run_dir))
    assert message.startswith(f"{run.metadata_path}: malformed JSON at line 3 column 3")


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ('{"RunId": "a", "RunId": "b"}', "duplicate key 'RunId'"),
        ('{"SceneCount": NaN}', "non-standard JSON constant NaN"),
        ("[" * 100_000, "unusable JSON"),
    ],
)
def test_unusable_json(run: Run, payload: str, reason: str) -> None:
    run.metadata_path.write_text(payload, "utf-8")
    assert reason in only_error(validate_run(run.run_dir))


def test_telemetry_file_malformed(run: Run) -> None:
    run.telemetry_path.write_text("{", "utf-8")
    report = validate_run(run.run_dir)
    assert only_error(report).startswith(f"{run.telemetry_path}: malformed JSON")
    assert [r.scene for r in report.rows if r.verdict == "error"] == ["s01"]


def test_100_mb_file_is_refused_unread(run: Run) -> None:
    with run.summary_path.open("r+b") as handle:
        handle.truncate(100 * 1024 * 1024)  # sparse: instant, no 100 MB written
    message = only_error(validate_run(run.run_dir))
    assert message == (
        f"{run.summary_path}: file is {100 * 1024 * 1024} bytes, over the {MAX_INPUT_BYTES // 1048576} MiB limit: "
        "not read"
    )


@pytest.mark.parametrize(
    ("encode", "reason"),
    [
        (lambda t: t.encode("utf-16"), "file is UTF-16 encoded (byte-order mark); expected UTF-8"),
        (lambda t: t.encode("utf-16-le"), "(UTF-16 without a byte-order mark?)"),
        (lambda t: codecs.BOM_UTF32_LE + t.encode("utf-32-le"), "file is UTF-32 encoded"),
        (lambda t: (t + "ExitNote=café\n").encode("latin-1"), "not valid UTF-8: byte 0xe9 at offset"),
    ],
)
def test_odd_encodings_of_the_summary(run: Run, encode: object, reason: str) -> None:
    assert callable(encode)
    run.summary_path.write_bytes(encode(run.summary()))
    message = only_error(validate_run(run.run_dir))
    assert message.startswith(f"{run.summary_path}: ") and reason in message


def test_utf8_bom_is_accepted_with_a_warning(run: Run) -> None:
    run.metadata_path.write_bytes(codecs.BOM_UTF8 + run.metadata_path.read_bytes())
    report = validate_run(run.run_dir)
    assert report.ok
    assert [(r.field, r.verdict) for r in report.rows if r.check == "files"] == [("artifact-metadata.json", "warn")]


def test_latin1_metadata_names_the_file(run: Run) -> None:
    run.metadata_path.write_bytes(run.metadata_path.read_text("utf-8").replace("s01", "sé").encode("latin-1"))
    assert only_error(validate_run(run.run_dir)).startswith(f"{run.metadata_path}: not valid UTF-8")


def test_metadata_that_is_a_folder(run: Run) -> None:
    run.metadata_path.unlink()
    run.metadata_path.mkdir()
    assert only_error(validate_run(run.run_dir)).endswith("is a folder, not a file")


def test_unreadable_file_names_the_os_reason(run: Run) -> None:
    run.summary_path.unlink()
    run.summary_path.symlink_to(run.summary_path)  # a symlink loop: stat fails with ELOOP, even as root
    message = only_error(validate_run(run.run_dir))
    assert message.startswith(f"{run.summary_path}: cannot read: ") and "symbolic links" in message


def test_report_renders_and_serialises(run: Run) -> None:
    run.summary_path.write_text(replace_line(run.summary(), "SceneRetryBudget=1", "SceneRetryBudget=3"), "utf-8")
    report = validate_run(run.run_dir)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["ok"] is False and data["counts"]["fail"] == 1
    bad = [r for r in data["rows"] if r["verdict"] == "fail"]
    assert bad[0] | {"file": None} == {
        "check": "retry-budget", "scene": "s01", "field": "SceneRetryBudget", "verdict": "fail",
        "message": "summary and metadata disagree", "summary": "3", "metadata": "1", "file": None,
        "labels": ["summary", "metadata"],
    }  # fmt: skip
    text = report.render_text(problems_only=True).splitlines()
    assert text[0].endswith("FAILED: " + report.verdict_line().split(": ", 1)[1])
    assert text[1].startswith("FAIL  retry-budget") and "summary=3 metadata=1" in text[1]


def _registry_validator(kind: DocumentKind) -> Draft202012Validator:
    """The contract as written: the schema files linked by ``$ref`` through a referencing.Registry."""
    registry: Registry = Registry().with_resources(  # type: ignore[type-arg,unused-ignore]
        (load_schema(name)["$id"], Resource.from_contents(load_schema(name))) for name in SCHEMA_FILES
    )
    return Draft202012Validator(load_schema(kind), registry=registry)


def _verdicts(validator: Draft202012Validator, document: Any) -> tuple[list[Any], Any]:
    """Every error as (instance path, message), sorted, and the best match that validate_document reports."""
    errors = sorted((list(e.absolute_path), e.message) for e in validator.iter_errors(document))
    best = best_match(validator.iter_errors(document))
    return errors, None if best is None else (list(best.absolute_path), best.message)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: None,
        lambda d: d["Scenes"][0]["GPU"].update(VramAfterMB=-1),
        lambda d: d["Scenes"][0]["Frames"].update(Fps=1),
        lambda d: d["Scenes"][0].update(Frames=None),
        lambda d: d["Scenes"][0]["Frames"].update(MarkerName="a/b.done"),
        lambda d: d["Scenes"][0].pop("GPU"),
        lambda d: d["Scenes"][0].update(QueueStart="yesterday", PollLimit="0"),
        lambda d: d["Scenes"][0]["System"].update(Before={"RamTotalMB": 1}),
        lambda d: d["Versions"].update(Python=3),
        lambda d: d.update(SchemaVersion="scene-telemetry/2", Scenes={}),
    ],
)
def test_bundled_schema_gives_the_contracts_verdicts(run: Run, mutate: Any) -> None:
    """validator_for runs the bundled schema; its errors, paths and best match are the Registry-resolved ones."""
    document = run.metadata()
    mutate(document)
    scene = document["Scenes"][0] if isinstance(document["Scenes"], list) else document["Scenes"]
    for kind, doc in (("artifact-metadata", document), ("scene-telemetry", scene)):
        assert _verdicts(validator_for(kind), doc) == _verdicts(_registry_validator(kind), doc), kind
    assert _verdicts(validator_for("artifact-metadata"), run.metadata()) == ([], None)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: None,
        lambda b: b.update(FrameCount="one", Unexpected=1),
        lambda b: b["Files"][0].update(Name="../escape.png"),
        lambda b: b.pop("CreatedAt"),
        lambda b: b.update(SchemaVersion=1, Files=[]),
    ],
)
def test_bundled_marker_schema_gives_the_contracts_verdicts(run: Run, mutate: Any) -> None:
    body = copy.deepcopy(run.marker["body"])
    mutate(body)
    assert _verdicts(validator_for("done-marker"), body) == _verdicts(_registry_validator("done-marker"), body)


@pytest.mark.parametrize("kind", DOCUMENT_KINDS)
def test_validator_for_runs_a_ref_free_schema_without_annotations(kind: DocumentKind) -> None:
    text = json.dumps(validator_for(kind).schema)
    assert '"$ref"' not in text and '"description"' not in text and '"x-writer"' not in text
    assert validator_for(kind) is validator_for(kind)  # compiled once


def test_bundling_refuses_a_ref_whose_siblings_would_replace_its_target() -> None:
    schemas = {"common": {"$defs": {"N": {"type": "integer"}}}, "k": {"$ref": "common.json#/$defs/N", "type": "null"}}
    with pytest.raises(ValueError, match="sibling"):
        _inline(schemas["k"], "k", schemas, in_names=False)
    schemas["k"] = {"$ref": "common.json#/$defs/N", "minimum": 0, "description": "kept out"}
    assert _inline(schemas["k"], "k", schemas, in_names=False) == {"type": "integer", "minimum": 0}


def test_validate_metadata_file(run: Run, tmp_path: Path) -> None:
    assert [r.verdict for r in validate_metadata_file(run.metadata_path)] == ["pass"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(edited(run.metadata(), SceneRetryBudget=-1)), "utf-8")
    assert [(r.check, r.scene, r.field) for r in validate_metadata_file(bad)] == [
        ("contract", "s01", "Scenes[0].SceneRetryBudget")
    ]
