"""SceneTelemetryCollector: contract-valid telemetry, timing rules, policy, atomic run files, round trip."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from run_factory import NOTES, POLICY, make_run, snapshot
from scene_telemetry.nodes import _comfy
from scene_telemetry.nodes.collector import SceneTelemetryCollector
from scene_telemetry.nodes.write_done_marker import WriteDoneMarker
from scene_telemetry.telemetry import (
    ContractError,
    InvalidInputError,
    MarkerError,
    UnsafePathError,
    build_run_metadata,
    build_scene_telemetry,
    contract_errors,
    validate_run,
    write_run,
)
from scene_telemetry.telemetry._atomic import TEMP_SUFFIX
from scene_telemetry.telemetry._collect import RUNNER_ONLY_FIELDS, parse_policy_text, policy_fields
from scene_telemetry.telemetry._done import SceneContext, write_frames_with_marker
from scene_telemetry.telemetry._meta import parse_iso


def done_marker(output_dir: Path, *, scene_id: str = "s01", prompt_id: str | None = "p-1") -> dict[str, Any]:
    images = np.zeros((2, 4, 6, 3), dtype=np.float32)
    context = SceneContext(prompt_id=prompt_id, scene_id=scene_id)
    return write_frames_with_marker(images, output_dir, f"{scene_id}/frame", context=context, workers=1).as_output()


def build(marker: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "marker": marker,
        "scene_id": "s01",
        "gpu_before": None,
        "gpu_after": None,
        "policy": None,
        "prompt_id": "p-1",
        "queue_start_ms": None,
        "execution_started_at": None,
        "started_monotonic": None,
        "comfyui_version": None,
    }
    arguments.update(overrides)
    return build_scene_telemetry(**arguments)


# --- library --------------------------------------------------------------------------------------------------------


def test_editor_scene_is_contract_valid_with_runner_fields_null(output_dir: Path) -> None:
    run = make_run(output_dir, policy=None)
    scene = run.scene
    assert contract_errors(scene, "scene-telemetry") == []
    assert scene["Writer"] == "graph" and scene["PromptId"] == "prompt-1"
    assert all(scene[name] is None for name in RUNNER_ONLY_FIELDS)
    assert scene["PollLimit"] is None and scene["SceneRetryBudget"] is None
    assert scene["FramesDurableAt"] == run.marker["body"]["CreatedAt"]
    assert scene["Frames"] == {
        "Count": 3, "Width": 12, "Height": 8, "TotalBytes": run.marker["body"]["TotalBytes"],
        "Subfolder": "s01", "MarkerName": "frame.done",
    }  # fmt: skip
    gpu = scene["GPU"]
    assert (gpu["VramBeforeMB"], gpu["VramAfterMB"], gpu["VramDeltaMB"]) == (1000, 3000, 2000)
    assert scene["System"]["FallbackNotes"] == list(NOTES)


def test_timing_from_the_before_snapshot_and_the_queue(output_dir: Path) -> None:
    marker = done_marker(output_dir)
    before = snapshot("before", 10, 20, MonotonicS=time.monotonic() - 2.0, TakenAt="2026-01-01T10:00:00.000+00:00")
    scene = build(
        marker,
        gpu_before=before,
        queue_start_ms=1767261599000.0,
        execution_started_at="2026-01-01T10:00:00.000Z",
        started_monotonic=before["MonotonicS"],
    )
    assert scene["QueueStart"] == "2026-01-01T09:59:59.000Z"
    assert scene["ExecutionStartedAt"] == "2026-01-01T10:00:00.000Z"
    assert 2.0 <= scene["DurationSeconds"] < 10.0
    assert scene["QueueEnd"] == scene["CreatedAt"]
    assert parse_iso(scene["QueueEnd"]) >= parse_iso(scene["FramesDurableAt"])


def test_execution_start_rule(output_dir: Path) -> None:
    """Before snapshot wired: its TakenAt and a duration; not wired: the marker's CreatedAt and no duration."""
    with_before = make_run(output_dir, scene_id="a").scene
    assert with_before["ExecutionStartedAt"] < with_before["FramesDurableAt"]
    assert with_before["DurationSeconds"] is not None and with_before["DurationSeconds"] >= 0
    from scene_telemetry.telemetry._collect import collect_scene

    marker = done_marker(output_dir, scene_id="b")
    scene, _files = collect_scene(
        marker=marker, scene_id="b", gpu_before=None, gpu_after=None, policy=None, prompt_id="p-1",
        queue_start_ms=None, comfyui_version=None,
    )  # fmt: skip
    assert scene["ExecutionStartedAt"] == marker["body"]["CreatedAt"]
    assert scene["DurationSeconds"] is None and scene["QueueStart"] is None
    assert scene["System"]["FallbackNotes"] == ["gpu: no snapshot was wired"]


