"""Webhook event bodies, their signature, and URLs made safe to log.

The bodies are a stable, documented contract of their own (README "Monitoring"):
``schema`` names its version; keys are only ever added within a version.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

EVENT_SCHEMA = "scene-telemetry-event/1"
SIGNATURE_HEADER = "X-Scene-Telemetry-Signature"
EVENT_HEADER = "X-Scene-Telemetry-Event"
DELIVERY_HEADER = "X-Scene-Telemetry-Delivery"
SECRET_ENV = "SCENE_TELEMETRY_WEBHOOK_SECRET"

SCENE_ENDED = "scene.ended"
RUN_ENDED = "run.ended"
MARKER_WRITTEN = "marker.written"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def envelope(event: str, source: str, sequence: int, body: dict[str, Any]) -> dict[str, Any]:
    """The fields every event has, then the event's own object (``scene``, ``run`` or ``marker``)."""
    return {"schema": EVENT_SCHEMA, "event": event, "source": source, "sequence": sequence, "sent_at": _now(), **body}


def scene_fields(scene: Mapping[str, Any], run_id: str | None) -> dict[str, Any]:
    """The key fields of a contract ``scene-telemetry`` document (missing ones are null)."""
    gpu = scene.get("GPU") or {}
    frames = scene.get("Frames") or {}
    attempts = scene.get("SceneAttempts")
    reason = scene.get("HistoryExitReason")
    return {
        "run_id": run_id,
        "scene_id": scene.get("SceneId"),
        "prompt_id": scene.get("PromptId"),
        "ok": reason == "success",
        "exit_reason": reason,
        "exit_detail": scene.get("ExitDetail"),
        "duration_seconds": scene.get("DurationSeconds"),
        "attempts": attempts,
        "frames": frames.get("Count"),
        "bytes": frames.get("TotalBytes"),
        "gpu": gpu.get("Name"),
        "vram_total_mb": gpu.get("VramTotal"),
        "vram_peak_mb": gpu.get("VramPeakMB"),
    }


def marker_fields(marker: Mapping[str, Any], path: str | None) -> dict[str, Any]:
    """The key fields of a contract ``done-marker`` document."""
    files = marker.get("Files") or []
    return {
        "path": path,
        "scene_id": marker.get("SceneId"),
        "prompt_id": marker.get("PromptId"),
        "source": marker.get("Source"),
        "files": len(files),
        "bytes": sum(int(f.get("Bytes") or 0) for f in files if isinstance(f, Mapping)),
    }


def encode(event: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON: the exact bytes that are signed and sent."""
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def signature(secret: str, body: bytes) -> str:
    """``sha256=<hex HMAC-SHA256 of body>``, the value of :data:`SIGNATURE_HEADER`."""
    import hashlib
    import hmac

    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def redact_url(url: str) -> str:
    """*url* without secrets, for logs and metric labels: userinfo and every query value become ``***``."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<unparsable URL>"
    netloc = f"***@{host}{port}" if (parts.username or parts.password) else f"{host}{port}"
    if ":" in host:  # IPv6 literal
        netloc = netloc.replace(host, f"[{host}]")
    query = "&".join(f"{key}=***" for key, _ in parse_qsl(parts.query, keep_blank_values=True))
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
