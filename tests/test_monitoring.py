"""monitoring: signed webhook events in order, receivers that fail never slow the caller, metrics exposition."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import socket
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from scene_telemetry.monitoring import SIGNATURE_HEADER, Monitor, WebhookURLError, redact_url
from webhook_receiver import WebhookReceiver

SECRET = "s3cret-for-tests"
FAST = {"try_timeout_s": 0.5, "backoff_s": (0.05, 0.05)}


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver(path="/hooks/scene?token=abc") as state:
        yield state


def _scene(scene_id: str, reason: str = "success", attempts: int = 1, duration: float = 12.5) -> dict[str, Any]:
    return {
        "SceneId": scene_id,
        "PromptId": f"p-{scene_id}",
        "HistoryExitReason": reason,
        "ExitDetail": None,
        "DurationSeconds": duration,
        "SceneAttempts": attempts,
        "Frames": {"Count": 3, "TotalBytes": 4096},
        "GPU": {"Name": "NVIDIA H100 80GB HBM3", "VramTotal": 81559, "VramPeakMB": 20564},
    }


def _verify(headers: dict[str, str], body: bytes) -> bool:
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(headers.get(SIGNATURE_HEADER, ""), expected)


def _counts(monitor: Monitor) -> dict[str, float]:
    return {
        s.labels["outcome"]: s.value for s in monitor.metrics.webhooks.collect()[0].samples if s.name.endswith("_total")
    }


def test_signed_events_arrive_once_each_in_order(receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCENE_TELEMETRY_WEBHOOK_SECRET", SECRET)
    monitor = Monitor.from_options(None, [receiver.url])
    for scene_id in ("s01", "s02", "s03"):
        monitor.scene_ended(_scene(scene_id), run_id="r1")
    monitor.run_ended(run_id="r1", exit_code=0, scenes=3, failed=0, duration_seconds=40.0)
    monitor.close()
    assert len(receiver.events) == 4
    assert all(_verify(headers, body) for headers, body in receiver.events)
    bodies = [json.loads(body) for _, body in receiver.events]
    assert [b["sequence"] for b in bodies] == [1, 2, 3, 4]
    assert [b["event"] for b in bodies] == ["scene.ended"] * 3 + ["run.ended"]
    assert [b["scene"]["scene_id"] for b in bodies[:3]] == ["s01", "s02", "s03"]
    assert bodies[0]["scene"] == {
        "run_id": "r1",
        "scene_id": "s01",
        "prompt_id": "p-s01",
        "ok": True,
        "exit_reason": "success",
        "exit_detail": None,
        "duration_seconds": 12.5,
        "attempts": 1,
        "frames": 3,
        "bytes": 4096,
        "gpu": "NVIDIA H100 80GB HBM3",
        "vram_total_mb": 81559,
        "vram_peak_mb": 20564,
    }
    assert bodies[3]["run"]["exit_code"] == 0 and bodies[3]["schema"] == "scene-telemetry-event/1"
    assert len({h["X-Scene-Telemetry-Delivery"] for h, _ in receiver.events}) == 4
    assert _counts(monitor) == {"delivered": 4.0, "failed": 0.0, "dropped": 0.0}


def test_a_tampered_body_fails_verification(receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCENE_TELEMETRY_WEBHOOK_SECRET", SECRET)
    with Monitor.from_options(None, [receiver.url]) as monitor:
        monitor.scene_ended(_scene("s01"))
    (headers, body), *_ = receiver.events
    assert _verify(headers, body) and not _verify(headers, body.replace(b"s01", b"s02"))


def test_no_secret_no_signature_header(receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SCENE_TELEMETRY_WEBHOOK_SECRET", raising=False)
    with Monitor.from_options(None, [receiver.url]) as monitor:
        monitor.scene_ended(_scene("s01"))
    assert len(receiver.events) == 1 and SIGNATURE_HEADER not in receiver.events[0][0]


def test_sentinel_posts_each_marker(receiver: WebhookReceiver) -> None:
    marker = {"SceneId": "s01", "PromptId": None, "Source": "sentinel", "Files": [{"Name": "a.png", "Bytes": 7}] * 2}
    with Monitor(webhooks=[receiver.url], source="sentinel") as monitor:
        monitor.marker_written(marker, path="/out/s01/frame.done")
    body = json.loads(receiver.events[0][1])
    assert body["event"] == "marker.written" and body["source"] == "sentinel"
    assert body["marker"] == {
        "path": "/out/s01/frame.done",
        "scene_id": "s01",
        "prompt_id": None,
        "source": "sentinel",
        "files": 2,
        "bytes": 14,
    }


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/down"


@pytest.mark.parametrize("mode", ["500", "hang", "down"])
def test_failing_receivers_never_slow_the_caller(receiver: WebhookReceiver, mode: str) -> None:
    receiver.mode = mode
    url = _closed_port_url() if mode == "down" else receiver.url
    monitor = Monitor(webhooks=[url], **FAST)
    start = time.monotonic()
    for n in range(20):
        monitor.scene_ended(_scene(f"s{n:02d}", "executionError"))
    calls = time.monotonic() - start
    monitor.run_ended(run_id="r", exit_code=1, scenes=20, failed=20, duration_seconds=1.0)
    close_start = time.monotonic()
    monitor.close(grace_s=0.3)
    closing = time.monotonic() - close_start
    assert calls < 0.1, f"21 calls took {calls:.3f} s"
    assert closing < 0.3 + 2.5, f"close took {closing:.2f} s"
    counts = _counts(monitor)
    assert counts["delivered"] == 0 and counts["failed"] + counts["dropped"] == 21
    assert receiver.events == []


def test_a_500_is_retried_with_backoff_then_delivered_once(receiver: WebhookReceiver) -> None:
    receiver.mode = "500-twice"
    monitor = Monitor(webhooks=[receiver.url], **FAST)
    monitor.scene_ended(_scene("s01"))
    _deadline = time.monotonic() + 5
    while not receiver.events and time.monotonic() < _deadline:
        time.sleep(0.01)
    monitor.close()
    assert receiver.hits == 3 and len(receiver.events) == 1
    assert _counts(monitor) == {"delivered": 1.0, "failed": 0.0, "dropped": 0.0}


def test_three_500s_fail_the_event_and_the_next_one_still_goes(receiver: WebhookReceiver) -> None:
    receiver.mode = "500"
    monitor = Monitor(webhooks=[receiver.url], **FAST)
    monitor.scene_ended(_scene("s01"))
    _deadline = time.monotonic() + 5
    while _counts(monitor)["failed"] < 1 and time.monotonic() < _deadline:
        time.sleep(0.01)
    receiver.mode = "ok"
    monitor.scene_ended(_scene("s02"))
    while not receiver.events and time.monotonic() < _deadline:
        time.sleep(0.01)
    monitor.close()
    assert receiver.hits == 4  # three tries of s01, one of s02
    assert [json.loads(body)["scene"]["scene_id"] for _, body in receiver.events] == ["s02"]


def test_full_queue_drops_and_counts(receiver: WebhookReceiver, caplog: pytest.LogCaptureFixture) -> None:
    receiver.mode = "hang"
    monitor = Monitor(webhooks=[receiver.url], queue_size=2, **FAST)
    with caplog.at_level(logging.WARNING):
        for n in range(10):
            monitor.scene_ended(_scene(f"s{n}"))
    monitor.close(grace_s=0)
    assert _counts(monitor)["dropped"] >= 7
    assert "queue is full" in caplog.text


def test_urls_with_credentials_are_never_logged(receiver: WebhookReceiver, caplog: pytest.LogCaptureFixture) -> None:
    receiver.mode = "500"
    url = receiver.url.replace("http://", "http://alice:pa55word@") + "&sig=zzz"
    with caplog.at_level(logging.DEBUG):
        monitor = Monitor(webhooks=[url], **FAST)
        monitor.scene_ended(_scene("s01"))
        monitor.close(grace_s=1.0)
    assert "webhook http://***@127.0.0.1:" in caplog.text
    for secret in ("alice", "pa55word", "abc", "zzz"):
        assert secret not in caplog.text
    assert monitor.webhook_urls == [redact_url(url)] and "pa55word" not in monitor.webhook_urls[0]


@pytest.mark.parametrize(
    ("url", "safe"),
    [
        ("https://u:p@hooks.example.com/x?token=t&a=", "https://***@hooks.example.com/x?token=***&a=***"),
        ("http://[::1]:9000/h", "http://[::1]:9000/h"),
        ("https://hooks.example.com/a#frag", "https://hooks.example.com/a"),
    ],
)
def test_redact_url(url: str, safe: str) -> None:
    assert redact_url(url) == safe


@pytest.mark.parametrize("url", ["ftp://u:secretpw@host/x", "hooks.example.com/x?token=secretpw", "http://:80/"])
def test_bad_webhook_url_is_one_clear_error_without_secrets(url: str) -> None:
    with pytest.raises(WebhookURLError) as info:  # a good URL before it starts no thread (the suite checks)
        Monitor.from_options(None, ["http://127.0.0.1:9/ok", url])
    assert "secretpw" not in str(info.value) and "http" in str(info.value)


def test_metrics_exposition_parses_with_prometheus_parser() -> None:
    with Monitor.from_options(0, []) as monitor:
        monitor.server_up("http://user:pw@127.0.0.1:8188", True)
        monitor.scene_ended(_scene("s01", attempts=3, duration=42.0))
        monitor.scene_ended(_scene("s02", "maxWait", duration=700.0))
        monitor.marker_written({"Source": "node"})
        monitor.marker_written({"Source": "runner-forced"})
        text = urllib.request.urlopen(f"http://127.0.0.1:{monitor.metrics_port}/metrics", timeout=5).read().decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("scene_telemetry_scenes_total", (("exit_reason", "success"),))] == 1
    assert samples[("scene_telemetry_scenes_total", (("exit_reason", "maxWait"),))] == 1
    assert samples[("scene_telemetry_scene_retries_total", ())] == 2
    assert samples[("scene_telemetry_scene_duration_seconds_bucket", (("exit_reason", "success"), ("le", "60.0")))] == 1
    assert samples[("scene_telemetry_scene_duration_seconds_sum", (("exit_reason", "maxWait"),))] == 700.0
    assert samples[("scene_telemetry_markers_total", (("source", "runner-forced"),))] == 1
    assert samples[("scene_telemetry_server_up", (("server", "http://***@127.0.0.1:8188"),))] == 1


def test_metrics_port_in_use_is_an_oserror() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        with pytest.raises(OSError):
            Monitor.from_options(sock.getsockname()[1], [])