@pytest.mark.parametrize(
    ("attempts", "poll_limit"),
    [(0, "unbounded"), (1, "1"), (25, "25")],
)
def test_policy_fields(attempts: int, poll_limit: str) -> None:
    fields = policy_fields({**POLICY, "max_attempt_count": attempts})
    assert fields == {
        "PollLimit": poll_limit, "HistoryAttemptLimit": attempts, "MaxWaitSeconds": 600.0,
        "PollIntervalSeconds": 2.0, "PostExecutionTimeoutSeconds": 30.0, "SceneRetryBudget": 1,
    }  # fmt: skip


def test_partial_policy_leaves_the_rest_null() -> None:
    fields = policy_fields({"scene_retry_budget": 0})
    assert fields["SceneRetryBudget"] == 0 and fields["PollLimit"] is None and fields["MaxWaitSeconds"] is None


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('{"max_wait_seconds": 0}', "queue_policy.max_wait_seconds"),
        ('{"max_wait_seconds": "600"}', "queue_policy.max_wait_seconds"),
        ('{"history_poll_interval_seconds": NaN}', "queue_policy.history_poll_interval_seconds"),
        ('{"max_attempt_count": -1}', "queue_policy.max_attempt_count"),
        ('{"scene_retry_budget": true}', "queue_policy.scene_retry_budget"),
        ('{"scene_retry_budget": 1.5}', "queue_policy.scene_retry_budget"),
        ('{"retries": 1}', "queue_policy.retries"),
        ("[1, 2]", "queue_policy"),
        ("{not json", "queue_policy"),
        ("{" + " " * 5000 + "}", "queue_policy"),
    ],
)
def test_bad_queue_policy_is_a_clear_input_error(text: str, field: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        parse_policy_text(text)
    assert caught.value.field == field


def test_empty_policy_text_is_an_editor_run() -> None:
    assert parse_policy_text("") is None and parse_policy_text("  ") is None
    assert parse_policy_text(json.dumps(POLICY)) == POLICY


def test_marker_replaced_by_another_run_is_refused(output_dir: Path) -> None:
    first = done_marker(output_dir, prompt_id="p-1")
    done_marker(output_dir, prompt_id="p-2")  # same prefix: overwrites frame.done
    with pytest.raises(MarkerError, match="replaced by another run"):
        build(first)


def test_marker_of_another_prompt_is_refused(output_dir: Path) -> None:
    with pytest.raises(MarkerError, match="written by prompt p-1, not p-9"):
        build(done_marker(output_dir), prompt_id="p-9")


def test_frames_changed_after_the_marker_are_refused(output_dir: Path) -> None:
    marker = done_marker(output_dir)
    (Path(marker["marker_path"]).parent / "frame_00001_.png").unlink()
    with pytest.raises(MarkerError, match="does not match the files on disk"):
        build(marker)


def test_scene_id_must_agree_with_the_marker(output_dir: Path) -> None:
    with pytest.raises(InvalidInputError) as caught:
        build(done_marker(output_dir), scene_id="other")
    assert caught.value.field == "scene_id"


def test_scene_id_falls_back_to_the_marker(output_dir: Path) -> None:
    assert build(done_marker(output_dir, scene_id="from-marker"), scene_id="")["SceneId"] == "from-marker"


def test_not_a_done_marker(output_dir: Path) -> None:
    with pytest.raises(InvalidInputError, match="not a DONE_MARKER"):
        build({"path": "x"})


def test_write_run_writes_three_files_and_validates(output_dir: Path) -> None:
    run = make_run(output_dir, scene_id="scene/7 α")
    assert sorted(p.name for p in run.run_dir.iterdir() if not p.name.startswith("frame")) == [
        "artifact-metadata.json", "run-summary.txt", "scene_7__.telemetry.json",
    ]  # fmt: skip
    assert not list(run.run_dir.glob(f"*{TEMP_SUFFIX}"))
    assert json.loads(run.telemetry_path.read_text("utf-8")) == run.scene
    assert validate_run(run.run_dir).ok


def test_write_run_refuses_invalid_metadata_before_writing(tmp_path: Path, output_dir: Path) -> None:
    metadata = make_run(output_dir).metadata()
    metadata["Scenes"][0]["GPU"]["VramAfterMB"] = -1
    with pytest.raises(ContractError) as caught:
        write_run(tmp_path / "run", metadata)
    assert caught.value.field == "Scenes[0].GPU.VramAfterMB"
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.update(SceneCount=2), "SceneCount is 2 but Scenes lists 1"),
        (lambda m: m["Scenes"].append(dict(m["Scenes"][0], SceneId="s 1")), "share the telemetry file name"),
        (lambda m: m["Scenes"][0]["GPU"].update(VramDeltaMB=5), "does not round-trip"),
    ],
)
def test_write_run_refuses_inconsistent_runs(tmp_path: Path, output_dir: Path, change: Any, message: str) -> None:
    metadata = make_run(output_dir, scene_id="s_1").metadata()
    change(metadata)
    metadata["SceneCount"] = metadata["SceneCount"] if "SceneCount is" in message else len(metadata["Scenes"])
    with pytest.raises(ContractError, match=message):
        write_run(tmp_path / "run", metadata)
    assert not (tmp_path / "run").exists()


