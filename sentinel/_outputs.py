"""Which files of a finished prompt the sentinel marks: parsing ComfyUI's history/job outputs.

A history entry (``/history``) or job (``/api/jobs/{id}``) lists, per output node,
its ``ui`` dict: ``images`` (SaveImage; SaveAnimatedWEBP adds ``animated: [true]``),
``gifs`` (VideoHelperSuite's Video Combine, mp4 included), ``videos``/``video``
(other packs), ``audio``: each a list of ``{filename, subfolder, type}``. Only
``type: output`` files are marked (``temp`` previews are deleted with the
server's temp folder). A node whose class is our own WriteDoneMarker already
wrote its marker; a node served from the cache wrote no new files (its ``ui``
replays the old names).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ._formats import CHECKERS
from ._naming import GroupKey, is_utf8_name, parse_name

logger = logging.getLogger(__name__)

OWN_MARKER_CLASSES = frozenset({"SceneTelemetry_WriteDoneMarker"})
"""Node classes that write their own done marker (nodes/write_done_marker.py)."""


@dataclass(frozen=True)
class NodeBatch:
    """The files one output node saved in one folder under one prefix."""

    node_id: str
    class_type: str | None
    key: GroupKey
    files: tuple[tuple[str, int], ...]
    """(file name, counter) in the order the node listed them."""


@dataclass(frozen=True)
class FinishedPrompt:
    """A finished prompt as the sentinel needs it."""

    prompt_id: str
    status: str
    """'completed' or 'failed' (the /api/jobs vocabulary)."""
    create_time: float
    graph: Mapping[str, Any]
    outputs: Mapping[str, Any]
    cached_nodes: frozenset[str]


def cached_nodes(status: Mapping[str, Any] | None) -> frozenset[str]:
    """Node ids listed by ``execution_cached`` in a history ``status.messages``."""
    nodes: set[str] = set()
    messages = status.get("messages") if isinstance(status, Mapping) else None
    for entry in messages if isinstance(messages, list) else []:
        if isinstance(entry, list) and len(entry) >= 2 and entry[0] == "execution_cached":
            data = entry[1]
            if isinstance(data, Mapping) and isinstance(data.get("nodes"), list):
                nodes.update(str(n) for n in data["nodes"])
    return frozenset(nodes)


MAX_STATUS_CHARS = 64
"""A job's status is recorded in the journal: a server's megabyte 'status' is cut to this."""


def _create_time(value: Any) -> float:
    """A prompt's ``create_time`` (epoch ms) as a finite float; 0.0 when absent, not a number, or out of range."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return 0.0
    try:
        created = float(value)
    except OverflowError:  # an integer of hundreds of digits from a hostile server
        return 0.0
    return created if math.isfinite(created) else 0.0


def from_history(prompt_id: str, entry: Mapping[str, Any]) -> FinishedPrompt | None:
    """A ``/history`` entry (``prompt`` is ``[number, id, graph, extra_data, outputs_to_execute]``)."""
    status = entry.get("status") if isinstance(entry.get("status"), Mapping) else {}
    prompt = entry.get("prompt")
    graph = prompt[2] if isinstance(prompt, list) and len(prompt) >= 3 and isinstance(prompt[2], Mapping) else {}
    extra = prompt[3] if isinstance(prompt, list) and len(prompt) >= 4 and isinstance(prompt[3], Mapping) else {}
    outputs = entry.get("outputs") if isinstance(entry.get("outputs"), Mapping) else {}
    assert isinstance(status, Mapping) and isinstance(outputs, Mapping)
    # the /api/jobs rule (comfy_execution/jobs.py): status_str 'error' is failed, anything else completed
    state = "failed" if status.get("status_str") == "error" else "completed"
    return FinishedPrompt(
        prompt_id,
        state,
        _create_time(extra.get("create_time")),
        graph,
        outputs,
        cached_nodes(status),
    )


