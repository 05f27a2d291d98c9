"""``sentinel --webhook/--metrics-port``: one signed ``marker.written`` event per marker, the marker counter and
server-up gauge on the metrics port; a receiver that fails changes no marker, no exit code, no SIGTERM time."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from fake_comfy import Scenario, fake_servers
from prometheus_client.parser import text_string_to_metric_families
from scene_telemetry.cli.cmd_sentinel import service_command
from scene_telemetry.cli.main import main
from scene_telemetry.comfy_api.client import ComfyClient
from scene_telemetry.monitoring._webhook import SLOW_TRY_S
from scene_telemetry.sentinel import FsSentinel, Journal
from scene_telemetry.telemetry import verify_marker
from sentinel_helpers import age, reaped, running, start_sentinel, stop_timed, wait_until, write_batch
from webhook_receiver import WebhookReceiver, free_port, scrape

SECRET = "sentinel-test-secret"
QUIET = "0.3"


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


class Receiver(WebhookReceiver):
    """A webhook receiver that, given a metrics port, scrapes it once *scrape_after* events arrived."""

    def __init__(self, mode: str, metrics_port: int | None, scrape_after: int) -> None:
        self.metrics_port = metrics_port
        self.scrape_after = scrape_after
        self.metrics = ""
        super().__init__(mode, secret=SECRET, path="/hook?token=abc")

    def received(self, body: bytes) -> None:
        if self.metrics_port and len(self.events) == self.scrape_after:
            self.metrics = scrape(self.metrics_port)  # the command is still running: its port is up


@pytest.fixture
def receiver_factory() -> Iterator[Any]:
    with ExitStack() as stack:

        def make(mode: str = "ok", metrics_port: int | None = None, scrape_after: int = 1) -> tuple[str, Receiver]:
            state = stack.enter_context(Receiver(mode, metrics_port, scrape_after))
            return state.url, state

        yield make


def _aged_batches(output_dir: Path) -> list[Path]:
    """Two finished batches in two folders (written 'while the sentinel was down'): two markers."""
    paths = []
    for folder, count in (("a", 2), ("b/c", 3)):
        names = write_batch(output_dir / folder, "frame", count)
        paths += [output_dir / folder / n for n in names]
    age(paths)
    return [output_dir / "a" / "frame.done", output_dir / "b" / "c" / "frame.done"]


def _once(output_dir: Path, *extra: str) -> list[str]:
    return ["sentinel", "--output-dir", str(output_dir), "--quiet-seconds", QUIET, "--once", *extra]


# ---------------------------------------------------------------------------------------------- filesystem mode


def test_each_marker_is_one_signed_event_and_counted_on_the_metrics_port(
    output_dir: Path, receiver_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCENE_TELEMETRY_WEBHOOK_SECRET", SECRET)
    port = free_port()
    url, state = receiver_factory("ok", metrics_port=port, scrape_after=2)
    markers = _aged_batches(output_dir)
    assert main(_once(output_dir, "--webhook", url, "--metrics-port", str(port))) == 0
    events = state.payloads()
    assert state.bad_signatures == 0 and len(events) == 2
    assert [e["sequence"] for e in events] == [1, 2]
    assert all(
        (e["event"], e["source"], e["schema"]) == ("marker.written", "sentinel", "scene-telemetry-event/1")
        for e in events
    )
    by_path = {e["marker"]["path"]: e["marker"] for e in events}
    assert set(by_path) == {str(m) for m in markers}
    for marker in markers:
        document = verify_marker(marker)
        assert by_path[str(marker)] == {
            "path": str(marker),
            "scene_id": None,
            "prompt_id": None,
            "source": "sentinel",
            "files": document["FrameCount"],
            "bytes": document["TotalBytes"],
        }
    got = _samples(state.metrics)
    assert got[("scene_telemetry_markers_total", (("source", "sentinel"),))] == 2
    assert got[("scene_telemetry_webhook_deliveries_total", (("outcome", "failed"),))] == 0
    with pytest.raises(OSError):  # closed at exit
        scrape(port)


@pytest.mark.parametrize("mode", ["down", "hang", "500"])
def test_a_dead_receiver_changes_no_marker_and_no_exit_code(
    tmp_path: Path, receiver_factory: Any, mode: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url, _state = receiver_factory(mode)
    if mode == "down":
        url = f"http://127.0.0.1:{free_port()}/hook?token=abc"
    base_dir, hooked_dir = tmp_path / "base", tmp_path / "hooked"
    base_markers, hooked_markers = _aged_batches(base_dir), _aged_batches(hooked_dir)
    start = time.monotonic()
    base_code = main(_once(base_dir))
    base_s = time.monotonic() - start
    start = time.monotonic()
    hooked_code = main(_once(hooked_dir, "--webhook", url))
    hooked_s = time.monotonic() - start
    assert base_code == hooked_code == 0
    for base, hooked in zip(base_markers, hooked_markers, strict=True):
        assert verify_marker(base)["Files"] == verify_marker(hooked)["Files"]
    # Markers never wait for a receiver; at exit a failed one gets no grace, a hanging one SLOW_TRY_S at most.
    assert hooked_s < base_s + SLOW_TRY_S + 0.5, (base_s, hooked_s)
    out, err = capsys.readouterr()
    assert out.count("2 marker(s) written") == 2 and "abc" not in err and "Traceback" not in err


def test_a_failing_listener_never_stops_marking(output_dir: Path) -> None:
    def broken(path: Path, document: Any) -> None:
        raise RuntimeError("monitoring is broken")

    markers = _aged_batches(output_dir)
    journal = Journal.load(output_dir / ".scene-telemetry-sentinel.json")
    service = FsSentinel(output_dir, journal, quiet_s=0.3, on_marker=broken)
    assert service.run(once=True) == 2
    assert all(verify_marker(m)["Source"] == "sentinel" for m in markers)
    assert len(json.loads((output_dir / ".scene-telemetry-sentinel.json").read_text())["Groups"]) == 2


def test_live_listener_sees_each_marker_once(output_dir: Path) -> None:
    seen: list[tuple[Path, str]] = []
    journal = Journal.load(output_dir / ".scene-telemetry-sentinel.json")
    service = FsSentinel(output_dir, journal, quiet_s=0.2, on_marker=lambda p, d: seen.append((p, d["Source"])))
    with running(service):
        assert service.ready.wait(10)
        write_batch(output_dir / "x", "frame", 2)
        wait_until(lambda: len(seen) == 1)
        write_batch(output_dir / "x", "frame", 1, start=3)
        wait_until(lambda: len(seen) == 2)
    assert seen == [(output_dir / "x" / "frame.done", "sentinel")] * 2


# ---------------------------------------------------------------------------------------------- the real process


def _start(output_dir: Path, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SCENE_TELEMETRY_WEBHOOK_SECRET": SECRET}
    return start_sentinel(output_dir, log, "--quiet-seconds", QUIET, *extra, env=env)


@pytest.mark.skipif(os.name == "nt", reason="SIGTERM delivery is tested on POSIX")
@pytest.mark.parametrize("mode", ["ok", "hang"])
def test_service_posts_live_markers_serves_metrics_and_stops_within_2_s(
    output_dir: Path, tmp_path: Path, receiver_factory: Any, mode: str
) -> None:
    port = free_port()
    url, state = receiver_factory(mode)
    log = tmp_path / "sentinel.log"
    with reaped(_start(output_dir, log, "--metrics-port", str(port), "--webhook", url)) as process:
        wait_until(lambda: "sentinel watching" in log.read_text("utf-8", "replace"), timeout=20)
        write_batch(output_dir / "live", "frame", 2)
        wait_until((output_dir / "live" / "frame.done").exists)
        if mode == "ok":
            wait_until(lambda: len(state.bodies) == 1)
        got = wait_until(
            lambda: (
                (s := _samples(scrape(port))).get(("scene_telemetry_markers_total", (("source", "sentinel"),))) and s
            )
        )
        if mode == "hang":
            time.sleep(0.2)  # the event's first try is in flight, unanswered
        code, elapsed = stop_timed(process)
    text = log.read_text("utf-8")
    assert code == 0, text
    assert elapsed < 2.0, f"took {elapsed:.2f} s to stop"
    assert got[("scene_telemetry_markers_total", (("source", "sentinel"),))] == 1
    assert "Traceback" not in text and "token=abc" not in text
    if mode == "ok":
        [event] = state.payloads()
        assert state.bad_signatures == 0
        assert event["marker"]["path"] == str(output_dir / "live" / "frame.done")
    with pytest.raises(OSError):
        scrape(port)


@pytest.mark.skipif(os.name == "nt", reason="SIGTERM delivery is tested on POSIX")
def test_sigterm_with_a_stalled_server_and_a_hanging_receiver_still_stops_within_2_s(
    output_dir: Path, tmp_path: Path, receiver_factory: Any
) -> None:
    """The service alone may need 1.5 s (its request to the stalled server times out); the monitor's close
    then gets only what is left of the budget, and the metrics server stops at once."""
    url, _state = receiver_factory("hang")
    log = tmp_path / "sentinel.log"
    with fake_servers() as start:
        fake = start(Scenario(write_marker=False), output_dir=output_dir, stall_s={"GET /jobs": 30.0})
        port = free_port()
        with reaped(
            _start(output_dir, log, "--server", fake.url, "--metrics-port", str(port), "--webhook", url)
        ) as process:
            wait_until(lambda: any(p.startswith("/api/jobs") for _, p in fake.requests), timeout=20)
            assert _samples(scrape(port))  # serving while the request hangs
            code, elapsed = stop_timed(process)
    assert code == 0, log.read_text()
    assert elapsed < 2.0, f"took {elapsed:.2f} s to stop"


# ---------------------------------------------------------------------------------------------- server mode


def test_server_mode_posts_the_prompts_marker_and_reports_the_server_up(
    output_dir: Path, receiver_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCENE_TELEMETRY_WEBHOOK_SECRET", SECRET)
    port = free_port()
    url, state = receiver_factory("ok", metrics_port=port, scrape_after=1)
    graph = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 2, "color": 0}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "srv/frame"}},
    }
    with fake_servers() as start:
        fake = start(Scenario(write_marker=False), output_dir=output_dir)
        prompt_id = str(uuid.uuid4())
        ComfyClient(fake.url).submit(graph, prompt_id=prompt_id)
        wait_until(lambda: fake.history_entry(prompt_id) is not None)
        argv = _once(output_dir, "--server", fake.url, "--webhook", url, "--metrics-port", str(port))
        assert main(argv) == 0
    [event] = state.payloads()
    marker = output_dir / "srv" / "frame.done"
    assert event["marker"] == {
        "path": str(marker),
        "scene_id": None,
        "prompt_id": prompt_id,
        "source": "sentinel",
        "files": 2,
        "bytes": verify_marker(marker)["TotalBytes"],
    }
    got = _samples(state.metrics)
    assert got[("scene_telemetry_markers_total", (("source", "sentinel"),))] == 1
    assert got[("scene_telemetry_server_up", (("server", fake.url),))] == 1


# ---------------------------------------------------------------------------------------------- options


def test_bad_webhook_and_busy_port_are_one_line_exit_2(output_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(_once(output_dir, "--webhook", "ftp://user:topsecret@example.com/x"))
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "topsecret" not in err and "must be http:// or https://" in err
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert main(_once(output_dir, "--metrics-port", str(port))) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--metrics-port {port}: cannot listen" in err and "Traceback" not in err


def test_install_keeps_the_monitoring_options_in_the_service_command(tmp_path: Path) -> None:
    hook = "https://hooks.example.com/a?token=abc"
    command = service_command(
        ["--", "--output-dir", str(tmp_path), "--metrics-port", "9464", "--webhook", hook, "--webhook", "http://b/x"]
    )
    assert command[command.index("--metrics-port") + 1] == "9464"
    assert [command[i + 1] for i, word in enumerate(command) if word == "--webhook"] == [hook, "http://b/x"]
