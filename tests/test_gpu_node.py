"""GPUTelemetrySnapshot: pass-through, GPU_SNAPSHOT output, ui text, never cached."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator

import pytest
import torch
from gpu_fakes import MIB, FakeNvml, fake_comfy, fake_torch, rtx_4090
from scene_telemetry.nodes import NODE_CLASS_MAPPINGS, NODE_CLASSES
from scene_telemetry.nodes.gpu_snapshot import GPUTelemetrySnapshot
from scene_telemetry.telemetry import _gpu, stop_stale_sampling


@pytest.fixture(autouse=True)
def fresh_probes(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No cached NVML session and no ComfyUI unless a test installs one."""
    _gpu.reset_probe_state()
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setitem(sys.modules, "comfy", None)
    monkeypatch.setitem(sys.modules, "comfy.model_management", None)
    monkeypatch.setitem(sys.modules, "amdsmi", None)
    yield
    stop_stale_sampling()  # a 'before' without an 'after' leaves the peak sampler running (ComfyUI stops it)
    _gpu.reset_probe_state()


def test_registered_with_declared_interface() -> None:
    assert GPUTelemetrySnapshot in NODE_CLASSES
    assert NODE_CLASS_MAPPINGS["SceneTelemetry_GPUSnapshot"] is GPUTelemetrySnapshot
    assert GPUTelemetrySnapshot.DISPLAY_NAME == "GPU Telemetry Snapshot"
    inputs = GPUTelemetrySnapshot.INPUT_TYPES()["required"]
    assert inputs["value"][0] == "*" and inputs["label"] == ("STRING", inputs["label"][1])
    assert inputs["label"][1]["default"] == "before"
    assert GPUTelemetrySnapshot.RETURN_TYPES == ("*", "GPU_SNAPSHOT")
    assert GPUTelemetrySnapshot.RETURN_NAMES == ("value", "snapshot")
    assert callable(getattr(GPUTelemetrySnapshot(), GPUTelemetrySnapshot.FUNCTION))


def test_is_changed_is_nan_so_never_cached() -> None:
    # ComfyUI passes linked inputs as None to IS_CHANGED.
    value = GPUTelemetrySnapshot.IS_CHANGED(value=None, label="before")
    assert math.isnan(value) and value != value


def test_tensor_passes_through_unchanged_on_cpu() -> None:
    images = torch.rand(2, 8, 8, 3)
    copy = images.clone()
    out = GPUTelemetrySnapshot().snapshot(images, " after ")
    value, snap = out["result"]
    assert value is images and torch.equal(images, copy)
    assert snap["Label"] == "after" and snap["Source"] == "cpu"
    text = out["ui"]["text"]
    assert isinstance(text, list) and len(text) == 1
    ram = snap["Ram"]
    assert text[0] == f"after: cpu · RAM {ram['RamUsedMB']}/{ram['RamTotalMB']} MiB used · via cpu, 3 fallback note(s)"
    json.dumps(out["ui"])
    json.dumps(snap)


def test_ui_shows_device_usage_and_tier_with_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml([rtx_4090(free=22000 * MIB)]).module())
    out = GPUTelemetrySnapshot().snapshot({"any": "thing"}, "after")
    assert out["ui"]["text"] == ["after: cuda:0 NVIDIA GeForce RTX 4090 · 2564/24564 MiB used (device) · via nvml"]
    assert out["result"][0] == {"any": "thing"}


@pytest.mark.parametrize(("label", "resets"), [("before", [0]), ("Before", [0]), ("after", []), ("mid", [])])
def test_before_resets_torch_peaks_under_comfy_cuda(
    monkeypatch: pytest.MonkeyPatch, label: str, resets: list[int]
) -> None:
    comfy, mm = fake_comfy("cuda", 0)
    monkeypatch.setitem(sys.modules, "comfy", comfy)
    monkeypatch.setitem(sys.modules, "comfy.model_management", mm)
    fake, calls = fake_torch()
    monkeypatch.setitem(sys.modules, "torch", fake)
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml([rtx_4090()]).module())
    _, snap = GPUTelemetrySnapshot().snapshot("latent", label)["result"]
    assert calls.peak_resets == resets
    assert snap["Source"] == "nvml" and snap["Torch"]["PeakAllocatedMB"] == 9216