def from_job(job: Mapping[str, Any]) -> FinishedPrompt | None:
    """A ``/api/jobs/{id}`` reply (``outputs``, ``execution_status``, ``workflow.prompt``)."""
    prompt_id = job.get("id")
    if not isinstance(prompt_id, str):
        return None
    workflow = job.get("workflow") if isinstance(job.get("workflow"), Mapping) else {}
    assert isinstance(workflow, Mapping)
    graph = workflow.get("prompt") if isinstance(workflow.get("prompt"), Mapping) else {}
    outputs = job.get("outputs") if isinstance(job.get("outputs"), Mapping) else {}
    status = job.get("execution_status") if isinstance(job.get("execution_status"), Mapping) else None
    return FinishedPrompt(
        prompt_id,
        str(job.get("status", ""))[:MAX_STATUS_CHARS],
        _create_time(job.get("create_time")),
        graph if isinstance(graph, Mapping) else {},
        outputs if isinstance(outputs, Mapping) else {},
        cached_nodes(status),
    )


def _safe_relative(subfolder: str, filename: str) -> bool:
    """The server's own guard (``/view``): no absolute path, no ``..`` anywhere."""
    parts = [p for p in subfolder.split("/") if p] + [filename]
    return not (
        os.path.isabs(subfolder)
        or subfolder.startswith("/")
        or any(p in ("..", ".") for p in parts)
        or "/" in filename
        or "\\" in filename
        or "\x00" in subfolder + filename
    )


def _file_items(ui: Mapping[str, Any]) -> Iterable[Mapping[str, Any]]:
    for key, value in ui.items():
        if key == "animated" or not isinstance(value, list):
            continue
        for item in value:
            if isinstance(item, Mapping) and isinstance(item.get("filename"), str):
                yield item


def node_batches(prompt: FinishedPrompt) -> tuple[list[NodeBatch], list[str]]:
    """The batches to mark, and one line per output node skipped (and why)."""
    batches: list[NodeBatch] = []
    skipped: list[str] = []
    for node_id, ui in prompt.outputs.items():
        spec = prompt.graph.get(node_id)
        class_type = spec.get("class_type") if isinstance(spec, Mapping) else None
        class_type = class_type if isinstance(class_type, str) else None
        if not isinstance(ui, Mapping):
            continue
        if class_type in OWN_MARKER_CLASSES:
            skipped.append(f"node {node_id} ({class_type}) writes its own marker")
            continue
        if str(node_id) in prompt.cached_nodes:
            skipped.append(f"node {node_id} ({class_type}) was cached: no new files")
            continue
        groups: dict[GroupKey, list[tuple[str, int]]] = {}
        for item in _file_items(ui):
            if item.get("type", "output") != "output":
                continue
            filename, subfolder = str(item["filename"]), item.get("subfolder") or ""
            if not isinstance(subfolder, str):
                skipped.append(f"node {node_id}: {filename} has a subfolder that is not a string")
                continue
            subfolder = subfolder.replace("\\", "/").strip("/")
            if not is_utf8_name(subfolder + filename):
                skipped.append(f"node {node_id}: {subfolder!a}/{filename!a} is not valid UTF-8: no marker can name it")
                continue
            if not _safe_relative(subfolder, filename):
                skipped.append(f"node {node_id}: {subfolder}/{filename} is outside the output directory")
                continue
            parsed = parse_name(filename)
            stem, ext = os.path.splitext(filename)
            if parsed is None and ext.lstrip(".").lower() not in CHECKERS:
                continue  # not a media file (e.g. a text or latent output)
            prefix, counter = (parsed.prefix, parsed.counter) if parsed else (stem, 0)
            groups.setdefault(GroupKey(subfolder, prefix), []).append((filename, counter))
        for key, files in groups.items():
            batches.append(NodeBatch(str(node_id), class_type, key, tuple(dict.fromkeys(files))))
    return batches, skipped
