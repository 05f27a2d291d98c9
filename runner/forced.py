"""The seed's fallback when no marker comes: stable frames → a ``runner-forced`` marker.

Local output folder: the frames the history lists must keep their sizes across the quiet period.
Remote server: every frame is copied into the run folder through ``/view`` twice, a quiet period
apart, and the sizes must agree. Either way the marker is committed and verified like a node's.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from ..comfy_api.client import ComfyClient
from ..telemetry import (
    ClientError,
    Deadline,
    MarkedFile,
    MarkerError,
    atomic_write_bytes,
    build_marker,
    commit_marker,
    marker_name,
    verify_marker,
)
from .options import RunOptions
from .outcomes import MarkerOutcome

logger = logging.getLogger(__name__)


def force_marker(
    client: ComfyClient,
    options: RunOptions,
    scene_id: str,
    prompt_id: str,
    prefix: str | None,
    entry: dict[str, Any] | None,
) -> MarkerOutcome:
    """Write a ``runner-forced`` marker for the frames the history lists, if they are complete."""
    files = history_files(entry, marker_location(prefix)[0] if prefix else None)
    if not files:
        return MarkerOutcome(problem="the history entry lists no output files")
    subfolder = files[0][0]
    names = [f for s, f in files if s == subfolder]
    if options.comfy_output_dir is not None:
        folder = options.comfy_output_dir / subfolder
        sizes, problem = stable_sizes(folder, names, options.forced_quiet_period_s)
    else:  # remote server: copy the frames into the run folder, twice, a quiet period apart
        folder = copy_folder(options.run_dir, scene_id, subfolder)
        sizes, problem = _download_stable(client, options, subfolder, names, folder)
    if sizes is None:
        return MarkerOutcome(problem=problem)
    name = marker_name(os.path.basename(prefix)) if prefix else f"{scene_id}.done"
    body = build_marker(
        [MarkedFile(n, s) for n, s in zip(names, sizes, strict=True)],
        source="runner-forced",
        prefix=prefix or scene_id,
        subfolder=subfolder,
        width=None,
        height=None,
        prompt_id=prompt_id,
        scene_id=scene_id,
        parameters={"QuietPeriodSeconds": options.forced_quiet_period_s, "Copied": options.comfy_output_dir is None},
    )
    path = commit_marker(folder / name, body)
    try:
        verified = verify_marker(path)
    except MarkerError as exc:  # the frames changed between the check and the commit
        return MarkerOutcome(problem=str(exc))
    return MarkerOutcome(detected=False, forced=True, body=verified, folder=folder)


def _download_stable(
    client: ComfyClient, options: RunOptions, subfolder: str, names: list[str], folder: Path
) -> tuple[list[int] | None, str]:
    """Fetch every frame through /view, wait the quiet period, fetch again: sizes must not move.

    Both passes together get ``post_execution_timeout_seconds`` (plus the quiet period): every /view is
    cut at that deadline, and none is made after it.
    """
    quiet = options.forced_quiet_period_s
    deadline = Deadline.after(options.policy.post_execution_timeout_seconds + quiet)
    first = _fetch_all(client, subfolder, names, folder, Deadline(deadline.at - quiet, deadline.clock))
    if first is None:
        return None, "the frames could not be fetched through /view in time"
    time.sleep(quiet)
    second = _fetch_all(client, subfolder, names, folder, deadline)
    if second is None:
        return None, "the frames could not be fetched through /view in time"
    if second != first:
        return None, f"frames still changing after {quiet:g} s"
    if any(size == 0 for size in first):
        return None, "a listed frame is empty"
    return first, ""


def _fetch_all(
    client: ComfyClient, subfolder: str, names: list[str], folder: Path, deadline: Deadline
) -> list[int] | None:
    sizes = []
    for name in names:
        if deadline.expired():
            logger.warning("no time left to fetch %s/%s for the forced copy", subfolder, name)
            return None
        try:
            data = client.view(name, subfolder, timeout_s=deadline.left())
        except ClientError as exc:
            logger.warning("cannot fetch %s/%s for the forced copy: %s", subfolder, name, exc)
            return None
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(folder / name, data)
        sizes.append(len(data))
    return sizes


def copy_folder(run_dir: Path, scene_id: str, subfolder: str) -> Path:
    """Where copies of a remote scene's files go: ``<run_dir>/<scene id>/`` (the validator looks there).

    The runner's own scene id, never the marker's ``SceneId``: a mapping may route ``scene_id`` to any text.
    """
    tail = scene_id or subfolder.rpartition("/")[2]
    folder = run_dir / tail if tail else run_dir
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def marker_location(prefix: str) -> tuple[str, str]:
    """(subfolder, marker file name) of a WriteDoneMarker prefix (runner prefixes carry no %tokens%)."""
    normalised = os.path.normpath(prefix).replace(os.sep, "/")
    subfolder, _, filename = normalised.rpartition("/")
    return subfolder, marker_name(filename)


def history_files(entry: dict[str, Any] | None, subfolder: str | None) -> list[tuple[str, str]]:
    """(subfolder, filename) of every output file the history lists; the marker's folder first."""
    files: list[tuple[str, str]] = []
    for ui in ((entry or {}).get("outputs") or {}).values():
        for key in ("images", "gifs", "videos", "audio"):
            for item in ui.get(key, []) if isinstance(ui, dict) else []:
                if isinstance(item, dict) and item.get("type", "output") == "output" and item.get("filename"):
                    pair = (str(item.get("subfolder", "")), str(item["filename"]))
                    if pair not in files:
                        files.append(pair)
    if subfolder is not None:
        files.sort(key=lambda f: f[0] != subfolder)
    return files


def stable_sizes(folder: Path, names: list[str], quiet_s: float) -> tuple[list[int] | None, str]:
    """Sizes of *names* if none is missing, empty or still changing across *quiet_s* seconds."""

    def sizes() -> list[int] | None:
        try:
            return [(folder / n).stat().st_size for n in names]
        except OSError:
            return None

    first = sizes()
    if first is None:
        return None, "a listed frame is missing"
    time.sleep(quiet_s)
    second = sizes()
    if second != first:
        return None, f"frames still changing after {quiet_s:g} s"
    if any(s == 0 for s in first):
        return None, "a listed frame is empty"
    return first, ""
