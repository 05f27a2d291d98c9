"""/scene-telemetry/metrics: our counters, ComfyUI's queue and history, device VRAM, parsed as Prometheus does."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import types
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from gpu_fakes import MIB, FakeNvml, a100
from prometheus_client.parser import text_string_to_metric_families
from scene_telemetry.nodes import _routes
from scene_telemetry.telemetry import (
    _exposition,
    _gpu_probes,
    _recorder,
    device_memory_now,
    record_marker,
    record_scene,
    record_verdict,
    render_metrics,
)


@pytest.fixture(autouse=True)
def clean(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Empty recorder, no NVML session, no ComfyUI unless a test installs one."""
    _recorder.RECORDER.reset()
    _gpu_probes.reset_probe_state()
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setitem(sys.modules, "amdsmi", None)
    monkeypatch.setitem(sys.modules, "comfy.model_management", None)
    yield
    _recorder.RECORDER.reset()
    _gpu_probes.reset_probe_state()


class FakePromptQueue:
    """The attributes of ComfyUI 0.8.0's PromptQueue the scrape reads (execution.py ≈l.1110), with its mutex."""

    def __init__(self, history: int = 0, failed_every: int = 0) -> None:
        self.mutex = threading.RLock()
        self.queue: list[tuple[Any, ...]] = []
        self.currently_running: dict[int, tuple[Any, ...]] = {}
        self.history: dict[str, dict[str, Any]] = {}
        for n in range(history):
            status = "error" if failed_every and n % failed_every == 0 else "success"
            self.history[f"p{n}"] = {
                "prompt": (n, f"p{n}", {}, {}, ["9"]),
                "outputs": {"9": {"images": [{"filename": f"f{n}.png", "subfolder": "", "type": "output"}]}},
                "status": {"status_str": status, "completed": status == "success", "messages": []},
                "meta": {},
            }


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_recorded_node_work_is_exposed_with_conventional_names() -> None:
    record_marker(48, 48 * 1_500_000, 0.8)
    record_marker(2, 3000, 12.0)
    record_verdict(True)
    record_verdict(False)
    record_verdict(True)
    record_scene({"HistoryExitReason": "success", "DurationSeconds": 95.0, "GPU": {"VramPeakMB": 20564}})
    text = render_metrics(lambda: None, lambda: []).decode()
    got = samples(text)
    assert got[("scene_telemetry_markers_written_total", (("source", "node"),))] == 2
    assert got[("scene_telemetry_frames_written_total", ())] == 50
    assert got[("scene_telemetry_bytes_written_total", ())] == 72_003_000
    assert got[("scene_telemetry_save_seconds_bucket", (("le", "1.0"),))] == 1
    assert got[("scene_telemetry_save_seconds_count", ())] == 2
    assert got[("scene_telemetry_save_seconds_sum", ())] == pytest.approx(12.8)
    assert got[("scene_telemetry_validator_verdicts_total", (("verdict", "pass"),))] == 2
    assert got[("scene_telemetry_validator_verdicts_total", (("verdict", "fail"),))] == 1
    assert got[("scene_telemetry_collected_scenes_total", (("exit_reason", "success"),))] == 1
    assert got[("scene_telemetry_scene_duration_seconds_bucket", (("le", "60.0"),))] == 0
    assert got[("scene_telemetry_scene_duration_seconds_bucket", (("le", "120.0"),))] == 1
    peak_bucket = ("scene_telemetry_scene_vram_peak_bytes_bucket", (("le", str(float(24 << 30))),))
    assert got[peak_bucket] == 1 and got[("scene_telemetry_scene_vram_peak_bytes_sum", ())] == 20564 * MIB
    assert "# TYPE scene_telemetry_scene_duration_seconds histogram" in text
    assert "scene_telemetry_comfyui_queue_prompts" not in text  # no ComfyUI: no server families


def test_unlabelled_counters_start_at_zero() -> None:
    got = samples(render_metrics(lambda: None, lambda: []).decode())
    assert got[("scene_telemetry_frames_written_total", ())] == 0
    assert got[("scene_telemetry_save_seconds_count", ())] == 0


def test_queue_and_history_are_counted_without_the_workers_lock() -> None:
    queue = FakePromptQueue(history=10_000, failed_every=10)
    queue.queue = [(5, "q5", {}, {}, []), (6, "q6", {}, {}, [])]
    queue.currently_running = {4: (4, "q4", {}, {}, [])}
    queue.history["odd"] = {"prompt": (), "outputs": {}, "status": None}
    held, release = threading.Event(), threading.Event()

    def worker() -> None:  # the prompt worker inside task_done(), holding the queue's mutex
        with queue.mutex:
            held.set()
            release.wait(5)

    thread = threading.Thread(target=worker)
    thread.start()
    held.wait(5)
    try:
        start = time.monotonic()
        got = samples(render_metrics(lambda: queue, lambda: []).decode())
        elapsed = time.monotonic() - start
    finally:
        release.set()
        thread.join()
    assert elapsed < 1.0, "the scrape waited for the worker's lock"
    assert got[("scene_telemetry_comfyui_queue_prompts", (("state", "pending"),))] == 2
    assert got[("scene_telemetry_comfyui_queue_prompts", (("state", "running"),))] == 1
    assert got[("scene_telemetry_comfyui_history_prompts", (("status", "success"),))] == 9000
    assert got[("scene_telemetry_comfyui_history_prompts", (("status", "error"),))] == 1000
    assert got[("scene_telemetry_comfyui_history_prompts", (("status", "unknown"),))] == 1


