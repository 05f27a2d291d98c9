"""The peak-memory sampler: peaks between 'before' and 'after', and stops on error, interrupt and time limit."""

from __future__ import annotations

import copy
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from gpu_fakes import MIB, FakeNvml, fake_comfy, rtx_4090
from run_factory import make_run
from scene_telemetry.nodes import _comfy
from scene_telemetry.nodes.gpu_snapshot import GPUTelemetrySnapshot
from scene_telemetry.telemetry import (
    CONTRACT_VERSION,
    _gpu,
    _peak,
    contract_errors,
    finish_peak_sampling,
    gpu_contract_fields,
    load_schema,
    start_peak_sampling,
    stop_stale_sampling,
)

FAST = 0.01


@pytest.fixture(autouse=True)
def clean_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No cached NVML, no ComfyUI, no sampler left over."""
    _gpu.reset_probe_state()
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setitem(sys.modules, "comfy", None)
    monkeypatch.setitem(sys.modules, "comfy.model_management", None)
    monkeypatch.setitem(sys.modules, "amdsmi", None)
    monkeypatch.setitem(sys.modules, "server", None)
    yield
    stop_stale_sampling()
    _gpu.reset_probe_state()


def _cuda_with_nvml(monkeypatch: pytest.MonkeyPatch) -> FakeNvml:
    comfy, mm = fake_comfy("cuda", 0)
    monkeypatch.setitem(sys.modules, "comfy", comfy)
    monkeypatch.setitem(sys.modules, "comfy.model_management", mm)
    nvml = FakeNvml([rtx_4090(free=22000 * MIB)])
    monkeypatch.setitem(sys.modules, "pynvml", nvml.module())
    return nvml


def _wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


def _peak_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "scene-telemetry-peak"]


def test_records_the_device_peak_between_before_and_after(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = _cuda_with_nvml(monkeypatch)
    gpu = nvml.gpus[0]
    assert start_peak_sampling("p1", interval_s=FAST) == []
    reads = nvml.memory_reads
    _wait_for(lambda: nvml.memory_reads >= reads + 3)
    gpu.free = 2000 * MIB  # the sampler step: 22564 MiB used for a moment
    _wait_for(lambda: nvml.memory_reads >= reads + 8)
    gpu.free = 21000 * MIB
    _wait_for(lambda: nvml.memory_reads >= reads + 12)
    peak = finish_peak_sampling("p1")
    assert peak is not None and peak["Note"] is None
    assert peak["VramPeakMB"] == 24564 - 2000 and peak["Source"] == "nvml"
    assert peak["Samples"] >= 12 and peak["IntervalS"] == FAST
    assert peak["RssPeakMB"] is not None and peak["RssPeakMB"] > 0
    assert _peak_threads() == []


def test_cpu_device_samples_process_rss_only(monkeypatch: pytest.MonkeyPatch) -> None:
    comfy, mm = fake_comfy("cpu", None)
    monkeypatch.setitem(sys.modules, "comfy", comfy)
    monkeypatch.setitem(sys.modules, "comfy.model_management", mm)
    start_peak_sampling("p1", interval_s=FAST)
    ballast = bytearray(64 * MIB)  # touched pages raise RSS while the sampler runs
    for i in range(0, len(ballast), 4096):
        ballast[i] = 1
    time.sleep(0.1)
    rss_with_ballast = _peak.process_rss_bytes()
    del ballast
    peak = finish_peak_sampling("p1")
    assert peak is not None and rss_with_ballast is not None
    assert peak["VramPeakMB"] is None and peak["Source"] == "none"
    assert peak["RssPeakMB"] >= (rss_with_ballast // MIB) - 1


def test_prompt_error_stops_the_sampler_and_after_gets_nulls_with_a_note(monkeypatch: pytest.MonkeyPatch) -> None:
    _cuda_with_nvml(monkeypatch)
    outcome: list[str | None] = [None]
    start_peak_sampling("p1", interval_s=FAST, ended=lambda: outcome[0], check_every_s=FAST)
    outcome[0] = "prompt p1 failed with an error before its 'after' snapshot ran"
    _wait_for(lambda: _peak_threads() == [])  # ends itself: no 'after' needed
    peak = finish_peak_sampling("p1")
    assert peak is not None
    assert (peak["VramPeakMB"], peak["RssPeakMB"], peak["Samples"]) == (None, None, None)
    assert "failed with an error" in peak["Note"]


def test_time_limit_ends_a_sampler_nobody_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    _cuda_with_nvml(monkeypatch)
    start_peak_sampling("p1", interval_s=FAST, max_seconds=0.05)
    _wait_for(lambda: _peak_threads() == [])
    peak = finish_peak_sampling("p1")
    assert peak is not None and peak["VramPeakMB"] is None and "longer than" in peak["Note"]


def test_next_before_supersedes_a_stale_sampler(monkeypatch: pytest.MonkeyPatch) -> None:
    _cuda_with_nvml(monkeypatch)
    start_peak_sampling("p1", interval_s=FAST)
    first = _peak.active_sampler()
    start_peak_sampling("p2", interval_s=FAST)
    assert first is not None and not first.running and len(_peak_threads()) == 1
    peak = finish_peak_sampling("p2")
    assert peak is not None and peak["Note"] is None and peak["VramPeakMB"] == 24564 - 22000


def test_after_of_another_prompt_gets_nulls(monkeypatch: pytest.MonkeyPatch) -> None:
    _cuda_with_nvml(monkeypatch)
    start_peak_sampling("p1", interval_s=FAST)
    peak = finish_peak_sampling("p2")
    assert peak is not None and peak["VramPeakMB"] is None and "belonged to prompt p1" in peak["Note"]
    assert _peak_threads() == []


def test_after_without_a_sampler_adds_nothing() -> None:
    assert finish_peak_sampling("p1") is None


def test_a_failing_read_is_a_missing_sample_not_a_dead_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}

    def flaky() -> int | None:
        calls["n"] += 1
        if calls["n"] % 2:
            raise OSError("GPU is lost")
        return 5 * MIB

    sampler = _peak.PeakSampler(prompt_id="p", read_vram=flaky, read_rss=None, source="nvml", interval_s=FAST)
    sampler.start()
    _wait_for(lambda: calls["n"] >= 6)
    result = sampler.stop()
    assert result.vram_peak_bytes == 5 * MIB and result.ended is None and not sampler.running


# --- the ComfyUI hook: the prompt disappears from the server's running list ---------------------------


class _FakeQueue:
    """The two attributes of ComfyUI 0.8.0's PromptQueue the hook reads (execution.py ≈l.1117)."""

    def __init__(self) -> None:
        self.currently_running: dict[int, tuple[Any, ...]] = {}
        self.history: dict[str, dict[str, Any]] = {}


