"""``run --webhook/--metrics-port`` against the ComfyUI stand-in: signed events per scene, failing receivers
leave the exit code and the run's time alone."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fake_comfy import FakeComfy, Scenario
from prometheus_client.parser import text_string_to_metric_families
from scene_telemetry.cli.main import main
from scene_telemetry.monitoring._webhook import SLOW_TRY_S

SECRET = "run-test-secret"
WORKFLOW: dict[str, Any] = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 16, "batch_size": 3, "color": 0}},
    "2": {"class_type": "ImageAddNoise", "inputs": {"image": ["1", 0], "seed": 1, "strength": 0.5}},
    "3": {
        "class_type": "SceneTelemetry_WriteDoneMarker",
        "inputs": {"images": ["2", 0], "filename_prefix": "x/frame", "scene_id": ""},
    },
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Receiver:
    """A webhook receiver; in 'ok' mode it also scrapes the run's metrics when run.ended arrives."""

    def __init__(self, mode: str, metrics_port: int | None = None) -> None:
        self.mode = mode
        self.metrics_port = metrics_port
        self.bodies: list[bytes] = []
        self.bad_signatures = 0
        self.metrics_at_run_end = ""
        self.release = threading.Event()


@pytest.fixture
def receiver_factory() -> Iterator[Any]:
    servers: list[tuple[ThreadingHTTPServer, threading.Thread, Receiver]] = []

    def make(mode: str, metrics_port: int | None = None) -> tuple[str, Receiver]:
        state = Receiver(mode, metrics_port)

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if state.mode == "hang":
                    state.release.wait(15)
                    return
                if state.mode == "500":
                    self.send_response(500)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
                if not hmac.compare_digest(self.headers.get("X-Scene-Telemetry-Signature", ""), expected):
                    state.bad_signatures += 1
                state.bodies.append(body)
                if json.loads(body)["event"] == "run.ended" and state.metrics_port:
                    url = f"http://127.0.0.1:{state.metrics_port}/metrics"
                    state.metrics_at_run_end = urllib.request.urlopen(url, timeout=5).read().decode()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
        thread.start()
        servers.append((server, thread, state))
        return f"http://127.0.0.1:{server.server_address[1]}/hook", state

    yield make
    for server, thread, state in servers:
        state.release.set()
        server.shutdown()
        server.server_close()
        thread.join()
    time.sleep(0.05)


def _argv(tmp_path: Path, output_dir: Path, url: str, run_dir: str, scenes: int = 3) -> list[str]:
    (tmp_path / "wf.json").write_text(json.dumps(WORKFLOW))
    (tmp_path / "scenes.yaml").write_text("".join(f"- id: s{n}\n  seed: {n}\n" for n in range(1, scenes + 1)))
    (tmp_path / "map.json").write_text(json.dumps({"seed": "id:2.seed"}))
    return [
        "run",
        str(tmp_path / "wf.json"),
        "--scenes",
        str(tmp_path / "scenes.yaml"),
        "--mapping",
        str(tmp_path / "map.json"),
        "--server",
        url,
        "--out",
        str(tmp_path / run_dir),
        "--comfy-output-dir",
        str(output_dir),
        "--no-gpu",
        "--fast-iteration",
        "--run-id",
        run_dir,
    ]


def test_run_posts_signed_events_in_order_and_serves_metrics(
    tmp_path: Path, output_dir: Path, receiver_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCENE_TELEMETRY_WEBHOOK_SECRET", SECRET)
    port = _free_port()
    url, state = receiver_factory("ok", metrics_port=port)
    with FakeComfy(Scenario(), output_dir=output_dir) as fake:
        argv = _argv(tmp_path, output_dir, fake.url, "r1") + ["--webhook", url, "--metrics-port", str(port)]
        code = main(argv)
    assert code == 0
    events = [json.loads(b) for b in state.bodies]
    assert state.bad_signatures == 0
    assert [(e["event"], (e.get("scene") or {}).get("scene_id")) for e in events] == [
        ("scene.ended", "s1"),
        ("scene.ended", "s2"),
        ("scene.ended", "s3"),
        ("run.ended", None),
    ]
    assert [e["sequence"] for e in events] == [1, 2, 3, 4]
    assert all(e["scene"]["ok"] and e["scene"]["exit_reason"] == "success" for e in events[:3])
    assert events[0]["scene"]["run_id"] == "r1" and events[0]["scene"]["frames"] == 3
    assert events[3]["run"]["exit_code"] == 0 and events[3]["run"]["scenes"] == 3 and events[3]["run"]["failed"] == 0
    got = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(state.metrics_at_run_end)
        for s in family.samples
    }
    assert got[("scene_telemetry_scenes_total", (("exit_reason", "success"),))] == 3
    assert got[("scene_telemetry_scene_duration_seconds_count", (("exit_reason", "success"),))] == 3
    assert got[("scene_telemetry_markers_total", (("source", "node"),))] == 3
    assert got[("scene_telemetry_server_up", (("server", fake.url),))] == 1
    assert got[("scene_telemetry_runs_total", (("exit_code", "0"),))] == 1


def _timed_run(argv: list[str]) -> tuple[int, float]:
    start = time.monotonic()
    code = main(argv)
    return code, time.monotonic() - start


@pytest.mark.parametrize("mode", ["hang", "down", "500"])
def test_failing_receivers_change_neither_exit_code_nor_run_time(
    tmp_path: Path, output_dir: Path, receiver_factory: Any, mode: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url, _state = receiver_factory(mode)
    if mode == "down":
        url = f"http://127.0.0.1:{_free_port()}/hook"
    scenarios = [Scenario(), Scenario(case="error"), Scenario()]
    with FakeComfy(scenarios, output_dir=output_dir) as fake:
        base_code, base_s = _timed_run(_argv(tmp_path, output_dir, fake.url, "base"))
    with FakeComfy(scenarios, output_dir=output_dir) as fake:
        code, with_hook_s = _timed_run(_argv(tmp_path, output_dir, fake.url, "hooked") + ["--webhook", url])
    assert base_code == code == 20  # s2 failed both times: same exit code
    # Scenes never wait for a receiver; at exit a failed receiver gets no grace, a hanging one SLOW_TRY_S at most.
    assert with_hook_s < base_s + SLOW_TRY_S + 0.5, (base_s, with_hook_s)
    assert "secret" not in capsys.readouterr().err


def test_bad_webhook_and_busy_port_are_one_line_exit_2(
    tmp_path: Path, output_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = _argv(tmp_path, output_dir, "http://127.0.0.1:9", "x")
    with pytest.raises(SystemExit) as info:
        main([*argv, "--webhook", "ftp://user:topsecret@example.com/x"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "topsecret" not in err and "must be http:// or https://" in err
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert main([*argv, "--metrics-port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"--metrics-port {port}: cannot listen" in err and "Traceback" not in err
