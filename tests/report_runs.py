"""Run folders for the report's tests and benchmark: runner-style, farm-style, editor, sentinel.

Frames and markers are real (WriteDoneMarker's library function), every scene
document comes from the real collector function and then gets a headless
runner's fields, the way ``scene-telemetry run`` merges them. Times are laid out
on a synthetic clock ending now, so the timeline has something to show.

``GPU.VramPeakMB`` and a farm's per-scene ``ServerUrl``/``ServerInstanceId``/``ServerDevice``
(contract 1.1) are written when asked for. :func:`write_unchecked` writes documents
*without* the writer's contract check, for tests of bad input.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
from run_factory import POLICY, snapshot
from scene_telemetry.telemetry import (
    SceneContext,
    atomic_write_text,
    build_marker,
    build_run_metadata,
    build_scene_telemetry,
    commit_marker,
    render_summary,
    telemetry_file_name,
    write_frames_with_marker,
    write_run,
)

FAILURE_DETAIL = "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB (node 3 KSampler)"


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _frames(count: int, width: int, height: int, seed: int) -> np.ndarray[Any, Any]:
    """A smooth gradient per scene (so PNGs stay small and thumbnails look like something)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    hue = (seed * 0.137) % 1.0
    batch = np.empty((count, height, width, 3), dtype=np.float32)
    for i in range(count):
        phase = i / max(count, 1)
        batch[i, :, :, 0] = (x / width + hue + phase) % 1.0
        batch[i, :, :, 1] = y / height
        batch[i, :, :, 2] = (hue + 0.5 * phase) % 1.0
    return batch


@dataclass(frozen=True)
class Layout:
    """What :func:`make_runner_run` writes."""

    scenes: int = 10
    frames: int = 3
    width: int = 64
    height: int = 36
    fail_every: int = 0
    """Every n-th scene ends ``executionError`` without frames (0: none)."""
    servers: int = 0
    """Record a farm server per scene, round-robin over this many (0: a single-server run)."""
    peak: bool = False
    """Record ``GPU.VramPeakMB``."""
    scene_prefix: str = "scene-"


def _runner_fields(scene: dict[str, Any], index: int, start: datetime, seconds: float) -> None:
    """Overlay the fields a headless runner owns, on a synthetic clock."""
    queued = start
    started = queued + timedelta(seconds=0.2 + 0.05 * (index % 4))
    durable = queued + timedelta(seconds=seconds - 0.1)
    ended = queued + timedelta(seconds=seconds)
    scene.update(
        Writer="runner",
        QueueStart=_iso(queued),
        ExecutionStartedAt=_iso(started),
        FramesDurableAt=_iso(durable),
        QueueEnd=_iso(ended),
        DurationSeconds=round(seconds, 3),
        HistoryAttempts=1 + index % 3,
        HistoryExitReason="success",
        ExecutionSuccessDetected=True,
        ExecutionSuccessAt=_iso(durable),
        HistoryPostExecutionTimeoutReached=False,
        SceneAttempts=1,
        DoneMarkerDetected=True,
        DoneMarkerWaitSeconds=0.004,
        ForcedCopyTriggered=False,
    )


def _failed(template: dict[str, Any], scene_id: str) -> dict[str, Any]:
    scene = copy.deepcopy(template)
    scene.update(
        SceneId=scene_id,
        PromptId=f"prompt-{scene_id}",
        HistoryExitReason="executionError",
        ExecutionSuccessDetected=False,
        ExecutionSuccessAt=None,
        DoneMarkerDetected=False,
        DoneMarkerWaitSeconds=None,
        SceneAttempts=2,
        ExitDetail=FAILURE_DETAIL,
        FramesDurableAt=None,
        Frames=None,
    )
    return scene