def _install_server(monkeypatch: pytest.MonkeyPatch, queue: _FakeQueue) -> None:
    server = types.ModuleType("server")
    server.PromptServer = types.SimpleNamespace(instance=types.SimpleNamespace(prompt_queue=queue))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "server", server)


def _history_entry(prompt_id: str, event: str) -> dict[str, Any]:
    status = "success" if event == "execution_success" else "error"
    messages = [["execution_start", {"prompt_id": prompt_id}], [event, {"prompt_id": prompt_id}]]
    return {"status": {"status_str": status, "completed": status == "success", "messages": messages}}


@pytest.mark.parametrize(
    ("event", "said"), [("execution_interrupted", "was interrupted"), ("execution_error", "failed with an error")]
)
def test_node_sampler_stops_when_the_prompt_ends_without_after(
    monkeypatch: pytest.MonkeyPatch, event: str, said: str
) -> None:
    _cuda_with_nvml(monkeypatch)
    queue = _FakeQueue()
    queue.currently_running[0] = (0, "p1", {}, {"create_time": 1}, ["9"])
    _install_server(monkeypatch, queue)
    monkeypatch.setattr(_comfy, "executing_context", lambda: ("p1", "4"))
    monkeypatch.setattr(_peak, "DEFAULT_INTERVAL_S", FAST)
    monkeypatch.setattr(_peak, "DEFAULT_CHECK_EVERY_S", FAST)
    GPUTelemetrySnapshot().snapshot("model", "before")
    assert len(_peak_threads()) == 1
    time.sleep(0.05)
    assert len(_peak_threads()) == 1, "a running prompt keeps its sampler"
    # ComfyUI's task_done: the item leaves currently_running, the history entry records how it ended.
    del queue.currently_running[0]
    queue.history["p1"] = _history_entry("p1", event)
    _wait_for(lambda: _peak_threads() == [])
    # A later prompt's 'after' (or a re-run) sees why the peak is missing.
    out = GPUTelemetrySnapshot().snapshot("image", "after")
    _, snap = out["result"]
    assert snap["Peak"]["VramPeakMB"] is None and said in snap["Peak"]["Note"]
    assert any(said in note for note in snap["FallbackNotes"])
    assert "peak unknown" in out["ui"]["text"][0]


