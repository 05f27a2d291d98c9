"""End-to-end: /scene-telemetry/metrics and the peak sampler inside a real ComfyUI (``main.py --cpu``)."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from comfy_server import ComfyServer, comfyui_dir
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect

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


def _sampler_stops(comfy: ComfyServer) -> None:
    deadline = time.monotonic() + 5
    while scrape(comfy)[("scene_telemetry_peak_sampler_running", ())] != 0:
        assert time.monotonic() < deadline, "the sampler outlived its prompt"
        time.sleep(0.1)


def test_an_interrupted_prompt_stops_the_peak_sampler_and_the_next_after_says_why(comfy: ComfyServer) -> None:
    # before → five slow noise passes over a 1536² batch → after; interrupted during the first pass.
    graph: dict[str, Any] = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 1536, "height": 1536, "batch_size": 4, "color": 0}},
        "2": {"class_type": "SceneTelemetry_GPUSnapshot", "inputs": {"label": "before", "value": ["1", 0]}},
    }
    source = "2"
    for n in range(3, 8):
        graph[str(n)] = {
            "class_type": "ImageAddNoise",
            "inputs": {"image": [source, 0], "seed": int(time.time()) + n, "strength": 0.5},
        }
        source = str(n)
    graph["8"] = {"class_type": "SceneTelemetry_GPUSnapshot", "inputs": {"label": "after", "value": [source, 0]}}
    graph["9"] = {"class_type": "PreviewAny", "inputs": {"source": ["8", 1]}}
    client_id, prompt_id = uuid.uuid4().hex, str(uuid.uuid4())
    ws_url = comfy.base_url.replace("http://", "ws://") + f"/ws?clientId={client_id}"
    with connect(ws_url, open_timeout=30) as ws:
        status, reply = comfy.post("/prompt", {"prompt": graph, "client_id": client_id, "prompt_id": prompt_id})
        assert status == 200 and not reply.get("node_errors"), reply
        interrupted = False
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            raw = ws.recv(timeout=60)
            if isinstance(raw, bytes):
                continue
            message = json.loads(raw)
            data = message.get("data", {})
            if message["type"] == "executing" and data.get("node") == "3" and not interrupted:
                assert scrape(comfy)[("scene_telemetry_peak_sampler_running", ())] == 1
                comfy.post("/interrupt", {"prompt_id": prompt_id})
                interrupted = True
            if message["type"] == "executing" and data.get("node") is None and data.get("prompt_id") == prompt_id:
                break
    history = comfy.get(f"/history/{prompt_id}")[prompt_id]
    events = [m[0] for m in history["status"]["messages"]]
    assert "execution_interrupted" in events, events
    assert "8" not in history["outputs"], "the 'after' snapshot must not have run"
    _sampler_stops(comfy)
    # A later graph with only an 'after' snapshot finds the ended sampler and says why the peak is missing.
    later = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
        "8": {"class_type": "SceneTelemetry_GPUSnapshot", "inputs": {"label": "after", "value": ["1", 0]}},
        "9": {"class_type": "PreviewAny", "inputs": {"source": ["8", 1]}},
    }
    _id, _messages, entry = comfy.run_prompt(later)
    preview = json.dumps(entry["outputs"]["9"])
    assert f"prompt {prompt_id} was interrupted before its 'after' snapshot ran" in preview, preview[:2000]