def test_build_run_metadata_for_a_runner(output_dir: Path) -> None:
    scene = dict(make_run(output_dir).scene, Writer="runner", HistoryAttempts=3, SceneAttempts=1)
    metadata = build_run_metadata([scene], run_id="run-9", writer="runner", comfyui_version="0.8.0")
    assert (metadata["Writer"], metadata["SceneCount"], metadata["Versions"]["ComfyUI"]) == ("runner", 1, "0.8.0")
    with pytest.raises(ContractError):
        build_run_metadata([scene], run_id="", writer="runner")


# --- the node -------------------------------------------------------------------------------------------------------


@pytest.fixture
def comfy(monkeypatch: pytest.MonkeyPatch, output_dir: Path) -> dict[str, Any]:
    """The ComfyUI shim as under a running prompt: prompt id, queue item with create_time, output dir."""
    state: dict[str, Any] = {"create_time": time.time() * 1000 - 3000}
    monkeypatch.setattr(_comfy, "output_directory", lambda: str(output_dir))
    monkeypatch.setattr(_comfy, "executing_context", lambda: ("prompt-42", "9"))
    monkeypatch.setattr(_comfy, "current_queue_item", lambda pid: {"create_time": state["create_time"]})
    monkeypatch.setattr(_comfy, "comfyui_version", lambda: "0.8.0")
    monkeypatch.setattr(_comfy, "metadata_disabled", lambda: True)
    return state


def node_marker(scene_id: str = "shot-1") -> dict[str, Any]:
    images = np.zeros((2, 4, 6, 3), dtype=np.float32)
    result: dict[str, Any] = WriteDoneMarker().write(f"{scene_id}/frame", images=images, scene_id=scene_id)
    return dict(result["result"][0])


def test_node_declaration() -> None:
    types = SceneTelemetryCollector.INPUT_TYPES()
    assert types["required"]["done_marker"][0] == "DONE_MARKER"
    assert set(types["optional"]) == {"gpu_before", "gpu_after", "queue_policy"}
    assert SceneTelemetryCollector.NAME == "SceneTelemetry_Collector"
    assert SceneTelemetryCollector.OUTPUT_NODE is True
    assert math.isnan(SceneTelemetryCollector.IS_CHANGED(done_marker=None))


def test_node_collects_under_comfyui(comfy: dict[str, Any], output_dir: Path) -> None:
    before = snapshot("before", 500, 81059, NOTES)
    marker = node_marker()
    after = snapshot("after", 700, 80859, NOTES)
    out = SceneTelemetryCollector().collect(
        done_marker=marker, scene_id="shot-1", gpu_before=before, gpu_after=after,
        queue_policy=json.dumps({**POLICY, "max_attempt_count": 4}),
    )  # fmt: skip
    (telemetry,) = out["result"]
    scene = telemetry["scene"]
    assert (scene["PromptId"], scene["PollLimit"], scene["HistoryAttemptLimit"]) == ("prompt-42", "4", 4)
    assert scene["QueueStart"] is not None and scene["QueueStart"] < scene["ExecutionStartedAt"]
    assert Path(telemetry["run_dir"]) == output_dir / "shot-1"
    assert json.loads(Path(telemetry["artifact_metadata_path"]).read_text("utf-8"))["RunId"] == "prompt-42"
    assert json.loads(Path(telemetry["telemetry_path"]).read_text("utf-8")) == scene
    assert "pollLimit=4" in Path(telemetry["run_summary_path"]).read_text("utf-8")
    assert out["ui"]["text"] == [
        f"shot-1: 2 frame(s) · VRAM 500→700 MiB (+200) · {scene['DurationSeconds']:.1f} s · 2 fallback warning(s) "
        "→ run-summary.txt"
    ]
    json.dumps(out)  # the whole return value is JSON-serialisable
    assert validate_run(telemetry["run_dir"]).ok


def test_node_refuses_bad_policy_before_writing(comfy: dict[str, Any], output_dir: Path) -> None:
    marker = node_marker()
    with pytest.raises(InvalidInputError):
        SceneTelemetryCollector().collect(done_marker=marker, queue_policy='{"max_wait_seconds": -5}')
    assert not (output_dir / "shot-1" / "artifact-metadata.json").exists()


def test_node_refuses_a_marker_outside_the_output_dir(
    comfy: dict[str, Any], output_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = node_marker()
    monkeypatch.setattr(_comfy, "output_directory", lambda: str(tmp_path / "elsewhere"))
    with pytest.raises(UnsafePathError):
        SceneTelemetryCollector().collect(done_marker=marker)