def make_runner_run(run_dir: Path, layout: Layout = Layout()) -> Path:
    """A headless run folder: ``RUN_DIR/<scene>/frame_*.png`` + ``frame.done``, telemetry files, metadata, summary."""
    durations = [2.0 + (i * 7919 % 23) / 2.0 for i in range(layout.scenes)]
    lanes = max(layout.servers, 1)
    lane_clock = [0.0] * lanes
    span = max(sum(d + 0.3 for d in durations[lane::lanes]) for lane in range(lanes)) + 5
    origin = datetime.now(timezone.utc) - timedelta(seconds=span)  # every scene ends before it is written
    scenes: list[dict[str, Any]] = []
    template: dict[str, Any] | None = None
    for index in range(layout.scenes):
        scene_id = f"{layout.scene_prefix}{index:04d}"
        lane = index % lanes
        start = origin + timedelta(seconds=lane_clock[lane])
        lane_clock[lane] += durations[index] + 0.3
        if template is not None and layout.fail_every and index % layout.fail_every == layout.fail_every - 1:
            scene = _failed(template, scene_id)
            _runner_fields(scene, index, start, durations[index])
            scene.update(HistoryExitReason="executionError", FramesDurableAt=None, ExecutionSuccessAt=None)
            scene.update(ExecutionSuccessDetected=False, DoneMarkerDetected=False, DoneMarkerWaitSeconds=None)
            scene["SceneAttempts"] = 2
        else:
            scene = _succeeded(run_dir, scene_id, index, layout)
            _runner_fields(scene, index, start, durations[index])
            template = template or scene
        if layout.servers:  # as a farm run records them (contract 1.1)
            scene.update(
                ServerUrl=f"http://gpu-{lane}.farm.local:8188",
                ServerInstanceId=f"srv-{lane:012x}",
                ServerDevice=f"cuda:0 NVIDIA H100 80GB HBM3 (box {lane})",
            )
        if layout.peak and scene["GPU"]["VramAfterMB"] is not None:
            scene["GPU"]["VramPeakMB"] = scene["GPU"]["VramAfterMB"] + 4000 + 97 * (index % 50)
        scenes.append(scene)
    write_run(run_dir, build_run_metadata(scenes, run_id="bench-run", writer="runner", comfyui_version="0.8.0"))
    return run_dir


def _succeeded(run_dir: Path, scene_id: str, index: int, layout: Layout) -> dict[str, Any]:
    prompt_id = f"prompt-{scene_id}"
    context = SceneContext(prompt_id=prompt_id, node_id="9", scene_id=scene_id)
    images = _frames(layout.frames, layout.width, layout.height, index)
    done = write_frames_with_marker(images, run_dir, f"{scene_id}/frame", context=context, workers=1)
    used = 9000 + 211 * (index % 40)
    before = snapshot("before", used, 81559 - used)
    after = snapshot("after", used + 30000 + 113 * (index % 70), 81559 - used - 30000 - 113 * (index % 70))
    return build_scene_telemetry(
        marker=done.as_output(),
        scene_id=scene_id,
        gpu_before=before,
        gpu_after=after,
        policy=POLICY,
        prompt_id=prompt_id,
        queue_start_ms=None,
        execution_started_at=None,
        started_monotonic=None,
        comfyui_version="0.8.0",
    )


def write_unchecked(run_dir: Path, metadata: dict[str, Any]) -> None:
    """Metadata, telemetry files and the summary rendered from it, with no contract check."""
    run_dir.mkdir(parents=True, exist_ok=True)
    for scene in metadata["Scenes"]:
        atomic_write_text(run_dir / telemetry_file_name(str(scene["SceneId"])), json.dumps(scene, indent=2))
    atomic_write_text(run_dir / "run-summary.txt", render_summary(metadata))
    atomic_write_text(run_dir / "artifact-metadata.json", json.dumps(metadata, indent=2))


@dataclass(frozen=True)
class _File:
    name: str
    size: int


def make_sentinel_folder(folder: Path, *, scenes: int = 2, frames: int = 3) -> Path:
    """Frames and a ``Source: sentinel`` marker per subfolder, nothing else (no telemetry)."""
    from PIL import Image

    for index in range(scenes):
        sub = folder / f"shot{index:02d}"
        sub.mkdir(parents=True)
        files = []
        for frame in range(frames):
            path = sub / f"ComfyUI_{frame + 1:05d}_.png"
            Image.new("RGB", (48, 27), (40 * index % 255, 90, 30 * frame % 255)).save(path)
            files.append(_File(path.name, path.stat().st_size))
        body = build_marker(
            files,
            source="sentinel",
            prefix=f"shot{index:02d}/ComfyUI",
            subfolder=f"shot{index:02d}",
            width=48,
            height=27,
            parameters={"QuietSeconds": 5},
        )
        commit_marker(sub / "ComfyUI.done", body)
    return folder