def test_node_after_shows_and_records_the_peak(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = _cuda_with_nvml(monkeypatch)
    monkeypatch.setattr(_comfy, "executing_context", lambda: ("p1", "4"))
    monkeypatch.setattr(_peak, "DEFAULT_INTERVAL_S", FAST)
    _, before = GPUTelemetrySnapshot().snapshot("model", "before")["result"]
    reads = nvml.memory_reads
    nvml.gpus[0].free = 4000 * MIB
    _wait_for(lambda: nvml.memory_reads >= reads + 3)
    nvml.gpus[0].free = 20000 * MIB
    out = GPUTelemetrySnapshot().snapshot("image", "after")
    _, after = out["result"]
    assert after["Peak"]["VramPeakMB"] == 24564 - 4000
    assert " · peak 20564 MiB VRAM, " in out["ui"]["text"][0]
    gpu, system = gpu_contract_fields(before, after)
    assert gpu["VramPeakMB"] == 20564 and gpu["VramPeakSamples"] >= 3 and gpu["VramPeakIntervalS"] == FAST
    assert system["RssPeakMB"] == after["Peak"]["RssPeakMB"]


# --- contract 1.1 ------------------------------------------------------------------------------------------


def test_contract_minor_version_is_declared_once() -> None:
    assert load_schema("common")["x-contract-version"] == CONTRACT_VERSION == "1.1"
    text = (Path(__file__).resolve().parents[1] / "TELEMETRY_CONTRACT.md").read_text("utf-8")
    assert text.startswith(f"# Telemetry contract v{CONTRACT_VERSION} ")


def test_v1_0_documents_still_validate_and_1_1_documents_validate(output_dir: Path) -> None:
    scene = make_run(output_dir).scene
    assert scene["GPU"]["VramPeakMB"] is None  # hand-built snapshots without a sampler: null, no note
    old = copy.deepcopy(scene)
    for key in ("VramPeakMB", "VramPeakSamples", "VramPeakIntervalS"):
        del old["GPU"][key]
    del old["System"]["RssPeakMB"]
    assert contract_errors(old, "scene-telemetry") == []
    new = copy.deepcopy(scene)
    new["GPU"].update(VramPeakMB=20564, VramPeakSamples=412, VramPeakIntervalS=0.1)
    new["System"]["RssPeakMB"] = 3120
    assert contract_errors(new, "scene-telemetry") == []
    new["GPU"]["VramPeakIntervalS"] = 0
    assert contract_errors(new, "scene-telemetry") == [
        "GPU.VramPeakIntervalS: 0 is less than or equal to the minimum of 0"
    ]
