"""End-to-end: the shipped model-free example and a 3-scene headless run in a real ComfyUI (``main.py --cpu``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from comfy_server import ComfyServer, comfyui_dir
from scene_telemetry.cli.main import main as cli_main
from scene_telemetry.telemetry import contract_errors, verify_marker
from scene_telemetry.telemetry._validate import validate_run

REPO = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        comfyui_dir() is None,
        reason="end-to-end tier skipped: set COMFYUI_DIR to a ComfyUI 0.8.0 checkout to run it",
    ),
]


def model_free_prompt(prefix: str) -> dict[str, Any]:
    prompt: dict[str, Any] = json.loads((REPO / "api_workflows" / "scene_telemetry_model_free.json").read_text())
    for node in prompt.values():
        if node["class_type"] == "SceneTelemetry_WriteDoneMarker":
            node["inputs"]["filename_prefix"] = prefix
    return prompt


def test_model_free_example_leaves_a_valid_run(comfy: ComfyServer) -> None:
    prompt_id, messages, history = comfy.run_prompt(model_free_prompt("e2e-example/frame"))
    assert history["status"]["status_str"] == "success", history["status"]
    folder = comfy.output_dir / "e2e-example"
    marker = verify_marker(folder / "frame.done")
    assert (marker["PromptId"], marker["FrameCount"]) == (prompt_id, 8)
    metadata = json.loads((folder / "artifact-metadata.json").read_text())
    assert contract_errors(metadata, "artifact-metadata") == []
    (scene,) = metadata["Scenes"]
    assert (scene["PromptId"], scene["Writer"], scene["GPU"]["Type"]) == (prompt_id, "graph", "cpu")
    assert scene["QueueStart"] is not None, "the queue's create_time should reach the telemetry"
    assert scene["HistoryExitReason"] is None, "runner-only fields stay null in an editor run"
    report = validate_run(folder)
    assert report.ok, report.render_text()
    validator_ui = history["outputs"]["7"]["text"][0]
    assert validator_ui.startswith("OK"), validator_ui
    assert (folder / "run-summary.txt").read_text().strip()


def test_three_scene_headless_run(comfy: ComfyServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scenes = tmp_path / "scenes.json"
    scenes.write_text(json.dumps([{"id": f"scene-{n}", "seed": n} for n in (1, 2, 3)]))
    mapping = tmp_path / "mapping.json"
    mapping.write_text(json.dumps({"seed": {"title": "ImageAddNoise", "input": "seed"}}))
    run_dir = tmp_path / "run"
    code = cli_main(
        [
            "run", str(REPO / "api_workflows" / "scene_telemetry_model_free.json"),
            "--scenes", str(scenes), "--mapping", str(mapping), "--server", comfy.base_url,
            "--out", str(run_dir), "--comfy-output-dir", str(comfy.output_dir), "--fast-iteration", "--json",
        ]
    )  # fmt: skip
    output = capsys.readouterr()
    assert code == 0, output.out[-3000:] + output.err[-3000:]
    metadata = json.loads((run_dir / "artifact-metadata.json").read_text())
    assert contract_errors(metadata, "artifact-metadata") == []
    assert [s["SceneId"] for s in metadata["Scenes"]] == ["scene-1", "scene-2", "scene-3"]
    for scene in metadata["Scenes"]:
        assert scene["Writer"] == "runner"
        assert scene["HistoryExitReason"] == "success"
        assert scene["ExecutionSuccessDetected"] is True
        assert scene["DoneMarkerDetected"] is True and scene["ForcedCopyTriggered"] is False
        assert scene["PollLimit"] == "unbounded" and scene["SceneRetryBudget"] == 0
    # Frames stay in ComfyUI's output folder; the run folder points at them by Frames.Subfolder.
    report = validate_run(run_dir, output_dir=comfy.output_dir)
    assert report.ok, report.render_text(problems_only=True)
