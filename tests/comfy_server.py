"""A real ComfyUI server for the end-to-end tier (``-m e2e``).

Runs only when ``COMFYUI_DIR`` points at a ComfyUI checkout (0.8.0 is what the
pack targets); ``COMFYUI_PYTHON`` picks its interpreter (default:
``$COMFYUI_DIR/.venv/bin/python`` if present, else this one). That interpreter
needs ComfyUI's requirements plus this pack's requirements.txt, exactly as
ComfyUI-Manager would install them. The pack is copied as the registry archive
would ship it into a temporary ``custom_nodes/scene-telemetry`` and loaded
through ``--extra-model-paths-config``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pack_files import copy_pack
from websockets.sync.client import connect

STARTUP_TIMEOUT_S = 120.0
PROMPT_TIMEOUT_S = 120.0


@dataclass
class ComfyServer:
    """A running ComfyUI with this pack loaded."""

    base_url: str
    output_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes]

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.base_url + path, timeout=30) as reply:
            return json.loads(reply.read() or b"null")

    def post(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        request = urllib.request.Request(
            self.base_url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as reply:
                return reply.status, json.loads(reply.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def run_prompt(self, prompt: dict[str, Any]) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
        """Queue *prompt* like a robust client: socket first, own ids, wait for executing/null, then history."""
        client_id, prompt_id = uuid.uuid4().hex, str(uuid.uuid4())
        ws_url = self.base_url.replace("http://", "ws://") + f"/ws?clientId={client_id}"
        messages: list[dict[str, Any]] = []
        with connect(ws_url, open_timeout=30) as ws:
            status, reply = self.post("/prompt", {"prompt": prompt, "client_id": client_id, "prompt_id": prompt_id})
            assert status == 200 and not reply.get("node_errors"), reply
            deadline = time.monotonic() + PROMPT_TIMEOUT_S
            while time.monotonic() < deadline:
                raw = ws.recv(timeout=max(0.1, deadline - time.monotonic()))
                if isinstance(raw, bytes):
                    continue
                message = json.loads(raw)
                messages.append(message)
                data = message.get("data", {})
                if message["type"] == "executing" and data.get("node") is None and data.get("prompt_id") == prompt_id:
                    break
            else:
                raise TimeoutError(f"prompt {prompt_id} did not finish in {PROMPT_TIMEOUT_S} s")
        for _ in range(50):
            history = self.get(f"/history/{prompt_id}")
            if prompt_id in history:
                return prompt_id, messages, history[prompt_id]
            time.sleep(0.1)
        raise AssertionError(f"no history for {prompt_id}")


def comfyui_dir() -> Path | None:
    value = os.environ.get("COMFYUI_DIR")
    return Path(value) if value else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pack_failed(log: str) -> bool:
    """True when ComfyUI reports that *this* pack failed to import.

    Core ``comfy_extras`` modules whose optional dependencies are missing (torchaudio on a CPU box) also print
    "IMPORT FAILED"; those are ComfyUI's business, not the pack's, and must not fail the tier.
    """
    return (
        any("IMPORT FAILED" in line and "scene-telemetry" in line for line in log.splitlines())
        or "custom_nodes/scene-telemetry module for custom nodes" in log
    )


def start_server(base: Path) -> ComfyServer:
    """Start ``main.py --cpu`` with the pack; raise with the log tail if it does not come up."""
    root = comfyui_dir()
    assert root is not None
    python = os.environ.get("COMFYUI_PYTHON") or (
        str(root / ".venv" / "bin" / "python") if (root / ".venv" / "bin" / "python").exists() else sys.executable
    )
    copy_pack(base / "custom_nodes" / "scene-telemetry")
    output = base / "output"
    output.mkdir()
    (base / "user").mkdir()  # keep the frontend's settings out of the ComfyUI checkout
    extra = base / "extra_model_paths.yaml"
    extra.write_text(f"scene_telemetry_e2e:\n    base_path: {base}\n    custom_nodes: custom_nodes/\n")
    port = _free_port()
    log_path = base / "comfyui.log"
    command = [
        python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--disable-auto-launch",
        "--output-directory", str(output), "--database-url", "sqlite:///:memory:",
        "--extra-model-paths-config", str(extra), "--disable-api-nodes", "--log-stdout",
        "--user-directory", str(base / "user"), "--temp-directory", str(base),
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=root, stdout=log, stderr=subprocess.STDOUT)
    server = ComfyServer(f"http://127.0.0.1:{port}", output, log_path, process)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            server.get("/system_stats")
            break
        except OSError:
            time.sleep(0.25)
    log = log_path.read_text(errors="replace")
    if process.poll() is not None or _pack_failed(log) or time.monotonic() >= deadline:
        stop_server(server)
        raise RuntimeError(f"ComfyUI did not start with the pack loaded; log tail:\n{log[-3000:]}")
    return server


def stop_server(server: ComfyServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait(timeout=20)
