"""The servers of a farm: who they are (URL, device, a stable instance id) and whether a run may use them.

Every server gets the run's preflight (``/system_stats``, the node classes) and the workflow and mapping
checks against its own ``/object_info``; one that fails is left out of the run with one line saying why,
and the run goes on with the others.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..comfy_api.client import ComfyClient
from ..comfy_api.preflight import DEFAULT_MIN_FREE_VRAM_MB, run_preflight
from ..comfy_api.server_url import parse_server_url
from ..runner.checks import check_mapping, check_workflow, required_classes
from ..runner.scenes import FieldMapping, Scene
from ..telemetry import InvalidInputError, read_bounded
from .redact import redact_url

logger = logging.getLogger(__name__)

MAX_SERVERS_FILE_BYTES = 1024 * 1024
"""A --servers file is one URL a line: 1 MiB is ~10,000 servers."""


@dataclass(frozen=True)
class FarmServer:
    """One ComfyUI server of a farm, as its scenes' records name it."""

    url: str
    instance_id: str
    device: str | None = None
    comfyui_version: str | None = None

    @property
    def label(self) -> str:
        """The URL as it may be printed and recorded (credentials removed)."""
        return redact_url(self.url)

    def record_fields(self) -> dict[str, Any]:
        """The contract fields that say which server ran a scene."""
        return {"ServerUrl": self.label, "ServerInstanceId": self.instance_id, "ServerDevice": self.device}


@dataclass(frozen=True)
class ServerCheck:
    """A server's verdict before the run: usable (``server``) or left out (``problem``, one line)."""

    url: str
    server: FarmServer | None = None
    problem: str | None = None
    object_info: Mapping[str, Any] | None = None
    warnings: tuple[str, ...] = ()


def device_name(system_stats: Mapping[str, Any] | None) -> str | None:
    """The first compute device's name as ``/system_stats`` lists it."""
    devices = (system_stats or {}).get("devices") or []
    first = devices[0] if devices and isinstance(devices[0], Mapping) else {}
    name = first.get("name")
    return str(name) if name else None


def instance_id(url: str, system_stats: Mapping[str, Any] | None) -> str:
    """``srv-`` + 12 hex digits of the URL and the first device (name, index): stable across runs and restarts.

    Two ComfyUI instances on one host differ by port or device index; one instance keeps its id when it
    restarts, which is what a record must say ("which instance ran this", not "which process").
    """
    devices = (system_stats or {}).get("devices") or []
    first = devices[0] if devices and isinstance(devices[0], Mapping) else {}
    key = f"{redact_url(url)}|{first.get('name', '')}|{first.get('index', '')}"
    return "srv-" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:12]


def check_server(
    url: str,
    workflow: Mapping[str, Any],
    scenes: Sequence[Scene],
    mapping: FieldMapping,
    *,
    min_free_vram_mb: float = DEFAULT_MIN_FREE_VRAM_MB,
) -> ServerCheck:
    """Preflight and ``/object_info`` checks of one server for this workflow; never raises for server trouble."""
    label = redact_url(url)
    client = ComfyClient(url)
    report = run_preflight(client, required_classes(dict(workflow)), server=label, min_free_vram_mb=min_free_vram_mb)
    if report.failure is not None:
        return ServerCheck(url, problem=report.failure.reason)
    problems = check_workflow(dict(workflow), report.object_info)
    problems += check_mapping(list(scenes), dict(workflow), mapping, report.object_info)
    if problems:
        return ServerCheck(url, problem=f"server {label}: {problems[0]} ({len(problems)} problem(s))")
    stats = report.system_stats
    server = FarmServer(url, instance_id(url, stats), device_name(stats), report.comfyui_version)
    return ServerCheck(url, server=server, object_info=report.object_info, warnings=tuple(report.warnings))


def load_servers_file(path: str | Path) -> list[str]:
    """``--servers FILE``: one URL a line; blank lines and ``#`` comments are skipped.

    A file that cannot be read, or a line that is not an http(s) URL, is :class:`InvalidInputError` (exit 2).
    """
    try:
        text = read_bounded(path, MAX_SERVERS_FILE_BYTES).decode("utf-8")  # a FIFO or /dev/zero: refused unread
    except InvalidInputError as exc:
        raise InvalidInputError(f"--servers {path}: {exc.message}", path=str(path)) from None
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"--servers {path}: cannot read: {exc}", path=str(path)) from exc
    urls = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            urls.append(parse_server_url(line))
        except InvalidInputError as exc:
            raise InvalidInputError(f"--servers {path} line {number}: {exc.message}", path=str(path)) from None
    if not urls:
        raise InvalidInputError(f"--servers {path}: no server URL in the file", path=str(path))
    return urls
