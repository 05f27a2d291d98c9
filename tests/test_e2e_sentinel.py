"""End-to-end: the sentinel (a real process, server mode) beside a real ComfyUI (``main.py --cpu``).

Stock SaveImage and SaveAnimatedWEBP graphs get exactly one correct marker each, a graph with
WriteDoneMarker gets none from the sentinel, and a prompt that finished while the sentinel was
down is marked when it starts. The server is this module's own (the sentinel catches up on the
whole history, which must not reach the other e2e modules' folders).
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from comfy_server import ComfyServer, comfyui_dir, start_server, stop_server
from prometheus_client.parser import text_string_to_metric_families
from scene_telemetry.telemetry import verify_marker
from sentinel_helpers import wait_until

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        comfyui_dir() is None,
        reason="end-to-end tier skipped: set COMFYUI_DIR to a ComfyUI 0.8.0 checkout to run it",
    ),
]

STATE = ".scene-telemetry-sentinel.json"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComfyServer]:
    server = start_server(tmp_path_factory.mktemp("comfy-sentinel"))
    yield server
    stop_server(server)


class Sentinel:
    def __init__(self, server: ComfyServer, log: Path, *extra: str) -> None:
        self.log = log
        command = [sys.executable, "-m", "scene_telemetry.cli", "sentinel", "--output-dir", str(server.output_dir)]
        command += ["--server", server.base_url, *extra]
        with open(log, "ab") as sink:
            self.process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            assert self.process.wait(timeout=5) == 0, self.log.read_text()
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()


def graph(save: dict[str, Any], seed: int) -> dict[str, Any]:
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 3, "color": 0}},
        "2": {"class_type": "ImageAddNoise", "inputs": {"image": ["1", 0], "seed": seed, "strength": 0.5}},
        "3": save,
    }


def save_image(prefix: str, seed: int) -> dict[str, Any]:
    return graph({"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}}, seed)


def save_webp(prefix: str, seed: int) -> dict[str, Any]:
    inputs = {"images": ["2", 0], "filename_prefix": prefix, "fps": 6.0, "lossless": False, "quality": 80}
    return graph({"class_type": "SaveAnimatedWEBP", "inputs": {**inputs, "method": "default"}}, seed)


def write_done_marker(prefix: str, seed: int) -> dict[str, Any]:
    inputs = {"images": ["2", 0], "filename_prefix": prefix, "scene_id": "e2e-sentinel"}
    return graph({"class_type": "SceneTelemetry_WriteDoneMarker", "inputs": inputs}, seed)


def handled(server: ComfyServer) -> dict[str, str]:
    try:
        state = json.loads((server.output_dir / STATE).read_text("utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return dict(state["Prompts"])


def listed(history: dict[str, Any]) -> list[str]:
    return [item["filename"] for item in history["outputs"]["3"]["images"]]


def test_stock_graphs_get_one_marker_each_and_write_done_marker_none(server: ComfyServer, tmp_path: Path) -> None:
    log = tmp_path / "sentinel.log"
    sentinel = Sentinel(server, log)
    out = server.output_dir
    try:
        wait_until(lambda: "sentinel following" in log.read_text(), timeout=30)
        image_id, _, image_history = server.run_prompt(save_image("stock/img/frame", seed=1))
        webp_id, _, webp_history = server.run_prompt(save_webp("stock/anim/clip", seed=2))
        node_id, _, _ = server.run_prompt(write_done_marker("stock/node/frame", seed=3))
        wait_until(lambda: {image_id, webp_id, node_id} <= set(handled(server)), timeout=30)
        image = verify_marker(out / "stock" / "img" / "frame.done")
        assert (image["Source"], image["PromptId"], image["NodeId"]) == ("sentinel", image_id, "3")
        assert [f["Name"] for f in image["Files"]] == listed(image_history) and len(image["Files"]) == 3
        assert (image["Width"], image["Height"], image["Versions"]["ComfyUI"]) == (64, 48, "0.8.0")
        webp = verify_marker(out / "stock" / "anim" / "clip.done")
        assert (webp["Source"], webp["PromptId"], webp["Parameters"]["NodeClass"]) == (
            "sentinel",
            webp_id,
            "SaveAnimatedWEBP",
        )
        assert [f["Name"] for f in webp["Files"]] == listed(webp_history) == ["clip_00001_.webp"]
        assert verify_marker(out / "stock" / "node" / "frame.done")["Source"] == "node"
        assert handled(server)[node_id] == "nothing"
        inodes = {p: p.stat().st_ino for p in out.rglob("*.done")}
        assert len(inodes) == 3
        time.sleep(2.0)  # a repeat would come now
        assert {p: p.stat().st_ino for p in out.rglob("*.done")} == inodes
    finally:
        sentinel.stop()
    text = log.read_text()
    assert text.count("marker written:") == 2
    assert "has no /api/jobs" not in text, "ComfyUI 0.8.0 serves /api/jobs: no fallback to /history"


def test_a_prompt_finished_while_the_sentinel_was_down_is_marked_at_start(server: ComfyServer, tmp_path: Path) -> None:
    prompt_id, _, history = server.run_prompt(save_image("down/img/frame", seed=4))
    log = tmp_path / "sentinel.log"
    sentinel = Sentinel(server, log)
    try:
        marker = server.output_dir / "down" / "img" / "frame.done"
        wait_until(marker.exists, timeout=30)
        body = verify_marker(marker)
        assert (body["PromptId"], [f["Name"] for f in body["Files"]]) == (prompt_id, listed(history))
    finally:
        sentinel.stop()


def test_a_monitored_sentinel_posts_the_marker_and_serves_its_metrics(server: ComfyServer, tmp_path: Path) -> None:
    bodies: list[dict[str, Any]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    receiver_thread = threading.Thread(target=receiver.serve_forever, kwargs={"poll_interval": 0.05})
    receiver_thread.start()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    hook = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
    log = tmp_path / "sentinel.log"
    sentinel = Sentinel(server, log, "--metrics-port", str(port), "--webhook", hook)
    try:
        wait_until(lambda: "sentinel following" in log.read_text(), timeout=30)
        prompt_id, _, history = server.run_prompt(save_image("monitored/img/frame", seed=5))
        wait_until(lambda: any(b["marker"]["prompt_id"] == prompt_id for b in bodies), timeout=30)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            text = reply.read().decode()
    finally:
        sentinel.stop()
        receiver.shutdown()
        receiver.server_close()
        receiver_thread.join()
    [event] = [b for b in bodies if b["marker"]["prompt_id"] == prompt_id]
    marker = server.output_dir / "monitored" / "img" / "frame.done"
    assert (event["event"], event["source"], event["marker"]["path"]) == ("marker.written", "sentinel", str(marker))
    assert event["marker"]["files"] == len(listed(history)) == 3
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }
    assert samples[("scene_telemetry_server_up", (("server", server.base_url),))] == 1
    assert samples[("scene_telemetry_markers_total", (("source", "sentinel"),))] == len(bodies) >= 1
