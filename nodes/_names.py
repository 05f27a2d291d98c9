"""Node ids, display names and categories, written once with the pack prefix."""

from __future__ import annotations

PREFIX = "SceneTelemetry"
CATEGORY = "scene-telemetry"


def node_id(name: str) -> str:
    """Registry id of a node: ``SceneTelemetry_<Name>`` (packs share one namespace; prefix all)."""
    return f"{PREFIX}_{name}"


def display_name(title: str) -> str:
    """Menu title shown in the editor (the category already names the pack)."""
    return title
