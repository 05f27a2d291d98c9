"""File names inside a run folder (stable; documented in ``docs/run-summary.md``)."""

from __future__ import annotations

import re

ARTIFACT_METADATA_NAME = "artifact-metadata.json"
RUN_SUMMARY_NAME = "run-summary.txt"
TELEMETRY_SUFFIX = ".telemetry.json"


def telemetry_file_name(scene_id: str) -> str:
    """``<SceneId>.telemetry.json``, every character outside ``[A-Za-z0-9._-]`` (and a leading dot) as ``_``."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", scene_id)
    return ("_" + safe[1:] if safe.startswith(".") else safe) + TELEMETRY_SUFFIX
