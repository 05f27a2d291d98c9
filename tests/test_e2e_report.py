"""End-to-end: reports of folders a real ComfyUI (``main.py --cpu``) wrote, editor run and ``run --report``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from comfy_server import ComfyServer, comfyui_dir
from scene_telemetry.cli.main import main as cli_main
from scene_telemetry.report import REPORT_NAME, load_run

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / "api_workflows" / "scene_telemetry_model_free.json"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        comfyui_dir() is None,
        reason="end-to-end tier skipped: set COMFYUI_DIR to a ComfyUI 0.8.0 checkout to run it",
    ),
]


def _prompt(prefix: str) -> dict[str, Any]:
    prompt: dict[str, Any] = json.loads(WORKFLOW.read_text())
    for node in prompt.values():
        if node["class_type"] == "SceneTelemetry_WriteDoneMarker":
            node["inputs"]["filename_prefix"] = prefix
    return prompt


def test_report_of_the_collectors_folder_from_an_editor_run(comfy: ComfyServer, capsys) -> None:
    _, _, history = comfy.run_prompt(_prompt("e2e-report/frame"))
    assert history["status"]["status_str"] == "success", history["status"]
    folder = comfy.output_dir / "e2e-report"
    assert cli_main(["report", str(folder)]) == 0, capsys.readouterr()
    view = load_run(folder)
    assert view.kind == "editor run" and len(view.scenes) == 1
    (scene,) = view.scenes
    assert (scene.marker_source, scene.frames, scene.writer) == ("node", 8, "graph")
    text = (folder / REPORT_NAME).read_text("utf-8")
    assert 'Validator: <span class="word">PASSED</span>' in text
    assert text.count('src="data:image/jpeg;base64,') == 3


def test_run_with_report_against_a_real_server(comfy: ComfyServer, tmp_path: Path, capsys) -> None:
    scenes = tmp_path / "scenes.json"
    scenes.write_text(json.dumps([{"id": f"r-{n}", "seed": n} for n in (1, 2)]))
    mapping = tmp_path / "mapping.json"
    mapping.write_text(json.dumps({"seed": {"title": "ImageAddNoise", "input": "seed"}}))
    run_dir = tmp_path / "run"
    code = cli_main(
        [
            "run", str(WORKFLOW), "--scenes", str(scenes), "--mapping", str(mapping), "--server", comfy.base_url,
            "--out", str(run_dir), "--comfy-output-dir", str(comfy.output_dir), "--fast-iteration", "--report",
        ]
    )  # fmt: skip
    output = capsys.readouterr()
    assert code == 0, output.out[-3000:] + output.err[-3000:]
    assert f"report: {run_dir / REPORT_NAME}" in output.out
    view = load_run(run_dir, output_dir=comfy.output_dir)
    assert [(s.scene_id, s.exit_reason, s.marker_source) for s in view.scenes] == [
        ("r-1", "success", "node"),
        ("r-2", "success", "node"),
    ]
    assert 'Validator: <span class="word">PASSED</span>' in (run_dir / REPORT_NAME).read_text("utf-8")
