"""Real run folders for collector/summary/validator tests, and ways to tamper with them.

:func:`make_run` writes real frames and a real marker (WriteDoneMarker's library
function), then runs the real collector on hand-built GPU snapshots of the
GPU_SNAPSHOT shape (the GPU is not what these tests are about). :func:`write_pair`
writes purpose-built (possibly bad) documents *without* the writer's checks.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scene_telemetry.telemetry._collect import collect_scene
from scene_telemetry.telemetry._done import SceneContext, write_frames_with_marker
from scene_telemetry.telemetry._layout import ARTIFACT_METADATA_NAME, RUN_SUMMARY_NAME, telemetry_file_name
from scene_telemetry.telemetry._meta import iso_utc, utc_now
from scene_telemetry.telemetry._summary import render_summary

POLICY = {
    "max_wait_seconds": 600,
    "history_poll_interval_seconds": 2,
    "max_attempt_count": 0,
    "post_execution_timeout_seconds": 30,
    "scene_retry_budget": 1,
}
"""The seed runner's defaults (runner/policy.py)."""

NOTES = ("nvml: NVML Shared Library Not Found", "amdsmi: amdsmi is not installed")


def snapshot(label: str, used: int, free: int, notes: tuple[str, ...] = (), **overrides: Any) -> dict[str, Any]:
    """A GPU_SNAPSHOT as GPUTelemetrySnapshot emits it (an H100 answered by torch, device basis)."""
    snap: dict[str, Any] = {
        "Label": label,
        "TakenAt": iso_utc(utc_now()),
        "MonotonicS": time.monotonic(),
        "Source": "torch",
        "VramBasis": "device",
        "Device": {
            "Name": "NVIDIA H100 80GB HBM3",
            "Type": "cuda",
            "Index": 0,
            "Uuid": "GPU-5c9a1e2b-0000-1111-2222-333344445555",
            "DriverVersion": None,
            "VramTotalMB": 81559,
            "VramUsedMB": used,
            "VramFreeMB": free,
        },
        "Torch": {"PeakAllocatedMB": 1200, "PeakReservedMB": 1536},
        "Devices": [{"Index": 0, "Name": "NVIDIA H100 80GB HBM3", "Uuid": None, "VramTotal": 81559}],
        "Ram": {"RamTotalMB": 128000, "RamFreeMB": 100000, "RamUsedMB": 28000},
        "FallbackNotes": list(notes),
    }
    snap.update(overrides)
    return snap


@dataclass
class Run:
    """A written run folder and its documents."""

    run_dir: Path
    marker: dict[str, Any]
    scene: dict[str, Any]

    @property
    def metadata_path(self) -> Path:
        return self.run_dir / ARTIFACT_METADATA_NAME

    @property
    def summary_path(self) -> Path:
        return self.run_dir / RUN_SUMMARY_NAME

    @property
    def telemetry_path(self) -> Path:
        return self.run_dir / telemetry_file_name(self.scene["SceneId"])

    def metadata(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.metadata_path.read_text("utf-8"))
        return data

    def summary(self) -> str:
        return self.summary_path.read_text("utf-8")


def make_run(
    output_dir: Path,
    *,
    scene_id: str = "s01",
    frames: int = 3,
    policy: dict[str, Any] | None = POLICY,
    notes: tuple[str, ...] = NOTES,
    prompt_id: str | None = "prompt-1",
) -> Run:
    """Frames + marker + the collector's three files, all real."""
    before = snapshot("before", 1000, 80559, notes)
    images = np.random.default_rng(0).random((frames, 8, 12, 3), dtype=np.float32)
    context = SceneContext(prompt_id=prompt_id, node_id="3", scene_id=scene_id)
    done = write_frames_with_marker(images, output_dir, f"{scene_id}/frame", context=context, workers=1)
    after = snapshot("after", 3000, 78559, notes)
    scene, files = collect_scene(
        marker=done.as_output(),
        scene_id=scene_id,
        gpu_before=before,
        gpu_after=after,
        policy=policy,
        prompt_id=prompt_id,
        queue_start_ms=time.time() * 1000 - 5000,
        comfyui_version="0.8.0",
    )
    return Run(files.run_dir, done.as_output(), scene)


def write_pair(run: Run, metadata: dict[str, Any], *, summary: str | None = None) -> None:
    """Write *metadata*, its telemetry files and a summary (rendered from it unless given), unchecked."""
    run.metadata_path.write_text(json.dumps(metadata, indent=2), "utf-8")
    for scene in metadata["Scenes"]:
        (run.run_dir / telemetry_file_name(scene["SceneId"])).write_text(json.dumps(scene, indent=2), "utf-8")
    run.summary_path.write_text(summary if summary is not None else render_summary(metadata), "utf-8")


def edited(metadata: dict[str, Any], **scene_fields: Any) -> dict[str, Any]:
    """A deep copy with top-level fields of the first scene replaced."""
    result = copy.deepcopy(metadata)
    result["Scenes"][0].update(scene_fields)
    return result


def replace_line(text: str, old: str, new: str | None) -> str:
    """Replace (or with None, drop) one whole summary line, insisting it exists exactly once."""
    lines = text.splitlines()
    assert lines.count(old) == 1, f"{old!r} occurs {lines.count(old)} times"
    kept = [line if line != old else new for line in lines]
    return "\n".join(line for line in kept if line is not None) + "\n"
