"""A run folder's files as one unit: the commit point is withdrawn before anything of a new run is written.

A run folder holds ``<scene>.telemetry.json`` per scene, ``run-summary.txt`` and
``artifact-metadata.json``, each replaced atomically, but three renames are not
one. ``artifact-metadata.json`` is the commit point: it is written last, and
before the first file of a *new* run touches the folder (the re-queued prompt's
marker, or the collector's first telemetry file) the old one is removed (then
the old summary), with a directory fsync. So at every instant, and after a crash
at any point, a reader sees one complete run, or no ``artifact-metadata.json``:
"not complete", never the metadata of prompt N−1 beside the marker or summary of
prompt N. The previous set is withdrawn whole, never half-replaced.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from ._atomic import fsync_directory, sweep_stale_temps
from ._errors import InvalidInputError
from ._layout import ARTIFACT_METADATA_NAME, RUN_SUMMARY_NAME, TELEMETRY_SUFFIX
from ._safe_read import MAX_INPUT_BYTES, parse_json, read_bounded

logger = logging.getLogger(__name__)


def is_run_file(name: str) -> bool:
    """True for the names a run folder's writer owns (the metadata, the summary, telemetry files)."""
    return name in (ARTIFACT_METADATA_NAME, RUN_SUMMARY_NAME) or name.endswith(TELEMETRY_SUFFIX)


def begin_run(folder: str | os.PathLike[str], *, own_names: Collection[str] = ()) -> None:
    """Before the first file of a new run lands in *folder*: sweep dead writers' temps, withdraw the last run.

    Temps of the run files (and of *own_names*, e.g. the runner's state file) go whatever
    their age: one writer owns a run folder. The folder must exist.
    """
    owned = frozenset(own_names)
    sweep_stale_temps(folder, own=lambda name: is_run_file(name) or name in owned)
    withdraw_run(folder)


def withdraw_run(folder: str | os.PathLike[str], *, marker_name: str | None = None) -> bool:
    """Remove *folder*'s committed run (metadata first, then summary); True when there was one.

    With *marker_name*, only a run that lists that marker (``Frames.MarkerName``, the
    marker in this folder) is withdrawn: a marker of another prefix leaves it alone,
    and so does a metadata file that cannot be read or parsed (it commits nothing).
    """
    directory = Path(folder)
    metadata = directory / ARTIFACT_METADATA_NAME
    if not os.path.lexists(metadata):
        return False
    if marker_name is not None and marker_name not in _listed_markers(metadata):
        return False
    for name in (ARTIFACT_METADATA_NAME, RUN_SUMMARY_NAME):
        try:
            os.unlink(directory / name)
        except FileNotFoundError:
            continue
    fsync_directory(directory)
    logger.info("withdrew the run in %s: a new one is being written", directory)
    return True


def _listed_markers(metadata: Path) -> set[str]:
    """MarkerName of every scene in *metadata*; empty when it is unreadable or not a metadata document."""
    try:
        document: Any = parse_json(read_bounded(metadata, MAX_INPUT_BYTES).decode("utf-8"))
    except (InvalidInputError, ValueError):
        return set()
    scenes = document.get("Scenes") if isinstance(document, Mapping) else None
    names = set()
    for scene in scenes if isinstance(scenes, list) else []:
        frames = scene.get("Frames") if isinstance(scene, Mapping) else None
        if isinstance(frames, Mapping) and isinstance(frames.get("MarkerName"), str):
            names.add(frames["MarkerName"])
    return names
