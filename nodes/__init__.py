"""Thin ComfyUI adapters over ``telemetry``: one node per module.

The node modules (and numpy, Pillow and torch with them) load on the first read of
``NODE_CLASSES`` or a mapping (``_registry``); ``nodes._names``, the node ids that
the runner and the ComfyUI client need, imports without them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._registry import NODE_CLASS_MAPPINGS, NODE_CLASSES, NODE_DISPLAY_NAME_MAPPINGS

_REGISTRY_EXPORTS = frozenset({"NODE_CLASSES", "NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"})

__all__ = ["NODE_CLASSES", "NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]


def __getattr__(name: str) -> Any:
    """The node classes and mappings, imported on first use (PEP 562)."""
    if name not in _REGISTRY_EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from . import _registry

    value = getattr(_registry, name)
    globals()[name] = value
    return value
