"""What the page's script draws: per-scene durations, memory, exit reasons and the per-server timeline."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from ._load import RunView, SceneRow


def plot_data(view: RunView) -> dict[str, Any]:
    """Everything the page's script draws, as plain lists (None = not recorded)."""
    scenes = view.scenes
    vram = any(s.vram_before is not None or s.vram_after is not None for s in scenes)
    memory: dict[str, Any] | None = None
    if vram:
        memory = {
            "kind": "VRAM",
            "labels": ["VRAM before", "VRAM after", "VRAM peak", "device total"],
            "before": [s.vram_before for s in scenes],
            "after": [s.vram_after for s in scenes],
            "peak": [s.vram_peak for s in scenes],
            "total": [s.vram_total for s in scenes],
        }
    elif any(s.ram_before is not None or s.ram_after is not None for s in scenes):
        memory = {
            "kind": "host RAM (CPU run)",
            "labels": ["host RAM used before", "host RAM used after", "process RSS peak", "host RAM total"],
            "before": [s.ram_before for s in scenes],
            "after": [s.ram_after for s in scenes],
            "peak": [s.ram_peak for s in scenes],
            "total": [s.ram_total for s in scenes],
        }
    exits = Counter(exit_label(s, view) for s in scenes)
    failing = {exit_label(s, view) for s in scenes if s.ok is False}
    return {
        "ids": [s.scene_id for s in scenes],
        "ok": [s.ok for s in scenes],
        "duration": [s.duration_s for s in scenes],
        "memory": memory,
        "exits": {"names": list(exits), "counts": list(exits.values()), "ok": [n not in failing for n in exits]},
        "timeline": timeline_data(scenes),
    }


def timeline_data(scenes: Sequence[SceneRow]) -> dict[str, Any] | None:
    """One lane per server, for a run whose scenes name two or more servers; else None."""
    servers = sorted({s.server for s in scenes if s.server})
    if len(servers) < 2:
        return None
    lane = {name: i for i, name in enumerate(servers)}
    timed = [s for s in scenes if s.server and s.started is not None and s.ended is not None]
    return {
        "servers": servers,
        "lane": [lane[s.server] for s in timed if s.server],
        "start": [s.started for s in timed],
        "end": [s.ended for s in timed],
        "ok": [s.ok for s in timed],
        "ids": [s.scene_id for s in timed],
    }


def exit_label(scene: SceneRow, view: RunView) -> str:
    """The exit reason, or what stands for it where no runner recorded one."""
    if scene.exit_reason is not None:
        return scene.exit_reason
    if view.kind == "markers only":
        return "marker only (no telemetry)"
    if scene.writer == "graph":
        return "editor run (frames)" if scene.ok else "editor run (no frames)"
    return "not recorded"
