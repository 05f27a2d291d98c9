"""scene-telemetry: completion markers and telemetry for ComfyUI video pipelines.

Loaded by ComfyUI as a custom-node folder (V1 classic API: the two mappings and
``WEB_DIRECTORY``), or installed with pip as ``scene_telemetry``. Importing it
starts nothing: no threads, no NVML, no file writes.

The node code (and with it numpy, Pillow and torch) loads on the first read of
``NODE_CLASS_MAPPINGS`` or ``NODE_DISPLAY_NAME_MAPPINGS``: ComfyUI's loader reads
them right after importing the folder (``hasattr``/``getattr``), while the
``scene-telemetry`` command, which imports this package too, never does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .telemetry import PACKAGE_VERSION as __version__

if TYPE_CHECKING:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

WEB_DIRECTORY = "./web"

_NODE_EXPORTS = frozenset({"NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"})

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY", "__version__"]


def __getattr__(name: str) -> Any:
    """The node mappings, imported on first use (PEP 562); any other missing name is an AttributeError.

    A failure while importing the nodes is re-raised as ImportError: ComfyUI reads the
    mappings with ``hasattr``, which would take an AttributeError for "no mappings" and
    skip the pack silently instead of reporting it as failed.
    """
    if name not in _NODE_EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        from . import nodes
    except AttributeError as exc:
        raise ImportError(f"scene-telemetry nodes failed to import: {exc}") from exc
    value = getattr(nodes, name)
    globals()[name] = value
    return value
