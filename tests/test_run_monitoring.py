"""``run --webhook/--metrics-port`` against the ComfyUI stand-in: signed events per scene, failing receivers
leave the exit code and the run's time alone."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from fake_comfy import FakeComfy, Scenario
from prometheus_client.parser import text_string_to_metric_families
from scene_telemetry.cli.main import main
from scene_telemetry.monitoring._webhook import SLOW_TRY_S
from webhook_receiver import WebhookReceiver, free_port, scrape

SECRET = "run-test-secret"
WORKFLOW: dict[str, Any] = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 16, "batch_size": 3, "color": 0}},
    "2": {"class_type": "ImageAddNoise", "inputs": {"image": ["1", 0], "seed": 1, "strength": 0.5}},
    "3": {
        "class_type": "SceneTelemetry_WriteDoneMarker",
        "inputs": {"images": ["2", 0], "filename_prefix": "x/frame", "scene_id": ""},
    },
}


class Receiver(WebhookReceiver):
    """A webhook receiver that, given a metrics port, also scrapes the run's metrics when run.ended arrives."""

    def __init__(self, mode: str, metrics_port: int | None) -> None:
        self.metrics_port = metrics_port
        self.metrics_at_run_end = ""
        super().__init__(mode, secret=SECRET)

    def received(self, body: bytes) -> None:
        if json.loads(body)["event"] == "run.ended" and self.metrics_port:
            self.metrics_at_run_end = scrape(self.metrics_port)


@pytest.fixture
def receiver_factory() -> Iterator[Any]:
    with ExitStack() as stack:

        def make(mode: str, metrics_port: int | None = None) -> tuple[str, Receiver]:
            state = stack.enter_context(Receiver(mode, metrics_port))
            return state.url, state

        yield make


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
    port = free_port()
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
        url = f"http://127.0.0.1:{free_port()}/hook"
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
