"""Per-server counts of a farm run: scenes, failures, busy seconds, quarantines; one line each."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass
class ServerStats:
    """What one server did in a run (a retried scene counts on every server that tried it)."""

    url: str
    instance_id: str
    device: str | None = None
    scenes: int = 0
    failures: int = 0
    busy_s: float = 0.0
    quarantines: int = 0
    left_out: str | None = None
    """Why the server took no part (preflight or the workflow checks), or None."""

    def line(self) -> str:
        """``server srv-… URL (device): N scene(s), F failure(s), B s busy``; the reason when it was left out."""
        device = f" ({self.device})" if self.device else ""
        if self.left_out is not None:
            return f"server {self.instance_id} {self.url}{device}: left out: {self.left_out}"
        quarantined = f", quarantined {self.quarantines}x" if self.quarantines else ""
        return (
            f"server {self.instance_id} {self.url}{device}: {self.scenes} scene(s), {self.failures} failure(s), "
            f"{self.busy_s:.3f} s busy{quarantined}"
        )

    def contract(self) -> dict[str, Any]:
        """The run document's ``Servers`` entry (contract 1.1 ``FarmServer``)."""
        return {
            "InstanceId": self.instance_id,
            "Url": self.url,
            "Device": self.device,
            "Scenes": self.scenes,
            "Failures": self.failures,
            "BusySeconds": round(self.busy_s, 3),
            "Quarantines": self.quarantines,
            "LeftOut": self.left_out,
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "instance_id": self.instance_id,
            "device": self.device,
            "scenes": self.scenes,
            "failures": self.failures,
            "busy_seconds": round(self.busy_s, 3),
            "quarantines": self.quarantines,
            "left_out": self.left_out,
        }


def stats_from_documents(documents: Iterable[Mapping[str, Any]]) -> list[ServerStats]:
    """Per-server counts rebuilt from scene documents (the Celery path: the workers wrote them)."""
    found: dict[str, ServerStats] = {}
    for doc in documents:
        key = doc.get("ServerInstanceId")
        if not isinstance(key, str):
            continue
        stats = found.setdefault(key, ServerStats(str(doc.get("ServerUrl")), key, doc.get("ServerDevice")))
        stats.scenes += 1
        stats.failures += 0 if doc.get("HistoryExitReason") == "success" and doc.get("Frames") else 1
        duration = doc.get("DurationSeconds")
        stats.busy_s += float(duration) if isinstance(duration, (int, float)) else 0.0
    return sorted(found.values(), key=lambda s: s.url)
