"""WriteDoneMarker: save frames, then atomically commit ``<name>.done``."""

from __future__ import annotations

import logging
import time
from typing import Any

from ..telemetry import InvalidInputError, SceneContext, mark_files, record_marker, write_frames_with_marker
from . import _comfy
from ._names import CATEGORY, display_name, node_id

logger = logging.getLogger(__name__)


class WriteDoneMarker:
    """Saves a frame batch exactly like SaveImage, then commits a verified done marker."""

    NAME = node_id("WriteDoneMarker")
    DISPLAY_NAME = display_name("Write Done Marker")
    CATEGORY = CATEGORY
    FUNCTION = "write"
    RETURN_TYPES = ("DONE_MARKER",)
    RETURN_NAMES = ("done_marker",)
    OUTPUT_TOOLTIPS = ("Marker path and body; wire it into Scene Telemetry Collector.",)
    OUTPUT_NODE = True
    NOT_IDEMPOTENT = True
    DESCRIPTION = (
        "Saves the frames (SaveImage naming and metadata), fsyncs every one, then atomically writes "
        "'<name>.done' beside them. When the .done file exists, every frame it lists is complete on disk. "
        "With 'filenames' (VHS Video Combine) it marks the files that node wrote instead."
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "filename_prefix": (
                    "STRING",
                    {
                        "default": "scene/frame",
                        "tooltip": "Same as SaveImage: subfolders allowed, %width%/%height%/%year%… expand. "
                        "The marker is '<last part>.done' in that folder.",
                    },
                ),
            },
            "optional": {
                "images": ("IMAGE", {"tooltip": "Frames to save."}),
                "scene_id": (
                    "STRING",
                    {"default": "", "tooltip": "Recorded in the marker and telemetry."},
                ),
                "filenames": (
                    "VHS_FILENAMES",
                    {"tooltip": "From VHS Video Combine: mark those files instead of saving frames."},
                ),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    @classmethod
    def IS_CHANGED(cls, **kwargs: Any) -> float:
        # NaN never equals itself: never served from cache, so a re-queued prompt writes
        # fresh frames and a fresh marker (a cached no-op is how clients hang forever).
        return float("nan")

    def write(
        self,
        filename_prefix: str,
        images: Any = None,
        scene_id: str = "",
        filenames: Any = None,
        prompt: Any = None,
        extra_pnginfo: Any = None,
    ) -> dict[str, Any]:
        prompt_id, unique_id = _comfy.executing_context()
        context = SceneContext(prompt_id, unique_id, scene_id, _comfy.comfyui_version())
        output_dir = _comfy.output_directory()
        started = time.monotonic()
        if filenames is not None:
            result = mark_files(_vhs_paths(filenames), output_dir, filename_prefix, context=context)
            _record(result.body, started)
            return {"ui": {"text": [_ui_text(result.body)]}, "result": (result.as_output(),)}
        if images is None:
            raise InvalidInputError("connect 'images' (frames to save) or 'filenames' (files to mark)")
        _comfy.throw_if_interrupted()
        embed = not _comfy.metadata_disabled()
        result = write_frames_with_marker(
            images,
            output_dir,
            filename_prefix,
            context=context,
            prompt=prompt if embed else None,
            extra_pnginfo=extra_pnginfo if embed else None,
            embed_metadata=embed,
        )
        _record(result.body, started)
        ui_images = [{"filename": p.name, "subfolder": result.subfolder, "type": "output"} for p in result.frame_paths]
        return {
            "ui": {"images": ui_images, "text": [_ui_text(result.body)]},
            "result": (result.as_output(),),
        }


def _record(body: dict[str, Any], started: float) -> None:
    """Count the committed marker for /scene-telemetry/metrics (save seconds include the marker commit)."""
    record_marker(int(body["FrameCount"]), int(body["TotalBytes"]), time.monotonic() - started, source="node")


def _vhs_paths(filenames: Any) -> list[str]:
    """VHS_FILENAMES is ``(save_output: bool, [absolute paths])``; accept a bare list too."""
    if isinstance(filenames, (tuple, list)) and len(filenames) == 2 and isinstance(filenames[0], bool):
        filenames = filenames[1]
    if not isinstance(filenames, (tuple, list)) or not all(isinstance(p, str) for p in filenames):
        raise InvalidInputError("filenames must be VHS_FILENAMES: (save_output, [paths])", field="filenames")
    return list(filenames)


def _ui_text(body: dict[str, Any]) -> str:
    return f"{body['FrameCount']} file(s), {body['TotalBytes'] / 1048576:.1f} MiB → {body['Subfolder'] or '.'}"
