"""End-to-end: WriteDoneMarker inside a real ComfyUI (``main.py --cpu``), driven over /prompt and /ws."""

from __future__ import annotations

import json
from typing import Any

import pytest
from comfy_server import ComfyServer, comfyui_dir
from PIL import Image
from scene_telemetry.telemetry import contract_errors, verify_marker

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        comfyui_dir() is None,
        reason="end-to-end tier skipped: set COMFYUI_DIR to a ComfyUI 0.8.0 checkout to run it",
    ),
]


def model_free(prefix: str, seed: int = 1, frames: int = 4) -> dict[str, Any]:
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": frames, "color": 0}},
        "2": {"class_type": "ImageAddNoise", "inputs": {"image": ["1", 0], "seed": seed, "strength": 0.5}},
        "3": {
            "class_type": "SceneTelemetry_WriteDoneMarker",
            "inputs": {"images": ["2", 0], "filename_prefix": prefix, "scene_id": "e2e"},
        },
    }


def test_frames_and_valid_marker(comfy: ComfyServer) -> None:
    prompt_id, messages, history = comfy.run_prompt(model_free("e2e/s1/frame"))
    marker = comfy.output_dir / "e2e" / "s1" / "frame.done"
    body = verify_marker(marker)
    assert contract_errors(body, "done-marker") == []
    assert (body["PromptId"], body["NodeId"], body["SceneId"], body["FrameCount"]) == (prompt_id, "3", "e2e", 4)
    assert body["Versions"]["ComfyUI"] == "0.8.0"
    assert history["status"]["status_str"] == "success"
    ui = history["outputs"]["3"]
    assert [i["filename"] for i in ui["images"]] == [f["Name"] for f in body["Files"]]
    with Image.open(marker.parent / body["Files"][0]["Name"]) as png:
        assert json.loads(png.text["prompt"])["3"]["class_type"] == "SceneTelemetry_WriteDoneMarker"
    assert any(m["type"] == "executed" and m["data"]["node"] == "3" for m in messages)


def test_identical_requeue_writes_a_new_marker(comfy: ComfyServer) -> None:
    prompt = model_free("e2e/requeue/frame")
    first_id, _, _ = comfy.run_prompt(prompt)
    first = verify_marker(comfy.output_dir / "e2e" / "requeue" / "frame.done")
    second_id, messages, _ = comfy.run_prompt(prompt)
    second = verify_marker(comfy.output_dir / "e2e" / "requeue" / "frame.done")
    assert (first["PromptId"], second["PromptId"]) == (first_id, second_id)
    assert [f["Name"] for f in second["Files"]] == [f"frame_{i:05}_.png" for i in range(5, 9)]
    cached = [m["data"]["nodes"] for m in messages if m["type"] == "execution_cached"]
    assert cached and "3" not in cached[0], "the marker node must never be served from cache"


def test_escaping_prefix_fails_the_prompt_clearly(comfy: ComfyServer) -> None:
    _, messages, history = comfy.run_prompt(model_free("../escape/frame"))
    errors = [m["data"] for m in messages if m["type"] == "execution_error"]
    assert len(errors) == 1
    assert errors[0]["node_type"] == "SceneTelemetry_WriteDoneMarker"
    assert errors[0]["exception_type"].endswith("UnsafePathError")
    assert "escapes the output directory" in errors[0]["exception_message"]
    assert history["status"]["status_str"] == "error"
    assert not (comfy.output_dir.parent / "escape").exists()
