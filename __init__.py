"""scene-telemetry: completion markers and telemetry for ComfyUI video pipelines.

Loaded by ComfyUI as a custom-node folder (V1 classic API: the two mappings and
``WEB_DIRECTORY``), or installed with pip as ``scene_telemetry``. Importing it
starts nothing: no threads, no NVML, no file writes.
"""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
from .telemetry import PACKAGE_VERSION as __version__

WEB_DIRECTORY = "./web"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY", "__version__"]
