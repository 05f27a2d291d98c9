"""The node classes and the V1 mappings ComfyUI reads (imported on first use by ``nodes/__init__``)."""

from __future__ import annotations

from typing import Any

from ._routes import register_routes
from .collector import SceneTelemetryCollector
from .gpu_snapshot import GPUTelemetrySnapshot
from .validator import RunSummaryValidator
from .write_done_marker import WriteDoneMarker

NODE_CLASSES: tuple[type[Any], ...] = (
    WriteDoneMarker,
    GPUTelemetrySnapshot,
    SceneTelemetryCollector,
    RunSummaryValidator,
)

NODE_CLASS_MAPPINGS: dict[str, type[Any]] = {cls.NAME: cls for cls in NODE_CLASSES}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {cls.NAME: cls.DISPLAY_NAME for cls in NODE_CLASSES}

# GET /scene-telemetry/metrics on ComfyUI's port; does nothing when ComfyUI's server is not loaded.
register_routes()

__all__ = ["NODE_CLASSES", "NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
