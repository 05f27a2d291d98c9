"""Committing a sentinel marker for one batch: same contract, same place as WriteDoneMarker's.

``<output>/<subfolder>/<prefix>.done`` with ``Source: "sentinel"``, written with
telemetry's atomic writer after every listed file is fsynced. Files another
marker in the folder already vouches for (WriteDoneMarker's, or ours from before
a crash) are never marked again.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..telemetry import MarkedFile, MarkerError, build_marker, commit_marker, read_marker
from ._formats import image_size
from ._naming import GroupKey

logger = logging.getLogger(__name__)

MarkerListener = Callable[[Path, Mapping[str, Any]], None]
"""Called with a marker's path and contract document right after it is committed (monitoring)."""


@dataclass(frozen=True)
class BatchFile:
    """One file of a batch, as observed (size and mtime at the last stat)."""

    name: str
    counter: int
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class MarkResult:
    """What happened to a batch: ``marker`` is None when every file was already vouched for."""

    marker: Path | None
    files: tuple[BatchFile, ...]
    already: tuple[BatchFile, ...]
    document: Mapping[str, Any] | None = None
    """The committed marker's contract document (None with ``marker``)."""


def notify_marker(listener: MarkerListener | None, result: MarkResult) -> None:
    """Tell *listener* about a committed marker; a failing listener is logged, never raised: the marker
    and the journal must not depend on monitoring."""
    if listener is None or result.marker is None or result.document is None:
        return
    try:
        listener(result.marker, result.document)
    except Exception:
        logger.warning("marker listener failed for %s", result.marker, exc_info=True)


def vouched_files(folder: Path) -> dict[str, int]:
    """Name → size of every file listed by a valid marker in *folder* (invalid markers are ignored)."""
    listed: dict[str, int] = {}
    try:
        markers = [e.path for e in os.scandir(folder) if e.name.endswith(".done") and e.is_file()]
    except OSError:
        return listed
    for path in markers:
        try:
            body = read_marker(path)
        except MarkerError as exc:
            logger.debug("ignoring %s: %s", path, exc)
            continue
        for entry in body["Files"]:
            listed[entry["Name"]] = entry["Bytes"]
    return listed


def _fsync(path: Path) -> None:
    """Flush a file another process wrote (Windows can only flush a handle opened for writing)."""
    flags = (os.O_RDWR if os.name == "nt" else os.O_RDONLY) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except PermissionError:
        if os.name != "nt":
            raise
        logger.debug("%s is read-only: not flushed (Windows flushes only writable handles)", path)
        return
    try:
        if sys.platform == "darwin":
            import fcntl

            fcntl.fcntl(fd, fcntl.F_FULLFSYNC)
        else:
            os.fsync(fd)
    finally:
        os.close(fd)


def mark_batch(
    output_dir: Path,
    key: GroupKey,
    files: Sequence[BatchFile],
    *,
    parameters: Mapping[str, Any],
    prompt_id: str | None = None,
    node_id: str | None = None,
    comfyui_version: str | None = None,
) -> MarkResult:
    """Commit ``<prefix>.done`` for the files of *files* no marker vouches for yet."""
    folder = output_dir / key.folder if key.folder else output_dir
    vouched = vouched_files(folder)
    ordered = sorted(files, key=lambda f: (f.counter, f.name))
    already = tuple(f for f in ordered if vouched.get(f.name) == f.size)
    fresh = tuple(f for f in ordered if vouched.get(f.name) != f.size)
    if not fresh:
        return MarkResult(None, (), already)
    for entry in fresh:
        _fsync(folder / entry.name)
    dims = image_size(folder / fresh[0].name)
    body = build_marker(
        [MarkedFile(f.name, f.size) for f in fresh],
        source="sentinel",
        prefix=key.relative_prefix,
        subfolder=key.folder,
        width=dims[0] if dims else None,
        height=dims[1] if dims else None,
        prompt_id=prompt_id,
        node_id=node_id,
        comfyui_version=comfyui_version,
        parameters=parameters,
    )
    marker = commit_marker(folder / key.marker_name, body)
    logger.info(
        "marker written: %s (%d file(s), %d bytes%s)",
        marker,
        len(fresh),
        body["TotalBytes"],
        f", prompt {prompt_id} node {node_id}" if prompt_id else "",
    )
    return MarkResult(marker, fresh, already, body)
