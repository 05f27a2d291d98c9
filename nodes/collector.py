"""SceneTelemetryCollector: the scene's telemetry, artifact-metadata.json and run-summary.txt beside the frames."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..telemetry import collect_scene, ensure_inside, parse_policy_text, record_scene, stop_stale_sampling
from . import _comfy
from ._names import CATEGORY, display_name, node_id

logger = logging.getLogger(__name__)


class SceneTelemetryCollector:
    """Collects one scene's record once its frames are durable and writes the run files atomically."""

    NAME = node_id("Collector")
    DISPLAY_NAME = display_name("Scene Telemetry Collector")
    CATEGORY = CATEGORY
    FUNCTION = "collect"
    RETURN_TYPES = ("SCENE_TELEMETRY",)
    RETURN_NAMES = ("telemetry",)
    OUTPUT_TOOLTIPS = ("Paths of the run files and the scene document; wire it into Run Summary Validator.",)
    OUTPUT_NODE = True
    DESCRIPTION = (
        "Writes '<scene>.telemetry.json', 'artifact-metadata.json' and 'run-summary.txt' beside the frames, "
        "each validated against telemetry contract v1 first: timing (queue, execution start, frames durable, "
        "duration), VRAM before/after/delta from the two GPU snapshots, fallback notes and the marker."
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "done_marker": ("DONE_MARKER", {"tooltip": "From Write Done Marker: the frames are durable."}),
                "scene_id": ("STRING", {"default": "", "tooltip": "Scene id; empty = the marker's scene id."}),
            },
            "optional": {
                "gpu_before": ("GPU_SNAPSHOT", {"tooltip": "Snapshot taken before sampling."}),
                "gpu_after": ("GPU_SNAPSHOT", {"tooltip": "Snapshot taken after decoding."}),
                "queue_policy": (
                    "STRING",
                    {
                        "default": "",
                        "multiline": False,
                        "tooltip": "Empty for an editor run. A headless runner patches in a JSON object: "
                        "max_wait_seconds, history_poll_interval_seconds, max_attempt_count (0 = unbounded), "
                        "post_execution_timeout_seconds, scene_retry_budget.",
                    },
                ),
            },
        }

    @classmethod
    def IS_CHANGED(cls, **kwargs: Any) -> float:
        # Telemetry is volatile: never serve it from the cache (a cached collector writes nothing).
        return float("nan")

    def collect(
        self,
        done_marker: Any,
        scene_id: str = "",
        gpu_before: Any = None,
        gpu_after: Any = None,
        queue_policy: str = "",
    ) -> dict[str, Any]:
        policy = parse_policy_text(queue_policy)
        if isinstance(done_marker, dict) and "marker_path" in done_marker:
            ensure_inside(Path(_comfy.output_directory()), Path(str(done_marker["marker_path"])), what="done_marker")
        prompt_id, _node = _comfy.executing_context()
        queue_item = _comfy.current_queue_item(prompt_id) or {}
        scene, files = collect_scene(
            marker=done_marker,
            scene_id=scene_id,
            gpu_before=gpu_before,
            gpu_after=gpu_after,
            policy=policy,
            prompt_id=prompt_id,
            queue_start_ms=queue_item.get("create_time"),
            comfyui_version=_comfy.comfyui_version(),
        )
        output = {
            "run_dir": str(files.run_dir),
            "artifact_metadata_path": str(files.metadata_path),
            "run_summary_path": str(files.summary_path),
            "telemetry_path": str(files.telemetry_paths[scene["SceneId"]]),
            "scene": scene,
        }
        logger.info("scene telemetry for %s written to %s", scene["SceneId"], files.run_dir)
        record_scene(scene)
        stop_stale_sampling(prompt_id)  # a peak sampler left by an earlier prompt (its 'after' never ran)
        return {"ui": {"text": [ui_line(scene)]}, "result": (output,)}


def ui_line(scene: dict[str, Any]) -> str:
    """Short summary for the node face: scene, frames, VRAM, fallbacks, duration."""
    gpu, frames = scene["GPU"], scene["Frames"]
    if gpu["VramBeforeMB"] is not None and gpu["VramAfterMB"] is not None:
        vram = f"VRAM {gpu['VramBeforeMB']}→{gpu['VramAfterMB']} MiB ({gpu['VramDeltaMB']:+d})"
    elif gpu["VramAfterMB"] is not None:
        vram = f"VRAM after {gpu['VramAfterMB']} MiB"
    else:
        vram = f"no VRAM figures ({gpu['Source']})"
    duration = "" if scene["DurationSeconds"] is None else f" · {scene['DurationSeconds']:.1f} s"
    notes = len(scene["System"]["FallbackNotes"])
    tail = f" · {notes} fallback warning(s)" if notes else ""
    return f"{scene['SceneId']}: {frames['Count']} frame(s) · {vram}{duration}{tail} → run-summary.txt"
