"""``run`` takes the editor's workflow format: converted with the server's /object_info, then run like its API twin."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from fake_comfy import FakeComfy, Scenario
from scene_telemetry.cli.main import main

REPO = Path(__file__).resolve().parents[1]
EDITOR = REPO / "example_workflows" / "scene_telemetry_model_free.json"
API_TWIN = REPO / "api_workflows" / "scene_telemetry_model_free.json"
RUNNER_OWNED = {"filename_prefix", "scene_id", "queue_policy"}
"""Inputs the runner sets per scene (runner.patching.apply_runner_inputs)."""


def _argv(tmp_path: Path, workflow: Path, url: str) -> list[str]:
    (tmp_path / "scenes.json").write_text(json.dumps([{"id": "a"}]))
    return ["run", str(workflow), "--scenes", str(tmp_path / "scenes.json"), "--server", url]


def _without_runner_inputs(prompt: dict[str, Any]) -> dict[str, Any]:
    return {
        nid: {
            "class_type": node["class_type"],
            "inputs": {k: v for k, v in node["inputs"].items() if k not in RUNNER_OWNED},
        }
        for nid, node in prompt.items()
    }


def test_an_editor_workflow_runs_as_its_api_twin(tmp_path: Path, output_dir: Path) -> None:
    with FakeComfy(Scenario(), output_dir=output_dir) as fake:
        argv = _argv(tmp_path, EDITOR, fake.url)
        code = main([*argv, "--out", str(tmp_path / "run"), "--comfy-output-dir", str(output_dir), "--no-gpu"])
    assert code == 0 and len(fake.submissions) == 1
    sent = fake.submissions[0]["prompt"]
    assert _without_runner_inputs(sent) == _without_runner_inputs(json.loads(API_TWIN.read_text()))
    assert sent["5"]["inputs"]["scene_id"] == "a"


def test_an_editor_workflow_that_does_not_fit_the_server_queues_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    editor = json.loads(EDITOR.read_text())
    broken = copy.deepcopy(editor)
    next(n for n in broken["nodes"] if n["type"] == "EmptyImage")["widgets_values"].pop()
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(broken))
    with FakeComfy(Scenario()) as fake:
        code = main([*_argv(tmp_path, path, fake.url), "--out", str(tmp_path / "run"), "--no-gpu"])
    err = capsys.readouterr().err
    assert code == 13 and fake.submissions == []
    assert "node 1 (EmptyImage): 3 widget values, expected 4" in err and "Traceback" not in err


def test_a_malformed_editor_workflow_is_one_line_and_exit_2_before_preflight(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "typeless.json"
    path.write_text(json.dumps({"nodes": [{"id": 1}], "links": []}))
    # No server at all: the file is refused before anything talks to one.
    code = main([*_argv(tmp_path, path, "http://127.0.0.1:9"), "--out", str(tmp_path / "run"), "--no-gpu"])
    err = capsys.readouterr().err
    assert code == 2 and "every node needs a 'type' string" in err and "typeless.json" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_link_to_nowhere_is_one_line_not_a_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    editor = json.loads(EDITOR.read_text())
    editor["links"] = []  # every socket now names a link the table does not have
    path = tmp_path / "unlinked.json"
    path.write_text(json.dumps(editor))
    with FakeComfy(Scenario()) as fake:
        code = main([*_argv(tmp_path, path, fake.url), "--out", str(tmp_path / "run"), "--no-gpu"])
    err = capsys.readouterr().err
    assert code == 13 and fake.submissions == [] and "cannot be converted" in err and "Traceback" not in err
