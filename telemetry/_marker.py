"""Done markers: building, committing, reading and verifying ``<name>.done``.

A marker is committed only after every file it lists is durable, with the
atomic writer, so its existence is the whole contract: when ``<name>.done``
exists, every frame it lists is complete on disk. The JSON body (contract v1,
``done-marker``) says which files, how big, and which prompt wrote them.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ._atomic import atomic_write_text
from ._contract import SCHEMA_VERSION, contract_errors, validate_document
from ._errors import InvalidInputError, MarkerError
from ._meta import iso_utc, utc_now, versions
from ._runset import withdraw_run
from ._safe_read import parse_json, read_bounded

MAX_MARKER_BYTES = 16 * 1024 * 1024
"""A marker listing 100,000 frames is ~6 MB; anything bigger is not ours."""

MarkerSource = Literal["node", "sentinel", "runner-forced"]


@dataclass(frozen=True)
class MarkedFile:
    """One file a marker vouches for: name relative to the marker folder, size in bytes."""

    name: str
    size: int


def build_marker(
    files: Sequence[MarkedFile],
    *,
    source: MarkerSource,
    prefix: str,
    subfolder: str,
    width: int | None,
    height: int | None,
    prompt_id: str | None = None,
    node_id: str | None = None,
    scene_id: str | None = None,
    comfyui_version: str | None = None,
    parameters: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Return a contract-v1 done-marker body."""
    return {
        "SchemaVersion": SCHEMA_VERSION,
        "Document": "done-marker",
        "Source": source,
        "PromptId": prompt_id,
        "NodeId": node_id,
        "SceneId": scene_id,
        "CreatedAt": iso_utc(utc_now()),
        "FilenamePrefix": prefix,
        "Subfolder": subfolder,
        "Files": [{"Name": f.name, "Bytes": f.size} for f in files],
        "FrameCount": len(files),
        "Width": width,
        "Height": height,
        "TotalBytes": sum(f.size for f in files),
        "Versions": versions(comfyui_version),
        "Parameters": dict(parameters) if parameters is not None else None,
    }


def commit_marker(path: str | os.PathLike[str], body: Mapping[str, Any]) -> Path:
    """Validate *body* against the contract and atomically write it to *path*.

    A run committed beside it that lists this marker (an editor run of the previous
    prompt with this prefix) is withdrawn first: its metadata would otherwise sit
    beside a marker of another prompt until the collector of this one commits.
    """
    validate_document(body, "done-marker", path=str(path))
    target = Path(path)
    withdraw_run(target.parent, marker_name=target.name)
    return atomic_write_text(target, json.dumps(body, indent=2, ensure_ascii=False) + "\n")


def read_marker(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse and contract-check a marker; raise :class:`MarkerError` on any problem."""
    marker = Path(path)
    try:
        raw = read_bounded(marker, MAX_MARKER_BYTES)
    except InvalidInputError as exc:  # missing, a FIFO or device, over the cap, unreadable
        raise MarkerError(f"unreadable marker: {exc.message}", path=marker) from exc
    try:
        body = parse_json(raw.decode("utf-8"))
    except ValueError as exc:  # UnicodeDecodeError, JSONDecodeError, duplicate keys, NaN, nesting
        raise MarkerError(f"marker is not valid UTF-8 JSON: {exc}", path=marker) from exc
    problems = contract_errors(body, "done-marker")
    if problems:
        raise MarkerError(f"marker violates contract v1: {problems[0]}", path=marker)
    result: dict[str, Any] = body
    return result


def marker_mismatches(marker_path: Path, body: Mapping[str, Any]) -> list[str]:
    """Return one line per listed file that is missing or has another size."""
    folder = marker_path.parent
    problems = []
    for entry in body["Files"]:
        target = folder / entry["Name"]
        try:
            info = target.stat()
        except OSError:
            problems.append(f"{entry['Name']}: missing")
            continue
        if not stat.S_ISREG(info.st_mode):
            problems.append(f"{entry['Name']}: not a regular file")
            continue
        actual = info.st_size
        if actual != entry["Bytes"]:
            problems.append(f"{entry['Name']}: {actual} bytes on disk, marker says {entry['Bytes']}")
    return problems


def verify_marker(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Return the marker body if it is valid and every listed file matches; else raise."""
    marker = Path(path)
    body = read_marker(marker)
    problems = marker_mismatches(marker, body)
    if problems:
        raise MarkerError(
            f"marker does not match the files on disk: {'; '.join(problems[:5])}"
            + (f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""),
            path=marker,
        )
    return body
