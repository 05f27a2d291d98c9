"""Prometheus text exposition of the node pack's metrics (served by ``nodes/_routes.py``).

``prometheus_client`` is imported on the first scrape, never at import time (the
library and the pack stay import-light). Each scrape builds its families from:

- the :mod:`._recorder` counters and histograms (what our nodes did);
- ComfyUI's prompt queue and history, counted without any lock the prompt worker
  holds: ``len()`` of the queue list and running dict, and one C-level copy of the
  history's values (10,000 references at most) whose ``status_str`` is counted;
- the accelerators' used/total memory (:func:`._device_now.device_memory_now`).

A registry of our own (never prometheus_client's global ``REGISTRY``) holds one
collector; nothing is stored between scrapes except the recorder's counts.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from functools import cache
from typing import Any

from ._device_now import device_memory_now
from ._peak import active_sampler
from ._recorder import COUNTER_LABELS, HELP, RECORDER, Labels, RecorderSnapshot

logger = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
QUEUE_PROMPTS = "scene_telemetry_comfyui_queue_prompts"
HISTORY_PROMPTS = "scene_telemetry_comfyui_history_prompts"
VRAM_USED = "scene_telemetry_device_vram_used_bytes"
VRAM_TOTAL = "scene_telemetry_device_vram_total_bytes"
PEAK_SAMPLER_RUNNING = "scene_telemetry_peak_sampler_running"


def _status_of(entry: Any) -> str:
    status = entry.get("status") if isinstance(entry, dict) else None
    kind = status.get("status_str") if isinstance(status, dict) else None
    return kind if kind in ("success", "error") else "unknown"


class HistoryCounter:
    """History entries by status, recounted only where the history changed since the last scrape.

    ComfyUI appends each finished prompt at the end of its history dict and evicts from the
    front (at most 10,000 entries). The entries' identities (``id``) are compared with the last
    scrape's in C (``tuple(map(id, …))``): unchanged → the cached counts; evicted from the
    front and appended at the end → only the difference is classified; anything else (a
    delete in the middle, a replaced entry, a clear) → a full recount. The last scrape's
    entries are held, so an ``id`` is never reused while it is compared.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()  # ours, for concurrent scrapes; never one the prompt worker takes
        self._values: tuple[Any, ...] = ()
        self._ids: tuple[int, ...] = ()
        self._statuses: list[str] = []
        self._counts = {"success": 0, "error": 0, "unknown": 0}

    def count(self, history: dict[str, Any]) -> dict[str, int]:
        values = tuple(history.values())  # one C call: no "changed size during iteration" race
        ids = tuple(map(id, values))
        with self._lock:
            if ids != self._ids:
                self._update(values, ids)
            return dict(self._counts)

    def _update(self, values: tuple[Any, ...], ids: tuple[int, ...]) -> None:
        old = self._ids
        evicted = old.index(ids[0]) if ids and ids[0] in old else -1
        kept = len(old) - evicted
        if evicted >= 0 and kept <= len(ids) and ids[:kept] == old[evicted:]:
            for status in self._statuses[:evicted]:
                self._counts[status] -= 1
            added = [_status_of(v) for v in values[kept:]]
            for status in added:
                self._counts[status] += 1
            self._statuses = self._statuses[evicted:] + added
        else:
            self._statuses = [_status_of(v) for v in values]
            self._counts = {"success": 0, "error": 0, "unknown": 0}
            for status in self._statuses:
                self._counts[status] += 1
        self._values, self._ids = values, ids


_HISTORY = HistoryCounter()


def queue_counts(prompt_queue: Any, counter: HistoryCounter | None = None) -> tuple[int, int, dict[str, int]]:
    """(pending, running, history entries by status) of a ComfyUI 0.8.0 ``PromptQueue``, lock-free.

    ``len()`` is atomic; the history goes through :class:`HistoryCounter`. Statuses:
    ``success``, ``error`` (errors and interrupts), ``unknown`` (no status recorded).
    """
    pending = len(prompt_queue.queue)
    running = len(prompt_queue.currently_running)
    return pending, running, (counter or _HISTORY).count(prompt_queue.history)


QueueSource = Callable[[], Any]
"""Returns ComfyUI's ``PromptQueue`` (or None outside ComfyUI)."""
DeviceSource = Callable[[], list[dict[str, Any]]]
"""Returns :func:`device_memory_now` rows."""


def _collector_class() -> type:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
    from prometheus_client.registry import Collector

    class PackCollector(Collector):
        def __init__(self, queue_source: QueueSource, devices: DeviceSource) -> None:
            self._queue_source = queue_source
            self._devices = devices

        def collect(self) -> Iterator[Any]:
            yield from _recorded(RECORDER.snapshot())
            yield from _server(self._queue_source())
            yield from _vram(self._devices())
            sampler = active_sampler()
            running = GaugeMetricFamily(
                PEAK_SAMPLER_RUNNING, "1 while a peak-memory sampler thread runs (between 'before' and 'after')."
            )
            running.add_metric([], 1 if sampler is not None and sampler.running else 0)
            yield running

    def _recorded(snapshot: RecorderSnapshot) -> Iterator[Any]:
        by_name: dict[str, list[tuple[Labels, float]]] = {}
        for (name, labels), value in sorted(snapshot.counters.items()):
            by_name.setdefault(name, []).append((labels, value))
        for name, label_names in sorted(COUNTER_LABELS.items()):
            family = CounterMetricFamily(name, HELP[name], labels=list(label_names))
            rows = by_name.get(name) or ([((), 0.0)] if not label_names else [])
            for labels, value in rows:
                family.add_metric([v for _, v in labels], value)
            yield family
        for name, histogram in sorted(snapshot.histograms.items()):
            buckets = [("+Inf" if b == float("inf") else repr(b), n) for b, n in histogram.cumulative()]
            yield HistogramMetricFamily(name, HELP[name], buckets=buckets, sum_value=histogram.total)

    def _server(prompt_queue: Any) -> Iterator[Any]:
        if prompt_queue is None:
            return
        pending, running, history = queue_counts(prompt_queue)
        queue = GaugeMetricFamily(QUEUE_PROMPTS, "Prompts in ComfyUI's queue, by state.", labels=["state"])
        queue.add_metric(["pending"], pending)
        queue.add_metric(["running"], running)
        yield queue
        done = GaugeMetricFamily(
            HISTORY_PROMPTS,
            "Prompts in ComfyUI's in-memory history (at most 10,000; lost on restart), by status.",
            labels=["status"],
        )
        for status, count in history.items():
            done.add_metric([status], count)
        yield done

    def _vram(rows: list[dict[str, Any]]) -> Iterator[Any]:
        labels = ["index", "name", "uuid"]
        used = GaugeMetricFamily(VRAM_USED, "Device-wide used memory of each accelerator, at scrape.", labels=labels)
        total = GaugeMetricFamily(VRAM_TOTAL, "Total memory of each accelerator.", labels=labels)
        for row in rows:
            values = ["" if row[k] is None else str(row[k]) for k in labels]
            used.add_metric(values, row["used_bytes"])
            total.add_metric(values, row["total_bytes"])
        yield used
        yield total

    return PackCollector


@cache
def _registry(queue_source: QueueSource, devices: DeviceSource) -> Any:
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_collector_class()(queue_source, devices))
    return registry


def render_metrics(queue_source: QueueSource, devices: DeviceSource = device_memory_now) -> bytes:
    """The exposition text (``CONTENT_TYPE``) of one scrape."""
    from prometheus_client import generate_latest

    return bytes(generate_latest(_registry(queue_source, devices)))
