"""A tiny in-process recorder of what the nodes did, read by the ``/scene-telemetry/metrics`` route.

Pure Python (no ``prometheus_client`` here: the library stays import-light); the
route in ``nodes/_routes.py`` turns a :meth:`Recorder.snapshot` into Prometheus
metric families at scrape time. Names follow Prometheus conventions: the
``scene_telemetry_`` prefix, base units (bytes, seconds); counters are exposed
with ``_total`` appended. Recording takes the recorder's own lock for a few
microseconds; no ComfyUI lock is ever involved.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

GIB = 1 << 30
MIB = 1 << 20

MARKERS_WRITTEN = "scene_telemetry_markers_written"
FRAMES_WRITTEN = "scene_telemetry_frames_written"
BYTES_WRITTEN = "scene_telemetry_bytes_written"
SAVE_SECONDS = "scene_telemetry_save_seconds"
VALIDATOR_VERDICTS = "scene_telemetry_validator_verdicts"
SCENES_COLLECTED = "scene_telemetry_collected_scenes"
SCENE_DURATION = "scene_telemetry_scene_duration_seconds"
SCENE_VRAM_PEAK = "scene_telemetry_scene_vram_peak_bytes"

HISTOGRAM_BUCKETS: dict[str, tuple[float, ...]] = {
    SAVE_SECONDS: (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0),
    SCENE_DURATION: (1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0),
    SCENE_VRAM_PEAK: tuple(float(g * GIB) for g in (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 80, 96, 128, 192)),
}
HELP: dict[str, str] = {
    MARKERS_WRITTEN: "Done markers written by this pack's nodes, by marker Source.",
    FRAMES_WRITTEN: "Files listed by the done markers written.",
    BYTES_WRITTEN: "Bytes of the files listed by the done markers written.",
    SAVE_SECONDS: "Time Write Done Marker spent saving frames and committing the marker.",
    VALIDATOR_VERDICTS: "Run Summary Validator verdicts (pass or fail).",
    SCENES_COLLECTED: "Scenes written by Scene Telemetry Collector, by HistoryExitReason.",
    SCENE_DURATION: "DurationSeconds of the scenes the collector wrote.",
    SCENE_VRAM_PEAK: "GPU.VramPeakMB (device-wide peak sampled between the GPU snapshots) of collected scenes.",
}

COUNTER_LABELS: dict[str, tuple[str, ...]] = {
    MARKERS_WRITTEN: ("source",),
    FRAMES_WRITTEN: (),
    BYTES_WRITTEN: (),
    VALIDATOR_VERDICTS: ("verdict",),
    SCENES_COLLECTED: ("exit_reason",),
}
"""Every counter and its label names (an unlabelled counter is exposed as 0 before its first event)."""

Labels = tuple[tuple[str, str], ...]


@dataclass
class Histogram:
    """Counts per bucket (upper bounds, +Inf last), sum and count; :meth:`cumulative` is what Prometheus shows."""

    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.buckets) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.buckets, value)] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations ≤ it) for every bucket and +Inf."""
        running, out = 0, []
        for bound, n in zip((*self.buckets, float("inf")), self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out

    def copy(self) -> Histogram:
        return Histogram(self.buckets, list(self.counts), self.total, self.count)


@dataclass(frozen=True)
class RecorderSnapshot:
    """A consistent copy: counters by (name, labels) and histograms by name."""

    counters: dict[tuple[str, Labels], float]
    histograms: dict[str, Histogram]


class Recorder:
    """Thread-safe counters and histograms with fixed names (see :data:`HELP`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[tuple[str, Labels], float] = {}
        self._histograms = {name: Histogram(bounds) for name, bounds in HISTOGRAM_BUCKETS.items()}

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        key = (name, tuple(sorted(labels.items())))
        with self._lock:
            self._counters[key] = self._counters.get(key, 0.0) + amount

    def observe(self, name: str, value: float) -> None:
        with self._lock:
            self._histograms[name].observe(value)

    def snapshot(self) -> RecorderSnapshot:
        with self._lock:
            return RecorderSnapshot(dict(self._counters), {n: h.copy() for n, h in self._histograms.items()})

    def reset(self) -> None:
        """Forget everything (tests)."""
        with self._lock:
            self._counters.clear()
            self._histograms = {name: Histogram(bounds) for name, bounds in HISTOGRAM_BUCKETS.items()}


RECORDER = Recorder()
"""The process-wide recorder the nodes write to and the metrics route reads."""


def record_marker(files: int, total_bytes: int, save_seconds: float | None, source: str = "node") -> None:
    """A done marker was committed listing *files* files of *total_bytes* bytes."""
    RECORDER.inc(MARKERS_WRITTEN, source=source)
    RECORDER.inc(FRAMES_WRITTEN, float(files))
    RECORDER.inc(BYTES_WRITTEN, float(total_bytes))
    if save_seconds is not None and save_seconds >= 0:
        RECORDER.observe(SAVE_SECONDS, save_seconds)


def record_verdict(ok: bool) -> None:
    """Run Summary Validator answered."""
    RECORDER.inc(VALIDATOR_VERDICTS, verdict="pass" if ok else "fail")


def record_scene(scene: Mapping[str, Any]) -> None:
    """The collector wrote *scene* (a contract scene-telemetry document)."""
    RECORDER.inc(SCENES_COLLECTED, exit_reason=str(scene.get("HistoryExitReason") or "unknown"))
    duration = scene.get("DurationSeconds")
    if isinstance(duration, (int, float)) and duration >= 0:
        RECORDER.observe(SCENE_DURATION, float(duration))
    peak = (scene.get("GPU") or {}).get("VramPeakMB")
    if isinstance(peak, int):
        RECORDER.observe(SCENE_VRAM_PEAK, float(peak * MIB))
