"""End-to-end: /scene-telemetry/metrics and the peak sampler inside a real ComfyUI (``main.py --cpu``)."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from comfy_server import ComfyServer, comfyui_dir
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        comfyui_dir() is None,
        reason="end-to-end tier skipped: set COMFYUI_DIR to a ComfyUI 0.8.0 checkout to run it",
    ),
]


def scrape(comfy: ComfyServer, path: str = "/scene-telemetry/metrics") -> dict[tuple[str, tuple[Any, ...]], float]:
    with urllib.request.urlopen(comfy.base_url + path, timeout=30) as reply:
        assert reply.status == 200 and reply.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = reply.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def prompt(prefix: str, seed: int) -> dict[str, Any]:
    graph: dict[str, Any] = json.loads((REPO / "api_workflows" / "scene_telemetry_model_free.json").read_text())
    graph["3"]["inputs"]["seed"] = seed
    graph["5"]["inputs"]["filename_prefix"] = prefix
    return graph


def test_metrics_route_counts_a_real_scene_and_the_server_history(comfy: ComfyServer) -> None:
    before = scrape(comfy)
    prompt_id, _messages, history = comfy.run_prompt(prompt("e2e-metrics/frame", 7))
    assert history["status"]["status_str"] == "success", history["status"]
    after = scrape(comfy)
    twin = scrape(comfy, "/api/scene-telemetry/metrics")

    def grew(name: str, labels: tuple[Any, ...] = ()) -> float:
        return after[(name, labels)] - before.get((name, labels), 0.0)

    assert grew("scene_telemetry_markers_written_total", (("source", "node"),)) == 1
    assert grew("scene_telemetry_frames_written_total") == 8
    assert grew("scene_telemetry_bytes_written_total") > 0
    assert grew("scene_telemetry_save_seconds_count") == 1
    assert grew("scene_telemetry_collected_scenes_total", (("exit_reason", "unknown"),)) == 1  # editor run
    assert grew("scene_telemetry_validator_verdicts_total", (("verdict", "pass"),)) == 1
    assert grew("scene_telemetry_comfyui_history_prompts", (("status", "success"),)) == 1
    assert after[("scene_telemetry_comfyui_queue_prompts", (("state", "pending"),))] == 0
    assert after[("scene_telemetry_peak_sampler_running", ())] == 0
    assert twin[("scene_telemetry_frames_written_total", ())] == after[("scene_telemetry_frames_written_total", ())]
    # The CPU server's scene carries the sampler's RSS peak (no VRAM on a CPU device).
    metadata = json.loads((comfy.output_dir / "e2e-metrics" / "artifact-metadata.json").read_text())
    (scene,) = metadata["Scenes"]
    assert scene["PromptId"] == prompt_id
    assert scene["GPU"]["VramPeakMB"] is None and scene["GPU"]["VramPeakSamples"] >= 1
    assert scene["System"]["RssPeakMB"] > 0


def test_a_failing_prompt_stops_the_peak_sampler(comfy: ComfyServer) -> None:
    # 'before' runs, then the marker node refuses a prefix that escapes the output folder; the 'after'
    # snapshot hangs off the marker here, so it never runs.
    graph = prompt("../escape/frame", 8)
    graph["5"]["inputs"]["images"] = ["3", 0]
    graph["4"]["inputs"]["value"] = ["5", 0]
    del graph["7"]
    _prompt_id, _messages, history = comfy.run_prompt(graph)
    assert history["status"]["status_str"] == "error", history["status"]
    deadline = time.monotonic() + 5
    while scrape(comfy)[("scene_telemetry_peak_sampler_running", ())] != 0:
        assert time.monotonic() < deadline, "the sampler outlived its failed prompt"
        time.sleep(0.1)
    assert scrape(comfy)[("scene_telemetry_comfyui_history_prompts", (("status", "error"),))] >= 1
