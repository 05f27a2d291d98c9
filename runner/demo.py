"""The embedded default: run the pack's node classes in-process on synthetic frames.

Exactly what a ComfyUI graph does (the same node classes, called in graph
order), with numpy arrays standing in for IMAGE tensors and a given folder as
the output directory.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..nodes import NODE_CLASS_MAPPINGS
from ..nodes._comfy import FALLBACK_OUTPUT_ENV

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoResult:
    """Where the demo scene landed and what it holds."""

    folder: Path
    files: list[Path]
    outputs: dict[str, Any]


def synthetic_frames(frames: int, width: int, height: int) -> np.ndarray[Any, Any]:
    """A moving colour gradient, ``[frames, height, width, 3]`` float32 in 0..1."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    batch = np.empty((frames, height, width, 3), dtype=np.float32)
    for i in range(frames):
        phase = i / max(frames, 1)
        batch[i, :, :, 0] = (x / width + phase) % 1.0
        batch[i, :, :, 1] = y / height
        batch[i, :, :, 2] = 0.5 + 0.5 * np.sin(2 * np.pi * (x / width - phase))
    return batch


def _node(name: str) -> Any:
    return NODE_CLASS_MAPPINGS[f"SceneTelemetry_{name}"]()


def fresh_folder_name(out_dir: Path, scene_id: str) -> str:
    """*scene_id*, or ``<scene_id>-2``, ``-3`` … when that folder already holds something.

    A second demo into the same ``--out`` gets its own scene folder: frames piled up
    beside an earlier run's would be frames its marker does not list.
    """
    name, n = scene_id, 1
    while (out_dir / name).exists() and any((out_dir / name).iterdir()):
        n += 1
        name = f"{scene_id}-{n}"
    return name


def run_demo(out_dir: Path, frames: int, width: int, height: int, scene_id: str) -> DemoResult:
    """Run the graph EmptyImage-like → [snapshot] → WriteDoneMarker → [collector → validator] in a fresh folder."""
    out_dir.mkdir(parents=True, exist_ok=True)
    folder = fresh_folder_name(out_dir, scene_id)
    previous = os.environ.get(FALLBACK_OUTPUT_ENV)
    os.environ[FALLBACK_OUTPUT_ENV] = str(out_dir)
    try:
        outputs = _run_graph(synthetic_frames(frames, width, height), scene_id, folder)
    finally:
        if previous is None:
            os.environ.pop(FALLBACK_OUTPUT_ENV, None)
        else:
            os.environ[FALLBACK_OUTPUT_ENV] = previous
    marker = Path(outputs["done_marker"]["marker_path"])
    return DemoResult(marker.parent, sorted(marker.parent.iterdir()), outputs)


def _run_graph(images: Any, scene_id: str, folder: str) -> dict[str, Any]:
    outputs: dict[str, Any] = {}
    names = set(NODE_CLASS_MAPPINGS)
    before = None
    if "SceneTelemetry_GPUSnapshot" in names:
        images, before = _node("GPUSnapshot").snapshot(images, "before")["result"]
    done = _node("WriteDoneMarker").write(f"{folder}/frame", images=images, scene_id=scene_id)
    outputs["done_marker"] = done["result"][0]
    if "SceneTelemetry_GPUSnapshot" in names:
        _, after = _node("GPUSnapshot").snapshot(images, "after")["result"]
        if "SceneTelemetry_Collector" in names:
            collected = _node("Collector").collect(
                done_marker=outputs["done_marker"], scene_id=scene_id, gpu_before=before, gpu_after=after
            )
            outputs["telemetry"] = collected["result"][0]
            if "SceneTelemetry_RunSummaryValidator" in names:
                verdict = _node("RunSummaryValidator").validate(fail_on_mismatch=False, telemetry=outputs["telemetry"])
                outputs["validation"] = verdict["result"]
    return outputs
