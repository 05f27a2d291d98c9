"""``POST /prompt`` answering HTTP 500 or an HTML page every time is ``serverError``, not ``serverLost``
(issue 9, item 7): ``serverLost`` is reserved for a refused connection or a prompt lost to a restart.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fake_comfy import FakeComfy, Scenario
from scene_telemetry.comfy_api.client import ComfyClient
from scene_telemetry.runner.policy import QueuePolicy
from scene_telemetry.runner.runner import Runner, RunOptions
from scene_telemetry.runner.scenes import MARKER_CLASS, Scene, parse_mapping
from scene_telemetry.telemetry import EXIT_REASONS, load_schema, validate_run

WORKFLOW: dict[str, Any] = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 16, "batch_size": 2, "color": 0}},
    "3": {"class_type": MARKER_CLASS, "inputs": {"images": ["1", 0], "filename_prefix": "x/frame", "scene_id": ""}},
}
POLICY = QueuePolicy(5.0, 0.05, 0, 0.5, 1)


@pytest.mark.parametrize("fault", ["500", "html"])
def test_a_prompt_answered_badly_three_times_is_server_error(tmp_path: Path, output_dir: Path, fault: str) -> None:
    with FakeComfy(Scenario(prompt_fault=fault), output_dir=output_dir) as fake:
        options = RunOptions(fake.url, tmp_path / "run", POLICY, "r1", output_dir, gpu_snapshots=False)
        result = Runner(ComfyClient(fake.url, request_timeout_s=2.0), WORKFLOW, parse_mapping({}), options).run(
            [Scene("a", {})]
        )
    scene = result.scenes[0]
    assert scene.exit_reason == "serverError" and not scene.ok
    assert scene.document["HistoryExitReason"] == "serverError"
    assert "POST /prompt" in scene.document["ExitDetail"] and len(fake.submissions) == 3
    assert validate_run(tmp_path / "run", output_dir=output_dir).ok  # the record is contract-valid


def test_a_refused_connection_is_still_server_lost(tmp_path: Path) -> None:
    options = RunOptions(
        "http://127.0.0.1:9", tmp_path / "run", POLICY, "r1", None, gpu_snapshots=False, server_grace_s=0.2
    )
    result = Runner(ComfyClient("http://127.0.0.1:9"), WORKFLOW, parse_mapping({}), options).run([Scene("a", {})])
    assert result.scenes[0].exit_reason == "serverLost"


def test_server_error_is_in_the_contract_and_the_docs() -> None:
    schema = load_schema("scene-telemetry")["properties"]["HistoryExitReason"]
    assert "serverError" in schema["enum"] and "serverError" in schema["description"]
    assert "serverError" in EXIT_REASONS
    repo = Path(__file__).resolve().parents[1]
    for doc in ("README.md", "docs/protocol.md", "TELEMETRY_CONTRACT.md"):
        assert "serverError" in (repo / doc).read_text("utf-8"), doc
    assert json.dumps("serverError") in (repo / "telemetry" / "schemas" / "scene-telemetry.json").read_text("utf-8")