def test_history_changing_during_scrapes_never_breaks_them() -> None:
    queue = FakePromptQueue(history=10_000)
    stop = threading.Event()

    def task_done_loop() -> None:  # ComfyUI evicts the oldest entry and adds the new one
        n = 10_000
        while not stop.is_set():
            queue.history.pop(next(iter(queue.history)))
            queue.history[f"p{n}"] = {"prompt": (), "outputs": {}, "status": {"status_str": "success"}}
            n += 1

    thread = threading.Thread(target=task_done_loop)
    thread.start()
    try:
        for _ in range(30):
            _pending, _running, counts = _exposition.queue_counts(queue)
            assert sum(counts.values()) in (9_999, 10_000)
    finally:
        stop.set()
        thread.join()


def test_device_vram_of_every_nvml_device(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = FakeNvml([a100("GPU-aaaa", 60000 * MIB), a100("GPU-bbbb", 10000 * MIB)])
    monkeypatch.setitem(sys.modules, "pynvml", nvml.module())
    rows = device_memory_now()
    assert [(r["index"], r["uuid"], r["source"]) for r in rows] == [(0, "GPU-aaaa", "nvml"), (1, "GPU-bbbb", "nvml")]
    got = samples(render_metrics(lambda: None, device_memory_now).decode())
    labels = (("index", "1"), ("name", "NVIDIA A100-SXM4-80GB"), ("uuid", "GPU-bbbb"))
    assert got[("scene_telemetry_device_vram_total_bytes", labels)] == 85899345920
    assert got[("scene_telemetry_device_vram_used_bytes", labels)] == 85899345920 - 10000 * MIB


def test_cpu_machine_has_no_vram_series() -> None:
    assert device_memory_now() == []  # this machine: no NVIDIA driver, torch not on an accelerator


# --- the route on a real aiohttp app, registered as on ComfyUI's PromptServer ---------------------------


def _install_prompt_server(monkeypatch: pytest.MonkeyPatch, queue: FakePromptQueue) -> web.RouteTableDef:
    routes = web.RouteTableDef()
    server = types.ModuleType("server")
    server.PromptServer = types.SimpleNamespace(  # type: ignore[attr-defined]
        instance=types.SimpleNamespace(routes=routes, prompt_queue=queue)
    )
    monkeypatch.setitem(sys.modules, "server", server)
    return routes


def _serve_and_get(routes: web.RouteTableDef, path: str) -> tuple[int, str, str]:
    async def scenario() -> tuple[int, str, str]:
        app = web.Application()
        app.add_routes(routes)
        async with TestClient(TestServer(app)) as client:
            reply = await client.get(path)
            return reply.status, reply.headers["Content-Type"], await reply.text()

    return asyncio.run(scenario())


def test_route_serves_parseable_exposition(monkeypatch: pytest.MonkeyPatch) -> None:
    queue = FakePromptQueue(history=3)
    routes = _install_prompt_server(monkeypatch, queue)
    monkeypatch.setattr(_routes, "_devices", lambda: [])
    assert _routes.register_routes() is True
    record_marker(3, 300, 0.1)
    status, content_type, text = _serve_and_get(routes, "/scene-telemetry/metrics")
    assert status == 200 and content_type.startswith("text/plain; version=0.0.4")
    got = samples(text)
    assert got[("scene_telemetry_markers_written_total", (("source", "node"),))] == 1
    assert got[("scene_telemetry_comfyui_history_prompts", (("status", "success"),))] == 3


def test_route_failure_is_a_500_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    routes = _install_prompt_server(monkeypatch, FakePromptQueue())

    def broken() -> list[dict[str, Any]]:
        raise RuntimeError("probe exploded")

    monkeypatch.setattr(_routes, "_devices", broken)
    _routes.register_routes()
    status, _, text = _serve_and_get(routes, "/scene-telemetry/metrics")
    assert status == 500 and text == "scene-telemetry metrics failed: probe exploded\n"


def test_not_under_comfyui_registers_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "server", raising=False)
    assert _routes.register_routes() is False
    assert "server" not in sys.modules


def test_own_registry_never_the_global_one() -> None:
    from prometheus_client import REGISTRY, generate_latest

    record_marker(1, 1, 0.1)
    render_metrics(lambda: None, lambda: [])
    assert b"scene_telemetry_" not in generate_latest(REGISTRY)


def _brute(history: dict[str, Any]) -> dict[str, int]:
    counts = {"success": 0, "error": 0, "unknown": 0}
    for entry in history.values():
        status = (entry.get("status") or {}).get("status_str")
        counts[status if status in ("success", "error") else "unknown"] += 1
    return counts


def test_history_counter_follows_every_kind_of_change() -> None:
    queue = FakePromptQueue(history=50, failed_every=7)
    history = queue.history
    counter = _exposition.HistoryCounter()
    assert counter.count(history) == _brute(history)
    for n in range(5):  # ComfyUI at its limit: evict the oldest, append the newest
        history.pop(next(iter(history)))
        history[f"new{n}"] = {"status": {"status_str": "error"}}
    assert counter.count(history) == _brute(history)
    history.pop("p20")  # POST /history {"delete": [...]}
    assert counter.count(history) == _brute(history)
    history["p30"] = {"status": {"status_str": "error"}}  # a client reused a prompt_id: replaced in place
    assert counter.count(history) == _brute(history)
    history["p31"]["status"] = None
    history["p31"] = dict(history["p31"])
    assert counter.count(history) == _brute(history)
    history.clear()  # POST /history {"clear": true}
    assert counter.count(history) == {"success": 0, "error": 0, "unknown": 0}
    history["again"] = {"status": {"status_str": "success"}}
    assert counter.count(history) == {"success": 1, "error": 0, "unknown": 0}
